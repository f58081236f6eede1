//! `list`: the entries under a directory to a depth, sorted by path.
//!
//! Invariant: only directories reached through [`crate::tree`] (fds, `O_NOFOLLOW`) are
//! listed, so symlinks appear as entries but are never entered; what the walk could not
//! read is reported in [`Listing::unreadable`], never dropped silently.

use std::os::fd::BorrowedFd;

use paddock_core::SandboxError;
use paddock_core::sandbox::{Entry, EntryKind, List, Listing, Unreadable};
use rustix::fs::AtFlags;
use rustix::io::Errno;

use crate::read::entry_from_stat;
use crate::resolve::FOLLOW;
use crate::tree::{self, Child, Flow, Spec, open_root_dir};
use crate::{FsOps, ignore};

pub(crate) fn list(ops: &FsOps, req: &List) -> Result<Listing, SandboxError> {
    if req.max_depth == 0 {
        return Err(SandboxError::invalid_argument("max_depth", "must be >= 1"));
    }
    let r = ops.resolve(&req.path, FOLLOW)?;
    let root = open_root_dir(&r)?;
    let keep = |name: &str| {
        (req.show_hidden || !name.starts_with('.'))
            && !(req.apply_ignore && ignore::is_ignored(name))
    };
    let spec = Spec {
        keep: &keep,
        max_depth: req.max_depth,
        max_entries: ops.options().walk_max_entries,
    };
    let mut entries = Vec::new();
    let mut changed = Vec::new();
    // Entries come in path order, so the walk stops once it has one past the cap.
    let mut walked = tree::walk(ops.table(), root, r.vpath(), &spec, &mut |dir, child| {
        if let Some(entry) = entry_of(dir, child) {
            // A directory now that was something else when its parent was read (swapped
            // in since) was not entered: say so rather than show it empty.
            if entry.kind == EntryKind::Dir
                && child.kind != EntryKind::Dir
                && child.depth < req.max_depth
            {
                changed.push(Unreadable {
                    path: child.vpath.clone(),
                    escaped_path: child.escaped.clone(),
                    reason: "changed during the walk".into(),
                });
            }
            entries.push(entry);
        }
        if entries.len() > req.max_entries {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })
    .map_err(|e| r.io_err("list", e))?;
    walked.add_unreadable(changed);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let truncated = walked.truncated || entries.len() > req.max_entries;
    entries.truncate(req.max_entries);
    Ok(Listing {
        entries,
        truncated,
        unreadable: walked.unreadable,
    })
}

/// The entry for `child` (stat without following; a mount point by its host root).
/// `None` only when it vanished since its directory was read; an entry that cannot be
/// stat'ed is listed with what the directory said about it rather than left out.
fn entry_of(dir: BorrowedFd<'_>, child: &Child<'_, '_>) -> Option<Entry> {
    let st = match child.mount {
        Some(m) => rustix::fs::stat(&m.host),
        None => rustix::fs::statat(dir, child.name, AtFlags::SYMLINK_NOFOLLOW),
    };
    let mut entry = match st {
        Ok(st) => entry_from_stat(child.vpath.clone(), &st),
        Err(Errno::NOENT) if child.mount.is_none() => return None,
        Err(_) => Entry {
            path: child.vpath.clone(),
            kind: child.kind,
            size: 0,
            modified: None,
            escaped_path: None,
        },
    };
    entry.escaped_path.clone_from(&child.escaped);
    Some(entry)
}

#[cfg(test)]
mod tests {
    use crate::testutil::tree;
    use paddock_core::sandbox::List;

    #[test]
    fn depth_and_nested_mounts() {
        let t = tree();
        let ops = t.ops(false);
        let mut req = List::new("/w");
        req.max_depth = 1;
        let shown: Vec<String> = ops
            .list(&req)
            .expect("list")
            .entries
            .iter()
            .map(|e| e.display())
            .collect();
        assert_eq!(shown, ["/w/a.txt", "/w/d/", "/w/link", "/w/ro/"]);
        req.max_depth = 2;
        let shown: Vec<String> = ops
            .list(&req)
            .expect("list")
            .entries
            .iter()
            .map(|e| e.display())
            .collect();
        assert_eq!(
            shown,
            [
                "/w/a.txt",
                "/w/d/",
                "/w/d/b.txt",
                "/w/d/e/",
                "/w/link",
                "/w/ro/",
                "/w/ro/r.txt"
            ]
        );
        req.max_depth = 0;
        assert_eq!(
            ops.list(&req).expect_err("depth 0").code(),
            "invalid_argument"
        );
    }
}
