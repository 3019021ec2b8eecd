//! Mountpoint's unstable tuning variables (`UNSTABLE_MOUNTPOINT_*`). Those that tune what
//! mount-s3 also tunes are read with Mountpoint's meaning: the FUSE background queue
//! (`MAX_BACKGROUND`, `CONGESTION_THRESHOLD`), the largest prefetch window
//! (`MAX_PREFETCH_WINDOW_SIZE`) and the PID file (`PID_FILE`, read in `main`). Every other
//! one that is set is named in a warning at start-up: none is ignored silently.

/// The variable naming a file to write the serving process's pid to, as Mountpoint's.
pub const PID_FILE_VARIABLE: &str = "UNSTABLE_MOUNTPOINT_PID_FILE";

const MAX_BACKGROUND: &str = "UNSTABLE_MOUNTPOINT_MAX_BACKGROUND";
const CONGESTION_THRESHOLD: &str = "UNSTABLE_MOUNTPOINT_CONGESTION_THRESHOLD";
const MAX_PREFETCH_WINDOW: &str = "UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE";

/// Why a variable that is set is not read, for the ones Mountpoint has and we do not need.
fn unread_reason(name: &str) -> &'static str {
    match name {
        "UNSTABLE_MOUNTPOINT_DISABLE_CACHE_CLEANUP" => {
            "mount-s3 never empties the cache directory at mount, so there is nothing to disable"
        }
        "UNSTABLE_MOUNTPOINT_CACHE_KEY" => {
            "the cache's blocks are keyed by bucket, key, ETag and block size; no extra key is used"
        }
        "UNSTABLE_MOUNTPOINT_CLONE_FUSE_FD" => {
            "every dispatch thread already reads its own cloned /dev/fuse descriptor"
        }
        _ => "not a variable mount-s3 knows (see README)",
    }
}

/// What the variables set, as read by [`read`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    /// The kernel's most background FUSE requests in flight (default 64).
    pub max_background: Option<u16>,
    /// Background requests at which the kernel counts the mount congested (default 3/4 of
    /// the above).
    pub congestion_threshold: Option<u16>,
    /// Most bytes one reader prefetches ahead (ours is sized by `--memory-target`; this caps
    /// it, though never below two parts).
    pub max_prefetch_window: Option<u64>,
    /// One line per variable that is set but not used (or not usable), for the log.
    pub warnings: Vec<String>,
}

/// Reads the `UNSTABLE_MOUNTPOINT_*` variables among `vars`. An unreadable FUSE queue size
/// is refused (one line; Mountpoint stops there too); an unreadable window is warned about
/// and the default kept, as Mountpoint does.
pub fn read(vars: impl IntoIterator<Item = (String, String)>) -> Result<Tuning, String> {
    let mut tuning = Tuning::default();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with("UNSTABLE_MOUNTPOINT_"))
        .collect();
    vars.sort();
    let queue_size = |name: &str, value: &str| match value.trim().parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{name}={value}: must be a whole number from 1 to 65535"
        )),
    };
    for (name, value) in vars {
        match name.as_str() {
            PID_FILE_VARIABLE => {}
            MAX_BACKGROUND => tuning.max_background = Some(queue_size(&name, &value)?),
            CONGESTION_THRESHOLD => {
                tuning.congestion_threshold = Some(queue_size(&name, &value)?);
            }
            MAX_PREFETCH_WINDOW => match value.trim().parse::<u64>() {
                Ok(bytes) if bytes > 0 => tuning.max_prefetch_window = Some(bytes),
                _ => tuning.warnings.push(format!(
                    "{name}={value} is not a positive number of bytes; the default window is kept"
                )),
            },
            other => tuning.warnings.push(format!(
                "{other} is set but not read: {}",
                unread_reason(other)
            )),
        }
    }
    Ok(tuning)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn what_we_tune_is_read_and_the_rest_named() {
        let tuning = read(vars(&[
            ("MOUNTPOINT_LOG", "trace"),
            ("PATH", "/bin"),
            (PID_FILE_VARIABLE, "/run/x"),
            (MAX_BACKGROUND, "128"),
            (CONGESTION_THRESHOLD, " 100"),
            (MAX_PREFETCH_WINDOW, "16777216"),
            ("UNSTABLE_MOUNTPOINT_CACHE_KEY", "k"),
            ("UNSTABLE_MOUNTPOINT_SOMETHING_NEW", "1"),
        ]))
        .unwrap();
        assert_eq!(tuning.max_background, Some(128));
        assert_eq!(tuning.congestion_threshold, Some(100));
        assert_eq!(tuning.max_prefetch_window, Some(16 << 20));
        assert_eq!(tuning.warnings.len(), 2, "{:?}", tuning.warnings);
        assert!(tuning.warnings[0].starts_with("UNSTABLE_MOUNTPOINT_CACHE_KEY is set"));
        assert!(tuning.warnings[1].starts_with("UNSTABLE_MOUNTPOINT_SOMETHING_NEW is set"));
        assert_eq!(read(vars(&[("HOME", "/root")])).unwrap(), Tuning::default());
    }

    #[test]
    fn bad_values_are_refused_or_warned_about() {
        for bad in ["0", "-1", "65536", "lots", ""] {
            let err = read(vars(&[(MAX_BACKGROUND, bad)])).unwrap_err();
            assert!(err.starts_with(MAX_BACKGROUND), "{err}");
            assert!(!err.contains('\n'));
            assert!(read(vars(&[(CONGESTION_THRESHOLD, bad)])).is_err());
        }
        let tuning = read(vars(&[(MAX_PREFETCH_WINDOW, "big")])).unwrap();
        assert_eq!(tuning.max_prefetch_window, None);
        assert_eq!(tuning.warnings.len(), 1);
    }
}
