//! Paddock's LLM tool layer: `bash`, `ls`, `glob`, `grep`, `read_file`, `write_file` and
//! `str_replace` over any [`paddock_core::Sandbox`], rendering results in the reference's
//! exact text formats, messages and limits so prompts written for it keep working.
//!
//! Invariant: what a tool returns is bounded by [`ToolsConfig`] and speaks only of
//! virtual paths; failures of the operation are `Error: ...` text, and only a malformed
//! call (unknown tool, bad arguments) is a Rust error, [`ToolError`], naming the field.

pub mod config;
pub mod error;
pub mod locks;
pub mod render;
pub mod spec;
mod tools;
pub mod truncate;

pub use config::{ToolsConfig, ToolsConfigError};
pub use error::{ToolError, ToolOutput};
pub use locks::FileLocks;
pub use spec::{ToolSpec, specs};
pub use tools::{Tools, WRITE_FILE_ERROR_MAX_CHARS};
