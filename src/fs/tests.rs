//! Filesystem behaviour on the in-memory store: name rules, shadowing, caching, reads.

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// The calling process, as FUSE would report it.
fn me() -> u32 {
    std::process::id()
}
use crate::s3::memory::MemoryStore;

fn setup(
    keys: &[(&str, &[u8])],
    config: FsConfig,
) -> (Arc<MemoryStore>, S3Filesystem<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    for (key, data) in keys {
        store.put(key, data.to_vec());
    }
    let fs = S3Filesystem::new(store.clone(), config);
    (store, fs)
}

fn ttl(secs: u64) -> FsConfig {
    FsConfig {
        metadata_ttl: Duration::from_secs(secs),
        ..FsConfig::default()
    }
}

async fn names_in(fs: &S3Filesystem<MemoryStore>, ino: u64) -> Vec<(String, Kind)> {
    let fh = fs.opendir(ino).unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let batch = fs.readdir(ino, fh, offset, 7).await.unwrap();
        if batch.is_empty() {
            break;
        }
        offset = batch.last().unwrap().next_offset;
        out.extend(batch.into_iter().map(|e| (e.name, e.attr.kind)));
    }
    fs.releasedir(fh);
    out.sort();
    out
}

#[tokio::test]
async fn lookup_files_dirs_and_shadowing() {
    let (_, fs) = setup(
        &[
            (("a/b/c.txt"), b"abc"),
            ("x", b"file"),
            ("x/y", b"in dir"),
            ("m/", b""),
        ],
        ttl(60),
    );
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    assert_eq!(a.kind, Kind::Dir);
    let b = fs.lookup(a.ino, "b").await.unwrap();
    let c = fs.lookup(b.ino, "c.txt").await.unwrap();
    assert_eq!((c.kind, c.size), (Kind::File, 3));
    assert_eq!(fs.lookup(ROOT_INO, "x").await.unwrap().kind, Kind::Dir);
    assert_eq!(fs.lookup(ROOT_INO, "m").await.unwrap().kind, Kind::Dir);
    assert!(matches!(
        fs.lookup(ROOT_INO, "nope").await,
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        fs.lookup(c.ino, "z").await,
        Err(FsError::NotADirectory)
    ));
}

#[tokio::test]
async fn invalid_names_never_resolve_or_list() {
    let long = format!("d/{}", "n".repeat(256));
    let (_, fs) = setup(
        &[
            ("d/ok", b"1"),
            ("d//x", b"2"),
            ("d/./y", b"3"),
            (long.as_str(), b"4"),
        ],
        ttl(60),
    );
    let d = fs.lookup(ROOT_INO, "d").await.unwrap();
    for bad in [".", "..", "", &"n".repeat(256)] {
        assert!(fs.lookup(d.ino, bad).await.is_err(), "{bad:?} resolved");
    }
    let listed = names_in(&fs, d.ino).await;
    assert_eq!(
        listed,
        vec![
            (".".to_string(), Kind::Dir),
            ("..".to_string(), Kind::Dir),
            ("ok".to_string(), Kind::File)
        ]
    );
}

#[tokio::test]
async fn prefix_is_the_root() {
    let (_, fs) = setup(
        &[("p/in.txt", b"yes"), ("other.txt", b"no")],
        FsConfig {
            prefix: "p/".into(),
            ..ttl(60)
        },
    );
    assert!(fs.lookup(ROOT_INO, "in.txt").await.is_ok());
    assert!(fs.lookup(ROOT_INO, "other.txt").await.is_err());
    let names: Vec<_> = names_in(&fs, ROOT_INO)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, vec![".", "..", "in.txt"]);
}

#[tokio::test]
async fn negative_lookups_are_cached_for_the_ttl() {
    let (store, fs) = setup(&[], ttl(60));
    assert!(fs.lookup(ROOT_INO, "late").await.is_err());
    store.put("late", b"now here".to_vec());
    assert!(
        fs.lookup(ROOT_INO, "late").await.is_err(),
        "cached as missing"
    );

    let (store, fs) = setup(&[], ttl(0));
    assert!(fs.lookup(ROOT_INO, "late").await.is_err());
    store.put("late", b"now here".to_vec());
    assert!(
        fs.lookup(ROOT_INO, "late").await.is_ok(),
        "ttl 0 caches nothing"
    );
}

#[tokio::test]
async fn stat_refreshes_after_ttl() {
    let (store, fs) = setup(&[("f", b"old")], ttl(0));
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    store.put("f", b"newer bytes".to_vec());
    assert_eq!(fs.getattr(f.ino).await.unwrap().size, 11);
    store.delete("f");
    assert!(matches!(fs.getattr(f.ino).await, Err(FsError::NotFound)));

    let (store, fs) = setup(&[("f", b"old")], ttl(3600));
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    store.put("f", b"newer bytes".to_vec());
    assert_eq!(
        fs.getattr(f.ino).await.unwrap().size,
        3,
        "cached within ttl"
    );
}

#[tokio::test]
async fn open_read_release() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let (_, fs) = setup(&[("d/f", &data)], ttl(60));
    let d = fs.lookup(ROOT_INO, "d").await.unwrap();
    let f = fs.lookup(d.ino, "f").await.unwrap();
    let fh = fs.open(f.ino, OpenMode::default(), me()).await.unwrap();
    let got = fs.read(fh, 99_990, 4096).await.unwrap();
    assert_eq!(&got[..], &data[99_990..]);
    fs.release(fh).await;
    assert!(matches!(fs.read(fh, 0, 1).await, Err(FsError::BadHandle)));
    assert_eq!(fs.open_handles(), 0);
    assert!(matches!(
        fs.open(d.ino, OpenMode::default(), me()).await,
        Err(FsError::IsADirectory)
    ));
}

#[tokio::test]
async fn writes_are_refused_with_a_clear_errno() {
    let (_, fs) = setup(&[("f", b"x")], ttl(60));
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    let write = OpenMode {
        write: true,
        ..OpenMode::default()
    };
    assert_eq!(
        fs.open(f.ino, write, me()).await.unwrap_err().errno(),
        libc::EPERM
    );
    let (_, ro) = setup(
        &[("f", b"x")],
        FsConfig {
            read_only: true,
            ..ttl(60)
        },
    );
    let f = ro.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(
        ro.open(f.ino, write, me()).await.unwrap_err().errno(),
        libc::EROFS
    );
}

#[tokio::test]
async fn readdir_seeds_stat_cache_and_lookups_are_counted() {
    let (_, fs) = setup(&[("a", b"12345"), ("b/c", b"")], ttl(60));
    let listed = names_in(&fs, ROOT_INO).await;
    assert_eq!(listed.len(), 4);
    let before = fs.inodes.len();
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    assert_eq!(a.size, 5);
    assert_eq!(fs.inodes.len(), before, "lookup reused the listed inode");
    fs.forget(a.ino, 1);
    assert!(fs.inodes.get(a.ino).is_none());
}
