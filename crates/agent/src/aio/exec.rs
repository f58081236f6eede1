//! Commands: `POST /v1/shell/exec` (output merged, in a shell session kept between
//! calls), shell session create and cleanup, and `POST /v1/bash/exec` (stdout and stderr
//! apart, in a session only when one is named).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use paddock_core::SandboxError;
use paddock_core::mount::WORKSPACE;
use paddock_core::sandbox::EntryKind;
use serde::Deserialize;
use serde_json::{Value, json};

use super::envelope::{AioResult, flag, ok, ok_streamed, refuse, shared};
use crate::AppState;
use crate::error::{AioError, ApiError};
use crate::extract::AioJson;
use crate::shell::{Run, SessionState, random_token, validate_session_id};

/// A timeout field: absent, or seconds in (0, 86400].
fn positive(field: &str, v: Option<f64>) -> Result<Option<f64>, AioError> {
    match v {
        Some(t) if !(t.is_finite() && t > 0.0 && t <= 86_400.0) => Err(refuse(
            field,
            "must be a number of seconds greater than 0 and at most 86400",
        )),
        other => Ok(other),
    }
}

/// The tighter of two optional timeouts.
fn min_timeout(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// `POST /v1/shell/exec` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellExecRequest {
    /// The command.
    pub command: String,
    /// The session (a new one when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Working directory for this command.
    #[serde(default)]
    pub exec_dir: Option<String>,
    /// Not supported when true.
    #[serde(default)]
    pub async_mode: Option<bool>,
    /// Wall-clock limit (seconds); Paddock stops the command when reached.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Refuse a missing `exec_dir` instead of falling back.
    #[serde(default)]
    pub strict: Option<bool>,
    /// Stop waiting after this many seconds without output.
    #[serde(default)]
    pub no_change_timeout: Option<i64>,
    /// Wall-clock limit (seconds).
    #[serde(default)]
    pub hard_timeout: Option<f64>,
    /// Accepted; paths are always shown as the command sees them.
    #[serde(default)]
    pub preserve_symlinks: Option<bool>,
    /// Cut output over 30,000 characters (default true).
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// Output longer than this is cut when `truncate` is on (the SDK's documented limit).
pub const SHELL_TRUNCATE_CHARS: usize = 30_000;

fn truncate_chars(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s,
        Some((cut, _)) => {
            let dropped = s[cut..].chars().count();
            format!(
                "{}\n... [output truncated: {dropped} more characters] ...",
                &s[..cut]
            )
        }
    }
}

/// `dir` as the sandbox names it, checked to be a directory (a stat error names `field`).
async fn checked_dir(st: &AppState, dir: &str, field: &str) -> Result<String, AioError> {
    let entry = st
        .sandbox
        .stat(dir)
        .await
        .map_err(|e| AioError(ApiError::sandbox(e).with_field(field)))?;
    if entry.kind != EntryKind::Dir {
        return Err(AioError(ApiError::sandbox(SandboxError::NotADirectory {
            path: entry.path.to_string(),
        })));
    }
    Ok(entry.path.to_string())
}

/// `POST /v1/shell/exec`.
pub async fn shell_exec(
    State(st): State<AppState>,
    AioJson(req): AioJson<ShellExecRequest>,
) -> AioResult {
    if flag(req.async_mode) {
        return Err(refuse(
            "async_mode",
            "async_mode is not supported: Paddock runs shell commands synchronously",
        ));
    }
    let timeout = min_timeout(
        positive("timeout", req.timeout)?,
        positive("hard_timeout", req.hard_timeout)?,
    );
    let idle = match req.no_change_timeout {
        Some(n) if n <= 0 || n > 86_400 => {
            return Err(refuse(
                "no_change_timeout",
                "must be a number of seconds between 1 and 86400",
            ));
        }
        n => n.map(|n| n as f64),
    };
    let id = match req.id {
        Some(id) => {
            validate_session_id(&id)?;
            id
        }
        None => random_token(),
    };
    let cwd = match &req.exec_dir {
        Some(dir) => match checked_dir(&st, dir, "exec_dir").await {
            Ok(d) => Some(d),
            Err(e) if flag(req.strict) => return Err(e),
            Err(_) => None,
        },
        None => None,
    };
    let run = Run {
        command: req.command.clone(),
        cwd,
        timeout_secs: timeout,
        idle_secs: idle,
        merge_stderr: true,
        ..Run::default()
    };
    let res = st.shells.run(st.sandbox.as_ref(), &id, run).await?;
    let exit = &res.outcome.exit;
    let status = if res.idle_timed_out {
        "no_change_timeout"
    } else if exit.timed_out {
        "hard_timeout"
    } else if exit.signal.is_some() {
        "terminated"
    } else {
        "completed"
    };
    let mut output = res.outcome.stdout;
    if req.truncate.unwrap_or(true) {
        output = truncate_chars(output, SHELL_TRUNCATE_CHARS);
    }
    let exit_code = (!res.idle_timed_out).then(|| exit.shell_status());
    let ps1 = format!("sandbox:{} $", res.cwd.as_deref().unwrap_or(WORKSPACE));
    // The output (and the command) appear twice; both places share one copy, escaped
    // only while the response is sent.
    let output = shared(output);
    let command = shared(req.command);
    let (timed_out, truncated, duration) = (
        exit.timed_out,
        res.outcome.stdout_truncated,
        exit.duration_ms,
    );
    Ok(ok_streamed(|j| {
        j.field("session_id", &id)
            .text_field("command", command.clone())
            .field("status", status)
            .text_field("output", output.clone())
            .key("console")
            .begin_array()
            .begin_object()
            .field("ps1", &ps1)
            .text_field("command", command)
            .text_field("output", output)
            .end_object()
            .end_array()
            .field("exit_code", &exit_code)
            .field("timed_out", &timed_out)
            .field("output_truncated", &truncated)
            .field("duration_ms", &duration);
    }))
}

/// `POST /v1/shell/sessions/create` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The id (generated when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Initial working directory.
    #[serde(default)]
    pub exec_dir: Option<String>,
    /// Accepted; per-call `no_change_timeout` governs.
    #[serde(default)]
    pub no_change_timeout: Option<i64>,
    /// Accepted.
    #[serde(default)]
    pub preserve_symlinks: Option<bool>,
}

/// `POST /v1/shell/sessions/create`: returns the existing session when `id` is taken.
pub async fn shell_create_session(
    State(st): State<AppState>,
    AioJson(req): AioJson<CreateSessionRequest>,
) -> AioResult {
    let id = match req.id {
        Some(id) => {
            validate_session_id(&id)?;
            id
        }
        None => random_token(),
    };
    let cwd = match &req.exec_dir {
        Some(dir) => Some(checked_dir(&st, dir, "exec_dir").await?),
        None => None,
    };
    let (slot, created) = st.shells.get_or_create(
        &id,
        SessionState {
            cwd: cwd.clone(),
            ..SessionState::default()
        },
    );
    let working_dir = if created {
        cwd
    } else {
        slot.lock().await.cwd.clone()
    };
    let working_dir = working_dir.unwrap_or_else(|| st.sandbox.info().home_dir);
    Ok(ok(json!({ "session_id": id, "working_dir": working_dir })))
}

/// `DELETE /v1/shell/sessions/{id}`.
pub async fn shell_cleanup_session(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> AioResult {
    validate_session_id(&id)?;
    if !st.shells.remove(&id) {
        return Err(AioError(
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no shell session {id}"),
            )
            .with_field("id"),
        ));
    }
    Ok(ok(Value::Null))
}

/// `POST /v1/bash/exec` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BashExecRequest {
    /// The command.
    pub command: String,
    /// Keep cwd and env in this session (a fresh one per call when absent).
    #[serde(default)]
    pub session_id: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub exec_dir: Option<String>,
    /// Extra variables; `null` unsets one.
    #[serde(default)]
    pub env: Option<BTreeMap<String, Option<String>>>,
    /// Not supported when true.
    #[serde(default)]
    pub async_mode: Option<bool>,
    /// Wall-clock limit (seconds).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Wall-clock limit (seconds).
    #[serde(default)]
    pub hard_timeout: Option<f64>,
    /// Per-stream output cap in bytes.
    #[serde(default)]
    pub max_output_length: Option<i64>,
}

/// `POST /v1/bash/exec`: stdout and stderr separately, with the exit code.
pub async fn bash_exec(
    State(st): State<AppState>,
    AioJson(req): AioJson<BashExecRequest>,
) -> AioResult {
    if flag(req.async_mode) {
        return Err(refuse(
            "async_mode",
            "async_mode is not supported: Paddock runs commands synchronously",
        ));
    }
    let timeout = min_timeout(
        positive("timeout", req.timeout)?,
        positive("hard_timeout", req.hard_timeout)?,
    );
    let max_output = match req.max_output_length {
        Some(n) if n <= 0 => return Err(refuse("max_output_length", "must be greater than 0")),
        n => n.map(|n| n as u64),
    };
    let mut env = BTreeMap::new();
    let mut unset = std::collections::BTreeSet::new();
    for (k, v) in req.env.unwrap_or_default() {
        paddock_core::sandbox::validate_env_key(&k)?;
        match v {
            Some(v) if v.contains('\0') => {
                return Err(refuse("env", &format!("value of {k} contains a NUL byte")));
            }
            Some(v) => {
                env.insert(k, v);
            }
            None => {
                unset.insert(k);
            }
        }
    }
    let cwd = match &req.exec_dir {
        Some(dir) => Some(checked_dir(&st, dir, "exec_dir").await?),
        None => None,
    };
    let (id, one_off) = match req.session_id {
        Some(id) => {
            validate_session_id(&id)?;
            (id, false)
        }
        None => (random_token(), true),
    };
    let run = Run {
        command: req.command.clone(),
        cwd,
        env,
        unset,
        timeout_secs: timeout,
        max_output_bytes: max_output,
        ..Run::default()
    };
    let res = st.bashes.run(st.sandbox.as_ref(), &id, run).await;
    if one_off {
        st.bashes.remove(&id);
    }
    let res = res?;
    let exit = &res.outcome.exit;
    let status = if exit.timed_out {
        "timed_out"
    } else if exit.signal.is_some() {
        "killed"
    } else {
        "completed"
    };
    let (exit_code, timed_out, signal, duration) = (
        exit.shell_status(),
        exit.timed_out,
        exit.signal,
        exit.duration_ms,
    );
    let (out_cut, err_cut) = (res.outcome.stdout_truncated, res.outcome.stderr_truncated);
    let stdout = shared(res.outcome.stdout);
    let stderr = shared(res.outcome.stderr);
    Ok(ok_streamed(|j| {
        j.field("session_id", &id)
            .field("command_id", &random_token())
            .text_field("command", shared(req.command))
            .field("status", status)
            .field("offset", &stdout.len())
            .field("stderr_offset", &stderr.len())
            .text_field("stdout", stdout)
            .text_field("stderr", stderr)
            .field("exit_code", &exit_code)
            .field("timed_out", &timed_out)
            .field("signal", &signal)
            .field("stdout_truncated", &out_cut)
            .field("stderr_truncated", &err_cut)
            .field("duration_ms", &duration);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation() {
        assert_eq!(truncate_chars("abc".into(), 5), "abc");
        assert!(
            truncate_chars("abcdef".into(), 3).starts_with("abc\n... [output truncated: 3 more")
        );
    }
}
