//! Interleavings of the shared structures, checked with shuttle over many random thread
//! schedules (`cargo test --lib --features shuttle interleavings`): the memory budget never
//! hands out more than its limit and gives every byte back; the GET buffer pool never hands
//! one buffer to two bodies and keeps its idle bytes under its limit; the handle maps never
//! give two handles one number; the inode table keeps an inode the kernel holds a lookup on whatever
//! a FORGET does at the same time, and keeps one inode per object version while files are
//! open on it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shuttle::thread;

use crate::fs::handle_map::HandleMap;
use crate::fs::inode::{InodeTable, Observed, ROOT_INO, Stat};
use crate::fs::names::Kind;
use crate::memory::MemoryBudget;

/// Schedules tried per test: a few thousand, a few seconds on two cores.
const SCHEDULES: usize = 2000;

fn stat(etag: &str, size: u64) -> Stat {
    Stat {
        size,
        mtime: SystemTime::UNIX_EPOCH,
        etag: Some(etag.to_string()),
        posix: None,
    }
}

#[test]
fn the_budget_never_passes_its_limit_and_gets_every_byte_back() {
    shuttle::check_random(
        || {
            let budget = MemoryBudget::new(100);
            let threads: Vec<_> = (0..3)
                .map(|i| {
                    let budget = budget.clone();
                    thread::spawn(move || {
                        for round in 0..3 {
                            let want = 20 + 10 * ((i + round) % 3);
                            if let Some(held) = budget.try_reserve(want) {
                                assert!(budget.used() <= 100, "over the limit");
                                drop(held);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(budget.used(), 0);
            assert!(budget.peak() <= 100);
        },
        SCHEDULES,
    );
}

#[test]
fn pooled_buffers_are_never_handed_out_twice_and_idle_stays_bounded() {
    use crate::memory::{BodyBuffer, Pool};
    const UNIT: usize = crate::memory::pool::UNIT;
    let pool: &'static Pool = Box::leak(Box::new(Pool::new(2 * UNIT)));
    shuttle::check_random(
        move || {
            let threads: Vec<_> = (0..3u8)
                .map(|i| {
                    thread::spawn(move || {
                        for round in 0..2u8 {
                            let len = UNIT * (1 + usize::from((i + round) % 2));
                            let mut buf = BodyBuffer::from_pool(pool, len);
                            let mark = [i * 10 + round; 64];
                            buf.extend_from_slice(&mark).unwrap();
                            thread::yield_now();
                            let bytes = buf.freeze();
                            thread::yield_now();
                            assert_eq!(&bytes[..], &mark[..], "another thread wrote into it");
                            assert!(pool.idle_bytes() <= 2 * UNIT);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert!(pool.idle_bytes() <= 2 * UNIT);
            pool.clear();
        },
        SCHEDULES,
    );
}

#[test]
fn handles_are_never_given_one_number_twice() {
    shuttle::check_random(
        || {
            let map = Arc::new(HandleMap::default());
            let threads: Vec<_> = (0..3)
                .map(|i| {
                    let map = map.clone();
                    thread::spawn(move || {
                        let mine: Vec<u64> = (0..3).map(|j| map.insert(i * 10 + j)).collect();
                        for (j, fh) in mine.iter().enumerate() {
                            assert_eq!(map.get(*fh), Some(i * 10 + j as u64));
                        }
                        mine.into_iter().filter_map(|fh| map.remove(fh)).count()
                    })
                })
                .collect();
            let removed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(removed, 9);
            assert!(map.is_empty());
        },
        SCHEDULES,
    );
}

#[test]
fn a_lookup_racing_a_forget_keeps_the_inode_the_kernel_holds() {
    shuttle::check_random(
        || {
            let table = Arc::new(InodeTable::new("", SystemTime::now(), Duration::MAX));
            let root = table.get(ROOT_INO).unwrap();
            // The kernel holds one lookup of `f` and is about to forget it while a new lookup
            // of the same name is answered.
            let ino = table
                .upsert_child(&root, "f", Kind::File, stat("\"1\"", 1), 1)
                .ino;
            let lookup = {
                let table = table.clone();
                thread::spawn(move || table.fresh_child(ROOT_INO, "f", 1).map(|i| i.ino))
            };
            let forget = {
                let table = table.clone();
                thread::spawn(move || table.forget(ino, 1))
            };
            let looked_up = lookup.join().unwrap();
            forget.join().unwrap();
            if let Some(found) = looked_up {
                // The reply carried this inode: the kernel now holds it, so it must exist.
                assert!(table.get(found).is_some(), "a looked-up inode was dropped");
            }
        },
        SCHEDULES,
    );
}

#[test]
fn an_open_inode_keeps_its_version_whatever_races_it() {
    shuttle::check_random(
        || {
            let table = Arc::new(InodeTable::new("", SystemTime::now(), Duration::MAX));
            let root = table.get(ROOT_INO).unwrap();
            let ino = table
                .upsert_child(&root, "f", Kind::File, stat("\"1\"", 1), 1)
                .ino;
            let opener = {
                let table = table.clone();
                thread::spawn(move || {
                    table.opened(ino);
                    table.get(ino).unwrap().stat.etag
                })
            };
            let revalidate = {
                let table = table.clone();
                thread::spawn(move || table.observe(ino, stat("\"2\"", 2)))
            };
            let pinned = opener.join().unwrap();
            let seen = revalidate.join().unwrap();
            let now = table.get(ino).unwrap();
            match seen {
                // The revalidation came first: the open pinned the new version, in place.
                Observed::Current(_) => {
                    assert_eq!(now.stat.etag.as_deref(), Some("\"2\""));
                    assert_eq!(pinned.as_deref(), Some("\"2\""));
                }
                // The open came first: its inode kept the version it pinned, and the name
                // moved on to a new inode with the new one.
                Observed::Moved { old, new } => {
                    assert_eq!(old.ino, ino);
                    assert_eq!(now.stat.etag.as_deref(), Some("\"1\""));
                    assert_eq!(pinned.as_deref(), Some("\"1\""));
                    assert_ne!(new.ino, ino);
                    let named = table.fresh_child(ROOT_INO, "f", 0).unwrap();
                    assert_eq!(named.ino, new.ino);
                    assert_eq!(named.stat.etag.as_deref(), Some("\"2\""));
                }
                Observed::Gone => panic!("the inode vanished"),
            }
            table.closed(ino);
        },
        SCHEDULES,
    );
}
