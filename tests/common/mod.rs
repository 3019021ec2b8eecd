//! Test harness shared by the integration tests.
//!
//! * `server`: [`S3Server`] runs a real S3 server (SeaweedFS `weed server`) on loopback ports
//!   with its own temporary directory and an identity, so request signatures are really
//!   checked. [`S3Server::shared`] gives one server per test binary; [`S3Server::start`] an
//!   owned one that stops when dropped.
//! * `client`: the tests' SDK client and blocking bucket/object helpers on [`S3Server`].
//! * `mount`: [`MountArgs`] builds a `mount-s3` command line against such a server and runs
//!   the real binary as a [`Mount`], unmounted on drop; `run`: runs it to completion
//!   ([`MountArgs::run`]) for the bad-input tests; `binary`: the binary and its processes.
//! * `mountinfo`: mount table lookups; `process`: child processes and exit hooks.
//! * `faults`: [`FaultProxy`], a fault-injecting HTTP/1.1 proxy between a mount and the server.
//! * `listing`, `fileio`, `data`: directory listings, file I/O checks, pseudo-random data.
//!
//! Every test binary compiles this module and uses a part of it, hence the `allow`s.
#![allow(dead_code, unused_imports)]

mod binary;
mod client;
mod data;
mod faults;
mod fileio;
mod listing;
mod mount;
mod mountinfo;
mod process;
mod run;
mod server;

pub use binary::{isolated_command, mount_s3_binary, mount_s3_processes_for, reap_daemons};
pub use client::{error_text, http_status, make_client, runtime, unique_bucket_name, unique_token};
pub use data::{PseudoRandomReader, Rng, pseudo_random_bytes};
pub use faults::{Fault, FaultPlan, FaultProxy, Liveness, ProxyStats, RecordedRequest};
pub use fileio::{
    assert_bytes_eq, c_path, close, expect_errno, my_uid_gid, os_result, pread_full, read_from,
    write_and_close,
};
pub use listing::{assert_listing, assert_typed_listing, list_dir, list_dir_typed};
pub use mount::{Mount, MountArgs, summary_fields};
pub use mountinfo::{MountEntry, mount_entry, mount_table, unmount};
pub use process::command_works;
pub use run::{RunOutcome, run_mount_s3_raw};
pub use server::{REGION, S3Server, test_ca_bundle, weed_binary};
