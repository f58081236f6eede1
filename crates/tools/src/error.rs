//! What [`crate::Tools::call`] returns: a rendered tool result, or a [`ToolError`] when
//! the call itself is malformed.
//!
//! Invariant: a `ToolError` is only about the call (which tool, which argument); every
//! failure of the operation itself is rendered as `Error: ...` text in a `ToolOutput`,
//! exactly as the model would see it.

use serde::Serialize;

/// A tool's rendered result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolOutput {
    /// The text for the model.
    pub text: String,
    /// Whether `text` is an `Error: ...` rendering.
    pub is_error: bool,
}

impl ToolOutput {
    /// Wraps rendered text, flagging `Error:` renderings.
    pub fn new(text: String) -> Self {
        let is_error = text.starts_with("Error:");
        Self { text, is_error }
    }
}

/// A call that could not be dispatched: unknown tool or malformed arguments. Every
/// variant names the tool and, where there is one, the argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No tool of that name.
    #[error("unknown tool `{name}`; the tools are: {known}")]
    UnknownTool {
        /// The name given (cut to 64 chars).
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// The arguments are not a JSON object.
    #[error("invalid arguments for tool {tool}: expected a JSON object, got {got}")]
    NotAnObject {
        /// The tool.
        tool: &'static str,
        /// What was given.
        got: &'static str,
    },
    /// An argument the tool does not take.
    #[error(
        "invalid arguments for tool {tool}: unknown field `{field}` (accepted fields: {accepted})"
    )]
    UnknownField {
        /// The tool.
        tool: &'static str,
        /// The field given (cut to 64 chars).
        field: String,
        /// The accepted fields, comma-separated.
        accepted: String,
    },
    /// An argument of the wrong JSON type.
    #[error("invalid arguments for tool {tool}: field `{field}` must be {expected}, got {got}")]
    InvalidType {
        /// The tool.
        tool: &'static str,
        /// The field.
        field: &'static str,
        /// The expected type.
        expected: String,
        /// The type given.
        got: &'static str,
    },
    /// A required argument is missing.
    #[error("invalid arguments for tool {tool}: missing required field `{field}`")]
    MissingField {
        /// The tool.
        tool: &'static str,
        /// The field.
        field: &'static str,
    },
}

impl ToolError {
    /// The argument this error is about, if any (for a JSON `field`).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownField { field, .. } => Some(field),
            Self::InvalidType { field, .. } | Self::MissingField { field, .. } => Some(field),
            Self::UnknownTool { .. } | Self::NotAnObject { .. } => None,
        }
    }
}
