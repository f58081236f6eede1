//! End to end, over real files and Paddock's real file operations: hostile names a tenant
//! creates cannot forge a line of `ls`, `glob` or `grep` output, cannot pass a terminal
//! escape through, and cannot hide (a name that is not UTF-8, and what lies beneath it,
//! is shown escaped instead of left out). Ordinary names come out exactly as they are.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use paddock_core::escape::{is_control, unescape};
use paddock_core::mount::{Mount, MountKind};
use paddock_core::sandbox::{
    ByteStream, Entry, ExecStream, FileStream, Glob, GlobOutcome, Grep, GrepOutcome, List, Listing,
    ReadBytes, ReadText, ReplaceOutcome, SandboxInfo, StrReplace, TextContent, WriteBytes,
    WriteOutcome, WriteText,
};
use paddock_core::{MountTable, Sandbox, SandboxError, VirtualPath};
use paddock_fsops::{FsOps, FsOptions};
use paddock_tools::{FileLocks, Tools, ToolsConfig};

const WS: &str = "/mnt/user-data/workspace";

/// The listing, glob and grep of [`FsOps`] behind the `Sandbox` trait; nothing else.
struct FsSandbox(FsOps);

fn unsupported<T>() -> Result<T, SandboxError> {
    Err(SandboxError::Internal {
        message: "not part of this test".into(),
    })
}

#[async_trait]
impl Sandbox for FsSandbox {
    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: "names".into(),
            home_dir: WS.into(),
            backend: "fsops".into(),
            isolation: "none".into(),
            mounts: vec![],
        }
    }
    async fn exec_stream(
        &self,
        _: paddock_core::sandbox::ExecRequest,
    ) -> Result<ExecStream, SandboxError> {
        unsupported()
    }
    async fn read_text(&self, req: ReadText) -> Result<TextContent, SandboxError> {
        self.0.read_text(&req)
    }
    async fn read_bytes(&self, _: ReadBytes) -> Result<FileStream, SandboxError> {
        unsupported()
    }
    async fn write_text(&self, req: WriteText) -> Result<WriteOutcome, SandboxError> {
        self.0.write_text(&req)
    }
    async fn write_bytes(
        &self,
        _: WriteBytes,
        _: ByteStream,
    ) -> Result<WriteOutcome, SandboxError> {
        unsupported()
    }
    async fn stat(&self, path: &str) -> Result<Entry, SandboxError> {
        self.0.stat(path)
    }
    async fn list(&self, req: List) -> Result<Listing, SandboxError> {
        self.0.list(&req)
    }
    async fn glob(&self, req: Glob) -> Result<GlobOutcome, SandboxError> {
        self.0.glob(&req)
    }
    async fn grep(&self, req: Grep) -> Result<GrepOutcome, SandboxError> {
        self.0.grep(&req)
    }
    async fn str_replace(&self, req: StrReplace) -> Result<ReplaceOutcome, SandboxError> {
        self.0.str_replace(&req)
    }
}

fn put(ws: &Path, name: &[u8], content: &str) {
    let p = ws.join(OsStr::from_bytes(name));
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

/// Every line of `out` is either one the tool writes itself or names a real entry, and
/// holds no control character but a tab.
fn assert_unforgeable(out: &str) {
    for line in out.lines() {
        assert!(
            !line.starts_with("/mnt/user-data/outputs"),
            "forged line {line:?} in:\n{out}"
        );
        assert!(
            !line.chars().any(|c| c != '\t' && is_control(c)),
            "control character in {line:?} of:\n{out}"
        );
    }
}

#[tokio::test]
async fn hostile_names_neither_forge_lines_nor_hide() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = std::fs::canonicalize(tmp.path()).expect("canonicalize");
    let table = MountTable::new(vec![Mount {
        container: VirtualPath::parse(WS).expect("vp"),
        host: ws.clone(),
        read_only: false,
        kind: MountKind::Custom,
    }])
    .expect("table");
    let tools = Tools::with_env(
        Arc::new(FsSandbox(FsOps::new(Arc::new(table), FsOptions::default()))),
        ToolsConfig::default(),
        |_| None,
        Arc::new(FileLocks::new()),
    );
    put(&ws, b"plain.txt", "a needle here\n");
    // Printed raw, this path would give the listing a line `/mnt/user-data/outputs/x`.
    put(&ws, b"a\n/mnt/user-data/outputs/x.txt", "needle\n");
    put(&ws, b"\x1b[2J\x1b[31mred.txt", "needle\n");
    put(&ws, b"bad\xff.txt", "needle, hidden before\n");
    put(
        &ws,
        b"dir\xfe/inner.txt",
        "needle, beneath a name that is not UTF-8\n",
    );

    let ls = tools.ls(WS).await;
    assert_unforgeable(&ls);
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        [
            format!("{WS}/\\x1b[2J\\x1b[31mred.txt"),
            format!("{WS}/a\\n/"),
            format!("{WS}/a\\n/mnt/"),
            format!("{WS}/bad\\xff.txt"),
            format!("{WS}/dir\\xfe/"),
            format!("{WS}/dir\\xfe/inner.txt"),
            format!("{WS}/plain.txt"),
        ],
        "{ls}"
    );
    // What is shown reads back to the exact bytes of the name.
    assert_eq!(
        unescape(&format!("{WS}/bad\\xff.txt")).expect("unescape"),
        format!("{WS}/bad")
            .into_bytes()
            .into_iter()
            .chain(*b"\xff.txt")
            .collect::<Vec<_>>()
    );

    let glob = tools.glob("**/*.txt", WS, false, None).await;
    assert_unforgeable(&glob);
    assert_eq!(
        glob,
        [
            format!("Found 5 paths under {WS}"),
            format!("1. {WS}/\\x1b[2J\\x1b[31mred.txt"),
            format!("2. {WS}/a\\n/mnt/user-data/outputs/x.txt"),
            format!("3. {WS}/bad\\xff.txt"),
            format!("4. {WS}/dir\\xfe/inner.txt"),
            format!("5. {WS}/plain.txt"),
        ]
        .join("\n")
    );

    let grep = tools.grep("needle", WS, None, false, false, None).await;
    assert_unforgeable(&grep);
    assert_eq!(
        grep,
        [
            format!("Found 5 matches under {WS}"),
            format!("{WS}/\\x1b[2J\\x1b[31mred.txt:1: needle"),
            format!("{WS}/a\\n/mnt/user-data/outputs/x.txt:1: needle"),
            format!("{WS}/bad\\xff.txt:1: needle, hidden before"),
            format!("{WS}/dir\\xfe/inner.txt:1: needle, beneath a name that is not UTF-8"),
            format!("{WS}/plain.txt:1: a needle here"),
        ]
        .join("\n")
    );
}
