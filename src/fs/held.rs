//! A bound on the entries the kernel holds. Every entry of a readdirplus reply becomes a
//! kernel inode, and so an inode of the table (about 500 bytes each), until memory pressure
//! makes the kernel forget it: `find` over a million keys would make a million. So the
//! entries handed out are remembered in order, and once the table passes its bound the oldest
//! files the kernel holds for nothing (no handle open, nothing local) are dropped from the
//! kernel's cache (FUSE_NOTIFY_INVAL_ENTRY); its FORGET then removes them from the table.
//! A walk (`find`, `du`, `ls -lR`) only goes forward, so the oldest are the coldest.

use std::collections::VecDeque;

use crate::sync::Mutex;

/// Inodes the table may hold before the oldest handed-out entries are dropped (about
/// 64 MiB of table, and the kernel's own inodes and dentries for them).
pub const BOUND: usize = 131_072;

/// Entries dropped at most per entry handed out past the bound (a steady state of one in,
/// one out; a little faster after a burst of lookups).
const DROPS_PER_ENTRY: usize = 2;

/// The entries handed out to the kernel, oldest first (at most the bound remembered).
#[derive(Debug, Default)]
pub struct HeldEntries {
    order: Mutex<VecDeque<(u64, String)>>,
}

impl HeldEntries {
    /// Entry `name` of `parent` was handed out; the table now holds `held` inodes. Returns
    /// the oldest entries to drop from the kernel, as many as the table is over `bound`
    /// (at most [`DROPS_PER_ENTRY`]).
    pub fn handed_out(
        &self,
        parent: u64,
        name: &str,
        held: usize,
        bound: usize,
    ) -> Vec<(u64, String)> {
        let mut order = self.order.lock().expect("held entries lock poisoned");
        order.push_back((parent, name.to_string()));
        while order.len() > bound {
            order.pop_front();
        }
        let over = held.saturating_sub(bound).min(DROPS_PER_ENTRY);
        (0..over).filter_map(|_| order.pop_front()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_once_the_table_is_over_its_bound() {
        let held = HeldEntries::default();
        for i in 0..10 {
            assert!(held.handed_out(1, &format!("f{i}"), 100, BOUND).is_empty());
        }
        assert_eq!(
            held.handed_out(1, "f10", BOUND + 5, BOUND),
            [(1, "f0".to_string()), (1, "f1".to_string())]
        );
        assert_eq!(
            held.handed_out(1, "f11", BOUND + 1, BOUND),
            [(1, "f2".to_string())]
        );
        // No more remembered than the bound.
        for i in 0..20 {
            held.handed_out(2, &format!("g{i}"), 0, 5);
        }
        let remembered = held.order.lock().unwrap().len();
        assert_eq!(remembered, 5);
    }
}
