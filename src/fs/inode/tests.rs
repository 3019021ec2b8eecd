//! The inode table's unit tests: numbering, forgetting, TTLs.

use super::*;

fn file_stat(size: u64) -> Stat {
    Stat {
        size,
        mtime: SystemTime::UNIX_EPOCH,
        etag: Some("\"e\"".into()),
        posix: None,
    }
}

#[test]
fn numbers_are_stable_until_kind_changes() {
    let table = InodeTable::new("p/", SystemTime::now(), Duration::from_secs(60));
    let root = table.get(ROOT_INO).unwrap();
    let a = table.upsert_child(&root, "a", Kind::File, file_stat(1), 1);
    assert_eq!(a.key, "p/a");
    let again = table.upsert_child(&root, "a", Kind::File, file_stat(2), 1);
    assert_eq!(a.ino, again.ino);
    assert_eq!(again.stat.size, 2);
    let dir = table.upsert_child(&root, "a", Kind::Dir, file_stat(0), 1);
    assert_ne!(dir.ino, a.ino);
    assert_eq!(dir.key, "p/a/");
    assert_eq!(table.fresh_child(ROOT_INO, "a", 0).unwrap().ino, dir.ino);
}

#[test]
fn forget_drops_at_zero() {
    let table = InodeTable::new("", SystemTime::now(), Duration::from_secs(60));
    let root = table.get(ROOT_INO).unwrap();
    let a = table.upsert_child(&root, "a", Kind::File, file_stat(1), 2);
    table.forget(a.ino, 1);
    assert!(table.get(a.ino).is_some());
    table.forget(a.ino, 1);
    assert!(table.get(a.ino).is_none());
    assert!(table.fresh_child(ROOT_INO, "a", 0).is_none());
    table.forget(ROOT_INO, 100);
    assert!(table.get(ROOT_INO).is_some());
}

#[test]
fn zero_ttl_is_never_fresh() {
    let table = InodeTable::new("", SystemTime::now(), Duration::ZERO);
    let root = table.get(ROOT_INO).unwrap();
    table.upsert_child(&root, "a", Kind::File, file_stat(1), 1);
    assert!(table.fresh_child(ROOT_INO, "a", 0).is_none());
}

#[test]
fn indefinite_ttl_never_expires() {
    let table = InodeTable::new("", SystemTime::now(), Duration::MAX);
    let root = table.get(ROOT_INO).unwrap();
    let a = table.upsert_child(&root, "a", Kind::File, file_stat(1), 1);
    assert!(a.expires.is_none() && a.is_fresh());
}

#[test]
fn each_stale_open_allows_its_own_thread_one_retry_on_the_name_holder() {
    let table = InodeTable::new("", SystemTime::now(), Duration::ZERO);
    let root = table.get(ROOT_INO).unwrap();
    let old = table.upsert_child(&root, "a", Kind::File, file_stat(1), 1);
    let new = table.move_name(old.ino).unwrap();
    // Two threads' opens of the old inode were sent back; the name's holder expects both.
    table.expect_retry(old.ino, 7);
    table.expect_retry(old.ino, 8);
    assert!(
        !table.take_retry(old.ino, 7),
        "the old inode is not retried on"
    );
    assert!(
        !table.take_retry(new.ino, 9),
        "another thread's open revalidates"
    );
    assert!(table.take_retry(new.ino, 8));
    assert!(!table.take_retry(new.ino, 8), "once");
    assert!(table.take_retry(new.ino, 7));
}

#[test]
fn a_retry_not_taken_in_time_is_dropped() {
    let mut retries = Retries::default();
    retries.expect(7, Duration::ZERO);
    assert!(!retries.take(7));
    retries.expect(7, Duration::ZERO);
    retries.expect(8, Duration::from_secs(60));
    assert!(!retries.take(7), "the retry that never came earns nothing");
    assert!(retries.take(8));
    assert!(retries.is_empty());
}
