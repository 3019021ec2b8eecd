//! How a staged file becomes an object: which parts are copied on the server from the version
//! the staging started from (UploadPartCopy), and which are uploaded from the staging file.
//!
//! The file is cut on a grid of equal chunks (5 MiB, S3's smallest part, or more for objects
//! over 50 GB so that 10,000 parts suffice). A chunk that lies wholly inside what the old
//! version still holds unchanged (below its size and below every truncation since) and holds
//! no written byte is copied; consecutive such chunks are one copy part (at most 5 GiB). The
//! others are uploaded, one part per chunk. Every part but the last is a whole number of
//! chunks, so at least 5 MiB, as S3 requires; the last may be shorter. So a 4 KiB change in
//! the middle of a 10 GiB object uploads one 5 MiB chunk (S3 cannot take a smaller middle
//! part) and copies the rest. The last part may start anywhere: when it is uploaded after a
//! copy, the copy reaches on to its first changed byte, so an append uploads exactly the new
//! bytes.

use std::ops::Range;

use super::ranges::RangeSet;

/// S3's smallest part but the last, and the grid's smallest chunk.
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// S3's largest part (upload or copy).
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// S3's most parts.
const MAX_PARTS: u64 = 10_000;

/// One part of the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPart {
    /// The bytes of the new object it holds (the same offsets of the old one, for a copy).
    pub range: Range<u64>,
    /// Copied on the server from the old version, instead of uploaded.
    pub copy: bool,
}

/// How to store the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One PUT of the whole file (nothing worth copying, and small).
    Put,
    /// A multipart upload of these parts, in order.
    Parts(Vec<PlanPart>),
}

/// The chunk size for a file of `size` bytes: 5 MiB, or the smallest whole MiB that needs at
/// most 10,000 chunks.
fn chunk_for(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    size.div_ceil(MAX_PARTS)
        .div_ceil(MIB)
        .saturating_mul(MIB)
        .max(MIN_PART)
}

/// The plan for a file of `size` bytes, whose bytes below `copyable` are the old version's
/// unless `dirty` holds them; `put_limit` is the size up to which a file with nothing to copy
/// is one PUT.
pub fn plan(size: u64, copyable: u64, dirty: &RangeSet, put_limit: u64) -> Plan {
    let chunk = chunk_for(size);
    let clean = |range: &Range<u64>| range.end <= copyable && !dirty.intersects(range.clone());
    let mut chunks: Vec<PlanPart> = (0..size.div_ceil(chunk))
        .map(|i| {
            let range = i * chunk..((i + 1) * chunk).min(size);
            PlanPart {
                copy: clean(&range),
                range,
            }
        })
        .collect();
    if !chunks.iter().any(|c| c.copy) {
        if size <= put_limit.min(MAX_PART) {
            return Plan::Put;
        }
        return Plan::Parts(chunks);
    }
    // Consecutive copied chunks make one part, up to S3's largest.
    let most_chunks = (MAX_PART / chunk).max(1);
    let mut parts: Vec<PlanPart> = Vec::new();
    for part in chunks.drain(..) {
        if let Some(last) = parts.last_mut()
            && last.copy
            && part.copy
            && (last.range.end - last.range.start) / chunk < most_chunks
            && last.range.end - last.range.start + (part.range.end - part.range.start) <= MAX_PART
        {
            last.range.end = part.range.end;
            continue;
        }
        parts.push(part);
    }
    // The last part may start anywhere: a copy before it reaches on to the tail's first
    // byte that is not the old version's.
    if let [.., before, last] = parts.as_mut_slice()
        && before.copy
        && !last.copy
    {
        let changed = dirty.first_from(last.range.start).unwrap_or(size);
        let reach = changed.min(copyable).min(size);
        if reach > last.range.start && reach - before.range.start <= MAX_PART {
            before.range.end = reach;
            last.range.start = reach;
        }
    }
    if parts.last().is_some_and(|p| p.range.is_empty()) {
        parts.pop();
    }
    Plan::Parts(parts)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn dirty(ranges: &[Range<u64>]) -> RangeSet {
        dirty_vec(ranges.to_vec())
    }

    fn one(range: Range<u64>) -> RangeSet {
        dirty_vec(vec![range])
    }

    fn dirty_vec(ranges: Vec<Range<u64>>) -> RangeSet {
        let mut set = RangeSet::new();
        for r in ranges {
            set.insert(r);
        }
        set
    }

    #[test]
    fn a_small_change_in_a_large_object_uploads_one_chunk() {
        let size = 10 * 1024 * MIB;
        let at = 5 * 1024 * MIB + 123;
        let Plan::Parts(parts) = plan(size, size, &one(at..at + 4096), 8 * MIB) else {
            panic!("a copy plan");
        };
        let uploaded: u64 = parts
            .iter()
            .filter(|p| !p.copy)
            .map(|p| p.range.end - p.range.start)
            .sum();
        assert_eq!(uploaded, MIN_PART);
        assert_eq!(parts.len(), 3, "copy (5 GiB), upload, copy: {parts:?}");
    }

    #[test]
    fn an_append_uploads_the_tail() {
        let old = 64 * MIB + 10;
        let size = old + 3000;
        let Plan::Parts(parts) = plan(size, old, &one(old..size), 8 * MIB) else {
            panic!("a copy plan");
        };
        assert_eq!(
            parts[0],
            PlanPart {
                range: 0..old,
                copy: true
            }
        );
        assert_eq!(
            parts[1],
            PlanPart {
                range: old..size,
                copy: false
            }
        );
        assert_eq!(parts.len(), 2, "the new bytes only are uploaded");
    }

    #[test]
    fn nothing_to_copy_is_one_put_when_small() {
        assert_eq!(plan(0, 0, &RangeSet::new(), 8 * MIB), Plan::Put);
        assert_eq!(plan(3 * MIB, 0, &RangeSet::new(), 8 * MIB), Plan::Put);
        let all_new = plan(4 * MIB, 4 * MIB, &one(0..4 * MIB), 8 * MIB);
        assert_eq!(all_new, Plan::Put);
        let Plan::Parts(parts) = plan(20 * MIB, 0, &RangeSet::new(), 8 * MIB) else {
            panic!("parts");
        };
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| !p.copy));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever was written and truncated: the parts cover the file exactly, in order;
        /// every part but the last holds at least 5 MiB and at most 5 GiB; a copied part
        /// lies below what the old version still holds and holds no written byte; there are
        /// at most 10,000 parts.
        #[test]
        fn parts_are_valid_for_s3(
            size in 0u64..200 * MIB,
            copyable_frac in 0u64..=100,
            writes in proptest::collection::vec((0u64..200 * MIB, 1u64..8 * MIB), 0..6),
        ) {
            let copyable = size * copyable_frac / 100;
            let written = dirty(&writes.iter().map(|&(s, l)| s..s + l).collect::<Vec<_>>());
            match plan(size, copyable, &written, 8 * MIB) {
                Plan::Put => prop_assert!(size <= 8 * MIB),
                Plan::Parts(parts) => {
                    prop_assert!(parts.len() as u64 <= MAX_PARTS);
                    let mut at = 0;
                    for (i, part) in parts.iter().enumerate() {
                        prop_assert_eq!(part.range.start, at);
                        let len = part.range.end - part.range.start;
                        prop_assert!(len > 0 && len <= MAX_PART);
                        if i + 1 < parts.len() {
                            prop_assert!(len >= MIN_PART, "{:?}", parts);
                        }
                        if part.copy {
                            prop_assert!(part.range.end <= copyable);
                            prop_assert!(!written.intersects(part.range.clone()));
                        }
                        at = part.range.end;
                    }
                    prop_assert_eq!(at, size);
                }
            }
        }
    }
}
