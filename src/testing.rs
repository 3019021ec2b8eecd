//! What the unit tests share across modules: the proptest configuration of the tests that
//! feed untrusted input (from S3, the kernel, the command line, an fstab line) to the code
//! that parses or computes with it, all named `untrusted_*`. CI runs each with 256 cases and a
//! fixed seed; `MOUNT_S3_FUZZ_CASES=100000 cargo test --lib untrusted` is the long run
//! (`MOUNT_S3_FUZZ_SEED` picks another seed).

use proptest::test_runner::{Config, RngSeed};

/// The proptest configuration of an `untrusted_*` test.
pub fn fuzz_config() -> Config {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Config {
        cases: u32::try_from(number("MOUNT_S3_FUZZ_CASES", 256)).unwrap_or(u32::MAX),
        rng_seed: RngSeed::Fixed(number("MOUNT_S3_FUZZ_SEED", 0x5eed_f022)),
        failure_persistence: None,
        ..Config::default()
    }
}
