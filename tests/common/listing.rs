//! Directory listings through a mount, and assertions on them.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Names in a directory, sorted; panics on an error or on a name listed twice.
pub fn list_dir(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = list_dir_typed(path)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "{} lists a name more than once: {names:?}",
        path.display()
    );
    names
}

/// Entries of a directory with the type readdir gave them: 'd' directory, 'f' regular
/// file, '?' anything else. Sorted by name; panics on an error or a non-UTF-8 name.
pub fn list_dir_typed(path: &Path) -> Vec<(String, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display())) {
        let e = e.unwrap_or_else(|e| panic!("read_dir {} entry: {e}", path.display()));
        let t = e
            .file_type()
            .unwrap_or_else(|err| panic!("file type of {:?}: {err}", e.path()));
        let c = if t.is_dir() {
            'd'
        } else if t.is_file() {
            'f'
        } else {
            '?'
        };
        let name = e
            .file_name()
            .into_string()
            .unwrap_or_else(|n| panic!("non-UTF-8 name {n:?} in {}", path.display()));
        out.push((name, c));
    }
    out.sort();
    out
}

/// Asserts that `path` lists exactly `expected` (name, 'd' or 'f'), and that stat agrees
/// with the type readdir gave.
pub fn assert_typed_listing(path: &Path, expected: &[(&str, char)]) {
    let mut want: Vec<(String, char)> = expected.iter().map(|(n, t)| (n.to_string(), *t)).collect();
    want.sort();
    let got = list_dir_typed(path);
    assert_eq!(got, want, "typed listing of {}", path.display());
    list_dir(path); // each name once
    for (name, t) in &want {
        let p = path.join(name);
        let md = fs::metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        match t {
            'd' => assert!(md.is_dir(), "{} should be a directory", p.display()),
            'f' => assert!(md.is_file(), "{} should be a regular file", p.display()),
            _ => {}
        }
    }
}

/// Asserts that `path` lists exactly `expected` (in any order), each name once.
pub fn assert_listing(path: &Path, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    let got = list_dir(path);
    assert_eq!(got, want, "listing of {}", path.display());
}
