//! The plain model the filesystem is held against: the bucket as a map of keys to bytes,
//! plus the directories mkdir made that hold no committed file yet, and what each step
//! should answer on it (see the parent module for the rules).

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// `path`'s parent path (`""` for the root) and last component.
pub(super) fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The strict ancestors of `path`, as paths (the root excluded).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// The expected state: the bucket, and the directories that exist only in this mount.
#[derive(Debug, Clone, Default)]
pub(super) struct Model {
    pub(super) keys: BTreeMap<String, Vec<u8>>,
    pub(super) local: BTreeSet<String>,
}

impl Model {
    /// Whether a key (or, with `local`, a new directory) lies under directory `path`.
    pub(super) fn anything_under(&self, path: &str, local: bool) -> bool {
        let prefix = format!("{path}/");
        let mut keys = self.keys.range(prefix.clone()..);
        keys.next().is_some_and(|(k, _)| k.starts_with(&prefix))
            || local && self.local.iter().any(|d| d.starts_with(&prefix))
    }

    /// What the (non-root) `path` is, its parents aside.
    pub(super) fn kind(&self, path: &str) -> Option<Kind> {
        if self.local.contains(path) || self.anything_under(path, true) {
            Some(Kind::Dir)
        } else {
            self.keys.contains_key(path).then_some(Kind::File)
        }
    }

    /// What a walk of `path` from the root finds (`""` is the root).
    pub(super) fn resolve(&self, path: &str) -> Result<Kind, Errno> {
        let mut kind = Kind::Dir;
        let ends = path.match_indices('/').map(|(i, _)| i);
        for end in ends.chain([path.len()]).filter(|&end| end > 0) {
            if kind == Kind::File {
                return Err(ENOTDIR);
            }
            kind = self.kind(&path[..end]).ok_or(ENOENT)?;
        }
        Ok(kind)
    }

    /// What the walk of the directory of `path` finds, which must be a directory.
    pub(super) fn parent_dir(&self, path: &str) -> Result<(), Errno> {
        match self.resolve(split(path).0)? {
            Kind::Dir => Ok(()),
            Kind::File => Err(ENOTDIR),
        }
    }

    /// The entries of directory `dir` (`""` is the root), sorted.
    pub(super) fn listing(&self, dir: &str) -> Vec<(String, Kind)> {
        let prefix = format!("{dir}/").trim_start_matches('/').to_string();
        let mut names = BTreeMap::new();
        for path in self.keys.keys().chain(&self.local) {
            let Some(rest) = path.strip_prefix(&prefix).filter(|r| !r.is_empty()) else {
                continue;
            };
            let name = rest.split_once('/').map_or(rest, |(name, _)| name);
            let dir = name.len() < rest.len() || self.local.contains(path);
            let kind = if dir { Kind::Dir } else { Kind::File };
            // A directory (a prefix, a marker, a new one) shadows a file of the same name.
            let entry = names.entry(name.to_string()).or_insert(kind);
            *entry = (*entry).max(kind);
        }
        names.into_iter().collect()
    }

    /// Every path that exists (the root aside), sorted.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        for path in self.keys.keys().chain(&self.local) {
            let path = path.strip_suffix('/').unwrap_or(path);
            names.extend(ancestors(path).chain([path]).map(str::to_string));
        }
        names.into_iter().collect()
    }

    /// A file was committed at `path`: the directories it is in are real now.
    pub(super) fn commit(&mut self, path: &str, data: Vec<u8>) {
        for dir in ancestors(path) {
            self.local.remove(dir);
        }
        self.keys.insert(path.to_string(), data);
    }

    /// Runs `op` on the model.
    pub(super) fn apply(&mut self, op: &Op<String>) -> Outcome {
        match op {
            Op::Lookup(path) => {
                let kind = self.resolve(path)?;
                let size = self.keys.get(path).filter(|_| kind == Kind::File);
                return Ok(Answer::Attr(kind, size.map_or(0, |d| d.len() as u64)));
            }
            Op::ListDir(path) => match self.resolve(path)? {
                Kind::Dir => return Ok(Answer::Listing(self.listing(path))),
                Kind::File => return Err(ENOTDIR),
            },
            Op::Read(path, reads) => {
                if self.resolve(path)? == Kind::Dir {
                    return Err(EISDIR);
                }
                let data = &self.keys[path];
                let at = |offset: u64| (offset as usize).min(data.len());
                let read = |&(offset, len): &(u64, u32)| {
                    data[at(offset)..at(offset + u64::from(len))].to_vec()
                };
                return Ok(Answer::Bytes(reads.iter().map(read).collect()));
            }
            Op::Write(path, data, _) => {
                self.parent_dir(path)?;
                if self.kind(path) == Some(Kind::Dir) {
                    return Err(EISDIR);
                }
                self.commit(path, data.bytes());
            }
            Op::Unlink(path) => {
                self.parent_dir(path)?;
                match self.kind(path) {
                    None => return Err(ENOENT),
                    Some(Kind::Dir) => return Err(EISDIR),
                    Some(Kind::File) => self.keys.remove(path),
                };
            }
            Op::Mkdir(path) => {
                self.parent_dir(path)?;
                if self.kind(path).is_some() {
                    return Err(EEXIST);
                }
                self.local.insert(path.clone());
            }
            Op::Rmdir(path) => {
                self.parent_dir(path)?;
                match self.kind(path) {
                    None => return Err(ENOENT),
                    Some(Kind::File) => return Err(ENOTDIR),
                    Some(Kind::Dir) => {}
                }
                let marker = format!("{path}/");
                let inside = |p: &String| p.starts_with(&marker) && *p != marker;
                if self.local.iter().chain(self.keys.keys()).any(inside) {
                    return Err(ENOTEMPTY);
                }
                self.keys.remove(&marker);
                self.local.remove(path);
            }
            Op::Rename(from, to) => {
                let parents = [self.resolve(split(from).0)?, self.resolve(split(to).0)?];
                if parents.contains(&Kind::File) {
                    return Err(ENOTDIR);
                }
                match (self.kind(from), self.kind(to)) {
                    (None, _) => return Err(ENOENT),
                    (Some(Kind::Dir), _) => return Err(EXDEV),
                    (_, Some(Kind::Dir)) => return Err(EISDIR),
                    _ if from == to => {}
                    _ => {
                        let data = self.keys.remove(from).expect("a file");
                        self.commit(to, data);
                    }
                }
            }
            Op::RemotePut(key, data) => {
                self.keys
                    .insert(key.clone(), data.map_or(Vec::new(), Data::bytes));
            }
            Op::RemoteDelete(key) => {
                self.keys.remove(key);
            }
            Op::Forget => {}
            Op::Remount => self.local.clear(),
        }
        Ok(Answer::Done)
    }
}
