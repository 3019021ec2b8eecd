//! mount(8)'s helper: `mount.mount-s3 SOURCE DIRECTORY [-s] [-f] [-n] [-v] -o OPTIONS`, the
//! command mount(8) runs for an `/etc/fstab` line of type `mount-s3`, turned into mount-s3's
//! own command line.
//!
//! ```text
//! s3://my-bucket/prefix/  /mnt/data  mount-s3  _netdev,nofail,rw,allow-delete,uid=1000  0 0
//! ```
//!
//! becomes `mount-s3 --prefix prefix/ --allow-delete --uid 1000 -- my-bucket /mnt/data`.
//! Every long flag of [`Args`] is an option (`allow-delete`, `metadata-ttl=60`, `_` for `-`
//! accepted), `ro` is `--read-only`, and mount(8)'s generic options are accepted and ignored.
//!
//! Not here: what the flags mean (`cli`), or mounting (`main`). The translation is pure, so
//! every fstab spelling is unit tested without a mount.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::Path;

use clap::{CommandFactory, Parser};

use crate::cli::Args;
use crate::logging::one_line;

/// The file name mount(8) looks for: `mount.` + the fstab type.
pub const HELPER_NAME: &str = "mount.mount-s3";

/// How the helper is called, for error messages.
const USAGE: &str = "usage: mount.mount-s3 SOURCE DIRECTORY [-o OPTIONS] [-s] [-f] [-n] [-v]";

/// mount(8)'s generic options, accepted and ignored. mount-s3 always mounts
/// `nosuid,nodev,noatime`, so those and their opposites change nothing (a mount never grants
/// set-uid bits or device files, whatever the line says); `_netdev`, `nofail`, `[no]auto` and
/// `[no]user[s]` are for mount(8) and systemd, which act on them before the helper runs.
/// `x-*` and `comment=*` are ignored too. `noexec` is applied (`--noexec`), `exec` undoes it.
const GENERIC_OPTIONS: &[&str] = &[
    "_netdev", "nofail", "noauto", "auto", "user", "nouser", "users", "owner", "group", "defaults",
    "nosuid", "nodev", "suid", "dev", "noatime", "relatime", "async",
];

/// Flags that cannot be fstab options, and why.
const REFUSED_OPTIONS: &[(&str, &str)] = &[
    (
        "foreground",
        "mount(8) waits for its helper to exit, so a foreground mount would hang it",
    ),
    ("help", "run mount-s3 --help instead"),
    ("version", "run mount-s3 --version instead"),
];

/// Whether `argv0` (the program name) is the mount(8) helper's.
pub fn is_helper(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(HELPER_NAME))
}

/// What `main` does with a command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Parse and run this `mount-s3` command line.
    Run(Vec<OsString>),
    /// Exit now with this status (helper errors, and `-f`, mount(8)'s fake mount).
    Exit(u8),
}

/// Leaves an ordinary command line as it is; turns the helper's into mount-s3's, writing its
/// warnings and errors (one line each) to `stderr`. `-f` checks everything that needs no
/// network, as [`Args::validate`] does, and exits 0 without mounting.
pub fn dispatch(argv: Vec<OsString>, stderr: &mut dyn Write) -> Dispatch {
    if !argv.first().is_some_and(|a| is_helper(a)) {
        return Dispatch::Run(argv);
    }
    let command = match HelperCommand::parse(&argv[1..]) {
        Ok(command) => command,
        Err(message) => {
            let _ = writeln!(stderr, "{HELPER_NAME}: {}", one_line(&message));
            return Dispatch::Exit(2);
        }
    };
    for option in &command.ignored {
        let _ = writeln!(
            stderr,
            "{HELPER_NAME}: ignoring unknown option '{}' (-s)",
            one_line(option)
        );
    }
    if command.verbose {
        let _ = writeln!(stderr, "{HELPER_NAME}: {}", one_line(&command.shown()));
    }
    if !command.fake {
        return Dispatch::Run(command.argv);
    }
    let mut args = match Args::try_parse_from(&command.argv) {
        Ok(args) => args,
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid options");
            let _ = writeln!(
                stderr,
                "{HELPER_NAME}: {}",
                one_line(first.trim_start_matches("error: "))
            );
            return Dispatch::Exit(2);
        }
    };
    match args.validate() {
        Ok(()) => Dispatch::Exit(0),
        Err(message) => {
            let _ = writeln!(stderr, "{HELPER_NAME}: {}", one_line(&message));
            Dispatch::Exit(1)
        }
    }
}

/// The helper's command line, translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperCommand {
    /// `mount-s3 [FLAGS] -- BUCKET DIRECTORY`.
    pub argv: Vec<OsString>,
    /// `-f`: check, do not mount.
    pub fake: bool,
    /// `-v`: say what runs.
    pub verbose: bool,
    /// Unknown options skipped because of `-s`.
    pub ignored: Vec<String>,
}

impl HelperCommand {
    /// Parses `SOURCE DIRECTORY [-o OPTIONS]... [-s] [-f] [-n] [-v] [-t TYPE]` (in any order;
    /// short flags may be grouped, `-oOPTIONS` is `-o OPTIONS`). The error is one line.
    pub fn parse(args: &[OsString]) -> Result<Self, String> {
        let mut positional: Vec<&OsString> = Vec::new();
        let mut options: Vec<String> = Vec::new();
        let (mut fake, mut verbose, mut sloppy) = (false, false, false);
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Some(text) = arg.to_str().filter(|t| t.starts_with('-') && t.len() > 1) else {
                positional.push(arg);
                continue;
            };
            if text == "--" {
                positional.extend(rest.by_ref());
                break;
            }
            let letters = &text[1..];
            if let Some(attached) = letters.strip_prefix('o').or(letters.strip_prefix('t')) {
                let value = if attached.is_empty() {
                    let value = rest
                        .next()
                        .ok_or_else(|| format!("{text} needs a value; {USAGE}"))?;
                    value
                        .to_str()
                        .ok_or_else(|| format!("{text} value is not UTF-8"))?
                        .to_string()
                } else {
                    attached.to_string()
                };
                // -t TYPE: mount(8) passes the type (or type.subtype); it is always ours.
                if letters.starts_with('o') {
                    options.push(value);
                }
                continue;
            }
            for letter in letters.chars() {
                match letter {
                    'f' => fake = true,
                    'v' => verbose = true,
                    's' => sloppy = true,
                    // -n: do not write /etc/mtab; there is none to write.
                    'n' => {}
                    _ => return Err(format!("unknown argument '{text}'; {USAGE}")),
                }
            }
        }
        let [source, directory] = positional[..] else {
            return Err(format!(
                "expected a source and a directory, got {} arguments; {USAGE}",
                positional.len()
            ));
        };
        let source = source
            .to_str()
            .ok_or_else(|| format!("source {source:?} is not UTF-8"))?;
        let (bucket, prefix) = parse_source(source)?;
        let mut translated = Translation::default();
        if let Some(prefix) = prefix {
            translated.source_prefix = true;
            translated.set("prefix", Some(prefix));
        }
        let mut ignored = Vec::new();
        for option in options.iter().flat_map(|o| split_options(o)) {
            match translated.add(&option) {
                Ok(()) => {}
                Err(OptionError::Unknown) if sloppy => ignored.push(option),
                Err(OptionError::Unknown) => {
                    return Err(format!(
                        "unknown option '{option}': use a mount-s3 flag without its dashes \
                         (allow-delete, uid=1000) or a generic mount option (see mount-s3(8))"
                    ));
                }
                Err(OptionError::Invalid(message)) => return Err(message),
            }
        }
        let mut argv: Vec<OsString> = vec!["mount-s3".into()];
        argv.extend(translated.flags());
        argv.push("--".into());
        argv.push(bucket.into());
        argv.push(directory.clone());
        Ok(Self {
            argv,
            fake,
            verbose,
            ignored,
        })
    }

    /// The command line, for `-v`.
    pub fn shown(&self) -> String {
        let words: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                let a = a.to_string_lossy();
                if !a.is_empty()
                    && a.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
                {
                    a.into_owned()
                } else {
                    format!("'{}'", a.replace('\'', r"'\''"))
                }
            })
            .collect();
        words.join(" ")
    }
}

/// `s3://BUCKET[/PREFIX]` (the prefix gets its trailing `/` if it lacks one), or a bucket
/// name (or access point ARN) as it is.
pub fn parse_source(source: &str) -> Result<(String, Option<String>), String> {
    let Some(rest) = source.strip_prefix("s3://") else {
        if source.contains("://") || source.is_empty() {
            return Err(format!(
                "source '{source}' must be s3://BUCKET/PREFIX/ or a bucket name"
            ));
        }
        return Ok((source.to_string(), None));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("source '{source}' names no bucket"));
    }
    let prefix = match prefix {
        "" => None,
        p if p.ends_with('/') => Some(p.to_string()),
        p => Some(format!("{p}/")),
    };
    Ok((bucket.to_string(), prefix))
}

/// Splits `-o`'s list on commas, except inside double quotes (`opt="a,b"`, as libmount
/// allows); drops empty items.
pub fn split_options(list: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in list.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    items.retain(|i| !i.is_empty());
    items
}

enum OptionError {
    /// Neither a flag nor a generic mount option.
    Unknown,
    /// A flag, wrongly used: the message says how.
    Invalid(String),
}

/// The flags built from the options so far. A repeated option replaces the earlier one
/// (mount(8)'s rule: the last one wins), and so does `ro` after `rw`.
#[derive(Default)]
struct Translation {
    /// Long flag name → value (`None` for switches), sorted by name.
    flags: BTreeMap<String, Option<String>>,
    /// Whether the prefix came from the source (so a `prefix=` option conflicts).
    source_prefix: bool,
}

impl Translation {
    fn set(&mut self, flag: &str, value: Option<String>) {
        self.flags.insert(flag.to_string(), value);
    }

    fn add(&mut self, option: &str) -> Result<(), OptionError> {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(unquote(value).to_string())),
            None => (option, None),
        };
        match option {
            "ro" => {
                self.set("read-only", None);
                return Ok(());
            }
            "rw" => {
                self.flags.remove("read-only");
                return Ok(());
            }
            "exec" => {
                self.flags.remove("noexec");
                return Ok(());
            }
            _ => {}
        }
        if GENERIC_OPTIONS.contains(&name) || name.starts_with("x-") || name == "comment" {
            return Ok(());
        }
        let flag = name.replace('_', "-");
        if let Some((_, why)) = REFUSED_OPTIONS.iter().find(|(f, _)| *f == flag) {
            return Err(OptionError::Invalid(format!(
                "option '{name}' cannot be used in fstab: {why}"
            )));
        }
        let Some(takes_value) = flag_takes_value(&flag) else {
            return Err(OptionError::Unknown);
        };
        match (takes_value, value) {
            (true, None) => Err(OptionError::Invalid(format!(
                "option '{name}' needs a value: {name}=..."
            ))),
            (false, Some(_)) => Err(OptionError::Invalid(format!(
                "option '{name}' takes no value: write {name} alone"
            ))),
            (true, Some(_)) if flag == "prefix" && self.source_prefix => Err(OptionError::Invalid(
                "the prefix is given twice: in the source (s3://BUCKET/PREFIX/) and as \
                     prefix=; keep one"
                    .to_string(),
            )),
            (_, value) => {
                self.set(&flag, value);
                Ok(())
            }
        }
    }

    fn flags(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        for (flag, value) in &self.flags {
            out.push(format!("--{flag}").into());
            if let Some(value) = value {
                out.push(value.into());
            }
        }
        out
    }
}

/// `"value"` → `value`.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Whether mount-s3 has the long flag `--name`, and whether it takes a value. Read from the
/// clap definition, so a new flag is an fstab option without a change here.
fn flag_takes_value(name: &str) -> Option<bool> {
    Args::command()
        .get_arguments()
        .filter(|a| !a.is_positional())
        .find(|a| a.get_long() == Some(name))
        .map(|a| a.get_action().takes_values())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn translate(args: &[&str]) -> Result<Vec<String>, String> {
        HelperCommand::parse(&os(args)).map(|c| {
            c.argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn helper_name_is_recognised_by_file_name() {
        assert!(is_helper(OsStr::new("/sbin/mount.mount-s3")));
        assert!(is_helper(OsStr::new("mount.mount-s3")));
        assert!(!is_helper(OsStr::new("/usr/bin/mount-s3")));
        assert!(!is_helper(OsStr::new("/sbin/mount.mount-s3x")));
    }

    #[test]
    fn the_documented_fstab_line() {
        let argv = translate(&[
            "s3://my-bucket/prefix/",
            "/mnt/data",
            "-o",
            "_netdev,nosuid,nodev,nofail,rw,allow-delete,uid=1000",
        ])
        .unwrap();
        assert_eq!(
            argv,
            [
                "mount-s3",
                "--allow-delete",
                "--prefix",
                "prefix/",
                "--uid",
                "1000",
                "--",
                "my-bucket",
                "/mnt/data"
            ]
        );
        // And it parses as mount-s3's own command line.
        let args = Args::try_parse_from(&argv).unwrap();
        assert_eq!(args.bucket, "my-bucket");
        assert_eq!(args.prefix.as_deref(), Some("prefix/"));
        assert!(args.allow_delete && !args.read_only && !args.foreground);
        assert_eq!(args.uid, Some(1000));
    }

    #[test]
    fn sources() {
        assert_eq!(parse_source("bucket").unwrap(), ("bucket".into(), None));
        assert_eq!(
            parse_source("s3://bucket").unwrap(),
            ("bucket".into(), None)
        );
        assert_eq!(
            parse_source("s3://bucket/").unwrap(),
            ("bucket".into(), None)
        );
        assert_eq!(
            parse_source("s3://bucket/a/b").unwrap(),
            ("bucket".into(), Some("a/b/".into()))
        );
        assert_eq!(
            parse_source("s3://bucket/a/b/").unwrap(),
            ("bucket".into(), Some("a/b/".into()))
        );
        let arn = "arn:aws:s3:us-east-1:123456789012:accesspoint/ap";
        assert_eq!(parse_source(arn).unwrap(), (arn.into(), None));
        for bad in ["s3://", "s3:///prefix/", "http://bucket/", ""] {
            let err = parse_source(bad).unwrap_err();
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn every_flag_is_an_option_with_underscores_too() {
        let argv = translate(&[
            "bkt",
            "/m",
            "-o",
            "read_only,allow-overwrite,metadata-ttl=60,endpoint_url=http://127.0.0.1:8333,\
             force-path-style,gid=7,dir-mode=0700,file_mode=0600,part-size=16777216,\
             upload-checksums=off,region=eu-west-1,profile=prod,debug,log-directory=/var/log/s3,\
             max-threads=4,allow_other,auto-unmount,memory-target=256,no-sign-request",
        ])
        .unwrap();
        let args = Args::try_parse_from(&argv).unwrap();
        assert!(args.read_only && args.allow_overwrite && args.force_path_style);
        assert!(args.allow_other && args.auto_unmount && args.debug && args.no_sign_request);
        assert_eq!(args.endpoint_url.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(
            args.metadata_ttl,
            Some(crate::cli::values::Ttl::Seconds(60))
        );
        assert_eq!(
            (args.gid, args.dir_mode, args.file_mode),
            (Some(7), 0o700, 0o600)
        );
        assert_eq!((args.part_size, args.max_threads), (16 * 1024 * 1024, 4));
        assert_eq!(args.upload_checksums.as_deref(), Some("off"));
        assert_eq!(args.region.as_deref(), Some("eu-west-1"));
        assert_eq!(args.profile.as_deref(), Some("prod"));
        assert_eq!(args.memory_target, Some(256));
        assert_eq!(
            args.log_directory.as_deref(),
            Some(Path::new("/var/log/s3"))
        );
    }

    #[test]
    fn ro_and_rw_last_one_wins() {
        let read_only = |opts: &str| {
            let argv = translate(&["bkt", "/m", "-o", opts]).unwrap();
            Args::try_parse_from(&argv).unwrap().read_only
        };
        assert!(read_only("ro"));
        assert!(!read_only("rw"));
        assert!(read_only("rw,ro"));
        assert!(!read_only("ro,rw"));
        assert!(read_only("ro,read-only"));
        assert!(!read_only("defaults"));
    }

    #[test]
    fn generic_options_are_ignored() {
        let argv = translate(&[
            "bkt",
            "/m",
            "-o",
            "_netdev,nofail,noauto,auto,user,nouser,users,owner,group,defaults,nosuid,nodev,\
             suid,dev,noatime,relatime,async,x-systemd.automount,\
             x-systemd.requires=network-online.target,comment=\"a, b\"",
        ])
        .unwrap();
        assert_eq!(argv, ["mount-s3", "--", "bkt", "/m"]);
    }

    #[test]
    fn noexec_is_applied_and_exec_undoes_it() {
        let argv = translate(&["bkt", "/m", "-o", "nosuid,noexec,nodev"]).unwrap();
        assert_eq!(argv, ["mount-s3", "--noexec", "--", "bkt", "/m"]);
        let argv = translate(&["bkt", "/m", "-o", "noexec,exec"]).unwrap();
        assert_eq!(argv, ["mount-s3", "--", "bkt", "/m"]);
    }

    #[test]
    fn repeated_options_last_one_wins() {
        let argv = translate(&["bkt", "/m", "-o", "uid=1,uid=2", "-o", "gid=3"]).unwrap();
        assert_eq!(
            argv,
            ["mount-s3", "--gid", "3", "--uid", "2", "--", "bkt", "/m"]
        );
    }

    #[test]
    fn quoted_values_keep_their_commas() {
        assert_eq!(
            split_options(r#"a,log-directory="/x,y",,b"#),
            ["a", r#"log-directory="/x,y""#, "b"]
        );
        let argv = translate(&["bkt", "/m", "-o", r#"log-directory="/x,y""#]).unwrap();
        assert_eq!(argv[1..3], ["--log-directory", "/x,y"]);
    }

    #[test]
    fn helper_flags() {
        let cmd =
            HelperCommand::parse(&os(&["-s", "-f", "-n", "-v", "bkt", "/m", "-oro"])).unwrap();
        assert!(cmd.fake && cmd.verbose);
        assert_eq!(cmd.argv.len(), 5, "{:?}", cmd.argv);
        let cmd = HelperCommand::parse(&os(&["bkt", "/m", "-fv", "-t", "mount-s3"])).unwrap();
        assert!(cmd.fake && cmd.verbose);
        assert_eq!(cmd.shown(), "mount-s3 -- bkt /m");
        let plain = HelperCommand::parse(&os(&["bkt", "/m"])).unwrap();
        assert!(!plain.fake && !plain.verbose && plain.ignored.is_empty());
    }

    #[test]
    fn sloppy_skips_unknown_options() {
        let cmd =
            HelperCommand::parse(&os(&["bkt", "/m", "-s", "-o", "sync,allow-delete"])).unwrap();
        assert_eq!(cmd.ignored, ["sync"]);
        assert_eq!(cmd.argv[1], "--allow-delete");
    }

    #[test]
    fn errors_are_one_line_and_name_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&["bkt", "/m", "-o", "no-such-option"], "'no-such-option'"),
            (&["bkt", "/m", "-o", "sync"], "'sync'"),
            (&["bkt", "/m", "-o", "uid"], "needs a value"),
            (&["bkt", "/m", "-o", "allow-delete=yes"], "takes no value"),
            (&["bkt", "/m", "-o", "foreground"], "hang"),
            (&["s3://bkt/p/", "/m", "-o", "prefix=q/"], "twice"),
            (&["b"], "expected a source and a directory"),
            (
                &["bkt", "/m", "/extra"],
                "expected a source and a directory",
            ),
            (&["bkt", "/m", "-x"], "'-x'"),
            (&["bkt", "/m", "-o"], "needs a value"),
            (&["http://b", "/m"], "s3://"),
        ];
        for (args, needle) in cases {
            let err = translate(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{args:?}: {err}");
        }
    }

    #[test]
    fn bad_values_fail_in_mount_s3s_own_parser() {
        let argv = translate(&["bkt", "/m", "-o", "uid=alice"]).unwrap();
        assert!(Args::try_parse_from(&argv).is_err());
    }

    #[test]
    fn ordinary_command_lines_pass_through() {
        let argv = os(&["/usr/bin/mount-s3", "--read-only", "bucket", "/mnt"]);
        let mut err = Vec::new();
        assert_eq!(dispatch(argv.clone(), &mut err), Dispatch::Run(argv));
        assert!(err.is_empty());
    }

    #[test]
    fn dispatch_as_helper() {
        let mut err = Vec::new();
        let argv = os(&[
            "/sbin/mount.mount-s3",
            "s3://bkt/p/",
            "/m",
            "-o",
            "ro",
            "-v",
        ]);
        let Dispatch::Run(run) = dispatch(argv, &mut err) else {
            panic!("expected a command line");
        };
        assert_eq!(
            run,
            os(&[
                "mount-s3",
                "--prefix",
                "p/",
                "--read-only",
                "--",
                "bkt",
                "/m"
            ])
        );
        let err = String::from_utf8(err).unwrap();
        assert_eq!(
            err,
            "mount.mount-s3: mount-s3 --prefix p/ --read-only -- bkt /m\n"
        );

        let mut err = Vec::new();
        let bad = os(&["mount.mount-s3", "bkt", "/m", "-o", "bogus"]);
        assert_eq!(dispatch(bad, &mut err), Dispatch::Exit(2));
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("mount.mount-s3: unknown option 'bogus'"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn fake_mount_checks_without_mounting() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        let fake = |source: &str, dir: &str, opts: &str| {
            let mut err = Vec::new();
            let argv = os(&["mount.mount-s3", source, dir, "-f", "-o", opts]);
            let code = dispatch(argv, &mut err);
            (code, String::from_utf8(err).unwrap())
        };
        assert_eq!(
            fake("s3://bucket/p/", dir, "rw"),
            (Dispatch::Exit(0), String::new())
        );
        let (code, err) = fake("b@d", dir, "rw");
        assert_eq!(code, Dispatch::Exit(2), "{err}");
        assert!(err.contains("not a bucket name"), "{err}");
        let (code, err) = fake("bucket", "/no/such/dir", "rw");
        assert_eq!(code, Dispatch::Exit(1), "{err}");
        let (code, err) = fake("bucket", dir, "uid=alice");
        assert_eq!(code, Dispatch::Exit(2), "{err}");
        assert!(err.contains("--uid"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        #[test]
        fn untrusted_fstab_lines_never_panic(
            source in "(s3://)?[a-z0-9./_-]{0,20}|\\PC{0,20}",
            options in proptest::collection::vec("[a-z_-]{1,16}(=(\\PC{0,12}|\"[^\"]{0,8}\"?))?|\\PC{0,10}", 0..8),
            flags in proptest::collection::vec(proptest::sample::select(vec!["-s", "-f", "-n", "-v", "-o", "-t", "-x", "--"]), 0..4),
        ) {
            let mut argv: Vec<OsString> = vec![HELPER_NAME.into(), source.into(), "/nonexistent".into()];
            argv.push("-o".into());
            argv.push(options.join(",").into());
            argv.extend(flags.into_iter().map(OsString::from));
            let mut sink = Vec::new();
            if let Dispatch::Run(argv) = dispatch(argv, &mut sink) {
                let _ = Args::try_parse_from(argv);
            }
            let text = String::from_utf8_lossy(&sink);
            proptest::prop_assert!(text.lines().all(|l| l.starts_with(HELPER_NAME)), "{}", text);
        }
    }
}
