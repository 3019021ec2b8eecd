//! Log files in `--log-directory`: named as Mountpoint names them, created exclusively
//! (never an existing file, never through a symlink planted under the name), mode 0640.

use std::io;
use std::path::Path;

/// Creates a new log file in `dir`, named as Mountpoint names them
/// (`mountpoint-s3-YYYY-MM-DDTHH-MM-SSZ.<random>.log`), readable by the owner's group only
/// (0640), exclusively (never an existing file) and never through a symlink planted under a
/// predictable name.
pub(super) fn create_log_file(
    dir: &Path,
    now: std::time::SystemTime,
) -> io::Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let stamp = utc_stamp(now);
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..8 {
        let path = dir.join(format!("mountpoint-s3-{stamp}.{}.log", random_suffix()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Six random lowercase letters and digits.
fn random_suffix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = [
            nanos as u8,
            (nanos >> 8) as u8,
            (nanos >> 16) as u8,
            1,
            2,
            3,
        ];
    }
    bytes
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

/// `now` as `YYYY-MM-DDTHH-MM-SSZ` in UTC.
fn utc_stamp(now: std::time::SystemTime) -> String {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stamps_are_utc_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970-01-01T00-00-00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(utc_stamp(leap), "2000-02-29T01-02-03Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_796_170_800); // 2026-12-02 00:20:00
        assert_eq!(utc_stamp(later), "2026-12-02T00-20-00Z");
    }

    #[test]
    fn log_files_are_new_private_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _file) = create_log_file(dir.path(), std::time::SystemTime::now()).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("mountpoint-s3-") && name.ends_with(".log"),
            "{name}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");
        // A planted symlink under the same name is never opened through.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        assert!(opened.is_err(), "the name is taken, so a new one is chosen");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
