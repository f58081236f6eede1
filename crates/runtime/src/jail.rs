//! A sandbox's jail while it runs: built once (namespaces, root, cgroup), its init started
//! from `paddock_sys::sandbox_jail`, and every command of the sandbox a child of that init,
//! as a container's `exec` is. So `/tmp` and `/dev/shm` last as long as the sandbox, a
//! server one command starts in the background is there for the next, the limits hold for
//! the sandbox as a whole, and a command costs a message and a fork instead of a set of
//! namespaces.
//!
//! Each command runs in a slot of the sandbox's cgroup (`paddock_sys::cgroup::ExecSlot`),
//! which is what a timeout kills: every process the command started, those that called
//! `setsid` or double-forked included, and nothing of the other commands. Without a cgroup
//! (no controller available), a timeout ends the whole jail instead, the only way to be sure
//! nothing of the command is left.
//!
//! Invariants: a command's end is reported exactly once (the record from init, or
//! `Vanished` when the jail ended first); a slot is used by one command at a time and only
//! taken again once empty; dropping the last handle of a jail kills its init, and with it
//! the pid namespace.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_sys::PidFd;
use paddock_sys::cgroup::{ExecSlot, SandboxCgroup};
use paddock_sys::process::WaitStatus;
use paddock_sys::sandbox_jail::{InitRecord, RECORD_LEN, RunCommand, StartFailed};
use tokio::io::AsyncReadExt;

use crate::drive::ShellEnd;
use crate::error::JailError;
use crate::plan::JailPlan;

/// Most commands running at once in one sandbox (their shells; background processes of
/// ended commands do not count).
pub const MAX_RUNNING: usize = 256;
/// How long a jail's build may take before it is given up.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30);

type EndTx = tokio::sync::oneshot::Sender<ShellEnd>;

struct Slot {
    slot: ExecSlot,
    /// What the shell joins by (the v1 `tasks` file, or the v2 directory to clone into).
    join: Arc<OwnedFd>,
    clone_into: bool,
    busy: bool,
}

/// The shared part of a running jail (also held by its record reader).
struct Inner {
    init: Arc<PidFd>,
    control: tokio::net::UnixStream,
    /// One writer at a time on the control socket.
    writing: tokio::sync::Mutex<()>,
    waiting: Mutex<HashMap<u32, EndTx>>,
    alive: AtomicBool,
    cgroup: Option<SandboxCgroup>,
    slots: Mutex<Vec<Slot>>,
    next_id: AtomicU32,
    /// A shell started ahead of the next command (see [`WaitingShell`]).
    waiting_shell: Mutex<Option<WaitingShell>>,
}

/// A sandbox's running jail. Dropping the last handle kills its init.
pub(crate) struct RunningJail {
    inner: Arc<Inner>,
}

impl Drop for RunningJail {
    fn drop(&mut self) {
        let _ = self.inner.init.kill();
    }
}

/// A command taken by a jail: its id, its slot (returned when dropped), the stdio
/// descriptors it was given are already closed on Paddock's side.
pub(crate) struct Started {
    /// The command's id in the jail.
    pub id: u32,
    /// Resolves with the shell's end.
    pub end: tokio::sync::oneshot::Receiver<ShellEnd>,
    /// The command's slot (kill target), if the sandbox has a cgroup.
    pub slot: Option<SlotGuard>,
    /// OOM kills counted in the sandbox before the command.
    pub oom_before: u64,
}

/// A shell started ahead of its command, waiting in the shell preload
/// (`paddock_sys::jail::SHELL_PRELOAD`): its `execve` and dynamic loading are done, and the
/// command goes to it through `cmd`. Paddock keeps the read ends of its stdout and stderr and
/// of the status pipe the preload reports a failed step on.
pub(crate) struct WaitingShell {
    pub started: Started,
    pub cmd: OwnedFd,
    pub status: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A slot in use; given back (for reuse once empty) when dropped.
pub(crate) struct SlotGuard {
    inner: Arc<Inner>,
    index: usize,
    slot: ExecSlot,
    join: Arc<OwnedFd>,
    clone_into: bool,
}

impl SlotGuard {
    /// Kills every process of the command (see [`ExecSlot::kill`]).
    pub fn kill(&self) -> bool {
        self.slot.kill()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get_mut(self.index) {
            s.busy = false;
        }
    }
}

/// Process-wide `/dev/null`, a command's stdin.
fn dev_null() -> std::io::Result<&'static OwnedFd> {
    static NULL: std::sync::OnceLock<std::io::Result<OwnedFd>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").map(OwnedFd::from))
        .as_ref()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
}

impl RunningJail {
    /// Builds the sandbox's jail: its cgroup (limits for the whole sandbox), the jail on the
    /// spawner thread, then waits until its init runs.
    pub async fn build(plan: &JailPlan, name: &str) -> Result<Self, JailError> {
        let base = &plan.base;
        let cgroup = if base.cgroups.bases.is_empty() {
            None
        } else {
            let mut cg = base
                .cgroups
                .create_sandbox(name, &plan.limits())
                .map_err(|e| {
                    tracing::error!(error = %e, "could not create the sandbox's cgroup");
                    JailError::Cgroup {
                        what: "create the sandbox's cgroup",
                    }
                })?;
            if base.privileged {
                cg.delegate_to(plan.ids.0, plan.ids.1).map_err(|e| {
                    tracing::error!(error = %e, "could not delegate the sandbox's cgroup");
                    JailError::Cgroup {
                        what: "set up the sandbox's cgroup",
                    }
                })?;
            }
            Some(cg)
        };
        let mut spec = match &cgroup {
            Some(cg) => plan.spec(cg.join_plan(), |c| cg.has(c)),
            None => plan.spec(Default::default(), |_| false),
        };
        spec.seccomp = base.seccomp_init.clone();
        let built = crate::runtime::build_sandbox_jail(spec).await;
        let b = match built {
            Ok(b) => b,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                return Err(e);
            }
        };
        let init = Arc::new(b.init);
        // The status pipe ends when init runs; a record on it is the step that failed.
        let mut status = tokio::net::unix::pipe::Receiver::from_owned_fd(b.status)
            .map_err(JailError::io("status pipe"))?;
        let mut rec = Vec::new();
        let read = tokio::time::timeout(BUILD_TIMEOUT, status.read_to_end(&mut rec)).await;
        let failure = match read {
            Err(_) => Some(JailError::Timeout),
            Ok(Err(e)) => Some(JailError::io("status pipe")(e)),
            Ok(Ok(_)) if rec.len() >= paddock_sys::StatusRecord::LEN => {
                let mut r = [0u8; paddock_sys::StatusRecord::LEN];
                r.copy_from_slice(&rec[..paddock_sys::StatusRecord::LEN]);
                Some(
                    paddock_sys::StatusRecord::parse(&r)
                        .and_then(|r| r.failure())
                        .map_or(JailError::Unexpected, JailError::Step),
                )
            }
            Ok(Ok(_)) => None,
        };
        if let Some(error) = failure {
            let _ = init.kill();
            let reaped = init.clone();
            let _ = paddock_sys::process::wait_exit(reaped).await;
            if let Some(cg) = &cgroup {
                cg.remove();
            }
            return Err(error);
        }
        let control = std::os::unix::net::UnixStream::from(b.control);
        control
            .set_nonblocking(true)
            .map_err(JailError::io("control socket"))?;
        let control =
            tokio::net::UnixStream::from_std(control).map_err(JailError::io("control socket"))?;
        let inner = Arc::new(Inner {
            init,
            control,
            writing: tokio::sync::Mutex::new(()),
            waiting: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            cgroup,
            slots: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(1),
            waiting_shell: Mutex::new(None),
        });
        tokio::spawn(read_records(inner.clone()));
        Ok(Self { inner })
    }

    /// Whether init still runs.
    pub fn alive(&self) -> bool {
        self.inner.alive.load(Ordering::Acquire)
    }

    /// The host pid of the jail's init.
    pub fn init_pid(&self) -> i32 {
        self.inner.init.pid()
    }

    /// Kills the jail (init, and with it everything in its pid namespace).
    pub fn kill(&self) {
        let _ = self.inner.init.kill();
    }

    /// Host pids of the jail's processes (init first), when the sandbox has a cgroup;
    /// else only init.
    pub fn processes(&self) -> Vec<i32> {
        let init = self.inner.init.pid();
        let mut out = vec![init];
        if let Some(cg) = &self.inner.cgroup {
            out.extend(
                cg.procs()
                    .into_iter()
                    .filter_map(|p| i32::try_from(p).ok())
                    .filter(|p| *p != init),
            );
        }
        out
    }

    /// Whether anything but init (and a shell waiting for the next command) runs in the
    /// jail: a command, or what one left running.
    pub fn busy(&self) -> bool {
        if !self.alive() {
            return false;
        }
        let (waiting_id, waiting_slot) = self
            .inner
            .waiting_shell
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or((None, None), |w| {
                (Some(w.started.id), w.started.slot.as_ref().map(|g| g.index))
            });
        if self
            .inner
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .any(|id| Some(*id) != waiting_id)
        {
            return true;
        }
        let slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .enumerate()
            .any(|(i, s)| Some(i) != waiting_slot && !s.slot.is_empty())
    }

    /// Takes the shell waiting for the next command, if one is there and still waiting.
    pub fn take_waiting_shell(&self) -> Option<WaitingShell> {
        let mut w = self
            .inner
            .waiting_shell
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        // Its end already came (killed from outside, or its setup failed): not usable.
        match w.started.end.try_recv() {
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => Some(w),
            _ => None,
        }
    }

    /// Starts a shell that waits for the next command (see [`WaitingShell`]), unless one is
    /// there already.
    pub async fn prepare_waiting_shell(
        &self,
        program: &str,
        locale: Option<&str>,
    ) -> Result<(), JailError> {
        if self
            .inner
            .waiting_shell
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let (argv, env) = paddock_sys::jail::waiting_shell_command(program, locale);
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (e, String::new()),
            })
            .collect();
        let pipe = || std::io::pipe().map_err(JailError::io("pipe"));
        let (cmd_r, cmd_w) = pipe()?;
        let (st_r, st_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let started = self
            .start(
                program,
                &argv,
                &env,
                "/",
                vec![out_w.into(), err_w.into(), cmd_r.into(), st_w.into()],
            )
            .await?;
        let shell = WaitingShell {
            started,
            cmd: cmd_w.into(),
            status: st_r.into(),
            stdout: out_r.into(),
            stderr: err_r.into(),
        };
        let mut slot = self
            .inner
            .waiting_shell
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(shell);
        }
        Ok(())
    }

    /// OOM kills in the sandbox so far.
    pub fn oom_kills(&self) -> u64 {
        self.inner.cgroup.as_ref().map_or(0, |c| c.oom_kills())
    }

    fn take_slot(&self) -> Result<Option<SlotGuard>, JailError> {
        let Some(cg) = self.inner.cgroup.as_ref().filter(|c| c.has_slots()) else {
            return Ok(None);
        };
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        // An ended command's background processes keep its slot until they end.
        let free = slots.iter().position(|s| !s.busy && s.slot.is_empty());
        let index = match free {
            Some(i) => i,
            None if slots.len() < MAX_RUNNING => {
                let slot = cg.slot(slots.len()).map_err(|e| {
                    tracing::error!(error = %e, "could not make a command's cgroup");
                    JailError::Cgroup {
                        what: "make the command's cgroup",
                    }
                })?;
                let (join, clone_into) = slot.open_join().map_err(|e| {
                    tracing::error!(error = %e, "could not open a command's cgroup");
                    JailError::Cgroup {
                        what: "open the command's cgroup",
                    }
                })?;
                slots.push(Slot {
                    slot,
                    join: Arc::new(join),
                    clone_into,
                    busy: false,
                });
                slots.len() - 1
            }
            None => return Err(JailError::Busy),
        };
        slots[index].busy = true;
        Ok(Some(SlotGuard {
            inner: self.inner.clone(),
            index,
            slot: slots[index].slot.clone(),
            join: slots[index].join.clone(),
            clone_into: slots[index].clone_into,
        }))
    }

    /// Starts `argv` (with `env`, in `cwd`) as a child of init, with `/dev/null` as its
    /// stdin and `fds` as its descriptors 1, 2, … (stdout, stderr, and for a waiting shell
    /// its command and status pipes). Returns when init has the message; the command's end
    /// arrives on [`Started::end`].
    pub async fn start(
        &self,
        program: &str,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        fds: Vec<OwnedFd>,
    ) -> Result<Started, JailError> {
        if !self.alive() {
            return Err(JailError::Ended);
        }
        let slot = self.take_slot()?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let null = dev_null().map_err(JailError::io("/dev/null"))?;
        let given: Vec<std::os::fd::BorrowedFd<'_>> = std::iter::once(null.as_fd())
            .chain(fds.iter().map(|f| f.as_fd()))
            .collect();
        let join = slot.as_ref().map(|g| (g.join.as_fd(), g.clone_into));
        let v1: Vec<std::os::fd::BorrowedFd<'_>> =
            join.iter().filter(|(_, c)| !c).map(|(f, _)| *f).collect();
        let v2 = join.filter(|(_, c)| *c).map(|(f, _)| f);
        let msg = RunCommand {
            exec_id: id,
            program,
            cwd,
            argv,
            env,
            fds: &given,
            cgroups: &v1,
            clone_into: v2,
        }
        .encode()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let oom_before = self.oom_kills();
        let sent = {
            let _w = self.inner.writing.lock().await;
            paddock_sys::sandbox_jail::send(&self.inner.control, msg.bytes(), msg.fds()).await
        };
        drop(msg);
        drop(given);
        drop(fds);
        if let Err(e) = sent {
            self.inner
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(JailError::Handover(Arc::new(e)));
        }
        Ok(Started {
            id,
            end: rx,
            slot,
            oom_before,
        })
    }
}

/// Reads init's records until its socket ends; then every command still waiting ends as
/// `Vanished`, init is reaped and the sandbox's cgroup removed.
async fn read_records(inner: Arc<Inner>) {
    let mut buf = [0u8; RECORD_LEN];
    loop {
        let mut got = 0usize;
        let ok = loop {
            if inner.control.readable().await.is_err() {
                break false;
            }
            match inner.control.try_read(&mut buf[got..]) {
                Ok(0) => break false,
                Ok(n) => {
                    got += n;
                    if got == RECORD_LEN {
                        break true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break false,
            }
        };
        if !ok {
            break;
        }
        let Some(rec) = InitRecord::parse(&buf) else {
            tracing::error!("the sandbox's init sent a record Paddock does not know");
            let _ = inner.init.kill();
            break;
        };
        let end = match rec {
            InitRecord::Started { .. } => continue,
            InitRecord::Exited { status, .. } => match status {
                WaitStatus::Exited(c) => ShellEnd::Exited(c),
                WaitStatus::Signaled(s) => ShellEnd::Signaled(s),
            },
            InitRecord::Failed { step, errno, .. } => {
                ShellEnd::SpawnFailed(StartFailed { step, errno }.into())
            }
        };
        let tx = inner
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&rec.exec_id());
        if let Some(tx) = tx {
            let _ = tx.send(end);
        }
    }
    inner.alive.store(false, Ordering::Release);
    let left = std::mem::take(&mut *inner.waiting.lock().unwrap_or_else(|p| p.into_inner()));
    for (_, tx) in left {
        let _ = tx.send(ShellEnd::Vanished);
    }
    let _ = inner.init.kill();
    let _ = paddock_sys::process::wait_exit(inner.init.clone()).await;
    if let Some(cg) = &inner.cgroup {
        // Processes of a pid namespace whose init is gone are killed by the kernel, but
        // their exit takes a moment: the directories can only go once they are empty.
        for _ in 0..100 {
            if cg.procs().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cg.remove();
    }
}
