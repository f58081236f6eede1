//! Directory traversal for list, glob and grep, in the *virtual* tree.
//!
//! Invariant: a child directory is only entered through `openat(parent_fd, name,
//! O_DIRECTORY | O_NOFOLLOW)`, so a directory swapped for a symlink mid-walk fails to open
//! (and is skipped) instead of leading outside the mount. Symlinks are reported, never
//! entered. A child whose virtual path is a mount point is entered through that mount's
//! host root (mounts shadow what lies beneath them), and mounts that are direct children
//! of a listed directory appear even when nothing exists at that place on the host.

use std::os::fd::OwnedFd;

use paddock_core::mount::Mount;
use paddock_core::sandbox::EntryKind;
use paddock_core::{MountTable, SandboxError, VirtualPath};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use crate::resolve::Resolved;

/// Flags of a directory opened for reading entries.
const DIR_READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// One entry of a virtual directory.
#[derive(Debug)]
pub(crate) struct Child<'t> {
    /// Its name.
    pub name: String,
    /// Its virtual path.
    pub vpath: VirtualPath,
    /// What it is (symlinks are not followed).
    pub kind: EntryKind,
    /// The mount rooted here, if any.
    pub mount: Option<&'t Mount>,
}

/// Opens the resolved directory for reading its entries.
pub(crate) fn open_root_dir(r: &Resolved<'_>) -> Result<OwnedFd, SandboxError> {
    use paddock_core::mount::Node;
    match r.node() {
        Node::Dir => {}
        Node::Missing => return Err(SandboxError::NotFound { path: r.shown() }),
        _ => return Err(SandboxError::NotADirectory { path: r.shown() }),
    }
    r.open("open", DIR_READ_FLAGS, 0)
}

/// Opens `child` of the directory `dir` for reading, or `None` when it vanished or was
/// swapped for something that is not a directory.
pub(crate) fn open_child_dir(dir: &OwnedFd, child: &Child<'_>) -> Option<OwnedFd> {
    let res = match child.mount {
        Some(m) => rustix::fs::open(
            &m.host,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
        None => rustix::fs::openat(dir, child.name.as_str(), DIR_READ_FLAGS, Mode::empty()),
    };
    match res {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::debug!(path = %child.vpath, error = %e, "skipping a directory that cannot be opened");
            None
        }
    }
}

/// The entries of the virtual directory `vdir` backed by `dir`, filtered by `keep(name)`
/// (mount points are always kept: they are configuration, not content). Unsorted.
pub(crate) fn read_children<'t>(
    table: &'t MountTable,
    dir: &OwnedFd,
    vdir: &VirtualPath,
    keep: &dyn Fn(&str) -> bool,
) -> std::io::Result<Vec<Child<'t>>> {
    let mut out = Vec::new();
    for item in Dir::read_from(dir)? {
        let item = item?;
        let Ok(name) = item.file_name().to_str() else {
            tracing::debug!(dir = %vdir, "skipping a name that is not UTF-8");
            continue;
        };
        if name == "." || name == ".." || !keep(name) {
            continue;
        }
        let Ok(vpath) = vdir.child(name) else {
            continue;
        };
        if table.mount_at(&vpath).is_some() {
            continue;
        }
        let ft = match item.file_type() {
            FileType::Unknown => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            },
            ft => ft,
        };
        let kind = match ft {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        out.push(Child {
            name: name.to_owned(),
            vpath,
            kind,
            mount: None,
        });
    }
    // Same as `MountTable::child_mounts`, spelled out so the mounts keep the table's lifetime.
    for m in table
        .mounts()
        .iter()
        .filter(|m| m.container.parent().as_ref() == Some(vdir))
    {
        let Some(name) = m.container.file_name() else {
            continue;
        };
        out.push(Child {
            name: name.to_owned(),
            vpath: m.container.clone(),
            kind: EntryKind::Dir,
            mount: Some(m),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::FOLLOW;
    use crate::testutil::tree;

    #[test]
    fn children_shadow_and_add_mounts() {
        let t = tree();
        // A real `ro` directory under /w is shadowed by the /w/ro mount.
        std::fs::create_dir(t.w.join("ro")).expect("mkdir");
        std::fs::write(t.w.join("ro/hidden.txt"), "x").expect("write");
        let ops = t.ops(true);
        let r = ops.resolve("/w", FOLLOW).expect("resolve");
        let fd = open_root_dir(&r).expect("open");
        let mut kids = read_children(ops.table(), &fd, r.vpath(), &|_| true).expect("read");
        kids.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<(&str, EntryKind, bool)> = kids
            .iter()
            .map(|c| (c.name.as_str(), c.kind, c.mount.is_some()))
            .collect();
        assert_eq!(
            names,
            [
                ("a.txt", EntryKind::File, false),
                ("d", EntryKind::Dir, false),
                ("link", EntryKind::Symlink, false),
                ("ro", EntryKind::Dir, true),
            ]
        );
        let ro = kids.iter().find(|c| c.name == "ro").expect("ro");
        let ro_fd = open_child_dir(&fd, ro).expect("open mount root");
        let inner = read_children(ops.table(), &ro_fd, &ro.vpath, &|_| true).expect("read");
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].vpath.as_str(), "/w/ro/r.txt");
        let link = kids.iter().find(|c| c.name == "link").expect("link");
        assert!(
            open_child_dir(&fd, link).is_none(),
            "symlinks are never entered"
        );
    }
}
