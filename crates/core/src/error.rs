//! The one error enum of the sandbox contract. Every variant that concerns a path carries
//! the *virtual* path the caller used, never a host path, so errors can be shown to an
//! agent as they are. The enum is serialisable so a remote backend can hand the same
//! error across the wire and the caller sees no difference.

use serde::{Deserialize, Serialize};

use crate::ids::IdError;

/// Longest path or value echoed back in an error.
const SHOWN_MAX: usize = 512;

pub(crate) fn shown(s: &str) -> String {
    if s.len() <= SHOWN_MAX {
        return s.replace('\0', "\\0");
    }
    let mut end = SHOWN_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s[..end].replace('\0', "\\0"))
}

/// Errors of every sandbox operation, on every backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SandboxError {
    /// The path is malformed: relative, contains NUL, too long.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (virtual).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The path matches no mount of this sandbox.
    #[error("access denied: {path} is not under any mounted directory")]
    Unmapped {
        /// The virtual path.
        path: String,
    },
    /// The path leaves its mount root through `..` or a symlink.
    #[error("access denied: {path} escapes its mounted directory")]
    Escape {
        /// The virtual path.
        path: String,
    },
    /// A write to a read-only mount.
    #[error("read-only file system: {path}")]
    ReadOnly {
        /// The virtual path.
        path: String,
    },
    /// Nothing at that path.
    #[error("no such file or directory: {path}")]
    NotFound {
        /// The virtual path.
        path: String,
    },
    /// A path component (or the target) is not a directory.
    #[error("not a directory: {path}")]
    NotADirectory {
        /// The virtual path.
        path: String,
    },
    /// A directory where a file was expected.
    #[error("is a directory: {path}")]
    IsADirectory {
        /// The virtual path.
        path: String,
    },
    /// The file is not UTF-8 text.
    #[error(
        "{path} is not a UTF-8 text file (it looks binary); download it instead of reading it as text"
    )]
    NotText {
        /// The virtual path.
        path: String,
    },
    /// The file or payload exceeds a configured cap.
    #[error("{path} is too large: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The virtual path.
        path: String,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// What an operation would produce exceeds a configured cap (checked before it is
    /// produced), e.g. a `replace_all` whose result would outgrow the file size limit.
    #[error(
        "{field} would make {path} {size} bytes, over the limit of {limit} bytes; nothing was changed"
    )]
    ResultTooLarge {
        /// The virtual path.
        path: String,
        /// The request field that makes it too large (`new`).
        field: String,
        /// The size the result would have.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// Too many symlinks to resolve.
    #[error("too many levels of symbolic links: {path}")]
    SymlinkLoop {
        /// The virtual path.
        path: String,
    },
    /// The string to replace does not occur.
    #[error("string to replace not found in {path}")]
    NoMatch {
        /// The virtual path.
        path: String,
    },
    /// `expect_unique` and the string occurs more than once.
    #[error(
        "string to replace occurs {count} times in {path}; give more context or set replace_all"
    )]
    Ambiguous {
        /// The virtual path.
        path: String,
        /// How often it occurs.
        count: usize,
    },
    /// A request argument is invalid (bad regex, bad env key, bad range …).
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The argument's name.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An id failed validation.
    #[error("invalid {field}: must match {rule}")]
    InvalidId {
        /// Which id.
        field: String,
        /// The rule.
        rule: String,
    },
    /// The command could not be started (distinct from "ran and failed").
    #[error("could not start command: {message}")]
    Spawn {
        /// Why.
        message: String,
        /// The step of starting it that failed, when the backend knows it: a stable
        /// snake_case code (`change_directory`, `bind_mount`, `exec_shell`, …). Absent on
        /// the wire when unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// The OS error number of that failure, when there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<i32>,
    },
    /// The backend cannot serve right now (agent down, API server unreachable).
    #[error("sandbox unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// An I/O error not covered above. The message is the OS description only.
    #[error("{op} {path}: {message}")]
    Io {
        /// The operation (`read`, `write`, …).
        op: String,
        /// The virtual path.
        path: String,
        /// The OS error text.
        message: String,
    },
    /// A bug or an unexpected internal state; details are logged, not returned.
    #[error("internal error: {message}")]
    Internal {
        /// A short, host-path-free description.
        message: String,
    },
}

impl SandboxError {
    /// A stable machine-readable code for the wire (`access_denied`, `read_only`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPath { .. } => "invalid_path",
            Self::Unmapped { .. } | Self::Escape { .. } => "access_denied",
            Self::ReadOnly { .. } => "read_only",
            Self::NotFound { .. } => "not_found",
            Self::NotADirectory { .. } => "not_a_directory",
            Self::IsADirectory { .. } => "is_a_directory",
            Self::NotText { .. } => "not_text",
            Self::TooLarge { .. } | Self::ResultTooLarge { .. } => "too_large",
            Self::SymlinkLoop { .. } => "symlink_loop",
            Self::NoMatch { .. } => "no_match",
            Self::Ambiguous { .. } => "ambiguous",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::InvalidId { .. } => "invalid_id",
            Self::Spawn { .. } => "spawn_failed",
            Self::Unavailable { .. } => "unavailable",
            Self::Io { .. } => "io",
            Self::Internal { .. } => "internal",
        }
    }

    /// Whether the caller's input caused this (HTTP 4xx) rather than the system (5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Self::Spawn { .. } | Self::Unavailable { .. } | Self::Io { .. } | Self::Internal { .. }
        )
    }

    /// The argument or path this error is about, if any (for a JSON `field`).
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::InvalidPath { path, .. }
            | Self::Unmapped { path }
            | Self::Escape { path }
            | Self::ReadOnly { path }
            | Self::NotFound { path }
            | Self::NotADirectory { path }
            | Self::IsADirectory { path }
            | Self::NotText { path }
            | Self::TooLarge { path, .. }
            | Self::ResultTooLarge { path, .. }
            | Self::SymlinkLoop { path }
            | Self::NoMatch { path }
            | Self::Ambiguous { path, .. }
            | Self::Io { path, .. } => Some(path),
            _ => None,
        }
    }

    /// `InvalidPath` with the path shown safely.
    pub fn invalid_path(path: &str, reason: impl Into<String>) -> Self {
        Self::InvalidPath {
            path: shown(path),
            reason: reason.into(),
        }
    }

    /// `Spawn` with only a message (no step or OS error known).
    pub fn spawn(message: impl Into<String>) -> Self {
        Self::Spawn {
            message: message.into(),
            step: None,
            errno: None,
        }
    }

    /// `InvalidArgument` for `field`.
    pub fn invalid_argument(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Maps an OS error on `path` (virtual) to the closest variant. The OS error's text is
    /// kept, never a host path (std's `io::Error` does not carry one).
    pub fn from_io(op: &str, path: &str, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let path = shown(path);
        match err.kind() {
            K::NotFound => Self::NotFound { path },
            K::NotADirectory => Self::NotADirectory { path },
            K::IsADirectory => Self::IsADirectory { path },
            K::ReadOnlyFilesystem => Self::ReadOnly { path },
            K::PermissionDenied => Self::Io {
                op: op.into(),
                path,
                message: "permission denied".into(),
            },
            _ if err.raw_os_error() == Some(40) => Self::SymlinkLoop { path },
            _ => {
                let message = match err.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
                    None => err.kind().to_string(),
                };
                Self::Io {
                    op: op.into(),
                    path,
                    message,
                }
            }
        }
    }
}

impl From<IdError> for SandboxError {
    fn from(e: IdError) -> Self {
        Self::InvalidId {
            field: e.field.into(),
            rule: e.rule.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_on_the_wire() {
        let e = SandboxError::TooLarge {
            path: "/mnt/user-data/x".into(),
            size: 10,
            limit: 5,
        };
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains("\"kind\":\"too_large\""));
        let back: SandboxError = serde_json::from_str(&j).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_spawn_failure_carries_its_step_on_the_wire_only_when_known() {
        let plain = SandboxError::spawn("no shell found in the sandbox");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"kind":"spawn","message":"no shell found in the sandbox"}"#
        );
        let typed = SandboxError::Spawn {
            message: "bind mount failed: Permission denied (os error 13)".into(),
            step: Some("bind_mount".into()),
            errno: Some(13),
        };
        let j = serde_json::to_string(&typed).unwrap();
        assert!(j.contains(r#""step":"bind_mount","errno":13"#), "{j}");
        assert_eq!(serde_json::from_str::<SandboxError>(&j).unwrap(), typed);
        // What an older backend sends still reads.
        let old = r#"{"kind":"spawn","message":"x"}"#;
        assert_eq!(
            serde_json::from_str::<SandboxError>(old).unwrap(),
            SandboxError::spawn("x")
        );
        assert_eq!(typed.code(), "spawn_failed");
    }

    #[test]
    fn io_mapping_keeps_virtual_path() {
        let e = SandboxError::from_io(
            "read",
            "/mnt/user-data/workspace/a",
            &std::io::Error::from_raw_os_error(libc_enoent()),
        );
        assert_eq!(
            e,
            SandboxError::NotFound {
                path: "/mnt/user-data/workspace/a".into()
            }
        );
        let e = SandboxError::from_io("open", "/x", &std::io::Error::from_raw_os_error(40));
        assert_eq!(e.code(), "symlink_loop");
    }

    fn libc_enoent() -> i32 {
        2
    }

    #[test]
    fn long_values_are_cut() {
        let e = SandboxError::invalid_path(&"a".repeat(5000), "too long");
        assert!(e.to_string().len() < 700);
        let e = SandboxError::invalid_path("a\0b", "contains NUL");
        assert!(e.to_string().contains("a\\\\0b"), "{e}");
    }
}
