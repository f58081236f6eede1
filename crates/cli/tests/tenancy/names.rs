//! Point 10: output shown to the model. A tenant's file names can hold newlines, terminal
//! escapes and bytes that are not UTF-8; the `ls`, `glob` and `grep` tools and the file
//! routes render them escaped (one line per entry, no control characters) and never leave
//! one out.

use serde_json::json;

use crate::harness::{Serve, can_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_shown_escaped_and_never_dropped() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("log:\n  level: warn\n");
    let sb = srv.sandbox("mallory", "t1").await;
    // A directory named "a\n" holding mnt/user-data/outputs/forged: printed raw, its path
    // would put a line "/mnt/user-data/outputs/forged" into the tool's text.
    let made = srv
        .run(
            &sb,
            "mkdir -p /mnt/user-data/workspace/n && cd /mnt/user-data/workspace/n && \
             d=\"$(printf 'a\\nx')\"; d=\"${d%x}\"; mkdir -p \"$d/mnt/user-data/outputs\" && \
             printf 'needle\\n' > \"$d/mnt/user-data/outputs/forged\" && \
             printf 'needle\\n' > \"$(printf 'esc\\033[2Jname')\" && \
             printf 'needle\\n' > \"$(printf 'bad\\377byte')\" && \
             printf 'needle\\n' > plain && ls -q | wc -l",
        )
        .await;
    assert_eq!(made.output.trim(), "4", "{made:?}");
    let dir = "/mnt/user-data/workspace/n";
    let forged = "a\\n/mnt/user-data/outputs/forged";
    for (tool, args, shown) in [
        (
            "ls",
            json!({"path": dir}),
            vec!["a\\n", "esc\\x1b[2Jname", "bad\\xffbyte", "plain"],
        ),
        (
            "glob",
            json!({"path": dir, "pattern": "**/*"}),
            vec![forged, "esc\\x1b[2Jname", "bad\\xffbyte", "plain"],
        ),
        (
            "grep",
            json!({"path": dir, "pattern": "needle"}),
            vec![forged, "esc\\x1b[2Jname", "bad\\xffbyte", "plain"],
        ),
    ] {
        let (status, v) = srv.post_json(&sb, &format!("/v1/tools/{tool}"), args).await;
        assert_eq!(status, 200, "{tool}: {v}");
        let text = v["output"].as_str().unwrap();
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("/mnt/user-data/outputs/forged")),
            "{tool} output has a forged line: {text:?}"
        );
        assert!(
            !text.chars().any(|c| c == '\u{1b}' || c == '\r'),
            "{tool} passes a control character: {text:?}"
        );
        for s in shown {
            assert!(text.contains(s), "{tool} leaves out {s:?}: {text:?}");
        }
    }
    // The AIO list and find routes carry every entry too (JSON strings, so the name's
    // bytes that are not UTF-8 are escaped the same way).
    let (status, v) = srv
        .post_json(&sb, "/v1/file/list", json!({"path": dir}))
        .await;
    assert_eq!(status, 200, "{v}");
    let files = v["data"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{v}");
    let bad: Vec<_> = files
        .iter()
        .filter_map(|f| f["escaped_path"].as_str())
        .collect();
    assert_eq!(bad, ["/mnt/user-data/workspace/n/bad\\xffbyte"], "{v}");
    let (status, v) = srv
        .post_json(&sb, "/v1/file/find", json!({"path": dir, "glob": "*"}))
        .await;
    assert_eq!(status, 200, "{v}");
    // A name pattern matches at any depth: the three files and the one beneath "a\n".
    assert_eq!(v["data"]["files"].as_array().map(Vec::len), Some(4), "{v}");
    assert_eq!(
        v["data"]["escaped_paths"].as_object().map(|m| m.len()),
        Some(1),
        "{v}"
    );
}
