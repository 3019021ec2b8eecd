//! The locks and atomics of the shared structures whose interleavings are checked: the
//! inode table, the handle maps and the memory budget. They are std's, or shuttle's with the
//! `shuttle` feature, under which `cargo test --lib --features shuttle interleavings` runs
//! the tests of `interleavings` over many thread schedules. Nothing else differs.

#[cfg(not(feature = "shuttle"))]
pub use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(feature = "shuttle"))]
pub use std::sync::{Mutex, MutexGuard};

#[cfg(feature = "shuttle")]
pub use shuttle::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(feature = "shuttle")]
pub use shuttle::sync::{Mutex, MutexGuard};
