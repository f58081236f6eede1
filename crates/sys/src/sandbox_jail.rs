//! Paddock's side of a sandbox's init (`init/init.rs`): the program itself, kept in a
//! sealed memfd the jails execute, and the messages on its control socket.
//!
//! A sandbox's jail is built once ([`crate::jail::build_sandbox`]) and then lives as long as
//! the sandbox; every command is a child of its init, started by a RUN message that carries
//! the command and, as `SCM_RIGHTS`, the descriptors the command gets (its stdio) and the
//! cgroup files it joins. Init answers with STARTED, then EXITED (or FAILED) records.
//!
//! Invariant: a message that encodes is one init accepts (the same limits, checked here
//! first), so init never has to refuse a well-formed command.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

use crate::jail::SpawnError;
use crate::process::WaitStatus;

/// The wire constants shared with init.
pub mod proto {
    #![allow(dead_code, missing_docs)]
    include!("../init/proto.rs");
}
use proto::*;

/// The init program (built from `init/init.rs` by `build.rs`): a static executable.
pub const INIT_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/paddock-init"));

/// A sealed memfd holding [`INIT_PROGRAM`], made once per process and shared by every jail
/// (`execveat` of it needs nothing in the jail's root). A failure is remembered (by its OS
/// error) and returned again.
pub fn init_program() -> io::Result<Arc<OwnedFd>> {
    static PROGRAM: OnceLock<Result<Arc<OwnedFd>, i32>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            make_init_memfd()
                .map(Arc::new)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
        })
        .clone()
        .map_err(io::Error::from_raw_os_error)
}

fn make_init_memfd() -> io::Result<OwnedFd> {
    let name = c"paddock-init";
    // SAFETY: memfd_create with a NUL-terminated name; the result is a fresh descriptor.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut off = 0usize;
    while off < INIT_PROGRAM.len() {
        // SAFETY: writing from a static buffer to our memfd.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                INIT_PROGRAM[off..].as_ptr().cast(),
                INIT_PROGRAM.len() - off,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
    }
    // Read and execute for everyone (the jail runs as the sandbox's uid), and no change
    // ever again: a sandbox cannot alter the program other sandboxes start.
    // SAFETY: fchmod and fcntl on our own descriptor.
    unsafe {
        if libc::fchmod(fd.as_raw_fd(), 0o555) < 0 {
            return Err(io::Error::last_os_error());
        }
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// One command for a sandbox's init.
#[derive(Debug)]
pub struct RunCommand<'a> {
    /// Paddock's id of the command (records carry it back).
    pub exec_id: u32,
    /// The program to execute (a jail path).
    pub program: &'a str,
    /// Working directory (a jail path).
    pub cwd: &'a str,
    /// argv, argv\[0\] included.
    pub argv: &'a [String],
    /// The environment.
    pub env: &'a [(String, String)],
    /// Descriptors the command gets as 0, 1, 2, … in this order.
    pub fds: &'a [BorrowedFd<'a>],
    /// v1 `tasks` files the command writes itself into before anything else.
    pub cgroups: &'a [BorrowedFd<'a>],
    /// A cgroup v2 directory the command is created in.
    pub clone_into: Option<BorrowedFd<'a>>,
}

/// A RUN message: its bytes and the descriptors to attach to them.
#[derive(Debug)]
pub struct EncodedRun {
    bytes: Vec<u8>,
    fds: Vec<RawFd>,
}

impl EncodedRun {
    /// The message bytes (header and body).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The descriptors attached to the header (valid as long as the command's borrows).
    pub fn fds(&self) -> &[RawFd] {
        &self.fds
    }
}

fn header(words: [u32; INIT_HEADER_WORDS]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

impl RunCommand<'_> {
    /// Encodes the command, refusing NUL bytes and anything over init's limits.
    pub fn encode(&self) -> Result<EncodedRun, SpawnError> {
        if self.argv.is_empty() || self.argv.len() > INIT_MAX_ARGS {
            return Err(SpawnError::TooLarge {
                what: "argv (1 to 1024 entries)",
            });
        }
        if self.env.len() > INIT_MAX_ENV {
            return Err(SpawnError::TooLarge {
                what: "environment (at most 4096 entries)",
            });
        }
        let ncg = self.cgroups.len() + usize::from(self.clone_into.is_some());
        if self.fds.len() > INIT_MAX_FDS || ncg > INIT_MAX_CGROUPS {
            return Err(SpawnError::TooLarge {
                what: "descriptors of a command",
            });
        }
        let mut body = Vec::new();
        let mut put = |parts: &[&[u8]], what: &'static str| -> Result<(), SpawnError> {
            for p in parts {
                if p.contains(&0) {
                    return Err(SpawnError::Nul { what });
                }
                body.extend_from_slice(p);
            }
            body.push(0);
            Ok(())
        };
        put(&[self.program.as_bytes()], "program")?;
        put(&[self.cwd.as_bytes()], "cwd")?;
        for a in self.argv {
            put(&[a.as_bytes()], "command")?;
        }
        for (k, v) in self.env {
            put(&[k.as_bytes(), b"=", v.as_bytes()], "environment")?;
        }
        if body.len() > INIT_MAX_BODY {
            return Err(SpawnError::TooLarge {
                what: "command and environment (at most 4 MiB)",
            });
        }
        // The limits above keep every count far below u32::MAX.
        let mut bytes = header([
            INIT_MSG_RUN,
            self.exec_id,
            body.len() as u32,
            self.argv.len() as u32,
            self.env.len() as u32,
            self.fds.len() as u32,
            ncg as u32,
            if self.clone_into.is_some() {
                INIT_RUN_CLONE_INTO
            } else {
                0
            },
        ]);
        bytes.extend_from_slice(&body);
        let fds = self
            .fds
            .iter()
            .chain(self.cgroups)
            .chain(self.clone_into.as_ref())
            .map(|f| f.as_raw_fd())
            .collect();
        Ok(EncodedRun { bytes, fds })
    }
}

/// A SIGNAL message: `signal` to the command's shell, or (`group`) to its process group.
pub fn encode_signal(exec_id: u32, signal: i32, group: bool) -> Vec<u8> {
    header([
        INIT_MSG_SIGNAL,
        exec_id,
        signal as u32,
        u32::from(group),
        0,
        0,
        0,
        0,
    ])
}

/// Where a command failed to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStep {
    /// Init could not read the message.
    Message,
    /// Forking the shell.
    Fork,
    /// Joining the command's cgroup.
    Cgroup,
    /// Restricting with landlock.
    Landlock,
    /// Setting up stdio.
    Stdio,
    /// Changing to the working directory.
    Cwd,
    /// Executing the program.
    Exec,
    /// Too many commands running at once in this sandbox.
    Busy,
    /// Adding the child's own seccomp filter.
    Seccomp,
    /// A step this Paddock does not know.
    Unknown(u32),
}

impl StartStep {
    fn from_wire(n: u32) -> Self {
        match n {
            INIT_S_MESSAGE => Self::Message,
            INIT_S_FORK => Self::Fork,
            INIT_S_CGROUP => Self::Cgroup,
            INIT_S_LANDLOCK => Self::Landlock,
            INIT_S_STDIO => Self::Stdio,
            INIT_S_CWD => Self::Cwd,
            INIT_S_EXEC => Self::Exec,
            INIT_S_BUSY => Self::Busy,
            INIT_S_SECCOMP => Self::Seccomp,
            n => Self::Unknown(n),
        }
    }
}

impl StartStep {
    /// A stable snake_case name of the step, the same as the jail's step that does the same
    /// ([`crate::jail::Step::code`]).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Message => "read_command",
            Self::Fork => "fork_shell",
            Self::Cgroup => "join_cgroup",
            Self::Landlock => "landlock_restrict",
            Self::Stdio => "set_up_stdio",
            Self::Cwd => "change_directory",
            Self::Exec => "exec_shell",
            Self::Busy => "too_many_commands",
            Self::Seccomp => "install_seccomp",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl std::fmt::Display for StartStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message => f.write_str("read the command"),
            Self::Fork => f.write_str("fork the shell"),
            Self::Cgroup => f.write_str("join the command's cgroup"),
            Self::Landlock => f.write_str("restrict with landlock"),
            Self::Stdio => f.write_str("set up stdio"),
            Self::Cwd => f.write_str("change to the working directory"),
            Self::Exec => f.write_str("execute the shell"),
            Self::Busy => f.write_str("start a command (too many running in this sandbox)"),
            Self::Seccomp => f.write_str("install the command's seccomp filter"),
            Self::Unknown(n) => write!(f, "step {n}"),
        }
    }
}

/// A command init could not start: the step, with its OS error (as an error: `"change to
/// the working directory failed: No such file or directory (os error 2)"`; a command refused
/// because too many run says only that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartFailed {
    /// Where.
    pub step: StartStep,
    /// The OS error.
    pub errno: i32,
}

impl std::fmt::Display for StartFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            StartStep::Busy => write!(f, "{}", self.step),
            step => write!(
                f,
                "{step} failed: {}",
                io::Error::from_raw_os_error(self.errno)
            ),
        }
    }
}

impl std::error::Error for StartFailed {}

/// A record from init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitRecord {
    /// The command's shell runs as `pid` (in the jail's pid namespace).
    Started {
        /// The command.
        exec_id: u32,
        /// Its shell's pid inside the jail.
        pid: i32,
    },
    /// The command's shell ended.
    Exited {
        /// The command.
        exec_id: u32,
        /// How.
        status: WaitStatus,
    },
    /// The command could not be started.
    Failed {
        /// The command.
        exec_id: u32,
        /// Where.
        step: StartStep,
        /// The OS error.
        errno: i32,
    },
}

/// Bytes of a record.
pub const RECORD_LEN: usize = INIT_REC_LEN;

impl InitRecord {
    /// Decodes a record; `None` for a tag this Paddock does not know.
    pub fn parse(b: &[u8; RECORD_LEN]) -> Option<Self> {
        let w = |i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        let (tag, exec_id, a, c) = (w(0), w(1), w(2) as i32, w(3) as i32);
        Some(match tag {
            INIT_REC_STARTED => Self::Started { exec_id, pid: a },
            INIT_REC_EXITED => Self::Exited {
                exec_id,
                status: WaitStatus::from_raw(a),
            },
            INIT_REC_FAILED => Self::Failed {
                exec_id,
                step: StartStep::from_wire(a as u32),
                errno: c,
            },
            _ => return None,
        })
    }

    /// The command the record is about.
    pub fn exec_id(&self) -> u32 {
        match self {
            Self::Started { exec_id, .. }
            | Self::Exited { exec_id, .. }
            | Self::Failed { exec_id, .. } => *exec_id,
        }
    }
}

/// Sends `bytes` on `sock` with `fds` attached to the first of them (`SCM_RIGHTS`), waiting
/// while the socket is full. The caller serialises messages (one writer at a time).
pub async fn send(sock: &tokio::net::UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut off = 0usize;
    while off < bytes.len() {
        sock.writable().await?;
        let attach = if off == 0 { fds } else { &[] };
        match sock.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg(sock.as_raw_fd(), &bytes[off..], attach)
        }) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `sendmsg` (non-blocking socket): how many bytes went.
fn sendmsg(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // u64 storage keeps the control buffer aligned for `cmsghdr`.
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid; the fields set below point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(payload as u32) as usize,
                libc::CMSG_LEN(payload as u32) as usize,
            )
        };
        if space > std::mem::size_of_val(&control) {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer holds `space` bytes, enough for one cmsghdr with
        // `payload` bytes of data; CMSG_FIRSTHDR/CMSG_DATA point inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = len;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), payload);
        }
    }
    // SAFETY: `msg` and everything it points at live across the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let rec = |w: [u32; 4]| {
            let mut b = [0u8; RECORD_LEN];
            for (i, x) in w.iter().enumerate() {
                b[4 * i..4 * i + 4].copy_from_slice(&x.to_ne_bytes());
            }
            InitRecord::parse(&b)
        };
        assert_eq!(
            rec([INIT_REC_STARTED, 7, 12, 0]),
            Some(InitRecord::Started {
                exec_id: 7,
                pid: 12
            })
        );
        assert_eq!(
            rec([INIT_REC_EXITED, 7, 3 << 8, 0]),
            Some(InitRecord::Exited {
                exec_id: 7,
                status: WaitStatus::Exited(3)
            })
        );
        assert_eq!(
            rec([INIT_REC_FAILED, 9, INIT_S_CWD, 2]),
            Some(InitRecord::Failed {
                exec_id: 9,
                step: StartStep::Cwd,
                errno: 2
            })
        );
        assert_eq!(rec([99, 0, 0, 0]), None);
        let failed = |step, errno| StartFailed { step, errno }.to_string();
        assert_eq!(
            failed(StartStep::Cwd, 2),
            format!(
                "change to the working directory failed: {}",
                io::Error::from_raw_os_error(2)
            )
        );
        assert_eq!(
            failed(StartStep::Busy, libc::EAGAIN),
            "start a command (too many running in this sandbox)"
        );
        // The steps init's child shares with the jail's have the same codes.
        use crate::jail::Step;
        for (start, step) in [
            (StartStep::Message, Step::ReadCommand),
            (StartStep::Fork, Step::ForkShell),
            (StartStep::Cgroup, Step::JoinCgroup),
            (StartStep::Landlock, Step::LandlockRestrict),
            (StartStep::Stdio, Step::Stdio),
            (StartStep::Cwd, Step::Cwd),
            (StartStep::Exec, Step::ExecShell),
            (StartStep::Seccomp, Step::Seccomp),
        ] {
            assert_eq!(start.code(), step.code());
        }
    }

    #[test]
    fn commands_are_checked_before_they_are_sent() {
        let argv = vec!["sh".to_owned(), "-c".into(), "true".into()];
        let ok = RunCommand {
            exec_id: 1,
            program: "/bin/sh",
            cwd: "/",
            argv: &argv,
            env: &[("A".into(), "b".into())],
            fds: &[],
            cgroups: &[],
            clone_into: None,
        };
        let e = ok.encode().unwrap();
        assert_eq!(&e.bytes()[..4], &INIT_MSG_RUN.to_ne_bytes());
        assert!(e.bytes().ends_with(b"/bin/sh\0/\0sh\0-c\0true\0A=b\0"));
        let nul = vec!["a\0b".to_owned()];
        assert!(matches!(
            RunCommand { argv: &nul, ..ok }.encode(),
            Err(SpawnError::Nul { what: "command" })
        ));
        let none: Vec<String> = Vec::new();
        assert!(RunCommand { argv: &none, ..ok }.encode().is_err());
        let huge = vec!["x".repeat(INIT_MAX_BODY)];
        assert!(matches!(
            RunCommand { argv: &huge, ..ok }.encode(),
            Err(SpawnError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_init_program_is_a_sealed_executable() {
        let fd = init_program().unwrap();
        // SAFETY: fcntl on a live descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert!(seals & libc::F_SEAL_WRITE != 0, "{seals:#x}");
        let md = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(md.len() as usize, INIT_PROGRAM.len());
        assert_eq!(&INIT_PROGRAM[..4], b"\x7fELF");
    }
}
