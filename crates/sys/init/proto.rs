// The contract between Paddock (`src/sandbox_jail.rs`) and a sandbox's init
// (`init/init.rs`), included by both so the two can never disagree.
//
// Init reads messages from its control socket (a `SOCK_STREAM` unix socket at
// `INIT_CTL_FD`) and writes fixed-size records back on it. Integers are native-endian u32.
//
// RUN: header `[INIT_MSG_RUN, exec_id, body_len, argc, envc, nfds, ncgroups, flags]`, with
// `nfds + ncgroups` descriptors attached (SCM_RIGHTS) to the header; then `body_len` bytes:
// `program\0 cwd\0 argv…\0 KEY=VALUE…\0`. The first `nfds` descriptors become the child's
// 0..nfds-1 (stdin, stdout, stderr, and for a waiting shell its command and status pipes);
// the next `ncgroups` are `cgroup.procs`/`tasks` files the child writes `0` into before
// anything else, so everything it starts is born in the exec's cgroups. With
// `INIT_RUN_CLONE_INTO` in `flags`, the last of those is instead a cgroup v2 directory the
// child is created in (`clone3` with `CLONE_INTO_CGROUP`): on v2 a process moving itself
// through `cgroup.procs` takes the kernel's threadgroup lock for writing, a clone into a
// cgroup only for reading.
//
// SIGNAL: header `[INIT_MSG_SIGNAL, exec_id, signal, group, 0, 0, 0, 0]`: init sends the
// signal to the exec's shell (`group == 0`) or to its process group (`group == 1`).
//
// Records (16 bytes): `[INIT_REC_*, exec_id, a, b]`: STARTED (a = the shell's pid in the
// jail), EXITED (a = wait status), FAILED (a = one of `INIT_S_*`, b = errno).

/// Init's control socket.
pub const INIT_CTL_FD: i32 = 3;
/// The landlock ruleset every child restricts itself with, when init's first argument is
/// `INIT_ARG_LANDLOCK`.
pub const INIT_RULESET_FD: i32 = 4;
/// Init's first argument when a landlock ruleset waits at `INIT_RULESET_FD`.
pub const INIT_ARG_LANDLOCK: &[u8] = b"landlock";

/// Start a command.
pub const INIT_MSG_RUN: u32 = 1;
/// Signal a command.
pub const INIT_MSG_SIGNAL: u32 = 2;
/// RUN flag: the last cgroup descriptor is a v2 directory to create the child in.
pub const INIT_RUN_CLONE_INTO: u32 = 1;
/// Words of every message header.
pub const INIT_HEADER_WORDS: usize = 8;
/// Bytes of every message header.
pub const INIT_HEADER_LEN: usize = INIT_HEADER_WORDS * 4;

/// The command's shell started (`a`: its pid inside the jail).
pub const INIT_REC_STARTED: u32 = 1;
/// The command's shell ended (`a`: its wait status).
pub const INIT_REC_EXITED: u32 = 2;
/// The command could not be started (`a`: step, `b`: errno).
pub const INIT_REC_FAILED: u32 = 3;
/// Bytes of every record.
pub const INIT_REC_LEN: usize = 16;

/// Most descriptors one RUN maps into the child.
pub const INIT_MAX_FDS: usize = 8;
/// Most cgroup files one RUN carries.
pub const INIT_MAX_CGROUPS: usize = 4;
/// Most body bytes of one RUN (the 4 MiB command limit plus the program and cwd).
pub const INIT_MAX_BODY: usize = (4 << 20) + 8192;
/// Most argv entries.
pub const INIT_MAX_ARGS: usize = 1024;
/// Most environment entries.
pub const INIT_MAX_ENV: usize = 4096;
/// Most commands running at once in one jail (their shells, not their children).
pub const INIT_MAX_LIVE: usize = 1024;

/// Steps a child can fail at (FAILED's `a`).
pub const INIT_S_MESSAGE: u32 = 1;
pub const INIT_S_FORK: u32 = 2;
pub const INIT_S_CGROUP: u32 = 3;
pub const INIT_S_LANDLOCK: u32 = 4;
pub const INIT_S_STDIO: u32 = 5;
pub const INIT_S_CWD: u32 = 6;
pub const INIT_S_EXEC: u32 = 7;
pub const INIT_S_BUSY: u32 = 8;
pub const INIT_S_SECCOMP: u32 = 9;
