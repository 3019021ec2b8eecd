//! Every commit point of a staged write (`--staged-writes`) against every fault: an in-place
//! update of a large object (fetch of the changed chunk's old bytes, CreateMultipartUpload,
//! UploadPartCopy, UploadPart, CompleteMultipartUpload), an append (a copy of the old object
//! and the new bytes), a new small file (PUT). Whatever happens, the close says the truth
//! (success exactly when S3 holds the new content; a failure leaves the old object), the
//! release does not land behind a writer told it failed, and no multipart upload is left.

use std::time::Duration;

use super::*;
use crate::fs::config::Staging;
use crate::fs::staged::dir::{StagingConfig, StagingDir};
use crate::s3::deadline::WithDeadline;
use crate::s3::faulty::{Fault, FaultyStore, Op, internal_error, network};

pub(super) type Store = WithDeadline<FaultyStore<InMemoryStore>>;

const DEADLINE: Duration = Duration::from_secs(5);
pub(super) const MIB: usize = 1024 * 1024;

pub(super) fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed ^ (i >> 12) as u8)
        .collect()
}

fn staged(keys: &[(&str, &[u8])], area: &std::path::Path) -> (Arc<Store>, S3Filesystem<Store>) {
    staged_with(keys, area, true)
}

/// [`staged`], with `--allow-delete` or not.
pub(super) fn staged_with(
    keys: &[(&str, &[u8])],
    area: &std::path::Path,
    allow_delete: bool,
) -> (Arc<Store>, S3Filesystem<Store>) {
    let bucket = InMemoryStore::new().with_s3_part_sizes();
    for (key, data) in keys {
        bucket.put(key, data.to_vec());
    }
    let store = Arc::new(WithDeadline::new(FaultyStore::new(bucket), DEADLINE));
    let config = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        allow_overwrite: true,
        allow_delete,
        write_part_size: 5 * MIB as u64,
        staging: Staging::All,
        ..FsConfig::default()
    };
    let area = StagingDir::open(&StagingConfig {
        dir: area.to_path_buf(),
        max_bytes: Some(1 << 30),
    })
    .unwrap();
    let fs = S3Filesystem::new(store.clone(), config).with_staging(Some(Arc::new(area)));
    (store, fs)
}

/// One scenario: what is there before, what the program does, what S3 holds after.
struct Scenario {
    name: &'static str,
    before: Option<Vec<u8>>,
    /// (offset, bytes) written through one O_RDWR (or O_APPEND) handle.
    writes: Vec<(u64, Vec<u8>)>,
    append: bool,
    points: Vec<(Op, usize)>,
}

impl Scenario {
    fn after(&self) -> Vec<u8> {
        let mut content = self.before.clone().unwrap_or_default();
        for (offset, bytes) in &self.writes {
            let end = *offset as usize + bytes.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(bytes);
        }
        content
    }
}

pub(super) fn faults(op: Op) -> Vec<Fault> {
    let mut faults = vec![
        Fault::Fail(network()),
        Fault::Fail(internal_error()),
        Fault::Fail(S3Error::AccessDenied("AccessDenied".into())),
        Fault::Delay(DEADLINE * 2),
        Fault::Hang,
    ];
    if op != Op::CreateMultipart && op != Op::Get {
        faults.push(Fault::LoseAnswer(network()));
        faults.push(Fault::LoseAnswer(internal_error()));
    }
    if op == Op::CompleteMultipart {
        faults.push(Fault::LoseAnswer(S3Error::NotFound));
    }
    faults
}

/// Opens `f` (creating it when absent), writes, closes: the close's result.
async fn run(fs: &S3Filesystem<Store>, scenario: &Scenario) -> Result<(), FsError> {
    let (fh, created) = match fs.lookup(ROOT_INO, "f").await {
        Ok(attr) => {
            let mode = OpenMode {
                write: true,
                append: scenario.append,
                ..OpenMode::default()
            };
            (fs.open(attr.ino, mode, me()).await?, false)
        }
        Err(_) => (fs.create(ROOT_INO, "f", me(), false).await?.1, true),
    };
    let _ = created;
    let mut result = Ok(());
    for (offset, bytes) in &scenario.writes {
        if let Err(e) = fs.write(fh, *offset, bytes, me()).await {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = fs.flush(fh, me()).await;
    }
    fs.release(fh).await;
    result
}

#[tokio::test(start_paused = true)]
async fn every_staged_commit_point_tells_the_truth_and_leaves_nothing_behind() {
    let scenarios = [
        Scenario {
            name: "update 4 KiB in the middle of 12 MiB",
            before: Some(data(12 * MIB, 1)),
            writes: vec![(6 * MIB as u64, vec![0xEE; 4096])],
            append: false,
            points: vec![
                (Op::Get, 1),
                (Op::CreateMultipart, 1),
                (Op::UploadPartCopy, 1),
                (Op::UploadPart, 1),
                (Op::UploadPartCopy, 2),
                (Op::CompleteMultipart, 1),
            ],
        },
        Scenario {
            name: "append 10 bytes to 6 MiB",
            before: Some(data(6 * MIB, 2)),
            writes: vec![(6 * MIB as u64, b"0123456789".to_vec())],
            append: true,
            points: vec![
                (Op::UploadPartCopy, 1),
                (Op::UploadPart, 1),
                (Op::CompleteMultipart, 1),
            ],
        },
        Scenario {
            name: "a new file of 1000 bytes",
            before: None,
            writes: vec![(0, data(1000, 3))],
            append: false,
            points: vec![(Op::Put, 1)],
        },
    ];
    let mut tried = 0;
    for scenario in &scenarios {
        let want = scenario.after();
        for &(op, nth) in &scenario.points {
            for fault in faults(op) {
                let area = tempfile::tempdir().unwrap();
                let before: Vec<(&str, &[u8])> = scenario
                    .before
                    .as_deref()
                    .map(|b| vec![("f", b)])
                    .unwrap_or_default();
                let (store, fs) = staged(&before, area.path());
                store.inner().inject(op, nth, fault.clone());
                let result = run(&fs, scenario).await;
                assert!(
                    store.inner().calls(op) >= nth,
                    "{}: {op:?}#{nth} was never reached",
                    scenario.name
                );
                let bucket = store.inner().inner();
                let held = bucket.get("f");
                let case = format!(
                    "{}: {op:?}#{nth} {fault:?}: {result:?}, S3 holds {:?} bytes",
                    scenario.name,
                    held.as_ref().map(|h| h.len())
                );
                match &result {
                    Ok(()) => assert!(held.as_deref() == Some(&want[..]), "{case}"),
                    Err(_) => assert!(held.as_deref() == scenario.before.as_deref(), "{case}"),
                }
                if matches!(fault, Fault::LoseAnswer(_))
                    && op != Op::UploadPart
                    && op != Op::UploadPartCopy
                {
                    assert!(
                        result.is_ok(),
                        "{case}: a write that landed reported failed"
                    );
                }
                let report = fs.shutdown(Duration::from_secs(10)).await;
                assert_eq!(bucket.open_uploads(), 0, "{case}: upload left");
                assert!(report.left_behind.is_empty(), "{case}");
                tried += 1;
            }
        }
    }
    assert!(tried >= 60, "{tried} cases");
}

/// Two opens for writing of one file that race (the first one's HEAD still on its way when
/// the second is answered) share one staged file, as two opens one after the other do: both
/// writes land and both closes succeed. (Each used to stage a file of its own; the second
/// commit then failed its If-Match with EIO.)
#[tokio::test]
async fn racing_opens_for_writing_share_one_staged_file() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged(&[("f", b"........")], area.path());
    let ino = fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let heads = store.inner().calls(Op::Head);
    store.inner().inject(
        Op::Head,
        heads + 1,
        Fault::Delay(Duration::from_millis(300)),
    );
    let mode = OpenMode {
        write: true,
        ..OpenMode::default()
    };
    let (a, b) = tokio::join!(fs.open(ino, mode, me()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fs.open(ino, mode, me()).await
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        store.inner().calls(Op::Head),
        heads + 2,
        "both opens revalidated"
    );
    fs.write(a, 0, b"AAAA", me()).await.unwrap();
    fs.write(b, 4, b"BBBB", me()).await.unwrap();
    assert_eq!(
        &fs.read(a, 0, 8).await.unwrap()[..],
        b"AAAABBBB",
        "one file"
    );
    fs.flush(a, me()).await.unwrap();
    fs.release(a).await;
    fs.flush(b, me()).await.unwrap();
    fs.release(b).await;
    assert_eq!(&store.inner().inner().get("f").unwrap()[..], b"AAAABBBB");
}
