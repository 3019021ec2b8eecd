//! `mount-s3 completions SHELL`: a completion script for bash, zsh, fish, elvish or
//! PowerShell, generated from the clap definition of the flags, so it never drifts from them.
//!
//! Not here: the flags themselves (`cli`). `completions` is not a clap subcommand, because
//! mount-s3's command line is Mountpoint's (`mount-s3 [OPTIONS] BUCKET DIRECTORY`); `main`
//! asks [`requested`] first.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::cli::Args;

/// The word that asks for completions.
pub const COMMAND: &str = "completions";

const USAGE: &str = "usage: mount-s3 completions <bash|zsh|fish|elvish|powershell>";

/// Whether `argv` asks for completions: `mount-s3 completions`, alone or followed by one
/// word that is not an existing directory (a shell name, `--help`, or a misspelt shell,
/// which [`run`] then refuses). `mount-s3 completions /mnt/data`, with a directory, is a
/// mount of a bucket named `completions`.
pub fn requested(argv: &[OsString]) -> bool {
    match argv {
        [_, word] => word == COMMAND,
        [_, word, arg] => {
            word == COMMAND
                && (<Shell as ValueEnum>::from_str(&arg.to_string_lossy(), true).is_ok()
                    || !Path::new(arg).is_dir())
        }
        _ => false,
    }
}

/// Writes the script for `shell` (`bash`, `zsh`, `fish`, `elvish`, `powershell`, any case)
/// to `out`; returns the exit status. Help goes to `out`, errors (one line) to `err`.
pub fn run(shell: Option<&OsString>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Some(name) = shell.and_then(|s| s.to_str()) else {
        let _ = writeln!(err, "mount-s3: {USAGE}");
        return 2;
    };
    if name == "-h" || name == "--help" {
        let _ = writeln!(
            out,
            "Print a shell completion script for mount-s3.\n\n{USAGE}\n\n\
             bash:  mount-s3 completions bash > /etc/bash_completion.d/mount-s3\n\
             zsh:   mount-s3 completions zsh > \"${{fpath[1]}}/_mount-s3\"\n\
             fish:  mount-s3 completions fish > ~/.config/fish/completions/mount-s3.fish"
        );
        return 0;
    }
    let Ok(shell) = <Shell as ValueEnum>::from_str(name, true) else {
        let _ = writeln!(err, "mount-s3: unknown shell '{name}'; {USAGE}");
        return 2;
    };
    let mut command = Args::command();
    clap_complete::generate(shell, &mut command, "mount-s3", out);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_a_shell_name_asks_for_completions() {
        assert!(requested(&os(&["mount-s3", "completions", "bash"])));
        assert!(requested(&os(&["mount-s3", "completions", "PowerShell"])));
        assert!(requested(&os(&["mount-s3", "completions", "--help"])));
        assert!(requested(&os(&["mount-s3", "completions"])));
        assert!(requested(&os(&["mount-s3", "completions", "tcsh"])));
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_str().unwrap();
        assert!(!requested(&os(&["mount-s3", "completions", dir])));
        assert!(!requested(&os(&["mount-s3", "bucket", "bash"])));
        assert!(!requested(&os(&[
            "mount-s3",
            "--read-only",
            "completions",
            "/m"
        ])));
    }

    #[test]
    fn every_shell_gets_a_script_with_the_flags() {
        for shell in Shell::value_variants() {
            let name = shell.to_string();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(run(Some(&name.clone().into()), &mut out, &mut err), 0);
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains("allow-delete"), "{name}");
            assert!(script.contains("metadata-ttl"), "{name}");
            assert!(err.is_empty());
        }
    }

    #[test]
    fn unknown_or_missing_shell_is_one_line() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(Some(&"tcsh".into()), &mut out, &mut err), 2);
        assert_eq!(run(None, &mut out, &mut err), 2);
        let err = String::from_utf8(err).unwrap();
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(err.contains("unknown shell 'tcsh'"), "{err}");
        assert!(out.is_empty());
    }
}
