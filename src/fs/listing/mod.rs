//! Directory listings: open, read in offset order, close. Listed entries seed the stat
//! caches (the inode table for names the kernel holds, the bounded listed cache for the
//! rest), so `ls -l` costs no HEAD per file. The listing itself, page by page from
//! ListObjectsV2, is [`stream`].

pub mod pages;
mod stream;
pub mod walk;

use std::sync::Arc;

pub use pages::PageCache;
pub use stream::{DirStream, ListedEntry, PAGE_SIZE};

use super::{DirEntry, FsError, Inode, Kind, S3Filesystem, file_stat};
use crate::s3::{ObjectStore, Posix};

impl<S: ObjectStore> S3Filesystem<S> {
    /// Opens a directory for listing and returns its handle number.
    pub fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let inode = self.dir_inode(ino)?;
        let extras = self
            .inodes
            .local_children(inode.ino)
            .into_iter()
            .map(|child| ListedEntry {
                name: child.name,
                kind: child.kind,
                object: None,
                remembered: false,
            })
            .collect();
        let stream = DirStream::with_extras(
            &inode.key,
            extras,
            self.config.list_page_size,
            self.config.ordered_listings,
        )
        .with_pages(self.pages.clone());
        Ok(self.dirs.insert(Arc::new(tokio::sync::Mutex::new(stream))))
    }

    /// Entries of directory `ino` from `offset` on (0 = start; `.` and `..` come first), at
    /// most `count`. Every entry returned is registered in the inode table, with no kernel
    /// lookup counted: call [`S3Filesystem::add_lookup`] for each one a readdirplus reply
    /// actually carried.
    pub async fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        count: usize,
    ) -> Result<Vec<DirEntry>, FsError> {
        let dir = self.dir_inode(ino)?;
        let stream = self.dirs.get(fh).ok_or(FsError::BadHandle)?;
        let mut out = Vec::with_capacity(count);
        let mut offset = offset;
        while offset < 2 && out.len() < count {
            let (name, target) = if offset == 0 {
                (".", dir.clone())
            } else {
                (
                    "..",
                    self.inodes.get(dir.parent).unwrap_or_else(|| dir.clone()),
                )
            };
            offset += 1;
            out.push(DirEntry {
                name: name.to_string(),
                attr: self.attr_of(&target),
                stat: target.stat.clone(),
                next_offset: offset,
            });
        }
        let wanted = count - out.len();
        if wanted == 0 {
            return Ok(out);
        }
        if offset == 2 {
            self.list_ahead(&dir);
        }
        let mut listed = {
            let mut stream = stream.lock().await;
            let listed = stream
                .entries_from(self.store.as_ref(), (offset - 2) as usize, wanted)
                .await
                .map_err(|e| FsError::s3(&dir.key, e))?;
            if let Some(subdirs) = stream.take_subdirs_when_done() {
                self.walks.listed(dir.ino, subdirs);
            }
            listed
        };
        let posix = self.posix_of_listed(&dir, &mut listed).await?;
        for (entry, posix) in listed.into_iter().zip(posix) {
            offset += 1;
            let inode = self.register(&dir, entry, posix);
            out.push(DirEntry {
                name: inode.name.clone(),
                attr: self.attr_of(&inode),
                stat: inode.stat.clone(),
                next_offset: offset,
            });
        }
        Ok(out)
    }

    /// Records a listed entry (its stat comes free with the listing; see
    /// [`S3Filesystem::record`]), with the POSIX attributes found for it. A local entry
    /// keeps the inode it has.
    fn register(&self, dir: &Inode, entry: ListedEntry, posix: Option<Posix>) -> Inode {
        if entry.remembered {
            // What the mount learned since the page was fetched is newer: keep it, while
            // it is fresh (an expired stat is older than the page).
            if let Some(known) = self
                .inodes
                .fresh_child(dir.ino, &entry.name, 0)
                .filter(|i| i.kind == entry.kind)
            {
                return known;
            }
        }
        if entry.object.is_none() {
            if let Some(local) = self
                .inodes
                .fresh_child(dir.ino, &entry.name, 0)
                .filter(|i| i.local.is_some() && i.kind == entry.kind)
            {
                return local;
            }
        }
        let mut stat = match &entry.object {
            Some(info) => file_stat(info),
            None => self.dir_stat(),
        };
        stat.posix = stat.posix.or(posix);
        self.negative.invalidate(&(dir.ino, entry.name.clone()));
        self.record(dir, &entry.name, entry.kind, stat, 0)
    }

    /// A readdirplus reply carried `entry` of directory `dir`: the kernel now holds it (one
    /// lookup), so it goes into the inode table under the number the listing gave it.
    pub fn entry_looked_up(&self, dir: u64, entry: &DirEntry) {
        let Ok(dir) = self.dir_inode(dir) else {
            return;
        };
        self.record(&dir, &entry.name, entry.attr.kind, entry.stat.clone(), 1);
        // Past the bound, the oldest files the kernel holds for nothing are dropped from it.
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        for (parent, name) in self.held.handed_out(
            dir.ino,
            &entry.name,
            self.inodes.len(),
            self.config.held_entries,
        ) {
            if self
                .inodes
                .known_child(parent, &name)
                .is_some_and(|i| i.kind == Kind::File && i.local.is_none() && !i.is_open())
            {
                kernel.drop_entry(parent, &name);
            }
        }
    }

    /// `dir` starts being listed: if a walk goes through its parent's subdirectories one
    /// after the other, the next few are listed ahead ([`walk`]).
    fn list_ahead(&self, dir: &Inode) {
        let Some(pages) = &self.pages else {
            return;
        };
        if dir.ino == super::ROOT_INO {
            return;
        }
        let Some(parent) = self.inodes.get(dir.parent) else {
            return;
        };
        for name in self.walks.entering(parent.ino, &dir.name) {
            let prefix = super::names::child_prefix(&parent.key, &name);
            pages.prefetch(&self.store, prefix, self.config.list_page_size);
        }
    }

    /// This mount changed the directory whose prefix is `dir_key`: its remembered listing
    /// pages are dropped.
    pub(super) fn listing_changed(&self, dir_key: &str) {
        if let Some(pages) = &self.pages {
            pages.invalidate(dir_key);
        }
    }

    /// Clears the local mark of `ino` and its ancestors (a committed file made them real),
    /// and drops the remembered listings that did not show them.
    pub(crate) fn make_real(&self, ino: u64) {
        for dir_key in self.inodes.make_real(ino) {
            self.listing_changed(&dir_key);
        }
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }
}
