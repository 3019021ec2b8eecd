//! FUSE passthrough: the kernel reads an object the data cache holds whole straight from the
//! whole-object copy, without a round trip through mount-s3 per read.
//!
//! Here are the choices the FUSE layer makes about it, so that `fuse/mod.rs` only translates:
//! asking the kernel for passthrough at init ([`negotiate`]), and answering each open and
//! create ([`open`], [`after_create`]) by the rules of the [`table`]. The filesystem knows
//! nothing of this: it only offers the whole-object copy of a reading handle
//! (`S3Filesystem::whole_file`) and drops a handle the kernel never got
//! (`S3Filesystem::abandon`).

mod table;

use std::fs::File;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackingId, Errno, InitFlags, KernelConfig};
use tracing::{debug, error, info};

use crate::fs::{OpenMode, S3Filesystem, blocking};
use crate::s3::ObjectStore;
pub use table::{Answer, Copy, PassthroughTable, Wanted};

/// How often, and how far apart, an open refused because its inode is in passthrough is
/// decided again: the release of the last passthrough file may be on its way (the kernel
/// sends it after close returns).
const BUSY_RETRIES: u32 = 20;
const BUSY_RETRY_DELAY: Duration = Duration::from_millis(10);

/// How an open was granted.
#[derive(Debug)]
pub enum Opened {
    /// Through the page cache and mount-s3, with this handle.
    Plain(u64),
    /// With this handle, the kernel reading this backing file directly.
    Passthrough(u64, Arc<BackingId>),
}

/// The errno for an open refused because the inode has passthrough files open (ETXTBSY for a
/// write, EBUSY for a read of a newer version), logged as the failure a program will see.
fn busy(op: &'static str, errno: i32) -> Errno {
    error!(
        op,
        errno, "the file is open with the kernel reading its cached copy directly; close it first"
    );
    Errno::from_i32(errno)
}

/// Asks the kernel for passthrough when the cache is on, it is wanted, and we may register
/// backing files (that needs CAP_SYS_ADMIN: root). Stack depth 1: backing files on a plain
/// filesystem, and an overlay may still be mounted over us.
pub fn negotiate<S: ObjectStore>(
    fs: &S3Filesystem<S>,
    table: &PassthroughTable<BackingId>,
    config: &mut KernelConfig,
) {
    // SAFETY: geteuid cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    if !(fs.config().passthrough && fs.cache().is_some() && root) {
        return;
    }
    match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
        Ok(()) if config.set_max_stack_depth(1).is_ok() => {
            table.enable();
            fs.enable_whole_copies();
            info!("FUSE passthrough on: the kernel reads objects the cache holds whole");
        }
        _ => debug!("kernel lacks FUSE passthrough; cached objects are read through mount-s3"),
    }
}

/// `attempt`'s outcome, tried again every [`BUSY_RETRY_DELAY`] (at most [`BUSY_RETRIES`]
/// times) while it is `busy`.
async fn until_not_busy<T, F, Fut>(mut attempt: F, busy: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut tries = 0;
    loop {
        let outcome = attempt().await;
        if !busy(&outcome) || tries == BUSY_RETRIES {
            return outcome;
        }
        tries += 1;
        tokio::time::sleep(BUSY_RETRY_DELAY).await;
    }
}

/// Opens `ino` on the filesystem and decides, by the table, whether the kernel reads it
/// directly. An open refused after the filesystem opened it (a race with a passthrough open
/// of the same inode) is abandoned there: nothing uploaded, nothing committed. `register`
/// turns a whole-object copy into a backing id.
pub async fn open<S, R>(
    fs: &Arc<S3Filesystem<S>>,
    table: &PassthroughTable<BackingId>,
    ino: u64,
    mode: OpenMode,
    caller: u32,
    register: R,
) -> Result<Opened, Errno>
where
    S: ObjectStore,
    R: Fn(&File) -> std::io::Result<BackingId>,
{
    let agreed = table.agreed();
    // A write on an inode that passthrough files hold open is moved to an inode of its own
    // by the filesystem (it answers ESTALE), like any write beside open readers.
    let fh = fs
        .open(ino, mode, caller)
        .await
        .map_err(|e| super::fail("open", e))?;
    if !agreed {
        return Ok(Opened::Plain(fh));
    }
    let etag = (!mode.write).then(|| fs.read_etag(fh)).flatten();
    let wanted = match etag.as_deref() {
        Some(etag) if mode.direct => Wanted::DirectRead(etag),
        Some(etag) => Wanted::Read(etag),
        None => Wanted::Other,
    };
    let answer = decide(fs, table, ino, fh, wanted, &register).await;
    if !table.is_on() {
        fs.disable_whole_copies(); // registering a backing file failed
    }
    match answer {
        Answer::Cached => Ok(Opened::Plain(fh)),
        Answer::Passthrough(backing) => Ok(Opened::Passthrough(fh, backing)),
        Answer::Busy(errno) => {
            fs.abandon(fh).await;
            Err(busy("open", errno))
        }
    }
}

/// After a create: the new handle writes, which an inode in passthrough refuses (an old
/// passthrough file of the same name may still be open); the handle is then abandoned.
pub async fn after_create<S: ObjectStore>(
    fs: &Arc<S3Filesystem<S>>,
    table: &PassthroughTable<BackingId>,
    ino: u64,
    fh: u64,
) -> Result<(), Errno> {
    if !table.agreed() {
        return Ok(());
    }
    let never = |_: &File| Err(std::io::Error::other("a write never passes through"));
    if let Answer::Busy(errno) = decide(fs, table, ino, fh, Wanted::Other, &never).await {
        fs.abandon(fh).await;
        return Err(busy("create", errno));
    }
    Ok(())
}

/// [`PassthroughTable::open`], decided again for a while if the inode is busy. The table is
/// asked first without the whole-object copy; only when it answers that passthrough could
/// start ([`table::LookFirst`]) is the copy opened, outside the table's lock (it reads the
/// disk), and the table asked again (that answer never asks again).
async fn decide<S, R>(
    fs: &Arc<S3Filesystem<S>>,
    table: &PassthroughTable<BackingId>,
    ino: u64,
    fh: u64,
    wanted: Wanted<'_>,
    register: &R,
) -> Answer<BackingId>
where
    S: ObjectStore,
    R: Fn(&File) -> std::io::Result<BackingId>,
{
    let look_up = || async move {
        let fs = fs.clone();
        let whole = blocking::unblock(move || fs.whole_file(fh)).await;
        Copy::Looked(whole.ok().flatten())
    };
    until_not_busy(
        || async move {
            // The copy is looked up only when the table says it could be used.
            let mut whole = Copy::NotLooked;
            loop {
                match table.open(ino, fh, wanted, whole, register) {
                    Ok(answer) => return answer,
                    Err(table::LookFirst) => whole = look_up().await,
                }
            }
        },
        |answer| matches!(answer, Answer::Busy(_)),
    )
    .await
}

/// Forgets handle `fh` at its release.
pub fn release(table: &PassthroughTable<BackingId>, fh: u64) {
    if table.agreed() {
        table.release(fh);
    }
}
