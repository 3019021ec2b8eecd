//! Directory rename (`--max-rename-keys N`): S3 has no directories, so renaming one is a
//! server-side copy of every key below it, then the delete of every source key.
//!
//! The order keeps every key somewhere at every moment. All keys are listed first (more than
//! N: EXDEV before anything is copied, so `mv` falls back to copying file by file). Each
//! copy is conditional on the version listed (`x-amz-copy-source-if-match`). If any copy
//! fails, the copies already made are deleted (each only while it is still the copy; a
//! failed copy whose answer was lost is found by a HEAD, holding the source's ETag) and the
//! rename fails with nothing moved: the source is whole. Only when every copy succeeded are
//! the sources deleted, each only while it is still the version copied; a source changed
//! meanwhile is kept (its newer version stays at the old name, the copied version is at the
//! new one) and the rename reports EIO after the rest moved. No failure loses a key; the
//! worst case leaves both names holding some of them.
//!
//! A directory's marker object (`name/`, empty) is not copied but written anew at its new
//! key with the attributes read from it: servers such as SeaweedFS keep markers as
//! directories and refuse to copy them.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::mutate::{RenameMode, delete_if_unchanged};
use super::{FsError, Inode, Kind, S3Filesystem, names};
use crate::s3::{ObjectInfo, ObjectStore, S3Error};

/// Copies (and deletes) in flight.
const IN_FLIGHT: usize = 8;

impl<S: ObjectStore> S3Filesystem<S> {
    /// Renames directory `source` (`name` in `parent`) to `new_name` in `new_parent`.
    pub(super) async fn rename_dir(
        &self,
        parent: &Inode,
        source: &Inode,
        new_parent: &Inode,
        new_name: &str,
        mode: RenameMode,
    ) -> Result<(), FsError> {
        let limit = self.config.max_rename_keys;
        if limit == 0 {
            return Err(FsError::CrossDevice);
        }
        if !self.config.allow_delete {
            return Err(FsError::NotPermitted(
                "renaming (it deletes the source; mount with --allow-delete)",
            ));
        }
        let new_prefix = names::child_prefix(&new_parent.key, new_name);
        if new_prefix == source.key {
            return Ok(());
        }
        if new_prefix.starts_with(&source.key) {
            return Err(FsError::InvalidArgument(
                "a directory cannot move inside itself",
            ));
        }
        let target = self.child(new_parent, new_name, true, 0).await?;
        if let Some(target) = &target {
            self.check_replaceable(target, mode).await?;
        }
        if self.inodes.subtree_busy(&source.key) {
            return Err(FsError::Busy);
        }
        let keys = self.keys_below(&source.key, limit).await?;
        info!(
            from = source.key,
            to = new_prefix,
            keys = keys.len(),
            "renaming a directory"
        );
        let moves: Vec<(ObjectInfo, String)> = keys
            .into_iter()
            .map(|info| {
                let to = format!("{new_prefix}{}", &info.key[source.key.len()..]);
                (info, to)
            })
            .collect();
        let copies = self.copy_all(&moves).await?;
        let kept = self.delete_sources(&source.key, &moves).await;
        // An empty target directory was replaced: its marker, if it had one, is now the
        // source's (copied over it) or stays as the marker of the directory it still is.
        if let Some(target) = target {
            self.inodes.remove(target.ino);
        }
        self.inodes
            .rename_dir(source.ino, new_parent.ino, new_name, &new_prefix, &copies);
        self.after_dir_move(parent, &source.name, new_parent, new_name, &moves);
        match kept {
            0 => Ok(()),
            _ => Err(FsError::ObjectChanged {
                key: source.key.clone(),
            }),
        }
    }

    /// An existing target of a directory rename: an empty directory is replaced (POSIX);
    /// a file or a directory with entries is not.
    async fn check_replaceable(&self, target: &Inode, mode: RenameMode) -> Result<(), FsError> {
        if target.kind != Kind::Dir {
            return Err(FsError::NotADirectory);
        }
        if mode == RenameMode::NoReplace {
            return Err(FsError::Exists);
        }
        self.check_empty(target).await.map(drop)
    }

    /// Every key below `prefix`, in key order; EXDEV when there are more than `limit`.
    async fn keys_below(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectInfo>, FsError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .list(prefix, false, token, self.config.list_page_size)
                .await
                .map_err(|e| FsError::s3(prefix, e))?;
            keys.extend(page.objects);
            if keys.len() > limit {
                warn!(
                    prefix,
                    limit, "directory holds more keys than --max-rename-keys: EXDEV"
                );
                return Err(FsError::CrossDevice);
            }
            token = page.next_token;
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Copies every source to its new key; returns each copy's ETag by key. On any failure,
    /// deletes the copies made and answers the first error.
    async fn copy_all(
        &self,
        moves: &[(ObjectInfo, String)],
    ) -> Result<HashMap<String, String>, FsError> {
        let turns = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut copies = JoinSet::new();
        for (i, (from, to)) in moves.iter().enumerate() {
            let (store, turns) = (self.store.clone(), turns.clone());
            let (from, to) = (from.clone(), to.clone());
            copies.spawn(async move {
                let _turn = turns.acquire_owned().await;
                let copied = if is_marker(&from) {
                    move_marker(store.as_ref(), &from, &to).await
                } else {
                    store
                        .copy(&from.key, &to, from.size, &from.etag, None)
                        .await
                        .map(|copied| copied.etag)
                };
                (i, copied.map_err(|e| FsError::s3(&from.key, e)))
            });
        }
        let mut made = Vec::new();
        let mut failed = Vec::new();
        let mut first_error = None;
        while let Some(done) = copies.join_next().await {
            match done {
                Ok((i, Ok(etag))) => made.push((moves[i].1.clone(), etag)),
                Ok((i, Err(e))) => {
                    failed.push(i);
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(FsError::task(e));
                }
            }
        }
        let Some(error) = first_error else {
            return Ok(made.into_iter().collect());
        };
        warn!("a copy of the directory rename failed ({error}); removing the copies made");
        for i in failed {
            made.extend(self.landed_anyway(&moves[i]).await);
        }
        for (key, etag) in made {
            if let Err(e) = self.store.delete(&key, Some(&etag)).await {
                warn!(
                    key,
                    "cannot remove a copy of a failed directory rename: {e}"
                );
            }
        }
        Err(error)
    }

    /// A copy that failed may still have landed (its answer was lost): the target holds
    /// it if it has the source's ETag (a copy of one part keeps it) or, for a marker, is
    /// empty. The target was empty when the rename began. Returns its key and ETag.
    async fn landed_anyway(&self, (from, to): &(ObjectInfo, String)) -> Option<(String, String)> {
        let found = self.store.head(to).await.ok()?;
        let ours = match is_marker(from) {
            true => found.size == 0,
            false => found.etag == from.etag,
        };
        ours.then(|| (to.clone(), found.etag))
    }

    /// Deletes every source still at the version copied; returns how many were kept
    /// because they changed (or could not be deleted). Markers go last, deepest first: a
    /// server that keeps markers as directories does not remove one that still has entries;
    /// every directory below `source` gets a marker delete, listed or not, since such a
    /// server keeps an emptied directory too (elsewhere deleting no key is a no-op).
    async fn delete_sources(&self, source: &str, moves: &[(ObjectInfo, String)]) -> usize {
        let files = moves
            .iter()
            .map(|(from, _)| from)
            .filter(|from| !is_marker(from))
            .collect();
        let mut kept = self.delete_each(files).await;
        for marker in every_marker(source, moves) {
            if !self.delete_marker(&marker).await {
                kept += 1;
            }
        }
        kept
    }

    /// Deletes the files `sources` (8 in flight), each only at the version listed; returns
    /// how many were kept.
    async fn delete_each(&self, sources: Vec<&ObjectInfo>) -> usize {
        let turns = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut deletes = JoinSet::new();
        for from in sources {
            let (store, turns, from) = (self.store.clone(), turns.clone(), from.clone());
            deletes.spawn(async move {
                let _turn = turns.acquire_owned().await;
                let deleted = delete_if_unchanged(store.as_ref(), &from.key, &from.etag).await;
                if let Err(e) = &deleted {
                    warn!(key = from.key, "source of a directory rename kept: {e}");
                }
                deleted.is_ok()
            });
        }
        let mut kept = 0;
        while let Some(done) = deletes.join_next().await {
            if !matches!(done, Ok(true)) {
                kept += 1;
            }
        }
        kept
    }

    /// Deletes the directory marker `key` (empty, so no version of it holds data to lose;
    /// one that is not there is deleted already); false if it was kept.
    async fn delete_marker(&self, key: &str) -> bool {
        match self.store.delete(key, None).await {
            Ok(()) | Err(S3Error::NotFound) => true,
            Err(e) => {
                let e = FsError::s3(key, e);
                warn!(key, "source of a directory rename kept: {e}");
                false
            }
        }
    }

    /// What the mount remembers of both places is forgotten: names, listings of every
    /// directory below (old and new), stats found by listings.
    fn after_dir_move(
        &self,
        parent: &Inode,
        name: &str,
        new_parent: &Inode,
        new_name: &str,
        moves: &[(ObjectInfo, String)],
    ) {
        self.name_removed(parent, name);
        self.forget_name(new_parent.ino, new_name);
        self.make_real(new_parent.ino);
        let mut prefixes = std::collections::BTreeSet::new();
        for (from, to) in moves {
            for key in [&from.key, to] {
                let mut end = key.len();
                while let Some(at) = key[..end].rfind('/') {
                    if !prefixes.insert(&key[..=at]) {
                        break; // this one and those above are in already
                    }
                    end = at;
                }
            }
        }
        for prefix in prefixes {
            self.listing_changed(prefix);
        }
        self.listed.invalidate_all();
        self.negative.invalidate_all();
    }
}

/// Whether a listed key is a directory's marker object.
fn is_marker(info: &ObjectInfo) -> bool {
    info.key.ends_with('/') && info.size == 0
}

/// Writes marker `to` with the attributes of marker `from` (read by HEAD, which also checks
/// it is still there); returns the new marker's ETag.
async fn move_marker<S: ObjectStore>(
    store: &S,
    from: &ObjectInfo,
    to: &str,
) -> Result<String, S3Error> {
    let found = store.head(&from.key).await?;
    let options = super::posix::marker_options(found.posix, false);
    store.put(to, bytes::Bytes::new(), &options).await
}

/// The markers to delete after a directory's keys moved: one for every directory the keys
/// were in (below `source` and `source` itself; a listed marker is its own directory),
/// deepest first. Not a key that holds data under a directory's name: that one is a source
/// like a file, deleted only at the version copied.
fn every_marker(source: &str, moves: &[(ObjectInfo, String)]) -> Vec<String> {
    let mut prefixes = std::collections::BTreeSet::new();
    for (from, _) in moves {
        let mut end = from.key.len();
        while let Some(at) = from.key[..end].rfind('/') {
            if at + 1 < source.len() {
                break;
            }
            prefixes.insert(from.key[..=at].to_string());
            end = at;
        }
    }
    for (from, _) in moves.iter().filter(|(from, _)| !is_marker(from)) {
        prefixes.remove(&from.key);
    }
    let mut markers: Vec<String> = prefixes.into_iter().collect();
    markers.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    markers
}
