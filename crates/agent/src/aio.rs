//! The AIO sandbox API subset that DeerFlow and the `agent-sandbox` Python SDK (0.0.30)
//! use, with the same routes, request fields and response envelope, so those clients work
//! unchanged against Paddock.
//!
//! Invariant: every request field the SDK can send is known here (requests are
//! `deny_unknown_fields`, and every optional field also accepts `null`, which the SDK
//! sends for an explicit `None`); a field Paddock cannot honour is refused with a 422
//! naming it rather than silently ignored. Every operation goes through the `Sandbox`
//! trait, so the mount table's path rules apply exactly as on the native routes.
//!
//! The routes by family: [`context`] (`GET /v1/sandbox`), [`exec`] (shell and bash
//! commands, shell sessions), [`file`] (read, write, download, upload) and [`walk`]
//! (find, list, grep); [`envelope`] holds the response envelope they share.

mod context;
mod envelope;
mod exec;
mod file;
mod walk;

pub use context::sandbox_context;
pub use envelope::ok;
pub(crate) use envelope::read_refusal;
pub use exec::{
    BashExecRequest, CreateSessionRequest, SHELL_TRUNCATE_CHARS, ShellExecRequest, bash_exec,
    shell_cleanup_session, shell_create_session, shell_exec,
};
pub use file::{
    DownloadQuery, FileReadRequest, FileWriteRequest, file_download, file_read, file_response,
    file_upload, file_write,
};
pub use walk::{
    FIND_MAX_RESULTS, FindRequest, GREP_MAX_RESULTS, GrepRequest, LIST_MAX_DEPTH, ListRequest,
    file_find, file_grep, file_list, iso8601, parse_size,
};
