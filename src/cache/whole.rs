//! The on-disk format of a whole-object copy: when every block of an object version is
//! cached, its bytes are copied into one plain file holding exactly the object (byte `n` of
//! the object at offset `n`), so that the kernel can read it directly (FUSE passthrough) and
//! the object's block files can go. The checksums live next to it in a sidecar file:
//!
//! ```text
//! magic "MS3WHOLE" | version u32 = 1 | object size u64 | dev u64 | inode u64
//! | ctime seconds i64 | ctime nanoseconds u32 | id length u32 | CRC32C u32
//! | id (bucket \0 key \0 ETag) | one CRC32C u32 per 4 KiB chunk of the object
//! ```
//! The sidecar's own CRC covers all of it (with the CRC field zeroed). Reads through
//! mount-s3 check each chunk they read, as for blocks. Reads by the kernel cannot be
//! checked, so the sidecar also records the data file's identity (device, inode, size,
//! change time) as it was once written, synced and renamed into place: any write,
//! truncation, rename or replacement of the data file changes one of them (the change time
//! cannot be set by a program), and a data file whose identity differs is never handed to
//! the kernel. Corruption below the filesystem (a failing disk) is the one thing this does
//! not catch for passthrough reads; reads through mount-s3 still check every chunk.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use super::block::{CHUNK, Rejected, crc_skipping_field, read_crcs, verify_chunks};

/// First bytes of every sidecar.
const MAGIC: &[u8; 8] = b"MS3WHOLE";
/// Format version; a different one is a miss.
const VERSION: u32 = 1;
/// magic + version + size + dev + ino + ctime s + ctime ns + id length + crc.
const FIXED_LEN: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 4;
/// Offset of the CRC field.
const CRC_AT: usize = FIXED_LEN - 4;

/// What identifies one file on one filesystem in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: i64,
    ctime_nsec: u32,
}

impl Identity {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: meta.ctime(),
            ctime_nsec: u32::try_from(meta.ctime_nsec()).unwrap_or(u32::MAX),
        }
    }
}

/// A decoded, verified sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    /// Bytes of the object (and of its data file).
    pub size: u64,
    /// The data file as it was written.
    pub identity: Identity,
    chunk_crcs: Vec<u32>,
}

/// CRC32C of each 4 KiB chunk of a stream of bytes fed in pieces of any length.
#[derive(Debug, Default)]
pub struct ChunkSums {
    crcs: Vec<u32>,
    /// CRC of the bytes of the current, unfinished chunk, and how many there are.
    partial: (u32, usize),
}

impl ChunkSums {
    /// Adds the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (CHUNK - self.partial.1).min(data.len());
            self.partial.0 = crc32c::crc32c_append(self.partial.0, &data[..take]);
            self.partial.1 += take;
            data = &data[take..];
            if self.partial.1 == CHUNK {
                self.crcs.push(self.partial.0);
                self.partial = (0, 0);
            }
        }
    }

    /// Adds the next bytes of the stream whose chunk sums are known already (`crcs`, one per
    /// 4 KiB of `len` bytes, the last chunk possibly short); the stream must be at a chunk
    /// boundary, else the bytes are summed again.
    pub fn feed_summed(&mut self, data: &[u8], crcs: &[u32]) {
        if self.partial.1 == 0 && crcs.len() == data.len().div_ceil(CHUNK) {
            let whole = data.len() / CHUNK;
            self.crcs.extend_from_slice(&crcs[..whole]);
            self.feed(&data[whole * CHUNK..]);
        } else {
            self.feed(data);
        }
    }

    /// The sums of all chunks (the last one may be short).
    pub fn finish(mut self) -> Vec<u32> {
        if self.partial.1 > 0 {
            self.crcs.push(self.partial.0);
        }
        self.crcs
    }
}

/// Length of the sidecar of an object version whose id is `id_len` bytes and which holds
/// `size` bytes.
pub fn encoded_len(id_len: usize, size: u64) -> usize {
    FIXED_LEN + id_len + 4 * size.div_ceil(CHUNK as u64) as usize
}

/// Serialises the sidecar of an object version `id` of `size` bytes whose data file has
/// `identity` and chunk sums `chunk_crcs`.
pub fn encode(id: &str, size: u64, identity: Identity, chunk_crcs: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + id.len() + 4 * chunk_crcs.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&identity.dev.to_le_bytes());
    out.extend_from_slice(&identity.ino.to_le_bytes());
    out.extend_from_slice(&identity.ctime.to_le_bytes());
    out.extend_from_slice(&identity.ctime_nsec.to_le_bytes());
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // CRC, filled below
    out.extend_from_slice(id.as_bytes());
    for crc in chunk_crcs {
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The sidecar in `buf` if it is intact and belongs to `id`.
pub fn decode(buf: &[u8], id: &str) -> Result<Sums, Rejected> {
    if buf.len() < FIXED_LEN || &buf[..8] != MAGIC {
        return Err(Rejected::Malformed);
    }
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    if u32_at(8) != VERSION {
        return Err(Rejected::Malformed);
    }
    let size = u64_at(12);
    let id_len = u32_at(48) as usize;
    let chunks = usize::try_from(size.div_ceil(CHUNK as u64)).map_err(|_| Rejected::Malformed)?;
    if buf.len() != FIXED_LEN + id_len + 4 * chunks {
        return Err(Rejected::Malformed);
    }
    if crc_skipping_field(buf, CRC_AT) != u32_at(CRC_AT) {
        return Err(Rejected::Corrupt);
    }
    if &buf[FIXED_LEN..FIXED_LEN + id_len] != id.as_bytes() {
        return Err(Rejected::OtherBlock);
    }
    let identity = Identity {
        dev: u64_at(20),
        ino: u64_at(28),
        size,
        ctime: u64_at(36) as i64,
        ctime_nsec: u32_at(44),
    };
    let chunk_crcs = read_crcs(&buf[FIXED_LEN + id_len..]);
    Ok(Sums {
        size,
        identity,
        chunk_crcs,
    })
}

impl Sums {
    /// Memory this takes (for the bound on remembered sidecars).
    pub fn weight(&self) -> u32 {
        u32::try_from(64 + 4 * self.chunk_crcs.len()).unwrap_or(u32::MAX)
    }

    /// Checks `data`, the object's bytes from the chunk-aligned offset `at`.
    pub fn verify(&self, at: u64, data: &[u8]) -> Result<(), Rejected> {
        let first = usize::try_from(at / CHUNK as u64).map_err(|_| Rejected::Malformed)?;
        verify_chunks(&self.chunk_crcs, first, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            dev: 1,
            ino: 2,
            size: 3 * CHUNK as u64 + 5,
            ctime: 4,
            ctime_nsec: 5,
        }
    }

    fn data() -> Vec<u8> {
        (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect()
    }

    fn sums_of(data: &[u8], piece: usize) -> Vec<u32> {
        let mut sums = ChunkSums::default();
        for p in data.chunks(piece) {
            sums.feed(p);
        }
        sums.finish()
    }

    #[test]
    fn chunk_sums_do_not_depend_on_how_the_bytes_arrive() {
        let data = data();
        let whole: Vec<u32> = data.chunks(CHUNK).map(crc32c::crc32c).collect();
        for piece in [1, 7, 4095, 4096, 4097, 100_000] {
            assert_eq!(sums_of(&data, piece), whole, "pieces of {piece}");
        }
        assert!(sums_of(&[], 1).is_empty());
    }

    #[test]
    fn known_sums_are_taken_only_at_chunk_boundaries() {
        let data = data();
        let whole: Vec<u32> = data.chunks(CHUNK).map(crc32c::crc32c).collect();
        let block = |r: std::ops::Range<usize>| -> Vec<u32> {
            data[r].chunks(CHUNK).map(crc32c::crc32c).collect()
        };
        // Aligned pieces: sums reused; an unaligned one: summed again from the bytes.
        for cut in [2 * CHUNK, CHUNK + 100] {
            let mut sums = ChunkSums::default();
            sums.feed_summed(&data[..cut], &block(0..cut));
            sums.feed_summed(&data[cut..], &block(cut..data.len()));
            assert_eq!(sums.finish(), whole, "cut at {cut}");
        }
        // Wrong known sums are not trusted when they cannot be the piece's.
        let mut sums = ChunkSums::default();
        sums.feed_summed(&data, &[1, 2]);
        assert_eq!(sums.finish(), whole);
    }

    #[test]
    fn round_trip_and_verify() {
        let data = data();
        let file = encode(
            "b\0k\0e",
            data.len() as u64,
            identity(),
            &sums_of(&data, 999),
        );
        let sums = decode(&file, "b\0k\0e").unwrap();
        assert_eq!((sums.size, sums.identity), (data.len() as u64, identity()));
        sums.verify(0, &data).unwrap();
        sums.verify(CHUNK as u64, &data[CHUNK..2 * CHUNK]).unwrap();
        let mut bad = data.clone();
        bad[2 * CHUNK + 1] ^= 1;
        assert_eq!(sums.verify(0, &bad), Err(Rejected::Corrupt));
        sums.verify(0, &bad[..2 * CHUNK]).unwrap();
        assert_eq!(decode(&file, "b\0k\0other"), Err(Rejected::OtherBlock));
    }

    #[test]
    fn any_flipped_or_missing_byte_is_rejected() {
        let data = data();
        let good = encode("id", data.len() as u64, identity(), &sums_of(&data, 4096));
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad, "id").is_err(), "flip at {at} accepted");
        }
        assert_eq!(
            decode(&good[..good.len() - 1], "id"),
            Err(Rejected::Malformed)
        );
        assert_eq!(decode(&[], "id"), Err(Rejected::Malformed));
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        /// Any sidecar bytes decode to an error or to a verified sidecar, never a panic.
        #[test]
        fn untrusted_sidecars_decode_or_are_rejected(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            if let Ok(sums) = decode(&bytes, "id") {
                let _ = sums.verify(0, &bytes);
            }
        }
    }
}
