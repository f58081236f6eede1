//! The `Sandbox` trait: the operations of SPEC section 4 with structured requests and
//! outcomes. Every backend (local runtime, remote agent, Kubernetes Pod) implements it,
//! and one conformance suite checks them all. Paths in requests are *virtual* strings;
//! each backend resolves them through its mount table.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
use crate::vpath::VirtualPath;

/// Default wall-clock timeout of a command.
pub const DEFAULT_EXEC_TIMEOUT_SECS: f64 = 600.0;
/// Default cap on each of stdout and stderr.
pub const DEFAULT_OUTPUT_CAP_BYTES: u64 = 10 * 1024 * 1024;
/// Default cap on a download / byte read.
pub const DEFAULT_DOWNLOAD_CAP_BYTES: u64 = 100 * 1024 * 1024;
/// Default list depth.
pub const DEFAULT_LIST_DEPTH: u32 = 2;
/// Default cap on listed entries.
pub const DEFAULT_LIST_MAX_ENTRIES: usize = 10_000;
/// Default glob result cap.
pub const DEFAULT_GLOB_MAX_RESULTS: usize = 200;
/// Default grep result cap.
pub const DEFAULT_GREP_MAX_RESULTS: usize = 100;
/// Grep skips files larger than this.
pub const GREP_MAX_FILE_BYTES: u64 = 1_000_000;
/// Grep skips lines longer than this (a guard against pathological regexes).
pub const GREP_MAX_LINE_CHARS: usize = 2_000;
/// Grep cuts matched lines to this many chars (197 + `...`).
pub const GREP_LINE_CUT_CHARS: usize = 200;
/// Largest text file `read_text` / `str_replace` will load.
pub const DEFAULT_TEXT_CAP_BYTES: u64 = 100 * 1024 * 1024;
/// Most unreadable directories one list, glob or grep reports; past this many the result
/// is marked truncated instead.
pub const MAX_UNREADABLE_REPORTED: usize = 100;

/// A stream of bytes (downloads, uploads).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, SandboxError>> + Send>>;
/// A stream of exec events; the last item is [`ExecEvent::Exit`].
pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecEvent, SandboxError>> + Send>>;

/// Validates an environment variable name: `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn validate_env_key(key: &str) -> Result<(), SandboxError> {
    let mut chars = key.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::invalid_argument(
            "env",
            format!(
                "invalid variable name {:?}: must match ^[A-Za-z_][A-Za-z0-9_]*$",
                crate::error::shown(key)
            ),
        ))
    }
}

/// Run a command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Run by `/bin/bash -c` (or `/bin/sh -c`).
    pub command: String,
    /// Extra environment, layered over the scrubbed base.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock timeout in seconds (default 600).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Working directory (virtual; default `/mnt/user-data/workspace`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Per-stream output cap in bytes (default 10 MiB; the backend's cap is an upper bound).
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
}

impl ExecRequest {
    /// A request for `command` with defaults.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            ..Self::default()
        }
    }

    /// Validates fields every backend must refuse the same way.
    pub fn validate(&self) -> Result<(), SandboxError> {
        if self.command.contains('\0') {
            return Err(SandboxError::invalid_argument(
                "command",
                "contains a NUL byte",
            ));
        }
        for (k, v) in &self.env {
            validate_env_key(k)?;
            if v.contains('\0') {
                return Err(SandboxError::invalid_argument(
                    "env",
                    format!("value of {k} contains a NUL byte"),
                ));
            }
        }
        if let Some(t) = self.timeout_secs
            && !(t.is_finite() && t > 0.0 && t <= 86_400.0)
        {
            return Err(SandboxError::invalid_argument(
                "timeout",
                "must be a number of seconds greater than 0 and at most 86400",
            ));
        }
        Ok(())
    }
}

/// One event of a running command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    /// A chunk of stdout.
    Stdout {
        /// The bytes (lossy UTF-8 on the wire).
        #[serde(with = "lossy_bytes")]
        data: Bytes,
    },
    /// A chunk of stderr.
    Stderr {
        /// The bytes (lossy UTF-8 on the wire).
        #[serde(with = "lossy_bytes")]
        data: Bytes,
    },
    /// The command ended.
    Exit(ExecExit),
}

mod lossy_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecExit {
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when it was killed.
    pub signal: Option<i32>,
    /// Whether the wall-clock timeout killed it.
    pub timed_out: bool,
    /// Whether the memory limit killed it.
    #[serde(default)]
    pub oom_killed: bool,
    /// Bytes of stdout dropped past the cap.
    pub stdout_dropped: u64,
    /// Bytes of stderr dropped past the cap.
    pub stderr_dropped: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl ExecExit {
    /// The conventional shell status: the exit code, 128+signal, or 124 on timeout.
    pub fn shell_status(&self) -> i32 {
        if self.timed_out {
            124
        } else if let Some(s) = self.signal {
            128 + s
        } else {
            self.exit_code.unwrap_or(1)
        }
    }
}

/// The collected result of a command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecOutcome {
    /// Stdout as UTF-8 (lossy), with a truncation marker when capped.
    pub stdout: String,
    /// Stderr as UTF-8 (lossy), with a truncation marker when capped.
    pub stderr: String,
    /// Whether stdout was capped.
    pub stdout_truncated: bool,
    /// Whether stderr was capped.
    pub stderr_truncated: bool,
    /// How it ended.
    #[serde(flatten)]
    pub exit: ExecExit,
}

/// The marker appended to a capped stream.
pub fn truncation_marker(kept: u64, total: u64) -> String {
    format!(
        "\n... [output truncated after {kept} of {total} bytes; remaining output discarded] ..."
    )
}

impl ExecOutcome {
    /// Builds the outcome from captured bytes and the exit record.
    pub fn from_parts(stdout: &[u8], stderr: &[u8], exit: ExecExit) -> Self {
        let render = |bytes: &[u8], dropped: u64| {
            let mut s = String::from_utf8_lossy(bytes).into_owned();
            if dropped > 0 {
                let kept = bytes.len() as u64;
                s.push_str(&truncation_marker(kept, kept + dropped));
            }
            s
        };
        Self {
            stdout: render(stdout, exit.stdout_dropped),
            stderr: render(stderr, exit.stderr_dropped),
            stdout_truncated: exit.stdout_dropped > 0,
            stderr_truncated: exit.stderr_dropped > 0,
            exit,
        }
    }

    /// Collects an event stream into an outcome.
    pub async fn collect(mut stream: ExecStream) -> Result<Self, SandboxError> {
        let mut out = Vec::new();
        let mut err = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await;
            match next {
                Some(Ok(ExecEvent::Stdout { data })) => out.extend_from_slice(&data),
                Some(Ok(ExecEvent::Stderr { data })) => err.extend_from_slice(&data),
                Some(Ok(ExecEvent::Exit(exit))) => return Ok(Self::from_parts(&out, &err, exit)),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(SandboxError::Internal {
                        message: "command stream ended without an exit record".into(),
                    });
                }
            }
        }
    }
}

/// Read a text file, optionally a 1-based inclusive line range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadText {
    /// Virtual path.
    pub path: String,
    /// First line (1-based, inclusive).
    #[serde(default)]
    pub start_line: Option<u64>,
    /// Last line (1-based, inclusive).
    #[serde(default)]
    pub end_line: Option<u64>,
    /// Refuse files larger than this many bytes (the backend's cap is an upper bound): a
    /// text read is held in memory whole, so this bounds what one read costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl ReadText {
    /// A whole-file read.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Validates the range: lines are 1-based and `start <= end`.
    pub fn validate(&self) -> Result<(), SandboxError> {
        if self.start_line == Some(0) {
            return Err(SandboxError::invalid_argument("start_line", "must be >= 1"));
        }
        if self.end_line == Some(0) {
            return Err(SandboxError::invalid_argument("end_line", "must be >= 1"));
        }
        if let (Some(s), Some(e)) = (self.start_line, self.end_line)
            && s > e
        {
            return Err(SandboxError::invalid_argument(
                "start_line",
                "is greater than end_line",
            ));
        }
        Ok(())
    }
}

/// Text read back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextContent {
    /// The normalised virtual path.
    pub path: String,
    /// The text. With a range, lines are joined by `\n` without a trailing newline.
    pub content: String,
    /// Lines in the whole file.
    pub total_lines: u64,
}

/// Read bytes, optionally a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadBytes {
    /// Virtual path.
    pub path: String,
    /// First byte.
    #[serde(default)]
    pub offset: u64,
    /// How many bytes (to the end when absent).
    #[serde(default)]
    pub len: Option<u64>,
}

/// A file being streamed out.
pub struct FileStream {
    /// Bytes the stream will yield.
    pub len: u64,
    /// The whole file's size.
    pub file_size: u64,
    /// The bytes.
    pub stream: ByteStream,
}

impl std::fmt::Debug for FileStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStream")
            .field("len", &self.len)
            .field("file_size", &self.file_size)
            .finish()
    }
}

/// Write text (creates parent directories).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteText {
    /// Virtual path.
    pub path: String,
    /// The text.
    pub content: String,
    /// Append instead of overwrite.
    #[serde(default)]
    pub append: bool,
}

/// Write bytes from a stream, atomically (temp file + rename) unless appending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBytes {
    /// Virtual path.
    pub path: String,
    /// Append instead of replace (not atomic).
    #[serde(default)]
    pub append: bool,
    /// Refuse more than this many bytes (the backend's cap is an upper bound).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// The normalised virtual path written.
    pub path: String,
    /// Bytes written.
    pub bytes_written: u64,
}

/// Kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symlink (not followed).
    Symlink,
    /// Anything else.
    Other,
}

/// A path as shown to a model: `escaped` when the walk had to write one (a name on the
/// path is not UTF-8), else `path` with its control characters escaped
/// ([`crate::escape`]).
fn shown_path<'a>(path: &'a VirtualPath, escaped: Option<&'a str>) -> Cow<'a, str> {
    match escaped {
        Some(e) => Cow::Borrowed(e),
        None => crate::escape::escape_str(path.as_str()),
    }
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Virtual path. When a name on it is not UTF-8 this is a lossy stand-in (invalid
    /// bytes as U+FFFD) and `escaped_path` holds the exact path.
    pub path: VirtualPath,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub modified: Option<i64>,
    /// The exact path with every byte that is not UTF-8 written `\xNN` (and control
    /// characters and backslashes escaped, see [`crate::escape`]); present only when a
    /// name on the path is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escaped_path: Option<String>,
}

impl Entry {
    /// The path as listed: directories end with `/`.
    pub fn display(&self) -> String {
        if self.kind == EntryKind::Dir && !self.path.is_root() {
            format!("{}/", self.path)
        } else {
            self.path.to_string()
        }
    }

    /// Like [`Entry::display`], escaped for text shown to a model: one line, no control
    /// characters, exact even for names that are not UTF-8.
    pub fn shown(&self) -> String {
        let p = shown_path(&self.path, self.escaped_path.as_deref());
        if self.kind == EntryKind::Dir && !self.path.is_root() {
            format!("{p}/")
        } else {
            p.into_owned()
        }
    }
}

/// A directory that a list, glob or grep found but could not read (permission denied, no
/// descriptor left, swapped for a symlink, changed during the walk, a path too long to
/// name): whatever lies beneath it is missing from the result, and this says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// Virtual path (a lossy stand-in when a name on it is not UTF-8, as in [`Entry`]).
    pub path: VirtualPath,
    /// The exact path escaped, when a name on it is not UTF-8 (as in [`Entry`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escaped_path: Option<String>,
    /// Why, in a few words (`permission denied`, `too many open files`, ...).
    pub reason: String,
}

impl Unreadable {
    /// The path escaped for text shown to a model.
    pub fn shown(&self) -> Cow<'_, str> {
        shown_path(&self.path, self.escaped_path.as_deref())
    }
}

/// List a directory to a depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Virtual path.
    pub path: String,
    /// 1 = children only (default 2).
    #[serde(default = "default_depth")]
    pub max_depth: u32,
    /// Include names starting with `.` (default true, as the reference's local mode).
    #[serde(default = "default_true")]
    pub show_hidden: bool,
    /// Apply the reference's ignore list (default true).
    #[serde(default = "default_true")]
    pub apply_ignore: bool,
    /// Cap on entries.
    #[serde(default = "default_list_max")]
    pub max_entries: usize,
}

fn default_depth() -> u32 {
    DEFAULT_LIST_DEPTH
}
fn default_true() -> bool {
    true
}
fn default_list_max() -> usize {
    DEFAULT_LIST_MAX_ENTRIES
}

impl List {
    /// Defaults for `path`.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            max_depth: DEFAULT_LIST_DEPTH,
            show_hidden: true,
            apply_ignore: true,
            max_entries: DEFAULT_LIST_MAX_ENTRIES,
        }
    }
}

/// Entries, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The entries (the root itself is not included).
    pub entries: Vec<Entry>,
    /// Whether the list is incomplete: `max_entries` cut it, the walk's own budget ran
    /// out, or more than [`MAX_UNREADABLE_REPORTED`] directories could not be read.
    pub truncated: bool,
    /// Directories below the root that could not be read, sorted by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

/// Find paths matching a glob under a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Glob {
    /// Root (virtual).
    pub path: String,
    /// Pattern relative to the root; `**` is recursive.
    pub pattern: String,
    /// Also match directories.
    #[serde(default)]
    pub include_dirs: bool,
    /// Result cap.
    #[serde(default = "default_glob_max")]
    pub max_results: usize,
}

fn default_glob_max() -> usize {
    DEFAULT_GLOB_MAX_RESULTS
}

impl Glob {
    /// Defaults for `path` and `pattern`.
    pub fn new(path: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            pattern: pattern.into(),
            include_dirs: false,
            max_results: DEFAULT_GLOB_MAX_RESULTS,
        }
    }
}

/// Matched paths, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobOutcome {
    /// Virtual paths (lossy stand-ins where a name is not UTF-8: see `escaped_paths`).
    pub paths: Vec<VirtualPath>,
    /// Whether the result is incomplete: the cap was hit, the walk's own budget ran out,
    /// or more than [`MAX_UNREADABLE_REPORTED`] directories could not be read.
    pub truncated: bool,
    /// For `paths[i]` with a name that is not UTF-8: `i` and the exact path escaped (as
    /// [`Entry::escaped_path`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub escaped_paths: BTreeMap<usize, String>,
    /// Directories below the root that could not be read, sorted by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

impl GlobOutcome {
    /// `paths[i]` escaped for text shown to a model.
    pub fn shown(&self, i: usize) -> Cow<'_, str> {
        match (self.escaped_paths.get(&i), self.paths.get(i)) {
            (Some(e), _) => Cow::Borrowed(e.as_str()),
            (None, Some(p)) => crate::escape::escape_str(p.as_str()),
            (None, None) => Cow::Borrowed(""),
        }
    }
}

/// Search file contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grep {
    /// A file or a directory (virtual).
    pub path: String,
    /// Regex (or literal text with `literal`).
    pub pattern: String,
    /// Only files whose path relative to the root matches this glob.
    #[serde(default)]
    pub glob: Option<String>,
    /// Treat `pattern` as literal text.
    #[serde(default)]
    pub literal: bool,
    /// Case-sensitive (default false).
    #[serde(default)]
    pub case_sensitive: bool,
    /// Result cap.
    #[serde(default = "default_grep_max")]
    pub max_results: usize,
}

fn default_grep_max() -> usize {
    DEFAULT_GREP_MAX_RESULTS
}

impl Grep {
    /// Defaults for `path` and `pattern`.
    pub fn new(path: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            pattern: pattern.into(),
            glob: None,
            literal: false,
            case_sensitive: false,
            max_results: DEFAULT_GREP_MAX_RESULTS,
        }
    }
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepMatch {
    /// The file (virtual; a lossy stand-in when a name on it is not UTF-8).
    pub path: VirtualPath,
    /// 1-based line number.
    pub line_number: u64,
    /// The line, right-trimmed and cut to 200 chars.
    pub line: String,
    /// The exact path escaped, when a name on it is not UTF-8 (as in [`Entry`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escaped_path: Option<String>,
}

impl GrepMatch {
    /// The path escaped for text shown to a model.
    pub fn shown(&self) -> Cow<'_, str> {
        shown_path(&self.path, self.escaped_path.as_deref())
    }
}

/// Matches in path order, then line order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepOutcome {
    /// The matches.
    pub matches: Vec<GrepMatch>,
    /// Whether the result is incomplete: the cap was hit, the walk's own budget ran out,
    /// or more than [`MAX_UNREADABLE_REPORTED`] directories could not be read.
    pub truncated: bool,
    /// Directories below the root that could not be read, sorted by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

/// Replace text in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrReplace {
    /// Virtual path.
    pub path: String,
    /// Text to find (empty: no-op).
    pub old: String,
    /// Replacement.
    pub new: String,
    /// Replace every occurrence (else the first).
    #[serde(default)]
    pub replace_all: bool,
    /// Refuse when `old` occurs more than once.
    #[serde(default)]
    pub expect_unique: bool,
    /// Refuse when the file, or the text it would become, is larger than this many bytes
    /// (the backend's cap is an upper bound). The result's size is computed from the match
    /// count before it is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// What a replace did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceOutcome {
    /// Occurrences replaced.
    pub replacements: usize,
}

/// Facts about a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// Its id.
    pub id: String,
    /// The working directory of commands.
    pub home_dir: String,
    /// The backend (`local`, `remote`, …).
    pub backend: String,
    /// The isolation level (`isolated`, `none`, `pod`).
    pub isolation: String,
    /// Virtual paths of its mounts, with their access.
    pub mounts: Vec<MountInfo>,
}

/// A mount as shown to clients (never the host path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// Virtual path.
    pub path: String,
    /// Read-only.
    pub read_only: bool,
}

/// One execution environment. Every method resolves paths through the sandbox's mount
/// table and reports errors with virtual paths only.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// Facts about this sandbox.
    fn info(&self) -> SandboxInfo;

    /// Waits until the sandbox can run a command at once (a local sandbox's jail is built),
    /// or says why it cannot. Readiness probes (`GET /v1/sandbox`) call it, so a client that
    /// waits for readiness, as DeerFlow's provider does, finds its first command as fast as
    /// any later one.
    async fn ready(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    /// The environment every command starts with when its request adds nothing, if the
    /// backend knows it without running a command (a remote one does not).
    fn base_env(&self) -> Option<std::collections::BTreeMap<String, String>> {
        None
    }

    /// Runs a command, streaming its output; the stream ends with [`ExecEvent::Exit`].
    async fn exec_stream(&self, req: ExecRequest) -> Result<ExecStream, SandboxError>;

    /// Runs a command and collects its output.
    async fn exec(&self, req: ExecRequest) -> Result<ExecOutcome, SandboxError> {
        let stream = self.exec_stream(req).await?;
        ExecOutcome::collect(stream).await
    }

    /// Reads a UTF-8 text file.
    async fn read_text(&self, req: ReadText) -> Result<TextContent, SandboxError>;

    /// Streams a file's bytes.
    async fn read_bytes(&self, req: ReadBytes) -> Result<FileStream, SandboxError>;

    /// Writes text.
    async fn write_text(&self, req: WriteText) -> Result<WriteOutcome, SandboxError>;

    /// Writes bytes from a stream (atomic unless appending).
    async fn write_bytes(
        &self,
        req: WriteBytes,
        body: ByteStream,
    ) -> Result<WriteOutcome, SandboxError>;

    /// Facts about one path (symlinks followed).
    async fn stat(&self, path: &str) -> Result<Entry, SandboxError>;

    /// Lists a directory.
    async fn list(&self, req: List) -> Result<Listing, SandboxError>;

    /// Finds paths by glob.
    async fn glob(&self, req: Glob) -> Result<GlobOutcome, SandboxError>;

    /// Searches file contents.
    async fn grep(&self, req: Grep) -> Result<GrepOutcome, SandboxError>;

    /// Replaces text in a file.
    async fn str_replace(&self, req: StrReplace) -> Result<ReplaceOutcome, SandboxError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys() {
        for ok in ["A", "_x", "PATH", "a1_B"] {
            assert!(validate_env_key(ok).is_ok());
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "é"] {
            let e = validate_env_key(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_argument");
            assert!(e.to_string().starts_with("invalid env:"), "{e}");
        }
    }

    #[test]
    fn exec_request_validation() {
        let mut r = ExecRequest::new("true");
        assert!(r.validate().is_ok());
        r.timeout_secs = Some(0.0);
        assert!(r.validate().unwrap_err().to_string().contains("timeout"));
        r.timeout_secs = Some(f64::NAN);
        assert!(r.validate().is_err());
        let r = ExecRequest::new("a\0b");
        assert!(r.validate().is_err());
    }

    #[test]
    fn outcome_marks_truncation() {
        let exit = ExecExit {
            exit_code: Some(0),
            stdout_dropped: 10,
            ..Default::default()
        };
        let o = ExecOutcome::from_parts(b"abc", b"", exit);
        assert!(o.stdout_truncated && !o.stderr_truncated);
        assert!(
            o.stdout.ends_with(
                "[output truncated after 3 of 13 bytes; remaining output discarded] ..."
            )
        );
    }

    #[test]
    fn shell_status() {
        assert_eq!(
            ExecExit {
                timed_out: true,
                signal: Some(9),
                ..Default::default()
            }
            .shell_status(),
            124
        );
        assert_eq!(
            ExecExit {
                signal: Some(9),
                ..Default::default()
            }
            .shell_status(),
            137
        );
        assert_eq!(
            ExecExit {
                exit_code: Some(3),
                ..Default::default()
            }
            .shell_status(),
            3
        );
    }

    #[test]
    fn read_range_validation() {
        let r = ReadText {
            path: "/x".into(),
            start_line: Some(3),
            end_line: Some(2),
            max_bytes: None,
        };
        assert!(r.validate().is_err());
        let r = ReadText {
            path: "/x".into(),
            start_line: Some(0),
            end_line: None,
            max_bytes: None,
        };
        assert!(r.validate().unwrap_err().to_string().contains("start_line"));
    }

    #[test]
    fn walk_outcomes_on_the_wire_are_additive() {
        let vp = |s: &str| VirtualPath::parse(s).unwrap();
        // Ordinary results serialise exactly as before the new fields existed.
        let l = Listing {
            entries: vec![Entry {
                path: vp("/w/a"),
                kind: EntryKind::File,
                size: 1,
                modified: None,
                escaped_path: None,
            }],
            truncated: false,
            unreadable: vec![],
        };
        let j = serde_json::to_string(&l).unwrap();
        assert_eq!(
            j,
            r#"{"entries":[{"path":"/w/a","kind":"file","size":1,"modified":null}],"truncated":false}"#
        );
        assert_eq!(serde_json::from_str::<Listing>(&j).unwrap(), l);
        let g: GlobOutcome =
            serde_json::from_str(r#"{"paths":["/w/a"],"truncated":true}"#).unwrap();
        assert!(g.escaped_paths.is_empty() && g.unreadable.is_empty());
        let m: GrepOutcome = serde_json::from_str(
            r#"{"matches":[{"path":"/w/a","line_number":1,"line":"x"}],"truncated":false}"#,
        )
        .unwrap();
        assert_eq!(m.matches[0].escaped_path, None);
        // New fields round-trip, and what is shown is escaped.
        let g = GlobOutcome {
            paths: vec![vp("/w/a\nb"), vp("/w/bad\u{fffd}")],
            truncated: false,
            escaped_paths: BTreeMap::from([(1, "/w/bad\\xff".to_owned())]),
            unreadable: vec![Unreadable {
                path: vp("/w/locked"),
                escaped_path: None,
                reason: "permission denied".into(),
            }],
        };
        let back: GlobOutcome = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        assert_eq!(g.shown(0), "/w/a\\nb");
        assert_eq!(g.shown(1), "/w/bad\\xff");
    }

    #[test]
    fn exec_events_on_the_wire() {
        let e = ExecEvent::Stdout {
            data: Bytes::from_static(b"hi"),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"stdout","data":"hi"}"#
        );
        let x = ExecEvent::Exit(ExecExit {
            exit_code: Some(0),
            ..Default::default()
        });
        let j = serde_json::to_string(&x).unwrap();
        assert!(j.starts_with(r#"{"type":"exit","exit_code":0"#), "{j}");
        let back: ExecEvent = serde_json::from_str(&j).unwrap();
        assert_eq!(back, x);
    }
}
