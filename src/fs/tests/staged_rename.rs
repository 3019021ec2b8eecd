//! A staged file renamed while still open for writing, as tempfile's `persist` does (and
//! safetensors' `save_file` with it): a new file is retargeted, so its commit lands under the
//! new name only, whole; onto an existing object it replaces only the version the rename
//! found. A file with an object under its old name and writes not committed is refused.

use std::time::Duration;

use super::staged_points::{MIB, Store, data, faults, staged_with};
use super::*;
use crate::s3::faulty::Fault;
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
    let fh = write_then_rename(&fs, b"the third model", "model").await;
    let renamed = fs.lookup(ROOT_INO, "model").await.unwrap();
    assert_eq!(renamed.size, 15);
    bucket.put("model", b"their model".to_vec());
    assert_eq!(fs.flush(fh, me()).await.unwrap_err().errno(), libc::EIO);
    fs.release(fh).await;
    assert_eq!(bucket.get("model").as_deref(), Some(&b"their model"[..]));
    // The kernel may still hold the name on the renamed inode: it shows what S3 holds, not
    // the size of what failed to land.
    assert_eq!(fs.getattr(renamed.ino).await.unwrap().size, 11);
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

/// The retargeted commit under every fault at each of its requests (one PUT for a small
/// file; the multipart upload's for 12 MiB): the close succeeds exactly when S3 holds the new
/// model under its name, a failure leaves the old one, the temporary name never appears, and
/// no upload is left behind.
#[tokio::test(start_paused = true)]
async fn a_retargeted_commit_tells_the_truth_at_every_commit_point() {
    let old = data(1000, 7);
    let cases = [
        (data(1000, 8), vec![(Op::Put, 1)]),
        (
            data(12 * MIB, 9),
            vec![
                (Op::CreateMultipart, 1),
                (Op::UploadPart, 2),
                (Op::CompleteMultipart, 1),
            ],
        ),
    ];
    let mut tried = 0;
    for (new, points) in &cases {
        for &(op, nth) in points {
            for fault in faults(op) {
                let area = tempfile::tempdir().unwrap();
                let (store, fs) = staged_with(&[("model", &old)], area.path(), true);
                store.inner().inject(op, nth, fault.clone());
                let fh = write_then_rename(&fs, new, "model").await;
                let result = fs.flush(fh, me()).await;
                fs.release(fh).await;
                let bucket = store.inner().inner();
                let held = bucket.get("model");
                let case = format!("{op:?}#{nth} {fault:?}: {result:?}");
                match &result {
                    Ok(()) => assert!(held.as_deref() == Some(&new[..]), "{case}"),
                    Err(_) => assert!(held.as_deref() == Some(&old[..]), "{case}"),
                }
                if matches!(fault, Fault::LoseAnswer(_)) && op != Op::UploadPart {
                    assert!(
                        result.is_ok(),
                        "{case}: a write that landed reported failed"
                    );
                }
                assert!(bucket.get(TEMP).is_none(), "{case}");
                let report = fs.shutdown(Duration::from_secs(10)).await;
                assert_eq!(bucket.open_uploads(), 0, "{case}: upload left");
                assert!(report.left_behind.is_empty(), "{case}");
                tried += 1;
            }
        }
    }
    assert!(tried >= 25, "{tried} cases");
}

/// A file committed (by an fsync) while its rename looks the target up is renamed as any
/// object is: copied to the new name, its old key deleted.
#[tokio::test(start_paused = true)]
async fn a_file_committed_while_its_rename_looks_up_the_target_is_renamed_as_an_object() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged_with(&[], area.path(), true);
    let (_, fh) = fs.create(ROOT_INO, TEMP, me(), true).await.unwrap();
    fs.write(fh, 0, b"synced", me()).await.unwrap();
    let heads = store.inner().calls(Op::Head);
    let slow = Fault::Delay(Duration::from_millis(500));
    store.inner().inject(Op::Head, heads + 1, slow);
    let (renamed, synced) = tokio::join!(
        fs.rename(ROOT_INO, TEMP, ROOT_INO, "model", RenameMode::Replace),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fs.fsync(fh).await
        }
    );
    synced.unwrap();
    renamed.unwrap();
    assert_eq!(store.inner().calls(Op::Copy), 1, "renamed by a copy");
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    let bucket = store.inner().inner();
    assert_eq!(bucket.get("model").as_deref(), Some(&b"synced"[..]));
    assert!(bucket.get(TEMP).is_none());
}

/// A write that lands while the rename looks the target up is kept: the renamed inode shows
/// the size with it, and the commit holds it (the rename used to put back the size it read
/// before its HEAD).
#[tokio::test(start_paused = true)]
async fn a_write_while_the_rename_looks_up_the_target_keeps_its_size() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged_with(&[], area.path(), true);
    let (_, fh) = fs.create(ROOT_INO, TEMP, me(), true).await.unwrap();
    fs.write(fh, 0, b"header ", me()).await.unwrap();
    let heads = store.inner().calls(Op::Head);
    let slow = Fault::Delay(Duration::from_millis(500));
    store.inner().inject(Op::Head, heads + 1, slow);
    let (renamed, written) = tokio::join!(
        fs.rename(ROOT_INO, TEMP, ROOT_INO, "model", RenameMode::Replace),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fs.write(fh, 7, b"and tensors", me()).await
        }
    );
    renamed.unwrap();
    written.unwrap();
    assert_eq!(fs.lookup(ROOT_INO, "model").await.unwrap().size, 18);
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    let bucket = store.inner().inner();
    let landed = bucket.get("model");
    assert_eq!(landed.as_deref(), Some(&b"header and tensors"[..]));
}

/// Unlinked after it was renamed onto an object and before its close: the object the rename
/// replaced is deleted (rename then unlink leaves no name), nothing lands, and the close does
/// not fail for the commit that no longer has anywhere to go.
#[tokio::test]
async fn a_retargeted_file_unlinked_before_its_close_leaves_nothing() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = staged_with(&[("model", b"old model")], area.path(), true);
    let fh = write_then_rename(&fs, b"new model", "model").await;
    fs.unlink(ROOT_INO, "model").await.unwrap();
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    let bucket = store.inner().inner();
    assert!(bucket.get("model").is_none() && bucket.get(TEMP).is_none());
    assert_eq!(bucket.open_uploads(), 0);
}
