//! `--posix-metadata`: attributes in object metadata (s3fs's names), chmod/chown/utimes as a
//! copy onto itself, symbolic links, directory markers; and that without the flag every one
//! of those calls is refused as before and no HEAD is added to listings.

use std::time::{Duration, SystemTime};

use super::*;
use crate::fs::config::Staging;
use crate::fs::posix::Creator;
use crate::fs::staged::dir::{StagingConfig, StagingDir};
use crate::s3::Posix;
use crate::s3::posix::{S_IFDIR, S_IFLNK, S_IFREG};

fn posix_fs(
    keys: &[(&str, &[u8])],
    staging: Option<&std::path::Path>,
) -> (Arc<InMemoryStore>, S3Filesystem<InMemoryStore>) {
    let config = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        allow_delete: true,
        allow_overwrite: true,
        posix_metadata: true,
        uid: 1,
        gid: 2,
        staging: if staging.is_some() {
            Staging::All
        } else {
            Staging::Off
        },
        ..FsConfig::default()
    };
    let (store, fs) = setup(keys, config);
    let fs = match staging {
        Some(dir) => fs.with_staging(Some(Arc::new(
            StagingDir::open(&StagingConfig {
                dir: dir.to_path_buf(),
                max_bytes: Some(1 << 30),
            })
            .unwrap(),
        ))),
        None => fs,
    };
    (store, fs)
}

const ALICE: Creator = Creator {
    uid: 1000,
    gid: 100,
    perm: 0o640,
};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn chmod(mode: u32) -> AttrChange {
    AttrChange {
        posix: Posix {
            mode: Some(mode),
            ..Posix::default()
        },
        ..AttrChange::default()
    }
}

#[tokio::test]
async fn new_files_carry_their_creator_and_chmod_chown_utimes_copy_onto_themselves() {
    let (store, fs) = posix_fs(&[], None);
    let (attr, fh) = fs
        .create_as(ROOT_INO, "f", me(), false, Some(ALICE))
        .await
        .unwrap();
    assert_eq!((attr.perm, attr.uid, attr.gid), (0o640, 1000, 100));
    fs.write(fh, 0, b"payload", me()).await.unwrap();
    fs.release(fh).await;
    let stored = store.posix("f").unwrap();
    assert_eq!(stored.mode, Some(S_IFREG | 0o640));
    assert_eq!((stored.uid, stored.gid), (Some(1000), Some(100)));

    let before = store.etag("f").unwrap();
    let attr = fs.setattr(attr.ino, None, chmod(0o100755)).await.unwrap();
    assert_eq!(attr.perm, 0o755);
    assert_ne!(
        store.etag("f").unwrap(),
        before,
        "a copy made a new version"
    );
    assert_eq!(store.get("f").unwrap().as_ref(), b"payload");
    assert_eq!(store.posix("f").unwrap().mode, Some(S_IFREG | 0o755));

    let change = AttrChange {
        posix: Posix {
            uid: Some(7),
            mtime: Some(at(1_500_000_000)),
            ..Posix::default()
        },
        atime: true,
        other: false,
    };
    let attr = fs.setattr(attr.ino, None, change).await.unwrap();
    assert_eq!(
        (attr.uid, attr.gid, attr.mtime),
        (7, 100, at(1_500_000_000))
    );
    let stored = store.posix("f").unwrap();
    assert_eq!((stored.uid, stored.gid), (Some(7), Some(100)));
    assert_eq!(stored.mode, Some(S_IFREG | 0o755), "chown kept the mode");

    // A fresh mount reads it all back from the object.
    let fresh = S3Filesystem::new(store.clone(), fs.config().clone());
    let attr = fresh.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(
        (attr.perm, attr.uid, attr.gid, attr.mtime),
        (0o755, 7, 100, at(1_500_000_000))
    );
}

#[tokio::test]
async fn objects_written_by_s3fs_list_with_their_attributes_and_others_with_the_defaults() {
    let (store, fs) = posix_fs(&[("plain", b"p")], None);
    store.put_with_posix(
        "d/s3fs-file",
        "x",
        Posix {
            mode: Some(0o100600),
            uid: Some(33),
            gid: Some(44),
            mtime: Some(at(1_600_000_000)),
        },
    );
    store.put_with_posix(
        "d/",
        "",
        Posix {
            mode: Some(S_IFDIR | 0o700),
            uid: Some(33),
            ..Posix::default()
        },
    );
    let fh = fs.opendir(ROOT_INO).unwrap();
    let entries = fs.readdir(ROOT_INO, fh, 0, 100).await.unwrap();
    fs.releasedir(fh);
    let plain = entries.iter().find(|e| e.name == "plain").unwrap();
    assert_eq!((plain.attr.perm, plain.attr.uid), (0o644, 1));
    let d = entries.iter().find(|e| e.name == "d").unwrap();
    assert_eq!(
        (d.attr.kind, d.attr.perm, d.attr.uid),
        (Kind::Dir, 0o700, 33)
    );
    fs.entry_looked_up(ROOT_INO, d);
    let fh = fs.opendir(d.attr.ino).unwrap();
    let inner = fs.readdir(d.attr.ino, fh, 0, 100).await.unwrap();
    fs.releasedir(fh);
    let names: Vec<_> = inner.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [".", "..", "s3fs-file"],
        "the marker is not an entry"
    );
    let f = &inner[2].attr;
    assert_eq!(
        (f.perm, f.uid, f.gid, f.mtime),
        (0o600, 33, 44, at(1_600_000_000))
    );
}

#[tokio::test]
async fn symlinks_are_objects_holding_their_target() {
    let (store, fs) = posix_fs(&[("target.txt", b"t")], None);
    let link = fs
        .symlink(ROOT_INO, "link", b"target.txt", Some(ALICE))
        .await
        .unwrap();
    assert!(link.link);
    assert_eq!(link.size, 10);
    assert_eq!(store.get("link").unwrap().as_ref(), b"target.txt");
    assert_eq!(store.posix("link").unwrap().mode, Some(S_IFLNK | 0o777));
    assert_eq!(fs.readlink(link.ino).await.unwrap().as_ref(), b"target.txt");
    assert_eq!(
        fs.symlink(ROOT_INO, "link", b"x", None)
            .await
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    let file = fs.lookup(ROOT_INO, "target.txt").await.unwrap();
    assert!(!file.link);
    assert_eq!(
        fs.readlink(file.ino).await.unwrap_err().errno(),
        libc::EINVAL
    );
    // Seen by a fresh mount, from a listing.
    let fresh = S3Filesystem::new(store.clone(), fs.config().clone());
    let fh = fresh.opendir(ROOT_INO).unwrap();
    let entries = fresh.readdir(ROOT_INO, fh, 0, 100).await.unwrap();
    let listed = entries.iter().find(|e| e.name == "link").unwrap();
    assert!(listed.attr.link);
    fresh.entry_looked_up(ROOT_INO, listed);
    assert_eq!(
        fresh.readlink(listed.attr.ino).await.unwrap().as_ref(),
        b"target.txt"
    );
}

#[tokio::test]
async fn directories_are_markers_that_hold_their_attributes() {
    let (store, fs) = posix_fs(&[], None);
    let d = fs.mkdir_as(ROOT_INO, "d", Some(ALICE)).await.unwrap();
    assert_eq!(
        store.get("d/").unwrap().len(),
        0,
        "an empty directory exists in S3"
    );
    assert_eq!(store.posix("d/").unwrap().mode, Some(S_IFDIR | 0o640));
    let d = fs.setattr(d.ino, None, chmod(0o40750)).await.unwrap();
    assert_eq!(d.perm, 0o750);
    assert_eq!(store.posix("d/").unwrap().mode, Some(S_IFDIR | 0o750));
    let fresh = S3Filesystem::new(store.clone(), fs.config().clone());
    let seen = fresh.lookup(ROOT_INO, "d").await.unwrap();
    assert_eq!((seen.kind, seen.perm, seen.uid), (Kind::Dir, 0o750, 1000));
    fs.rmdir(ROOT_INO, "d").await.unwrap();
    assert!(store.keys().is_empty());
    assert_eq!(
        fs.setattr(ROOT_INO, None, chmod(0o40700))
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
}

#[tokio::test]
async fn changes_while_writing_go_with_the_commit_and_a_set_mtime_survives_it() {
    for staged in [false, true] {
        let area = tempfile::tempdir().unwrap();
        let (store, fs) = posix_fs(&[], staged.then_some(area.path()));
        let (attr, fh) = fs
            .create_as(ROOT_INO, "copy", me(), false, Some(ALICE))
            .await
            .unwrap();
        fs.write(fh, 0, b"data", me()).await.unwrap();
        // What `cp -p` does before close: times, owner, mode on the open file.
        let change = AttrChange {
            posix: Posix {
                mode: Some(0o100700),
                uid: Some(5),
                gid: Some(6),
                mtime: Some(at(1_234_567_890)),
            },
            atime: true,
            other: false,
        };
        let shown = fs.setattr(attr.ino, None, change).await.unwrap();
        assert_eq!((shown.perm, shown.uid), (0o700, 5), "staged: {staged}");
        assert!(store.get("copy").is_none());
        fs.release(fh).await;
        let stored = store.posix("copy").unwrap();
        assert_eq!(stored.mode, Some(S_IFREG | 0o700), "staged: {staged}");
        assert_eq!((stored.uid, stored.gid), (Some(5), Some(6)));
        assert_eq!(stored.mtime, Some(at(1_234_567_890)), "staged: {staged}");
        assert_eq!(store.get("copy").unwrap().as_ref(), b"data");
    }
}

/// A new file `big` whose streaming upload is under way (6 MiB written, 5 MiB parts), then
/// a chmod to 0444, which must wait for the commit: the store, the mount, the file's inode
/// number and its handle, and what was written.
async fn chmod_during_a_streaming_upload() -> (
    Arc<InMemoryStore>,
    S3Filesystem<InMemoryStore>,
    u64,
    u64,
    Vec<u8>,
) {
    let config = FsConfig {
        posix_metadata: true,
        write_part_size: 5 * 1024 * 1024,
        ..FsConfig::default()
    };
    let (store, fs) = setup(&[], config);
    let (attr, fh) = fs
        .create_as(ROOT_INO, "big", me(), false, Some(ALICE))
        .await
        .unwrap();
    let chunk = vec![7u8; 6 * 1024 * 1024];
    fs.write(fh, 0, &chunk, me()).await.unwrap(); // the multipart upload is under way
    fs.setattr(attr.ino, None, chmod(0o100444)).await.unwrap();
    (store, fs, attr.ino, fh, chunk)
}

#[tokio::test]
async fn a_streaming_upload_under_way_gets_the_change_right_after_its_commit() {
    let (store, fs, _, fh, chunk) = chmod_during_a_streaming_upload().await;
    fs.release(fh).await;
    assert_eq!(store.posix("big").unwrap().mode, Some(S_IFREG | 0o444));
    assert_eq!(store.get("big").unwrap().len(), chunk.len());
    assert_eq!(store.open_uploads(), 0);
}

#[tokio::test]
async fn a_rewrite_keeps_the_objects_attributes() {
    let area = tempfile::tempdir().unwrap();
    let (store, fs) = posix_fs(&[], Some(area.path()));
    store.put_with_posix(
        "f",
        "old",
        Posix {
            mode: Some(0o100751),
            uid: Some(9),
            ..Posix::default()
        },
    );
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    let rw = OpenMode {
        write: true,
        ..OpenMode::default()
    };
    let fh = fs.open(f.ino, rw, me()).await.unwrap();
    fs.write(fh, 3, b"+new", me()).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store.get("f").unwrap().as_ref(), b"old+new");
    let stored = store.posix("f").unwrap();
    assert_eq!((stored.mode, stored.uid), (Some(0o100751), Some(9)));
    assert!(stored.mtime.is_some());
}

#[tokio::test]
async fn without_the_flag_nothing_changes() {
    let config = FsConfig {
        allow_delete: true,
        allow_overwrite: true,
        ..FsConfig::default()
    };
    let (store, fs) = setup(&[("f", b"x")], config);
    store.put_with_posix(
        "g",
        "y",
        Posix {
            mode: Some(0o100600),
            uid: Some(33),
            ..Posix::default()
        },
    );
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(
        fs.setattr(f.ino, None, chmod(0o100755))
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    assert_eq!(
        fs.symlink(ROOT_INO, "l", b"f", None)
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    let heads = store.head_calls();
    let fh = fs.opendir(ROOT_INO).unwrap();
    let entries = fs.readdir(ROOT_INO, fh, 0, 100).await.unwrap();
    let g = entries.iter().find(|e| e.name == "g").unwrap();
    assert_eq!((g.attr.perm, g.attr.uid), (0o644, 0), "metadata ignored");
    assert_eq!(store.head_calls(), heads, "no HEAD added to listings");
    fs.mkdir(ROOT_INO, "d").await.unwrap();
    assert!(store.get("d/").is_none(), "mkdir writes no marker");
}

/// A log reopened for appending right after close(2), before the kernel's release of the
/// previous handle arrives: the open waits for that release instead of failing with EPERM.
/// With `--incremental-upload` the new file streams (no staged file to share), so the open
/// finds the inode still being written by a handle whose upload has committed.
#[tokio::test]
async fn a_reopen_before_the_previous_release_waits_for_it() {
    let area = tempfile::tempdir().unwrap();
    let config = FsConfig {
        allow_overwrite: true,
        staging: Staging::Appends,
        ..FsConfig::default()
    };
    let (store, fs) = setup(&[], config);
    let fs = fs.with_staging(Some(Arc::new(
        StagingDir::open(&StagingConfig {
            dir: area.path().to_path_buf(),
            max_bytes: Some(1 << 30),
        })
        .unwrap(),
    )));
    let (attr, fh) = fs.create(ROOT_INO, "log", me(), false).await.unwrap();
    fs.write(fh, 0, b"a", me()).await.unwrap();
    fs.flush(fh, me()).await.unwrap();
    let append = OpenMode {
        write: true,
        append: true,
        ..OpenMode::default()
    };
    let release_later = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fs.release(fh).await;
    };
    let (reopened, ()) = tokio::join!(fs.open(attr.ino, append, me()), release_later);
    let fh = match reopened {
        Ok(fh) => fh,
        // The released handle still counted as open: the name moved to a fresh inode, and
        // the kernel looks it up again and retries, as here.
        Err(FsError::Stale) => {
            let fresh = fs.lookup(ROOT_INO, "log").await.unwrap();
            fs.open(fresh.ino, append, me()).await.unwrap()
        }
        Err(e) => panic!("reopen: {e}"),
    };
    fs.write(fh, 1, b"b", me()).await.unwrap();
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store.get("log").unwrap().as_ref(), b"ab");
}

/// fsync, chmod (made on the object: a copy onto itself, a new ETag), fsync again, close:
/// the later commits of the handle must not put the ETag of its first commit back on the
/// inode: a reader opening the file would then ask S3 for a version it no longer has.
#[tokio::test]
async fn a_commit_after_a_change_keeps_the_changed_version() {
    let (store, fs, attr, fh) = data_written_to_f().await;
    fs.fsync(fh).await.unwrap();
    fs.setattr(attr.ino, None, chmod(0o100600)).await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store.posix("f").unwrap().mode, Some(S_IFREG | 0o600));
    assert_at_the_stored_version(&fs, &store, attr.ino, "f");
    let reader = fs.open(attr.ino, OpenMode::default(), me()).await.unwrap();
    assert_eq!(&fs.read(reader, 0, 10).await.unwrap()[..], b"data");
    fs.release(reader).await;
}

/// A chmod that found the file still being written, and reached its upload just after the
/// commit landed (the handle still open): it is made on the object, not kept for a commit
/// that will not make a new version.
#[tokio::test]
async fn a_change_racing_the_commit_is_made_on_the_object() {
    let (store, fs, attr, fh) = data_written_to_f().await;
    let before_the_commit = fs.inode(attr.ino).unwrap();
    fs.fsync(fh).await.unwrap();
    let change = Posix {
        mode: Some(0o600),
        ..Posix::default()
    };
    fs.change_posix(&before_the_commit, change).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store.posix("f").unwrap().mode, Some(S_IFREG | 0o600));
    assert_at_the_stored_version(&fs, &store, attr.ino, "f");
}

/// A change deferred while the multipart upload was under way, but after its commit had
/// taken the deferred changes (the chmod lost the race to the commit's end): the next commit
/// of the handle makes no version, and makes the change on the object.
#[tokio::test]
async fn a_change_deferred_after_the_commit_took_its_own_is_still_made() {
    let (store, fs, ino, fh, _) = chmod_during_a_streaming_upload().await;
    fs.fsync(fh).await.unwrap();
    let Ok(crate::fs::handles::OpenFile::Write(handle)) = fs.handle(fh) else {
        panic!("a writing handle");
    };
    handle.defer_posix(&Posix {
        mode: Some(S_IFREG | 0o400),
        ..Posix::default()
    });
    fs.release(fh).await;
    assert_eq!(store.posix("big").unwrap().mode, Some(S_IFREG | 0o400));
    assert_at_the_stored_version(&fs, &store, ino, "big");
}

/// The same for a change deferred to a streaming upload's commit (made by a copy right after
/// it): a later fsync or close answers with the copy's version.
#[tokio::test]
async fn a_commit_after_a_deferred_change_keeps_the_changed_version() {
    let (store, fs, ino, fh, _) = chmod_during_a_streaming_upload().await;
    fs.fsync(fh).await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store.posix("big").unwrap().mode, Some(S_IFREG | 0o444));
    assert_at_the_stored_version(&fs, &store, ino, "big");
    let inode = fs.inode(ino).unwrap();
    assert_eq!(inode.stat.posix.unwrap().mode, Some(S_IFREG | 0o444));
}

/// A mount with `--posix-metadata` where Alice created `f` and wrote `data` to it (not
/// committed yet): the store, the mount, `f`'s attributes and its handle.
async fn data_written_to_f() -> (
    Arc<InMemoryStore>,
    S3Filesystem<InMemoryStore>,
    crate::fs::Attr,
    u64,
) {
    let config = FsConfig {
        posix_metadata: true,
        ..FsConfig::default()
    };
    let (store, fs) = setup(&[], config);
    let (attr, fh) = fs
        .create_as(ROOT_INO, "f", me(), false, Some(ALICE))
        .await
        .unwrap();
    fs.write(fh, 0, b"data", me()).await.unwrap();
    (store, fs, attr, fh)
}

/// The inode `ino` stands at the version of `key` in the store: a reader opening it asks S3
/// for a version it has.
fn assert_at_the_stored_version(
    fs: &S3Filesystem<InMemoryStore>,
    store: &InMemoryStore,
    ino: u64,
    key: &str,
) {
    let etag = store.etag(key).unwrap();
    let inode = fs.inode(ino).unwrap();
    assert_eq!(inode.stat.etag.as_deref(), Some(etag.as_str()), "{key}");
}
