//! A fetched range held as the pieces it came in (a GET body, or one cached block each),
//! contiguous and in order, so that a read inside one piece is served as a slice of it: a
//! part of cached blocks is never copied into one buffer just to be cut up again.

use std::ops::Range;

use bytes::Bytes;

/// Contiguous pieces of one range of an object, in order.
#[derive(Debug, Clone, Default)]
pub struct Pieces(Vec<Bytes>);

impl Pieces {
    /// One piece.
    pub fn one(bytes: Bytes) -> Self {
        Self(vec![bytes])
    }

    /// These pieces, in order (empty ones dropped).
    pub fn from_vec(pieces: Vec<Bytes>) -> Self {
        Self(pieces.into_iter().filter(|p| !p.is_empty()).collect())
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends the bytes of `range` (offsets into these pieces, clamped to their length) to
    /// `out`, as slices of the pieces: nothing is copied. Returns how many bytes that was.
    pub fn slices_into(&self, range: Range<usize>, out: &mut Vec<Bytes>) -> usize {
        let mut appended = 0;
        let mut base = 0;
        for piece in &self.0 {
            let (start, end) = (base, base + piece.len());
            base = end;
            if end <= range.start {
                continue;
            }
            if start >= range.end {
                break;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            if from < to {
                out.push(piece.slice(from..to));
                appended += to - from;
            }
        }
        appended
    }

    /// All the bytes as one buffer: passed through when there is one piece, else copied once.
    pub fn joined(self) -> Bytes {
        let len = self.len();
        super::join(self.0, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any cut of any range into pieces slices exactly as the whole would.
        #[test]
        fn slices_match_the_whole(
            cuts in proptest::collection::vec(0usize..300, 0..8),
            from in 0usize..320,
            len in 0usize..320,
        ) {
            let whole: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
            let mut cuts = cuts;
            cuts.push(0);
            cuts.push(whole.len());
            cuts.sort_unstable();
            let pieces = Pieces::from_vec(
                cuts.windows(2)
                    .map(|w| Bytes::copy_from_slice(&whole[w[0]..w[1]]))
                    .collect(),
            );
            prop_assert_eq!(pieces.len(), whole.len());
            let mut out = Vec::new();
            let appended = pieces.slices_into(from..from + len, &mut out);
            let got: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
            let want = &whole[from.min(300)..(from + len).min(300)];
            prop_assert_eq!(&got[..], want);
            prop_assert_eq!(appended, want.len());
            prop_assert!(out.iter().all(|b| !b.is_empty()), "no empty slices");
            prop_assert_eq!(&pieces.clone().joined()[..], &whole[..]);
        }
    }

    #[test]
    fn one_piece_is_passed_through() {
        let bytes = Bytes::from(vec![1u8; 4096]);
        let at = bytes.as_ptr();
        let pieces = Pieces::one(bytes);
        let mut out = Vec::new();
        assert_eq!(pieces.slices_into(100..200, &mut out), 100);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), at.wrapping_add(100), "a slice, not a copy");
        assert_eq!(pieces.joined().as_ptr(), at);
    }
}
