//! `glob` and `grep`: one fd-based walk of the virtual tree ([`crate::tree`]), pruning
//! ignored names and stopping once the result cap is exceeded.
//!
//! Invariant: files are opened relative to their directory fd with `O_NOFOLLOW`, and only
//! regular files are searched, so neither a symlink nor a swapped directory can bring
//! content from outside the mounts into results. Grep walks once on the calling thread and
//! searches in parallel on at most [`GREP_MAX_WORKERS`] scoped worker threads, each reusing
//! one `Searcher` and one read buffer. Files go to the workers in batches of one
//! directory's files with one descriptor on that directory (a worker opens each file
//! relative to it, `O_NOFOLLOW`, when it gets to it), at most [`GREP_QUEUED_PER_WORKER`]
//! batches queued per worker, so grep holds at most [`GREP_MAX_FDS`] descriptors. Files
//! are handed out in path order and every file handed out is searched to the end (up to
//! the cap), so the matches kept after sorting are exactly the first in path and line
//! order, whatever the scheduling.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use grep_regex::RegexMatcherBuilder;
use grep_searcher::sinks::Lossy;
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder};
use paddock_core::mount::Node;
use paddock_core::sandbox::{
    EntryKind, GREP_LINE_CUT_CHARS, GREP_MAX_FILE_BYTES, GREP_MAX_LINE_CHARS, Glob, GlobOutcome,
    Grep, GrepMatch, GrepOutcome,
};
use paddock_core::{SandboxError, VirtualPath};
use rustix::fs::{FileType, Mode, OFlags};

use crate::resolve::FOLLOW;
use crate::tree::{self, Flow, Spec, WALK_MAX_FDS, Walked, open_root_dir};
use crate::{FsOps, ignore};

/// Grep treats a file as binary when its first this-many bytes hold a NUL.
const BINARY_PROBE_BYTES: usize = 8 * 1024;

/// Most grep worker threads, whatever the host's parallelism: each holds one batch's
/// directory and one open file.
pub const GREP_MAX_WORKERS: usize = 8;
/// Batches waiting per worker, each holding one directory descriptor.
pub const GREP_QUEUED_PER_WORKER: usize = 2;
/// Most files in a batch.
const GREP_BATCH_FILES: usize = 64;
/// Most descriptors a grep holds at once: the walk's, the batch being filled, the queued
/// batches, and per worker its batch and the file it searches.
pub const GREP_MAX_FDS: usize =
    WALK_MAX_FDS + 1 + GREP_MAX_WORKERS * GREP_QUEUED_PER_WORKER + GREP_MAX_WORKERS * 2;

/// A glob over paths relative to a search root, right-anchored like the reference: a
/// pattern not starting with `/` or `**/` also matches at any depth, and `**/x` matches a
/// top-level `x`. A leading `/` anchors the pattern at the root.
#[derive(Debug, Clone)]
pub struct PathMatcher {
    set: GlobSet,
}

impl PathMatcher {
    /// Compiles `pattern`; `field` names the request field in errors.
    pub fn new(pattern: &str, field: &str) -> Result<Self, SandboxError> {
        if pattern.is_empty() {
            return Err(SandboxError::invalid_argument(field, "is empty"));
        }
        if pattern.contains('\0') {
            return Err(SandboxError::invalid_argument(field, "contains a NUL byte"));
        }
        // `./x` means `x` relative to the root (relative paths never start with `./`).
        let mut pattern = pattern;
        while let Some(rest) = pattern.strip_prefix("./") {
            pattern = rest;
        }
        if pattern.is_empty() {
            return Err(SandboxError::invalid_argument(field, "is empty"));
        }
        let variants: Vec<String> = if let Some(anchored) = pattern.strip_prefix('/') {
            vec![anchored.trim_start_matches('/').to_owned()]
        } else if pattern.starts_with("**/") {
            vec![pattern.to_owned()]
        } else {
            vec![pattern.to_owned(), format!("**/{pattern}")]
        };
        let mut b = GlobSetBuilder::new();
        for v in &variants {
            let g = GlobBuilder::new(v)
                .literal_separator(true)
                .build()
                .map_err(|e| SandboxError::invalid_argument(field, e.kind().to_string()))?;
            b.add(g);
        }
        let set = b
            .build()
            .map_err(|e| SandboxError::invalid_argument(field, e.to_string()))?;
        Ok(Self { set })
    }

    /// Whether the relative path `rel` matches.
    pub fn is_match(&self, rel: &str) -> bool {
        self.set.is_match(rel)
    }
}

/// A walk of the whole virtual tree below the root, pruning ignored names and never
/// entering symlinks (see [`crate::tree`]).
fn search_spec(ops: &FsOps) -> Spec<'static> {
    Spec {
        keep: &|name: &str| !ignore::is_ignored(name),
        max_depth: u32::MAX,
        max_entries: ops.options().walk_max_entries,
    }
}

fn rel_of<'a>(path: &'a VirtualPath, root: &VirtualPath) -> &'a str {
    path.strip_prefix(root).unwrap_or(path.as_str())
}

pub(crate) fn glob(ops: &FsOps, req: &Glob) -> Result<GlobOutcome, SandboxError> {
    let matcher = PathMatcher::new(&req.pattern, "pattern")?;
    let r = ops.resolve(&req.path, FOLLOW)?;
    let root_fd = open_root_dir(&r)?;
    let root = r.vpath().clone();
    let mut found: Vec<(VirtualPath, Option<String>)> = Vec::new();
    // Entries come in path order, so the walk stops once it has one match past the cap.
    let walked = tree::walk(
        ops.table(),
        root_fd,
        &root,
        &search_spec(ops),
        &mut |_, child| {
            let wanted = match child.kind {
                EntryKind::Dir => req.include_dirs,
                EntryKind::File | EntryKind::Symlink | EntryKind::Other => true,
            };
            if wanted && matcher.is_match(rel_of(&child.vpath, &root)) {
                found.push((child.vpath.clone(), child.escaped.clone()));
            }
            if found.len() > req.max_results {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
    )
    .map_err(|e| SandboxError::from_io("read", root.as_str(), &e))?;
    found.sort();
    let truncated = walked.truncated || found.len() > req.max_results;
    found.truncate(req.max_results);
    let mut escaped_paths = BTreeMap::new();
    let paths = found
        .into_iter()
        .enumerate()
        .map(|(i, (path, escaped))| {
            if let Some(e) = escaped {
                escaped_paths.insert(i, e);
            }
            path
        })
        .collect();
    Ok(GlobOutcome {
        paths,
        truncated,
        escaped_paths,
        unreadable: walked.unreadable,
    })
}

/// One file being searched.
struct Job {
    vpath: VirtualPath,
    escaped: Option<String>,
    file: std::fs::File,
}

/// A file of a [`Batch`], not opened yet.
struct FileJob {
    name: CString,
    vpath: VirtualPath,
    escaped: Option<String>,
}

/// Consecutive files of one directory handed to a worker together, with one descriptor
/// on that directory: the queue costs one descriptor per batch, not one per file, and a
/// handoff per batch rather than per file.
struct Batch {
    dir: Arc<OwnedFd>,
    vdir: VirtualPath,
    files: Vec<FileJob>,
}

/// Per-worker search state, reused across files.
struct Worker<'m> {
    matcher: &'m grep_regex::RegexMatcher,
    searcher: Searcher,
    buf: Vec<u8>,
    /// Per-file cap: a file never needs to contribute more than the global cap plus one.
    per_file: usize,
    /// Matches found by every worker so far: the walk stops handing out files past the cap.
    found: &'m AtomicUsize,
}

impl Worker<'_> {
    fn search_batch(&mut self, batch: Batch, out: &mut Vec<GrepMatch>) {
        for f in batch.files {
            if let Some(file) = open_file(batch.dir.as_fd(), &f.name) {
                let job = Job {
                    vpath: f.vpath,
                    escaped: f.escaped,
                    file,
                };
                self.search(&job, out);
            }
        }
    }

    fn search(&mut self, job: &Job, out: &mut Vec<GrepMatch>) {
        let Ok(st) = rustix::fs::fstat(&job.file) else {
            return;
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_size.max(0) as u64 > GREP_MAX_FILE_BYTES
        {
            return;
        }
        self.buf.clear();
        if (&job.file)
            .take(GREP_MAX_FILE_BYTES + 1)
            .read_to_end(&mut self.buf)
            .is_err()
            || self.buf.len() as u64 > GREP_MAX_FILE_BYTES
        {
            return;
        }
        let probe = &self.buf[..self.buf.len().min(BINARY_PROBE_BYTES)];
        if probe.contains(&0) {
            return;
        }
        let per_file = self.per_file;
        let total = self.found;
        let mut found = 0usize;
        let sink = Lossy(|line_number, line: &str| {
            let line = line.trim_end_matches(['\n', '\r']);
            if line.len() > GREP_MAX_LINE_CHARS && line.chars().count() > GREP_MAX_LINE_CHARS {
                return Ok(true);
            }
            out.push(GrepMatch {
                path: job.vpath.clone(),
                line_number,
                line: cut_line(line),
                escaped_path: job.escaped.clone(),
            });
            found += 1;
            total.fetch_add(1, Ordering::Relaxed);
            Ok(found < per_file)
        });
        if let Err(e) = self.searcher.search_slice(self.matcher, &self.buf, sink) {
            tracing::debug!(path = %job.vpath, error = %e, "search failed");
        }
    }
}

/// Right-trims and cuts a matched line to [`GREP_LINE_CUT_CHARS`] chars (197 + `...`).
pub(crate) fn cut_line(line: &str) -> String {
    let line = line.trim_end();
    if line.chars().count() <= GREP_LINE_CUT_CHARS {
        return line.to_owned();
    }
    let mut s: String = line.chars().take(GREP_LINE_CUT_CHARS - 3).collect();
    s.push_str("...");
    s
}

fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> Option<std::fs::File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty())
        .ok()
        .map(std::fs::File::from)
}

pub(crate) fn grep(ops: &FsOps, req: &Grep) -> Result<GrepOutcome, SandboxError> {
    let pattern = if req.literal {
        regex::escape(&req.pattern)
    } else {
        req.pattern.clone()
    };
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(!req.case_sensitive)
        .line_terminator(Some(b'\n'))
        .build(&pattern)
        .map_err(|e| SandboxError::invalid_argument("pattern", e.to_string()))?;
    let filter = req
        .glob
        .as_deref()
        .map(|g| PathMatcher::new(g, "glob"))
        .transpose()?;
    let r = ops.resolve(&req.path, FOLLOW)?;
    let per_file = req.max_results.saturating_add(1);
    let found = AtomicUsize::new(0);
    let new_worker = || Worker {
        matcher: &matcher,
        searcher: SearcherBuilder::new()
            .line_number(true)
            .binary_detection(BinaryDetection::none())
            .build(),
        buf: Vec::with_capacity(64 * 1024),
        per_file,
        found: &found,
    };
    let mut matches = Vec::new();
    let mut walked = Walked::default();
    match r.node() {
        Node::File => {
            let name = r.vpath().file_name().unwrap_or_default();
            if filter.as_ref().is_none_or(|f| f.is_match(name)) {
                let file = r.open("open", OFlags::RDONLY | OFlags::NONBLOCK, 0)?;
                let job = Job {
                    vpath: r.vpath().clone(),
                    escaped: None,
                    file: std::fs::File::from(file),
                };
                new_worker().search(&job, &mut matches);
            }
        }
        Node::Dir => {
            let root_fd = open_root_dir(&r)?;
            let root = r.vpath().clone();
            let workers = std::thread::available_parallelism()
                .map_or(2, usize::from)
                .clamp(1, GREP_MAX_WORKERS);
            let (tx, rx) = mpsc::sync_channel::<Batch>(workers * GREP_QUEUED_PER_WORKER);
            // Only the workers hold the receiver: if they all died, `send` fails instead
            // of blocking the walk forever on a full channel.
            let rx = Arc::new(Mutex::new(rx));
            std::thread::scope(|s| -> Result<(), SandboxError> {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        let rx = Arc::clone(&rx);
                        let mut w = new_worker();
                        s.spawn(move || {
                            let mut out = Vec::new();
                            loop {
                                let batch = match rx.lock() {
                                    Ok(guard) => guard.recv(),
                                    Err(_) => break,
                                };
                                let Ok(batch) = batch else { break };
                                w.search_batch(batch, &mut out);
                            }
                            out
                        })
                    })
                    .collect();
                drop(rx);
                let mut batch: Option<Batch> = None;
                // A send error means every worker is gone; the join below reports it.
                let send = |b: Batch| {
                    let _ = tx.send(b);
                };
                let walk = tree::walk(
                    ops.table(),
                    root_fd,
                    &root,
                    &search_spec(ops),
                    &mut |dir, child| {
                        if child.kind == EntryKind::File
                            && filter
                                .as_ref()
                                .is_none_or(|f| f.is_match(rel_of(&child.vpath, &root)))
                        {
                            let parent = child.vpath.parent();
                            if let Some(b) = batch.take_if(|b| {
                                b.files.len() >= GREP_BATCH_FILES
                                    || Some(&b.vdir) != parent.as_ref()
                            }) {
                                send(b);
                            }
                            if batch.is_none() {
                                // One descriptor for the whole batch: the worker opens
                                // each file relative to it, `O_NOFOLLOW`, when it gets there.
                                match rustix::io::fcntl_dupfd_cloexec(dir, 0) {
                                    Ok(fd) => {
                                        batch = Some(Batch {
                                            dir: Arc::new(fd),
                                            vdir: parent.unwrap_or_else(VirtualPath::root),
                                            files: Vec::new(),
                                        });
                                    }
                                    Err(e) => {
                                        tracing::debug!(path = %child.vpath, error = %e, "cannot hold the directory of a file to grep");
                                    }
                                }
                            }
                            if let Some(b) = batch.as_mut() {
                                b.files.push(FileJob {
                                    name: child.name.to_owned(),
                                    vpath: child.vpath.clone(),
                                    escaped: child.escaped.clone(),
                                });
                            }
                        }
                        // Files go out in path order: once the files handed out hold more
                        // matches than the cap, later files cannot be among the first.
                        if found.load(Ordering::Relaxed) > req.max_results {
                            Flow::Stop
                        } else {
                            Flow::Continue
                        }
                    },
                );
                if let Some(b) = batch.take() {
                    send(b);
                }
                drop(tx);
                for h in handles {
                    match h.join() {
                        Ok(out) => matches.extend(out),
                        Err(_) => {
                            return Err(SandboxError::Internal {
                                message: "a grep worker panicked".into(),
                            });
                        }
                    }
                }
                walked = walk.map_err(|e| SandboxError::from_io("read", root.as_str(), &e))?;
                Ok(())
            })?;
        }
        Node::Missing => return Err(SandboxError::NotFound { path: r.shown() }),
        _ => {
            return Err(SandboxError::invalid_path(
                r.requested.as_str(),
                "is not a regular file or directory",
            ));
        }
    }
    matches.sort_by(|a, b| a.path.cmp(&b.path).then(a.line_number.cmp(&b.line_number)));
    let truncated = walked.truncated || matches.len() > req.max_results;
    matches.truncate(req.max_results);
    Ok(GrepOutcome {
        matches,
        truncated,
        unreadable: walked.unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_anchored_globs() {
        let m = PathMatcher::new("*.py", "pattern").expect("test setup");
        assert!(m.is_match("a.py") && m.is_match("x/y/a.py"));
        assert!(!m.is_match("a.pyc"));
        let m = PathMatcher::new("**/*.rs", "pattern").expect("test setup");
        assert!(m.is_match("main.rs") && m.is_match("src/main.rs"));
        let m = PathMatcher::new("src/*.rs", "pattern").expect("test setup");
        assert!(m.is_match("src/a.rs") && m.is_match("crates/x/src/a.rs"));
        assert!(
            !m.is_match("src/sub/a.rs"),
            "literal_separator: * does not cross /"
        );
        let m = PathMatcher::new("./src/*.rs", "pattern").expect("test setup");
        assert!(m.is_match("src/a.rs") && m.is_match("x/src/a.rs"));
        let m = PathMatcher::new("/src/*.rs", "pattern").expect("test setup");
        assert!(m.is_match("src/a.rs") && !m.is_match("crates/x/src/a.rs"));
        let e = PathMatcher::new("a[", "pattern").expect_err("must fail");
        assert_eq!(e.code(), "invalid_argument");
        assert!(
            PathMatcher::new("", "glob")
                .expect_err("must fail")
                .to_string()
                .contains("glob")
        );
    }

    #[test]
    fn lines_are_cut() {
        assert_eq!(cut_line("abc  \t"), "abc");
        let long = "é".repeat(300);
        let c = cut_line(&long);
        assert_eq!(c.chars().count(), 200);
        assert!(c.ends_with("...") && c.starts_with("ééé"));
        assert_eq!(cut_line(&"x".repeat(200)).len(), 200);
    }
}
