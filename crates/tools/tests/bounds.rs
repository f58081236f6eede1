//! The tool layer's reads and edits carry the agent's read cap to the sandbox, and an edit
//! refused for its size tells the model what happened and that nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use paddock_core::SandboxError;
use paddock_tools::{FileLocks, Tools, ToolsConfig};

const F: &str = "/mnt/user-data/workspace/notes.txt";

fn tools(replies: Vec<Reply>, limit: Option<u64>) -> (Tools, Arc<ScriptedSandbox>) {
    let sb = ScriptedSandbox::with("sb-1", replies);
    let t = Tools::with_env(
        sb.clone(),
        ToolsConfig::default(),
        |_| None,
        Arc::new(FileLocks::new()),
    )
    .with_read_limit(limit);
    (t, sb)
}

#[tokio::test]
async fn reads_and_edits_carry_the_read_limit() {
    let (t, sb) = tools(vec![text(F, "hello\n"), replaced(1)], Some(4096));
    assert_eq!(t.read_file(F, None, None).await, "hello\n");
    assert_eq!(t.str_replace(F, "hello", "bye", true).await, "OK");
    let calls = sb.calls();
    let Call::ReadText(read) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(read.max_bytes, Some(4096));
    let Call::StrReplace(edit) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert_eq!((edit.max_bytes, edit.replace_all), (Some(4096), true));

    // Without a limit the sandbox's own cap applies.
    let (t, sb) = tools(vec![text(F, "x")], None);
    t.read_file(F, None, None).await;
    let Call::ReadText(read) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!(read.max_bytes, None);
}

#[tokio::test]
async fn an_edit_over_the_limit_says_nothing_changed() {
    let blow_up = SandboxError::ResultTooLarge {
        path: F.into(),
        field: "new".into(),
        size: 600_000_000,
        limit: 16 << 20,
    };
    let (t, _) = tools(vec![Reply::Replace(Err(blow_up))], Some(16 << 20));
    assert_eq!(
        t.str_replace(F, "a", &"b".repeat(600), true).await,
        "Error: this edit would make /mnt/user-data/workspace/notes.txt 600000000 bytes, over \
         the limit of 16777216 bytes; the file was not changed. Replace fewer occurrences or a \
         shorter new_str."
    );
    let big = SandboxError::TooLarge {
        path: F.into(),
        size: 20 << 20,
        limit: 16 << 20,
    };
    let (t, _) = tools(vec![Reply::Replace(Err(big))], Some(16 << 20));
    assert_eq!(
        t.str_replace(F, "a", "b", false).await,
        "Error: /mnt/user-data/workspace/notes.txt is 20971520 bytes, over the limit of \
         16777216 bytes for editing as text"
    );
}
