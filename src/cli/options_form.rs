//! Mountpoint's "alternative fstab style", `mount-s3 BUCKET DIRECTORY -o OPTIONS`, turned into
//! the ordinary command line: each comma-separated option becomes `--option` (`ro` becomes
//! `--read-only`), options that only matter to mount(8) and systemd are dropped, and
//! Mountpoint's escaping holds (`\,` `\"` `\\`; a bare `"` is an error). mount(8)'s own helper,
//! `mount.mount-s3`, is `fstab.rs`.

use std::ffi::OsString;

/// Options mount(8), systemd and FUSE pass that mean nothing to the mount, and the
/// defaults that are ours anyway (`rw`, `nodev`, `nosuid`), as Mountpoint drops them.
const DROPPED: &[&str] = &[
    "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "rw", "nodev", "nosuid",
];

/// The ordinary command line for `argv` if it is in the `-o` form; `None` if it is not;
/// an error (one line) if it is but an option is not acceptable.
pub fn translate(argv: &[OsString]) -> Option<Result<Vec<OsString>, String>> {
    let words: Vec<&str> = argv
        .iter()
        .map(|a| a.to_str())
        .collect::<Option<Vec<_>>>()?;
    let (program, rest) = words.split_first()?;
    let [bucket, directory, options @ ..] = rest else {
        return None;
    };
    if bucket.starts_with('-') || directory.starts_with('-') || options.is_empty() {
        return None;
    }
    let mut lists = Vec::new();
    for pair in options.chunks(2) {
        match pair {
            ["-o", list] => lists.push(*list),
            _ => return None,
        }
    }
    Some(translate_lists(program, bucket, directory, &lists))
}

fn translate_lists(
    program: &str,
    bucket: &str,
    directory: &str,
    lists: &[&str],
) -> Result<Vec<OsString>, String> {
    let mut options = Vec::new();
    for list in lists {
        options.extend(split_options(list)?);
    }
    if let Some(dashed) = options.iter().find(|o| o.starts_with('-')) {
        return Err(format!(
            "option '{}': options after -o are written without '--'",
            dashed.escape_debug()
        ));
    }
    let has = |name: &str| options.iter().any(|o| o == name);
    if has("ro") && has("rw") {
        return Err("options 'ro' and 'rw' cannot be used together".into());
    }
    if has("foreground") {
        return Err("option 'foreground' cannot be used after -o".into());
    }
    if has("read-only") {
        return Err("option 'read-only' cannot be used after -o; use 'ro'".into());
    }
    let mut argv: Vec<OsString> = vec![program.into(), bucket.into(), directory.into()];
    for option in options {
        if option.is_empty() || DROPPED.contains(&option.as_str()) || option.starts_with("x-") {
            continue;
        }
        argv.push(match option.as_str() {
            "ro" => "--read-only".into(),
            _ => format!("--{option}").into(),
        });
    }
    Ok(argv)
}

/// Splits on commas, with `\,`, `\"` and `\\` standing for themselves; any other escape,
/// a trailing `\` or a bare `"` is an error.
fn split_options(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ (',' | '"' | '\\')) => current.push(e),
                Some(other) => {
                    return Err(format!(
                        "in -o {}: '\\{}' is not an escape (only \\, \\\" and \\\\ are)",
                        list.escape_debug(),
                        other.escape_debug()
                    ));
                }
                None => {
                    return Err(format!(
                        "in -o {}: a '\\' ends the options",
                        list.escape_debug()
                    ));
                }
            },
            '"' => {
                return Err(format!(
                    "in -o {}: a '\"' must be escaped as \\\"",
                    list.escape_debug()
                ));
            }
            ',' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&str]) -> Option<Result<Vec<String>, String>> {
        let argv: Vec<OsString> = words.iter().map(OsString::from).collect();
        translate(&argv)
            .map(|r| r.map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect()))
    }

    #[test]
    fn mountpoints_fstab_form_becomes_flags() {
        let ok = |opts: &str| run(&["mount-s3", "bkt", "/mnt/t", "-o", opts]).unwrap();
        assert_eq!(ok("").unwrap(), ["mount-s3", "bkt", "/mnt/t"]);
        assert_eq!(
            ok("_netdev,nosuid,nodev,nofail,rw").unwrap(),
            ["mount-s3", "bkt", "/mnt/t"]
        );
        assert_eq!(
            ok("ro,uid=2,gid=4,debug,x-systemd.automount").unwrap(),
            [
                "mount-s3",
                "bkt",
                "/mnt/t",
                "--read-only",
                "--uid=2",
                "--gid=4",
                "--debug"
            ]
        );
        assert_eq!(
            ok("prefix=foo/bar\\,baz/").unwrap(),
            ["mount-s3", "bkt", "/mnt/t", "--prefix=foo/bar,baz/"]
        );
        assert_eq!(
            ok("user-agent-prefix=a\\\"b\\\\c").unwrap(),
            ["mount-s3", "bkt", "/mnt/t", "--user-agent-prefix=a\"b\\c"]
        );
        let twice = run(&["m", "bkt", "/d", "-o", "ro", "-o", "allow-delete"]).unwrap();
        assert_eq!(
            twice.unwrap(),
            ["m", "bkt", "/d", "--read-only", "--allow-delete"]
        );
        for bad in [
            "--uid=2",
            "ro,rw",
            "foreground",
            "read-only",
            "ends,with,\\",
            "random,\"quotes\"",
            "\\e\\scaped",
        ] {
            let err = ok(bad).unwrap_err();
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn other_command_lines_are_left_alone() {
        for words in [
            &["mount-s3", "bkt", "/m"][..],
            &["mount-s3", "--read-only", "bkt", "/m"],
            &["mount-s3", "bkt", "/m", "--debug"],
            &["mount-s3", "bkt", "/m", "-o"],
            &["mount-s3", "bkt", "/m", "-o", "ro", "--debug"],
            &["mount-s3"],
        ] {
            assert!(run(words).is_none(), "{words:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        #[test]
        fn untrusted_option_lists_never_panic(list in ".{0,40}", more in proptest::option::of(".{0,10}")) {
            let mut words = vec!["mount-s3", "bkt", "/m", "-o", list.as_str()];
            if let Some(more) = &more {
                words.extend(["-o", more.as_str()]);
            }
            if let Some(Err(e)) = run(&words) {
                proptest::prop_assert!(!e.contains('\n'));
            }
        }
    }
}
