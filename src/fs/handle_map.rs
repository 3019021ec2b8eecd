//! A table of open handles by number: the one shape shared by the filesystem's file and
//! directory handles and the FUSE layer's passthrough bookkeeping. One lock guards the map; it
//! is held only to insert, clone out or remove an entry, never across I/O.

use std::collections::HashMap;

use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// Open handles of type `T`, numbered from 1 (0 is never a handle).
#[derive(Debug)]
pub struct HandleMap<T> {
    /// The handles by number.
    entries: Mutex<HashMap<u64, T>>,
    /// The next number [`HandleMap::insert`] hands out.
    next: AtomicU64,
}

impl<T> Default for HandleMap<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl<T: Clone> HandleMap<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, T>> {
        self.entries.lock().expect("handle map lock poisoned")
    }

    /// Stores `value` under a fresh number and returns the number.
    pub fn insert(&self, value: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(fh, value);
        fh
    }

    /// Stores `value` under `fh`, a number handed out elsewhere.
    pub fn insert_at(&self, fh: u64, value: T) {
        self.lock().insert(fh, value);
    }

    /// A copy of handle `fh`, if open.
    pub fn get(&self, fh: u64) -> Option<T> {
        self.lock().get(&fh).cloned()
    }

    /// Removes handle `fh` and returns it, if it was open.
    pub fn remove(&self, fh: u64) -> Option<T> {
        self.lock().remove(&fh)
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of open handles `pick` chooses (counted under the lock, nothing cloned).
    pub fn count(&self, pick: impl Fn(&T) -> bool) -> usize {
        self.lock().values().filter(|v| pick(v)).count()
    }

    /// Copies of the open handles `pick` chooses (picked under the lock).
    pub fn matching(&self, pick: impl Fn(&T) -> bool) -> Vec<T> {
        self.lock().values().filter(|v| pick(v)).cloned().collect()
    }

    /// Copies of every open handle (for shutdown and counting).
    pub fn values(&self) -> Vec<T> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_fresh_and_handles_come_and_go() {
        let map = HandleMap::default();
        let a = map.insert("a");
        let b = map.insert("b");
        assert_ne!(a, b);
        assert!(a > 0 && b > 0);
        assert_eq!(map.get(a), Some("a"));
        map.insert_at(100, "c");
        assert_eq!(map.len(), 3);
        assert_eq!(map.remove(a), Some("a"));
        assert_eq!(map.get(a), None);
        assert_eq!(map.remove(a), None);
        assert_eq!(map.len(), 2);
        assert_eq!(map.count(|v| *v == "c"), 1);
    }
}
