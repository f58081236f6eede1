//! Resolution of a virtual path to a directory fd plus a final name, beneath a mount root.
//!
//! Invariant: the directory fd of a [`Resolved`] lies inside the host root of the mount
//! that owns the resolved virtual path, and the final entry is only ever opened with
//! `O_NOFOLLOW` relative to it. Two routes get there and give identical results:
//! - the fast path, `openat2(root, parent, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)`, taken when the path's mount has no nested mounts. It refuses
//!   every symlink, so when it succeeds the lexical path *is* the resolved path;
//! - the fd walk ([`crate::walker::FdWalker`] driven by `MountTable::walk`), which follows
//!   symlinks in the *virtual* namespace (absolute targets are virtual paths, which the
//!   kernel cannot interpret) and refuses any that leave the starting mount.
//!
//! Any failure of the fast path (a symlink, `EXDEV`, `ENOSYS` on old kernels, a missing
//! parent that must be created, …) falls back to the walk, which then produces the precise
//! error. `RESOLVE_NO_SYMLINKS` is stricter than `RESOLVE_BENEATH` alone on purpose: a
//! kernel-followed relative symlink would change the resolved virtual path without us
//! knowing it, and results must not depend on which route was taken.

use std::os::fd::OwnedFd;

use paddock_core::mount::{Mount, Node, Target, WalkOptions, Walked};
use paddock_core::{MountTable, SandboxError, VirtualPath};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::FsOps;
use crate::walker::{DIR_PATH_FLAGS, FdWalker, lookup_at, open_mount_root};

/// A resolved path: where it ended, plus a handle on the directory that holds it.
#[derive(Debug)]
pub(crate) struct Resolved<'t> {
    /// The normalised path as requested (used in errors, so they echo the caller's path).
    pub requested: VirtualPath,
    /// The walk result: final virtual path, owning mount, final entry.
    pub walked: Walked<'t>,
    /// `O_PATH` handle on the directory holding the final entry, or on the target itself
    /// when the target is [`Target::Current`].
    pub dir: OwnedFd,
}

/// Follow the final symlink, create nothing (reads, stat, list, glob, grep).
pub(crate) const FOLLOW: WalkOptions = WalkOptions {
    follow_final: true,
    create_parents: false,
};
/// Follow the final symlink and create missing parents (writes).
pub(crate) const CREATE: WalkOptions = WalkOptions {
    follow_final: true,
    create_parents: true,
};

impl Resolved<'_> {
    /// The final virtual path (after symlinks).
    pub(crate) fn vpath(&self) -> &VirtualPath {
        &self.walked.vpath
    }

    /// The final name inside `dir`, `None` when the target is `dir` itself.
    pub(crate) fn name(&self) -> Option<&str> {
        match &self.walked.target {
            Target::Current => None,
            Target::Entry { name, .. } => Some(name),
        }
    }

    /// What the final entry was when looked up (`Dir` for [`Target::Current`]).
    pub(crate) fn node(&self) -> &Node {
        match &self.walked.target {
            Target::Current => &Node::Dir,
            Target::Entry { node, .. } => node,
        }
    }

    /// The requested path as a string, for errors.
    pub(crate) fn shown(&self) -> String {
        self.requested.to_string()
    }

    /// Maps an OS error on this path.
    pub(crate) fn io_err(&self, op: &str, e: impl Into<std::io::Error>) -> SandboxError {
        SandboxError::from_io(op, self.requested.as_str(), &e.into())
    }

    /// Refuses writes into a read-only mount (including through symlinks into one).
    pub(crate) fn check_writable(&self) -> Result<(), SandboxError> {
        MountTable::check_writable(&self.walked)
    }

    /// Opens the final entry with `flags` (plus `O_NOFOLLOW | O_CLOEXEC`): a symlink
    /// swapped in since the walk makes this fail instead of being followed.
    pub(crate) fn open(&self, op: &str, flags: OFlags, mode: u32) -> Result<OwnedFd, SandboxError> {
        let name = self.name().unwrap_or(".");
        rustix::fs::openat(
            &self.dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| self.io_err(op, e))
    }
}

impl FsOps {
    /// Resolves `raw` beneath its mount (see the module docs for the two routes).
    pub(crate) fn resolve(
        &self,
        raw: &str,
        opts: WalkOptions,
    ) -> Result<Resolved<'_>, SandboxError> {
        let loc = self.table().locate(raw)?;
        let requested = loc.vpath.clone();
        if !self.options().force_walk
            && !self.table().has_nested(&loc.mount.container)
            && let Some(r) = fast_path(&requested, loc.mount, &loc.rel, opts)
        {
            return Ok(r);
        }
        let mut w = FdWalker::new(self.options());
        let walked = self.table().walk(raw, opts, &mut w)?;
        // The top is held unless the path is deeper than the chain holds and the walk
        // came back up to a forgotten level; re-opening it can then fail like any open.
        let dir = w
            .into_top()
            .map_err(|e| SandboxError::from_io("open", requested.as_str(), &e))?;
        Ok(Resolved {
            requested,
            walked,
            dir,
        })
    }
}

/// `None` means "take the walk" (never an error of its own: the walk reports errors).
fn fast_path<'t>(
    requested: &VirtualPath,
    mount: &'t Mount,
    rel: &str,
    opts: WalkOptions,
) -> Option<Resolved<'t>> {
    let root = open_mount_root(mount).ok()?;
    if rel.is_empty() {
        let walked = Walked {
            vpath: requested.clone(),
            mount,
            target: Target::Current,
        };
        return Some(Resolved {
            requested: requested.clone(),
            walked,
            dir: root,
        });
    }
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, rel),
    };
    let dir = match parent {
        None => root,
        Some(p) => rustix::fs::openat2(
            &root,
            p,
            DIR_PATH_FLAGS,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()?,
    };
    let node = lookup_at(&dir, name).ok()?;
    if matches!(node, Node::Symlink(_)) && opts.follow_final {
        return None;
    }
    let walked = Walked {
        vpath: requested.clone(),
        mount,
        target: Target::Entry {
            name: name.to_owned(),
            node,
        },
    };
    Some(Resolved {
        requested: requested.clone(),
        walked,
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::tree;

    #[test]
    fn fast_path_only_for_symlink_free_paths() {
        let t = tree();
        let ops = t.ops(false);
        let loc = ops.table().locate("/w/d/b.txt").expect("locate");
        // /w has a nested mount, so resolve() would walk; call the fast path directly.
        let r = fast_path(&loc.vpath, loc.mount, &loc.rel, FOLLOW).expect("fast path taken");
        assert_eq!(r.name(), Some("b.txt"));
        assert_eq!(r.node(), &Node::File);
        let loc = ops.table().locate("/w/link").expect("locate");
        assert!(
            fast_path(&loc.vpath, loc.mount, &loc.rel, FOLLOW).is_none(),
            "final symlink"
        );
        let nofollow = WalkOptions {
            follow_final: false,
            create_parents: false,
        };
        let r = fast_path(&loc.vpath, loc.mount, &loc.rel, nofollow).expect("not following");
        assert_eq!(r.node(), &Node::Symlink("d/b.txt".into()));
        let loc = ops.table().locate("/w/missing/x").expect("locate");
        assert!(
            fast_path(&loc.vpath, loc.mount, &loc.rel, CREATE).is_none(),
            "parent must be made"
        );
    }

    #[test]
    fn walk_resolves_symlinks_virtually_and_finds_the_owning_mount() {
        let t = tree();
        for force_walk in [false, true] {
            let ops = t.ops(force_walk);
            let r = ops.resolve("/w/link", FOLLOW).expect("resolve");
            assert_eq!(r.vpath().as_str(), "/w/d/b.txt");
            assert_eq!(r.requested.as_str(), "/w/link");
            let r = ops.resolve("/w/ro/r.txt", FOLLOW).expect("resolve");
            assert!(r.walked.mount.read_only);
            assert_eq!(r.check_writable().expect_err("ro").code(), "read_only");
            let r = ops.resolve("/w/ro", FOLLOW).expect("resolve");
            assert_eq!(r.name(), None);
        }
    }
}
