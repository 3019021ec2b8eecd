//! Names, listings, stats and reads.

use std::time::Duration;

use super::*;

fn ttl(secs: u64) -> FsConfig {
    FsConfig {
        metadata_ttl: Duration::from_secs(secs),
        ..FsConfig::default()
    }
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
    let (store, fs) = setup(&[("a", b"12345"), ("b/c", b"")], ttl(60));
    let before = fs.inodes.len();
    let fh = fs.opendir(ROOT_INO).unwrap();
    let entries = fs.readdir(ROOT_INO, fh, 0, 100).await.unwrap();
    fs.releasedir(fh);
    assert_eq!(entries.len(), 4);
    assert_eq!(
        fs.inodes.len(),
        before,
        "a listing does not grow the inode table"
    );
    let listed_a = entries.iter().find(|e| e.name == "a").unwrap().attr.ino;
    let heads = store.head_calls();
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    assert_eq!((a.ino, a.size), (listed_a, 5), "the listed number and stat");
    assert_eq!(store.head_calls(), heads, "no HEAD for a listed name");
    assert_eq!(fs.inodes.len(), before + 1, "the kernel holds it now");
    fs.forget(a.ino, 1);
    assert!(fs.inodes.get(a.ino).is_none());
}

#[tokio::test]
async fn listing_many_keys_keeps_the_table_to_what_the_kernel_holds() {
    let keys: Vec<(String, Vec<u8>)> = (0..20_000)
        .map(|i| (format!("d{:02}/k{i:05}", i % 20), vec![1]))
        .collect();
    let borrowed: Vec<(&str, &[u8])> = keys.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    let (_, fs) = setup(&borrowed, ttl(60));
    // `find`: look up each directory, list it with plain readdir (no lookup counted).
    for d in 0..20 {
        let dir = fs.lookup(ROOT_INO, &format!("d{d:02}")).await.unwrap();
        let names = names_in(&fs, dir.ino).await;
        assert_eq!(names.len(), 1000 + 2);
    }
    assert!(fs.inodes.len() <= 21, "{} inodes held", fs.inodes.len());
    assert!(fs.listed.entry_count() <= LISTED_CACHE_CAPACITY);
    // readdirplus: every entry the reply carried is held, until the kernel forgets it.
    let dir = fs.lookup(ROOT_INO, "d00").await.unwrap();
    let fh = fs.opendir(dir.ino).unwrap();
    let entries = fs.readdir(dir.ino, fh, 2, 10).await.unwrap();
    fs.releasedir(fh);
    for entry in &entries {
        fs.entry_looked_up(dir.ino, entry);
    }
    let held = fs.inodes.len();
    assert!(held >= 21 + entries.len() - 1, "{held}");
    for entry in &entries {
        fs.forget(entry.attr.ino, 1);
    }
    assert!(
        fs.inodes.len() <= 22,
        "{} after forgetting",
        fs.inodes.len()
    );
}

/// The entries of directory `ino` read in kernel-sized batches (no sorting, no dedup).
async fn raw_listing(fs: &S3Filesystem<InMemoryStore>, ino: u64, batch: usize) -> Vec<String> {
    let fh = fs.opendir(ino).unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let entries = fs.readdir(ino, fh, offset, batch).await.unwrap();
        let Some(last) = entries.last() else { break };
        offset = last.next_offset;
        out.extend(entries.into_iter().map(|e| e.name));
    }
    fs.releasedir(fh);
    out
}

#[tokio::test]
async fn a_hundred_thousand_keys_list_in_linear_requests() {
    const N: usize = 100_000;
    let store = Arc::new(InMemoryStore::new());
    for i in 0..N {
        store.put(&format!("big/k{i:06}"), Vec::new());
    }
    let fs = S3Filesystem::new(store.clone(), ttl(60));
    let big = fs.lookup(ROOT_INO, "big").await.unwrap();
    let lists_before = store.list_calls();
    let names = raw_listing(&fs, big.ino, 128).await;
    let lists = store.list_calls() - lists_before;
    assert_eq!(names.len(), N + 2, "every key once, plus . and ..");
    assert!(
        names[2..].windows(2).all(|w| w[0] < w[1]),
        "in order, none twice"
    );
    // One LIST per page of 1,000 keys (and the one that finds the end): never a re-list
    // from the start, so the work is linear in the number of keys.
    assert!(lists <= (N / 1000 + 2) as u64, "{lists} LIST requests");
}

#[tokio::test]
async fn hostile_names_list_and_open_or_are_hidden() {
    let long_component = "L".repeat(255);
    let too_long = "T".repeat(256);
    // A 1,024-byte key made of components the kernel accepts.
    let kilo_key = format!(
        "long/{}/{}/{}/{}/{}",
        "a".repeat(250),
        "b".repeat(250),
        "c".repeat(250),
        "d".repeat(250),
        "e".repeat(15)
    );
    assert_eq!(kilo_key.len(), 1024);
    let deep: String = (0..300).map(|i| format!("d{i}/")).collect::<String>() + "leaf";
    let keys: Vec<(String, &[u8])> = vec![
        ("ctl/new\nline".into(), b"1"),
        ("ctl/tab\there".into(), b"2"),
        ("ctl/esc\x1b[31mred".into(), b"3"),
        ("ctl/del\x7f".into(), b"4"),
        ("ctl/bell\x07".into(), b"5"),
        ("ctl/back\\slash".into(), b"6"),
        (format!("ctl/{long_component}"), b"7"),
        (format!("ctl/{too_long}"), b"hidden"),
        ("ctl/nul\0inside".into(), b"hidden"),
        (kilo_key.clone(), b"kilo"),
        (deep.clone(), b"deep"),
    ];
    let store = Arc::new(InMemoryStore::new());
    for (key, data) in &keys {
        store.put(key, data.to_vec());
    }
    let fs = S3Filesystem::new(store, ttl(60));
    let ctl = fs.lookup(ROOT_INO, "ctl").await.unwrap();
    let mut listed = raw_listing(&fs, ctl.ino, 3).await;
    listed.sort();
    let mut want: Vec<String> = keys[..7]
        .iter()
        .map(|(k, _)| k["ctl/".len()..].to_string())
        .chain([".".to_string(), "..".to_string()])
        .collect();
    want.sort();
    assert_eq!(
        listed, want,
        "control characters shown as they are; bad names hidden"
    );
    for (key, data) in &keys[..7] {
        let name = &key["ctl/".len()..];
        let attr = fs.lookup(ctl.ino, name).await.unwrap();
        assert_eq!(attr.size, data.len() as u64, "{name:?}");
    }
    assert!(fs.lookup(ctl.ino, &too_long).await.is_err());

    // Walk the 1,024-byte key and the 300-level key component by component.
    for key in [&kilo_key, &deep] {
        let mut ino = ROOT_INO;
        let parts: Vec<&str> = key.split('/').collect();
        for (depth, part) in parts.iter().enumerate() {
            let attr = fs.lookup(ino, part).await.unwrap();
            let last = depth == parts.len() - 1;
            assert_eq!(attr.kind == Kind::File, last, "{part:?} at depth {depth}");
            ino = attr.ino;
        }
        let fh = fs.open(ino, OpenMode::default(), me()).await.unwrap();
        let want = if key == &deep {
            &b"deep"[..]
        } else {
            &b"kilo"[..]
        };
        assert_eq!(&fs.read(fh, 0, 100).await.unwrap()[..], want);
        fs.release(fh).await;
    }
}

/// What the filesystem asks the kernel to drop, recorded.
#[derive(Debug, Default)]
struct Dropped(std::sync::Arc<std::sync::Mutex<Vec<(u64, String)>>>);

impl KernelCache for Dropped {
    fn inode_changed(&self, _ino: u64) {}
    fn drop_entry(&self, parent: u64, name: &str) {
        self.0.lock().unwrap().push((parent, name.to_string()));
    }
}

/// Readdirplus hands every entry to the kernel; past the bound the oldest files it holds
/// for nothing are dropped from it (not open ones, not directories), so a walk over
/// millions of keys keeps a bounded table.
#[tokio::test]
async fn entries_past_the_bound_are_dropped_from_the_kernel_oldest_first() {
    let mut keys: Vec<(String, &[u8])> =
        (0..30).map(|i| (format!("d/f{i:02}"), &b"x"[..])).collect();
    keys.push(("d/sub/k".into(), b"y"));
    let keys: Vec<(&str, &[u8])> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let config = FsConfig {
        held_entries: 12,
        ..ttl(60)
    };
    let (_, fs) = setup(&keys, config);
    let dropped = Dropped::default();
    let seen = dropped.0.clone();
    fs.set_kernel_cache(Box::new(dropped));
    let d = fs.lookup(ROOT_INO, "d").await.unwrap();
    // f01 is open, so it stays whatever its age.
    let f01 = fs.lookup(d.ino, "f01").await.unwrap();
    let fh = fs.open(f01.ino, OpenMode::default(), 1).await.unwrap();
    let dir = fs.opendir(d.ino).unwrap();
    let entries = fs.readdir(d.ino, dir, 0, 100).await.unwrap();
    for entry in entries.iter().filter(|e| e.name != "." && e.name != "..") {
        fs.entry_looked_up(d.ino, entry);
    }
    let seen = seen.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert!(!names.is_empty(), "over the bound, something is dropped");
    assert!(!names.contains(&"f01"), "an open file stays: {names:?}");
    assert!(!names.contains(&"sub"), "directories stay: {names:?}");
    assert!(seen.iter().all(|(parent, _)| *parent == d.ino));
    // Oldest first: the dropped names are the first ones handed out, in order.
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names[0], "f00");
    fs.release(fh).await;
}

/// A page a tree walk fetched ahead is newer than a stat that has run out: the listing
/// shows the page's size, and does not hand the kernel the old stat as fresh again.
#[tokio::test]
async fn a_page_fetched_ahead_wins_over_an_expired_stat() {
    let config = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        ..FsConfig::default()
    };
    let (store, fs) = setup(&[("d00/x", b"x"), ("d01/x", b"x"), ("d02/f", b"1")], config);
    let d02 = fs.lookup(ROOT_INO, "d02").await.unwrap();
    let f = fs.lookup(d02.ino, "f").await.unwrap();
    assert_eq!(f.size, 1);
    store.put("d02/f", b"12345".to_vec()); // replaced by another client
    fs.inodes.expire(f.ino); // and the mount's stat has run out
    names_in(&fs, ROOT_INO).await;
    let d00 = fs.lookup(ROOT_INO, "d00").await.unwrap();
    let d01 = fs.lookup(ROOT_INO, "d01").await.unwrap();
    names_in(&fs, d00.ino).await;
    names_in(&fs, d01.ino).await; // a walk: d02 is listed ahead
    let fh = fs.opendir(d02.ino).unwrap();
    let entries = fs.readdir(d02.ino, fh, 0, 10).await.unwrap();
    fs.releasedir(fh);
    let listed = entries.iter().find(|e| e.name == "f").unwrap();
    assert_eq!(
        listed.attr.size, 5,
        "the page's size, not the expired stat's"
    );
}

/// A plain `ls` of the first subdirectory lists nothing ahead: only a walk does.
#[tokio::test]
async fn a_single_visit_of_the_first_subdirectory_lists_nothing_ahead() {
    let config = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        ..FsConfig::default()
    };
    let keys: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("d{i:02}/x"), b"x".to_vec()))
        .collect();
    let refs: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let (store, fs) = setup(&refs, config);
    names_in(&fs, ROOT_INO).await;
    let d00 = fs.lookup(ROOT_INO, "d00").await.unwrap();
    let before = store.list_calls();
    names_in(&fs, d00.ino).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.list_calls() - before, 1, "d00's own LIST only");
}

/// A directory made here becomes real with its first file: a listing of its parent
/// remembered while it was local still shows it (from S3's next page, not the old one).
#[tokio::test]
async fn a_new_directory_stays_listed_once_its_first_file_lands() {
    let config = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        allow_overwrite: true,
        ..FsConfig::default()
    };
    let (_store, fs) = setup(&[("a/other", b"x")], config);
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    let b = fs.mkdir(a.ino, "b").await.unwrap();
    let names = |v: Vec<(String, Kind)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert!(names(names_in(&fs, a.ino).await).contains(&"b".to_string()));
    let (_, fh) = fs.create(b.ino, "f", me(), false).await.unwrap();
    fs.write(fh, 0, b"data", me()).await.unwrap();
    fs.flush(fh, me()).await.unwrap();
    fs.release(fh).await;
    assert!(
        names(names_in(&fs, a.ino).await).contains(&"b".to_string()),
        "b vanished from a's listing"
    );
}

/// `new.txt`, written ("landed") and released with its PUT taking `put_delay`, renamed to
/// `moved.txt` by a rename that starts `rename_after` into the release: the store, the
/// filesystem, and when the release and the rename ended (from the release's start).
async fn rename_during_a_slow_release(
    put_delay: Duration,
    rename_after: Duration,
) -> (
    Arc<crate::s3::faulty::FaultyStore<InMemoryStore>>,
    S3Filesystem<crate::s3::faulty::FaultyStore<InMemoryStore>>,
    Duration,
    Duration,
) {
    use crate::s3::faulty::{Fault, FaultyStore, Op};
    use tokio::time::Instant;
    let store = Arc::new(FaultyStore::new(InMemoryStore::new()));
    let config = FsConfig {
        allow_delete: true,
        allow_overwrite: true,
        ..ttl(60)
    };
    let fs = S3Filesystem::new(store.clone(), config);
    let (_, fh) = fs.create(ROOT_INO, "new.txt", me(), false).await.unwrap();
    fs.write(fh, 0, b"landed", me()).await.unwrap();
    store.inject(Op::Put, 1, Fault::Delay(put_delay));
    let start = Instant::now();
    let (released_at, renamed_at) = tokio::join!(
        async {
            fs.release(fh).await;
            start.elapsed()
        },
        async {
            tokio::time::sleep(rename_after).await;
            let renamed = fs
                .rename(
                    ROOT_INO,
                    "new.txt",
                    ROOT_INO,
                    "moved.txt",
                    RenameMode::Replace,
                )
                .await;
            renamed.unwrap();
            start.elapsed()
        }
    );
    assert_eq!(
        store.inner().get("moved.txt").as_deref(),
        Some(&b"landed"[..])
    );
    (store, fs, released_at, renamed_at)
}

/// An operation waiting for a written file's release goes on the moment the release is done,
/// not at its next look (virtual time: the release's PUT takes 310 ms, the wait looks again
/// every 50 ms, so without the wake-up the rename would end at 350 ms).
#[tokio::test(start_paused = true)]
async fn a_wait_for_a_release_ends_when_the_release_does() {
    let ms = Duration::from_millis;
    let (_, _, released_at, renamed_at) = rename_during_a_slow_release(ms(310), ms(1)).await;
    assert!(released_at >= ms(310), "{released_at:?}");
    assert!(
        renamed_at < released_at + ms(10),
        "the rename waited past the release: released at {released_at:?}, renamed at {renamed_at:?}"
    );
}

/// A rename of a file whose release is still committing (the kernel sends release after
/// close(2) returned, so `mv` right after a write can meet it) waits for the commit and then
/// renames the object as committed, not the file as it was before the wait.
#[tokio::test]
async fn a_rename_meeting_a_release_commit_renames_what_landed() {
    let ms = Duration::from_millis;
    let (store, fs, _, _) = rename_during_a_slow_release(ms(300), ms(50)).await;
    assert_eq!(store.inner().get("new.txt"), None);
    let moved = fs.lookup(ROOT_INO, "moved.txt").await.unwrap();
    assert_eq!(moved.size, 6);
}
