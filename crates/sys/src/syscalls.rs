//! The raw syscalls a freshly cloned child makes, each behind a small safe wrapper that
//! allocates nothing, takes no lock, formats nothing and hands back the errno of a failure.
//!
//! [`Syscalls`] names them: the jail's child (`jail::child`) and the kernel probes
//! ([`crate::probe`]) are written against it, and a recording fake (in `jail::child`'s
//! tests) implements it too, so the order of a jail's steps is checked without privileges
//! or a clone. [`InChild`] makes the real calls.
//!
//! Why the wrappers can be safe: the ones that take a path take a `&CStr` (NUL-terminated,
//! alive across the call), the ones that take a structure build it on their own stack, and
//! the ones that take a raw descriptor (close, dup, read, write, …) are methods of
//! [`InChild`], which only a freshly cloned child can make ([`InChild::assume`]). Such a child
//! runs no destructor and never returns into its parent's code, so every descriptor in its
//! table is its own to use or close: Rust's I/O safety cannot be broken from there. The two
//! calls that take arrays of pointers (`execve`, `execveat`) stay `unsafe`.
//!
//! Invariant: nothing here allocates or locks: the child of a multi-threaded process may hold
//! a copy of an allocator lock that no thread will ever release.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;

use crate::mountplan::ms;
use crate::seccomp::Insn;

/// An OS error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl Errno {
    /// The calling thread's `errno` (`EIO` if there is none to read).
    pub(crate) fn last() -> Self {
        Self(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

/// The result of a wrapper.
pub(crate) type SysResult<T = ()> = Result<T, Errno>;

/// `Ok(())` for a syscall's non-negative result, the errno otherwise.
fn check(r: libc::c_long) -> SysResult {
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `Ok(fd)` for a non-negative descriptor, the errno otherwise.
fn check_fd(r: libc::c_long) -> SysResult<RawFd> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as RawFd)
    }
}

/// The syscalls of a jail's child and of the probes, one method each (a few do two or three
/// calls that only make sense together, such as an idmapped bind).
pub(crate) trait Syscalls {
    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: die with the thread that cloned us.
    fn kill_with_parent(&self) -> SysResult;
    /// Whether the process behind `pidfd` has ended (its pidfd is readable); false for -1.
    fn parent_gone(&self, pidfd: RawFd) -> bool;
    /// `unshare(flags)`.
    fn unshare(&self, flags: i32) -> SysResult;
    /// `setgroups(0, NULL)`: no supplementary groups.
    fn clear_groups(&self) -> SysResult;
    /// `setresgid(gid, gid, gid)` as a raw syscall (see [`InChild`]'s implementation).
    fn set_gid(&self, gid: u32) -> SysResult;
    /// `setresuid(uid, uid, uid)` as a raw syscall.
    fn set_uid(&self, uid: u32) -> SysResult;
    /// `sethostname(name)`.
    fn set_hostname(&self, name: &CStr) -> SysResult;
    /// `setrlimit(resource, {value, value})`.
    fn set_rlimit(&self, resource: i32, value: u64) -> SysResult;
    /// `prctl(PR_CAPBSET_DROP, cap)`.
    fn drop_bounding_cap(&self, cap: u32) -> SysResult;
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
    fn clear_ambient_caps(&self) -> SysResult;
    /// `capset` with every set empty.
    fn drop_capabilities(&self) -> SysResult;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&self) -> SysResult;
    /// `prctl(PR_SET_DUMPABLE, 0)`.
    fn set_not_dumpable(&self) -> SysResult;
    /// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, program)` (no_new_privs must be set).
    fn install_seccomp(&self, program: &[Insn]) -> SysResult;
    /// `setsid()` (its result is not needed: a fresh child is never a group leader).
    fn setsid(&self);
    /// `signal(SIGPIPE, SIG_DFL)`: an ignored signal stays ignored across `execve`.
    fn default_sigpipe(&self);
    /// `waitpid(-1, &status, 0)`: the pid and wait status of a child that ended.
    fn wait_any(&self) -> SysResult<(i32, i32)>;

    /// `read(fd, buf)`.
    fn read(&self, fd: RawFd, buf: &mut [u8]) -> SysResult<usize>;
    /// `write(fd, buf)`.
    fn write(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize>;
    /// `close(fd)` (its result is not needed).
    fn close(&self, fd: RawFd);
    /// `close_range(first, last, 0)` (its result is not needed).
    fn close_range(&self, first: u32, last: u32);
    /// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a close-on-exec copy at `min` or above.
    fn dup_above(&self, fd: RawFd, min: RawFd) -> SysResult<RawFd>;
    /// `dup2(from, to)`, or `dup3(from, to, O_CLOEXEC)` with `cloexec`.
    fn dup_to(&self, from: RawFd, to: RawFd, cloexec: bool) -> SysResult;
    /// `open(path, flags, mode)`.
    fn open(&self, path: &CStr, flags: i32, mode: u32) -> SysResult<RawFd>;
    /// Opens `path` (`O_PATH`) refusing a symbolic link anywhere on it (`ELOOP`):
    /// `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, or on a kernel without it a
    /// walk from `/` through `parts` (the path's components) with `O_NOFOLLOW`.
    fn open_no_symlinks(&self, path: &CStr, parts: &[CString]) -> SysResult<RawFd>;

    /// `mount(source, target, fstype, flags, data)`.
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> SysResult;
    /// Bind-mounts what the `O_PATH` descriptor `source` refers to at `target`
    /// (through `/proc/self/fd/N`, formatted on the stack).
    fn bind_fd(&self, source: RawFd, target: &CStr, recursive: bool) -> SysResult;
    /// Binds the directory `source` (an `O_PATH` descriptor) at `target` through a mount
    /// idmapped by the user namespace `userns`: `open_tree` (a detached copy),
    /// `mount_setattr(MOUNT_ATTR_IDMAP)`, `move_mount`.
    fn idmapped_bind(&self, source: RawFd, target: &CStr, userns: RawFd) -> SysResult;
    /// `umount2(target, MNT_DETACH)`.
    fn detach(&self, target: &CStr) -> SysResult;
    /// `mkdir(path, mode)`.
    fn mkdir(&self, path: &CStr, mode: u32) -> SysResult;
    /// `symlink(target, path)`.
    fn symlink(&self, target: &CStr, path: &CStr) -> SysResult;
    /// `chdir(path)`.
    fn chdir(&self, path: &CStr) -> SysResult;
    /// `pivot_root(new_root, put_old)`.
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult;
    /// Brings `lo` up in the current network namespace ([`loopback_up`]).
    fn loopback_up(&self) -> SysResult;

    /// `landlock_create_ruleset` handling `handled_fs` (and the `scoped` rights), with the
    /// attribute size the kernel's ABI `abi` knows.
    fn landlock_create_ruleset(&self, abi: i32, handled_fs: u64, scoped: u64) -> SysResult<RawFd>;
    /// `landlock_add_rule(ruleset, LANDLOCK_RULE_PATH_BENEATH, {access, parent})`.
    fn landlock_add_path_rule(&self, ruleset: RawFd, parent: RawFd, access: u64) -> SysResult;
    /// `landlock_restrict_self(ruleset)`.
    fn landlock_restrict_self(&self, ruleset: RawFd) -> SysResult;

    /// Starts `child` in a new process that shares this one's memory until it `execve`s or
    /// exits (`clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does), on `stack`; this
    /// process sleeps meanwhile. `child`'s result is the new process's exit code should it
    /// return. Returns the new process's pid.
    fn spawn_vfork<F: FnOnce() -> i32>(&self, stack: &Mapping, child: F) -> SysResult<i32>;

    /// `execve(path, argv, envp)`; returns only on failure.
    ///
    /// # Safety
    /// `argv` and `envp` point at NULL-terminated arrays of pointers to NUL-terminated
    /// strings, all alive across the call.
    unsafe fn execve(
        &self,
        path: &CStr,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> Errno;
    /// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`; returns only on failure.
    ///
    /// # Safety
    /// As [`Syscalls::execve`].
    unsafe fn execve_fd(
        &self,
        fd: RawFd,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> Errno;
}

/// Writes all of `data` to `fd`, again after `EINTR`; a write of nothing is `ENOSPC`.
pub(crate) fn write_all<K: Syscalls>(k: &K, fd: RawFd, data: &[u8]) -> SysResult {
    let mut off = 0usize;
    while off < data.len() {
        match k.write(fd, &data[off..]) {
            Ok(0) => return Err(Errno(libc::ENOSPC)),
            Ok(n) => off += n,
            Err(Errno(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes every descriptor but those in `keep` (sorted), a range at a time.
pub(crate) fn close_all_but<K: Syscalls>(k: &K, keep: &[u32]) {
    let mut lo = 0u32;
    for &fd in keep {
        if fd > lo {
            k.close_range(lo, fd - 1);
        }
        lo = fd.saturating_add(1);
    }
    if lo != 0 {
        k.close_range(lo, u32::MAX);
    }
}

/// Makes every mount of the namespace private (`MS_REC | MS_PRIVATE` on `/`), so nothing
/// mounted from here on propagates back to the host.
pub(crate) fn make_mounts_private<K: Syscalls>(k: &K) -> SysResult {
    k.mount(None, c"/", None, ms::REC | ms::PRIVATE, None)
}

/// Which half of [`pivot_into`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PivotStage {
    /// Changing into the new root or `pivot_root` itself.
    Pivot,
    /// Detaching the old root (stacked on `/`) or changing to the new `/`.
    Detach,
}

/// Makes the mount at `dir` the root: `chdir` into it, `pivot_root(".", ".")` (the old
/// root ends up stacked on the new one), detach the old root, `chdir("/")`.
pub(crate) fn pivot_into<K: Syscalls>(k: &K, dir: &CStr) -> Result<(), (PivotStage, Errno)> {
    let stage = |s| move |e| (s, e);
    k.chdir(dir).map_err(stage(PivotStage::Pivot))?;
    k.pivot_root(c".", c".").map_err(stage(PivotStage::Pivot))?;
    k.detach(c".").map_err(stage(PivotStage::Detach))?;
    k.chdir(c"/").map_err(stage(PivotStage::Detach))
}

/// `ip link set lo up` with one ioctl pair on a socket of its own. Safe anywhere: the
/// socket is created and closed here.
pub(crate) fn loopback_up() -> SysResult {
    // SAFETY: socket() takes no pointers; the result is a fresh descriptor or -1.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(Errno::last());
    }
    // SAFETY: an all-zero ifreq is a valid value of the plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: SIOCGIFFLAGS fills the flags of the live, NUL-terminated `req` on our socket.
    let mut r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) };
    if r >= 0 {
        // SAFETY: reading and setting the union member SIOCGIFFLAGS just filled.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: SIOCSIFFLAGS reads the live `req`.
        r = unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) };
    }
    let result = if r < 0 { Err(Errno::last()) } else { Ok(()) };
    // SAFETY: closing the socket made above, once.
    unsafe { libc::close(s) };
    result
}

/// Formats `/proc/self/fd/N` into `buf` (NUL-terminated) without allocating; a negative `fd`
/// is formatted as 0.
pub(crate) fn fd_path(buf: &mut [u8; 40], fd: RawFd) -> &CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    // At most 14 + 10 digits + NUL of the 40 bytes: the NUL just written is found.
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"")
}

/// A private anonymous mapping, unmapped on drop. The command buffer and the shell's stack
/// are large and almost never touched: a mapping costs two syscalls and its untouched pages
/// nothing, where a heap buffer of that size would be zeroed (and made resident) by the
/// allocator on every jail once glibc has raised its mmap threshold past it.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes (the parent, before the clone: this allocates).
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// The mapping's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a readable mapping of `len` bytes owned by `self` until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapping's bytes, to write.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The 16-byte aligned end of the mapping: the initial stack pointer of a stack in it.
    fn stack_top(&self) -> *mut libc::c_void {
        let top = self.ptr.wrapping_add(self.len);
        ((top as usize) & !15usize) as *mut libc::c_void
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` created, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The real syscalls, for a freshly cloned child (see the module's documentation).
#[derive(Debug)]
pub(crate) struct InChild(());

impl InChild {
    /// The token of a cloned child.
    ///
    /// # Safety
    /// Only in a child made by `clone` with fork semantics that never returns into its
    /// parent's code and runs no destructor: it ends in `execve` or `_exit`.
    pub(crate) unsafe fn assume() -> Self {
        Self(())
    }

    /// `_exit(code)`.
    pub(crate) fn exit(&self, code: i32) -> ! {
        // SAFETY: _exit ends the process at once; nothing is unwound or flushed.
        unsafe { libc::_exit(code) }
    }

    /// Sleeps until a signal ends the process.
    pub(crate) fn pause_forever(&self) -> ! {
        loop {
            // SAFETY: pause() takes no arguments.
            unsafe { libc::pause() };
        }
    }
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `struct landlock_ruleset_attr` (the kernel reads as much of it as its ABI knows).
#[repr(C)]
struct LandlockRulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr`.
#[repr(C, packed)]
struct LandlockPathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: u32 = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
pub(crate) struct OpenHow {
    pub(crate) flags: u64,
    pub(crate) mode: u64,
    pub(crate) resolve: u64,
}

pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub(crate) const RESOLVE_NO_SYMLINKS: u64 = 0x04;

/// `prctl(option, arg2)` with the unused arguments zero.
fn prctl(option: i32, arg2: libc::c_ulong) -> SysResult {
    // SAFETY: every prctl used here takes integers only (no pointer arguments).
    check(unsafe { libc::prctl(option, arg2, 0, 0, 0) }.into())
}

/// `ptr` of an optional C string, NULL for none.
fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

impl Syscalls for InChild {
    fn kill_with_parent(&self) -> SysResult {
        prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
    }

    fn parent_gone(&self, pidfd: RawFd) -> bool {
        if pidfd < 0 {
            return false;
        }
        let mut p = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live pollfd, without waiting.
        unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
    }

    fn unshare(&self, flags: i32) -> SysResult {
        // SAFETY: unshare takes flags only.
        check(unsafe { libc::unshare(flags) }.into())
    }

    // The set*id calls are raw syscalls, not libc's wrappers: glibc's broadcast the change
    // to every thread it knows of, taking its thread-list lock — in a cloned child those
    // threads do not exist and the lock may have been held by a parent thread at the clone:
    // a deadlock.
    fn clear_groups(&self) -> SysResult {
        // SAFETY: setgroups with a count of 0 reads no list.
        check(unsafe {
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>())
        })
    }

    fn set_gid(&self, gid: u32) -> SysResult {
        // SAFETY: setresgid takes integers only.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })
    }

    fn set_uid(&self, uid: u32) -> SysResult {
        // SAFETY: setresuid takes integers only.
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
    }

    fn set_hostname(&self, name: &CStr) -> SysResult {
        // SAFETY: `name` holds `to_bytes().len()` readable bytes.
        check(unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) }.into())
    }

    fn set_rlimit(&self, resource: i32, value: u64) -> SysResult {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the live `lim`.
        check(unsafe { libc::setrlimit(resource as _, &lim) }.into())
    }

    fn drop_bounding_cap(&self, cap: u32) -> SysResult {
        prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong)
    }

    fn clear_ambient_caps(&self) -> SysResult {
        // SAFETY: integers only.
        check(
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
            }
            .into(),
        )
    }

    fn drop_capabilities(&self) -> SysResult {
        let hdr = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: capset reads the live header and the two data structs version 3 takes.
        check(unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) })
    }

    fn set_no_new_privs(&self) -> SysResult {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
    }

    fn set_not_dumpable(&self) -> SysResult {
        prctl(libc::PR_SET_DUMPABLE, 0)
    }

    fn install_seccomp(&self, program: &[Insn]) -> SysResult {
        let fprog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(|_| Errno(libc::EINVAL))?,
            // `Insn` is #[repr(C)] with the kernel's `sock_filter` layout (u16, u8, u8, u32).
            filter: program.as_ptr().cast_mut().cast::<libc::sock_filter>(),
        };
        // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it
        // and writes nothing through the pointer.
        check(
            unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &fprog as *const libc::sock_fprog as libc::c_ulong,
                    0,
                    0,
                )
            }
            .into(),
        )
    }

    fn setsid(&self) {
        // SAFETY: setsid takes no arguments.
        unsafe { libc::setsid() };
    }

    fn default_sigpipe(&self) {
        // SAFETY: setting a standard disposition, no handler; without CLONE_SIGHAND this
        // changes only this process's table.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }

    fn wait_any(&self) -> SysResult<(i32, i32)> {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the live `status`.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok((r, status))
        }
    }

    fn read(&self, fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
        // SAFETY: `buf` is writable for its length; `fd` is this child's (see the module).
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(Errno::last())
        } else {
            Ok(n as usize)
        }
    }

    fn write(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize> {
        // SAFETY: `buf` is readable for its length; `fd` is this child's.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(Errno::last())
        } else {
            Ok(n as usize)
        }
    }

    fn close(&self, fd: RawFd) {
        // SAFETY: every descriptor of this child is its own (see the module).
        unsafe { libc::close(fd) };
    }

    fn close_range(&self, first: u32, last: u32) {
        // SAFETY: as `close`.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    }

    fn dup_above(&self, fd: RawFd, min: RawFd) -> SysResult<RawFd> {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor; takes integers only.
        check_fd(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) }.into())
    }

    fn dup_to(&self, from: RawFd, to: RawFd, cloexec: bool) -> SysResult {
        // SAFETY: replacing descriptor `to`, which is this child's (see the module).
        let r = unsafe {
            if cloexec {
                libc::syscall(libc::SYS_dup3, from, to, libc::O_CLOEXEC)
            } else {
                libc::dup2(from, to).into()
            }
        };
        check(r)
    }

    fn open(&self, path: &CStr, flags: i32, mode: u32) -> SysResult<RawFd> {
        // SAFETY: `path` is NUL-terminated and alive across the call.
        check_fd(unsafe { libc::open(path.as_ptr(), flags, mode) }.into())
    }

    fn open_no_symlinks(&self, path: &CStr, parts: &[CString]) -> SysResult<RawFd> {
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: `path` is NUL-terminated and `how` a live struct of the size passed.
        let r = check_fd(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        });
        match r {
            Err(Errno(libc::ENOSYS)) => self.walk_no_symlinks(parts),
            r => r,
        }
    }

    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> SysResult {
        // SAFETY: every pointer is NULL or a NUL-terminated string alive across the call.
        check(
            unsafe {
                libc::mount(
                    opt_ptr(source),
                    target.as_ptr(),
                    opt_ptr(fstype),
                    flags as libc::c_ulong,
                    opt_ptr(data).cast(),
                )
            }
            .into(),
        )
    }

    fn bind_fd(&self, source: RawFd, target: &CStr, recursive: bool) -> SysResult {
        let mut buf = [0u8; 40];
        let src = fd_path(&mut buf, source);
        let flags = ms::BIND | if recursive { ms::REC } else { 0 };
        self.mount(Some(src), target, None, flags, None)
    }

    fn idmapped_bind(&self, source: RawFd, target: &CStr, userns: RawFd) -> SysResult {
        let empty = c"";
        // SAFETY: open_tree on a descriptor and an empty NUL-terminated path; the result is
        // a fresh descriptor or -1.
        let tree = check_fd(unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                source,
                empty.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
            )
        })?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns as u64,
        };
        // SAFETY: `attr` is a live struct of the size passed; the path is NUL-terminated.
        let mut r = check(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree,
                empty.as_ptr(),
                libc::AT_EMPTY_PATH as u32,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        });
        if r.is_ok() {
            // SAFETY: both paths are NUL-terminated and alive across the call.
            r = check(unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree,
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            });
        }
        self.close(tree);
        r
    }

    fn detach(&self, target: &CStr) -> SysResult {
        // SAFETY: `target` is NUL-terminated and alive across the call.
        check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }.into())
    }

    fn mkdir(&self, path: &CStr, mode: u32) -> SysResult {
        // SAFETY: `path` is NUL-terminated and alive across the call.
        check(unsafe { libc::mkdir(path.as_ptr(), mode) }.into())
    }

    fn symlink(&self, target: &CStr, path: &CStr) -> SysResult {
        // SAFETY: both are NUL-terminated and alive across the call.
        check(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }.into())
    }

    fn chdir(&self, path: &CStr) -> SysResult {
        // SAFETY: `path` is NUL-terminated and alive across the call.
        check(unsafe { libc::chdir(path.as_ptr()) }.into())
    }

    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        // SAFETY: both are NUL-terminated and alive across the call.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
    }

    fn loopback_up(&self) -> SysResult {
        loopback_up()
    }

    fn landlock_create_ruleset(&self, abi: i32, handled_fs: u64, scoped: u64) -> SysResult<RawFd> {
        let attr = LandlockRulesetAttr {
            handled_access_fs: handled_fs,
            handled_access_net: 0,
            scoped,
        };
        // SAFETY: the kernel reads at most `ruleset_attr_size(abi)` <= size_of(attr) bytes
        // of the live `attr`.
        check_fd(unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const LandlockRulesetAttr,
                crate::landlock::ruleset_attr_size(abi),
                0u32,
            )
        })
    }

    fn landlock_add_path_rule(&self, ruleset: RawFd, parent: RawFd, access: u64) -> SysResult {
        let rule = LandlockPathBeneath {
            allowed_access: access,
            parent_fd: parent,
        };
        // SAFETY: the kernel reads the live `rule`.
        check(unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                1 as libc::c_int, // LANDLOCK_RULE_PATH_BENEATH
                &rule as *const LandlockPathBeneath,
                0u32,
            )
        })
    }

    fn landlock_restrict_self(&self, ruleset: RawFd) -> SysResult {
        // SAFETY: integers only.
        check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) })
    }

    fn spawn_vfork<F: FnOnce() -> i32>(&self, stack: &Mapping, child: F) -> SysResult<i32> {
        extern "C" fn entry<F: FnOnce() -> i32>(arg: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `arg` points at the `ManuallyDrop<F>` in `spawn_vfork`'s frame, which
            // lives on (the caller sleeps until this process execs or exits: CLONE_VFORK);
            // it is moved out once, here, and never dropped there.
            let child = unsafe { std::ptr::read(arg.cast::<F>()) };
            let code = child();
            // SAFETY: _exit ends this process; nothing of the shared memory is unwound.
            unsafe { libc::_exit(code) }
        }
        let mut child = ManuallyDrop::new(child);
        // SAFETY: the new process runs `entry` on `stack`, a mapping of its own nothing else
        // uses, and shares our memory only while we sleep (CLONE_VFORK); it ends in execve
        // or _exit, never returning into our frames. `ManuallyDrop<F>` has `F`'s layout.
        let pid = unsafe {
            libc::clone(
                entry::<F>,
                stack.stack_top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut child as *mut ManuallyDrop<F>).cast(),
            )
        };
        if pid < 0 { Err(Errno::last()) } else { Ok(pid) }
    }

    unsafe fn execve(
        &self,
        path: &CStr,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> Errno {
        // SAFETY: the caller's contract; `path` is NUL-terminated.
        unsafe { libc::execve(path.as_ptr(), argv, envp) };
        Errno::last()
    }

    unsafe fn execve_fd(
        &self,
        fd: RawFd,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> Errno {
        // SAFETY: the caller's contract; the path is an empty NUL-terminated string.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv,
                envp,
                libc::AT_EMPTY_PATH,
            )
        };
        Errno::last()
    }
}

impl InChild {
    /// Opens `/` then each of `parts` with `O_PATH | O_NOFOLLOW`; a symlink anywhere is
    /// `ELOOP`.
    fn walk_no_symlinks(&self, parts: &[CString]) -> SysResult<RawFd> {
        let mut fd = self.open(c"/", libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY, 0)?;
        for part in parts {
            // SAFETY: `part` is NUL-terminated; `fd` is the descriptor opened just before.
            let next = unsafe {
                libc::openat(
                    fd,
                    part.as_ptr(),
                    libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                )
            };
            let next = check_fd(next.into());
            self.close(fd);
            fd = next?;
            // SAFETY: an all-zero stat is a valid value of the plain C struct.
            let mut sb: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes the live `sb`.
            if unsafe { libc::fstat(fd, &mut sb) } < 0 || sb.st_mode & libc::S_IFMT == libc::S_IFLNK
            {
                self.close(fd);
                return Err(Errno(libc::ELOOP));
            }
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_format_without_allocation() {
        let mut b = [0u8; 40];
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234567, "/proc/self/fd/1234567"),
            (-1, "/proc/self/fd/0"),
        ] {
            assert_eq!(fd_path(&mut b, fd).to_str().unwrap(), want);
        }
    }
}
