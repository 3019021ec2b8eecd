//! Every commit point of a write against every fault: a store call that fails before it
//! arrives, one whose answer is lost after the server executed it, one delayed past the
//! deadline, one that never answers. Whatever happens, the writer's close says the truth
//! (success exactly when S3 holds the bytes written), a failed overwrite leaves the old object
//! and its stat, and no multipart upload is left behind.

use std::time::Duration;

use super::*;
use crate::s3::deadline::WithDeadline;
use crate::s3::faulty::{Fault, FaultyStore, Op, internal_error, network};

type Store = WithDeadline<FaultyStore<InMemoryStore>>;

const DEADLINE: Duration = Duration::from_secs(5);
const PART: u64 = 5 * 1024 * 1024;

fn faulty(keys: &[(&str, &[u8])], allow_overwrite: bool) -> (Arc<Store>, S3Filesystem<Store>) {
    let bucket = InMemoryStore::new();
    for (key, data) in keys {
        bucket.put(key, data.to_vec());
    }
    let store = Arc::new(WithDeadline::new(FaultyStore::new(bucket), DEADLINE));
    let config = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        allow_overwrite,
        allow_delete: true,
        read_part_size: PART,
        write_part_size: PART,
        ..FsConfig::default()
    };
    (store.clone(), S3Filesystem::new(store, config))
}

fn bucket(store: &Store) -> &InMemoryStore {
    store.inner().inner()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Writes `content` to `name` (an overwrite with O_TRUNC if it exists) and closes it:
/// the result the program's close would see, or the open's or a write's error.
async fn write_and_close(
    fs: &S3Filesystem<Store>,
    name: &str,
    content: &[u8],
) -> Result<(), FsError> {
    write_and_close_ino(fs, name, content).await.1
}

/// [`write_and_close`], with the inode written.
async fn write_and_close_ino(
    fs: &S3Filesystem<Store>,
    name: &str,
    content: &[u8],
) -> (u64, Result<(), FsError>) {
    let opened = match fs.lookup(ROOT_INO, name).await {
        Ok(attr) => {
            let trunc = OpenMode {
                write: true,
                truncate: true,
                ..OpenMode::default()
            };
            fs.open(attr.ino, trunc, me())
                .await
                .map(|fh| (attr.ino, fh))
        }
        Err(_) => fs
            .create(ROOT_INO, name, me(), false)
            .await
            .map(|(attr, fh)| (attr.ino, fh)),
    };
    let (ino, fh) = match opened {
        Ok(opened) => opened,
        Err(e) => return (0, Err(e)),
    };
    let mut result = Ok(());
    for (i, chunk) in content.chunks(1 << 20).enumerate() {
        if let Err(e) = fs.write(fh, (i << 20) as u64, chunk, me()).await {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = fs.flush(fh, me()).await;
    }
    fs.release(fh).await;
    (ino, result)
}

/// A store call of a write: its kind and which one of that kind (1-based).
type CommitPoint = (Op, usize);

/// The faults each commit point is tried against.
fn faults(op: Op) -> Vec<Fault> {
    let mut faults = vec![
        Fault::Fail(network()),
        Fault::Fail(internal_error()),
        Fault::Fail(S3Error::AccessDenied("AccessDenied".into())),
        Fault::Delay(DEADLINE * 2),
        Fault::Hang,
    ];
    // A lost CreateMultipartUpload answer leaves an upload only the SDK store can find and
    // abort (it lists the key's uploads; tests/write_faults.rs and the proxy tests cover it).
    if op != Op::CreateMultipart {
        faults.push(Fault::LoseAnswer(network()));
        faults.push(Fault::LoseAnswer(internal_error()));
    }
    if op == Op::CompleteMultipart {
        // A retry after a lost success finds the upload gone.
        faults.push(Fault::LoseAnswer(S3Error::NotFound));
    }
    faults
}

#[tokio::test(start_paused = true)]
async fn every_commit_point_tells_the_truth_and_leaves_nothing_behind() {
    let small = data(1000, 1);
    let multi = data((2 * PART + 123) as usize, 2);
    let old = data(4000, 3);
    let cases: [(&[u8], &[CommitPoint]); 2] = [
        (&small, &[(Op::Put, 1)]),
        (
            &multi,
            &[
                (Op::CreateMultipart, 1),
                (Op::UploadPart, 1),
                (Op::UploadPart, 3),
                (Op::CompleteMultipart, 1),
            ],
        ),
    ];
    let mut tried = 0;
    for (content, points) in cases {
        for &(op, nth) in points {
            for fault in faults(op) {
                for overwrite in [false, true] {
                    let existing: &[(&str, &[u8])] = if overwrite { &[("f", &old)] } else { &[] };
                    let (store, fs) = faulty(existing, overwrite);
                    store.inner().inject(op, nth, fault.clone());
                    let (ino, result) = write_and_close_ino(&fs, "f", content).await;
                    let held = bucket(&store).get("f");
                    let held_len = held.as_ref().map(|h| h.len());
                    let case = format!(
                        "{op:?}#{nth} {fault:?} overwrite={overwrite}: {result:?}, S3 holds {held_len:?} bytes"
                    );
                    match &result {
                        Ok(()) => assert!(held.as_deref() == Some(content), "{case}"),
                        Err(_) if overwrite => {
                            assert!(held.as_deref() == Some(&old[..]), "{case}");
                            // The inode the kernel holds shows the old object again.
                            let attr = fs.getattr(ino).await.unwrap();
                            assert_eq!(attr.size, old.len() as u64, "{case}: stat restored");
                        }
                        Err(_) => {
                            assert!(held.is_none(), "{case}");
                            assert!(fs.lookup(ROOT_INO, "f").await.is_err(), "{case}");
                        }
                    }
                    // Faults that prevented nothing must not fail the write.
                    if matches!(fault, Fault::LoseAnswer(_)) && op != Op::UploadPart {
                        assert!(
                            result.is_ok(),
                            "{case}: a write that landed reported failed"
                        );
                    }
                    let report = fs.shutdown(Duration::from_secs(10)).await;
                    assert_eq!(bucket(&store).open_uploads(), 0, "{case}: upload left");
                    assert!(report.left_behind.is_empty(), "{case}");
                    tried += 1;
                }
            }
        }
    }
    assert!(tried >= 60, "{tried} cases");
}

#[tokio::test(start_paused = true)]
async fn an_abort_that_fails_is_retried_until_it_succeeds() {
    let (store, fs) = faulty(&[], false);
    store
        .inner()
        .inject(Op::UploadPart, 1, Fault::Fail(internal_error()));
    for nth in 1..=3 {
        store
            .inner()
            .inject(Op::AbortMultipart, nth, Fault::Fail(network()));
    }
    let content = data((2 * PART) as usize, 4);
    assert!(write_and_close(&fs, "f", &content).await.is_err());
    assert_eq!(bucket(&store).open_uploads(), 1, "the abort failed");
    assert_eq!(fs.aborts.owed(), 1);
    // Retried in the background (1 s, 2 s, 4 s...): the fourth attempt succeeds.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(bucket(&store).open_uploads(), 0);
    assert_eq!(fs.aborts.owed(), 0);
    assert!(fs.shutdown(Duration::from_secs(1)).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn an_upload_that_cannot_be_aborted_is_named_at_the_end() {
    let (store, fs) = faulty(&[], false);
    store
        .inner()
        .inject(Op::UploadPart, 1, Fault::Fail(internal_error()));
    for nth in 1..=100 {
        store
            .inner()
            .inject(Op::AbortMultipart, nth, Fault::Fail(network()));
    }
    let content = data((2 * PART) as usize, 5);
    assert!(write_and_close(&fs, "f", &content).await.is_err());
    let report = fs.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.left_behind.len(), 1);
    assert_eq!(report.left_behind[0].0, "f");
    assert!(!report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_file_still_open_at_the_end_is_aborted_and_named() {
    let (store, fs) = faulty(&[], false);
    let (_, fh) = fs.create(ROOT_INO, "open", me(), false).await.unwrap();
    fs.write(fh, 0, &data((PART + 1) as usize, 6), me())
        .await
        .unwrap();
    let report = fs.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.not_landed, vec!["open".to_string()]);
    assert_eq!(bucket(&store).open_uploads(), 0);
    assert!(bucket(&store).get("open").is_none());
}

#[tokio::test(start_paused = true)]
async fn the_end_waits_for_a_commit_in_flight() {
    let (store, fs) = faulty(&[], false);
    let fs = Arc::new(fs);
    store
        .inner()
        .inject(Op::Put, 1, Fault::Delay(Duration::from_secs(3)));
    let (_, fh) = fs.create(ROOT_INO, "slow", me(), false).await.unwrap();
    fs.write(fh, 0, b"late but whole", me()).await.unwrap();
    let closing = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.flush(fh, me()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = fs.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report:?}");
    assert!(closing.await.unwrap().is_ok());
    assert_eq!(
        bucket(&store).get("slow").unwrap().as_ref(),
        b"late but whole"
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_failure_nobody_was_told_of_is_counted() {
    let (store, fs) = faulty(&[], false);
    store
        .inner()
        .inject(Op::Put, 1, Fault::Fail(internal_error()));
    let (_, fh) = fs.create(ROOT_INO, "r", me(), false).await.unwrap();
    fs.write(fh, 0, b"x", me()).await.unwrap();
    // Closed by a process that neither opened nor wrote it: only the release commits.
    fs.flush(fh, 1).await.unwrap();
    fs.release(fh).await;
    let report = fs.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.not_landed, vec!["r".to_string()]);
    assert!(bucket(&store).get("r").is_none());
}
