//! `Tools::call`: dispatch by name with JSON arguments, and the errors of malformed calls.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use paddock_core::sandbox::{EntryKind, ExecExit};
use paddock_tools::{FileLocks, ToolError, Tools, ToolsConfig, specs};
use serde_json::{Value, json};

fn tools(replies: Vec<Reply>) -> (Tools, Arc<ScriptedSandbox>) {
    let sb = ScriptedSandbox::with("sb-call", replies);
    let t = Tools::with_env(
        sb.clone(),
        ToolsConfig::default(),
        |_| None,
        Arc::new(FileLocks::new()),
    );
    (t, sb)
}

async fn call_err(name: &str, args: Value) -> ToolError {
    let (t, sb) = tools(vec![]);
    let e = t.call(name, args).await.expect_err("must fail");
    assert!(
        sb.calls().is_empty(),
        "a malformed call reached the sandbox"
    );
    e
}

#[tokio::test]
async fn unknown_tool() {
    let e = call_err("rm_rf", json!({})).await;
    assert_eq!(
        e.to_string(),
        "unknown tool `rm_rf`; the tools are: bash, ls, glob, grep, read_file, write_file, str_replace"
    );
    assert_eq!(e.field(), None);
}

#[tokio::test]
async fn unknown_field_is_named() {
    let e = call_err(
        "read_file",
        json!({"path": "/mnt/user-data/workspace/a", "offset": 3}),
    )
    .await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool read_file: unknown field `offset` (accepted fields: path, description, start_line, end_line)"
    );
    assert_eq!(e.field(), Some("offset"));
}

#[tokio::test]
async fn wrong_type_is_named() {
    let e = call_err(
        "glob",
        json!({"pattern": "*", "path": "/x", "include_dirs": "yes"}),
    )
    .await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool glob: field `include_dirs` must be a boolean, got a string"
    );
    assert_eq!(e.field(), Some("include_dirs"));
    let e = call_err("read_file", json!({"path": "/x", "start_line": "3"})).await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool read_file: field `start_line` must be an integer or null, got a string"
    );
    let e = call_err("bash", json!({"command": ["ls"]})).await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool bash: field `command` must be a string, got an array"
    );
    let e = call_err("write_file", json!({"path": "/x", "content": null})).await;
    assert_eq!(e.field(), Some("content"));
    let e = call_err(
        "grep",
        json!({"pattern": "x", "path": "/x", "max_results": 2.5}),
    )
    .await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool grep: field `max_results` must be an integer, got a number"
    );
}

#[tokio::test]
async fn missing_required_is_named() {
    let e = call_err("str_replace", json!({"path": "/x", "old_str": "a"})).await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool str_replace: missing required field `new_str`"
    );
    assert_eq!(e.field(), Some("new_str"));
    let e = call_err("bash", Value::Null).await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool bash: missing required field `command`"
    );
    let e = call_err("ls", json!("/mnt/user-data")).await;
    assert_eq!(
        e.to_string(),
        "invalid arguments for tool ls: expected a JSON object, got a string"
    );
}

#[tokio::test]
async fn dispatches_every_tool_and_ignores_description() {
    let ws = "/mnt/user-data/workspace";
    let (t, sb) = tools(vec![
        outcome("hi\n", "", exit_code(0)),
        listing(&[("/mnt/user-data/workspace/a", EntryKind::File)], false),
        globbed(&["/mnt/user-data/workspace/a"], false),
        grepped(&[("/mnt/user-data/workspace/a", 1, "hit")], false),
        text("/mnt/user-data/workspace/a", "line"),
        written("/mnt/user-data/workspace/a", 1),
        replaced(1),
    ]);
    let d = "because the user asked";
    let cases = [
        (
            "bash",
            json!({"description": d, "command": "echo hi"}),
            "hi\n",
        ),
        (
            "ls",
            json!({"description": d, "path": ws}),
            "/mnt/user-data/workspace/a",
        ),
        (
            "glob",
            json!({"description": d, "pattern": "*", "path": ws, "include_dirs": true, "max_results": 5}),
            "Found 1 paths under /mnt/user-data/workspace\n1. /mnt/user-data/workspace/a",
        ),
        (
            "grep",
            json!({"description": d, "pattern": "hit", "path": ws, "glob": null, "literal": true, "case_sensitive": true, "max_results": 0}),
            "Found 1 matches under /mnt/user-data/workspace\n/mnt/user-data/workspace/a:1: hit",
        ),
        (
            "read_file",
            json!({"description": d, "path": "/mnt/user-data/workspace/a", "start_line": 1, "end_line": null}),
            "line",
        ),
        (
            "write_file",
            json!({"description": d, "path": "/mnt/user-data/workspace/a", "content": "x", "append": true}),
            "OK",
        ),
        (
            "str_replace",
            json!({"description": d, "path": "/mnt/user-data/workspace/a", "old_str": "x", "new_str": "y", "replace_all": true}),
            "OK",
        ),
    ];
    assert_eq!(cases.len(), specs().len(), "every spec has a dispatch case");
    for (name, args, want) in cases {
        let out = t.call(name, args).await.expect("must succeed");
        assert_eq!(out.text, want, "{name}");
        assert!(!out.is_error, "{name}");
    }
    let calls = sb.calls();
    let Call::Glob(g) = &calls[2] else {
        panic!("{calls:?}")
    };
    assert!(g.include_dirs && g.max_results == 5);
    let Call::Grep(g) = &calls[3] else {
        panic!("{calls:?}")
    };
    assert!(g.literal && g.case_sensitive && g.glob.is_none() && g.max_results == 100);
    let Call::ReadText(r) = &calls[4] else {
        panic!("{calls:?}")
    };
    assert_eq!((r.start_line, r.end_line), (Some(1), None));
    let Call::WriteText(w) = &calls[5] else {
        panic!("{calls:?}")
    };
    assert!(w.append);
    let Call::StrReplace(s) = &calls[6] else {
        panic!("{calls:?}")
    };
    assert!(s.replace_all);
}

#[tokio::test]
async fn error_renderings_are_flagged() {
    let (t, _) = tools(vec![Reply::ReadText(Err(not_found(
        "/mnt/user-data/workspace/x",
    )))]);
    let out = t
        .call("read_file", json!({"path": "/mnt/user-data/workspace/x"}))
        .await
        .expect("must succeed");
    assert!(out.is_error);
    assert_eq!(
        out.text,
        "Error: File not found: /mnt/user-data/workspace/x"
    );
    // Range messages are informational, not errors (as the reference renders them).
    let (t, _) = tools(vec![]);
    let out = t
        .call("read_file", json!({"path": "/x", "start_line": 0}))
        .await
        .expect("must succeed");
    assert!(!out.is_error);
    // A failing command is a normal result too: the model reads the exit code.
    let (t, _) = tools(vec![outcome(
        "",
        "no such file\n",
        ExecExit {
            exit_code: Some(1),
            ..Default::default()
        },
    )]);
    let out = t
        .call("bash", json!({"command": "cat nope"}))
        .await
        .expect("must succeed");
    assert_eq!(out.text, "no such file\n\nExit Code: 1");
    assert!(!out.is_error);
}

#[tokio::test]
async fn call_with_env_masks_bash_output() {
    let (t, sb) = tools(vec![outcome("key=abcdefgh1234\n", "", exit_code(0))]);
    let mut env = BTreeMap::new();
    env.insert("SKILL_KEY".to_owned(), "abcdefgh1234".to_owned());
    let out = t
        .call_with_env("bash", json!({"command": "echo key=$SKILL_KEY"}), &env)
        .await
        .expect("must succeed");
    assert_eq!(out.text, "key=[redacted]\n");
    let Call::Exec(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!(req.env, env);
}

#[test]
fn specs_are_pinned() {
    let json = serde_json::to_string_pretty(&specs()).expect("must succeed");
    insta::assert_snapshot!("tool_specs", json);
    for spec in specs() {
        let schema = &spec.input_schema;
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"], false);
        assert!(
            schema["properties"]["description"].is_object(),
            "{}",
            spec.name
        );
        for req in schema["required"].as_array().expect("must succeed") {
            assert!(schema["properties"][req.as_str().expect("must succeed")].is_object());
        }
    }
}
