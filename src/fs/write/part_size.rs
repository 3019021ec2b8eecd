//! Part sizes that let one file reach S3's 5 TiB limit within 10,000 parts.
//!
//! The first 800 parts have `--part-size`; each further 800 double it (capped at 5 GiB), so
//! 8 MiB parts cover 6.7 GB, then 13.4 GB more, and so on; even 5 MiB parts pass 5 TiB
//! within 10,000 parts.

use crate::s3::MAX_SINGLE_OBJECT;

/// Parts of one size before the size doubles.
const PARTS_PER_STEP: i32 = 800;

/// Size of part `number` (1-based) of an upload whose first parts are `base` bytes.
pub fn part_size_for(number: i32, base: u64) -> u64 {
    let step = ((number.max(1) - 1) / PARTS_PER_STEP).min(20) as u32;
    base.saturating_mul(1 << step).min(MAX_SINGLE_OBJECT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::{MAX_OBJECT_SIZE, MAX_PARTS};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn sizes_double_every_800_parts() {
        assert_eq!(part_size_for(1, 8 * MIB), 8 * MIB);
        assert_eq!(part_size_for(800, 8 * MIB), 8 * MIB);
        assert_eq!(part_size_for(801, 8 * MIB), 16 * MIB);
        assert_eq!(part_size_for(10_000, 5 * 1024 * MIB), MAX_SINGLE_OBJECT);
    }

    #[test]
    fn the_smallest_part_size_still_reaches_five_tib() {
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size_for(n, 5 * MIB)).sum();
        assert!(total >= MAX_OBJECT_SIZE, "{total}");
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        #[test]
        fn untrusted_part_numbers_and_sizes_stay_within_s3s_limits(
            number in proptest::prelude::any::<i32>(),
            base in proptest::prelude::any::<u64>(),
        ) {
            proptest::prop_assert!(part_size_for(number, base) <= MAX_SINGLE_OBJECT);
        }
    }
}
