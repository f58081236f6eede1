//! The seven tools over one [`Sandbox`], each returning the text a model reads.
//!
//! Invariant: a tool never fails as a Rust error; every failure of the operation becomes
//! `Error: ...` text naming the virtual path the model gave, and every output is bounded
//! by the configured limits before it is returned.

use std::collections::BTreeMap;
use std::sync::Arc;

use paddock_core::SandboxError;
use paddock_core::sandbox::{ExecRequest, Glob, Grep, List, ReadText, StrReplace, WriteText};
use paddock_core::{Sandbox, sandbox::EntryKind};
use serde_json::Value;

use crate::config::{
    DEFAULT_GLOB_MAX_RESULTS, DEFAULT_GREP_MAX_RESULTS, MAX_GLOB_MAX_RESULTS, MAX_GREP_MAX_RESULTS,
    ToolsConfig,
};
use crate::error::{ToolError, ToolOutput};
use crate::locks::FileLocks;
use crate::render;
use crate::spec::{self, Args};
use crate::truncate;

/// Bound on a `write_file` error message, in chars.
pub const WRITE_FILE_ERROR_MAX_CHARS: usize = 2000;

/// The LLM tools over one sandbox.
pub struct Tools {
    sandbox: Arc<dyn Sandbox>,
    config: ToolsConfig,
    /// The `write_file` cap in force, resolved once from the config and the environment.
    write_limit: Option<u64>,
    /// The largest file a read or an edit loads (and an edit may produce); `None`: the
    /// sandbox's own cap.
    read_limit: Option<u64>,
    locks: Arc<FileLocks>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools")
            .field("sandbox", &self.sandbox.info().id)
            .field("config", &self.config)
            .field("write_limit", &self.write_limit)
            .field("read_limit", &self.read_limit)
            .finish_non_exhaustive()
    }
}

impl Tools {
    /// Tools over `sandbox`. The `write_file` cap's environment override
    /// (`PADDOCK_WRITE_FILE_MAX_BYTES`, else `DEERFLOW_WRITE_FILE_MAX_BYTES`) is read
    /// here, once. File locks are process-wide, keyed by sandbox id and path.
    pub fn new(sandbox: Arc<dyn Sandbox>, config: ToolsConfig) -> Self {
        let write_limit = config.effective_write_file_max_bytes(|k| std::env::var(k).ok());
        Self {
            sandbox,
            config,
            write_limit,
            read_limit: None,
            locks: FileLocks::global(),
        }
    }

    /// Like [`Tools::new`] with an explicit environment lookup and lock map (tests,
    /// embedders that manage their own environment).
    pub fn with_env(
        sandbox: Arc<dyn Sandbox>,
        config: ToolsConfig,
        env: impl Fn(&str) -> Option<String>,
        locks: Arc<FileLocks>,
    ) -> Self {
        let write_limit = config.effective_write_file_max_bytes(env);
        Self {
            sandbox,
            config,
            write_limit,
            read_limit: None,
            locks,
        }
    }

    /// Bounds what `read_file` and `str_replace` load into memory (and what an edit may
    /// produce) to `limit` bytes: the agent's read cap, so a tool call costs no more than
    /// the HTTP route it stands for.
    pub fn with_read_limit(mut self, limit: Option<u64>) -> Self {
        self.read_limit = limit;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ToolsConfig {
        &self.config
    }

    /// The `write_file` cap in force (`None` = no cap).
    pub fn write_file_limit(&self) -> Option<u64> {
        self.write_limit
    }

    /// Runs `command` (cwd `/mnt/user-data/workspace`) with `env` layered on the
    /// sandbox's environment. Values of `env` are secrets to the output: any of at
    /// least 8 chars is replaced by `[redacted]`.
    pub async fn bash(&self, command: &str, env: &BTreeMap<String, String>) -> String {
        let req = ExecRequest {
            command: command.to_owned(),
            env: env.clone(),
            timeout_secs: Some(self.config.bash_timeout_secs),
            ..ExecRequest::default()
        };
        let text = match self.sandbox.exec(req).await {
            Ok(outcome) => render::assemble_exec(&outcome, self.config.bash_timeout_secs),
            Err(e) => format!("Error: {e}"),
        };
        truncate::truncate_bash_output(
            &render::mask_secrets(&text, env),
            self.config.bash_output_max_chars,
        )
    }

    /// Lists `path` two levels deep.
    pub async fn ls(&self, path: &str) -> String {
        let listing = match self.sandbox.list(List::new(path)).await {
            Ok(l) => l,
            Err(SandboxError::NotFound { .. }) => {
                return format!("Error: Directory not found: {path}");
            }
            Err(SandboxError::NotADirectory { .. }) => {
                return format!("Error: Path is not a directory: {path}");
            }
            Err(e) if render::is_permission_denied(&e) => {
                return format!("Error: Permission denied: {path}");
            }
            Err(e) => return format!("Error: {e}"),
        };
        if listing.entries.is_empty() && listing.unreadable.is_empty() {
            return "(empty)".to_owned();
        }
        let out = render::format_ls(&listing);
        truncate::truncate_head(&out, self.config.ls_output_max_chars, truncate::ls_marker)
    }

    /// Finds paths under `path` matching `pattern`.
    pub async fn glob(
        &self,
        pattern: &str,
        path: &str,
        include_dirs: bool,
        max_results: Option<i64>,
    ) -> String {
        let max = render::resolve_max_results(
            max_results,
            self.config.glob_max_results,
            DEFAULT_GLOB_MAX_RESULTS,
            MAX_GLOB_MAX_RESULTS,
        );
        let req = Glob {
            path: path.to_owned(),
            pattern: pattern.to_owned(),
            include_dirs,
            max_results: max,
        };
        match self.sandbox.glob(req).await {
            Ok(found) => render::format_glob(path, &found),
            Err(e) => search_error(path, &e),
        }
    }

    /// Searches file contents under `path`.
    pub async fn grep(
        &self,
        pattern: &str,
        path: &str,
        glob: Option<&str>,
        literal: bool,
        case_sensitive: bool,
        max_results: Option<i64>,
    ) -> String {
        // Checked here too so the message has one shape whatever the backend says.
        if !literal && let Err(e) = regex::RegexBuilder::new(pattern).build() {
            return format!("Error: Invalid regex pattern: {e}");
        }
        let max = render::resolve_max_results(
            max_results,
            self.config.grep_max_results,
            DEFAULT_GREP_MAX_RESULTS,
            MAX_GREP_MAX_RESULTS,
        );
        let req = Grep {
            path: path.to_owned(),
            pattern: pattern.to_owned(),
            glob: glob.map(str::to_owned),
            literal,
            case_sensitive,
            max_results: max,
        };
        match self.sandbox.grep(req).await {
            Ok(found) => render::format_grep(path, &found),
            Err(SandboxError::InvalidArgument { field, message })
                if field == "pattern" || field == "regex" =>
            {
                format!("Error: Invalid regex pattern: {message}")
            }
            Err(e) => search_error(path, &e),
        }
    }

    /// Reads a text file, optionally lines `start_line..=end_line` (1-based).
    pub async fn read_file(
        &self,
        path: &str,
        start_line: Option<i64>,
        end_line: Option<i64>,
    ) -> String {
        if start_line.is_some_and(|s| s < 1) {
            return "(start_line must be >= 1)".to_owned();
        }
        if end_line.is_some_and(|e| e < 1) {
            return "(end_line must be >= 1)".to_owned();
        }
        let effective_start = start_line.unwrap_or(1);
        if end_line.is_some_and(|e| effective_start > e) {
            return "(start_line > end_line — no lines in range)".to_owned();
        }
        let to_u64 = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
        let req = ReadText {
            path: path.to_owned(),
            start_line: to_u64(start_line),
            end_line: to_u64(end_line),
            max_bytes: self.read_limit,
        };
        let content = match self.sandbox.read_text(req).await {
            Ok(t) => t.content,
            Err(SandboxError::NotFound { .. }) => return format!("Error: File not found: {path}"),
            Err(SandboxError::IsADirectory { .. }) => {
                return format!("Error: Path is a directory, not a file: {path}");
            }
            Err(SandboxError::NotText { .. }) => return render::not_text(path),
            Err(e) if render::is_permission_denied(&e) => {
                return format!("Error: Permission denied reading file: {path}");
            }
            Err(e) => return format!("Error: {e}"),
        };
        if content.is_empty() {
            return if start_line.is_some_and(|s| s > 1) {
                "(start_line exceeds file length)".to_owned()
            } else {
                "(empty)".to_owned()
            };
        }
        truncate::truncate_head(
            &content,
            self.config.read_file_output_max_chars,
            truncate::read_file_marker,
        )
    }

    /// Writes (or appends) text; `OK` on success.
    pub async fn write_file(&self, path: &str, content: &str, append: bool) -> String {
        if !append
            && let Some(limit) = self.write_limit
            && content.len() as u64 > limit
        {
            return render::write_too_large(content.len(), limit);
        }
        let result = {
            let _guard = self.locks.lock(&self.sandbox.info().id, path).await;
            self.sandbox
                .write_text(WriteText {
                    path: path.to_owned(),
                    content: content.to_owned(),
                    append,
                })
                .await
        };
        let text = match result {
            Ok(_) => return "OK".to_owned(),
            Err(e) if render::is_permission_denied(&e) => {
                format!("Error: Permission denied writing to file: {path}")
            }
            Err(SandboxError::IsADirectory { .. }) => {
                format!("Error: Path is a directory, not a file: {path}")
            }
            Err(e) => return write_error(path, &e),
        };
        truncate::truncate_middle(
            &text,
            WRITE_FILE_ERROR_MAX_CHARS,
            truncate::write_error_marker,
        )
    }

    /// Replaces the first (or every) occurrence of `old_str`; `OK` on success.
    pub async fn str_replace(
        &self,
        path: &str,
        old_str: &str,
        new_str: &str,
        replace_all: bool,
    ) -> String {
        let _guard = self.locks.lock(&self.sandbox.info().id, path).await;
        if old_str.is_empty() {
            // A no-op edit, but the file must still be there: the model should learn
            // about a wrong path now rather than at its next real edit.
            return match self.sandbox.stat(path).await {
                Ok(entry) if entry.kind == EntryKind::Dir => {
                    format!("Error: Path is a directory, not a file: {path}")
                }
                Ok(_) => "OK".to_owned(),
                Err(e) => replace_error(path, &e),
            };
        }
        let req = StrReplace {
            path: path.to_owned(),
            old: old_str.to_owned(),
            new: new_str.to_owned(),
            replace_all,
            expect_unique: false,
            max_bytes: self.read_limit,
        };
        match self.sandbox.str_replace(req).await {
            Ok(_) => "OK".to_owned(),
            Err(e) => replace_error(path, &e),
        }
    }

    /// Dispatches a call by name with the tool's JSON arguments (HTTP
    /// `POST /v1/tools/{name}`, MCP `tools/call`). Unknown tools and malformed arguments
    /// are a [`ToolError`] naming the field; everything else is a [`ToolOutput`].
    pub async fn call(&self, name: &str, args: Value) -> Result<ToolOutput, ToolError> {
        self.call_with_env(name, args, &BTreeMap::new()).await
    }

    /// Like [`Tools::call`], with request-scoped environment for `bash` (also masked in
    /// its output); the other tools ignore `env`.
    pub async fn call_with_env(
        &self,
        name: &str,
        args: Value,
        env: &BTreeMap<String, String>,
    ) -> Result<ToolOutput, ToolError> {
        let def = spec::find(name).ok_or_else(|| ToolError::UnknownTool {
            name: name.chars().take(64).collect(),
            known: spec::tool_names().join(", "),
        })?;
        let a = Args::validate(def, args)?;
        let text = match def.name {
            "bash" => self.bash(a.string("command")?, env).await,
            "ls" => self.ls(a.string("path")?).await,
            "glob" => {
                self.glob(
                    a.string("pattern")?,
                    a.string("path")?,
                    a.flag("include_dirs"),
                    a.int("max_results"),
                )
                .await
            }
            "grep" => {
                self.grep(
                    a.string("pattern")?,
                    a.string("path")?,
                    a.opt_string("glob"),
                    a.flag("literal"),
                    a.flag("case_sensitive"),
                    a.int("max_results"),
                )
                .await
            }
            "read_file" => {
                self.read_file(a.string("path")?, a.int("start_line"), a.int("end_line"))
                    .await
            }
            "write_file" => {
                self.write_file(a.string("path")?, a.string("content")?, a.flag("append"))
                    .await
            }
            "str_replace" => {
                self.str_replace(
                    a.string("path")?,
                    a.string("old_str")?,
                    a.string("new_str")?,
                    a.flag("replace_all"),
                )
                .await
            }
            other => {
                // The table and this match are kept in step by the test
                // `dispatches_every_tool_and_ignores_description`; reaching here means a
                // tool was added to one and not the other.
                return Err(ToolError::UnknownTool {
                    name: other.to_owned(),
                    known: spec::tool_names().join(", "),
                });
            }
        };
        Ok(ToolOutput::new(text))
    }
}

fn search_error(path: &str, e: &SandboxError) -> String {
    match e {
        SandboxError::NotFound { .. } => format!("Error: Directory not found: {path}"),
        SandboxError::NotADirectory { .. } => format!("Error: Path is not a directory: {path}"),
        e if render::is_permission_denied(e) => format!("Error: Permission denied: {path}"),
        e => format!("Error: {e}"),
    }
}

fn replace_error(path: &str, e: &SandboxError) -> String {
    match e {
        SandboxError::NoMatch { .. } => {
            format!("Error: String to replace not found in file: {path}")
        }
        SandboxError::NotFound { .. } => format!("Error: File not found: {path}"),
        SandboxError::IsADirectory { .. } => {
            format!("Error: Path is a directory, not a file: {path}")
        }
        SandboxError::NotText { .. } => format!(
            "Error: cannot edit '{path}' as text — it appears to be a binary file. \
             str_replace only supports UTF-8 text files."
        ),
        SandboxError::ResultTooLarge { size, limit, .. } => format!(
            "Error: this edit would make {path} {size} bytes, over the limit of {limit} bytes; \
             the file was not changed. Replace fewer occurrences or a shorter new_str."
        ),
        SandboxError::TooLarge { size, limit, .. } => format!(
            "Error: {path} is {size} bytes, over the limit of {limit} bytes for editing as text"
        ),
        e if render::is_permission_denied(e) => {
            format!("Error: Permission denied accessing file: {path}")
        }
        e => format!("Error: {e}"),
    }
}

/// `Error: Failed to write file 'PATH': DETAIL`, at most 2,000 chars: the detail is
/// middle-truncated first so the header survives; a header too long for the budget is
/// truncated with the rest.
fn write_error(path: &str, e: &SandboxError) -> String {
    let header = format!("Error: Failed to write file '{path}'");
    let detail = e.to_string();
    let budget = WRITE_FILE_ERROR_MAX_CHARS.saturating_sub(header.chars().count() + 2);
    if budget == 0 {
        return truncate::truncate_middle(
            &format!("{header}: {detail}"),
            WRITE_FILE_ERROR_MAX_CHARS,
            truncate::write_error_marker,
        );
    }
    format!(
        "{header}: {}",
        truncate::truncate_middle(&detail, budget, truncate::write_error_marker)
    )
}
