//! [`DirChain`]: a path of directories from a root down to the current one, holding at
//! most [`HELD_FDS`] descriptors however deep it goes.
//!
//! A tree walk or a path walk needs the directory below the current one again when it
//! comes back up; keeping one descriptor per level lets a tenant's tree decide how many
//! descriptors the server holds (25,000 nested directories exhaust it, and every other
//! tenant's request then fails). The chain keeps descriptors only for its root and its
//! top [`HELD_FDS`] levels and forgets the rest; a forgotten level is re-opened when the
//! walk comes back to it, by name from the nearest level still held.
//!
//! Invariant: every level but the root and mount host roots is opened relative to the
//! level below it with `O_NOFOLLOW | O_DIRECTORY` — when first entered and when re-opened
//! — and a re-opened level must be the same directory (device and inode) as the first
//! time, so neither a symlink nor a directory renamed in mid-walk can steer the chain
//! outside its root or into another part of the tree unnoticed.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Dir, Mode, OFlags};

use crate::walker::{DIR_PATH_FLAGS, open_host_root};

/// Levels above the root that keep their descriptor. Deeper levels cost a re-open by name
/// when the walk comes back to them; real trees rarely nest this deep below a listed root.
pub const HELD_FDS: usize = 8;

/// Most descriptors a chain holds at once: the root, the held levels, and one level
/// being opened before the oldest held one is let go.
pub const CHAIN_MAX_FDS: usize = HELD_FDS + 2;

/// How a level is opened again.
#[derive(Debug)]
enum Anchor {
    /// The fd handed in: never let go, cannot be re-opened.
    Fixed,
    /// A mount's host root, opened by path: operator configuration, or a thread's data
    /// directory (then refusing any symlink in the path, see
    /// [`crate::walker::open_host_root`]).
    HostRoot(PathBuf, bool),
    /// `name` in the level below.
    Child(CString),
}

/// A held descriptor: a plain fd, or a [`Dir`] whose entries were read through it (the
/// `Dir` owns the fd; keeping it avoids a second open just to read entries).
#[derive(Debug)]
enum Held {
    Fd(OwnedFd),
    Dir(Dir),
}

impl Held {
    fn borrow(&self) -> std::io::Result<BorrowedFd<'_>> {
        match self {
            Held::Fd(fd) => Ok(fd.as_fd()),
            Held::Dir(d) => Ok(d.fd()?),
        }
    }
}

#[derive(Debug)]
struct Level {
    anchor: Anchor,
    fd: Option<Held>,
    /// `(st_dev, st_ino)`, taken when the level's fd is first let go (a level that is
    /// never let go is never re-opened, so never compared).
    id: Option<(u64, u64)>,
}

/// Why a level could not be (re-)opened: the OS error, or the directory is another one
/// than the walk first entered.
#[derive(Debug)]
pub(crate) struct Lost {
    /// The level that failed (0 = the root).
    pub level: usize,
    /// What happened.
    pub error: std::io::Error,
}

/// The error a re-opened level that is another directory reports.
pub(crate) fn changed_error() -> std::io::Error {
    std::io::Error::other("changed during the walk")
}

fn identity(fd: BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// A chain of directories; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct DirChain {
    levels: Vec<Level>,
}

impl DirChain {
    /// Number of levels.
    pub(crate) fn len(&self) -> usize {
        self.levels.len()
    }

    /// Drops every level.
    pub(crate) fn clear(&mut self) {
        self.levels.clear();
    }

    /// Drops the top level.
    pub(crate) fn pop(&mut self) {
        self.levels.pop();
    }

    /// Drops the levels from `level` up.
    pub(crate) fn truncate(&mut self, level: usize) {
        self.levels.truncate(level);
    }

    fn push(&mut self, anchor: Anchor, fd: OwnedFd) {
        self.levels.push(Level {
            anchor,
            fd: Some(Held::Fd(fd)),
            id: None,
        });
        if let Some(level) = self.levels.len().checked_sub(HELD_FDS + 1) {
            self.forget(level);
        }
    }

    /// Pushes a directory fd the caller opened; it is held for the chain's life.
    pub(crate) fn push_fixed(&mut self, fd: OwnedFd) {
        self.push(Anchor::Fixed, fd);
    }

    /// Pushes a mount's host root, opened by path with `flags` (`O_DIRECTORY` added),
    /// refusing a symlink anywhere in it when `no_symlinks`.
    pub(crate) fn push_host_root(
        &mut self,
        host: &std::path::Path,
        flags: OFlags,
        no_symlinks: bool,
    ) -> std::io::Result<()> {
        let fd = open_host_root(host, flags, no_symlinks)?;
        self.push(Anchor::HostRoot(host.to_path_buf(), no_symlinks), fd);
        Ok(())
    }

    /// Pushes `name` of the top level, opened with `flags` plus `O_DIRECTORY |
    /// O_NOFOLLOW`: a symlink (swapped in or not) fails instead of being entered.
    pub(crate) fn push_child(&mut self, name: &CStr, flags: OFlags) -> Result<(), Lost> {
        let fd = {
            let top = self.top()?;
            rustix::fs::openat(
                top,
                name,
                flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let level = self.levels.len();
        let fd = fd.map_err(|e| Lost {
            level,
            error: e.into(),
        })?;
        self.push(Anchor::Child(name.to_owned()), fd);
        Ok(())
    }

    /// The top level's fd, re-opening forgotten levels as needed. On failure the chain
    /// is unchanged but for descriptors; the caller drops the levels from `Lost::level` up.
    pub(crate) fn top(&mut self) -> Result<BorrowedFd<'_>, Lost> {
        let Some(top) = self.levels.len().checked_sub(1) else {
            return Err(Lost {
                level: 0,
                error: std::io::Error::other("empty directory chain"),
            });
        };
        self.ensure(top)?;
        let held = self.levels[top].fd.as_ref().ok_or_else(|| Lost {
            level: top,
            error: std::io::Error::other("level not held after re-open"),
        })?;
        held.borrow().map_err(|error| Lost { level: top, error })
    }

    /// Reads every entry of the top level, handing each to `each` (which returns `false`
    /// to stop early). The top level must have been pushed with a readable fd.
    pub(crate) fn read_top(
        &mut self,
        each: &mut dyn FnMut(BorrowedFd<'_>, &rustix::fs::DirEntry) -> bool,
    ) -> std::io::Result<()> {
        let Some(level) = self.levels.last_mut() else {
            return Err(std::io::Error::other("empty directory chain"));
        };
        let mut dir = match level.fd.take() {
            Some(Held::Fd(fd)) => Dir::new(fd)?,
            Some(Held::Dir(d)) => d,
            None => return Err(std::io::Error::other("directory to read is not held")),
        };
        // `Dir` owns the fd and reads through it; `*at` calls borrow the same fd, which
        // does not move the read position.
        let result = loop {
            match dir.read() {
                None => break Ok(()),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(entry)) => match dir.fd() {
                    Ok(fd) => {
                        if !each(fd, &entry) {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e.into()),
                },
            }
        };
        level.fd = Some(Held::Dir(dir));
        result
    }

    /// Re-opens `target` and whatever below it is needed, from the nearest level held.
    fn ensure(&mut self, target: usize) -> Result<(), Lost> {
        if self.levels[target].fd.is_some() {
            return Ok(());
        }
        let mut base = target;
        loop {
            let lv = &self.levels[base];
            if lv.fd.is_some() {
                break;
            }
            match &lv.anchor {
                Anchor::HostRoot(host, no_symlinks) => {
                    let flags = DIR_PATH_FLAGS.difference(OFlags::NOFOLLOW);
                    let fd = open_host_root(host, flags, *no_symlinks)
                        .map_err(|error| Lost { level: base, error })?;
                    self.adopt(base, fd)?;
                    break;
                }
                Anchor::Fixed => {
                    return Err(Lost {
                        level: base,
                        error: std::io::Error::other("root of the walk was let go"),
                    });
                }
                Anchor::Child(_) => {}
            }
            base = base.checked_sub(1).ok_or_else(|| Lost {
                level: 0,
                error: std::io::Error::other("directory chain has no root"),
            })?;
        }
        for level in base + 1..=target {
            let fd = {
                let Anchor::Child(name) = &self.levels[level].anchor else {
                    // Host roots and the fixed root stop the search above; reaching one
                    // here would mean it is held, and `adopt` below keeps it.
                    continue;
                };
                let below = self.levels[level - 1]
                    .fd
                    .as_ref()
                    .ok_or_else(|| Lost {
                        level: level - 1,
                        error: std::io::Error::other("level below not held"),
                    })?
                    .borrow()
                    .map_err(|error| Lost { level, error })?;
                rustix::fs::openat(below, name.as_c_str(), DIR_PATH_FLAGS, Mode::empty()).map_err(
                    |e| Lost {
                        level,
                        error: e.into(),
                    },
                )?
            };
            self.adopt(level, fd)?;
            self.forget(level - 1);
        }
        Ok(())
    }

    /// Installs a re-opened fd after checking it is the directory first entered.
    fn adopt(&mut self, level: usize, fd: OwnedFd) -> Result<(), Lost> {
        let id = identity(fd.as_fd()).map_err(|error| Lost { level, error })?;
        if Some(id) != self.levels[level].id {
            return Err(Lost {
                level,
                error: changed_error(),
            });
        }
        self.levels[level].fd = Some(Held::Fd(fd));
        Ok(())
    }

    /// Whether `level` may not keep its fd: neither the fixed root nor among the top
    /// [`HELD_FDS`] levels.
    fn outside_window(&self, level: usize) -> bool {
        !matches!(self.levels[level].anchor, Anchor::Fixed) && level + HELD_FDS < self.levels.len()
    }

    /// Lets go of `level`'s fd when it is outside the window, noting first which
    /// directory it is (if that fails, a re-open will count as a change: refused, not
    /// trusted).
    fn forget(&mut self, level: usize) {
        if !self.outside_window(level) {
            return;
        }
        let lv = &mut self.levels[level];
        if let Some(held) = lv.fd.take()
            && lv.id.is_none()
        {
            lv.id = held.borrow().and_then(|fd| identity(fd)).ok();
        }
    }

    /// Takes the top level's fd, ending the chain.
    pub(crate) fn into_top(mut self) -> std::io::Result<OwnedFd> {
        self.top().map_err(|l| l.error)?;
        match self.levels.pop().and_then(|l| l.fd) {
            Some(Held::Fd(fd)) => Ok(fd),
            Some(Held::Dir(d)) => {
                // A `Dir` keeps its fd; hand out an `O_PATH` handle on the same directory.
                Ok(rustix::fs::openat(
                    d.fd()?,
                    c".",
                    DIR_PATH_FLAGS,
                    Mode::empty(),
                )?)
            }
            None => Err(std::io::Error::other("walk ended without a directory")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(depth: usize) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut deep = tmp.path().to_path_buf();
        for i in 0..depth {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).expect("mkdir");
        (tmp, deep)
    }

    #[test]
    fn deep_chains_hold_few_fds_and_come_back_up() {
        let (tmp, _) = chain_of(40);
        let mut c = DirChain::default();
        c.push_host_root(tmp.path(), OFlags::RDONLY, false)
            .expect("root");
        let held = |c: &DirChain| c.levels.iter().filter(|l| l.fd.is_some()).count();
        for i in 0..40 {
            let name = CString::new(format!("d{i}")).expect("name");
            c.push_child(&name, OFlags::RDONLY).expect("descend");
            assert!(held(&c) <= HELD_FDS + 1, "{} held at depth {i}", held(&c));
        }
        // Coming back up re-opens forgotten levels; each is the directory first entered.
        while c.len() > 1 {
            c.pop();
            let top = c.top().expect("re-open");
            let st = rustix::fs::fstat(top).expect("fstat");
            if let Some((_, ino)) = c.levels[c.len() - 1].id {
                assert_eq!(st.st_ino, ino);
            }
            assert!(held(&c) <= HELD_FDS + 1);
        }
    }

    #[test]
    fn a_level_renamed_away_or_swapped_for_a_symlink_is_lost_not_followed() {
        let (tmp, _) = chain_of(20);
        let mut c = DirChain::default();
        c.push_host_root(tmp.path(), OFlags::RDONLY, false)
            .expect("root");
        for i in 0..20 {
            let name = CString::new(format!("d{i}")).expect("name");
            c.push_child(&name, OFlags::RDONLY).expect("descend");
        }
        // Level 3 (d2) is long forgotten: move it away and put a symlink to it in its
        // place. Even pointing at the very same directory, the symlink is not followed.
        let d2 = tmp.path().join("d0/d1/d2");
        std::fs::rename(&d2, tmp.path().join("moved")).expect("rename");
        std::os::unix::fs::symlink(tmp.path().join("moved"), &d2).expect("symlink");
        c.truncate(5);
        let lost = c.top().expect_err("must not follow the symlink");
        assert_eq!(lost.level, 3);
        // A same-named directory in its place is another directory.
        std::fs::remove_file(&d2).expect("rm");
        std::fs::create_dir_all(d2.join("d3")).expect("mkdir");
        let lost = c.top().expect_err("must notice the swap");
        assert_eq!(lost.level, 3);
        assert_eq!(lost.error.to_string(), changed_error().to_string());
    }
}
