//! Typed calls of the AIO-compatible routes (`/v1/shell`, `/v1/bash`, `/v1/file`,
//! `/v1/sandbox`), for Rust callers that speak the AIO dialect (tests, DeerFlow-style
//! integrations).
//!
//! Invariant: the envelope is unwrapped in one place: `success: true` yields `data`,
//! anything else becomes the `SandboxError` the agent carried.

use paddock_core::SandboxError;
use paddock_core::sandbox::FileStream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AgentClient, encode_query_value};

/// `POST /v1/shell/exec` result.
#[derive(Debug, Clone, Deserialize)]
pub struct ShellResult {
    /// The session it ran in.
    pub session_id: String,
    /// `completed`, `hard_timeout`, `no_change_timeout`, `terminated`.
    pub status: String,
    /// Combined output.
    #[serde(default)]
    pub output: Option<String>,
    /// Exit status.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// `POST /v1/bash/exec` result.
#[derive(Debug, Clone, Deserialize)]
pub struct BashResult {
    /// The session.
    pub session_id: String,
    /// `completed`, `timed_out`, `killed`.
    pub status: String,
    /// Stdout.
    #[serde(default)]
    pub stdout: Option<String>,
    /// Stderr.
    #[serde(default)]
    pub stderr: Option<String>,
    /// Exit status.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// `POST /v1/file/read` result.
#[derive(Debug, Clone, Deserialize)]
pub struct FileRead {
    /// The text.
    pub content: String,
    /// The path read.
    pub file: String,
}

/// `POST /v1/file/write` result.
#[derive(Debug, Clone, Deserialize)]
pub struct FileWritten {
    /// The path written.
    pub file: String,
    /// Bytes written.
    #[serde(default)]
    pub bytes_written: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    success: Option<bool>,
    message: Option<String>,
    data: Option<T>,
}

impl AgentClient {
    /// POSTs an AIO request and unwraps the envelope.
    pub async fn aio_post<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<R, SandboxError> {
        let env: Envelope<R> = self.post_json(path, body).await?;
        match (env.success, env.data) {
            (Some(true), Some(d)) => Ok(d),
            _ => Err(SandboxError::Unavailable {
                message: format!(
                    "the agent reported failure: {}",
                    env.message.unwrap_or_default()
                ),
            }),
        }
    }

    /// `POST /v1/shell/exec`.
    pub async fn shell_exec(
        &self,
        command: &str,
        session: Option<&str>,
    ) -> Result<ShellResult, SandboxError> {
        self.aio_post(
            "/v1/shell/exec",
            &serde_json::json!({ "command": command, "id": session }),
        )
        .await
    }

    /// `POST /v1/bash/exec`.
    pub async fn bash_exec(
        &self,
        command: &str,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<BashResult, SandboxError> {
        self.aio_post(
            "/v1/bash/exec",
            &serde_json::json!({ "command": command, "env": env }),
        )
        .await
    }

    /// `POST /v1/file/read` (0-based `start_line`, exclusive `end_line`).
    pub async fn file_read(
        &self,
        file: &str,
        start_line: Option<u64>,
        end_line: Option<u64>,
    ) -> Result<FileRead, SandboxError> {
        self.aio_post(
            "/v1/file/read",
            &serde_json::json!({ "file": file, "start_line": start_line, "end_line": end_line }),
        )
        .await
    }

    /// `POST /v1/file/write` (text).
    pub async fn file_write(
        &self,
        file: &str,
        content: &str,
        append: bool,
    ) -> Result<FileWritten, SandboxError> {
        self.aio_post(
            "/v1/file/write",
            &serde_json::json!({ "file": file, "content": content, "append": append }),
        )
        .await
    }

    /// `GET /v1/file/download?path=`, streamed.
    pub async fn file_download(&self, path: &str) -> Result<FileStream, SandboxError> {
        let q = format!("/v1/file/download?path={}", encode_query_value(path));
        let resp = self
            .request(reqwest::Method::GET, &q)
            .send()
            .await
            .map_err(crate::unavailable)?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp).await);
        }
        Ok(crate::file_stream(resp))
    }

    /// `POST /v1/file/find`: matching paths.
    pub async fn file_find(&self, path: &str, glob: &str) -> Result<Vec<String>, SandboxError> {
        let v: Value = self
            .aio_post(
                "/v1/file/find",
                &serde_json::json!({ "path": path, "glob": glob }),
            )
            .await?;
        Ok(v["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET /v1/sandbox`: the raw context document.
    pub async fn sandbox_context(&self) -> Result<Value, SandboxError> {
        self.get_json("/v1/sandbox").await
    }
}
