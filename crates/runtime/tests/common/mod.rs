//! Shared helpers of the runtime's integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use paddock_core::sandbox::{ExecOutcome, ExecRequest};
use paddock_core::{Sandbox, ThreadId, UserId};
use paddock_runtime::{LocalProvider, LocalSandbox, RuntimeOptions};

/// Whether the isolated runtime can run here; skips loudly, or fails under CI=true.
pub fn isolated_supported() -> bool {
    let missing: Vec<_> = paddock_runtime::cli::checks()
        .into_iter()
        .filter(|c| c.required && !c.ok)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let names: Vec<_> = missing
        .iter()
        .map(|c| format!("{} ({})", c.feature, c.detail))
        .collect();
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "required kernel features missing: {names:?}"
    );
    eprintln!("SKIPPED: the isolated runtime needs {names:?}");
    false
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub provider: LocalProvider,
}

pub fn env_with(opts: RuntimeOptions) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = LocalProvider::new(dir.path(), opts, Vec::new()).expect("provider");
    Env { dir, provider }
}

pub fn env() -> Env {
    env_with(RuntimeOptions::default())
}

impl Env {
    pub async fn sandbox(&self, thread: &str) -> Arc<LocalSandbox> {
        self.provider
            .acquire(
                &UserId::default(),
                &ThreadId::new(thread).expect("thread id"),
            )
            .await
            .expect("acquire")
    }
}

pub async fn run(sb: &LocalSandbox, cmd: &str) -> ExecOutcome {
    sb.exec(ExecRequest::new(cmd)).await.expect("exec")
}

pub async fn run_t(sb: &LocalSandbox, cmd: &str, timeout: f64) -> ExecOutcome {
    let mut r = ExecRequest::new(cmd);
    r.timeout_secs = Some(timeout);
    sb.exec(r).await.expect("exec")
}
