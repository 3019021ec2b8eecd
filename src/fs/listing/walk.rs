//! Listing readahead for tree walks (`ls -lR`, `find`, `du`, `rsync`): a walker lists a
//! directory, then each subdirectory in turn, each listing one LIST after the other. Once the
//! mount sees two sibling subdirectories listed one after the other (the walk shows itself),
//! it lists the first page of the next few siblings in the background, into the listing
//! pages ([`super::PageCache`]), so the walk finds them there instead of waiting for S3.
//!
//! The siblings come from the parent's own listing, remembered (names of its subdirectories,
//! in listing order) once it has been read to its end. A plain `ls` of one directory starts
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

/// Subdirectory lists remembered at most (directories whose listing ended).
const DIRECTORIES: u64 = 10_000;

/// Subdirectories listed ahead of the walker.
pub const AHEAD: usize = 8;

/// The subdirectories of one directory, in listing order, with each name's position.
#[derive(Debug, Default)]
pub struct Subdirs {
    names: Vec<String>,
    position: HashMap<String, usize>,
}

impl Subdirs {
    /// The list of `names`, in their order.
    pub fn new(names: Vec<String>) -> Self {
        let position = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Self { names, position }
    }
}

/// What the walks in progress have shown.
#[derive(Debug)]
pub struct WalkAhead {
    /// Each fully listed directory's subdirectories, by its inode number.
    subdirs: Cache<u64, Arc<Subdirs>>,
    /// The position of the subdirectory of each directory listed last.
    last: Cache<u64, usize>,
}

impl WalkAhead {
    /// Remembered for `ttl` (the listing pages' lifetime).
    pub fn new(ttl: Duration) -> Self {
        Self {
            subdirs: Cache::builder()
                .max_capacity(DIRECTORIES)
                .time_to_live(ttl)
                .build(),
            last: Cache::builder()
                .max_capacity(DIRECTORIES)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Directory `dir` has been listed to its end: these are its subdirectories.
    pub fn listed(&self, dir: u64, names: Vec<String>) {
        if !names.is_empty() {
            self.subdirs.insert(dir, Arc::new(Subdirs::new(names)));
        }
    }

    /// Subdirectory `name` of `parent` starts being listed. Returns the names of the
    /// siblings to list ahead: the next [`AHEAD`] after it, when the one listed before it
    /// was its predecessor (a walk); none otherwise.
    pub fn entering(&self, parent: u64, name: &str) -> Vec<String> {
        let Some(subdirs) = self.subdirs.get(&parent) else {
            return Vec::new();
        };
        let Some(&at) = subdirs.position.get(name) else {
            return Vec::new();
        };
        let walking = at > 0 && self.last.get(&parent) == Some(at - 1);
        self.last.insert(parent, at);
        if !walking {
            return Vec::new();
        }
        subdirs.names[at + 1..]
            .iter()
            .take(AHEAD)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_lists_ahead_a_single_visit_does_not() {
        let walk = WalkAhead::new(Duration::from_secs(60));
        let names: Vec<String> = (0..20).map(|i| format!("d{i:02}")).collect();
        walk.listed(1, names);
        assert!(walk.entering(1, "d05").is_empty(), "a visit is not a walk");
        assert!(walk.entering(1, "d00").is_empty());
        let ahead = walk.entering(1, "d01");
        assert_eq!(
            ahead,
            (2..10).map(|i| format!("d{i:02}")).collect::<Vec<_>>()
        );
        assert_eq!(walk.entering(1, "d02").len(), AHEAD);
        assert_eq!(walk.entering(1, "d18"), Vec::<String>::new(), "a jump");
        assert_eq!(
            walk.entering(1, "d19"),
            Vec::<String>::new(),
            "the last has none after it"
        );
        assert!(walk.entering(2, "d01").is_empty(), "an unknown parent");
        assert!(walk.entering(1, "nope").is_empty());
    }
}
