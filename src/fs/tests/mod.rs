//! Filesystem behaviour on the in-memory store, sharing one set-up: names, listings, stats
//! and reads (`namespace`); writes and namespace changes (`write`).

mod commit_points;
mod dir_rename;
mod model;
mod namespace;
mod posix;
mod short_bodies;
mod staged_points;
mod staged_rename;
mod versions;
mod write;

use std::sync::Arc;

use super::posix::AttrChange;
use super::*;
use crate::s3::in_memory::InMemoryStore;

/// The calling process, as FUSE would report it.
fn me() -> u32 {
    std::process::id()
}

/// A bucket holding `keys`, and a filesystem over it with `config`.
fn setup(
    keys: &[(&str, &[u8])],
    config: FsConfig,
) -> (Arc<InMemoryStore>, S3Filesystem<InMemoryStore>) {
    let store = Arc::new(InMemoryStore::new());
    for (key, data) in keys {
        store.put(key, data.to_vec());
    }
    let fs = S3Filesystem::new(store.clone(), config);
    (store, fs)
}

/// Every entry of directory `ino` (`.` and `..` included), sorted, read 7 at a time.
async fn names_in<S: crate::s3::ObjectStore>(
    fs: &S3Filesystem<S>,
    ino: u64,
) -> Vec<(String, Kind)> {
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
