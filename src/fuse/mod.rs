//! The only code that knows fuser: kernel requests become calls on [`S3Filesystem`]. Each is
//! polled once on the dispatch thread and, if it must wait, run on as a tokio task that sends
//! the reply itself, so a dispatch thread never waits on S3 and a slow GET never holds up an
//! unrelated `ls`. No decisions are made here.

mod adapter;
mod attr;
mod dir_reply;
mod fusermount;
mod notify;
pub mod passed_fd;
mod passthrough;
pub mod session;
mod watchdog;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, warn};

pub use adapter::FuseAdapter;
use adapter::{READDIR_BATCH, creator, fail, open_mode, refuse, utf8};
use attr::file_attr;
use passthrough::Opened;

use crate::fs::posix::AttrChange;
use crate::fs::{FsError, RenameMode};
use crate::metrics::{ATTR_FUSE_REQUEST, FUSE_IO_SIZE};
use crate::s3::{ObjectStore, Posix};

impl<S: ObjectStore> Filesystem for FuseAdapter<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // ATOMIC_O_TRUNC: O_TRUNC arrives with open, not as a separate truncate that S3
        // could not honour.
        // READDIRPLUS always, not the kernel's adaptive mode: `du` reads a whole directory
        // before it stats, which the adaptive mode answers with plain readdir and then a
        // lookup per file. The entries the kernel holds that way are bounded by
        // `fs::held` (oldest dropped from the kernel past the bound).
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        if let Err(unsupported) = config.add_capabilities(wanted) {
            debug!(?unsupported, "kernel lacks some FUSE capabilities");
        }
        // Let the kernel keep many readahead and write requests in flight: the replies come
        // from tasks, so concurrency costs no dispatch thread.
        let (max_background, congestion) = self.queue;
        if let Err(kept) = config.set_max_background(max_background) {
            warn!(
                max_background,
                kept, "FUSE background queue size not accepted"
            );
        }
        if let Err(kept) = config.set_congestion_threshold(congestion) {
            warn!(congestion, kept, "FUSE congestion threshold not accepted");
        }
        debug!(max_background, congestion, "FUSE background queue");
        passthrough::negotiate(&self.fs, &self.passthrough, config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.run("lookup", async move {
            match fs.lookup(parent.0, &name).await {
                Ok(attr) => reply.entry(&fs.kernel_ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(fail("lookup", e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.run("getattr", async move {
            match fs.getattr(ino.0).await {
                Ok(attr) => reply.attr(&fs.kernel_ttl(), &file_attr(&attr)),
                Err(e) => reply.error(fail("getattr", e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let time = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        };
        let change = AttrChange {
            posix: Posix {
                mode,
                uid,
                gid,
                mtime: mtime.map(time),
            },
            atime: atime.is_some(),
            other: flags.is_some(),
        };
        let fs = self.fs.clone();
        self.run("setattr", async move {
            match fs.setattr(ino.0, size, change).await {
                Ok(attr) => reply.attr(&fs.kernel_ttl(), &file_attr(&attr)),
                Err(e) => reply.error(fail("setattr", e)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::EINVAL);
        };
        let creator = creator(req, mode, umask);
        let fs = self.fs.clone();
        self.run("mkdir", async move {
            match fs.mkdir_as(parent.0, &name, Some(creator)).await {
                Ok(attr) => reply.entry(&fs.kernel_ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(fail("mkdir", e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.run("unlink", async move {
            match fs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("unlink", e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.run("rmdir", async move {
            match fs.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("rmdir", e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Some(name) = utf8(link_name) else {
            return reply.error(Errno::EINVAL);
        };
        let target = target.as_os_str().as_bytes().to_vec();
        let creator = creator(req, 0o777, 0);
        let fs = self.fs.clone();
        self.run("symlink", async move {
            match fs.symlink(parent.0, &name, &target, Some(creator)).await {
                Ok(attr) => reply.entry(&fs.kernel_ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(fail("symlink", e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.run("readlink", async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(fail("readlink", e)),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (utf8(name), utf8(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        let mode = if flags.contains(fuser::RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(fuser::RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else {
            RenameMode::Replace
        };
        let fs = self.fs.clone();
        self.run("rename", async move {
            match fs
                .rename(parent.0, &name, newparent.0, &newname, mode)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("rename", e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse("link", "hard links"));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = open_mode(flags.0);
        let caller = req.pid();
        let fs = self.fs.clone();
        let table = self.passthrough.clone();
        self.run("open", async move {
            let register = |file: &std::fs::File| reply.open_backing(file);
            match passthrough::open(&fs, &table, ino.0, mode, caller, register).await {
                Ok(Opened::Plain(fh)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Ok(Opened::Passthrough(fh, backing)) => {
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
                }
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.run("read", async move {
            match fs.read(fh.0, offset, size).await {
                Ok(bytes) => {
                    let size = bytes.len() as f64;
                    metrics::histogram!(FUSE_IO_SIZE, ATTR_FUSE_REQUEST => "read").record(size);
                    reply.data(&bytes)
                }
                Err(e) => reply.error(fail("read", e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel's buffer is only borrowed for this call: one copy, into the part buffer
        // the upload needs anyway, happens in the task.
        let data = data.to_vec();
        let caller = req.pid();
        let fs = self.fs.clone();
        self.run("write", async move {
            match fs.write(fh.0, offset, &data, caller).await {
                Ok(written) => {
                    let size = f64::from(written);
                    metrics::histogram!(FUSE_IO_SIZE, ATTR_FUSE_REQUEST => "write").record(size);
                    reply.written(written)
                }
                Err(e) => reply.error(fail("write", e)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let caller = req.pid();
        let fs = self.fs.clone();
        self.run("flush", async move {
            match fs.flush(fh.0, caller).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("flush", e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        passthrough::release(&self.passthrough, fh.0);
        self.run("release", async move {
            fs.release(fh.0).await;
            reply.ok();
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.run("fsync", async move {
            match fs.fsync(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("fsync", e)),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(fail("opendir", e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let fs = self.fs.clone();
        self.run("readdir", async move {
            match fs.readdir(ino.0, fh.0, offset, READDIR_BATCH).await {
                Ok(entries) => dir_reply::fill(reply, entries),
                Err(e) => reply.error(fail("readdir", e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let fs = self.fs.clone();
        self.run("readdirplus", async move {
            match fs.readdir(ino.0, fh.0, offset, READDIR_BATCH).await {
                Ok(entries) => dir_reply::fill_plus(&fs, ino.0, reply, entries),
                Err(e) => reply.error(fail("readdirplus", e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // S3 has no capacity to report; show a large, constant, mostly free filesystem so that
        // tools checking for space (df, installers) proceed, as other S3 filesystems do.
        const BLOCKS: u64 = 1 << 40;
        const FILES: u64 = 1 << 32;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, FILES, FILES, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(fail("setxattr", FsError::NoXattr));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(fail("getxattr", FsError::NoXattr));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(fail("listxattr", FsError::NoXattr));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fail("removexattr", FsError::NoXattr));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::EINVAL);
        };
        let (creator, caller) = (creator(req, mode, umask), req.pid());
        let fs = self.fs.clone();
        self.run("mknod", async move {
            match fs.mknod(parent.0, &name, mode, caller, Some(creator)).await {
                Ok(attr) => reply.entry(&fs.kernel_ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(fail("mknod", e)),
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: IoctlFlags,
        _: u32,
        _: &[u8],
        _: u32,
        reply: ReplyIoctl,
    ) {
        // No ioctls: the errno of a file that has none (`isatty` reads it as "not a tty").
        reply.error(refuse("ioctl", libc::ENOTTY));
    }

    // ENOSYS to these: the kernel stops asking, for this mount, and answers programs itself.
    fn fsyncdir(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        // Success: a directory has nothing of its own to make durable.
        reply.error(refuse("fsyncdir", libc::ENOSYS));
    }

    fn fallocate(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: u64,
        _: i32,
        reply: ReplyEmpty,
    ) {
        // EOPNOTSUPP to the program.
        reply.error(refuse("fallocate", libc::ENOSYS));
    }

    fn lseek(&self, _: &Request, _: INodeNo, _: FileHandle, _: i64, _: i32, reply: ReplyLseek) {
        // SEEK_DATA and SEEK_HOLE see the whole file as data.
        reply.error(refuse("lseek", libc::ENOSYS));
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: u64,
        _: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Copied through reads and writes instead.
        reply.error(refuse("copy_file_range", libc::ENOSYS));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::EINVAL);
        };
        let creator = creator(req, mode, umask);
        let caller = req.pid();
        let exclusive = flags & libc::O_EXCL != 0;
        let fs = self.fs.clone();
        let table = self.passthrough.clone();
        self.run("create", async move {
            match fs
                .create_as(parent.0, &name, caller, exclusive, Some(creator))
                .await
            {
                Ok((attr, fh)) => {
                    if let Err(errno) = passthrough::after_create(&fs, &table, attr.ino, fh).await {
                        return reply.error(errno);
                    }
                    reply.created(
                        &fs.kernel_ttl(),
                        &file_attr(&attr),
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    );
                }
                Err(e) => reply.error(fail("create", e)),
            }
        });
    }
}
