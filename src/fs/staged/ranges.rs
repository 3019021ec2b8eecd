//! Sets of byte ranges: what a staging file holds (fetched or written) and what was written
//! since the last commit. Kept as sorted, disjoint, non-adjacent ranges, so a file written
//! in one pass is one range however many writes made it.

use std::collections::BTreeMap;
use std::ops::Range;

/// A set of byte offsets, as disjoint ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end, disjoint and non-adjacent.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no offset is in the set.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds `range` (merging it with the ranges it touches).
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // The range that starts at or before `start` may reach it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
        }
        // Ranges starting inside [start, end] are absorbed.
        let inside: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// Removes every offset at or past `at` (a truncation).
    pub fn cut_at(&mut self, at: u64) {
        let past: Vec<u64> = self.ranges.range(at..).map(|(&s, _)| s).collect();
        for s in past {
            self.ranges.remove(&s);
        }
        // Only ranges starting before `at` are left, so a cut one is never empty.
        if let Some((_, e)) = self.ranges.range_mut(..at).next_back()
            && *e > at
        {
            *e = at;
        }
    }

    /// The parts of `range` not in the set, in order.
    pub fn missing(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut at = range.start;
        if let Some((_, &e)) = self.ranges.range(..=at).next_back()
            && e > at
        {
            at = e;
        }
        for (&s, &e) in self.ranges.range(range.start..range.end) {
            if s > at {
                out.push(at..s.min(range.end));
            }
            at = at.max(e);
            if at >= range.end {
                break;
            }
        }
        if at < range.end {
            out.push(at..range.end);
        }
        out
    }

    /// Whether any offset of `range` is in the set.
    pub fn intersects(&self, range: Range<u64>) -> bool {
        // The last range starting before `range` ends is the only one that may reach into it.
        !range.is_empty()
            && self
                .ranges
                .range(..range.end)
                .next_back()
                .is_some_and(|(_, &end)| end > range.start)
    }

    /// The smallest offset of the set at or after `at`.
    pub fn first_from(&self, at: u64) -> Option<u64> {
        if let Some((_, &end)) = self.ranges.range(..=at).next_back()
            && end > at
        {
            return Some(at);
        }
        self.ranges.range(at..).next().map(|(&start, _)| start)
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&s, &e)| s..e)
    }

    /// Number of offsets in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn writes_in_one_pass_are_one_range() {
        let mut set = RangeSet::new();
        for i in 0..100u64 {
            set.insert(i * 10..i * 10 + 10);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), [0..1000]);
        assert_eq!(set.missing(500..1500), [1000..1500]);
        set.cut_at(250);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0..250]);
        set.insert(300..400);
        assert_eq!(set.missing(0..500), [250..300, 400..500]);
        assert!(set.intersects(240..260));
        assert!(!set.intersects(250..300));
        assert_eq!(set.len(), 350);
    }

    /// Operations on the set and on a plain bitmap of offsets.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Cut(u64),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The set holds exactly the offsets a bitmap holds, and `missing` names exactly the
        /// offsets the bitmap lacks, in order.
        #[test]
        fn matches_a_bitmap(
            ops in proptest::collection::vec(
                prop_oneof![
                    (0u64..200, 0u64..60).prop_map(|(s, l)| Op::Insert(s, s + l)),
                    (0u64..220).prop_map(Op::Cut),
                ],
                0..40,
            ),
            query in (0u64..220, 0u64..80),
        ) {
            let mut set = RangeSet::new();
            let mut bits = vec![false; 300];
            for op in ops {
                match op {
                    Op::Insert(s, e) => {
                        set.insert(s..e);
                        bits[s as usize..e as usize].iter_mut().for_each(|b| *b = true);
                    }
                    Op::Cut(at) => {
                        set.cut_at(at);
                        bits[at as usize..].iter_mut().for_each(|b| *b = false);
                    }
                }
                // Disjoint and not adjacent.
                let ranges: Vec<_> = set.iter().collect();
                for pair in ranges.windows(2) {
                    prop_assert!(pair[0].end < pair[1].start, "{ranges:?}");
                }
                prop_assert!(ranges.iter().all(|r| !r.is_empty()));
            }
            let held: Vec<u64> = set.iter().flatten().collect();
            let want: Vec<u64> = (0..300u64).filter(|&i| bits[i as usize]).collect();
            prop_assert_eq!(held, want);
            let (start, len) = query;
            let range = start..start + len;
            let missing: Vec<u64> = set.missing(range.clone()).into_iter().flatten().collect();
            let want: Vec<u64> = range.clone().filter(|&i| !bits[i as usize]).collect();
            prop_assert_eq!(missing, want);
            prop_assert_eq!(set.intersects(range.clone()), range.clone().any(|i| bits[i as usize]));
            prop_assert_eq!(set.first_from(start), (start..300).find(|&i| bits[i as usize]));
        }
    }
}
