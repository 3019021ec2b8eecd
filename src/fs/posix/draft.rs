//! The POSIX attributes a file being written will be committed with: those it was created or
//! opened with, changed by chmod/chown/utimes while it is open. Its mtime is the commit's
//! time unless a program set one after its last write (`cp -p` and `rsync` set the source's
//! mtime on the open file, then close it).

use std::time::SystemTime;

use crate::s3::Posix;

/// See the module's comment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Draft {
    attrs: Option<Posix>,
    mtime_pinned: bool,
}

impl Draft {
    /// A draft of `attrs` (`None` on a mount without `--posix-metadata`).
    pub fn new(attrs: Option<Posix>) -> Self {
        Self {
            attrs,
            mtime_pinned: false,
        }
    }

    /// Applies a chmod/chown/utimes; an mtime set here is kept at commit.
    pub fn change(&mut self, change: &Posix) {
        let base = self.attrs.unwrap_or_default();
        self.attrs = Some(base.merged(change));
        if change.mtime.is_some() {
            self.mtime_pinned = true;
        }
    }

    /// The file was written to: its mtime is the commit's again.
    pub fn written(&mut self) {
        self.mtime_pinned = false;
    }

    /// The attributes as they stand (for getattr).
    pub fn current(&self) -> Option<Posix> {
        self.attrs
    }

    /// The attributes to commit at `now`.
    pub fn at_commit(&self, now: SystemTime) -> Option<Posix> {
        let mut attrs = self.attrs?;
        if !self.mtime_pinned || attrs.mtime.is_none() {
            attrs.mtime = Some(now);
        }
        Some(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_mtime_set_after_the_last_write_survives_the_commit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut draft = Draft::new(Some(Posix {
            mode: Some(0o100644),
            ..Posix::default()
        }));
        assert_eq!(draft.at_commit(now).unwrap().mtime, Some(now));
        draft.change(&Posix {
            mtime: Some(old),
            mode: Some(0o100755),
            ..Posix::default()
        });
        let committed = draft.at_commit(now).unwrap();
        assert_eq!(
            (committed.mtime, committed.mode),
            (Some(old), Some(0o100755))
        );
        draft.written();
        assert_eq!(draft.at_commit(now).unwrap().mtime, Some(now));
        assert_eq!(Draft::new(None).at_commit(now), None);
    }
}
