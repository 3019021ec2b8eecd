//! Which blocks are on disk, how many bytes they take, and which was used least recently.
//! Pure bookkeeping: the caller does the file I/O.

use std::collections::{BTreeMap, HashMap};

/// A block: the hash of its object version and its index in the object.
pub type BlockId = (u64, u64);

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    tick: u64,
}

/// LRU accounting of the cache's blocks.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<BlockId, Entry>,
    by_age: BTreeMap<u64, BlockId>,
    next_tick: u64,
    used: u64,
    /// Bytes promised to blocks being written (counted in `used`).
    reserved: u64,
}

impl Index {
    /// Bytes of all blocks held.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes of the blocks in place: [`Index::used`] less the blocks still being written.
    pub fn stored(&self) -> u64 {
        self.used - self.reserved
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &BlockId) -> bool {
        self.entries.contains_key(id)
    }

    /// Records `id` of `size` bytes as the most recently used.
    pub fn insert(&mut self, id: BlockId, size: u64) {
        self.remove(&id);
        let tick = self.tick();
        self.entries.insert(id, Entry { size, tick });
        self.by_age.insert(tick, id);
        self.used += size;
    }

    /// Marks `id` as just used.
    pub fn touch(&mut self, id: &BlockId) {
        let tick = self.tick();
        if let Some(entry) = self.entries.get_mut(id) {
            self.by_age.remove(&entry.tick);
            entry.tick = tick;
            self.by_age.insert(tick, *id);
        }
    }

    /// Counts `size` bytes for a block about to be written, before it exists.
    pub fn reserve(&mut self, size: u64) {
        self.reserved += size;
        self.used += size;
    }

    /// Gives back a reservation (the block was placed with [`Index::insert`], or dropped).
    pub fn unreserve(&mut self, size: u64) {
        self.reserved -= size;
        self.used -= size;
    }

    /// Forgets `id`; returns its size if it was held.
    pub fn remove(&mut self, id: &BlockId) -> Option<u64> {
        let entry = self.entries.remove(id)?;
        self.by_age.remove(&entry.tick);
        self.used -= entry.size;
        Some(entry.size)
    }

    /// Removes and returns the least recently used block.
    pub fn pop_oldest(&mut self) -> Option<BlockId> {
        let (_, id) = self.by_age.pop_first()?;
        let entry = self
            .entries
            .remove(&id)
            .expect("index entries and ages agree");
        self.used -= entry.size;
        Some(id)
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_first() {
        let mut index = Index::default();
        index.insert((1, 0), 10);
        index.insert((1, 1), 20);
        index.insert((2, 0), 30);
        assert_eq!(index.used(), 60);
        index.touch(&(1, 0));
        assert_eq!(index.pop_oldest(), Some((1, 1)));
        assert_eq!(index.pop_oldest(), Some((2, 0)));
        assert_eq!(index.used(), 10);
        assert_eq!(index.remove(&(1, 0)), Some(10));
        assert!(index.is_empty() && index.used() == 0);
        assert_eq!(index.pop_oldest(), None);
    }

    #[test]
    fn reservations_count_until_given_back() {
        let mut index = Index::default();
        index.insert((1, 0), 10);
        index.reserve(5);
        assert_eq!(index.used(), 15);
        assert_eq!(
            index.stored(),
            10,
            "a block being written is not readable yet"
        );
        assert_eq!(index.pop_oldest(), Some((1, 0)));
        assert_eq!(index.pop_oldest(), None, "a reservation is not a block");
        assert_eq!(index.used(), 5);
        index.unreserve(5);
        assert_eq!(index.used(), 0);
    }

    #[test]
    fn reinsert_replaces() {
        let mut index = Index::default();
        index.insert((1, 0), 10);
        index.insert((1, 0), 15);
        assert_eq!((index.len(), index.used()), (1, 15));
    }
}
