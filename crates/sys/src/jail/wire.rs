//! The bytes that cross the clone: the command message Paddock sends a built jail's init
//! (and a waiting shell's preload), the status records init and the preload send back, and
//! the [`Step`] numbers those records name. The preload (`zygote/proto.rs`) shares the
//! constants it needs by `include!`, so the two sides cannot disagree.

use super::SpawnError;
use super::spec::{COMMAND_MAX_ARGS, COMMAND_MAX_BYTES, COMMAND_MAX_ENV, JailCommand};
use crate::process::WaitStatus;

/// Bytes of the command message's header (`[body length, argc, envc]`).
pub(super) const COMMAND_HEADER: usize = 12;

/// A [`JailCommand`] encoded for init: `[body length, argc, envc]` (u32, native order), then
/// `cwd\0 argv…\0 KEY=VALUE…\0`. Encoding checks every limit, so a message that
/// encodes is one init accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCommand(Vec<u8>);

impl JailCommand {
    /// Encodes the command, refusing NUL bytes and anything over the limits.
    pub fn encode(&self) -> Result<EncodedCommand, SpawnError> {
        if self.argv.is_empty() || self.argv.len() > COMMAND_MAX_ARGS {
            return Err(SpawnError::TooLarge {
                what: "argv (1 to 1024 entries)",
            });
        }
        if self.env.len() > COMMAND_MAX_ENV {
            return Err(SpawnError::TooLarge {
                what: "environment (at most 4096 entries)",
            });
        }
        let mut out = vec![0u8; COMMAND_HEADER];
        let mut put = |bytes: &[&[u8]], what: &'static str| -> Result<(), SpawnError> {
            for b in bytes {
                if b.contains(&0) {
                    return Err(SpawnError::Nul { what });
                }
                out.extend_from_slice(b);
            }
            out.push(0);
            Ok(())
        };
        put(&[self.cwd.as_bytes()], "cwd")?;
        for a in &self.argv {
            put(&[a.as_bytes()], "command")?;
        }
        for (k, v) in &self.env {
            put(&[k.as_bytes(), b"=", v.as_bytes()], "environment")?;
        }
        let body = out.len() - COMMAND_HEADER;
        if body > COMMAND_MAX_BYTES {
            return Err(SpawnError::TooLarge {
                what: "command and environment (at most 4 MiB)",
            });
        }
        // The limits above keep all three far below u32::MAX.
        out[0..4].copy_from_slice(&(body as u32).to_ne_bytes());
        out[4..8].copy_from_slice(&(self.argv.len() as u32).to_ne_bytes());
        out[8..12].copy_from_slice(&(self.env.len() as u32).to_ne_bytes());
        Ok(EncodedCommand(out))
    }
}

impl EncodedCommand {
    /// The bytes sent to init.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Which string of a command message's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The working directory (always first).
    Cwd,
    /// argv\[i\].
    Arg(usize),
    /// The i-th `KEY=VALUE`.
    Env(usize),
}

/// The header of a command message, checked against init's limits: how long its body is
/// and how many strings of each kind the body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CommandLayout {
    /// Body bytes (1 to the buffer's size).
    pub(super) body: usize,
    /// argv entries (1 to [`COMMAND_MAX_ARGS`]).
    pub(super) argc: usize,
    /// Environment entries (at most [`COMMAND_MAX_ENV`]).
    pub(super) envc: usize,
}

impl CommandLayout {
    /// Reads a header; `None` when it is out of the limits or the body would not fit
    /// `capacity` bytes.
    pub(super) fn parse(h: &[u8; COMMAND_HEADER], capacity: usize) -> Option<Self> {
        let word = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
        let (body, argc, envc) = (word(0), word(4), word(8));
        if body == 0 || body > capacity || argc == 0 || argc > COMMAND_MAX_ARGS {
            return None;
        }
        if envc > COMMAND_MAX_ENV {
            return None;
        }
        Some(Self { body, argc, envc })
    }

    /// Walks `body`'s NUL-terminated strings, calling `each` with each one's part and
    /// offset; false (after calling `each` for at most the expected strings) when the body
    /// does not hold exactly `1 + argc + envc` of them, the last ending the body. Allocates
    /// nothing: init runs it between clone and execve.
    pub(super) fn split(&self, body: &[u8], mut each: impl FnMut(Part, usize)) -> bool {
        let want = 1 + self.argc + self.envc;
        let mut seen = 0usize;
        let mut start = 0usize;
        for (i, &b) in body.iter().enumerate() {
            if b != 0 {
                continue;
            }
            if seen >= want {
                return false;
            }
            let part = if seen == 0 {
                Part::Cwd
            } else if seen <= self.argc {
                Part::Arg(seen - 1)
            } else {
                Part::Env(seen - 1 - self.argc)
            };
            each(part, start);
            seen += 1;
            start = i + 1;
        }
        seen == want && start == body.len()
    }
}

/// The steps of a jail's child, reported by number on the status pipe when one fails.
/// The numbers are a wire format shared with the shell preload (`zygote/proto.rs`): append,
/// never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Step {
    /// wait for the parent.
    WaitForParent = 0,
    /// open a mount source.
    OpenSource = 1,
    /// drop supplementary groups.
    SetGroups = 2,
    /// switch to the sandbox gid.
    SetGid = 3,
    /// switch to the sandbox uid.
    SetUid = 4,
    /// make mounts private.
    MakePrivate = 5,
    /// mount the root tmpfs.
    MountTmpfs = 6,
    /// create a directory in the jail.
    Mkdir = 7,
    /// create a symlink in the jail.
    Symlink = 8,
    /// create a device mount point.
    DeviceMountPoint = 9,
    /// bind mount.
    Bind = 10,
    /// remount read-only.
    Remount = 11,
    /// mount proc.
    MountProc = 12,
    /// set the hostname.
    Hostname = 13,
    /// bring up loopback.
    Loopback = 14,
    /// pivot_root.
    PivotRoot = 15,
    /// detach the old root.
    DetachOldRoot = 16,
    /// create the landlock ruleset.
    LandlockCreate = 17,
    /// add a landlock rule.
    LandlockRule = 18,
    /// set a resource limit.
    Rlimit = 19,
    /// drop the capability bounding set.
    DropBoundingSet = 20,
    /// clear ambient capabilities.
    ClearAmbient = 21,
    /// drop capabilities.
    DropCapabilities = 22,
    /// set no_new_privs.
    NoNewPrivs = 23,
    /// fork the shell.
    ForkShell = 24,
    /// set up stdio.
    Stdio = 25,
    /// change to the working directory.
    Cwd = 26,
    /// restrict with landlock.
    LandlockRestrict = 27,
    /// install the seccomp filter.
    Seccomp = 28,
    /// execute the shell.
    ExecShell = 29,
    /// set the parent-death signal.
    ParentDeathSignal = 30,
    /// make init non-dumpable.
    NotDumpable = 31,
    /// join the exec cgroup.
    JoinCgroup = 32,
    /// read the command.
    ReadCommand = 33,
    /// write a file into the jail root.
    WriteFile = 34,
    /// enter a cgroup namespace rooted at the jail's cgroup.
    CgroupNamespace = 35,
    /// execute the sandbox's init.
    ExecInit = 36,
    /// make an idmapped bind mount.
    IdmappedBind = 37,
}

impl Step {
    /// Every step, in wire order.
    pub const ALL: [Step; 38] = {
        let mut all = [Step::WaitForParent; 38];
        let mut i = 0;
        while i < 38 {
            all[i] = match Step::from_wire(i as u32) {
                Some(s) => s,
                None => Step::WaitForParent,
            };
            i += 1;
        }
        all
    };

    /// What the step does, for messages (`"bind mount failed: …"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::WaitForParent => "wait for the parent",
            Self::OpenSource => "open a mount source",
            Self::SetGroups => "drop supplementary groups",
            Self::SetGid => "switch to the sandbox gid",
            Self::SetUid => "switch to the sandbox uid",
            Self::MakePrivate => "make mounts private",
            Self::MountTmpfs => "mount the root tmpfs",
            Self::Mkdir => "create a directory in the jail",
            Self::Symlink => "create a symlink in the jail",
            Self::DeviceMountPoint => "create a device mount point",
            Self::Bind => "bind mount",
            Self::Remount => "remount read-only",
            Self::MountProc => "mount proc",
            Self::Hostname => "set the hostname",
            Self::Loopback => "bring up loopback",
            Self::PivotRoot => "pivot_root",
            Self::DetachOldRoot => "detach the old root",
            Self::LandlockCreate => "create the landlock ruleset",
            Self::LandlockRule => "add a landlock rule",
            Self::Rlimit => "set a resource limit",
            Self::DropBoundingSet => "drop the capability bounding set",
            Self::ClearAmbient => "clear ambient capabilities",
            Self::DropCapabilities => "drop capabilities",
            Self::NoNewPrivs => "set no_new_privs",
            Self::ForkShell => "fork the shell",
            Self::Stdio => "set up stdio",
            Self::Cwd => "change to the working directory",
            Self::LandlockRestrict => "restrict with landlock",
            Self::Seccomp => "install the seccomp filter",
            Self::ExecShell => "execute the shell",
            Self::ParentDeathSignal => "set the parent-death signal",
            Self::NotDumpable => "make init non-dumpable",
            Self::JoinCgroup => "join the exec cgroup",
            Self::ReadCommand => "read the command",
            Self::WriteFile => "write a file into the jail root",
            Self::CgroupNamespace => "enter the cgroup namespace",
            Self::ExecInit => "execute the sandbox's init",
            Self::IdmappedBind => "make an idmapped bind mount",
        }
    }

    /// A stable snake_case name of the step, for APIs and logs (`"bind_mount"`); a step
    /// init's child shares with the jail's has the same code
    /// ([`crate::sandbox_jail::StartStep::code`]).
    pub const fn code(self) -> &'static str {
        match self {
            Self::WaitForParent => "wait_for_parent",
            Self::OpenSource => "open_mount_source",
            Self::SetGroups => "set_groups",
            Self::SetGid => "set_gid",
            Self::SetUid => "set_uid",
            Self::MakePrivate => "make_mounts_private",
            Self::MountTmpfs => "mount_tmpfs",
            Self::Mkdir => "make_directory",
            Self::Symlink => "make_symlink",
            Self::DeviceMountPoint => "make_device_mount_point",
            Self::Bind => "bind_mount",
            Self::Remount => "remount_read_only",
            Self::MountProc => "mount_proc",
            Self::Hostname => "set_hostname",
            Self::Loopback => "loopback_up",
            Self::PivotRoot => "pivot_root",
            Self::DetachOldRoot => "detach_old_root",
            Self::LandlockCreate => "landlock_create_ruleset",
            Self::LandlockRule => "landlock_add_rule",
            Self::Rlimit => "set_rlimit",
            Self::DropBoundingSet => "drop_bounding_set",
            Self::ClearAmbient => "clear_ambient_capabilities",
            Self::DropCapabilities => "drop_capabilities",
            Self::NoNewPrivs => "set_no_new_privs",
            Self::ForkShell => "fork_shell",
            Self::Stdio => "set_up_stdio",
            Self::Cwd => "change_directory",
            Self::LandlockRestrict => "landlock_restrict",
            Self::Seccomp => "install_seccomp",
            Self::ExecShell => "exec_shell",
            Self::ParentDeathSignal => "set_parent_death_signal",
            Self::NotDumpable => "set_not_dumpable",
            Self::JoinCgroup => "join_cgroup",
            Self::ReadCommand => "read_command",
            Self::WriteFile => "write_file",
            Self::CgroupNamespace => "enter_cgroup_namespace",
            Self::ExecInit => "exec_init",
            Self::IdmappedBind => "idmapped_bind_mount",
        }
    }

    /// The step with wire number `n`.
    pub const fn from_wire(n: u32) -> Option<Self> {
        Some(match n {
            0 => Self::WaitForParent,
            1 => Self::OpenSource,
            2 => Self::SetGroups,
            3 => Self::SetGid,
            4 => Self::SetUid,
            5 => Self::MakePrivate,
            6 => Self::MountTmpfs,
            7 => Self::Mkdir,
            8 => Self::Symlink,
            9 => Self::DeviceMountPoint,
            10 => Self::Bind,
            11 => Self::Remount,
            12 => Self::MountProc,
            13 => Self::Hostname,
            14 => Self::Loopback,
            15 => Self::PivotRoot,
            16 => Self::DetachOldRoot,
            17 => Self::LandlockCreate,
            18 => Self::LandlockRule,
            19 => Self::Rlimit,
            20 => Self::DropBoundingSet,
            21 => Self::ClearAmbient,
            22 => Self::DropCapabilities,
            23 => Self::NoNewPrivs,
            24 => Self::ForkShell,
            25 => Self::Stdio,
            26 => Self::Cwd,
            27 => Self::LandlockRestrict,
            28 => Self::Seccomp,
            29 => Self::ExecShell,
            30 => Self::ParentDeathSignal,
            31 => Self::NotDumpable,
            32 => Self::JoinCgroup,
            33 => Self::ReadCommand,
            34 => Self::WriteFile,
            35 => Self::CgroupNamespace,
            36 => Self::ExecInit,
            37 => Self::IdmappedBind,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A step of a jail's child that failed, with its OS error: what a
/// [`StatusRecord::SetupFailed`] says, as an error (`"bind mount failed: Permission denied
/// (os error 13)"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{step} failed: {}", std::io::Error::from_raw_os_error(*errno))]
pub struct StepFailed {
    /// The step.
    pub step: Step,
    /// Its OS error number.
    pub errno: i32,
}

pub(super) mod preload {
    // The constants shared with the shell preload (`zygote/zygote.rs`).
    #![allow(dead_code)]
    include!("../../zygote/proto.rs");
}
use preload::{
    ZYGOTE_ARG_BYTES, ZYGOTE_CMD_FD, ZYGOTE_ENV_BYTES, ZYGOTE_ENV_KEY, ZYGOTE_ENV_SLOTS,
    ZYGOTE_LOCALE_KEY, ZYGOTE_PLACEHOLDER, ZYGOTE_STATUS_FD,
};
const _: () = {
    // The preload reports these steps by number, and records as init writes them.
    assert!(preload::ZYGOTE_S_CWD == Step::Cwd as u32);
    assert!(preload::ZYGOTE_S_EXEC == Step::ExecShell as u32);
    assert!(preload::ZYGOTE_S_COMMAND == Step::ReadCommand as u32);
    assert!(preload::ZYGOTE_TAG_SETUP == TAG_SETUP);
    assert!(ZYGOTE_PLACEHOLDER.len() < ZYGOTE_ARG_BYTES);
};

/// The shell preload (built from `zygote/zygote.rs` by `build.rs`): with it at
/// [`SHELL_PRELOAD_PATH`] in the root, a jail can start its shell before the command is
/// known ([`super::JailSpec::waiting_shell`]).
pub const SHELL_PRELOAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/zygote.so"));
/// Where the runtime puts [`SHELL_PRELOAD`] in the jail.
pub const SHELL_PRELOAD_PATH: &str = "/.paddock/shell-preload.so";
/// The descriptor a waiting shell reads its command from, and the one it reports a failed
/// step on (a [`StatusRecord`]).
pub const WAITING_SHELL_FDS: (i32, i32) = (ZYGOTE_CMD_FD, ZYGOTE_STATUS_FD);

pub(super) const TAG_EXIT: u32 = 1;
pub(super) const TAG_SETUP: u32 = 2;
pub(super) const TAG_IDLE: u32 = 3;

/// A record read from the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRecord {
    /// The shell ended.
    ShellExited(WaitStatus),
    /// Setting up the jail failed at a step with an errno.
    SetupFailed {
        /// The step.
        step: Step,
        /// OS error number.
        errno: i32,
    },
    /// Every process of the jail has ended; init waits to be killed (see `child::reap`).
    Idle,
}

impl StatusRecord {
    /// Size of one record on the wire.
    pub const LEN: usize = 12;

    /// The failure a [`Self::SetupFailed`] record reports.
    pub fn failure(&self) -> Option<StepFailed> {
        match *self {
            Self::SetupFailed { step, errno } => Some(StepFailed { step, errno }),
            _ => None,
        }
    }

    /// Decodes one record.
    pub fn parse(b: &[u8; Self::LEN]) -> Option<Self> {
        let tag = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let a = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        let c = i32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        match tag {
            TAG_EXIT => Some(Self::ShellExited(WaitStatus::from_raw(a))),
            TAG_IDLE => Some(Self::Idle),
            TAG_SETUP => {
                let step = u32::try_from(a).ok().and_then(Step::from_wire)?;
                Some(Self::SetupFailed { step, errno: c })
            }
            _ => None,
        }
    }

    pub(super) fn encode(tag: u32, a: i32, c: i32) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&tag.to_ne_bytes());
        out[4..8].copy_from_slice(&a.to_ne_bytes());
        out[8..12].copy_from_slice(&c.to_ne_bytes());
        out
    }
}

/// A waiting shell's argv and environment as strings: `[name, "-c", placeholder]`, and
/// `LD_PRELOAD`, the program for commands that do not fit, the locale to load, and padding.
/// The preload writes the command and its environment over these, so their sizes are the
/// room it has (see `zygote/zygote.rs`).
pub fn waiting_shell_command(program: &str, locale: Option<&str>) -> (Vec<String>, Vec<String>) {
    let name = program.rsplit('/').next().unwrap_or(program);
    let mut placeholder = String::from_utf8_lossy(ZYGOTE_PLACEHOLDER).into_owned();
    while placeholder.len() < ZYGOTE_ARG_BYTES - 1 {
        placeholder.push(' ');
    }
    let key = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let mut env: Vec<String> = vec![
        format!("LD_PRELOAD={SHELL_PRELOAD_PATH}"),
        format!("{}{program}", key(ZYGOTE_ENV_KEY)),
        format!("{}{}", key(ZYGOTE_LOCALE_KEY), locale.unwrap_or_default()),
    ];
    while env.len() < ZYGOTE_ENV_SLOTS - 1 {
        env.push("_=".into());
    }
    let used: usize = env.iter().map(|e| e.len() + 1).sum();
    let pad = ZYGOTE_ENV_BYTES.saturating_sub(used + 1).max("_PAD=".len());
    let mut last = String::from("_PAD=");
    while last.len() < pad {
        last.push('.');
    }
    env.push(last);
    (vec![name.into(), "-c".into(), placeholder], env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = StatusRecord::encode(TAG_EXIT, 3 << 8, 0);
        assert_eq!(
            StatusRecord::parse(&r),
            Some(StatusRecord::ShellExited(WaitStatus::Exited(3)))
        );
        let r = StatusRecord::encode(TAG_SETUP, Step::Bind as i32, libc::EPERM);
        assert_eq!(
            StatusRecord::parse(&r),
            Some(StatusRecord::SetupFailed {
                step: Step::Bind,
                errno: libc::EPERM
            })
        );
        assert_eq!(Step::Bind.name(), "bind mount");
        assert_eq!(
            StatusRecord::parse(&r).and_then(|r| r.failure()),
            Some(StepFailed {
                step: Step::Bind,
                errno: libc::EPERM
            })
        );
        assert_eq!(
            StepFailed {
                step: Step::Cwd,
                errno: libc::ENOENT
            }
            .to_string(),
            format!(
                "change to the working directory failed: {}",
                std::io::Error::from_raw_os_error(libc::ENOENT)
            )
        );
        let r = StatusRecord::encode(TAG_IDLE, 0, 0);
        assert_eq!(StatusRecord::parse(&r), Some(StatusRecord::Idle));
        let r = StatusRecord::encode(9, 0, 0);
        assert_eq!(StatusRecord::parse(&r), None);
        let mut codes = std::collections::BTreeSet::new();
        for (i, step) in Step::ALL.iter().enumerate() {
            assert_eq!(*step as u32, i as u32, "{step}");
            assert_eq!(Step::from_wire(i as u32), Some(*step));
            let code = step.code();
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(codes.insert(code), "two steps are {code}");
        }
        assert_eq!(Step::from_wire(Step::ALL.len() as u32), None);
    }

    #[test]
    fn command_messages_round_trip_through_the_layout() {
        let cmd = JailCommand {
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![("A".into(), "b".into())],
            cwd: "/w".into(),
        };
        let enc = cmd.encode().unwrap();
        let b = enc.as_bytes();
        let mut h = [0u8; COMMAND_HEADER];
        h.copy_from_slice(&b[..COMMAND_HEADER]);
        let layout = CommandLayout::parse(&h, 1 << 20).unwrap();
        assert_eq!(
            (layout.body, layout.argc, layout.envc),
            (b.len() - 12, 3, 1)
        );
        let body = &b[COMMAND_HEADER..];
        let mut parts = Vec::new();
        assert!(layout.split(body, |part, at| {
            let s = std::ffi::CStr::from_bytes_until_nul(&body[at..]).unwrap();
            parts.push((part, s.to_str().unwrap().to_owned()));
        }));
        assert_eq!(
            parts,
            vec![
                (Part::Cwd, "/w".into()),
                (Part::Arg(0), "sh".into()),
                (Part::Arg(1), "-c".into()),
                (Part::Arg(2), "true".into()),
                (Part::Env(0), "A=b".into()),
            ]
        );
        // One string too many, one too few, a body that does not end in NUL.
        assert!(!layout.split(b"/w\0sh\0-c\0true\0A=b\0B=c\0", |_, _| {}));
        assert!(!layout.split(b"/w\0sh\0-c\0true\0", |_, _| {}));
        assert!(!layout.split(b"/w\0sh\0-c\0true\0A=b", |_, _| {}));
        // Headers out of the limits or larger than the buffer.
        let header = |body: u32, argc: u32, envc: u32| {
            let mut h = [0u8; COMMAND_HEADER];
            h[0..4].copy_from_slice(&body.to_ne_bytes());
            h[4..8].copy_from_slice(&argc.to_ne_bytes());
            h[8..12].copy_from_slice(&envc.to_ne_bytes());
            h
        };
        assert!(CommandLayout::parse(&header(10, 1, 0), 10).is_some());
        assert!(CommandLayout::parse(&header(11, 1, 0), 10).is_none());
        assert!(CommandLayout::parse(&header(0, 1, 0), 10).is_none());
        assert!(CommandLayout::parse(&header(10, 0, 0), 10).is_none());
        assert!(CommandLayout::parse(&header(10, 1025, 0), 10).is_none());
        assert!(CommandLayout::parse(&header(10, 1, 4097), 10).is_none());
    }
}
