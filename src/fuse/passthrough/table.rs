//! The passthrough table: which inodes have files open through the kernel's page cache and
//! which have a backing file, and what each new open may be granted.
//!
//! The kernel's rules (fs/fuse/iomode.c): while an inode has a passthrough file open, every
//! open of that inode must be a passthrough open of the same backing file (anything else
//! fails with EINVAL); while it has a file open through the page cache, a passthrough open
//! fails. This table keeps each inode's mode as we granted it and decides each open:
//! - a read of an inode in passthrough shares its backing file when it reads the same object
//!   version; a read of a newer version gets EBUSY and a write ETXTBSY (the kernel allows
//!   nothing else), until the passthrough files are closed;
//! - a plain read of an inode with no file open through the page cache starts passthrough
//!   when the cache holds a whole copy of the version it reads;
//! - everything else opens through the page cache, as without passthrough.
//!
//! Our view lags the kernel's only at release (the kernel forgets a file before telling
//! us), so we never grant a mode the kernel refuses; a refusal is retried briefly by the
//! caller in case a release is on its way. An open first asks without the whole-object
//! copy; only one that could start passthrough is told to look it up ([`LookFirst`], outside
//! the lock: it reads the disk) and ask again.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::info;

use crate::fs::handle_map::HandleMap;

/// How one open was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granted {
    /// Through the page cache and mount-s3.
    Cached,
    /// Straight to the backing file.
    Passthrough,
}

/// The mode of one inode's open files; `B` is the registered backing file (fuser's
/// `BackingId`, which closes it when dropped).
#[derive(Debug)]
struct InodeIo<B> {
    /// Files open through the page cache.
    cached: usize,
    /// The backing file shared by the passthrough opens, the ETag of the object version it
    /// holds, and how many such opens there are.
    backing: Option<(Arc<B>, String, usize)>,
}

impl<B> Default for InodeIo<B> {
    fn default() -> Self {
        Self {
            cached: 0,
            backing: None,
        }
    }
}

/// What an open should be answered with.
#[derive(Debug)]
pub enum Answer<B> {
    /// Open as usual (through the page cache).
    Cached,
    /// Passthrough to this backing file.
    Passthrough(Arc<B>),
    /// Refuse with this errno: the inode is in passthrough for another purpose.
    Busy(i32),
}

/// The whole-object copy, as the caller found it before asking (its file and ETag).
#[derive(Debug)]
pub enum Copy {
    /// Not looked up (an open asks first: opening the copy reads the disk, and most opens
    /// cannot use it).
    NotLooked,
    /// Looked up: the copy, if the cache holds one.
    Looked(Option<(File, String)>),
}

/// The answer to an open that did not look up the copy but could start passthrough after
/// all (the inode's last passthrough file was released meanwhile): look, then ask again.
#[derive(Debug, PartialEq, Eq)]
pub struct LookFirst;

/// What an open asks for, as far as passthrough is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// A plain read-only open of the object version with this ETag.
    Read(&'a str),
    /// An O_DIRECT read of the version with this ETag: shares a passthrough already there,
    /// never starts one.
    DirectRead(&'a str),
    /// A write, or a read of an object without ETag.
    Other,
}

/// Per-inode I/O modes of open files.
#[derive(Debug)]
pub struct PassthroughTable<B> {
    /// Whether the kernel agreed to passthrough at init (never cleared: inodes may keep
    /// backing files after `on` goes off).
    agreed: AtomicBool,
    /// Whether the kernel agreed to passthrough and backing files can be registered.
    on: AtomicBool,
    inodes: Mutex<HashMap<u64, InodeIo<B>>>,
    /// Open file handles: their inode and how they were granted.
    handles: HandleMap<(u64, Granted)>,
}

impl<B> Default for PassthroughTable<B> {
    fn default() -> Self {
        Self {
            agreed: AtomicBool::new(false),
            on: AtomicBool::new(false),
            inodes: Mutex::new(HashMap::new()),
            handles: HandleMap::default(),
        }
    }
}

impl<B> PassthroughTable<B> {
    /// Turns passthrough on (the kernel agreed to it at init).
    pub fn enable(&self) {
        self.agreed.store(true, Ordering::Relaxed);
        self.on.store(true, Ordering::Relaxed);
    }

    /// Whether the kernel agreed to passthrough at init; if not, no open needs this table.
    pub fn agreed(&self) -> bool {
        self.agreed.load(Ordering::Relaxed)
    }

    /// Whether passthrough is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Decides how to answer the open of `ino` that got handle `fh`, and records it unless
    /// refused. `whole` is the whole-object copy as the caller found it beforehand;
    /// `register` turns it into a backing id (an ioctl on the FUSE device). If registering
    /// fails (no privilege, the cache on a stacked filesystem), passthrough is turned off for
    /// the rest of the mount. [`LookFirst`] (nothing recorded) when passthrough could start
    /// but the copy was not looked up.
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        wanted: Wanted<'_>,
        whole: Copy,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Result<Answer<B>, LookFirst> {
        let mut inodes = self.inodes.lock().expect("passthrough lock poisoned");
        let io = inodes.entry(ino).or_default();
        let answer = match self.decide(io, wanted, whole, register) {
            Ok(answer) => answer,
            Err(look) => {
                // Only asked of an inode with no open file: leave no empty entry.
                inodes.remove(&ino);
                return Err(look);
            }
        };
        let granted = match &answer {
            Answer::Cached => {
                io.cached += 1;
                Granted::Cached
            }
            Answer::Passthrough(_) => {
                if let Some((_, _, opens)) = &mut io.backing {
                    *opens += 1;
                }
                Granted::Passthrough
            }
            Answer::Busy(_) => return Ok(answer),
        };
        drop(inodes);
        self.handles.insert_at(fh, (ino, granted));
        Ok(answer)
    }

    fn decide(
        &self,
        io: &mut InodeIo<B>,
        wanted: Wanted<'_>,
        whole: Copy,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Result<Answer<B>, LookFirst> {
        if let Some((backing, etag, _)) = &io.backing {
            return Ok(match wanted {
                Wanted::Read(wanted) | Wanted::DirectRead(wanted) if wanted == etag => {
                    Answer::Passthrough(backing.clone())
                }
                Wanted::Read(_) | Wanted::DirectRead(_) => Answer::Busy(libc::EBUSY),
                Wanted::Other => Answer::Busy(libc::ETXTBSY),
            });
        }
        let Wanted::Read(wanted) = wanted else {
            return Ok(Answer::Cached);
        };
        if io.cached > 0 || !self.is_on() {
            return Ok(Answer::Cached);
        }
        let Copy::Looked(whole) = whole else {
            return Err(LookFirst);
        };
        let Some((file, etag)) = whole else {
            return Ok(Answer::Cached);
        };
        if etag != wanted {
            return Ok(Answer::Cached);
        }
        Ok(match register(&file) {
            Ok(backing) => {
                let backing = Arc::new(backing);
                io.backing = Some((backing.clone(), etag, 0));
                Answer::Passthrough(backing)
            }
            Err(e) => {
                if self.on.swap(false, Ordering::Relaxed) {
                    info!(
                        "FUSE passthrough unavailable ({e}); cached objects are read through mount-s3"
                    );
                }
                Answer::Cached
            }
        })
    }

    /// Forgets handle `fh`; the inode's backing file is released with its last passthrough
    /// open.
    pub fn release(&self, fh: u64) {
        let Some((ino, granted)) = self.handles.remove(fh) else {
            return;
        };
        let mut inodes = self.inodes.lock().expect("passthrough lock poisoned");
        let Some(io) = inodes.get_mut(&ino) else {
            return;
        };
        match granted {
            Granted::Cached => io.cached = io.cached.saturating_sub(1),
            Granted::Passthrough => {
                if let Some((_, _, opens)) = &mut io.backing {
                    *opens -= 1;
                    if *opens == 0 {
                        io.backing = None;
                    }
                }
            }
        }
        if io.cached == 0 && io.backing.is_none() {
            inodes.remove(&ino);
        }
    }

    /// Open handles whose reads the kernel serves without us.
    #[cfg(test)]
    pub fn passthrough_handles(&self) -> usize {
        self.handles
            .values()
            .iter()
            .filter(|(_, g)| *g == Granted::Passthrough)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table that is on, whose backing files are numbers.
    fn table() -> PassthroughTable<u32> {
        let table = PassthroughTable::default();
        table.enable();
        table
    }

    fn whole(etag: &str) -> Copy {
        Copy::Looked(Some((File::open("/dev/null").unwrap(), etag.to_string())))
    }

    /// Looked up, and the cache holds no copy.
    const NONE: Copy = Copy::Looked(None);

    fn register(id: u32) -> impl FnOnce(&File) -> std::io::Result<u32> {
        move |_| Ok(id)
    }

    /// The answer in short: backing id, 0 for a usual open, or minus the errno.
    fn short(answer: Result<Answer<u32>, LookFirst>) -> i64 {
        match answer.expect("an open that looked up the copy is answered") {
            Answer::Passthrough(b) => i64::from(*b),
            Answer::Cached => 0,
            Answer::Busy(errno) => -i64::from(errno),
        }
    }

    #[test]
    fn reads_of_one_version_share_one_backing_file_until_the_last_closes() {
        let t = table();
        assert_eq!(
            short(t.open(1, 10, Wanted::Read("e"), whole("e"), register(7))),
            7
        );
        // The second open must not register another backing file for the inode.
        let b = t.open(
            1,
            11,
            Wanted::DirectRead("e"),
            whole("e"),
            |_| -> std::io::Result<u32> { panic!("a second backing file for one inode") },
        );
        assert_eq!(short(b), 7);
        assert_eq!(t.passthrough_handles(), 2);
        t.release(10);
        assert_eq!(
            short(t.open(1, 12, Wanted::Read("e"), NONE, register(8))),
            7
        );
        t.release(11);
        t.release(12);
        assert_eq!(t.passthrough_handles(), 0);
        let d = t.open(1, 13, Wanted::Read("e"), whole("e"), register(9));
        assert_eq!(short(d), 9, "a fresh backing file after the last release");
    }

    #[test]
    fn other_opens_of_a_passthrough_inode_are_refused_until_it_closes() {
        let t = table();
        assert_eq!(
            short(t.open(1, 10, Wanted::Read("e"), whole("e"), register(7))),
            7
        );
        let write = t.open(1, 11, Wanted::Other, NONE, register(8));
        assert_eq!(short(write), -i64::from(libc::ETXTBSY));
        let newer = t.open(1, 12, Wanted::Read("newer"), whole("newer"), register(8));
        assert_eq!(short(newer), -i64::from(libc::EBUSY));
        let direct = t.open(1, 13, Wanted::DirectRead("newer"), NONE, register(8));
        assert_eq!(short(direct), -i64::from(libc::EBUSY));
        // Another inode is not affected.
        assert_eq!(short(t.open(2, 14, Wanted::Other, NONE, register(8))), 0);
        t.release(11); // refused handles were never recorded: no effect
        assert_eq!(t.passthrough_handles(), 1);
        t.release(10);
        assert_eq!(short(t.open(1, 15, Wanted::Other, NONE, register(8))), 0);
    }

    #[test]
    fn an_inode_open_through_the_page_cache_is_not_switched() {
        let t = table();
        assert_eq!(
            short(t.open(1, 10, Wanted::Read("e"), NONE, register(7))),
            0
        );
        assert_eq!(
            short(t.open(1, 11, Wanted::Read("e"), whole("e"), register(7))),
            0
        );
        t.release(10);
        t.release(11);
        assert_eq!(
            short(t.open(1, 12, Wanted::Read("e"), whole("e"), register(7))),
            7
        );
        // A copy of another version is not served; O_DIRECT never starts passthrough.
        assert_eq!(
            short(t.open(2, 13, Wanted::Read("e"), whole("old"), register(8))),
            0
        );
        t.release(13);
        assert_eq!(
            short(t.open(2, 14, Wanted::DirectRead("e"), whole("e"), register(8))),
            0
        );
    }

    /// Whether an open of `ino` that did not look up the copy is told to look first (if
    /// not, it is answered and recorded as handle `fh`).
    fn told_to_look(t: &PassthroughTable<u32>, ino: u64, fh: u64, wanted: Wanted<'_>) -> bool {
        t.open(ino, fh, wanted, Copy::NotLooked, register(9))
            .is_err()
    }

    #[test]
    fn the_copy_is_looked_up_only_when_passthrough_could_start() {
        let t = table();
        assert!(told_to_look(&t, 1, 1, Wanted::Read("e")));
        assert!(
            !told_to_look(&t, 1, 2, Wanted::DirectRead("e")),
            "O_DIRECT never starts it"
        );
        t.release(2);
        assert!(!told_to_look(&t, 1, 3, Wanted::Other));
        t.release(3);
        assert_eq!(
            short(t.open(1, 10, Wanted::Read("e"), NONE, register(7))),
            0
        );
        assert!(
            !told_to_look(&t, 1, 4, Wanted::Read("e")),
            "open through the page cache"
        );
        t.release(4);
        t.release(10);
        assert!(told_to_look(&t, 1, 5, Wanted::Read("e")));
        assert_eq!(
            short(t.open(1, 11, Wanted::Read("e"), whole("e"), register(7))),
            7
        );
        assert_eq!(
            short(t.open(1, 6, Wanted::Read("e"), Copy::NotLooked, register(9))),
            7,
            "shares the backing file"
        );
        let off: PassthroughTable<u32> = PassthroughTable::default();
        assert!(!told_to_look(&off, 1, 7, Wanted::Read("e")));
    }

    /// The race that once left a reader on the slow path: an open sees the backing file (so
    /// it does not look up the copy), then the last passthrough file is released before the
    /// open is decided. It is told to look first, and then starts passthrough again.
    #[test]
    fn an_open_racing_the_last_release_looks_for_the_copy_and_starts_passthrough() {
        let t = table();
        assert_eq!(
            short(t.open(1, 10, Wanted::Read("e"), whole("e"), register(7))),
            7
        );
        t.release(10);
        let unlooked = t.open(1, 11, Wanted::Read("e"), Copy::NotLooked, register(8));
        assert_eq!(unlooked.err(), Some(LookFirst));
        assert_eq!(t.passthrough_handles(), 0, "nothing was recorded");
        assert_eq!(
            short(t.open(1, 11, Wanted::Read("e"), whole("e"), register(8))),
            8
        );
        assert_eq!(t.passthrough_handles(), 1);
        // Opens that cannot start passthrough need no look-up.
        assert_eq!(
            short(t.open(2, 12, Wanted::Other, Copy::NotLooked, register(9))),
            0
        );
        assert_eq!(
            short(t.open(1, 13, Wanted::Read("e"), Copy::NotLooked, register(9))),
            8
        );
    }

    #[test]
    fn a_refused_registration_turns_passthrough_off() {
        let t = table();
        let answer = t.open(1, 10, Wanted::Read("e"), whole("e"), |_| {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        });
        assert_eq!(short(answer), 0);
        assert!(!t.is_on());
        t.release(10);
        assert_eq!(
            short(t.open(1, 11, Wanted::Read("e"), whole("e"), register(7))),
            0
        );
        let off: PassthroughTable<u32> = PassthroughTable::default();
        assert_eq!(
            short(off.open(1, 12, Wanted::Read("e"), whole("e"), register(7))),
            0
        );
    }
}
