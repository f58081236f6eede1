//! The conformance cases: SPEC section 4's contract, with its edge cases, as black-box
//! checks through the `Sandbox` trait only. Each function is one test per target.

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use futures_util::StreamExt;
use paddock_core::SandboxError;
use paddock_core::sandbox::{
    ByteStream, EntryKind, ExecEvent, ExecRequest, Glob, Grep, List, ReadBytes, ReadText,
    StrReplace, WriteBytes, WriteText,
};

use crate::{Env, SEEDED_SKILL, SEEDED_SKILL_TEXT};

const WS: &str = "/mnt/user-data/workspace";

fn ws(rel: &str) -> String {
    format!("{WS}/{rel}")
}

fn expect_code<T: std::fmt::Debug>(
    r: Result<T, SandboxError>,
    codes: &[&str],
    what: &str,
) -> anyhow::Result<SandboxError> {
    match r {
        Ok(v) => bail!("{what}: expected an error {codes:?}, got {v:?}"),
        Err(e) if codes.contains(&e.code()) => Ok(e),
        Err(e) => bail!("{what}: expected {codes:?}, got {} ({e})", e.code()),
    }
}

async fn write(env: &Env, path: &str, content: &str) -> anyhow::Result<()> {
    env.sb()
        .write_text(WriteText {
            path: path.into(),
            content: content.into(),
            append: false,
        })
        .await?;
    Ok(())
}

async fn read(env: &Env, path: &str) -> anyhow::Result<String> {
    Ok(env.sb().read_text(ReadText::new(path)).await?.content)
}

fn chunks(data: Vec<u8>, size: usize) -> ByteStream {
    let parts: Vec<Result<Bytes, SandboxError>> = data
        .chunks(size.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(parts))
}

async fn read_all(env: &Env, req: ReadBytes) -> anyhow::Result<Vec<u8>> {
    let mut fs = env.sb().read_bytes(req).await?;
    let mut out = Vec::new();
    while let Some(c) = fs.stream.next().await {
        out.extend_from_slice(&c?);
    }
    ensure!(
        out.len() as u64 == fs.len,
        "stream yielded {} bytes, announced {}",
        out.len(),
        fs.len
    );
    Ok(out)
}

// ------------------------------------------------------------------ exec

/// `echo hi`: stdout, exit 0, empty stderr.
pub async fn exec_echo(env: Env) -> anyhow::Result<()> {
    let o = env.sb().exec(ExecRequest::new("echo hi")).await?;
    ensure!(o.stdout == "hi\n", "stdout {:?}", o.stdout);
    ensure!(o.stderr.is_empty(), "stderr {:?}", o.stderr);
    ensure!(
        o.exit.exit_code == Some(0) && o.exit.signal.is_none() && !o.exit.timed_out,
        "{:?}",
        o.exit
    );
    Ok(())
}

/// Exit code and stderr are kept apart from stdout.
pub async fn exec_exit_code_and_stderr(env: Env) -> anyhow::Result<()> {
    let o = env
        .sb()
        .exec(ExecRequest::new("echo out; echo err >&2; exit 3"))
        .await?;
    ensure!(o.stdout == "out\n" && o.stderr == "err\n", "{o:?}");
    ensure!(o.exit.exit_code == Some(3), "{:?}", o.exit);
    Ok(())
}

/// Commands start in the workspace.
pub async fn exec_default_cwd(env: Env) -> anyhow::Result<()> {
    let o = env.sb().exec(ExecRequest::new("pwd")).await?;
    ensure!(o.stdout.trim() == WS, "pwd {:?}", o.stdout);
    env.sb().exec(ExecRequest::new("mkdir -p sub")).await?;
    let mut r = ExecRequest::new("pwd");
    r.cwd = Some(ws("sub"));
    let o = env.sb().exec(r).await?;
    ensure!(o.stdout.trim() == ws("sub"), "pwd {:?}", o.stdout);
    Ok(())
}

/// Caller variables reach the command.
pub async fn exec_env(env: Env) -> anyhow::Result<()> {
    let mut r = ExecRequest::new("printf '%s' \"$FOO\"");
    r.env.insert("FOO".into(), "bar baz".into());
    let o = env.sb().exec(r).await?;
    ensure!(o.stdout == "bar baz", "{:?}", o.stdout);
    Ok(())
}

/// A malformed variable name is refused, naming `env`.
pub async fn exec_bad_env_key(env: Env) -> anyhow::Result<()> {
    let mut r = ExecRequest::new("true");
    r.env.insert("A-B".into(), "x".into());
    let e = expect_code(env.sb().exec(r).await, &["invalid_argument"], "bad env key")?;
    ensure!(e.to_string().contains("env"), "{e}");
    Ok(())
}

/// The timeout kills the command and says so.
pub async fn exec_timeout(env: Env) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut r = ExecRequest::new("sleep 20");
    r.timeout_secs = Some(0.5);
    let o = env.sb().exec(r).await?;
    ensure!(o.exit.timed_out, "{:?}", o.exit);
    ensure!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    ensure!(o.exit.shell_status() == 124, "{:?}", o.exit);
    Ok(())
}

/// Output over the cap is dropped and counted.
pub async fn exec_truncation(env: Env) -> anyhow::Result<()> {
    let mut r = ExecRequest::new("head -c 5000 /dev/zero | tr '\\0' a");
    r.max_output_bytes = Some(1000);
    let o = env.sb().exec(r).await?;
    ensure!(o.stdout_truncated && !o.stderr_truncated, "{o:?}");
    ensure!(
        o.exit.stdout_dropped == 4000,
        "dropped {}",
        o.exit.stdout_dropped
    );
    ensure!(o.stdout.starts_with(&"a".repeat(1000)), "kept part");
    ensure!(o.stdout.contains("truncated"), "marker missing");
    Ok(())
}

/// The stream yields chunks, then exactly one exit record, last.
pub async fn exec_stream_events(env: Env) -> anyhow::Result<()> {
    let mut s = env
        .sb()
        .exec_stream(ExecRequest::new("echo a; sleep 0.2; echo b >&2; exit 4"))
        .await?;
    let mut out = String::new();
    let mut err = String::new();
    let mut exit = None;
    while let Some(ev) = s.next().await {
        match ev? {
            ExecEvent::Stdout { data } => out.push_str(&String::from_utf8_lossy(&data)),
            ExecEvent::Stderr { data } => err.push_str(&String::from_utf8_lossy(&data)),
            ExecEvent::Exit(x) => {
                ensure!(exit.is_none(), "two exit records");
                exit = Some(x);
            }
        }
    }
    let exit = exit.context("no exit record")?;
    ensure!(
        out == "a\n" && err == "b\n" && exit.exit_code == Some(4),
        "{out:?} {err:?} {exit:?}"
    );
    Ok(())
}

/// A command that backgrounds a process returns promptly.
pub async fn exec_background_returns(env: Env) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let o = env
        .sb()
        .exec(ExecRequest::new("sleep 30 & echo started"))
        .await?;
    ensure!(o.stdout.contains("started"), "{o:?}");
    ensure!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// UTF-8 survives the round trip.
pub async fn exec_unicode(env: Env) -> anyhow::Result<()> {
    let o = env
        .sb()
        .exec(ExecRequest::new("printf 'héllo 🦀 ünï'"))
        .await?;
    ensure!(o.stdout == "héllo 🦀 ünï", "{:?}", o.stdout);
    Ok(())
}

/// A cwd outside every mount is refused.
pub async fn exec_bad_cwd(env: Env) -> anyhow::Result<()> {
    let mut r = ExecRequest::new("pwd");
    r.cwd = Some("/definitely/not/mounted".into());
    expect_code(
        env.sb().exec(r).await,
        &["access_denied", "invalid_argument"],
        "unmapped cwd",
    )?;
    let mut r = ExecRequest::new("pwd");
    r.cwd = Some(ws("missing-dir"));
    // The local runtime reports a vanished cwd as spawn_failed (reported to its owner);
    // through the agent it is a 404 because the agent checks the cwd first.
    expect_code(
        env.sb().exec(r).await,
        &["not_found", "spawn_failed"],
        "missing cwd",
    )?;
    Ok(())
}

// ------------------------------------------------------------------ text

/// Write then read gives the same text; the outcome names the normalised path.
pub async fn text_round_trip(env: Env) -> anyhow::Result<()> {
    let out = env
        .sb()
        .write_text(WriteText {
            path: ws("./a//b.txt"),
            content: "one\ntwo\n".into(),
            append: false,
        })
        .await?;
    ensure!(
        out.path == ws("a/b.txt") && out.bytes_written == 8,
        "{out:?}"
    );
    let t = env.sb().read_text(ReadText::new(ws("a/b.txt"))).await?;
    ensure!(t.content == "one\ntwo\n" && t.total_lines == 2, "{t:?}");
    // Visible to commands at the same virtual path.
    let o = env.sb().exec(ExecRequest::new("cat a/b.txt")).await?;
    ensure!(o.stdout == "one\ntwo\n", "{:?}", o.stdout);
    Ok(())
}

/// Unicode content and names; parents are created.
pub async fn text_unicode_and_parents(env: Env) -> anyhow::Result<()> {
    let p = ws("deep/ünï/cödé/файл.txt");
    write(&env, &p, "日本語 🦀\n").await?;
    ensure!(read(&env, &p).await? == "日本語 🦀\n", "content");
    let e = env.sb().stat(&ws("deep/ünï")).await?;
    ensure!(e.kind == EntryKind::Dir, "{e:?}");
    Ok(())
}

/// Append adds to the end; overwrite replaces.
pub async fn text_append(env: Env) -> anyhow::Result<()> {
    let p = ws("log.txt");
    write(&env, &p, "a\n").await?;
    env.sb()
        .write_text(WriteText {
            path: p.clone(),
            content: "b\n".into(),
            append: true,
        })
        .await?;
    ensure!(read(&env, &p).await? == "a\nb\n", "append");
    write(&env, &p, "c").await?;
    ensure!(read(&env, &p).await? == "c", "overwrite");
    Ok(())
}

/// 1-based inclusive ranges, joined by `\n` without a trailing newline.
pub async fn text_line_ranges(env: Env) -> anyhow::Result<()> {
    let p = ws("lines.txt");
    write(&env, &p, "l1\nl2\nl3\nl4\nl5\n").await?;
    let r = |s: Option<u64>, e: Option<u64>| ReadText {
        path: p.clone(),
        start_line: s,
        end_line: e,
        max_bytes: None,
    };
    let t = env.sb().read_text(r(Some(2), Some(4))).await?;
    ensure!(t.content == "l2\nl3\nl4" && t.total_lines == 5, "{t:?}");
    let t = env.sb().read_text(r(Some(4), None)).await?;
    ensure!(t.content == "l4\nl5", "{t:?}");
    let t = env.sb().read_text(r(None, Some(1))).await?;
    ensure!(t.content == "l1", "{t:?}");
    let t = env.sb().read_text(r(Some(3), Some(3))).await?;
    ensure!(t.content == "l3", "{t:?}");
    Ok(())
}

/// Invalid ranges name the field.
pub async fn text_bad_range(env: Env) -> anyhow::Result<()> {
    let p = ws("r.txt");
    write(&env, &p, "x\n").await?;
    let e = expect_code(
        env.sb()
            .read_text(ReadText {
                path: p.clone(),
                start_line: Some(3),
                end_line: Some(2),
                max_bytes: None,
            })
            .await,
        &["invalid_argument"],
        "start > end",
    )?;
    ensure!(e.to_string().contains("start_line"), "{e}");
    expect_code(
        env.sb()
            .read_text(ReadText {
                path: p,
                start_line: Some(0),
                end_line: None,
                max_bytes: None,
            })
            .await,
        &["invalid_argument"],
        "start 0",
    )?;
    Ok(())
}

/// Binary files are refused as text with a clear error.
pub async fn text_binary_refused(env: Env) -> anyhow::Result<()> {
    let p = ws("bin.dat");
    env.sb()
        .write_bytes(
            WriteBytes {
                path: p.clone(),
                ..Default::default()
            },
            chunks(vec![0xff, 0xfe, 0, 1, 2], 2),
        )
        .await?;
    let e = expect_code(
        env.sb().read_text(ReadText::new(&p)).await,
        &["not_text"],
        "binary",
    )?;
    ensure!(e.to_string().contains(&p), "{e}");
    Ok(())
}

/// A missing file is `not_found` with its virtual path.
pub async fn text_missing(env: Env) -> anyhow::Result<()> {
    let p = ws("nope.txt");
    let e = expect_code(
        env.sb().read_text(ReadText::new(&p)).await,
        &["not_found"],
        "missing",
    )?;
    ensure!(e.path() == Some(p.as_str()), "{e:?}");
    Ok(())
}

/// Writing text onto a directory is refused.
pub async fn write_to_directory_refused(env: Env) -> anyhow::Result<()> {
    env.sb().exec(ExecRequest::new("mkdir -p d")).await?;
    expect_code(
        env.sb()
            .write_text(WriteText {
                path: ws("d"),
                content: "x".into(),
                append: false,
            })
            .await,
        &["is_a_directory"],
        "write to dir",
    )?;
    Ok(())
}

// ------------------------------------------------------------------ bytes

/// All byte values survive write_bytes/read_bytes.
pub async fn bytes_round_trip(env: Env) -> anyhow::Result<()> {
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let p = "/mnt/user-data/outputs/all.bin";
    let out = env
        .sb()
        .write_bytes(
            WriteBytes {
                path: p.into(),
                ..Default::default()
            },
            chunks(data.clone(), 7_777),
        )
        .await?;
    ensure!(out.bytes_written == data.len() as u64, "{out:?}");
    let back = read_all(
        &env,
        ReadBytes {
            path: p.into(),
            offset: 0,
            len: None,
        },
    )
    .await?;
    ensure!(back == data, "bytes differ");
    // Append.
    env.sb()
        .write_bytes(
            WriteBytes {
                path: p.into(),
                append: true,
                max_bytes: None,
            },
            chunks(vec![1, 2, 3], 3),
        )
        .await?;
    let back = read_all(
        &env,
        ReadBytes {
            path: p.into(),
            offset: 100_000,
            len: None,
        },
    )
    .await?;
    ensure!(back == [1, 2, 3], "{back:?}");
    Ok(())
}

/// Offset and length select a range; past the end is empty.
pub async fn bytes_ranges(env: Env) -> anyhow::Result<()> {
    let p = ws("r.bin");
    env.sb()
        .write_bytes(
            WriteBytes {
                path: p.clone(),
                ..Default::default()
            },
            chunks(b"0123456789".to_vec(), 4),
        )
        .await?;
    let got = read_all(
        &env,
        ReadBytes {
            path: p.clone(),
            offset: 3,
            len: Some(4),
        },
    )
    .await?;
    ensure!(got == b"3456", "{got:?}");
    let got = read_all(
        &env,
        ReadBytes {
            path: p.clone(),
            offset: 8,
            len: None,
        },
    )
    .await?;
    ensure!(got == b"89", "{got:?}");
    let got = read_all(
        &env,
        ReadBytes {
            path: p.clone(),
            offset: 10,
            len: None,
        },
    )
    .await?;
    ensure!(got.is_empty(), "at the end: {got:?}");
    let e = expect_code(
        env.sb()
            .read_bytes(ReadBytes {
                path: p.clone(),
                offset: 50,
                len: None,
            })
            .await,
        &["invalid_argument"],
        "offset past the end",
    )?;
    ensure!(e.to_string().contains("offset"), "{e}");
    let fs = env
        .sb()
        .read_bytes(ReadBytes {
            path: p,
            offset: 0,
            len: Some(2),
        })
        .await?;
    ensure!(fs.file_size == 10 && fs.len == 2, "{fs:?}");
    Ok(())
}

/// A 20 MiB file round-trips intact, streamed both ways.
pub async fn big_file_round_trip(env: Env) -> anyhow::Result<()> {
    const N: usize = 20 * 1024 * 1024;
    let mut data = Vec::with_capacity(N);
    let mut x: u32 = 0x1234_5678;
    while data.len() < N {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let p = "/mnt/user-data/uploads/big.bin";
    let out = env
        .sb()
        .write_bytes(
            WriteBytes {
                path: p.into(),
                ..Default::default()
            },
            chunks(data.clone(), 1 << 20),
        )
        .await?;
    ensure!(out.bytes_written == N as u64, "{out:?}");
    let back = read_all(
        &env,
        ReadBytes {
            path: p.into(),
            offset: 0,
            len: None,
        },
    )
    .await?;
    ensure!(
        back.len() == N && back == data,
        "20 MiB differ (got {} bytes)",
        back.len()
    );
    let e = env.sb().stat(p).await?;
    ensure!(e.size == N as u64, "{e:?}");
    Ok(())
}

/// `max_bytes` refuses larger uploads and leaves no file behind.
pub async fn bytes_cap(env: Env) -> anyhow::Result<()> {
    let p = ws("capped.bin");
    let r = env
        .sb()
        .write_bytes(
            WriteBytes {
                path: p.clone(),
                append: false,
                max_bytes: Some(10),
            },
            chunks(vec![7; 100], 10),
        )
        .await;
    expect_code(r, &["too_large"], "over max_bytes")?;
    expect_code(env.sb().stat(&p).await, &["not_found"], "no partial file")?;
    Ok(())
}

// ------------------------------------------------------------------ mounts and paths

/// The skills mount is readable but refuses every write.
pub async fn read_only_mount(env: Env) -> anyhow::Result<()> {
    ensure!(
        read(&env, SEEDED_SKILL).await? == SEEDED_SKILL_TEXT,
        "seeded skill"
    );
    expect_code(
        env.sb()
            .write_text(WriteText {
                path: SEEDED_SKILL.into(),
                content: "x".into(),
                append: false,
            })
            .await,
        &["read_only"],
        "write skill",
    )?;
    expect_code(
        env.sb()
            .write_text(WriteText {
                path: "/mnt/skills/new/x.md".into(),
                content: "x".into(),
                append: false,
            })
            .await,
        &["read_only"],
        "create in skills",
    )?;
    expect_code(
        env.sb()
            .str_replace(StrReplace {
                path: SEEDED_SKILL.into(),
                old: "demo".into(),
                new: "x".into(),
                ..Default::default()
            })
            .await,
        &["read_only"],
        "str_replace skill",
    )?;
    expect_code(
        env.sb()
            .write_bytes(
                WriteBytes {
                    path: "/mnt/skills/b.bin".into(),
                    ..Default::default()
                },
                chunks(vec![1], 1),
            )
            .await,
        &["read_only"],
        "write_bytes skill",
    )?;
    ensure!(
        read(&env, SEEDED_SKILL).await? == SEEDED_SKILL_TEXT,
        "unchanged"
    );
    Ok(())
}

/// `..` out of a mount and unmapped paths are refused; relative paths are invalid.
pub async fn escapes_refused(env: Env) -> anyhow::Result<()> {
    expect_code(
        env.sb()
            .read_text(ReadText::new(
                "/mnt/user-data/workspace/../../../etc/passwd",
            ))
            .await,
        &["access_denied"],
        "dotdot",
    )?;
    expect_code(
        env.sb()
            .read_text(ReadText::new("/mnt/user-data/workspace/../uploads/x"))
            .await,
        &["access_denied"],
        "cross-mount dotdot",
    )?;
    expect_code(
        env.sb().read_text(ReadText::new("/etc/passwd")).await,
        &["access_denied"],
        "unmapped",
    )?;
    expect_code(
        env.sb().read_text(ReadText::new("relative.txt")).await,
        &["invalid_path"],
        "relative",
    )?;
    expect_code(
        env.sb()
            .write_text(WriteText {
                path: "/tmp/x".into(),
                content: "x".into(),
                append: false,
            })
            .await,
        &["access_denied"],
        "write unmapped",
    )?;
    expect_code(
        env.sb()
            .list(List::new("/mnt/user-data/workspace/.."))
            .await,
        &["access_denied"],
        "list dotdot",
    )?;
    Ok(())
}

/// Symlinks made inside the sandbox cannot lead out of their mount.
pub async fn symlink_escapes_refused(env: Env) -> anyhow::Result<()> {
    let o = env.sb().exec(ExecRequest::new("ln -s /etc/passwd abs && ln -s ../../.. up && ln -s ../uploads side && ln -s real.txt rel && echo ok > real.txt")).await?;
    ensure!(o.exit.exit_code == Some(0), "{o:?}");
    expect_code(
        env.sb().read_text(ReadText::new(ws("abs"))).await,
        &["access_denied"],
        "absolute symlink",
    )?;
    expect_code(
        env.sb().read_text(ReadText::new(ws("up/etc/passwd"))).await,
        &["access_denied"],
        "relative symlink up",
    )?;
    expect_code(
        env.sb().read_text(ReadText::new(ws("side/x"))).await,
        &["access_denied", "not_found"],
        "sideways symlink",
    )?;
    expect_code(
        env.sb()
            .write_text(WriteText {
                path: ws("up/pwned"),
                content: "x".into(),
                append: false,
            })
            .await,
        &["access_denied"],
        "write through symlink",
    )?;
    ensure!(
        read(&env, &ws("rel")).await? == "ok\n",
        "in-mount symlink works"
    );
    Ok(())
}

// ------------------------------------------------------------------ str_replace

/// First / all / empty / missing / ambiguous.
pub async fn str_replace_variants(env: Env) -> anyhow::Result<()> {
    let p = ws("s.txt");
    let sr = |old: &str, new: &str, all: bool, unique: bool| StrReplace {
        path: p.clone(),
        old: old.into(),
        new: new.into(),
        replace_all: all,
        expect_unique: unique,
        max_bytes: None,
    };
    write(&env, &p, "a b a b a").await?;
    ensure!(
        env.sb()
            .str_replace(sr("a", "X", false, false))
            .await?
            .replacements
            == 1,
        "first"
    );
    ensure!(read(&env, &p).await? == "X b a b a", "first result");
    ensure!(
        env.sb()
            .str_replace(sr("a", "Y", true, false))
            .await?
            .replacements
            == 2,
        "all"
    );
    ensure!(read(&env, &p).await? == "X b Y b Y", "all result");
    ensure!(
        env.sb()
            .str_replace(sr("", "Z", false, false))
            .await?
            .replacements
            == 0,
        "empty old"
    );
    ensure!(read(&env, &p).await? == "X b Y b Y", "empty is a no-op");
    expect_code(
        env.sb().str_replace(sr("nope", "Z", false, false)).await,
        &["no_match"],
        "missing",
    )?;
    let e = expect_code(
        env.sb().str_replace(sr("b", "Z", false, true)).await,
        &["ambiguous"],
        "ambiguous",
    )?;
    ensure!(
        matches!(e, SandboxError::Ambiguous { count: 2, .. }),
        "{e:?}"
    );
    ensure!(
        env.sb()
            .str_replace(sr("X", "ü", false, true))
            .await?
            .replacements
            == 1,
        "unique"
    );
    ensure!(read(&env, &p).await? == "ü b Y b Y", "unicode replace");
    expect_code(
        env.sb().str_replace(sr("a", "b", false, false)).await,
        &["no_match"],
        "nothing left to replace",
    )?;
    // A result over the request's bound is refused before anything is written, and so is
    // a text read of a file over it.
    let before = read(&env, &p).await?;
    let bound = (before.len() + 4) as u64;
    let e = expect_code(
        env.sb()
            .str_replace(StrReplace {
                max_bytes: Some(bound),
                ..sr("Y", "YYYY", true, false)
            })
            .await,
        &["too_large"],
        "result over the bound",
    )?;
    ensure!(
        matches!(&e, SandboxError::ResultTooLarge { size, limit, field, .. }
            if *size == before.len() as u64 + 6 && *limit == bound && field == "new"),
        "{e:?}"
    );
    ensure!(
        read(&env, &p).await? == before,
        "refused replace changed nothing"
    );
    expect_code(
        env.sb()
            .read_text(ReadText {
                max_bytes: Some(4),
                ..ReadText::new(p.clone())
            })
            .await,
        &["too_large"],
        "read over the bound",
    )?;
    Ok(())
}

// ------------------------------------------------------------------ glob / grep / list

async fn tree(env: &Env) -> anyhow::Result<()> {
    let o = env
        .sb()
        .exec(ExecRequest::new(
            "mkdir -p proj/src/deep proj/node_modules/pkg proj/.hidden && \
             echo 'fn main() {}' > proj/src/main.rs && echo 'pub fn Hello() {}' > proj/src/deep/lib.rs && \
             echo 'hello world' > proj/README.md && echo 'hello dep' > proj/node_modules/pkg/index.js && \
             echo 'secret hello' > proj/.hidden/h.txt && printf 'hello\\0bin' > proj/data.bin",
        ))
        .await?;
    ensure!(o.exit.exit_code == Some(0), "{o:?}");
    Ok(())
}

/// `**` recursion, top-level matches, directories on request, ignored dirs pruned.
pub async fn glob_cases(env: Env) -> anyhow::Result<()> {
    tree(&env).await?;
    let g = env.sb().glob(Glob::new(ws("proj"), "**/*.rs")).await?;
    let got: Vec<String> = g.paths.iter().map(ToString::to_string).collect();
    ensure!(
        got == [ws("proj/src/deep/lib.rs"), ws("proj/src/main.rs")],
        "{got:?}"
    );
    ensure!(!g.truncated, "not truncated");
    let g = env.sb().glob(Glob::new(ws("proj"), "*.md")).await?;
    ensure!(
        g.paths.iter().map(ToString::to_string).collect::<Vec<_>>() == [ws("proj/README.md")],
        "{g:?}"
    );
    let g = env.sb().glob(Glob::new(ws("proj"), "**/*.js")).await?;
    ensure!(g.paths.is_empty(), "node_modules is ignored: {g:?}");
    let mut d = Glob::new(ws("proj"), "**/deep");
    d.include_dirs = true;
    let g = env.sb().glob(d).await?;
    ensure!(
        g.paths.iter().any(|p| p.as_str() == ws("proj/src/deep")),
        "{g:?}"
    );
    expect_code(
        env.sb().glob(Glob::new(ws("missing"), "*")).await,
        &["not_found"],
        "missing root",
    )?;
    Ok(())
}

/// The result cap sets `truncated`.
pub async fn glob_cap(env: Env) -> anyhow::Result<()> {
    env.sb()
        .exec(ExecRequest::new(
            "mkdir many && for i in $(seq 1 30); do touch many/f$i.txt; done",
        ))
        .await?;
    let mut g = Glob::new(ws("many"), "*.txt");
    g.max_results = 10;
    let out = env.sb().glob(g).await?;
    ensure!(
        out.paths.len() == 10 && out.truncated,
        "{} {}",
        out.paths.len(),
        out.truncated
    );
    Ok(())
}

/// Case-insensitive by default, literal mode, glob filter, binary skipped, bad regex.
pub async fn grep_cases(env: Env) -> anyhow::Result<()> {
    tree(&env).await?;
    let out = env.sb().grep(Grep::new(ws("proj"), "hello")).await?;
    let files: Vec<String> = out.matches.iter().map(|m| m.path.to_string()).collect();
    ensure!(files.contains(&ws("proj/README.md")), "{files:?}");
    ensure!(
        files.contains(&ws("proj/src/deep/lib.rs")),
        "case-insensitive by default: {files:?}"
    );
    ensure!(
        !files.iter().any(|f| f.ends_with("data.bin")),
        "binary skipped: {files:?}"
    );
    ensure!(
        !files.iter().any(|f| f.contains("node_modules")),
        "ignored dir: {files:?}"
    );
    let m = out
        .matches
        .iter()
        .find(|m| m.path.as_str() == ws("proj/README.md"))
        .context("readme match")?;
    ensure!(m.line_number == 1 && m.line == "hello world", "{m:?}");
    let mut cs = Grep::new(ws("proj"), "Hello");
    cs.case_sensitive = true;
    let out = env.sb().grep(cs).await?;
    ensure!(
        out.matches.len() == 1 && out.matches[0].path.as_str() == ws("proj/src/deep/lib.rs"),
        "{out:?}"
    );
    let mut lit = Grep::new(ws("proj"), "main()");
    lit.literal = true;
    ensure!(env.sb().grep(lit).await?.matches.len() == 1, "literal");
    let mut gl = Grep::new(ws("proj"), "hello");
    gl.glob = Some("**/*.md".into());
    let out = env.sb().grep(gl).await?;
    ensure!(
        out.matches.iter().all(|m| m.path.as_str().ends_with(".md")) && !out.matches.is_empty(),
        "{out:?}"
    );
    let single = env
        .sb()
        .grep(Grep::new(ws("proj/README.md"), "world"))
        .await?;
    ensure!(single.matches.len() == 1, "single file: {single:?}");
    let e = expect_code(
        env.sb().grep(Grep::new(ws("proj"), "(unclosed")).await,
        &["invalid_argument"],
        "bad regex",
    )?;
    ensure!(
        e.to_string().contains("pattern") || e.to_string().contains("regex"),
        "{e}"
    );
    Ok(())
}

/// Cap with `truncated`; long lines cut to 200 chars; over-long lines skipped.
pub async fn grep_cap_and_cuts(env: Env) -> anyhow::Result<()> {
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!("match {i}\n"));
    }
    text.push_str(&format!("match {}\n", "x".repeat(500)));
    text.push_str(&format!("match {}\n", "y".repeat(3000)));
    write(&env, &ws("g.txt"), &text).await?;
    let mut g = Grep::new(ws("g.txt"), "match");
    g.max_results = 5;
    let out = env.sb().grep(g).await?;
    ensure!(
        out.matches.len() == 5 && out.truncated,
        "{} {}",
        out.matches.len(),
        out.truncated
    );
    let out = env.sb().grep(Grep::new(ws("g.txt"), "match x")).await?;
    ensure!(out.matches.len() == 1, "{out:?}");
    let line = &out.matches[0].line;
    ensure!(
        line.chars().count() == 200 && line.ends_with("..."),
        "cut to 200: {}",
        line.len()
    );
    let out = env.sb().grep(Grep::new(ws("g.txt"), "match y")).await?;
    ensure!(
        out.matches.is_empty(),
        "lines over 2000 chars are skipped: {out:?}"
    );
    Ok(())
}

/// Depth 1 vs 2, hidden names, the ignore list, sorted, directories marked.
pub async fn list_depth_and_ignore(env: Env) -> anyhow::Result<()> {
    tree(&env).await?;
    let mut l = List::new(ws("proj"));
    l.max_depth = 1;
    let out = env.sb().list(l.clone()).await?;
    let shown: Vec<String> = out
        .entries
        .iter()
        .map(paddock_core::sandbox::Entry::display)
        .collect();
    ensure!(
        shown.contains(&format!("{}/", ws("proj/src"))),
        "dirs end with /: {shown:?}"
    );
    ensure!(shown.contains(&ws("proj/README.md")), "{shown:?}");
    ensure!(
        !shown.iter().any(|s| s.contains("deep")),
        "depth 1: {shown:?}"
    );
    ensure!(
        !shown.iter().any(|s| s.contains("node_modules")),
        "ignored: {shown:?}"
    );
    ensure!(
        shown.iter().any(|s| s.contains(".hidden")),
        "hidden shown by default: {shown:?}"
    );
    let mut sorted = shown.clone();
    sorted.sort();
    ensure!(sorted == shown, "sorted: {shown:?}");
    let out = env.sb().list(List::new(ws("proj"))).await?;
    ensure!(
        out.entries
            .iter()
            .any(|e| e.path.as_str() == ws("proj/src/deep")),
        "depth 2"
    );
    ensure!(
        !out.entries
            .iter()
            .any(|e| e.path.as_str() == ws("proj/src/deep/lib.rs")),
        "not depth 3"
    );
    l.show_hidden = false;
    l.apply_ignore = false;
    let out = env.sb().list(l).await?;
    let names: Vec<&str> = out.entries.iter().map(|e| e.path.as_str()).collect();
    ensure!(
        names.iter().any(|s| s.ends_with("node_modules")),
        "ignore off: {names:?}"
    );
    ensure!(
        !names.iter().any(|s| s.ends_with(".hidden")),
        "hidden off: {names:?}"
    );
    expect_code(
        env.sb().list(List::new(ws("proj/README.md"))).await,
        &["not_a_directory"],
        "list a file",
    )?;
    Ok(())
}

/// Kinds and sizes.
pub async fn stat_kinds(env: Env) -> anyhow::Result<()> {
    write(&env, &ws("five.txt"), "12345").await?;
    let f = env.sb().stat(&ws("five.txt")).await?;
    ensure!(
        f.kind == EntryKind::File && f.size == 5 && f.path.as_str() == ws("five.txt"),
        "{f:?}"
    );
    ensure!(f.modified.is_some(), "mtime");
    let d = env.sb().stat(WS).await?;
    ensure!(d.kind == EntryKind::Dir, "{d:?}");
    expect_code(env.sb().stat(&ws("none")).await, &["not_found"], "missing")?;
    Ok(())
}

/// No error message reveals the host data directory.
pub async fn errors_hide_host_paths(env: Env) -> anyhow::Result<()> {
    let host = env.data_dir.to_string_lossy().into_owned();
    let mut messages = Vec::new();
    for r in [
        env.sb()
            .read_text(ReadText::new(ws("missing")))
            .await
            .map(|_| ()),
        env.sb()
            .read_text(ReadText::new("/mnt/user-data/workspace/../../x"))
            .await
            .map(|_| ()),
        env.sb().list(List::new(ws("nope"))).await.map(|_| ()),
        env.sb()
            .write_text(WriteText {
                path: SEEDED_SKILL.into(),
                content: String::new(),
                append: false,
            })
            .await
            .map(|_| ()),
    ] {
        let e = r.err().context("expected an error")?;
        messages.push(e.to_string());
    }
    let o = env
        .sb()
        .exec(ExecRequest::new("pwd; ls /mnt/user-data"))
        .await?;
    messages.push(o.stdout);
    for m in messages {
        ensure!(!m.contains(&host), "host path leaked: {m}");
    }
    Ok(())
}

/// The facts every implementation reports.
pub async fn info_facts(env: Env) -> anyhow::Result<()> {
    let info = env.sb().info();
    ensure!(info.home_dir == WS, "{info:?}");
    let skills = info
        .mounts
        .iter()
        .find(|m| m.path == "/mnt/skills")
        .context("skills mount")?;
    ensure!(skills.read_only, "skills read-only");
    let ws_mount = info
        .mounts
        .iter()
        .find(|m| m.path == WS)
        .context("workspace mount")?;
    ensure!(!ws_mount.read_only, "workspace writable");
    Ok(())
}
