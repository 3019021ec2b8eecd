//! What listings lack with `--posix-metadata`: ListObjectsV2 carries no user metadata, so
//! each listed file is HEADed for its attributes (and each listed directory for its marker's),
//! 16 at a time, as s3fs does. An entry the table already holds at the listed ETag, with its
//! attributes, is not asked again.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::fs::listing::ListedEntry;
use crate::fs::{FsError, Inode, Kind, S3Filesystem, names};
use crate::s3::{ObjectStore, Posix, S3Error};

/// HEADs in flight for one listing batch.
const HEADS_IN_FLIGHT: usize = 16;

impl<S: ObjectStore> S3Filesystem<S> {
    /// The attributes of each of `listed` (entries of `dir`), in order; `None` everywhere
    /// without `--posix-metadata`. A file found at another version than listed takes the
    /// version its HEAD saw.
    pub(crate) async fn posix_of_listed(
        &self,
        dir: &Inode,
        listed: &mut [ListedEntry],
    ) -> Result<Vec<Option<Posix>>, FsError> {
        let mut found = vec![None; listed.len()];
        if !self.posix_on() {
            return Ok(found);
        }
        let limit = Arc::new(Semaphore::new(HEADS_IN_FLIGHT));
        let mut heads = JoinSet::new();
        for (i, entry) in listed.iter().enumerate() {
            let known = self
                .inodes
                .known_child(dir.ino, &entry.name)
                .filter(|k| k.kind == entry.kind && k.stat.posix.is_some());
            let key = match (&entry.object, entry.kind) {
                (Some(info), _) => {
                    if let Some(known) = known.filter(|k| k.stat.etag.as_ref() == Some(&info.etag))
                    {
                        found[i] = known.stat.posix;
                        continue;
                    }
                    info.key.clone()
                }
                (None, Kind::Dir) => {
                    if let Some(known) = known {
                        found[i] = known.stat.posix;
                        continue;
                    }
                    names::child_prefix(&dir.key, &entry.name)
                }
                (None, Kind::File) => continue, // a file being written here
            };
            let store = self.store.clone();
            let limit = limit.clone();
            heads.spawn(async move {
                let _turn = limit.acquire_owned().await;
                let head = store.head(&key).await;
                (i, key, head)
            });
        }
        while let Some(done) = heads.join_next().await {
            let (i, key, head) = done.map_err(FsError::task)?;
            match head {
                Ok(info) => {
                    found[i] = info.posix;
                    if let Some(object) = &mut listed[i].object {
                        *object = info;
                    }
                }
                Err(S3Error::NotFound) => {} // gone since the listing, or no marker
                Err(e) => return Err(FsError::s3(&key, e)),
            }
        }
        Ok(found)
    }
}
