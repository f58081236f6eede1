//! A recording fake of [`Syscalls`] and the tests that run the jail's child over it: the
//! same code that runs between `clone` and `execve`, for a spec built here, with every call
//! recorded in order and nothing done. No privileges, no clone; the order a jail's safety
//! rests on (cgroup before anything is forked, ids after the mounts, seccomp last) is
//! checked on every machine, and a step that fails is checked to report its own [`Step`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use super::child::{Inherited, Stop, init};
use super::prepared::prepare;
use super::spec::{JailCommand, JailSpec, NetMode, Rlimit};
use super::wire::{StatusRecord, Step};
use crate::mountplan::{DataBind, HostFacts, MountInputs, SystemEntry, ms, plan_mounts};
use crate::process::WaitStatus;
use crate::seccomp::Insn;
use crate::syscalls::{Errno, Mapping, SysResult, Syscalls};

/// One recorded call: its name and what it was called with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    name: &'static str,
    arg: String,
}

/// The fake: records every call, answers with fresh descriptor numbers, serves `input` to
/// reads of the sync pipe, and fails the `nth` call named `name` with `errno` when told to.
struct Recorder {
    calls: RefCell<Vec<Call>>,
    next_fd: Cell<RawFd>,
    sync_r: RawFd,
    /// What reads of the sync pipe return, in order (end of file once empty).
    input: RefCell<VecDeque<u8>>,
    fail: Option<(&'static str, usize, i32)>,
    shell_pid: Cell<Option<i32>>,
}

/// The fake shell's pid.
const SHELL_PID: i32 = 2;

impl Recorder {
    fn new(sync_r: RawFd, input: &[u8]) -> Self {
        Self {
            calls: RefCell::new(Vec::new()),
            next_fd: Cell::new(100),
            sync_r,
            input: RefCell::new(input.iter().copied().collect()),
            fail: None,
            shell_pid: Cell::new(None),
        }
    }

    fn failing(mut self, name: &'static str, nth: usize, errno: i32) -> Self {
        self.fail = Some((name, nth, errno));
        self
    }

    /// Records a call; `Err` when it is the one to fail.
    fn record(&self, name: &'static str, arg: impl Into<String>) -> SysResult {
        let mut calls = self.calls.borrow_mut();
        let nth = calls.iter().filter(|c| c.name == name).count();
        calls.push(Call {
            name,
            arg: arg.into(),
        });
        match self.fail {
            Some((n, at, errno)) if n == name && at == nth => Err(Errno(errno)),
            _ => Ok(()),
        }
    }

    fn fd(&self) -> RawFd {
        let fd = self.next_fd.get();
        self.next_fd.set(fd + 1);
        fd
    }

    fn names(&self) -> Vec<&'static str> {
        self.calls.borrow().iter().map(|c| c.name).collect()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Index of the first call named `name` (and whose argument contains `arg`).
    fn first(&self, name: &str, arg: &str) -> usize {
        self.calls
            .borrow()
            .iter()
            .position(|c| c.name == name && c.arg.contains(arg))
            .unwrap_or_else(|| panic!("no call {name}({arg}) in {:#?}", self.calls.borrow()))
    }

    /// Index of the last call named `name`.
    fn last(&self, name: &str) -> usize {
        self.calls
            .borrow()
            .iter()
            .rposition(|c| c.name == name)
            .unwrap_or_else(|| panic!("no call {name} in {:#?}", self.calls.borrow()))
    }

    /// The status records written on `fd`.
    fn records(&self, fd: RawFd) -> Vec<StatusRecord> {
        let prefix = format!("{fd} ");
        self.calls
            .borrow()
            .iter()
            .filter(|c| c.name == "write" && c.arg.starts_with(&prefix))
            .filter_map(|c| {
                let bytes: Vec<u8> = c.arg[prefix.len()..]
                    .split(',')
                    .filter_map(|b| b.parse().ok())
                    .collect();
                let rec: [u8; StatusRecord::LEN] = bytes.try_into().ok()?;
                StatusRecord::parse(&rec)
            })
            .collect()
    }
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

/// The strings of a NULL-terminated array of C strings.
///
/// # Safety
/// As [`Syscalls::execve`]'s contract.
unsafe fn strings(mut a: *const *const libc::c_char) -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: the caller's contract: every entry up to the NULL is a live C string.
    unsafe {
        while !(*a).is_null() {
            out.push(s(CStr::from_ptr(*a)));
            a = a.add(1);
        }
    }
    out
}

impl Syscalls for Recorder {
    fn kill_with_parent(&self) -> SysResult {
        self.record("kill_with_parent", "")
    }
    fn parent_gone(&self, pidfd: RawFd) -> bool {
        let _ = self.record("parent_gone", pidfd.to_string());
        false
    }
    fn unshare(&self, flags: i32) -> SysResult {
        self.record("unshare", format!("{flags:#x}"))
    }
    fn clear_groups(&self) -> SysResult {
        self.record("clear_groups", "")
    }
    fn set_gid(&self, gid: u32) -> SysResult {
        self.record("set_gid", gid.to_string())
    }
    fn set_uid(&self, uid: u32) -> SysResult {
        self.record("set_uid", uid.to_string())
    }
    fn set_hostname(&self, name: &CStr) -> SysResult {
        self.record("set_hostname", s(name))
    }
    fn set_rlimit(&self, resource: i32, value: u64) -> SysResult {
        self.record("set_rlimit", format!("{resource}={value}"))
    }
    fn drop_bounding_cap(&self, cap: u32) -> SysResult {
        self.record("drop_bounding_cap", cap.to_string())
    }
    fn clear_ambient_caps(&self) -> SysResult {
        self.record("clear_ambient_caps", "")
    }
    fn drop_capabilities(&self) -> SysResult {
        self.record("drop_capabilities", "")
    }
    fn set_no_new_privs(&self) -> SysResult {
        self.record("set_no_new_privs", "")
    }
    fn set_not_dumpable(&self) -> SysResult {
        self.record("set_not_dumpable", "")
    }
    fn install_seccomp(&self, program: &[Insn]) -> SysResult {
        self.record("install_seccomp", format!("{} insns", program.len()))
    }
    fn setsid(&self) {
        let _ = self.record("setsid", "");
    }
    fn default_sigpipe(&self) {
        let _ = self.record("default_sigpipe", "");
    }
    fn wait_any(&self) -> SysResult<(i32, i32)> {
        self.record("wait_any", "")?;
        // The shell once (exit 3), then no child is left.
        match self.shell_pid.take() {
            Some(pid) => Ok((pid, 3 << 8)),
            None => Err(Errno(libc::ECHILD)),
        }
    }
    fn read(&self, fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
        self.record("read", format!("{fd} ({} bytes)", buf.len()))?;
        if fd != self.sync_r {
            return Ok(0);
        }
        let mut input = self.input.borrow_mut();
        let n = buf.len().min(input.len());
        for b in buf.iter_mut().take(n) {
            *b = input.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
    fn write(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize> {
        let bytes: Vec<String> = buf.iter().map(u8::to_string).collect();
        self.record("write", format!("{fd} {}", bytes.join(",")))?;
        Ok(buf.len())
    }
    fn close(&self, fd: RawFd) {
        let _ = self.record("close", fd.to_string());
    }
    fn close_range(&self, first: u32, last: u32) {
        let _ = self.record("close_range", format!("{first}..={last}"));
    }
    fn dup_above(&self, fd: RawFd, min: RawFd) -> SysResult<RawFd> {
        self.record("dup_above", format!("{fd} >= {min}"))?;
        Ok(self.fd().max(min))
    }
    fn dup_to(&self, from: RawFd, to: RawFd, cloexec: bool) -> SysResult {
        self.record("dup_to", format!("{from} -> {to} cloexec={cloexec}"))
    }
    fn open(&self, path: &CStr, flags: i32, mode: u32) -> SysResult<RawFd> {
        self.record("open", format!("{} {flags:#x} {mode:o}", s(path)))?;
        Ok(self.fd())
    }
    fn open_no_symlinks(&self, path: &CStr, parts: &[CString]) -> SysResult<RawFd> {
        self.record(
            "open_no_symlinks",
            format!("{} ({} parts)", s(path), parts.len()),
        )?;
        Ok(self.fd())
    }
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> SysResult {
        let o = |c: Option<&CStr>| c.map(s).unwrap_or_default();
        self.record(
            "mount",
            format!(
                "{} on {} type {} flags {flags:#x} {}",
                o(source),
                s(target),
                o(fstype),
                o(data)
            ),
        )
    }
    fn bind_fd(&self, source: RawFd, target: &CStr, recursive: bool) -> SysResult {
        self.record(
            "bind_fd",
            format!("{source} on {} rec={recursive}", s(target)),
        )
    }
    fn idmapped_bind(&self, source: RawFd, target: &CStr, userns: RawFd) -> SysResult {
        self.record(
            "idmapped_bind",
            format!("{source} on {} ns {userns}", s(target)),
        )
    }
    fn detach(&self, target: &CStr) -> SysResult {
        self.record("detach", s(target))
    }
    fn mkdir(&self, path: &CStr, mode: u32) -> SysResult {
        self.record("mkdir", format!("{} {mode:o}", s(path)))
    }
    fn symlink(&self, target: &CStr, path: &CStr) -> SysResult {
        self.record("symlink", format!("{} -> {}", s(path), s(target)))
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        self.record("chdir", s(path))
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        self.record("pivot_root", format!("{} {}", s(new_root), s(put_old)))
    }
    fn loopback_up(&self) -> SysResult {
        self.record("loopback_up", "")
    }
    fn landlock_create_ruleset(&self, abi: i32, handled_fs: u64, scoped: u64) -> SysResult<RawFd> {
        self.record(
            "landlock_create_ruleset",
            format!("abi {abi} fs {handled_fs:#x} scoped {scoped:#x}"),
        )?;
        Ok(self.fd())
    }
    fn landlock_add_path_rule(&self, ruleset: RawFd, parent: RawFd, access: u64) -> SysResult {
        self.record(
            "landlock_add_path_rule",
            format!("{ruleset}: {parent} {access:#x}"),
        )
    }
    fn landlock_restrict_self(&self, ruleset: RawFd) -> SysResult {
        self.record("landlock_restrict_self", ruleset.to_string())
    }
    fn spawn_vfork<F: FnOnce() -> i32>(&self, _stack: &Mapping, child: F) -> SysResult<i32> {
        self.record("spawn_vfork", "")?;
        // The parent sleeps until the child execs or exits: run it to its end right here.
        let code = child();
        self.record("child_exit", code.to_string())?;
        self.shell_pid.set(Some(SHELL_PID));
        Ok(SHELL_PID)
    }
    unsafe fn execve(
        &self,
        path: &CStr,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> Errno {
        // SAFETY: the caller's contract is `strings`'.
        let (argv, envp) = unsafe { (strings(argv), strings(envp)) };
        let arg = format!("{} {argv:?} {envp:?}", s(path));
        // The fake executes nothing: its execve "fails" with 0.
        self.record("execve", arg).err().unwrap_or(Errno(0))
    }
    unsafe fn execve_fd(
        &self,
        fd: RawFd,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> Errno {
        // SAFETY: as `execve`.
        let (argv, envp) = unsafe { (strings(argv), strings(envp)) };
        let arg = format!("{fd} {argv:?} {envp:?}");
        self.record("execve_fd", arg).err().unwrap_or(Errno(0))
    }
}

/// A jail spec over a made-up host (nothing of this machine is looked at).
fn spec(privileged: bool, waiting: bool) -> JailSpec {
    let dir = |name: &str| SystemEntry::Dir {
        name: name.into(),
        locked: ms::RELATIME,
        submounts: vec![],
    };
    let mounts = plan_mounts(&MountInputs {
        facts: HostFacts {
            system: vec![dir("usr"), dir("etc")],
            dev_locked: 0,
        },
        binds: vec![DataBind {
            host: "/srv/paddock/threads/t1/workspace".into(),
            jail: "/mnt/user-data/workspace".into(),
            read_only: false,
            locked: ms::RELATIME,
            idmap: None,
        }],
        tmp_size_bytes: 1 << 20,
        staging: "/tmp/paddock-root".into(),
        etc_files: vec![],
        links: vec![],
        files: vec![],
    })
    .expect("plan");
    JailSpec {
        landlock: crate::landlock::plan(3, &mounts.writable_dirs, &mounts.device_files),
        mounts,
        seccomp: std::sync::Arc::new(crate::seccomp::build_program().expect("seccomp")),
        uid: 951_000,
        gid: 951_001,
        privileged,
        net: NetMode::PerExec,
        hostname: "sandbox".into(),
        program: "/bin/bash".into(),
        rlimits: vec![Rlimit {
            resource: libc::RLIMIT_CORE as i32,
            value: 0,
        }],
        cgroup: Default::default(),
        cap_last_cap: 40,
        waiting_shell: waiting,
        shell_locale: None,
        idmap_userns: vec![],
    }
}

/// The release byte, then the command message.
fn input() -> Vec<u8> {
    let cmd = JailCommand {
        argv: vec!["bash".into(), "-c".into(), "echo hi".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/mnt/user-data/workspace".into(),
    }
    .encode()
    .expect("encode");
    let mut out = vec![1u8];
    out.extend_from_slice(cmd.as_bytes());
    out
}

const SYNC_R: RawFd = 3;
const STATUS_W: RawFd = 4;
const OUT_W: RawFd = 5;
const ERR_W: RawFd = 6;
const PARENT: RawFd = 7;
const CGROUP_TASKS: RawFd = 8;
const SHELL_TASKS: RawFd = 9;

/// Runs init over `rec` for `spec`; a sandbox's jail with `sandbox` (its control socket and
/// init program at 10 and 11).
fn run(spec: &JailSpec, rec: &Recorder, sandbox: bool) -> Stop {
    let mut p = prepare(spec).expect("prepare");
    let stack = Mapping::new(4096).expect("map");
    let keep = [3, 4, 5, 6, 7, 8, 9, 10, 11];
    let inherited = Inherited {
        sync_r: SYNC_R,
        status_w: STATUS_W,
        out_w: if sandbox { -1 } else { OUT_W },
        err_w: if sandbox { -1 } else { ERR_W },
        parent: PARENT,
        control: if sandbox { 10 } else { -1 },
        init_program: if sandbox { 11 } else { -1 },
        keep: &keep,
        cgroup_tasks: &[CGROUP_TASKS],
        shell_cgroup_tasks: if sandbox { &[] } else { &[SHELL_TASKS] },
        seccomp: &spec.seccomp,
        shell_stack: &stack,
    };
    init(rec, &mut p, &inherited)
}

#[test]
fn init_builds_the_jail_in_the_order_its_safety_rests_on() {
    let spec = spec(false, false);
    let rec = Recorder::new(SYNC_R, &input());
    assert_eq!(run(&spec, &rec, false), Stop::Idle);
    let names = rec.names();
    // The parent-death signal before anything else, then the cgroups, before a descriptor
    // is closed or the parent is waited for (everything forked later is born inside).
    assert_eq!(names[0], "kill_with_parent");
    let join = rec.first("write", &format!("{CGROUP_TASKS} 48"));
    assert!(join < rec.first("close_range", ""), "{names:?}");
    assert!(join < rec.first("read", &SYNC_R.to_string()), "{names:?}");
    assert!(
        names[..join]
            .iter()
            .all(|n| ["kill_with_parent", "parent_gone"].contains(n)),
        "{names:?}"
    );
    // The cgroup namespace is entered once the parent released us (after joining).
    let release = rec.first("read", &SYNC_R.to_string());
    assert!(release < rec.first("unshare", ""), "{names:?}");
    // Inside a user namespace of its own the child takes the sandbox's ids before the mounts
    // (keeping the namespace's capabilities), after opening the sources.
    let uid = rec.first("set_uid", "951000");
    assert!(rec.first("open_no_symlinks", "/srv/paddock/threads/t1/workspace") < uid);
    assert!(rec.first("set_gid", "951001") < uid);
    assert!(uid < rec.first("mount", ""), "{names:?}");
    // Every mount is on the staging root before the pivot; the old root is detached.
    let pivot = rec.first("pivot_root", "");
    assert!(rec.last("mount") < pivot && rec.last("bind_fd") < pivot);
    assert!(pivot < rec.first("detach", "."));
    assert!(rec.first("loopback_up", "") < pivot);
    // Then landlock, rlimits, every bounding capability, the parent-death signal again,
    // capabilities, no_new_privs, not dumpable, and the seccomp filter last.
    let order = [
        "landlock_create_ruleset",
        "set_rlimit",
        "drop_bounding_cap",
        "clear_ambient_caps",
        "drop_capabilities",
        "set_no_new_privs",
        "set_not_dumpable",
        "install_seccomp",
    ];
    let at: Vec<usize> = order.iter().map(|n| rec.first(n, "")).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{order:?} at {at:?}");
    assert!(rec.first("detach", ".") < at[0]);
    assert_eq!(
        names.iter().filter(|n| **n == "drop_bounding_cap").count(),
        41
    );
    let rearmed = rec.last("kill_with_parent");
    assert!(rec.last("drop_bounding_cap") < rearmed && rearmed < at[3]);
    // Seccomp is the last thing init does to itself: then it reads the command, starts the
    // shell, closes what the shell took, and reaps.
    let seccomp = at[7];
    let command = rec.last("read");
    assert!(seccomp < command && command < rec.first("spawn_vfork", ""));
    assert!(
        names[seccomp + 1..].iter().all(|n| ![
            "mount",
            "set_uid",
            "set_gid",
            "install_seccomp",
            "set_no_new_privs",
        ]
        .contains(n)),
        "{names:?}"
    );
}

#[test]
fn the_shell_joins_restricts_and_execs_the_command_it_was_sent() {
    let spec = spec(false, false);
    let rec = Recorder::new(SYNC_R, &input());
    assert_eq!(run(&spec, &rec, false), Stop::Idle);
    let calls = rec.calls();
    let fork = rec.first("spawn_vfork", "");
    let exec = rec.first("execve", "");
    // The shell's part, in order: its cgroup, landlock, stdio, session, cwd, execve.
    let shell: Vec<&str> = calls[fork + 1..exec].iter().map(|c| c.name).collect();
    assert_eq!(shell[0], "write", "{shell:?}");
    assert_eq!(calls[fork + 1].arg, format!("{SHELL_TASKS} 48"));
    assert_eq!(shell[1], "landlock_restrict_self", "{shell:?}");
    assert_eq!(
        calls[exec - 1],
        Call {
            name: "chdir",
            arg: "/mnt/user-data/workspace".into()
        }
    );
    assert!(
        calls[exec]
            .arg
            .starts_with(r#"/bin/bash ["bash", "-c", "echo hi"] ["PATH=/usr/bin:/bin"]"#)
    );
    assert!(rec.first("dup_to", &format!("{OUT_W} -> 1")) < exec);
    assert!(rec.first("dup_to", &format!("{ERR_W} -> 2")) < exec);
    // The fake's execve returns, so the shell's first record is that failure; init then
    // reports the shell's status and, once nothing is left, that it is idle.
    assert_eq!(
        rec.records(STATUS_W)[1..],
        [
            StatusRecord::ShellExited(WaitStatus::Exited(3)),
            StatusRecord::Idle
        ]
    );
}

#[test]
fn a_root_paddock_builds_the_root_as_host_root_and_takes_the_ids_after_the_mounts() {
    let spec = spec(true, false);
    let rec = Recorder::new(SYNC_R, &input());
    assert_eq!(run(&spec, &rec, false), Stop::Idle);
    let uid = rec.first("set_uid", "951000");
    assert!(rec.first("clear_groups", "") < rec.first("set_gid", "951001"));
    assert!(rec.first("set_gid", "951001") < uid);
    assert!(rec.last("mount") < uid && rec.last("bind_fd") < uid);
    assert!(rec.last("drop_bounding_cap") < uid);
    // Leaving uid 0 clears the parent-death signal: it is armed again right after.
    let rearmed = rec.last("kill_with_parent");
    assert!(uid < rearmed);
    assert!(rearmed < rec.first("install_seccomp", ""));
    assert_eq!(rec.names().iter().filter(|n| **n == "set_uid").count(), 1);
}

#[test]
fn a_sandbox_jail_execs_its_init_right_after_the_filter() {
    let spec = spec(true, false);
    let rec = Recorder::new(SYNC_R, &[1]);
    let stop = run(&spec, &rec, true);
    let names = rec.names();
    let seccomp = rec.first("install_seccomp", "");
    let exec = rec.first("execve_fd", "5");
    assert!(seccomp < exec, "{names:?}");
    // Between the two only descriptors move into place: no command is read, no shell.
    assert!(
        names[seccomp + 1..exec]
            .iter()
            .all(|n| ["dup_above", "dup_to", "close", "close_range"].contains(n)),
        "{names:?}"
    );
    assert!(
        rec.calls()[exec]
            .arg
            .contains(r#"["paddock-init", "landlock"]"#)
    );
    // The fake's execve returns, which the child reports as a failure to run init.
    assert_eq!(
        stop,
        Stop::Failed {
            status: 6,
            step: Step::ExecInit,
            errno: Errno(0)
        }
    );
}

#[test]
fn a_waiting_shell_starts_at_once_with_the_preload_descriptors() {
    let spec = spec(false, true);
    let rec = Recorder::new(SYNC_R, &[1]);
    assert_eq!(run(&spec, &rec, false), Stop::Idle);
    let calls = rec.calls();
    // Init reads nothing but the release byte: the shell reads its command itself.
    assert_eq!(
        calls.iter().filter(|c| c.name == "read").count(),
        1,
        "{calls:#?}"
    );
    let exec = rec.first("execve", "");
    let cwd = rec.last("chdir");
    assert_eq!(calls[cwd].arg, "/");
    // After the cwd, the preload's status and command descriptors (4 and 3), then execve.
    let status = rec.first("dup_to", "-> 4 ");
    let command = rec.first("dup_to", "-> 3 ");
    assert!(
        cwd < status && status < command && command < exec,
        "{calls:#?}"
    );
    assert!(
        calls[exec]
            .arg
            .contains("LD_PRELOAD=/.paddock/shell-preload.so")
    );
}

#[test]
fn an_abandoned_jail_exits_quietly_before_starting_a_shell() {
    let spec = spec(false, false);
    let rec = Recorder::new(SYNC_R, &[1]);
    assert_eq!(run(&spec, &rec, false), Stop::Exit(0));
    assert!(!rec.names().contains(&"spawn_vfork"));
    // A parent that gave up before releasing the child: exit 125, nothing built.
    let rec = Recorder::new(SYNC_R, &[]);
    assert_eq!(run(&spec, &rec, false), Stop::Exit(125));
    assert!(!rec.names().contains(&"mount"));
}

#[test]
fn a_failed_step_is_reported_as_itself() {
    let spec = spec(false, false);
    for (name, nth, step) in [
        ("kill_with_parent", 0, Step::ParentDeathSignal),
        ("write", 0, Step::JoinCgroup),
        ("unshare", 0, Step::CgroupNamespace),
        ("open", 0, Step::OpenSource),
        ("open_no_symlinks", 0, Step::OpenSource),
        ("set_uid", 0, Step::SetUid),
        ("mount", 0, Step::MakePrivate),
        ("mount", 1, Step::MountTmpfs),
        ("bind_fd", 0, Step::Bind),
        ("set_hostname", 0, Step::Hostname),
        ("loopback_up", 0, Step::Loopback),
        ("pivot_root", 0, Step::PivotRoot),
        ("detach", 0, Step::DetachOldRoot),
        ("landlock_create_ruleset", 0, Step::LandlockCreate),
        ("set_rlimit", 0, Step::Rlimit),
        ("drop_capabilities", 0, Step::DropCapabilities),
        ("install_seccomp", 0, Step::Seccomp),
        ("spawn_vfork", 0, Step::ForkShell),
    ] {
        let rec = Recorder::new(SYNC_R, &input()).failing(name, nth, libc::EPERM);
        assert_eq!(
            run(&spec, &rec, false),
            Stop::Failed {
                status: STATUS_W,
                step,
                errno: Errno(libc::EPERM)
            },
            "{name} #{nth}"
        );
        assert!(!rec.names().contains(&"execve"), "{name} #{nth}");
    }
    // In the shell, the failure is written by the shell, which exits 126; init goes on and
    // reports the shell's end.
    let rec = Recorder::new(SYNC_R, &input()).failing("chdir", 2, libc::ENOENT);
    assert_eq!(run(&spec, &rec, false), Stop::Idle);
    assert_eq!(
        rec.records(STATUS_W)[0],
        StatusRecord::SetupFailed {
            step: Step::Cwd,
            errno: libc::ENOENT
        }
    );
    assert_eq!(rec.calls()[rec.first("child_exit", "")].arg, "126");
}
