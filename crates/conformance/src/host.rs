//! `HostSandbox`: a TEST-ONLY `Sandbox` over plain `std::fs` and `bash -c` on the host,
//! with no isolation at all. It exists so the agent, the client and the conformance suite
//! can be exercised before (and independently of) `paddock-runtime`; it must never serve
//! real agents.
//!
//! Invariant: every path still goes through the thread's `MountTable` (`resolve_host`),
//! so escapes, unmapped paths and read-only mounts are refused exactly as the contract
//! says, and host paths in command output are masked back to virtual paths.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use paddock_core::mount::{MountTable, WORKSPACE, WalkOptions};
use paddock_core::sandbox::{
    ByteStream, DEFAULT_DOWNLOAD_CAP_BYTES, DEFAULT_EXEC_TIMEOUT_SECS, DEFAULT_OUTPUT_CAP_BYTES,
    DEFAULT_TEXT_CAP_BYTES, Entry, EntryKind, ExecEvent, ExecExit, ExecRequest, ExecStream,
    FileStream, GREP_LINE_CUT_CHARS, GREP_MAX_FILE_BYTES, GREP_MAX_LINE_CHARS, Glob, GlobOutcome,
    Grep, GrepMatch, GrepOutcome, List, Listing, ReadBytes, ReadText, ReplaceOutcome, SandboxInfo,
    StrReplace, TextContent, WriteBytes, WriteOutcome, WriteText,
};
use paddock_core::{DataLayout, Sandbox, SandboxError, ThreadId, UserId, VirtualPath};
use tokio::io::AsyncReadExt;

/// Names skipped by listing (with `apply_ignore`), glob and grep: the same list as the
/// real file operations, so both implementations agree by construction.
fn ignored(name: &str) -> bool {
    paddock_fsops::is_ignored(name)
}

/// The test-only host sandbox of one thread.
#[derive(Debug, Clone)]
pub struct HostSandbox {
    table: MountTable,
    id: String,
}

impl HostSandbox {
    /// The sandbox of `thread` of `user` under `data_dir` (directories created).
    pub fn new(data_dir: &Path, user: &UserId, thread: &ThreadId) -> Result<Self, SandboxError> {
        let layout = DataLayout::new(data_dir);
        let table = MountTable::for_thread(&layout, user, thread, Vec::new()).map_err(|e| {
            SandboxError::Internal {
                message: format!("could not prepare the thread: {e}"),
            }
        })?;
        Ok(Self {
            table,
            id: format!("host-{user}-{thread}").to_ascii_lowercase(),
        })
    }

    fn resolve(
        &self,
        path: &str,
        create_parents: bool,
    ) -> Result<(PathBuf, VirtualPath, bool), SandboxError> {
        let (host, walked) = self.table.resolve_host(
            path,
            WalkOptions {
                follow_final: true,
                create_parents,
            },
        )?;
        Ok((host, walked.vpath.clone(), walked.mount.read_only))
    }

    fn io(op: &'static str, vp: &VirtualPath) -> impl Fn(std::io::Error) -> SandboxError + 'static {
        let path = vp.to_string();
        move |e| SandboxError::from_io(op, &path, &e)
    }
}

fn modified(md: &std::fs::Metadata) -> Option<i64> {
    md.modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

fn entry(vp: VirtualPath, md: &std::fs::Metadata) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    Entry {
        path: vp,
        kind,
        size: if kind == EntryKind::Dir { 0 } else { md.len() },
        modified: modified(md),
        escaped_path: None,
    }
}

/// Walks `dir` to `depth`, calling `f(rel, host_path, metadata)`; never follows symlinks.
fn walk(
    dir: &Path,
    rel: &str,
    depth: u32,
    hidden: bool,
    ignore: bool,
    out: &mut Vec<(String, PathBuf, std::fs::Metadata)>,
) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<_> = rd.filter_map(Result::ok).collect();
    names.sort_by_key(std::fs::DirEntry::file_name);
    for de in names {
        let Some(name) = de.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if (!hidden && name.starts_with('.')) || (ignore && ignored(&name)) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(de.path()) else {
            continue;
        };
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let is_dir = md.is_dir();
        out.push((r.clone(), de.path(), md));
        if is_dir {
            walk(&de.path(), &r, depth - 1, hidden, ignore, out);
        }
    }
}

fn glob_matcher(field: &str, pattern: &str) -> Result<globset::GlobMatcher, SandboxError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| {
            SandboxError::invalid_argument(field, format!("invalid glob {pattern:?}: {e}"))
        })
}

fn matches_glob(m: &globset::GlobMatcher, pattern: &str, rel: &str) -> bool {
    m.is_match(rel)
        || pattern
            .strip_prefix("**/")
            .is_some_and(|rest| glob_matcher("pattern", rest).is_ok_and(|g| g.is_match(rel)))
}

#[async_trait]
impl Sandbox for HostSandbox {
    fn info(&self) -> SandboxInfo {
        let mounts = self.table.infos();
        SandboxInfo {
            id: self.id.clone(),
            home_dir: WORKSPACE.into(),
            backend: "host-test".into(),
            isolation: "none".into(),
            mounts,
        }
    }

    async fn exec_stream(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        req.validate()?;
        let cwd = req.cwd.clone().unwrap_or_else(|| WORKSPACE.to_owned());
        let (host_cwd, vcwd, _) = self.resolve(&cwd, false)?;
        std::fs::metadata(&host_cwd).map_err(Self::io("exec", &vcwd))?;
        if !host_cwd.is_dir() {
            return Err(SandboxError::NotADirectory {
                path: vcwd.to_string(),
            });
        }
        let command = self.table.rewrite_command(&req.command)?;
        let env = paddock_core::envpolicy::scrub(std::env::vars(), &req.env);
        let mut cmd = tokio::process::Command::new("/bin/bash");
        cmd.arg("-c")
            .arg(&command)
            .current_dir(&host_cwd)
            .env_clear()
            .envs(&env);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::spawn(e.to_string()))?;
        let pid = child.id();
        let cap = req
            .max_output_bytes
            .unwrap_or(DEFAULT_OUTPUT_CAP_BYTES)
            .min(DEFAULT_OUTPUT_CAP_BYTES);
        let timeout =
            Duration::from_secs_f64(req.timeout_secs.unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ExecEvent, SandboxError>>(64);
        let table = self.table.clone();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        tokio::spawn(async move {
            let started = Instant::now();
            let pump = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
                        is_err: bool| {
                let tx = tx.clone();
                let table = table.clone();
                async move {
                    let Some(mut pipe) = pipe else { return 0u64 };
                    let mut kept = 0u64;
                    let mut dropped = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match pipe.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let room = cap.saturating_sub(kept) as usize;
                        let take = n.min(room);
                        dropped += (n - take) as u64;
                        kept += take as u64;
                        if take > 0 {
                            let text = String::from_utf8_lossy(&buf[..take]);
                            let data = Bytes::from(table.mask_host_paths(&text).into_owned());
                            let ev = if is_err {
                                ExecEvent::Stderr { data }
                            } else {
                                ExecEvent::Stdout { data }
                            };
                            if tx.send(Ok(ev)).await.is_err() {
                                break;
                            }
                        }
                    }
                    dropped
                }
            };
            let o: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> =
                out.take().map(|p| Box::new(p) as _);
            let e: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> =
                err.take().map(|p| Box::new(p) as _);
            let out_task = tokio::spawn(pump(o, false));
            let err_task = tokio::spawn(pump(e, true));
            let kill_group = || {
                if let Some(pid) = pid {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", "--", &format!("-{pid}")])
                        .status();
                }
            };
            let (status, timed_out) = tokio::select! {
                s = child.wait() => (s.ok(), false),
                () = tokio::time::sleep(timeout) => {
                    kill_group();
                    (child.wait().await.ok(), true)
                }
                () = tx.closed() => {
                    kill_group();
                    return;
                }
            };
            // Background children may hold the pipes open: give them a moment, then stop.
            let grace = Duration::from_millis(300);
            let out_dropped = tokio::time::timeout(grace, out_task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let err_dropped = tokio::time::timeout(grace, err_task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            use std::os::unix::process::ExitStatusExt;
            let exit = ExecExit {
                exit_code: status.and_then(|s| s.code()),
                signal: status.and_then(|s| s.signal()),
                timed_out,
                oom_killed: false,
                stdout_dropped: out_dropped,
                stderr_dropped: err_dropped,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            let _ = tx.send(Ok(ExecEvent::Exit(exit))).await;
        });
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|i| (i, rx)) },
        )))
    }

    async fn read_text(&self, req: ReadText) -> Result<TextContent, SandboxError> {
        req.validate()?;
        let (host, vp, _) = self.resolve(&req.path, false)?;
        let md = std::fs::metadata(&host).map_err(Self::io("read", &vp))?;
        if md.is_dir() {
            return Err(SandboxError::IsADirectory {
                path: vp.to_string(),
            });
        }
        let cap = req
            .max_bytes
            .map_or(DEFAULT_TEXT_CAP_BYTES, |m| m.min(DEFAULT_TEXT_CAP_BYTES));
        if md.len() > cap {
            return Err(SandboxError::TooLarge {
                path: vp.to_string(),
                size: md.len(),
                limit: cap,
            });
        }
        let bytes = std::fs::read(&host).map_err(Self::io("read", &vp))?;
        let text = String::from_utf8(bytes).map_err(|_| SandboxError::NotText {
            path: vp.to_string(),
        })?;
        let total = text.lines().count() as u64;
        let content = if req.start_line.is_none() && req.end_line.is_none() {
            text
        } else {
            let start = req.start_line.unwrap_or(1).max(1);
            let end = req.end_line.unwrap_or(u64::MAX);
            text.lines()
                .enumerate()
                .filter(|(i, _)| (*i as u64 + 1) >= start && (*i as u64 + 1) <= end)
                .map(|(_, l)| l.trim_end_matches('\r'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok(TextContent {
            path: vp.to_string(),
            content,
            total_lines: total,
        })
    }

    async fn read_bytes(&self, req: ReadBytes) -> Result<FileStream, SandboxError> {
        let (host, vp, _) = self.resolve(&req.path, false)?;
        let md = std::fs::metadata(&host).map_err(Self::io("read", &vp))?;
        if md.is_dir() {
            return Err(SandboxError::IsADirectory {
                path: vp.to_string(),
            });
        }
        let size = md.len();
        if req.offset > size {
            return Err(SandboxError::invalid_argument(
                "offset",
                format!("{} is past the end of {vp} ({size} bytes)", req.offset),
            ));
        }
        let len = size
            .saturating_sub(req.offset)
            .min(req.len.unwrap_or(u64::MAX));
        if len > DEFAULT_DOWNLOAD_CAP_BYTES {
            return Err(SandboxError::TooLarge {
                path: vp.to_string(),
                size: len,
                limit: DEFAULT_DOWNLOAD_CAP_BYTES,
            });
        }
        let mut f = std::fs::File::open(&host).map_err(Self::io("read", &vp))?;
        f.seek(SeekFrom::Start(req.offset))
            .map_err(Self::io("read", &vp))?;
        let file = tokio::fs::File::from_std(f).take(len);
        let path = vp.to_string();
        let stream = futures_util::stream::unfold((file, path), |(mut file, path)| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, path)))
                }
                Err(e) => Some((Err(SandboxError::from_io("read", &path, &e)), (file, path))),
            }
        });
        Ok(FileStream {
            len,
            file_size: size,
            stream: Box::pin(stream),
        })
    }

    async fn write_text(&self, req: WriteText) -> Result<WriteOutcome, SandboxError> {
        let (host, vp, ro) = self.resolve(&req.path, true)?;
        if ro {
            return Err(SandboxError::ReadOnly {
                path: vp.to_string(),
            });
        }
        if host.is_dir() {
            return Err(SandboxError::IsADirectory {
                path: vp.to_string(),
            });
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(req.append)
            .truncate(!req.append)
            .open(&host)
            .map_err(Self::io("write", &vp))?;
        f.write_all(req.content.as_bytes())
            .map_err(Self::io("write", &vp))?;
        Ok(WriteOutcome {
            path: vp.to_string(),
            bytes_written: req.content.len() as u64,
        })
    }

    async fn write_bytes(
        &self,
        req: WriteBytes,
        mut body: ByteStream,
    ) -> Result<WriteOutcome, SandboxError> {
        let (host, vp, ro) = self.resolve(&req.path, true)?;
        if ro {
            return Err(SandboxError::ReadOnly {
                path: vp.to_string(),
            });
        }
        if host.is_dir() {
            return Err(SandboxError::IsADirectory {
                path: vp.to_string(),
            });
        }
        let limit = req.max_bytes.unwrap_or(u64::MAX);
        let tmp = host.with_file_name(format!(".paddock-upload-{}", std::process::id()));
        let target = if req.append {
            host.clone()
        } else {
            tmp.clone()
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(req.append)
            .truncate(!req.append)
            .open(&target)
            .map_err(Self::io("write", &vp))?;
        let mut written = 0u64;
        let result: Result<(), SandboxError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                written += chunk.len() as u64;
                if written > limit {
                    return Err(SandboxError::TooLarge {
                        path: vp.to_string(),
                        size: written,
                        limit,
                    });
                }
                f.write_all(&chunk).map_err(Self::io("write", &vp))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            if !req.append {
                let _ = std::fs::remove_file(&tmp);
            }
            return Err(e);
        }
        if !req.append {
            std::fs::rename(&tmp, &host).map_err(Self::io("write", &vp))?;
        }
        Ok(WriteOutcome {
            path: vp.to_string(),
            bytes_written: written,
        })
    }

    async fn stat(&self, path: &str) -> Result<Entry, SandboxError> {
        let (host, vp, _) = self.resolve(path, false)?;
        let md = std::fs::metadata(&host).map_err(Self::io("stat", &vp))?;
        Ok(entry(vp, &md))
    }

    async fn list(&self, req: List) -> Result<Listing, SandboxError> {
        let (host, vp, _) = self.resolve(&req.path, false)?;
        let md = std::fs::metadata(&host).map_err(Self::io("list", &vp))?;
        if !md.is_dir() {
            return Err(SandboxError::NotADirectory {
                path: vp.to_string(),
            });
        }
        let mut found = Vec::new();
        walk(
            &host,
            "",
            req.max_depth,
            req.show_hidden,
            req.apply_ignore,
            &mut found,
        );
        let mut entries: Vec<Entry> = found
            .iter()
            .filter_map(|(rel, _, md)| vp.join(rel).ok().map(|p| entry(p, md)))
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let truncated = entries.len() > req.max_entries;
        entries.truncate(req.max_entries);
        Ok(Listing {
            entries,
            truncated,
            ..Listing::default()
        })
    }

    async fn glob(&self, req: Glob) -> Result<GlobOutcome, SandboxError> {
        let m = glob_matcher("pattern", &req.pattern)?;
        let (host, vp, _) = self.resolve(&req.path, false)?;
        std::fs::metadata(&host).map_err(Self::io("glob", &vp))?;
        if !host.is_dir() {
            return Err(SandboxError::NotADirectory {
                path: vp.to_string(),
            });
        }
        let mut found = Vec::new();
        walk(&host, "", 64, true, true, &mut found);
        let mut paths = Vec::new();
        let mut truncated = false;
        for (rel, _, md) in &found {
            if md.is_dir() && !req.include_dirs {
                continue;
            }
            if md.file_type().is_symlink() {
                continue;
            }
            if matches_glob(&m, &req.pattern, rel) {
                if paths.len() >= req.max_results {
                    truncated = true;
                    break;
                }
                if let Ok(p) = vp.join(rel) {
                    paths.push(p);
                }
            }
        }
        paths.sort();
        Ok(GlobOutcome {
            paths,
            truncated,
            ..GlobOutcome::default()
        })
    }

    async fn grep(&self, req: Grep) -> Result<GrepOutcome, SandboxError> {
        let pat = if req.literal {
            regex::escape(&req.pattern)
        } else {
            req.pattern.clone()
        };
        let re = regex::RegexBuilder::new(&pat)
            .case_insensitive(!req.case_sensitive)
            .build()
            .map_err(|e| {
                SandboxError::invalid_argument("pattern", format!("invalid regex: {e}"))
            })?;
        let filter = req
            .glob
            .as_deref()
            .map(|g| glob_matcher("glob", g).map(|m| (m, g.to_owned())))
            .transpose()?;
        let (host, vp, _) = self.resolve(&req.path, false)?;
        std::fs::metadata(&host).map_err(Self::io("grep", &vp))?;
        let files: Vec<(String, PathBuf, VirtualPath)> = if host.is_dir() {
            let mut found = Vec::new();
            walk(&host, "", 64, true, true, &mut found);
            found
                .into_iter()
                .filter(|(_, _, md)| md.is_file())
                .filter_map(|(rel, p, _)| vp.join(&rel).ok().map(|v| (rel, p, v)))
                .collect()
        } else {
            let name = vp.file_name().unwrap_or_default().to_owned();
            vec![(name, host.clone(), vp.clone())]
        };
        let mut matches = Vec::new();
        let mut truncated = false;
        'files: for (rel, p, v) in files {
            if let Some((m, g)) = &filter
                && !matches_glob(m, g, &rel)
            {
                continue;
            }
            let Ok(md) = std::fs::metadata(&p) else {
                continue;
            };
            if md.len() > GREP_MAX_FILE_BYTES {
                continue;
            }
            let Ok(mut f) = std::fs::File::open(&p) else {
                continue;
            };
            let mut bytes = Vec::new();
            if f.read_to_end(&mut bytes).is_err() || bytes[..bytes.len().min(8192)].contains(&0) {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            for (i, line) in text.lines().enumerate() {
                if line.chars().count() > GREP_MAX_LINE_CHARS || !re.is_match(line) {
                    continue;
                }
                if matches.len() >= req.max_results {
                    truncated = true;
                    break 'files;
                }
                let line = line.trim_end();
                let shown = if line.chars().count() > GREP_LINE_CUT_CHARS {
                    format!(
                        "{}...",
                        line.chars()
                            .take(GREP_LINE_CUT_CHARS - 3)
                            .collect::<String>()
                    )
                } else {
                    line.to_owned()
                };
                matches.push(GrepMatch {
                    path: v.clone(),
                    line_number: i as u64 + 1,
                    line: shown,
                    escaped_path: None,
                });
            }
        }
        Ok(GrepOutcome {
            matches,
            truncated,
            ..GrepOutcome::default()
        })
    }

    async fn str_replace(&self, req: StrReplace) -> Result<ReplaceOutcome, SandboxError> {
        let (host, vp, ro) = self.resolve(&req.path, false)?;
        let cap = req
            .max_bytes
            .map_or(DEFAULT_TEXT_CAP_BYTES, |m| m.min(DEFAULT_TEXT_CAP_BYTES));
        let text = self
            .read_text(ReadText {
                max_bytes: Some(cap),
                ..ReadText::new(vp.as_str())
            })
            .await?
            .content;
        if req.old.is_empty() {
            return Ok(ReplaceOutcome { replacements: 0 });
        }
        if ro {
            return Err(SandboxError::ReadOnly {
                path: vp.to_string(),
            });
        }
        let count = text.matches(&req.old).count();
        if count == 0 {
            return Err(SandboxError::NoMatch {
                path: vp.to_string(),
            });
        }
        if req.expect_unique && count > 1 {
            return Err(SandboxError::Ambiguous {
                path: vp.to_string(),
                count,
            });
        }
        let n = if req.replace_all { count } else { 1 };
        let size = (text.len() as u64 - (req.old.len() * n) as u64) + (req.new.len() * n) as u64;
        if size > cap {
            return Err(SandboxError::ResultTooLarge {
                path: vp.to_string(),
                field: "new".into(),
                size,
                limit: cap,
            });
        }
        let (new, n) = if req.replace_all {
            (text.replace(&req.old, &req.new), count)
        } else {
            (text.replacen(&req.old, &req.new, 1), 1)
        };
        std::fs::write(&host, new).map_err(Self::io("write", &vp))?;
        Ok(ReplaceOutcome { replacements: n })
    }
}
