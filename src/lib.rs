//! mount-s3: an S3 bucket as a local directory, over FUSE.
//!
//! Layers, top to bottom (calls go one way): [`cli`] turns flags into one config struct per
//! layer; [`fuse`] adapts kernel requests to [`fs`], the filesystem proper; [`fs`] reaches
//! storage only through [`s3::ObjectStore`].

pub mod cache;
pub mod cli;
pub mod completions;
pub mod daemon;
pub mod fs;
pub mod fstab;
pub mod fuse;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod private_dir;
pub mod s3;
pub mod shared_cache;
pub mod sync;
pub mod throughput;

#[cfg(all(test, feature = "shuttle"))]
mod interleavings;
#[cfg(test)]
mod testing;
