//! The memory a jail's child reads, built from a [`JailSpec`] before the clone: C strings,
//! the mount operations, the landlock rules, the command buffer and the waiting shell's
//! argv. The child gets a private copy (fork semantics) and only reads it, except for the
//! command message it reads into the buffer and the descriptors of the mount sources.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::spec::{
    COMMAND_MAX_ARGS, COMMAND_MAX_BYTES, COMMAND_MAX_ENV, JailSpec, NetMode, Rlimit,
};
use super::wire::waiting_shell_command;
use super::{SpawnError, os};
use crate::mountplan::MountOp;
use crate::syscalls::Mapping;

/// The shell child's stack before `execve`: it runs a dozen raw syscalls and no formatting.
pub(super) const SHELL_STACK_BYTES: usize = 256 * 1024;

pub(super) enum COp {
    Tmpfs {
        dst: CString,
        flags: u64,
        data: CString,
    },
    Mkdir {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Touch {
        path: CString,
    },
    Bind {
        source: usize,
        dst: CString,
        recursive: bool,
    },
    IdmappedBind {
        source: usize,
        dst: CString,
        userns: RawFd,
    },
    Remount {
        dst: CString,
        flags: u64,
    },
    Proc {
        dst: CString,
    },
    Devpts {
        dst: CString,
    },
    File {
        path: CString,
        data: &'static [u8],
        mode: u32,
    },
}

fn cstr(s: &str, what: &'static str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Nul { what })
}

fn cpath(p: &Path, what: &'static str) -> Result<CString, SpawnError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SpawnError::Nul { what })
}

/// The memory the child reads. Built before the clone; the child gets a private copy.
pub(super) struct Prepared {
    pub(super) sources: Vec<CString>,
    /// Per source: `None` to open as is, or its components to walk without following a
    /// symlink (see `MountSource::no_symlinks`).
    pub(super) source_parts: Vec<Option<Vec<CString>>>,
    pub(super) source_fds: Vec<RawFd>,
    pub(super) ops: Vec<COp>,
    pub(super) staging: CString,
    pub(super) hostname: CString,
    pub(super) program: CString,
    /// The command message lands here (pages are touched only by the read).
    pub(super) cmd_buf: Mapping,
    /// Pointers into `cmd_buf`, NULL-terminated, filled by init.
    pub(super) argv_ptrs: Vec<*const libc::c_char>,
    pub(super) env_ptrs: Vec<*const libc::c_char>,
    /// The waiting shell's start (see [`JailSpec::waiting_shell`]).
    pub(super) waiting: Option<WaitingShell>,
    pub(super) ll_rules: Vec<(CString, u64)>,
    pub(super) ll: Option<(i32, u64, u64)>,
    pub(super) rlimits: Vec<Rlimit>,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) privileged: bool,
    pub(super) privileged_mounts: bool,
    pub(super) new_net: bool,
    pub(super) cap_last_cap: u32,
    /// argv of a sandbox's init (NULL-terminated pointers into `init_strings`).
    pub(super) init_argv: Vec<*const libc::c_char>,
    /// Owns what `init_argv` points at.
    pub(super) _init_strings: Vec<CString>,
}

pub(super) fn prepare(spec: &JailSpec) -> Result<Prepared, SpawnError> {
    let mut ops = Vec::with_capacity(spec.mounts.ops.len());
    for op in &spec.mounts.ops {
        ops.push(match op {
            MountOp::Tmpfs { dst, flags, data } => COp::Tmpfs {
                dst: cpath(dst, "mount path")?,
                flags: *flags,
                data: cstr(data, "tmpfs options")?,
            },
            MountOp::Mkdir { path } => COp::Mkdir {
                path: cpath(path, "mount path")?,
            },
            MountOp::Symlink { target, path } => COp::Symlink {
                target: cstr(target, "symlink target")?,
                path: cpath(path, "mount path")?,
            },
            MountOp::Touch { path } => COp::Touch {
                path: cpath(path, "mount path")?,
            },
            MountOp::Bind {
                source,
                dst,
                recursive,
            } => COp::Bind {
                source: *source,
                dst: cpath(dst, "mount path")?,
                recursive: *recursive,
            },
            MountOp::IdmappedBind { source, dst, idmap } => COp::IdmappedBind {
                source: *source,
                dst: cpath(dst, "mount path")?,
                userns: spec.idmap_userns.get(*idmap).map(|f| f.as_raw_fd()).ok_or(
                    SpawnError::Os {
                        step: "idmapped mount",
                        source: io::Error::other("no user namespace for an idmapping of the plan"),
                    },
                )?,
            },
            MountOp::Remount { dst, flags } => COp::Remount {
                dst: cpath(dst, "mount path")?,
                flags: *flags,
            },
            MountOp::Proc { dst } => COp::Proc {
                dst: cpath(dst, "mount path")?,
            },
            MountOp::Devpts { dst } => COp::Devpts {
                dst: cpath(dst, "mount path")?,
            },
            MountOp::File { path, data, mode } => COp::File {
                mode: *mode,
                path: cpath(path, "mount path")?,
                data,
            },
        });
    }
    let sources = spec
        .mounts
        .sources
        .iter()
        .map(|s| cpath(&s.path, "mount source"))
        .collect::<Result<Vec<_>, _>>()?;
    let source_parts = spec
        .mounts
        .sources
        .iter()
        .map(|s| {
            if !s.no_symlinks {
                return Ok(None);
            }
            if !s.path.is_absolute() {
                return Err(SpawnError::Nul {
                    what: "mount source (not absolute)",
                });
            }
            s.path
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n),
                    _ => None,
                })
                .map(|n| {
                    CString::new(n.as_bytes()).map_err(|_| SpawnError::Nul {
                        what: "mount source",
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut init_strings = vec![cstr("paddock-init", "init")?];
    if spec.landlock.is_some() {
        init_strings.push(
            CString::new(crate::sandbox_jail::proto::INIT_ARG_LANDLOCK)
                .map_err(|_| SpawnError::Nul { what: "init" })?,
        );
    }
    let init_argv = init_strings
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut ll_rules = Vec::new();
    let mut ll = None;
    if let Some(p) = &spec.landlock {
        for r in &p.rules {
            ll_rules.push((cstr(&r.path, "landlock path")?, r.access));
        }
        ll = Some((p.abi, p.handled_fs, p.scoped));
    }
    Ok(Prepared {
        waiting: if spec.waiting_shell {
            Some(WaitingShell::new(
                &spec.program,
                spec.shell_locale.as_deref(),
            )?)
        } else {
            None
        },
        source_fds: vec![-1; sources.len()],
        sources,
        source_parts,
        ops,
        staging: cpath(&spec.mounts.staging, "staging path")?,
        hostname: cstr(&spec.hostname, "hostname")?,
        program: cstr(&spec.program, "program")?,
        cmd_buf: Mapping::new(COMMAND_MAX_BYTES).map_err(os("map the command buffer"))?,
        argv_ptrs: vec![std::ptr::null(); COMMAND_MAX_ARGS + 1],
        env_ptrs: vec![std::ptr::null(); COMMAND_MAX_ENV + 1],
        ll_rules,
        ll,
        rlimits: spec.rlimits.clone(),
        uid: spec.uid,
        gid: spec.gid,
        privileged: spec.privileged,
        privileged_mounts: spec.privileged_mounts(),
        new_net: matches!(spec.net, NetMode::PerExec),
        cap_last_cap: spec.cap_last_cap,
        init_argv,
        _init_strings: init_strings,
    })
}

/// The waiting shell's argv (`[name, "-c", placeholder]`) and environment (`LD_PRELOAD`,
/// the program for commands that do not fit, the locale to load, padding): the preload writes the command and
/// its environment over these strings, so their sizes are the room it has.
pub(super) struct WaitingShell {
    /// NULL-terminated pointers into `strings`.
    pub(super) argv: Vec<*const libc::c_char>,
    pub(super) env: Vec<*const libc::c_char>,
    /// Owns what the pointers point at (a `CString`'s bytes stay put when it moves).
    pub(super) _strings: Vec<CString>,
}

impl WaitingShell {
    fn new(program: &str, locale: Option<&str>) -> Result<Self, SpawnError> {
        let (argv, env) = waiting_shell_command(program, locale);
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for b in argv.into_iter().chain(env) {
            strings.push(CString::new(b).map_err(|_| SpawnError::Nul { what: "program" })?);
        }
        let ptrs = |s: &[CString]| {
            s.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(Self {
            argv: ptrs(&strings[..3]),
            env: ptrs(&strings[3..]),
            _strings: strings,
        })
    }
}
