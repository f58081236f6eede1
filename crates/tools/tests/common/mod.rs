//! A test-only `Sandbox` that returns scripted outcomes and records every call, so the
//! tool layer's formats can be pinned branch by branch without a real backend.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use paddock_core::sandbox::{
    ByteStream, Entry, EntryKind, ExecEvent, ExecExit, ExecOutcome, ExecRequest, ExecStream,
    FileStream, Glob, GlobOutcome, Grep, GrepMatch, GrepOutcome, List, Listing, ReadBytes,
    ReadText, ReplaceOutcome, SandboxInfo, StrReplace, TextContent, WriteBytes, WriteOutcome,
    WriteText,
};
use paddock_core::{Sandbox, SandboxError, VirtualPath};

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Exec(ExecRequest),
    ReadText(ReadText),
    WriteText(WriteText),
    Stat(String),
    List(List),
    Glob(Glob),
    Grep(Grep),
    StrReplace(StrReplace),
    /// Marks the end of a `str_replace` (to observe interleaving).
    StrReplaceDone(String),
}

/// One scripted answer.
#[derive(Debug)]
pub enum Reply {
    Exec(Result<ExecOutcome, SandboxError>),
    ReadText(Result<TextContent, SandboxError>),
    Write(Result<WriteOutcome, SandboxError>),
    Stat(Result<Entry, SandboxError>),
    List(Result<Listing, SandboxError>),
    Glob(Result<GlobOutcome, SandboxError>),
    Grep(Result<GrepOutcome, SandboxError>),
    Replace(Result<ReplaceOutcome, SandboxError>),
}

#[derive(Default)]
pub struct ScriptedSandbox {
    id: String,
    replies: Mutex<VecDeque<Reply>>,
    calls: Mutex<Vec<Call>>,
    /// Yields this many times inside `str_replace`, so concurrent calls can interleave
    /// unless something serialises them.
    pub replace_yields: usize,
}

impl ScriptedSandbox {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    pub fn with(id: &str, replies: Vec<Reply>) -> Arc<Self> {
        let s = Self::new(id);
        s.replies.lock().expect("must succeed").extend(replies);
        Arc::new(s)
    }

    pub fn push(&self, reply: Reply) {
        self.replies.lock().expect("must succeed").push_back(reply);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("must succeed").clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().expect("must succeed").push(call);
    }

    fn next(&self, what: &str) -> Reply {
        self.replies
            .lock()
            .expect("must succeed")
            .pop_front()
            .unwrap_or_else(|| panic!("ScriptedSandbox: no reply scripted for {what}"))
    }
}

fn wrong(what: &str, got: &Reply) -> ! {
    panic!("ScriptedSandbox: {what} called but the next reply is {got:?}")
}

#[async_trait]
impl Sandbox for ScriptedSandbox {
    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.id.clone(),
            home_dir: "/mnt/user-data/workspace".into(),
            backend: "scripted".into(),
            isolation: "none".into(),
            mounts: vec![],
        }
    }

    async fn exec_stream(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        let outcome = self.exec(req).await?;
        let events: Vec<Result<ExecEvent, SandboxError>> = vec![
            Ok(ExecEvent::Stdout {
                data: outcome.stdout.into(),
            }),
            Ok(ExecEvent::Stderr {
                data: outcome.stderr.into(),
            }),
            Ok(ExecEvent::Exit(outcome.exit)),
        ];
        Ok(Box::pin(futures_util::stream::iter(events)))
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutcome, SandboxError> {
        self.record(Call::Exec(req));
        match self.next("exec") {
            Reply::Exec(r) => r,
            other => wrong("exec", &other),
        }
    }

    async fn read_text(&self, req: ReadText) -> Result<TextContent, SandboxError> {
        self.record(Call::ReadText(req));
        match self.next("read_text") {
            Reply::ReadText(r) => r,
            other => wrong("read_text", &other),
        }
    }

    async fn read_bytes(&self, _req: ReadBytes) -> Result<FileStream, SandboxError> {
        panic!("ScriptedSandbox: the tool layer must not call read_bytes")
    }

    async fn write_text(&self, req: WriteText) -> Result<WriteOutcome, SandboxError> {
        self.record(Call::WriteText(req));
        match self.next("write_text") {
            Reply::Write(r) => r,
            other => wrong("write_text", &other),
        }
    }

    async fn write_bytes(
        &self,
        _req: WriteBytes,
        _body: ByteStream,
    ) -> Result<WriteOutcome, SandboxError> {
        panic!("ScriptedSandbox: the tool layer must not call write_bytes")
    }

    async fn stat(&self, path: &str) -> Result<Entry, SandboxError> {
        self.record(Call::Stat(path.to_owned()));
        match self.next("stat") {
            Reply::Stat(r) => r,
            other => wrong("stat", &other),
        }
    }

    async fn list(&self, req: List) -> Result<Listing, SandboxError> {
        self.record(Call::List(req));
        match self.next("list") {
            Reply::List(r) => r,
            other => wrong("list", &other),
        }
    }

    async fn glob(&self, req: Glob) -> Result<GlobOutcome, SandboxError> {
        self.record(Call::Glob(req));
        match self.next("glob") {
            Reply::Glob(r) => r,
            other => wrong("glob", &other),
        }
    }

    async fn grep(&self, req: Grep) -> Result<GrepOutcome, SandboxError> {
        self.record(Call::Grep(req));
        match self.next("grep") {
            Reply::Grep(r) => r,
            other => wrong("grep", &other),
        }
    }

    async fn str_replace(&self, req: StrReplace) -> Result<ReplaceOutcome, SandboxError> {
        let path = req.path.clone();
        self.record(Call::StrReplace(req));
        let reply = self.next("str_replace");
        for _ in 0..self.replace_yields {
            tokio::task::yield_now().await;
        }
        self.record(Call::StrReplaceDone(path));
        match reply {
            Reply::Replace(r) => r,
            other => wrong("str_replace", &other),
        }
    }
}

// ---- builders ----

pub fn vp(s: &str) -> VirtualPath {
    VirtualPath::parse(s).expect("must succeed")
}

pub fn exit_code(code: i32) -> ExecExit {
    ExecExit {
        exit_code: Some(code),
        duration_ms: 5,
        ..Default::default()
    }
}

pub fn outcome(stdout: &str, stderr: &str, exit: ExecExit) -> Reply {
    Reply::Exec(Ok(ExecOutcome::from_parts(
        stdout.as_bytes(),
        stderr.as_bytes(),
        exit,
    )))
}

pub fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: vp(path),
        kind,
        size: 0,
        modified: None,
        escaped_path: None,
    }
}

pub fn listing(entries: &[(&str, EntryKind)], truncated: bool) -> Reply {
    Reply::List(Ok(Listing {
        entries: entries.iter().map(|(p, k)| entry(p, *k)).collect(),
        truncated,
        ..Listing::default()
    }))
}

pub fn globbed(paths: &[&str], truncated: bool) -> Reply {
    Reply::Glob(Ok(GlobOutcome {
        paths: paths.iter().map(|p| vp(p)).collect(),
        truncated,
        ..GlobOutcome::default()
    }))
}

pub fn grepped(matches: &[(&str, u64, &str)], truncated: bool) -> Reply {
    Reply::Grep(Ok(GrepOutcome {
        matches: matches
            .iter()
            .map(|(p, n, l)| GrepMatch {
                path: vp(p),
                line_number: *n,
                line: (*l).to_owned(),
                escaped_path: None,
            })
            .collect(),
        truncated,
        ..GrepOutcome::default()
    }))
}

pub fn text(path: &str, content: &str) -> Reply {
    Reply::ReadText(Ok(TextContent {
        path: path.to_owned(),
        content: content.to_owned(),
        total_lines: content.lines().count() as u64,
    }))
}

pub fn written(path: &str, n: u64) -> Reply {
    Reply::Write(Ok(WriteOutcome {
        path: path.to_owned(),
        bytes_written: n,
    }))
}

pub fn replaced(n: usize) -> Reply {
    Reply::Replace(Ok(ReplaceOutcome { replacements: n }))
}

pub fn not_found(path: &str) -> SandboxError {
    SandboxError::NotFound {
        path: path.to_owned(),
    }
}

pub fn permission_denied(op: &str, path: &str) -> SandboxError {
    SandboxError::Io {
        op: op.to_owned(),
        path: path.to_owned(),
        message: "permission denied".to_owned(),
    }
}
