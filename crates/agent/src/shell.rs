//! Shell sessions that keep their working directory and environment between calls, as
//! the AIO image's persistent shell does, without a long-lived shell process.
//!
//! Each call runs one fresh `bash -c` through [`Sandbox::exec_stream`]: a preamble
//! restores the session's cwd and environment, the command runs, and an `EXIT` trap
//! prints the new `pwd` and `env -0` between two markers carrying a per-call random
//! token; the block is cut out of the output before anyone sees it. Invariants: calls to
//! one session are serialised (a tokio mutex per session), calls to different sessions
//! run concurrently, and a call that breaks its shell (`exit`, `exec >file`, output over
//! the cap) leaves the session's previous state in place instead of poisoning it.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use paddock_core::sandbox::{ExecEvent, ExecExit, ExecOutcome, ExecRequest};
use paddock_core::{Sandbox, SandboxError};
use tokio::sync::OnceCell;

/// Variables bash manages itself; never carried between calls.
const VOLATILE: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_"];

/// A bash function printing the exported variables as `env -0` does (`NAME=value\0`...),
/// with builtins only: `${!X*}` lists the variables of each initial letter, `${!n@a}` their
/// attributes. A fork and `execve` of `env` per call cost more than the rest of a session's
/// bookkeeping together.
const ENV_DUMP: &str = concat!(
    "__pd_env() { local __pd_n; for __pd_n in ",
    "${!A*} ${!B*} ${!C*} ${!D*} ${!E*} ${!F*} ${!G*} ${!H*} ${!I*} ${!J*} ${!K*} ${!L*} ${!M*} ",
    "${!N*} ${!O*} ${!P*} ${!Q*} ${!R*} ${!S*} ${!T*} ${!U*} ${!V*} ${!W*} ${!X*} ${!Y*} ${!Z*} ",
    "${!a*} ${!b*} ${!c*} ${!d*} ${!e*} ${!f*} ${!g*} ${!h*} ${!i*} ${!j*} ${!k*} ${!l*} ${!m*} ",
    "${!n*} ${!o*} ${!p*} ${!q*} ${!r*} ${!s*} ${!t*} ${!u*} ${!v*} ${!w*} ${!x*} ${!y*} ${!z*} ",
    "${!_*}; do case ${!__pd_n@a} in *[aA]*) ;; *x*) printf '%s=%s\\0' \"$__pd_n\" \"${!__pd_n}\" ;; esac; ",
    "done; }\n"
);

/// Wall-clock limit of the one `env -0` that reads the sandbox's base environment.
const BASE_ENV_TIMEOUT_SECS: f64 = 30.0;

/// Longest accepted session id.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// What one session remembers.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// The working directory (as `pwd` printed it), `None` until a call ran.
    pub cwd: Option<String>,
    /// Variables that differ from the sandbox's base environment.
    pub env: BTreeMap<String, String>,
    /// Base variables the session unset.
    pub unset: BTreeSet<String>,
}

/// One command to run in a session.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The command.
    pub command: String,
    /// Run in this directory (and stay there), instead of the session's.
    pub cwd: Option<String>,
    /// Variables for this call only.
    pub env: BTreeMap<String, String>,
    /// Variables to unset for this call only.
    pub unset: BTreeSet<String>,
    /// Wall-clock limit in seconds.
    pub timeout_secs: Option<f64>,
    /// Stop waiting when no output came for this long.
    pub idle_secs: Option<f64>,
    /// Per-stream output cap.
    pub max_output_bytes: Option<u64>,
    /// Send stderr into stdout (a terminal's view).
    pub merge_stderr: bool,
}

/// What a call produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Output and exit (the state block removed).
    pub outcome: ExecOutcome,
    /// The idle limit stopped it.
    pub idle_timed_out: bool,
    /// The session's working directory afterwards.
    pub cwd: Option<String>,
}

type Slot = Arc<tokio::sync::Mutex<SessionState>>;

/// All sessions of one sandbox.
pub struct Sessions {
    map: Mutex<HashMap<String, (Slot, u64)>>,
    tick: AtomicU64,
    cap: usize,
    base_env: OnceCell<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("cap", &self.cap).finish()
    }
}

/// A fresh random token (ids, markers). Not a secret: it only has to be unlikely to
/// occur in a command's output by chance.
pub fn random_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let a = h.finish();
    let mut h2 = RandomState::new().build_hasher();
    h2.write_u64(a);
    format!("{:016x}{:016x}", a, h2.finish())
}

/// Validates a client-chosen session id.
pub fn validate_session_id(id: &str) -> Result<(), SandboxError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SandboxError::invalid_argument(
            "id",
            format!("session id must be 1-{MAX_SESSION_ID_LEN} letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Sessions {
    /// At most `cap` sessions are kept; the least recently used idle one is forgotten first.
    pub fn new(cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            cap: cap.max(1),
            base_env: OnceCell::new(),
        }
    }

    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Slot, u64)>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // mutation is a single insert/remove), so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session `id`, created with `state` when new. Returns whether it was created.
    pub fn get_or_create(&self, id: &str, state: SessionState) -> (Slot, bool) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock_map();
        if let Some((slot, used)) = map.get_mut(id) {
            *used = tick;
            return (slot.clone(), false);
        }
        if map.len() >= self.cap {
            // Forget the least recently used session nobody is running in.
            let victim = map
                .iter()
                .filter(|(_, (s, _))| s.try_lock().is_ok())
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(v) = victim {
                map.remove(&v);
            }
        }
        let slot: Slot = Arc::new(tokio::sync::Mutex::new(state));
        map.insert(id.to_owned(), (slot.clone(), tick));
        (slot, true)
    }

    /// Whether `id` exists.
    pub fn contains(&self, id: &str) -> bool {
        self.lock_map().contains_key(id)
    }

    /// Forgets `id`; returns whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.lock_map().remove(id).is_some()
    }

    async fn base_env(
        &self,
        sandbox: &dyn Sandbox,
    ) -> Result<&BTreeMap<String, String>, SandboxError> {
        self.base_env
            .get_or_try_init(|| async {
                if let Some(env) = sandbox.base_env() {
                    return Ok(env);
                }
                let mut req = ExecRequest::new("env -0");
                req.timeout_secs = Some(BASE_ENV_TIMEOUT_SECS);
                let out = sandbox.exec(req).await?;
                // A partial dump would make every later diff wrong; fail (uncached) instead.
                if out.exit.timed_out || out.exit.exit_code != Some(0) || out.stdout_truncated {
                    return Err(SandboxError::Unavailable {
                        message: "could not read the sandbox's base environment".into(),
                    });
                }
                Ok::<_, SandboxError>(parse_env(out.stdout.as_bytes()))
            })
            .await
    }

    /// Runs `run` in session `id` (created when missing).
    pub async fn run(
        &self,
        sandbox: &dyn Sandbox,
        id: &str,
        run: Run,
    ) -> Result<RunResult, SandboxError> {
        let base = self.base_env(sandbox).await?.clone();
        let (slot, _) = self.get_or_create(id, SessionState::default());
        let mut state = slot.lock().await;
        let token = random_token();
        let cwd = run.cwd.clone().or_else(|| state.cwd.clone());
        let mut script = String::new();
        script.push_str(&format!("__pd_m={token}\n"));
        script.push_str(ENV_DUMP);
        script.push_str(
            "trap 'printf \"%sS%s\\n\" \"$__pd_m\" \"$?\"; pwd; __pd_env; printf \"%sE\" \"$__pd_m\"' EXIT\n",
        );
        if run.merge_stderr {
            script.push_str("exec 2>&1\n");
        }
        if let Some(dir) = &cwd {
            script.push_str(&format!("cd -- {} 2>/dev/null\n", quote(dir)));
        }
        let unset: BTreeSet<&String> = state
            .unset
            .iter()
            .chain(run.unset.iter())
            .filter(|k| !run.env.contains_key(*k))
            .collect();
        if !unset.is_empty() {
            script.push_str("unset -v");
            for k in &unset {
                script.push(' ');
                script.push_str(k);
            }
            script.push('\n');
        }
        script.push_str(&run.command);
        script.push('\n');

        let mut env = state.env.clone();
        env.extend(run.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let req = ExecRequest {
            command: script,
            env,
            timeout_secs: run.timeout_secs,
            cwd: None,
            max_output_bytes: run.max_output_bytes,
        };
        let (stdout, stderr, exit, idle_timed_out) = collect(sandbox, req, run.idle_secs).await?;
        let (stdout, block) = cut_block(&stdout, &token);
        if let Some(block) = block {
            if block.cwd.starts_with('/') {
                state.cwd = Some(block.cwd);
            }
            let mut next_env = BTreeMap::new();
            let mut next_unset = BTreeSet::new();
            for (k, v) in &block.env {
                if VOLATILE.contains(&k.as_str()) || run.env.contains_key(k) {
                    continue;
                }
                if paddock_core::sandbox::validate_env_key(k).is_err() {
                    continue;
                }
                if base.get(k) != Some(v) {
                    next_env.insert(k.clone(), v.clone());
                }
            }
            for k in base.keys() {
                if !VOLATILE.contains(&k.as_str())
                    && !block.env.contains_key(k)
                    && !run.unset.contains(k)
                {
                    next_unset.insert(k.clone());
                }
            }
            // A per-call variable keeps the session's own value, if it had one.
            for k in run.env.keys() {
                if let Some(v) = state.env.get(k) {
                    next_env.insert(k.clone(), v.clone());
                }
            }
            state.env = next_env;
            state.unset = next_unset;
        }
        let outcome = ExecOutcome::from_parts(&stdout, &stderr, exit);
        Ok(RunResult {
            outcome,
            idle_timed_out,
            cwd: state.cwd.clone(),
        })
    }
}

async fn collect(
    sandbox: &dyn Sandbox,
    req: ExecRequest,
    idle_secs: Option<f64>,
) -> Result<(Vec<u8>, Vec<u8>, ExecExit, bool), SandboxError> {
    let started = std::time::Instant::now();
    let mut stream = sandbox.exec_stream(req).await?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let idle = idle_secs
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64);
    loop {
        let next = match idle {
            Some(d) => match tokio::time::timeout(d, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    // Dropping the stream ends the command (the backend kills it).
                    drop(stream);
                    let exit = ExecExit {
                        duration_ms: u64::try_from(started.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                        ..ExecExit::default()
                    };
                    return Ok((out, err, exit, true));
                }
            },
            None => stream.next().await,
        };
        match next {
            Some(Ok(ExecEvent::Stdout { data })) => out.extend_from_slice(&data),
            Some(Ok(ExecEvent::Stderr { data })) => err.extend_from_slice(&data),
            Some(Ok(ExecEvent::Exit(exit))) => return Ok((out, err, exit, false)),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(SandboxError::Internal {
                    message: "command stream ended without an exit record".into(),
                });
            }
        }
    }
}

/// The state block a call printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Exit status the trap saw.
    pub status: i32,
    /// `pwd` afterwards.
    pub cwd: String,
    /// `env -0` afterwards.
    pub env: BTreeMap<String, String>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Removes the last well-formed state block for `token` from `out`.
pub fn cut_block(out: &[u8], token: &str) -> (Vec<u8>, Option<Block>) {
    let start_mark = format!("{token}S");
    let end_mark = format!("{token}E");
    let Some(s) = rfind(out, start_mark.as_bytes()) else {
        return (out.to_vec(), None);
    };
    let body_from = s + start_mark.len();
    let Some(e) = find(out, end_mark.as_bytes(), body_from) else {
        return (out.to_vec(), None);
    };
    let body = &out[body_from..e];
    let mut rest = Vec::with_capacity(out.len());
    rest.extend_from_slice(&out[..s]);
    rest.extend_from_slice(&out[e + end_mark.len()..]);
    let mut lines = body.splitn(3, |b| *b == b'\n');
    let status = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse().ok());
    let cwd = lines
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned());
    let env = lines.next().map(parse_env).unwrap_or_default();
    match (status, cwd) {
        (Some(status), Some(cwd)) => (rest, Some(Block { status, cwd, env })),
        _ => (rest, None),
    }
}

/// Parses `env -0` output.
pub fn parse_env(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_the_block() {
        let t = "abc123";
        let out = b"hello\nworldabc123S0\n/mnt/x\nA=1\0B=2\0abc123Etail".to_vec();
        let (rest, block) = cut_block(&out, t);
        assert_eq!(rest, b"hello\nworldtail");
        let b = block.unwrap();
        assert_eq!(b.status, 0);
        assert_eq!(b.cwd, "/mnt/x");
        assert_eq!(b.env.get("B").map(String::as_str), Some("2"));
        let (rest, block) = cut_block(b"no block", t);
        assert_eq!(rest, b"no block");
        assert!(block.is_none());
        // A start marker without an end (output cut by the cap) is left alone.
        let (rest, block) = cut_block(b"xabc123S0\n/", t);
        assert_eq!(rest, b"xabc123S0\n/");
        assert!(block.is_none());
    }

    #[test]
    fn ids_and_tokens() {
        assert!(validate_session_id("a-b_c.1").is_ok());
        assert!(validate_session_id("").is_err());
        assert!(validate_session_id("a/b").is_err());
        assert_ne!(random_token(), random_token());
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn lru_eviction_keeps_the_cap() {
        let s = Sessions::new(2);
        s.get_or_create("a", SessionState::default());
        s.get_or_create("b", SessionState::default());
        s.get_or_create("a", SessionState::default());
        s.get_or_create("c", SessionState::default());
        assert!(s.contains("a") && s.contains("c") && !s.contains("b"));
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
    }
}
