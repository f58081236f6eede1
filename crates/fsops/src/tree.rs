//! Directory traversal for list, glob and grep, in the *virtual* tree: depth-first, in
//! path order, within fixed bounds whatever the tenant's tree looks like.
//!
//! Invariants:
//! - Containment: a child directory is only entered through `openat(parent_fd, name,
//!   O_DIRECTORY | O_NOFOLLOW)` (see [`DirChain`]), so a directory swapped for a symlink
//!   mid-walk fails to open instead of leading outside the mount. Symlinks are reported,
//!   never entered. A child whose virtual path is a mount point is entered through that
//!   mount's host root (mounts shadow what lies beneath them), and mounts that are direct
//!   children of a listed directory appear even when nothing exists at that place on the
//!   host.
//! - Bounds: the walk holds at most [`WALK_MAX_FDS`] descriptors (one per level for the
//!   top [`crate::chain::HELD_FDS`] levels, re-opening deeper ones by name), reads at most
//!   `max_entries` entries and keeps at most [`WALK_MAX_NAME_BYTES`] of pending names;
//!   past either budget it stops and says the result is truncated. A visitor stops it early
//!   once it has what it needs.
//! - Nothing is left out silently: a name that is not UTF-8 is visited under a lossy
//!   stand-in with its exact path escaped next to it, and a directory that cannot be read
//!   (permission, no descriptor left, swapped, changed, too deep to name) is reported in
//!   [`Walked::unreadable`] with its virtual path.
//! - Order: entries are visited in the order of their virtual paths (a directory's own
//!   entry sorts by its name, what lies inside it by its name and `/`), so a walk that a
//!   visitor stops at a result cap has seen exactly the first results in path order.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, OwnedFd};

use paddock_core::escape::{escape_bytes, escape_str};
use paddock_core::mount::Mount;
use paddock_core::sandbox::{EntryKind, MAX_UNREADABLE_REPORTED, Unreadable};
use paddock_core::{MountTable, SandboxError, VirtualPath};
use rustix::fs::{AtFlags, FileType, OFlags};
use rustix::io::Errno;

use crate::chain::{CHAIN_MAX_FDS, DirChain, Lost};
use crate::resolve::Resolved;

/// Most descriptors a walk holds at once (a visitor may hold more: grep's open files).
pub const WALK_MAX_FDS: usize = CHAIN_MAX_FDS;

/// Default budget of directory entries one walk reads before it stops (truncated).
pub const WALK_MAX_ENTRIES: usize = 1_000_000;

/// Budget of name bytes one walk keeps pending (read, not yet visited): with
/// `max_entries` this bounds the walk's own memory.
pub const WALK_MAX_NAME_BYTES: usize = 32 * 1024 * 1024;

/// Flags of a directory opened for reading entries.
const DIR_READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// One entry of a virtual directory, as a visitor sees it.
#[derive(Debug)]
pub(crate) struct Child<'a, 't> {
    /// Its exact name in the directory the visitor's fd refers to.
    pub name: &'a CStr,
    /// Its virtual path (a lossy stand-in when a name on it is not UTF-8).
    pub vpath: VirtualPath,
    /// The exact path escaped, when a name on it is not UTF-8.
    pub escaped: Option<String>,
    /// What it is (symlinks are not followed).
    pub kind: EntryKind,
    /// The mount rooted here, if any.
    pub mount: Option<&'t Mount>,
    /// Its level below the root (1 = a child of the root).
    pub depth: u32,
}

/// What to walk.
pub(crate) struct Spec<'a> {
    /// Which names to visit (and, for directories, enter); mounts are always kept.
    pub keep: &'a dyn Fn(&str) -> bool,
    /// Deepest level visited: 1 = the root's children only.
    pub max_depth: u32,
    /// Entries read before the walk stops and reports truncation.
    pub max_entries: usize,
}

/// Whether a visitor wants more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// What a walk could not do.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    /// Directories that could not be read, sorted by path.
    pub unreadable: Vec<Unreadable>,
    /// Whether the walk's budget stopped it, or more directories were unreadable than
    /// are reported.
    pub truncated: bool,
}

impl Walked {
    /// Adds directories a visitor found it could not read (within the report's cap).
    pub(crate) fn add_unreadable(&mut self, more: Vec<Unreadable>) {
        for u in more {
            if self.unreadable.len() >= MAX_UNREADABLE_REPORTED {
                self.truncated = true;
                break;
            }
            self.unreadable.push(u);
        }
        self.unreadable.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// An entry read but not visited yet: only its name, so memory is bounded by names.
#[derive(Debug)]
struct Pending<'t> {
    name: CString,
    kind: EntryKind,
    mount: Option<&'t Mount>,
    /// `false`: visit the entry itself; `true`: enter the directory.
    descend: bool,
    /// Whether `name` is UTF-8 (its virtual path then holds it unchanged).
    utf8: bool,
}

/// A directory being walked: chain level `i` is frame `i`.
#[derive(Debug)]
struct Frame<'t> {
    vdir: VirtualPath,
    escaped: Option<String>,
    depth: u32,
    /// Sorted so that `pop` yields the next in path order.
    pending: Vec<Pending<'t>>,
    /// Whether a name too long for a virtual path was reported already.
    too_long: bool,
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

/// Why a directory could not be read, in a few words.
fn reason(e: &std::io::Error) -> String {
    let known = match Errno::from_io_error(e) {
        Some(Errno::ACCESS | Errno::PERM) => "permission denied",
        Some(Errno::MFILE | Errno::NFILE) => "too many open files",
        Some(Errno::LOOP) => "replaced by a symlink, not followed",
        Some(Errno::NOTDIR) => "is no longer a directory",
        Some(Errno::NOENT) => "not found",
        Some(Errno::NAMETOOLONG) => "path too long",
        Some(other) => return std::io::Error::from(other).to_string(),
        None => return e.to_string(),
    };
    known.to_owned()
}

fn order_key<'p>(p: &'p Pending<'_>) -> Cow<'p, [u8]> {
    if p.utf8 {
        return Cow::Borrowed(p.name.to_bytes());
    }
    match String::from_utf8_lossy(p.name.to_bytes()) {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

/// The order of the virtual paths the entries stand for: by the name as the virtual path
/// holds it (lossy when not UTF-8), with `/` after the name of a directory to enter.
fn pending_order(a: &Pending<'_>, b: &Pending<'_>) -> Ordering {
    let (ka, kb) = (order_key(a), order_key(b));
    let slash = |d: bool| d.then_some(&b'/');
    ka.iter()
        .chain(slash(a.descend))
        .cmp(kb.iter().chain(slash(b.descend)))
}

fn kind_of(ft: FileType) -> EntryKind {
    match ft {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

struct Walk<'s, 't> {
    table: &'t MountTable,
    spec: &'s Spec<'s>,
    chain: DirChain,
    frames: Vec<Frame<'t>>,
    entries_read: usize,
    name_bytes: usize,
    /// The budget ran out: read no more directories.
    exhausted: bool,
    out: Walked,
}

impl<'t> Walk<'_, 't> {
    fn report(&mut self, path: VirtualPath, escaped_path: Option<String>, reason: String) {
        if self.out.unreadable.len() >= MAX_UNREADABLE_REPORTED {
            self.out.truncated = true;
            return;
        }
        tracing::debug!(path = %path, %reason, "reporting a directory that cannot be read");
        self.out.unreadable.push(Unreadable {
            path,
            escaped_path,
            reason,
        });
    }

    /// A level of the chain was lost: report its directory (or `child`, when the level
    /// is the one being entered) and abandon everything from that level up.
    fn lost(&mut self, lost: Lost, child: Option<(VirtualPath, Option<String>)>) {
        let why = reason(&lost.error);
        match self.frames.get(lost.level) {
            Some(f) => {
                let (p, e) = (f.vdir.clone(), f.escaped.clone());
                self.report(p, e, why);
            }
            None => {
                if let Some((p, e)) = child {
                    self.report(p, e, why);
                }
            }
        }
        self.frames.truncate(lost.level);
        self.chain.truncate(lost.level);
    }

    /// Reads the chain's top level, the directory `vdir` at `depth`, into a frame. The
    /// error, if any, came after the entries returned.
    fn read_frame(
        &mut self,
        vdir: VirtualPath,
        escaped: Option<String>,
        depth: u32,
    ) -> (Frame<'t>, Option<std::io::Error>) {
        let table = self.table;
        let spec = self.spec;
        // Same as `MountTable::child_mounts`, spelled out so the mounts keep the table's
        // lifetime. A UTF-8 name equal to one of these is shadowed by the mount.
        let mounts: Vec<&'t Mount> = table
            .mounts()
            .iter()
            .filter(|m| m.container.parent().as_ref() == Some(&vdir))
            .collect();
        let descend = depth + 1 < spec.max_depth;
        let mut pending = Vec::new();
        let (entries_read, name_bytes, exhausted, truncated) = (
            &mut self.entries_read,
            &mut self.name_bytes,
            &mut self.exhausted,
            &mut self.out.truncated,
        );
        let read = self
            .chain
            .read_top(&mut |fd: BorrowedFd<'_>, item: &rustix::fs::DirEntry| {
                let name = item.file_name();
                let bytes = name.to_bytes();
                if bytes == b"." || bytes == b".." {
                    return true;
                }
                *entries_read += 1;
                if *entries_read > spec.max_entries {
                    (*exhausted, *truncated) = (true, true);
                    return false;
                }
                let lossy = String::from_utf8_lossy(bytes);
                let utf8 = matches!(lossy, Cow::Borrowed(_));
                if !(spec.keep)(&lossy) {
                    return true;
                }
                if let Cow::Borrowed(n) = lossy
                    && mounts.iter().any(|m| m.container.file_name() == Some(n))
                {
                    return true;
                }
                let kind = match item.file_type() {
                    FileType::Unknown => {
                        match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st) => kind_of(FileType::from_raw_mode(st.st_mode)),
                            Err(Errno::NOENT) => return true,
                            // Shown without knowing its kind rather than left out.
                            Err(_) => EntryKind::Other,
                        }
                    }
                    ft => kind_of(ft),
                };
                let enter = descend && kind == EntryKind::Dir;
                *name_bytes += bytes.len() * (1 + usize::from(enter));
                if *name_bytes > WALK_MAX_NAME_BYTES {
                    (*exhausted, *truncated) = (true, true);
                    return false;
                }
                pending.push(Pending {
                    name: name.to_owned(),
                    kind,
                    mount: None,
                    descend: false,
                    utf8,
                });
                if enter {
                    pending.push(Pending {
                        name: name.to_owned(),
                        kind,
                        mount: None,
                        descend: true,
                        utf8,
                    });
                }
                true
            });
        for m in mounts {
            let Some(name) = m.container.file_name().and_then(|n| CString::new(n).ok()) else {
                continue;
            };
            if descend {
                pending.push(Pending {
                    name: name.clone(),
                    kind: EntryKind::Dir,
                    mount: Some(m),
                    descend: true,
                    utf8: true,
                });
            }
            pending.push(Pending {
                name,
                kind: EntryKind::Dir,
                mount: Some(m),
                descend: false,
                utf8: true,
            });
        }
        pending.sort_unstable_by(|a, b| pending_order(b, a));
        let frame = Frame {
            vdir,
            escaped,
            depth,
            pending,
            too_long: false,
        };
        (frame, read.err())
    }

    fn run(&mut self, visit: &mut dyn FnMut(BorrowedFd<'_>, &Child<'_, 't>) -> Flow) {
        loop {
            let Some(frame) = self.frames.last_mut() else {
                return;
            };
            let Some(p) = frame.pending.pop() else {
                self.frames.pop();
                self.chain.pop();
                continue;
            };
            if p.descend && self.exhausted {
                // The budget is spent: what was read is still visited, nothing more is read.
                continue;
            }
            let lossy = String::from_utf8_lossy(p.name.to_bytes());
            let Ok(vpath) = frame.vdir.child(&lossy) else {
                // Longer than a virtual path may be: cannot be named, so say where.
                if !std::mem::replace(&mut frame.too_long, true) {
                    let (v, e) = (frame.vdir.clone(), frame.escaped.clone());
                    self.report(v, e, "holds names too long for a virtual path".into());
                }
                continue;
            };
            let escaped = (matches!(lossy, Cow::Owned(_)) || frame.escaped.is_some()).then(|| {
                let mut s = match &frame.escaped {
                    Some(e) => e.clone(),
                    None => escape_str(frame.vdir.as_str()).into_owned(),
                };
                if !s.ends_with('/') {
                    s.push('/');
                }
                s.push_str(&escape_bytes(p.name.to_bytes()));
                s
            });
            let depth = frame.depth + 1;
            if p.descend {
                let level = self.chain.len();
                let opened = match p.mount {
                    Some(m) => self
                        .chain
                        .push_host_root(&m.host, OFlags::RDONLY, m.is_user_data())
                        .map_err(|error| Lost { level, error }),
                    None => self.chain.push_child(&p.name, OFlags::RDONLY),
                };
                if let Err(lost) = opened {
                    self.lost(lost, Some((vpath, escaped)));
                    continue;
                }
                let (frame, err) = self.read_frame(vpath.clone(), escaped.clone(), depth);
                if let Some(e) = err {
                    self.report(vpath, escaped, reason(&e));
                }
                self.frames.push(frame);
            } else {
                let fd = match self.chain.top() {
                    Ok(fd) => fd,
                    Err(lost) => {
                        self.lost(lost, None);
                        continue;
                    }
                };
                let child = Child {
                    name: &p.name,
                    vpath,
                    escaped,
                    kind: p.kind,
                    mount: p.mount,
                    depth,
                };
                if visit(fd, &child) == Flow::Stop {
                    return;
                }
            }
        }
    }
}

/// Walks the virtual tree below `root_fd` (the directory `root`, opened for reading),
/// calling `visit(dir_fd, child)` for every kept entry in path order until it returns
/// [`Flow::Stop`]. Failing to read the root itself is the error; anything below is
/// reported in the result.
pub(crate) fn walk<'t>(
    table: &'t MountTable,
    root_fd: OwnedFd,
    root: &VirtualPath,
    spec: &Spec<'_>,
    visit: &mut dyn FnMut(BorrowedFd<'_>, &Child<'_, 't>) -> Flow,
) -> std::io::Result<Walked> {
    let mut w = Walk {
        table,
        spec,
        chain: DirChain::default(),
        frames: Vec::new(),
        entries_read: 0,
        name_bytes: 0,
        exhausted: false,
        out: Walked::default(),
    };
    w.chain.push_fixed(root_fd);
    let (frame, err) = w.read_frame(root.clone(), None, 0);
    if let Some(e) = err {
        return Err(e);
    }
    w.frames.push(frame);
    w.run(visit);
    let mut out = w.out;
    out.unreadable.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::FOLLOW;
    use crate::testutil::tree;

    fn names(
        ops: &crate::FsOps,
        path: &str,
        max_depth: u32,
    ) -> (Vec<(String, EntryKind, bool)>, Walked) {
        let r = ops.resolve(path, FOLLOW).expect("resolve");
        let fd = open_root_dir(&r).expect("open");
        let spec = Spec {
            keep: &|_| true,
            max_depth,
            max_entries: WALK_MAX_ENTRIES,
        };
        let mut seen = Vec::new();
        let walked = walk(ops.table(), fd, r.vpath(), &spec, &mut |_, c| {
            seen.push((c.vpath.to_string(), c.kind, c.mount.is_some()));
            Flow::Continue
        })
        .expect("walk");
        (seen, walked)
    }

    #[test]
    fn children_shadow_and_add_mounts_in_path_order() {
        let t = tree();
        // A real `ro` directory under /w is shadowed by the /w/ro mount.
        std::fs::create_dir(t.w.join("ro")).expect("mkdir");
        std::fs::write(t.w.join("ro/hidden.txt"), "x").expect("write");
        // `d-x` sorts between `d` and `d/…` as a path, and must be visited there.
        std::fs::write(t.w.join("d-x"), "x").expect("write");
        let ops = t.ops(true);
        let (seen, walked) = names(&ops, "/w", 1);
        assert_eq!(
            seen,
            [
                ("/w/a.txt".to_owned(), EntryKind::File, false),
                ("/w/d".to_owned(), EntryKind::Dir, false),
                ("/w/d-x".to_owned(), EntryKind::File, false),
                ("/w/link".to_owned(), EntryKind::Symlink, false),
                ("/w/ro".to_owned(), EntryKind::Dir, true),
            ]
        );
        assert!(walked.unreadable.is_empty() && !walked.truncated);
        let (seen, _) = names(&ops, "/w", u32::MAX);
        let paths: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        assert_eq!(paths, sorted, "visited in path order");
        assert_eq!(
            paths,
            [
                "/w/a.txt",
                "/w/d",
                "/w/d-x",
                "/w/d/b.txt",
                "/w/d/e",
                "/w/link",
                "/w/ro",
                "/w/ro/r.txt"
            ]
        );
    }

    #[test]
    fn budget_stops_the_walk_and_says_so() {
        let t = tree();
        for i in 0..50 {
            std::fs::write(t.w.join(format!("f{i:02}")), "x").expect("write");
        }
        let ops = t.ops(false);
        let r = ops.resolve("/w", FOLLOW).expect("resolve");
        let fd = open_root_dir(&r).expect("open");
        let spec = Spec {
            keep: &|_| true,
            max_depth: u32::MAX,
            max_entries: 10,
        };
        let mut n = 0;
        let walked = walk(ops.table(), fd, r.vpath(), &spec, &mut |_, _| {
            n += 1;
            Flow::Continue
        })
        .expect("walk");
        assert!(walked.truncated);
        assert!(n <= 11, "{n}");
    }
}
