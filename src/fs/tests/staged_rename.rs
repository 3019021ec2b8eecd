//! A staged file renamed while still open for writing, as tempfile's `persist` does (and
//! safetensors' `save_file` with it): a new file is retargeted, so its commit lands under the
//! new name only, whole; onto an existing object it replaces only the version the rename
//! found. A file with an object under its old name and writes not committed is refused.

use super::staged_points::{Store, staged_with};
use super::*;
use crate::s3::faulty::Op;

const TEMP: &str = ".tmpA1b2C3";

/// Creates `TEMP`, writes `first` and renames it to `name` while it is open; returns the
/// open handle.
async fn write_then_rename(fs: &S3Filesystem<Store>, first: &[u8], name: &str) -> u64 {
    let (_, fh) = fs.create(ROOT_INO, TEMP, me(), true).await.unwrap();
    fs.write(fh, 0, first, me()).await.unwrap();
    fs.rename(ROOT_INO, TEMP, ROOT_INO, name, RenameMode::Replace)
        .await
        .unwrap();
    fh
}

/// Renaming `from` to `to` is EPERM; then handle `fh` is closed (its commit succeeds).
async fn refused_then_closed(fs: &S3Filesystem<Store>, fh: u64, from: &str, to: &str) {
    let refused = fs.rename(ROOT_INO, from, ROOT_INO, to, RenameMode::Replace);
    assert_eq!(refused.await.unwrap_err().errno(), libc::EPERM);
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
}

#[tokio::test]
async fn a_new_file_renamed_before_its_close_lands_under_the_new_name_only() {
    let area = tempfile::tempdir().unwrap();
    // Nothing is deleted in S3: no --allow-delete needed.
    let (store, fs) = staged_with(&[], area.path(), false);
    let fh = write_then_rename(&fs, b"header ", "model.safetensors").await;
    assert_eq!(store.inner().calls(Op::Copy), 0, "nothing to copy");
    fs.write(fh, 7, b"and tensors", me()).await.unwrap();
    assert_eq!(
        fs.lookup(ROOT_INO, TEMP).await.unwrap_err().errno(),
        libc::ENOENT
    );
    let moved = fs.lookup(ROOT_INO, "model.safetensors").await.unwrap();
    assert_eq!(moved.size, 18);
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    let bucket = store.inner().inner();
    assert_eq!(
        bucket.get("model.safetensors").as_deref(),
        Some(&b"header and tensors"[..])
    );
    assert!(bucket.get(TEMP).is_none(), "never under the temporary name");
    assert_eq!(bucket.open_uploads(), 0);
}

#[tokio::test]
async fn a_rename_onto_an_object_replaces_only_the_version_it_found() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged_with(&[("model", b"old model")], area.path(), true);
    let fh = write_then_rename(&fs, b"new model", "model").await;
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    let bucket = store.inner().inner();
    assert_eq!(bucket.get("model").as_deref(), Some(&b"new model"[..]));

    // Another client replaces the object between the rename and the close: the close
    // fails and leaves that client's version, and the temporary name stays unused.
    let fh = write_then_rename(&fs, b"third model", "model").await;
    bucket.put("model", b"their model".to_vec());
    assert_eq!(fs.flush(fh, me()).await.unwrap_err().errno(), libc::EIO);
    fs.release(fh).await;
    assert_eq!(bucket.get("model").as_deref(), Some(&b"their model"[..]));
    assert!(bucket.get(TEMP).is_none());
    assert_eq!(bucket.open_uploads(), 0);
}

#[tokio::test]
async fn a_committed_file_with_later_writes_is_not_renamed() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged_with(&[], area.path(), true);
    let (_, fh) = fs.create(ROOT_INO, TEMP, me(), true).await.unwrap();
    fs.write(fh, 0, b"synced", me()).await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.write(fh, 6, b" and not", me()).await.unwrap();
    refused_then_closed(&fs, fh, TEMP, "model").await;
    let bucket = store.inner().inner();
    assert_eq!(bucket.get(TEMP).as_deref(), Some(&b"synced and not"[..]));
    assert!(bucket.get("model").is_none());
}

#[tokio::test]
async fn a_retargeted_file_moves_on_unless_it_replaced_an_object() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged_with(&[("model", b"old model")], area.path(), true);
    let fh = write_then_rename(&fs, b"bytes", "step-1").await;
    fs.rename(ROOT_INO, "step-1", ROOT_INO, "model", RenameMode::Replace)
        .await
        .unwrap();
    // Moving on from `model` would leave its old object there, under a name that is gone.
    refused_then_closed(&fs, fh, "model", "step-2").await;
    let bucket = store.inner().inner();
    assert_eq!(bucket.get("model").as_deref(), Some(&b"bytes"[..]));
    assert!(bucket.get("step-1").is_none() && bucket.get("step-2").is_none());
}

/// A file created over an existing object (no O_EXCL, `--allow-overwrite`) is not new: its
/// old object is under its name, so a rename before the commit is refused, not retargeted
/// (which would leave that object showing under the old name).
#[tokio::test]
async fn a_file_created_over_an_object_is_not_retargeted() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged_with(&[("f", b"old")], area.path(), true);
    let (_, fh) = fs.create(ROOT_INO, "f", me(), false).await.unwrap();
    fs.write(fh, 0, b"new", me()).await.unwrap();
    refused_then_closed(&fs, fh, "f", "g").await;
    let bucket = store.inner().inner();
    assert_eq!(bucket.get("f").as_deref(), Some(&b"new"[..]));
    assert!(bucket.get("g").is_none());
}
