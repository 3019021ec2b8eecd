//! How S3 keys become file names, and which keys cannot be shown.
//!
//! A directory is a key prefix ending in `/`. Under it, an object key whose rest holds no `/`
//! is a file, and a common prefix is a subdirectory. Names that POSIX cannot carry (`.`, `..`,
//! empty components from `//`, over 255 bytes, containing NUL) are hidden: they never appear
//! in a listing and never resolve, and they never break the listing around them.

/// Longest file name Linux accepts (NAME_MAX), in bytes.
pub const NAME_MAX: usize = 255;

/// What a name under a directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An object.
    File,
    /// A common prefix (implicit directory) or a `name/` marker object.
    Dir,
}

/// Whether `name` can be shown as one path component.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('/')
        && !name.contains('\0')
}

/// Checks a name a program wants to create: EINVAL for names S3 keys cannot carry as one
/// component, ENAMETOOLONG past NAME_MAX.
pub fn check_new_name(name: &str) -> Result<(), super::FsError> {
    if name.len() > NAME_MAX {
        return Err(super::FsError::NameTooLong);
    }
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(super::FsError::InvalidArgument("not a valid file name"))
    }
}

/// The key of `name` inside the directory whose prefix is `dir_prefix` (empty or ending in `/`).
pub fn child_key(dir_prefix: &str, name: &str) -> String {
    format!("{dir_prefix}{name}")
}

/// The prefix of the directory `name` inside the directory `dir_prefix`.
pub fn child_prefix(dir_prefix: &str, name: &str) -> String {
    format!("{dir_prefix}{name}/")
}

/// The file name an object key shows as inside `dir_prefix`, if it shows at all.
/// The directory's own marker object (key == prefix) is not an entry.
pub fn file_name<'a>(dir_prefix: &str, key: &'a str) -> Option<&'a str> {
    let rest = key.strip_prefix(dir_prefix)?;
    is_valid_name(rest).then_some(rest)
}

/// The directory name a common prefix (ending in `/`) shows as inside `dir_prefix`.
pub fn dir_name<'a>(dir_prefix: &str, common_prefix: &'a str) -> Option<&'a str> {
    let rest = common_prefix.strip_prefix(dir_prefix)?.strip_suffix('/')?;
    is_valid_name(rest).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name("...")); // only `.` and `..` are special
        assert!(is_valid_name(&"x".repeat(NAME_MAX)));
        assert!(is_valid_name("ünïcode 名前"));
    }

    #[test]
    fn invalid_names() {
        for name in ["", ".", "..", "a/b", "nul\0byte"] {
            assert!(!is_valid_name(name), "{name:?} should be hidden");
        }
        assert!(!is_valid_name(&"x".repeat(NAME_MAX + 1)));
    }

    #[test]
    fn keys_to_file_names() {
        assert_eq!(file_name("d/", "d/f"), Some("f"));
        assert_eq!(file_name("", "f"), Some("f"));
        assert_eq!(
            file_name("d/", "d/"),
            None,
            "a marker is not an entry of its own dir"
        );
        assert_eq!(file_name("d/", "d/."), None);
        assert_eq!(file_name("d/", "e/f"), None);
    }

    #[test]
    fn prefixes_to_dir_names() {
        assert_eq!(dir_name("", "a/"), Some("a"));
        assert_eq!(dir_name("a/", "a/b/"), Some("b"));
        assert_eq!(dir_name("a/", "a//"), None, "empty component from a//b");
        assert_eq!(dir_name("a/", "a/../"), None);
        assert_eq!(dir_name("a/", "a/b"), None, "not a prefix");
    }

    #[test]
    fn keys_compose() {
        assert_eq!(child_key("a/", "b"), "a/b");
        assert_eq!(child_prefix("", "b"), "b/");
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        #[test]
        fn untrusted_keys_become_valid_names_or_none(prefix in "([a-z]{0,3}/){0,2}", key in "\\PC{0,30}|[a/.]{0,8}") {
            let key = format!("{prefix}{key}");
            if let Some(name) = file_name(&prefix, &key) {
                proptest::prop_assert!(is_valid_name(name), "{:?}", name);
            }
            if let Some(name) = dir_name(&prefix, &key) {
                proptest::prop_assert!(is_valid_name(name), "{:?}", name);
            }
            let _ = check_new_name(&key);
        }
    }
}
