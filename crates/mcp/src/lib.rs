//! `paddock mcp`: Paddock's LLM tool layer (`bash`, `ls`, `glob`, `grep`, `read_file`,
//! `write_file`, `str_replace`) served over MCP stdio for one (user, thread), backed by
//! the local runtime or by a running `paddock serve` (provisioner mode).
//!
//! Invariant: stdout carries only the MCP protocol (logs go to stderr); a failing tool
//! operation is a tool result with `isError: true`, never a protocol error or a crash;
//! only an unknown tool or malformed arguments are JSON-RPC errors (`-32602`).

pub mod cli;
pub mod server;
pub mod source;

pub use server::PaddockMcp;
pub use source::{SandboxSource, SandboxSourceError};
