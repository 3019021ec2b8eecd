//! Namespace changes and writes: what lands in S3, what is refused.

use std::time::Duration;

use super::*;

/// A filesystem over `keys` that may delete and overwrite as asked, with 5 MiB parts.
fn setup_writable(
    keys: &[(&str, &[u8])],
    delete: bool,
    overwrite: bool,
) -> (Arc<InMemoryStore>, S3Filesystem<InMemoryStore>) {
    let config = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        allow_delete: delete,
        allow_overwrite: overwrite,
        read_part_size: 5 * 1024 * 1024,
        write_part_size: 5 * 1024 * 1024,
        ..FsConfig::default()
    };
    setup(keys, config)
}
const TRUNC_WRITE: OpenMode = OpenMode {
    write: true,
    truncate: true,
    append: false,
    direct: false,
};

#[tokio::test]
async fn create_write_close_lands_whole_and_only_at_close() {
    let (store, fs) = setup_writable(&[], false, false);
    let (attr, fh) = fs.create(ROOT_INO, "new.bin", me(), false).await.unwrap();
    let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 241) as u8).collect();
    let mut offset = 0;
    for chunk in data.chunks(1 << 20) {
        fs.write(fh, offset, chunk, me()).await.unwrap();
        offset += chunk.len() as u64;
        assert!(store.get("new.bin").is_none(), "visible before close");
    }
    assert_eq!(
        fs.getattr(attr.ino).await.unwrap().size,
        offset,
        "size grows while writing"
    );
    let names: Vec<_> = {
        let dh = fs.opendir(ROOT_INO).unwrap();
        let entries = fs.readdir(ROOT_INO, dh, 0, 100).await.unwrap();
        entries.into_iter().map(|e| e.name).collect()
    };
    assert!(
        names.contains(&"new.bin".to_string()),
        "listed while writing: {names:?}"
    );
    assert_eq!(fs.read(fh, 0, 10).await.unwrap_err().errno(), libc::EPERM);
    let other = fs.open(attr.ino, OpenMode::default(), me()).await;
    assert_eq!(
        other.unwrap_err().errno(),
        libc::EPERM,
        "no reading while being written"
    );
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store.get("new.bin").unwrap().as_ref(), &data[..]);
    assert_eq!(store.open_uploads(), 0);
    let after = fs.lookup(ROOT_INO, "new.bin").await.unwrap();
    assert_eq!(after.size, data.len() as u64);
}

#[tokio::test]
async fn empty_file_and_out_of_order_writes() {
    let (store, fs) = setup_writable(&[], false, false);
    let (_, fh) = fs.create(ROOT_INO, "empty", me(), false).await.unwrap();
    fs.write(fh, 0, b"", me()).await.unwrap();
    fs.flush(fh, me()).await.unwrap();
    assert!(
        store.get("empty").is_none(),
        "a flush before any write waits (dup + close)"
    );
    fs.release(fh).await;
    assert_eq!(store.get("empty").unwrap().len(), 0, "release commits");

    let (_, fh) = fs.create(ROOT_INO, "synced", me(), false).await.unwrap();
    fs.write(fh, 0, b"abc", me()).await.unwrap();
    fs.fsync(fh).await.unwrap();
    assert_eq!(
        store.get("synced").unwrap().as_ref(),
        b"abc",
        "fsync commits"
    );
    assert_eq!(
        fs.write(fh, 3, b"d", me()).await.unwrap_err().errno(),
        libc::EINVAL
    );
    fs.release(fh).await;

    let (_, fh) = fs.create(ROOT_INO, "bad", me(), false).await.unwrap();
    fs.write(fh, 0, b"hello", me()).await.unwrap();
    assert_eq!(
        fs.write(fh, 0, b"again", me()).await.unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(fs.flush(fh, me()).await.unwrap_err().errno(), libc::EINVAL);
    fs.release(fh).await;
    assert!(store.get("bad").is_none());
    assert!(
        fs.lookup(ROOT_INO, "bad").await.is_err(),
        "a failed new file vanishes"
    );
}

#[tokio::test]
async fn only_the_opening_process_commits_at_close() {
    let (store, fs) = setup_writable(&[], false, false);
    let (_, fh) = fs.create(ROOT_INO, "f", me(), false).await.unwrap();
    fs.write(fh, 0, b"half", me()).await.unwrap();
    // A child closing its inherited copy (pid 1 stands in for another process).
    fs.flush(fh, 1).await.unwrap();
    assert!(
        store.get("f").is_none(),
        "another process's close must not commit"
    );
    fs.write(fh, 4, b" and the rest", me()).await.unwrap();
    fs.flush(fh, me()).await.unwrap();
    assert_eq!(store.get("f").unwrap().as_ref(), b"half and the rest");
    fs.release(fh).await;
}

#[tokio::test]
async fn overwrite_needs_the_flag_and_o_trunc() {
    let (store, fs) = setup_writable(&[("f", b"old")], false, false);
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(
        fs.open(f.ino, TRUNC_WRITE, me()).await.unwrap_err().errno(),
        libc::EPERM
    );
    assert_eq!(
        fs.create(ROOT_INO, "f", me(), false)
            .await
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );

    let (store2, fs) = setup_writable(&[("f", b"old")], false, true);
    drop(store);
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    let no_trunc = OpenMode {
        truncate: false,
        ..TRUNC_WRITE
    };
    assert_eq!(
        fs.open(f.ino, no_trunc, me()).await.unwrap_err().errno(),
        libc::EPERM
    );
    let append = OpenMode {
        append: true,
        ..TRUNC_WRITE
    };
    assert_eq!(
        fs.open(f.ino, append, me()).await.unwrap_err().errno(),
        libc::EPERM
    );
    let fh = fs.open(f.ino, TRUNC_WRITE, me()).await.unwrap();
    fs.write(fh, 0, b"brand new", me()).await.unwrap();
    assert_eq!(
        store2.get("f").unwrap().as_ref(),
        b"old",
        "old until commit"
    );
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store2.get("f").unwrap().as_ref(), b"brand new");
}

#[tokio::test]
async fn unlink_needs_the_flag() {
    let (store, fs) = setup_writable(&[("f", b"x")], false, false);
    fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(
        fs.unlink(ROOT_INO, "f").await.unwrap_err().errno(),
        libc::EPERM
    );
    assert!(store.get("f").is_some());

    let (store, fs) = setup_writable(&[("f", b"x")], true, false);
    fs.unlink(ROOT_INO, "f").await.unwrap();
    assert!(store.get("f").is_none());
    assert_eq!(
        fs.unlink(ROOT_INO, "f").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

/// git's lock file: created, closed without a write, unlinked before the kernel's release
/// arrives. The unlink succeeds and the release makes no object (nor an error).
#[tokio::test]
async fn a_new_file_closed_unwritten_may_be_unlinked_before_its_release() {
    let (store, fs) = setup_writable(&[], true, false);
    let (_, fh) = fs
        .create(ROOT_INO, "config.lock", me(), false)
        .await
        .unwrap();
    fs.flush(fh, me()).await.unwrap();
    fs.unlink(ROOT_INO, "config.lock").await.unwrap();
    fs.release(fh).await;
    assert!(store.get("config.lock").is_none());
    assert!(
        fs.shutdown(std::time::Duration::ZERO)
            .await
            .not_landed
            .is_empty()
    );
    let (_, fh) = fs
        .create(ROOT_INO, "config.lock", me(), false)
        .await
        .unwrap();
    assert_eq!(fs.write(fh, 0, b"x", me()).await.unwrap(), 1);
    assert_eq!(
        fs.unlink(ROOT_INO, "config.lock")
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM,
        "a file with data being streamed is not unlinked"
    );
    fs.release(fh).await;
    assert_eq!(store.get("config.lock").unwrap().as_ref(), b"x");
}

#[tokio::test]
async fn mkdir_is_local_until_a_file_lands_and_rmdir_removes_empty_ones() {
    let (store, fs) = setup_writable(&[("real/x", b"x")], true, false);
    let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
    assert_eq!(
        fs.mkdir(ROOT_INO, "d").await.unwrap_err().errno(),
        libc::EEXIST
    );
    assert_eq!(
        fs.mkdir(ROOT_INO, "real").await.unwrap_err().errno(),
        libc::EEXIST
    );
    assert!(store.get("d/").is_none(), "no marker object");
    let (_, fh) = fs.create(d.ino, "f", me(), false).await.unwrap();
    assert_eq!(
        fs.rmdir(ROOT_INO, "d").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    fs.write(fh, 0, b"inside", me()).await.unwrap();
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    assert_eq!(store.get("d/f").unwrap().as_ref(), b"inside");
    assert_eq!(
        fs.rmdir(ROOT_INO, "d").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    assert_eq!(
        fs.rmdir(ROOT_INO, "real").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );

    // Deleting the last file makes an implicit directory vanish; rmdir still succeeds.
    fs.unlink(d.ino, "f").await.unwrap();
    fs.rmdir(ROOT_INO, "d").await.unwrap();

    fs.mkdir(ROOT_INO, "empty").await.unwrap();
    fs.rmdir(ROOT_INO, "empty").await.unwrap();
    assert_eq!(
        fs.rmdir(ROOT_INO, "empty").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

#[tokio::test]
async fn rename_copies_then_deletes() {
    let (store, fs) = setup_writable(
        &[("a", b"aaa"), ("b", b"bbb"), ("dir/x", b"x")],
        false,
        false,
    );
    assert_eq!(
        fs.rename(ROOT_INO, "a", ROOT_INO, "c", RenameMode::Replace)
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );

    let (store2, fs) = setup_writable(
        &[("a", b"aaa"), ("b", b"bbb"), ("dir/x", b"x")],
        true,
        false,
    );
    drop(store);
    fs.rename(ROOT_INO, "a", ROOT_INO, "c", RenameMode::Replace)
        .await
        .unwrap();
    assert!(store2.get("a").is_none());
    assert_eq!(store2.get("c").unwrap().as_ref(), b"aaa");
    let err = fs
        .rename(ROOT_INO, "c", ROOT_INO, "b", RenameMode::Replace)
        .await
        .unwrap_err();
    assert_eq!(
        err.errno(),
        libc::EPERM,
        "target exists, no --allow-overwrite"
    );
    assert_eq!(store2.get("b").unwrap().as_ref(), b"bbb");
    let err = fs
        .rename(ROOT_INO, "dir", ROOT_INO, "dir2", RenameMode::Replace)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EXDEV);

    let (store3, fs) = setup_writable(&[("a", b"aaa"), ("b", b"bbb")], true, true);
    let err = fs
        .rename(ROOT_INO, "a", ROOT_INO, "b", RenameMode::NoReplace)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    fs.rename(ROOT_INO, "a", ROOT_INO, "b", RenameMode::Replace)
        .await
        .unwrap();
    assert_eq!(store3.get("b").unwrap().as_ref(), b"aaa");
    assert!(store3.get("a").is_none());
}

#[tokio::test]
async fn attribute_changes_are_refused_except_on_files_being_written() {
    let (_, fs) = setup_writable(&[("f", b"x")], true, true);
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(
        fs.setattr(f.ino, None, AttrChange::touch())
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    assert_eq!(
        fs.setattr(f.ino, Some(0), AttrChange::default())
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    let (new, fh) = fs.create(ROOT_INO, "g", me(), false).await.unwrap();
    fs.setattr(new.ino, Some(0), AttrChange::touch())
        .await
        .unwrap();
    fs.write(fh, 0, b"abc", me()).await.unwrap();
    assert_eq!(
        fs.setattr(new.ino, Some(1), AttrChange::default())
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    fs.release(fh).await;
}

#[tokio::test]
async fn read_only_refuses_every_change() {
    let store = Arc::new(InMemoryStore::new());
    store.put("f", b"x".to_vec());
    let fs = S3Filesystem::new(
        store,
        FsConfig {
            read_only: true,
            allow_delete: true,
            allow_overwrite: true,
            ..FsConfig::default()
        },
    );
    assert_eq!(
        fs.create(ROOT_INO, "n", me(), false)
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.mkdir(ROOT_INO, "n").await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.unlink(ROOT_INO, "f").await.unwrap_err().errno(),
        libc::EROFS
    );
    let err = fs
        .rename(ROOT_INO, "f", ROOT_INO, "g", RenameMode::Replace)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EROFS);
}

/// The entries of `ino` without `.` and `..`.
async fn entries_in(fs: &S3Filesystem<InMemoryStore>, ino: u64) -> Vec<(String, Kind)> {
    let mut names = names_in(fs, ino).await;
    names.retain(|(name, _)| name != "." && name != "..");
    names
}

/// Found by the reference model: three ways a directory made by mkdir was lost.
#[tokio::test]
async fn a_new_directory_survives_its_parents_last_key_the_kernel_forgetting_and_an_object_of_its_name()
 {
    let zero = FsConfig {
        metadata_ttl: Duration::ZERO,
        allow_delete: true,
        ..FsConfig::default()
    };
    // Its parent's last key goes.
    let (_, fs) = setup(&[("a/a", b"x")], zero.clone());
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    fs.mkdir(a.ino, "new").await.unwrap();
    fs.unlink(a.ino, "a").await.unwrap();
    let a = fs
        .lookup(ROOT_INO, "a")
        .await
        .expect("the parent holds a new directory");
    assert_eq!(
        entries_in(&fs, a.ino).await,
        [("new".to_string(), Kind::Dir)]
    );
    // The kernel forgets the real parent (memory pressure, drop_caches).
    let (_, fs) = setup(&[("b/", b"")], zero.clone());
    let b = fs.lookup(ROOT_INO, "b").await.unwrap();
    fs.mkdir(b.ino, "new").await.unwrap();
    fs.forget(b.ino, 1);
    let b = fs.lookup(ROOT_INO, "b").await.unwrap();
    assert_eq!(
        entries_in(&fs, b.ino).await,
        [("new".to_string(), Kind::Dir)]
    );
    assert_eq!(
        fs.mkdir(b.ino, "new").await.unwrap_err().errno(),
        libc::EEXIST
    );
    // Another client puts an object named as the new directory: the directory shadows it.
    let (store, fs) = setup(&[], zero);
    fs.mkdir(ROOT_INO, "c").await.unwrap();
    store.put("c", b"object".to_vec());
    assert_eq!(
        entries_in(&fs, ROOT_INO).await,
        [("c".to_string(), Kind::Dir)]
    );
    assert_eq!(fs.lookup(ROOT_INO, "c").await.unwrap().kind, Kind::Dir);
    fs.rmdir(ROOT_INO, "c").await.unwrap();
}
