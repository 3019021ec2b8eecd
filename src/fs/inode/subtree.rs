//! Whole subtrees of the table, for a directory rename: whether files below are open, and
//! moving every entry below to the new prefix.

use std::collections::HashMap;
use std::time::Instant;

use super::{InodeTable, Local};

impl InodeTable {
    /// Whether an entry whose key starts with `prefix` has open handles or is being written.
    pub fn subtree_busy(&self, prefix: &str) -> bool {
        self.lock().inodes.values().any(|inode| {
            inode.key.starts_with(prefix)
                && (inode.opens > 0 || matches!(inode.local, Some(Local::Writing { .. })))
        })
    }

    /// After a directory rename: directory `ino` is now `new_name` in `new_parent` with
    /// prefix `new_prefix`, and every entry below it has its key moved there. A file takes
    /// the ETag of its copy (`copies`, by new key); one without is expired, so the next look
    /// asks S3.
    pub fn rename_dir(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &str,
        new_prefix: &str,
        copies: &HashMap<String, String>,
    ) {
        let mut state = self.lock();
        let Some(dir) = state.inodes.get(&ino).cloned() else {
            return;
        };
        let old_prefix = dir.key.clone();
        let now = Some(Instant::now());
        for inode in state.inodes.values_mut() {
            if inode.ino != ino && inode.key.starts_with(&old_prefix) {
                inode.key = format!("{new_prefix}{}", &inode.key[old_prefix.len()..]);
                match copies.get(&inode.key) {
                    Some(etag) if inode.stat.etag.is_some() => {
                        inode.stat.etag = Some(etag.clone());
                    }
                    _ => inode.expires = now,
                }
            }
        }
        let old_index = (dir.parent, dir.name.clone());
        if state.children.get(&old_index) == Some(&ino) {
            state.children.remove(&old_index);
        }
        state
            .children
            .insert((new_parent, new_name.to_string()), ino);
        let kept = dir.local.is_some() || state.locals.contains_key(&ino);
        if let Some(inode) = state.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_string();
            inode.key = new_prefix.to_string();
        }
        if kept {
            state.unkeep(dir.parent, ino);
            state.keep(new_parent, ino);
        }
    }
}
