//! Directory rename (`--max-rename-keys`): every key moves, nothing is lost on a failure at
//! any copy or delete, the limit gives EXDEV before anything is copied, and the kernel's
//! inodes under the directory read the moved keys.

use std::time::Duration;

use super::*;
use crate::fs::mutate::RenameMode;
use crate::s3::faulty::{Fault, FaultyStore, Op, internal_error};

fn tree() -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("src/f{i:02}"), format!("file {i}").into_bytes()))
        .collect();
    keys.push(("src/sub/deep".into(), b"deep".to_vec()));
    keys.push(("src/".into(), Vec::new())); // a marker
    keys.push(("other".into(), b"o".to_vec()));
    keys
}

fn config(limit: usize) -> FsConfig {
    FsConfig {
        metadata_ttl: Duration::from_secs(60),
        allow_delete: true,
        allow_overwrite: true,
        max_rename_keys: limit,
        list_page_size: 7,
        ..FsConfig::default()
    }
}

fn faulty(
    limit: usize,
) -> (
    Arc<FaultyStore<InMemoryStore>>,
    S3Filesystem<FaultyStore<InMemoryStore>>,
) {
    let bucket = InMemoryStore::new();
    for (key, data) in tree() {
        bucket.put(&key, data);
    }
    let store = Arc::new(FaultyStore::new(bucket));
    let fs = S3Filesystem::new(store.clone(), config(limit));
    (store, fs)
}

/// `src` renamed to `dst`, replacing it: the rename's answer.
async fn rename_src<S: ObjectStore>(fs: &S3Filesystem<S>) -> Result<(), FsError> {
    fs.rename(ROOT_INO, "src", ROOT_INO, "dst", RenameMode::Replace)
        .await
}

/// The bucket holds `tree()` as it was, and nothing else (`what`: the case, for messages).
fn untouched(bucket: &InMemoryStore, what: &str) {
    for (key, data) in tree() {
        assert_eq!(
            bucket.get(&key).as_deref(),
            Some(data.as_slice()),
            "{what}: {key}"
        );
    }
    assert_eq!(
        bucket.keys().len(),
        tree().len(),
        "{what}: copies left: {:?}",
        bucket.keys()
    );
}

/// Every key of `tree()` is in the bucket under `src/` or `dst/` (with its bytes), and
/// nothing else is.
fn no_key_lost(bucket: &InMemoryStore) {
    for (key, data) in tree() {
        let moved = key.replacen("src/", "dst/", 1);
        let here = bucket.get(&key).or_else(|| bucket.get(&moved));
        assert_eq!(here.as_deref(), Some(data.as_slice()), "{key} lost");
    }
}

#[tokio::test]
async fn every_key_moves_and_inodes_follow() {
    let (store, fs) = faulty(100);
    let src = fs.lookup(ROOT_INO, "src").await.unwrap();
    let deep_dir = fs.lookup(src.ino, "sub").await.unwrap();
    let deep = fs.lookup(deep_dir.ino, "deep").await.unwrap();
    rename_src(&fs).await.unwrap();
    let bucket = store.inner();
    let mut keys = bucket.keys();
    keys.sort();
    assert!(keys.iter().all(|k| !k.starts_with("src/")), "{keys:?}");
    assert_eq!(keys.len(), tree().len());
    no_key_lost(bucket);
    // The kernel keeps its inodes: they stand for the new keys.
    let fh = fs.open(deep.ino, OpenMode::default(), me()).await.unwrap();
    assert_eq!(fs.read(fh, 0, 100).await.unwrap().as_ref(), b"deep");
    fs.release(fh).await;
    assert_eq!(
        fs.lookup(ROOT_INO, "src").await.unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(fs.lookup(ROOT_INO, "dst").await.unwrap().ino, src.ino);
    assert_eq!(names_in(&fs, src.ino).await.len(), 2 + 21);
}

#[tokio::test]
async fn off_by_default_and_over_the_limit_exdev_before_any_copy() {
    for limit in [0, 21] {
        let (store, fs) = faulty(limit);
        let err = rename_src(&fs).await.unwrap_err();
        assert_eq!(err.errno(), libc::EXDEV, "limit {limit}");
        assert_eq!(store.calls(Op::Copy), 0);
        assert_eq!(store.inner().keys().len(), tree().len());
    }
    let (_, fs) = faulty(22); // 20 files, one deeper, the marker
    rename_src(&fs).await.unwrap();
}

#[tokio::test]
async fn a_failed_copy_anywhere_leaves_the_source_whole_and_no_copy() {
    // 21 copies (the files) and one PUT (the marker, written anew at its new key).
    let faults = [(Op::Copy, 1), (Op::Copy, 11), (Op::Copy, 21), (Op::Put, 1)];
    for (op, nth) in faults {
        let (store, fs) = faulty(100);
        store.inject(op, nth, Fault::Fail(internal_error()));
        let err = rename_src(&fs).await.unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
        untouched(store.inner(), &format!("{op:?} {nth}"));
        assert!(fs.lookup(ROOT_INO, "src").await.is_ok());
    }
}

/// A copy whose answer is lost (it landed, the mount saw an error): the rename fails with
/// the source whole, and that copy is removed with the others.
#[tokio::test]
async fn a_copy_whose_answer_is_lost_is_removed_too() {
    let (store, fs) = faulty(100);
    store.inject(Op::Copy, 11, Fault::LoseAnswer(internal_error()));
    let err = rename_src(&fs).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    untouched(store.inner(), "lost copy answer");
}

#[tokio::test]
async fn a_failed_source_delete_keeps_that_key_and_says_eio() {
    let (store, fs) = faulty(100);
    store.inject(Op::Delete, 5, Fault::Fail(internal_error()));
    let err = rename_src(&fs).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let bucket = store.inner();
    no_key_lost(bucket);
    let left: Vec<_> = bucket
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("src/"))
        .collect();
    assert_eq!(left.len(), 1, "only the failed delete stays: {left:?}");
}

/// A source replaced by another client after it was copied: its newer version is kept at
/// the old name (the copied one is at the new), the rest move, and the rename says EIO.
#[tokio::test]
async fn a_source_changed_after_its_copy_is_kept_and_the_rename_says_eio() {
    let (store, fs) = faulty(100);
    // The last copy waits, so the first source is copied and then changed meanwhile.
    store.inject(Op::Copy, 21, Fault::Delay(Duration::from_millis(300)));
    let change = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.inner().put("src/f00", "changed elsewhere");
    };
    let (renamed, ()) = tokio::join!(rename_src(&fs), change);
    assert_eq!(renamed.unwrap_err().errno(), libc::EIO);
    let bucket = store.inner();
    assert_eq!(
        bucket.get("src/f00").as_deref(),
        Some(&b"changed elsewhere"[..])
    );
    assert_eq!(bucket.get("dst/f00").as_deref(), Some(&b"file 0"[..]));
    let left: Vec<_> = bucket
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("src"))
        .collect();
    assert_eq!(left, ["src/f00"], "only the changed source stays");
}

#[tokio::test]
async fn targets_inside_itself_non_empty_or_busy_are_refused() {
    let (store, fs) = faulty(100);
    store.inner().put("full/x", "x");
    let src = fs.lookup(ROOT_INO, "src").await.unwrap();
    let sub = fs.lookup(src.ino, "sub").await.unwrap();
    let rename = |to_parent, to| fs.rename(ROOT_INO, "src", to_parent, to, RenameMode::Replace);
    assert_eq!(
        rename(sub.ino, "x").await.unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        rename(ROOT_INO, "full").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    assert_eq!(
        rename(ROOT_INO, "other").await.unwrap_err().errno(),
        libc::ENOTDIR
    );
    let f = fs.lookup(src.ino, "f00").await.unwrap();
    let fh = fs.open(f.ino, OpenMode::default(), me()).await.unwrap();
    assert_eq!(
        rename(ROOT_INO, "dst").await.unwrap_err().errno(),
        libc::EBUSY
    );
    fs.release(fh).await;
    assert_eq!(store.calls(Op::Copy), 0);
    // An empty directory is replaced.
    fs.mkdir(ROOT_INO, "empty").await.unwrap();
    rename(ROOT_INO, "empty").await.unwrap();
    assert_eq!(store.inner().get("empty/f03").unwrap().as_ref(), b"file 3");
}

/// A key ending in `/` that holds data (written by another tool) is a source like any file:
/// replaced by another client after its copy, its newer version is kept, not deleted with
/// the directory markers.
#[tokio::test]
async fn a_changed_key_ending_in_a_slash_is_kept_too() {
    let (store, fs) = faulty(100);
    store
        .inner()
        .put("src/sub/", "a body under a directory's name");
    // Copies: the 20 files, `src/sub/`, then `src/sub/deep`, which waits.
    store.inject(Op::Copy, 22, Fault::Delay(Duration::from_millis(300)));
    let change = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.inner().put("src/sub/", "changed elsewhere");
    };
    let (renamed, ()) = tokio::join!(rename_src(&fs), change);
    assert_eq!(renamed.unwrap_err().errno(), libc::EIO);
    let bucket = store.inner();
    assert_eq!(
        bucket.get("src/sub/").as_deref(),
        Some(&b"changed elsewhere"[..]),
        "the newer version was deleted"
    );
    assert_eq!(
        bucket.get("dst/sub/").as_deref(),
        Some(&b"a body under a directory's name"[..])
    );
}
