//! Paddock's file operations (SPEC section 4) over a [`MountTable`], shared by every
//! backend: read, write, upload, stat, list, glob, grep and str_replace.
//!
//! Invariant: every byte read or written lies beneath the host root of the mount that owns
//! the resolved virtual path. Paths are resolved with file descriptors (`openat2` with
//! `RESOLVE_BENEATH`, or an `O_NOFOLLOW` walk in the virtual namespace), directory trees
//! are traversed with fds opened `O_NOFOLLOW`, and final entries are opened `O_NOFOLLOW`,
//! so a symlink swapped in mid-operation is refused rather than followed. Errors carry
//! virtual paths only.
//!
//! The API is synchronous; async callers wrap it in `spawn_blocking`.

use std::sync::Arc;

use paddock_core::sandbox::{
    DEFAULT_DOWNLOAD_CAP_BYTES, DEFAULT_TEXT_CAP_BYTES, Entry, Glob, GlobOutcome, Grep,
    GrepOutcome, List, Listing, ReadBytes, ReadText, ReplaceOutcome, StrReplace, TextContent,
    WriteBytes, WriteOutcome, WriteText,
};
use paddock_core::{MountTable, SandboxError, VirtualPath};

mod chain;
pub mod ignore;
mod list;
mod read;
mod resolve;
mod search;
mod tree;
mod walker;
mod write;

pub use chain::HELD_FDS;
pub use ignore::{IGNORE_PATTERNS, is_ignored};
pub use search::{GREP_MAX_FDS, GREP_MAX_WORKERS, GREP_QUEUED_PER_WORKER};
pub use tree::{WALK_MAX_ENTRIES, WALK_MAX_FDS, WALK_MAX_NAME_BYTES};
pub use write::Upload;

/// Default cap on an upload (1 GiB).
pub const DEFAULT_UPLOAD_CAP_BYTES: u64 = 1024 * 1024 * 1024;

/// Limits and behaviour of [`FsOps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    /// Largest file `read_text` / `str_replace` loads, and largest text a `str_replace`
    /// may produce (a request's `max_bytes` may lower it).
    pub text_cap_bytes: u64,
    /// Largest byte range `open_read` hands out.
    pub download_cap_bytes: u64,
    /// Largest upload `begin_write` / `write_from_reader` accepts.
    pub upload_cap_bytes: u64,
    /// Chown files and directories this crate creates to `uid:gid`: the sandbox runs as an
    /// unprivileged uid while Paddock may run as root, and must own what it writes.
    pub owner: Option<(u32, u32)>,
    /// Make what this crate creates in a thread's data (the user-data mounts) private to
    /// `owner`: new files 0600, new directories 0700 (else 0644 and 0755, before the
    /// umask), so no other user of the host can read them. Off for data another program
    /// owns (DeerFlow's gateway), whose modes are its own.
    pub private_user_data: bool,
    /// Owners that replace `owner` in particular mounts (by container path). DeerFlow's
    /// gateway directories are shown to the sandbox through idmapped mounts, their owner
    /// on disk mapped to the sandbox's uid: what this crate creates there must belong to
    /// that owner (the gateway's user), not to the sandbox's uid, which those mounts do
    /// not map (the sandbox would see it as `nobody` and could not write it).
    pub mount_owners: Vec<(VirtualPath, (u32, u32))>,
    /// Always take the fd walk, never the `openat2` fast path (tests compare both).
    pub force_walk: bool,
    /// Directory entries one list, glob or grep reads before it stops and reports a
    /// truncated result: a bound on the work (and, with [`WALK_MAX_NAME_BYTES`], the
    /// memory) one request can cost, however large the tenant's tree.
    pub walk_max_entries: usize,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            text_cap_bytes: DEFAULT_TEXT_CAP_BYTES,
            download_cap_bytes: DEFAULT_DOWNLOAD_CAP_BYTES,
            upload_cap_bytes: DEFAULT_UPLOAD_CAP_BYTES,
            owner: None,
            private_user_data: false,
            mount_owners: Vec::new(),
            force_walk: false,
            walk_max_entries: WALK_MAX_ENTRIES,
        }
    }
}

impl FsOptions {
    /// Who owns what this crate creates in `mount`: its entry in
    /// [`mount_owners`](Self::mount_owners), else [`owner`](Self::owner).
    pub fn owner_for(&self, mount: &paddock_core::Mount) -> Option<(u32, u32)> {
        self.mount_owners
            .iter()
            .find(|(c, _)| *c == mount.container)
            .map(|(_, o)| *o)
            .or(self.owner)
    }
}

/// A regular file opened for streaming out.
#[derive(Debug)]
pub struct OpenedFile {
    /// Positioned at the requested offset.
    pub file: std::fs::File,
    /// Bytes to stream from there.
    pub len: u64,
    /// The whole file's size.
    pub file_size: u64,
    /// The resolved virtual path.
    pub vpath: VirtualPath,
}

/// File operations over one sandbox's mount table.
#[derive(Debug, Clone)]
pub struct FsOps {
    table: Arc<MountTable>,
    opts: FsOptions,
}

impl FsOps {
    /// Operations over `table` with `opts`.
    pub fn new(table: Arc<MountTable>, opts: FsOptions) -> Self {
        Self { table, opts }
    }

    /// The mount table.
    pub fn table(&self) -> &MountTable {
        &self.table
    }

    /// The options.
    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// Reads a UTF-8 text file, optionally a 1-based inclusive line range.
    pub fn read_text(&self, req: &ReadText) -> Result<TextContent, SandboxError> {
        read::read_text(self, req)
    }

    /// Opens a regular file for streaming a byte range out.
    pub fn open_read(&self, req: &ReadBytes) -> Result<OpenedFile, SandboxError> {
        read::open_read(self, req)
    }

    /// Writes text, creating parent directories; overwrite or append.
    pub fn write_text(&self, req: &WriteText) -> Result<WriteOutcome, SandboxError> {
        write::write_text(self, req)
    }

    /// Starts a write whose bytes the caller hands over in pieces ([`Upload::write`], then
    /// [`Upload::finish`]): atomic (temp file, fsync, rename) unless appending. Lets an
    /// async caller receive an upload without a thread waiting on the network.
    pub fn begin_write(&self, req: &WriteBytes) -> Result<Upload, SandboxError> {
        write::begin_write(self, req)
    }

    /// Writes bytes from `body`: atomically (temp file, fsync, rename) unless appending.
    pub fn write_from_reader(
        &self,
        req: &WriteBytes,
        body: &mut dyn std::io::Read,
    ) -> Result<WriteOutcome, SandboxError> {
        write::write_from_reader(self, req, body)
    }

    /// Facts about a path (symlinks followed).
    pub fn stat(&self, path: &str) -> Result<Entry, SandboxError> {
        read::stat(self, path)
    }

    /// Lists a directory to a depth.
    pub fn list(&self, req: &List) -> Result<Listing, SandboxError> {
        list::list(self, req)
    }

    /// Finds paths matching a glob under a root.
    pub fn glob(&self, req: &Glob) -> Result<GlobOutcome, SandboxError> {
        search::glob(self, req)
    }

    /// Searches file contents.
    pub fn grep(&self, req: &Grep) -> Result<GrepOutcome, SandboxError> {
        search::grep(self, req)
    }

    /// Replaces text in a file, writing it back atomically. The result's size is computed
    /// from the match count first and refused over the cap (`ResultTooLarge`), so a
    /// `replace_all` cannot blow a small file up.
    pub fn str_replace(&self, req: &StrReplace) -> Result<ReplaceOutcome, SandboxError> {
        write::str_replace(self, req)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A small real tree mounted at `/w` (writable, with `/w/ro` nested read-only) for the
    //! unit tests of this crate's modules.

    use std::path::PathBuf;
    use std::sync::Arc;

    use paddock_core::mount::{Mount, MountKind};
    use paddock_core::{MountTable, VirtualPath};

    use crate::{FsOps, FsOptions};

    pub(crate) struct Tree {
        pub _tmp: tempfile::TempDir,
        pub w: PathBuf,
        pub ro: PathBuf,
    }

    impl Tree {
        pub(crate) fn ops(&self, force_walk: bool) -> FsOps {
            let m = |c: &str, host: &PathBuf, read_only| Mount {
                container: VirtualPath::parse(c).expect("vp"),
                host: host.clone(),
                read_only,
                kind: MountKind::Custom,
            };
            let table = MountTable::new(vec![m("/w", &self.w, false), m("/w/ro", &self.ro, true)])
                .expect("table");
            FsOps::new(
                Arc::new(table),
                FsOptions {
                    force_walk,
                    ..FsOptions::default()
                },
            )
        }
    }

    pub(crate) fn tree() -> Tree {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        let (w, ro) = (base.join("w"), base.join("ro"));
        std::fs::create_dir_all(w.join("d/e")).expect("mkdir");
        std::fs::create_dir_all(&ro).expect("mkdir");
        std::fs::write(w.join("a.txt"), "one\ntwo\n").expect("write");
        std::fs::write(w.join("d/b.txt"), "bee\n").expect("write");
        std::fs::write(ro.join("r.txt"), "ro\n").expect("write");
        std::os::unix::fs::symlink("d/b.txt", w.join("link")).expect("symlink");
        Tree { _tmp: tmp, w, ro }
    }
}
