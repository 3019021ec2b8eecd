//! The on-disk format of one cached block: a header naming exactly which bytes these are,
//! the data, and a CRC32C over both. A block that does not decode, is truncated, fails its
//! checksum or names another object is not served.

use bytes::Bytes;

/// First bytes of every block file.
const MAGIC: &[u8; 8] = b"MS3BLOCK";
/// Format version; a different one is a miss.
const VERSION: u32 = 1;
/// magic + version + block index + data length + crc + id length.
const FIXED_LEN: usize = 8 + 4 + 8 + 4 + 4 + 4;
/// Offset of the CRC field inside the header.
const CRC_AT: usize = 8 + 4 + 8 + 4;

/// Serialises a block: `id` names the object version (bucket, key, ETag).
pub fn encode(id: &str, index: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + id.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // CRC, filled below
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(data);
    let crc = checksum(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// CRC32C of a block file with its CRC field taken as zero.
fn checksum(file: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&file[..CRC_AT]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &file[CRC_AT + 4..])
}

/// Why a block file was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than its header says, or not a block file.
    Malformed,
    /// The checksum does not match.
    Corrupt,
    /// A valid block of another object version or block index (a hash collision).
    OtherBlock,
}

/// The data of `file` if it is block `index` of `id`, intact. `file` is kept alive by the
/// returned `Bytes` (no copy).
pub fn decode(file: Bytes, id: &str, index: u64) -> Result<Bytes, Rejected> {
    if file.len() < FIXED_LEN || &file[..8] != MAGIC {
        return Err(Rejected::Malformed);
    }
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(8) != VERSION {
        return Err(Rejected::Malformed);
    }
    let stored_index = u64::from_le_bytes(file[12..20].try_into().expect("8 bytes"));
    let data_len = u32_at(20) as usize;
    let crc = u32_at(CRC_AT);
    let id_len = u32_at(CRC_AT + 4) as usize;
    let data_at = FIXED_LEN + id_len;
    if file.len() != data_at + data_len {
        return Err(Rejected::Malformed);
    }
    if checksum(&file) != crc {
        return Err(Rejected::Corrupt);
    }
    if stored_index != index || &file[FIXED_LEN..data_at] != id.as_bytes() {
        return Err(Rejected::OtherBlock);
    }
    Ok(file.slice(data_at..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let file = Bytes::from(encode("b\0k\0\"e\"", 7, b"payload"));
        assert_eq!(decode(file, "b\0k\0\"e\"", 7).unwrap().as_ref(), b"payload");
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let good = encode("id", 3, &[5u8; 300]);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(
                decode(Bytes::from(bad), "id", 3).is_err(),
                "flip at {at} served"
            );
        }
    }

    #[test]
    fn truncation_and_other_blocks_are_rejected() {
        let good = encode("id", 3, &[5u8; 300]);
        let cut = Bytes::copy_from_slice(&good[..good.len() - 1]);
        assert_eq!(decode(cut, "id", 3), Err(Rejected::Malformed));
        let file = Bytes::from(good);
        assert_eq!(decode(file.clone(), "other", 3), Err(Rejected::OtherBlock));
        assert_eq!(decode(file, "id", 4), Err(Rejected::OtherBlock));
        assert_eq!(decode(Bytes::new(), "id", 3), Err(Rejected::Malformed));
    }
}
