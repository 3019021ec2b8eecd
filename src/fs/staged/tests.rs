//! Staged files against the in-memory store (S3's part sizes enforced): bytes, what each
//! commit sends and copies, conditions, the staging bound, and a reference model of random
//! writes, truncations, reads and commits.

use std::sync::Arc;

use proptest::prelude::*;

use super::dir::{StagingConfig, StagingDir};
use super::*;
use crate::s3::in_memory::InMemoryStore;

const MIB: u64 = 1024 * 1024;

struct Fixture {
    store: Arc<InMemoryStore>,
    area: Arc<StagingDir>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(max_bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingDir::open(&StagingConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: Some(max_bytes),
        })
        .unwrap();
        Self {
            store: Arc::new(InMemoryStore::new().with_s3_part_sizes()),
            area: Arc::new(area),
            _dir: dir,
        }
    }

    /// A staging of `key`: of the object there if any, else of a new file.
    async fn stage(&self, key: &str) -> StagedFile<InMemoryStore> {
        let base = match self.store.head(key).await {
            Ok(info) => Some(Base {
                etag: info.etag,
                size: info.size,
            }),
            Err(_) => None,
        };
        StagedFile::new(
            self.store.clone(),
            key.to_string(),
            self.area.clone(),
            MemoryBudget::new(256 * MIB),
            PendingAborts::new(self.store.clone()),
            8 * MIB,
            base,
        )
        .unwrap()
    }
}

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

async fn commit(file: &StagedFile<InMemoryStore>) -> Committed {
    file.commit(crate::fs::write::new_write_id(), false)
        .await
        .unwrap()
        .expect("something to commit")
}

#[tokio::test]
async fn a_new_file_written_anywhere_is_one_put() {
    let fx = Fixture::new(64 * MIB);
    let file = fx.stage("new.bin").await;
    file.write(100, b"later").await.unwrap();
    file.write(0, b"first").await.unwrap();
    assert_eq!(file.size().await, 105);
    assert_eq!(&file.read(0, 200).await.unwrap()[..], {
        let mut want = vec![0u8; 105];
        want[..5].copy_from_slice(b"first");
        want[100..].copy_from_slice(b"later");
        want
    });
    let done = commit(&file).await;
    assert_eq!((done.size, done.uploaded, done.copied), (105, 105, 0));
    assert_eq!(fx.store.get("new.bin").unwrap().len(), 105);
    assert!(
        file.commit("again".into(), false).await.unwrap().is_none(),
        "nothing changed"
    );
}

#[tokio::test]
async fn an_update_in_place_uploads_one_chunk_and_copies_the_rest() {
    let fx = Fixture::new(64 * MIB);
    let old = pattern(64 * MIB, 1);
    fx.store.put("big", old.clone());
    let file = fx.stage("big").await;
    file.write(40 * MIB + 7, &[0xAB; 4096]).await.unwrap();
    let done = commit(&file).await;
    let mut want = old;
    want[(40 * MIB + 7) as usize..(40 * MIB + 7 + 4096) as usize].fill(0xAB);
    assert!(fx.store.get("big").unwrap() == want);
    assert_eq!(done.uploaded, plan::MIN_PART, "{done:?}");
    assert_eq!(done.copied, 64 * MIB - plan::MIN_PART);
    // Only the chunk's old bytes were fetched; the rest never left the server.
    assert_eq!(fx.store.fetched(), plan::MIN_PART - 4096);
    // The next commit starts from the new version: another change, another chunk.
    file.write(0, b"head").await.unwrap();
    let again = commit(&file).await;
    assert_eq!(again.uploaded, plan::MIN_PART);
    want[..4].copy_from_slice(b"head");
    assert!(fx.store.get("big").unwrap() == want);
}

#[tokio::test]
async fn an_append_uploads_the_new_bytes_only() {
    let fx = Fixture::new(64 * MIB);
    let old = pattern(64 * MIB + 100, 2);
    fx.store.put("log", old.clone());
    let file = fx.stage("log").await;
    let size = file.size().await;
    file.write(size, b"one more line\n").await.unwrap();
    let done = commit(&file).await;
    assert_eq!(done.copied, 64 * MIB + 100);
    assert_eq!(done.uploaded, 14);
    let mut want = old;
    want.extend_from_slice(b"one more line\n");
    assert!(fx.store.get("log").unwrap() == want);
}

#[tokio::test]
async fn truncation_cuts_and_growing_gives_zeros() {
    let fx = Fixture::new(64 * MIB);
    let old = pattern(12 * MIB, 3);
    fx.store.put("t", old.clone());
    let file = fx.stage("t").await;
    file.truncate(3 * MIB).await.unwrap();
    file.truncate(7 * MIB).await.unwrap();
    commit(&file).await;
    let mut want = old[..(3 * MIB) as usize].to_vec();
    want.resize((7 * MIB) as usize, 0);
    assert!(
        fx.store.get("t").unwrap() == want,
        "the cut bytes do not come back"
    );
}

#[tokio::test]
async fn a_version_replaced_meanwhile_is_not_overwritten() {
    let fx = Fixture::new(64 * MIB);
    fx.store.put("small", b"v1".to_vec());
    fx.store.put("large", pattern(20 * MIB, 4));
    for key in ["small", "large"] {
        let file = fx.stage(key).await;
        file.write(1, b"X").await.unwrap();
        fx.store.put(key, b"another client's".to_vec());
        let err = file.commit("id".into(), false).await.unwrap_err();
        assert!(matches!(err, FsError::ObjectChanged { .. }), "{key}: {err}");
        assert_eq!(fx.store.get(key).unwrap(), &b"another client's"[..]);
    }
    assert_eq!(
        fx.store.open_uploads(),
        0,
        "no multipart upload left behind"
    );
    // A new file whose name someone took meanwhile, with If-None-Match.
    let file = fx.stage("fresh").await;
    file.write(0, b"mine").await.unwrap();
    fx.store.put("fresh", b"theirs".to_vec());
    let err = file.commit("id".into(), true).await.unwrap_err();
    assert!(matches!(err, FsError::Exists), "{err}");
}

#[tokio::test]
async fn reads_fetch_only_what_they_read_and_the_bound_holds() {
    let fx = Fixture::new(2 * MIB);
    fx.store.put("k", pattern(20 * MIB, 5));
    let file = fx.stage("k").await;
    let got = file.read(10 * MIB, 4096).await.unwrap();
    assert_eq!(
        &got[..],
        &pattern(20 * MIB, 5)[(10 * MIB) as usize..(10 * MIB + 4096) as usize]
    );
    assert_eq!(fx.store.fetched(), 4096);
    assert_eq!(fx.area.held(), 4096);
    let err = file
        .write(0, &vec![1u8; (2 * MIB) as usize])
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::NoSpace { .. }), "{err}");
    assert_eq!(err.errno(), libc::ENOSPC);
    drop(file);
    assert_eq!(fx.area.held(), 0, "given back when the staging goes");
}

/// What a cut removes, or a fetch that failed brought, is no longer counted against the
/// bound: a file truncated and rewritten over and over holds its size, not the sum.
#[tokio::test]
async fn cuts_and_failed_fetches_give_their_space_back() {
    let fx = Fixture::new(2 * MIB);
    let file = fx.stage("new").await;
    for round in 0..10u8 {
        file.truncate(0).await.unwrap();
        file.write(0, &pattern(MIB, round)).await.unwrap();
        assert_eq!(fx.area.held(), MIB, "round {round}");
    }
    file.truncate(MIB / 2).await.unwrap();
    assert_eq!(fx.area.held(), MIB / 2);
    drop(file);
    assert_eq!(fx.area.held(), 0);

    fx.store.put("k", pattern(4 * MIB, 1));
    let file = fx.stage("k").await;
    fx.store.put("k", pattern(4 * MIB, 2)); // replaced elsewhere: the GET fails (If-Match)
    assert!(file.read(0, 4096).await.is_err());
    assert_eq!(fx.area.held(), 0, "a failed fetch holds nothing");
}

/// One step of the model.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, u64, u8),
    Truncate(u64),
    Read(u64, u32),
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    let offset = prop_oneof![0u64..64 * 1024, 0u64..24 * MIB];
    prop_oneof![
        4 => (offset.clone(), 1u64..200_000, any::<u8>()).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        1 => (0u64..24 * MIB).prop_map(Op::Truncate),
        2 => (offset, 1u32..300_000).prop_map(|(o, l)| Op::Read(o, l)),
        2 => Just(Op::Commit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random writes, truncations, reads and commits over an object of random size: every
    /// read equals a plain model of the file, and after each commit the object is the model,
    /// exactly (S3's part sizes enforced).
    #[test]
    fn staged_files_match_a_plain_model(
        base_len in prop_oneof![Just(0u64), 0u64..64 * 1024, 0u64..20 * MIB],
        ops in proptest::collection::vec(op(), 1..12),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let fx = Fixture::new(256 * MIB);
            let mut model = pattern(base_len, 9);
            if base_len > 0 {
                fx.store.put("m", model.clone());
            }
            let file = fx.stage("m").await;
            for op in ops {
                match op {
                    Op::Write(offset, len, byte) => {
                        file.write(offset, &vec![byte; len as usize]).await.unwrap();
                        let end = (offset + len) as usize;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[offset as usize..end].fill(byte);
                    }
                    Op::Truncate(size) => {
                        file.truncate(size).await.unwrap();
                        model.resize(size as usize, 0);
                    }
                    Op::Read(offset, len) => {
                        let got = file.read(offset, len).await.unwrap();
                        let from = (offset as usize).min(model.len());
                        let to = (offset as usize + len as usize).min(model.len());
                        prop_assert!(got[..] == model[from..to], "read {offset}+{len}");
                    }
                    Op::Commit => {
                        let _ = file.commit(crate::fs::write::new_write_id(), false).await.unwrap();
                        let stored = fx.store.get("m").unwrap_or_default();
                        prop_assert!(stored[..] == model[..], "after commit: {} vs {}", stored.len(), model.len());
                    }
                }
                prop_assert_eq!(file.size().await, model.len() as u64);
                prop_assert!(fx.area.held() <= model.len() as u64, "held {} for {}", fx.area.held(), model.len());
            }
            prop_assert_eq!(fx.store.open_uploads(), 0);
            Ok(())
        })?;
    }
}
