//! POSIX attributes (mode, owner, group, mtime) kept as object user metadata under the names
//! and encodings s3fs writes (`x-amz-meta-mode`, `-uid`, `-gid`, `-mtime`), which rclone
//! reads too: a bucket written by one of them reads the same here, and the other way round.
//!
//! Written: the mode in decimal with its file-type bits (`33188` for a 0644 file, `41471`
//! for a symlink, `16877` for a 0755 directory), uid and gid in decimal, the mtime as
//! `<seconds>` or `<seconds>.<9 digits of nanoseconds>` (never fewer digits: s3fs reads the
//! fraction as a count of nanoseconds). Read: names case-insensitively; the mode in decimal,
//! or in octal where it has a leading `0` or where only an octal reading gives a valid file
//! type (rclone's `100644`); the mtime's fraction as a decimal fraction (rclone's `.5`).
//! A value that does not parse is ignored (the mount's defaults apply), never read as 0.

use std::time::{Duration, SystemTime};

/// The user-metadata names, without `x-amz-meta-`.
pub const MODE: &str = "mode";
/// See [`MODE`].
pub const UID: &str = "uid";
/// See [`MODE`].
pub const GID: &str = "gid";
/// See [`MODE`].
pub const MTIME: &str = "mtime";

/// File-type bits of a mode.
pub const S_IFMT: u32 = 0o170000;
/// A regular file.
pub const S_IFREG: u32 = 0o100000;
/// A directory.
pub const S_IFDIR: u32 = 0o040000;
/// A symbolic link.
pub const S_IFLNK: u32 = 0o120000;

/// What an object's metadata says of its POSIX attributes; each one may be missing (rclone
/// writes only an mtime, s3fs all four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Posix {
    /// Full `st_mode`, file type included when the writer gave it.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Modification time.
    pub mtime: Option<SystemTime>,
}

impl Posix {
    /// The attributes found in user metadata (`get` answers a name, any case); `None` when
    /// none of them is there or parses.
    pub fn from_metadata<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Posix> {
        let mut posix = Posix::default();
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                MODE => posix.mode = decode_mode(value),
                UID => posix.uid = value.trim().parse().ok(),
                GID => posix.gid = value.trim().parse().ok(),
                MTIME => posix.mtime = decode_time(value),
                _ => {}
            }
        }
        (posix != Posix::default()).then_some(posix)
    }

    /// The metadata pairs that store these attributes (only those set).
    pub fn to_metadata(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(mode) = self.mode {
            pairs.push((MODE, mode.to_string()));
        }
        if let Some(uid) = self.uid {
            pairs.push((UID, uid.to_string()));
        }
        if let Some(gid) = self.gid {
            pairs.push((GID, gid.to_string()));
        }
        if let Some(mtime) = self.mtime {
            pairs.push((MTIME, encode_time(mtime)));
        }
        pairs
    }

    /// These attributes, with each one `other` sets taking its place.
    pub fn merged(&self, other: &Posix) -> Posix {
        Posix {
            mode: other.mode.or(self.mode),
            uid: other.uid.or(self.uid),
            gid: other.gid.or(self.gid),
            mtime: other.mtime.or(self.mtime),
        }
    }

    /// Whether the mode says symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode.is_some_and(|m| m & S_IFMT == S_IFLNK)
    }

    /// Whether `name` (any case) is one of the names these attributes are stored under.
    pub fn is_own_name(name: &str) -> bool {
        [MODE, UID, GID, MTIME]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Whether `mode` has no file type or a valid one.
fn valid_type(mode: u32) -> bool {
    mode <= 0o177777
        && matches!(
            mode & S_IFMT,
            0 | S_IFREG | S_IFDIR | S_IFLNK | 0o010000 | 0o020000 | 0o060000 | 0o140000
        )
}

/// A mode as s3fs (decimal; `0…` octal, `0x…` hex) or rclone (octal digits) wrote it.
pub fn decode_mode(value: &str) -> Option<u32> {
    let value = value.trim();
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        return u32::from_str_radix(hex, 16).ok().filter(|m| valid_type(*m));
    }
    if value.len() > 1 && value.starts_with('0') {
        return u32::from_str_radix(value, 8)
            .ok()
            .filter(|m| valid_type(*m));
    }
    if let Some(decimal) = value.parse::<u32>().ok().filter(|m| valid_type(*m)) {
        return Some(decimal);
    }
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| valid_type(*m))
}

/// A time as `<seconds>[.<fraction>]`, the fraction read as a decimal fraction.
pub fn decode_time(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanos: u32 = digits.parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A time as s3fs writes it: `<seconds>`, or `<seconds>.<9 digits>`. Times before 1970 are
/// written as 0.
pub fn encode_time(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    match since.subsec_nanos() {
        0 => since.as_secs().to_string(),
        nanos => format!("{}.{nanos:09}", since.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_s3fs_and_rclone_write_them() {
        assert_eq!(decode_mode("33188"), Some(0o100644)); // s3fs file
        assert_eq!(decode_mode("41471"), Some(0o120777)); // s3fs symlink
        assert_eq!(decode_mode("16877"), Some(0o040755)); // s3fs directory
        assert_eq!(decode_mode("493"), Some(0o755)); // s3fs mkdir, no type
        assert_eq!(decode_mode("100644"), Some(0o100644)); // rclone
        assert_eq!(decode_mode("120777"), Some(0o120777)); // rclone symlink
        assert_eq!(decode_mode("0100755"), Some(0o100755)); // leading zero: octal
        assert_eq!(decode_mode("0x81a4"), Some(0o100644));
        assert_eq!(decode_mode("rw-r--r--"), None);
        assert_eq!(decode_mode("999999999"), None);
        assert_eq!(decode_mode(""), None);
    }

    #[test]
    fn times_keep_nanoseconds_both_ways() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        assert_eq!(encode_time(t), "1700000000.500000000");
        assert_eq!(decode_time("1700000000.500000000"), Some(t));
        assert_eq!(decode_time("1700000000.5"), Some(t)); // rclone trims zeros
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(encode_time(whole), "1700000000");
        assert_eq!(decode_time("1700000000"), Some(whole));
        assert_eq!(
            decode_time("1700000000.1234567891"),
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789))
        );
        assert_eq!(decode_time("2023-11-14T22:13:20Z"), None);
        assert_eq!(decode_time("-5"), None);
        assert_eq!(decode_time(".5"), None);
    }

    #[test]
    fn metadata_round_trips_and_names_are_matched_in_any_case() {
        let posix = Posix {
            mode: Some(0o100755),
            uid: Some(1000),
            gid: Some(100),
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::new(1_650_000_000, 7)),
        };
        let pairs = posix.to_metadata();
        let read = Posix::from_metadata(pairs.iter().map(|(n, v)| (*n, v.as_str())));
        assert_eq!(read, Some(posix));
        let upper = [("Mode", "33188"), ("UID", "5"), ("other", "x")];
        let read = Posix::from_metadata(upper.into_iter()).unwrap();
        assert_eq!(read.mode, Some(0o100644));
        assert_eq!(read.uid, Some(5));
        assert_eq!(read.gid, None);
        assert_eq!(Posix::from_metadata([("other", "x")].into_iter()), None);
        assert_eq!(Posix::from_metadata([("mode", "junk")].into_iter()), None);
    }

    #[test]
    fn merging_keeps_what_the_change_leaves_out() {
        let base = Posix {
            mode: Some(0o100644),
            uid: Some(1),
            gid: Some(2),
            mtime: None,
        };
        let change = Posix {
            mode: Some(0o100755),
            ..Posix::default()
        };
        let merged = base.merged(&change);
        assert_eq!(merged.mode, Some(0o100755));
        assert_eq!((merged.uid, merged.gid), (Some(1), Some(2)));
        assert!(!merged.is_symlink());
        assert!(
            Posix {
                mode: Some(0o120777),
                ..Posix::default()
            }
            .is_symlink()
        );
    }

    proptest::proptest! {
        /// Metadata is written by anyone: whatever the values, reading them never panics,
        /// a mode read is one a file can have, and a time read is one SystemTime holds.
        #[test]
        fn any_metadata_reads_without_panic(
            mode in "\\PC{0,24}|[0-9]{1,24}|0x[0-9a-fA-F]{1,12}|0[0-7]{1,12}",
            time in "\\PC{0,24}|[0-9]{1,24}(\\.[0-9]{0,30})?",
            uid in "\\PC{0,12}|-?[0-9]{1,12}",
        ) {
            let pairs = [("Mode", mode.as_str()), ("x-amz-meta-mtime", time.as_str()),
                ("mtime", time.as_str()), ("UID", uid.as_str()), ("gid", uid.as_str())];
            if let Some(posix) = Posix::from_metadata(pairs.iter().copied()) {
                if let Some(m) = posix.mode {
                    proptest::prop_assert!(valid_type(m), "{m:o}");
                }
                let _ = posix.to_metadata();
            }
            if let Some(t) = decode_time(&time) {
                proptest::prop_assert!(t >= SystemTime::UNIX_EPOCH);
                proptest::prop_assert_eq!(decode_time(&encode_time(t)), Some(t));
            }
        }
    }
}
