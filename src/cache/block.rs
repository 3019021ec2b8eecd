//! The on-disk format of one cached block: a header naming exactly which bytes these are and
//! holding one CRC32C per 4 KiB chunk of data, then the data. The header has its own CRC32C,
//! so a reader can verify the header once and then any chunk alone: a 4 KiB random read
//! reads and checks 4 KiB, not the whole block. A block that does not decode, is truncated,
//! fails a checksum or names another object is not served.
//!
//! Layout (little-endian):
//! ```text
//! magic "MS3BLOCK" | version u32 = 2 | block index u64 | data length u32 | data offset u32
//! | id length u32 | header CRC32C u32 | id (bucket \0 key \0 ETag) | one CRC32C u32 per chunk
//! | zero padding up to the data offset | data
//! ```
//! The data offset is the header's length rounded up to 4 KiB when the block holds at least
//! 4 KiB of data (so chunk reads are page-aligned on disk), the header's length otherwise (a
//! small object's block is not doubled by padding).

use std::ops::Range;

/// First bytes of every block file.
const MAGIC: &[u8; 8] = b"MS3BLOCK";
/// Format version; a different one is a miss.
const VERSION: u32 = 2;
/// Bytes of data covered by one checksum.
pub const CHUNK: usize = 4096;
/// Alignment of the data in the file.
const ALIGN: usize = 4096;
/// magic + version + block index + data length + data offset + id length + header crc.
const FIXED_LEN: usize = 8 + 4 + 8 + 4 + 4 + 4 + 4;
/// Offset of the header CRC field.
const CRC_AT: usize = FIXED_LEN - 4;

/// Why a block file was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than its header says, or not a block file of this format.
    Malformed,
    /// A checksum does not match.
    Corrupt,
    /// A valid block of another object version or block index (a hash collision).
    OtherBlock,
}

/// A verified header: where the data is and the checksum of each of its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Offset of the data in the file.
    pub data_at: usize,
    /// Bytes of data.
    pub data_len: usize,
    chunk_crcs: Vec<u32>,
}

fn chunks(data_len: usize) -> usize {
    data_len.div_ceil(CHUNK)
}

fn header_len(id_len: usize, data_len: usize) -> usize {
    FIXED_LEN + id_len + 4 * chunks(data_len)
}

fn data_offset(header_len: usize, data_len: usize) -> usize {
    if data_len >= ALIGN {
        header_len.next_multiple_of(ALIGN)
    } else {
        header_len
    }
}

/// Bytes to read from the start of a block file so that its whole header is in them, for an
/// id of `id_len` bytes and blocks of at most `block_size` bytes.
pub fn max_header_len(id_len: usize, block_size: usize) -> usize {
    header_len(id_len, block_size)
}

/// Serialises everything of a block file before its data (header and padding); the data
/// follows, written from the caller's buffer without being copied into one. `id` names the
/// object version (bucket, key, ETag).
pub fn encode_header(id: &str, index: u64, data: &[u8]) -> Vec<u8> {
    let header_end = header_len(id.len(), data.len());
    let data_at = data_offset(header_end, data.len());
    let mut out = Vec::with_capacity(data_at);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data_at as u32).to_le_bytes());
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // header CRC, filled below
    out.extend_from_slice(id.as_bytes());
    for chunk in data.chunks(CHUNK) {
        out.extend_from_slice(&crc32c::crc32c(chunk).to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(data_at, 0);
    out
}

/// The header at the start of `buf` (which may hold more) if it is the intact header of
/// block `index` of `id`.
pub fn decode_header(buf: &[u8], id: &str, index: u64) -> Result<Header, Rejected> {
    if buf.len() < FIXED_LEN || &buf[..8] != MAGIC {
        return Err(Rejected::Malformed);
    }
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(8) != VERSION {
        return Err(Rejected::Malformed);
    }
    let stored_index = u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes"));
    let data_len = u32_at(20) as usize;
    let data_at = u32_at(24) as usize;
    let id_len = u32_at(28) as usize;
    let stored_crc = u32_at(CRC_AT);
    let end = header_len(id_len, data_len);
    if buf.len() < end || data_at != data_offset(end, data_len) {
        return Err(Rejected::Malformed);
    }
    if crc_skipping_field(&buf[..end], CRC_AT) != stored_crc {
        return Err(Rejected::Corrupt);
    }
    if stored_index != index || &buf[FIXED_LEN..FIXED_LEN + id_len] != id.as_bytes() {
        return Err(Rejected::OtherBlock);
    }
    let chunk_crcs = read_crcs(&buf[FIXED_LEN + id_len..end]);
    Ok(Header {
        data_at,
        data_len,
        chunk_crcs,
    })
}

/// CRC32C of `buf` with the 4-byte CRC field at `field_at` taken as zeros (how a header's
/// own CRC is computed and checked).
pub(super) fn crc_skipping_field(buf: &[u8], field_at: usize) -> u32 {
    let crc = crc32c::crc32c(&buf[..field_at]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[field_at + 4..])
}

/// The little-endian CRCs stored back to back in `bytes`.
pub(super) fn read_crcs(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// Checks `data`, consecutive 4 KiB chunks (the last may be short) starting with chunk
/// number `first`, against `crcs`, one per chunk.
pub(super) fn verify_chunks(crcs: &[u32], first: usize, data: &[u8]) -> Result<(), Rejected> {
    for (n, chunk) in data.chunks(CHUNK).enumerate() {
        let expected = crcs.get(first + n).ok_or(Rejected::Malformed)?;
        if crc32c::crc32c(chunk) != *expected {
            return Err(Rejected::Corrupt);
        }
    }
    Ok(())
}

impl Header {
    /// Length of the whole block file.
    pub fn file_len(&self) -> u64 {
        (self.data_at + self.data_len) as u64
    }

    /// The smallest chunk-aligned range of the data that covers `within` (inside the data).
    pub fn chunk_span(&self, within: Range<usize>) -> Range<usize> {
        let start = within.start / CHUNK * CHUNK;
        let end = within.end.next_multiple_of(CHUNK).min(self.data_len);
        start..end
    }

    /// The CRC32C of each 4 KiB chunk of the data, in order.
    pub fn chunk_crcs(&self) -> &[u32] {
        &self.chunk_crcs
    }

    /// Checks `data`, the bytes of the chunk-aligned span starting at `span_start`.
    pub fn verify(&self, span_start: usize, data: &[u8]) -> Result<(), Rejected> {
        verify_chunks(&self.chunk_crcs, span_start / CHUNK, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole block file: header, padding, data.
    fn encode(id: &str, index: u64, data: &[u8]) -> Vec<u8> {
        let mut out = encode_header(id, index, data);
        out.extend_from_slice(data);
        out
    }

    /// The data of a whole block `file` if it is block `index` of `id`, intact.
    fn decode<'f>(file: &'f [u8], id: &str, index: u64) -> Result<&'f [u8], Rejected> {
        let header = decode_header(file, id, index)?;
        if file.len() as u64 != header.file_len() {
            return Err(Rejected::Malformed);
        }
        let data = &file[header.data_at..];
        header.verify(0, data)?;
        Ok(data)
    }

    #[test]
    fn round_trip() {
        let file = encode("b\0k\0\"e\"", 7, b"payload");
        assert_eq!(decode(&file, "b\0k\0\"e\"", 7).unwrap(), b"payload");
        assert_eq!(decode(&encode("id", 0, b""), "id", 0).unwrap(), b"");
    }

    #[test]
    fn large_blocks_keep_their_data_page_aligned() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let file = encode("id", 1, &data);
        let header = decode_header(&file, "id", 1).unwrap();
        assert_eq!(header.data_at % ALIGN, 0);
        assert_eq!(header.file_len(), file.len() as u64);
        assert_eq!(decode(&file, "id", 1).unwrap(), &data[..]);
        // A small block is not padded.
        let small = encode("id", 1, b"tiny");
        assert_eq!(small.len(), header_len(2, 4) + 4);
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let data: Vec<u8> = (0..2 * CHUNK + 300).map(|i| (i % 13) as u8).collect();
        let good = encode("id", 3, &data);
        let header = decode_header(&good, "id", 3).unwrap();
        for at in 0..good.len() {
            if (header_len(2, data.len())..header.data_at).contains(&at) {
                continue; // padding carries nothing
            }
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad, "id", 3).is_err(), "flip at {at} served");
        }
    }

    #[test]
    fn a_chunk_verifies_alone() {
        let data: Vec<u8> = (0..4 * CHUNK).map(|i| (i % 7) as u8).collect();
        let mut file = encode("id", 0, &data);
        let header = decode_header(&file, "id", 0).unwrap();
        let span = header.chunk_span(CHUNK + 10..CHUNK + 20);
        assert_eq!(span, CHUNK..2 * CHUNK);
        let at = header.data_at;
        header
            .verify(span.start, &file[at + span.start..at + span.end])
            .unwrap();
        // A flip in another chunk does not affect this one; in this one it does.
        file[at + 3 * CHUNK] ^= 1;
        header
            .verify(span.start, &file[at + span.start..at + span.end])
            .unwrap();
        file[at + CHUNK + 5] ^= 1;
        assert_eq!(
            header.verify(span.start, &file[at + span.start..at + span.end]),
            Err(Rejected::Corrupt)
        );
        // The last chunk may be short.
        let header = decode_header(&encode("id", 0, &data[..CHUNK + 1]), "id", 0).unwrap();
        assert_eq!(header.chunk_span(CHUNK..CHUNK + 1), CHUNK..CHUNK + 1);
    }

    #[test]
    fn truncation_and_other_blocks_are_rejected() {
        let good = encode("id", 3, &[5u8; 300]);
        assert_eq!(
            decode(&good[..good.len() - 1], "id", 3),
            Err(Rejected::Malformed)
        );
        assert_eq!(decode(&good, "other", 3), Err(Rejected::OtherBlock));
        assert_eq!(decode(&good, "id", 4), Err(Rejected::OtherBlock));
        assert_eq!(decode(&[], "id", 3), Err(Rejected::Malformed));
        assert_eq!(
            decode_header(&good[..FIXED_LEN + 1], "id", 3),
            Err(Rejected::Malformed)
        );
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        /// A block file is whatever the disk holds: any bytes decode to an error or to the
        /// header of exactly the block asked for, never a panic.
        #[test]
        fn untrusted_block_files_decode_or_are_rejected(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            flip in proptest::prelude::any::<usize>(),
            index in 0u64..4,
        ) {
            let _ = decode_header(&bytes, "id", index);
            let mut good = encode("id", 1, &bytes);
            if !good.is_empty() {
                let at = flip % good.len();
                good[at] ^= 0x5a;
            }
            if let Ok(data) = decode(&good, "id", 1) {
                proptest::prop_assert_eq!(data, &bytes[..], "a changed file served other bytes");
            }
        }
    }
}
