//! `list`: the entries under a directory to a depth, sorted by path.
//!
//! Invariant: only directories reached through [`crate::tree`] (fds, `O_NOFOLLOW`) are
//! listed, so symlinks appear as entries but are never entered.

use std::os::fd::OwnedFd;

use paddock_core::sandbox::{Entry, EntryKind, List, Listing};
use paddock_core::{SandboxError, VirtualPath};
use rustix::fs::AtFlags;

use crate::read::entry_from_stat;
use crate::resolve::FOLLOW;
use crate::tree::{Child, open_child_dir, open_root_dir, read_children};
use crate::{FsOps, ignore};

/// Stops a runaway listing (the cap applies after sorting, so the walk must see more
/// than `max_entries`; this bounds memory on enormous trees).
const LIST_WALK_LIMIT: usize = 1_000_000;

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
    let mut entries = Vec::new();
    let mut walk_cut = false;
    let mut stack: Vec<(OwnedFd, VirtualPath, u32)> = vec![(root, r.vpath().clone(), 1)];
    while let Some((dir, vdir, depth)) = stack.pop() {
        let children = match read_children(ops.table(), &dir, &vdir, &keep) {
            Ok(c) => c,
            Err(e) if depth == 1 => return Err(r.io_err("list", e)),
            Err(e) => {
                tracing::debug!(dir = %vdir, error = %e, "skipping an unreadable directory");
                continue;
            }
        };
        for child in children {
            if entries.len() >= LIST_WALK_LIMIT {
                walk_cut = true;
                break;
            }
            let Some(entry) = entry_of(&dir, &child) else {
                continue;
            };
            if child.kind == EntryKind::Dir
                && depth < req.max_depth
                && let Some(fd) = open_child_dir(&dir, &child)
            {
                stack.push((fd, child.vpath.clone(), depth + 1));
            }
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let truncated = walk_cut || entries.len() > req.max_entries;
    entries.truncate(req.max_entries);
    Ok(Listing { entries, truncated })
}

/// The entry for `child` (stat without following; a mount point by its host root).
fn entry_of(dir: &OwnedFd, child: &Child<'_>) -> Option<Entry> {
    let st = match child.mount {
        Some(m) => rustix::fs::stat(&m.host).ok()?,
        None => rustix::fs::statat(dir, child.name.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?,
    };
    Some(entry_from_stat(child.vpath.clone(), &st))
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
