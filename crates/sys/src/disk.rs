//! The kernel side of per-sandbox disk quotas: a thread's writable data lives in an ext4
//! image file of the quota's size, attached to a loop device and mounted by host root at
//! the thread's `user-data` directory, so a sandbox that fills it gets `ENOSPC` and the
//! host's filesystem never holds more than the image's size for it.
//!
//! Everything here works on descriptors: directories are opened relative to a directory
//! Paddock trusts with `O_NOFOLLOW`, a filesystem is created detached (`fsopen`, `fsmount`)
//! and attached onto a directory descriptor (`move_mount`), and unmounted through that
//! descriptor. Loop devices are taken with `LOOP_CTL_GET_FREE` and configured in one step
//! with `LOOP_CONFIGURE` and `LO_FLAGS_AUTOCLEAR`, so a device detaches by itself once its
//! filesystem is unmounted everywhere (the host and every jail that bound it) and nothing
//! has it open: no device is ever left bound by a Paddock that died.
//!
//! Invariant: one image is never attached to two loop devices at once while a filesystem
//! of it is mounted — callers look for the device already backed by the image
//! ([`find_loop`]) before attaching a new one, under their own lock, because two ext4
//! mounts of one image through two devices would corrupt it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// linux/loop.h
const LOOP_SET_FD: libc::Ioctl = 0x4C00;
const LOOP_SET_STATUS64: libc::Ioctl = 0x4C04;
const LOOP_GET_STATUS64: libc::Ioctl = 0x4C05;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
// linux/mount.h
const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn own(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_abs(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: open with a NUL-terminated path.
    own(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
}

/// Opens `name` (one path component) in the directory `dir` without following a symlink
/// in it; `flags` are added to `O_NOFOLLOW | O_CLOEXEC`, `mode` is used with `O_CREAT`.
pub fn open_at(dir: &OwnedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    if name.to_bytes().contains(&b'/') || name.to_bytes().is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: openat on a live directory descriptor with a NUL-terminated name.
    own(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// What `fstat` says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Device of the filesystem holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Bytes allocated on disk (`st_blocks * 512`).
    pub allocated: u64,
    /// The device number of a device node.
    pub rdev: u64,
    /// Last access (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Last modification (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

impl FileStat {
    fn from(st: &libc::stat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            allocated: (st.st_blocks as u64).saturating_mul(512),
            rdev: st.st_rdev,
            atime: (st.st_atime, st.st_atime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// `fstat(fd)`.
pub fn stat_fd(fd: &OwnedFd) -> io::Result<FileStat> {
    // SAFETY: an all-zero stat is valid to be filled in; a live descriptor.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd.as_raw_fd(), &mut st))?;
        Ok(FileStat::from(&st))
    }
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdir_at(dir: &OwnedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: mkdirat on a live directory descriptor with a NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `renameat2(dir, from, dir, to, RENAME_NOREPLACE)`: never replaces an existing `to`.
pub fn rename_noreplace_at(dir: &OwnedFd, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: renameat2 within one live directory descriptor, NUL-terminated names.
    check(unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
    .map(drop)
}

/// `renameat(dir, from, dir, to)`: replaces `to` (a file) atomically.
pub fn rename_at(dir: &OwnedFd, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: renameat within one live directory descriptor, NUL-terminated names.
    check(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
        .map(drop)
}

/// `unlinkat(dir, name, 0)` or, with `dir_entry`, `AT_REMOVEDIR`.
pub fn unlink_at(dir: &OwnedFd, name: &CStr, dir_entry: bool) -> io::Result<()> {
    let flags = if dir_entry { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: unlinkat on a live directory descriptor with a NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `fchown(fd, uid, gid)` and `fchmod(fd, mode)` (permission bits only).
pub fn set_owner_mode(fd: &OwnedFd, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: fchown and fchmod on a live descriptor.
    unsafe {
        check(libc::fchown(fd.as_raw_fd(), uid, gid))?;
        check(libc::fchmod(
            fd.as_raw_fd(),
            (mode & 0o7777) as libc::mode_t,
        ))?;
    }
    Ok(())
}

/// `syncfs(fd)`: writes out the whole filesystem holding `fd`.
pub fn syncfs(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: syncfs on a live descriptor.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// How a [`flock`] is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// `LOCK_SH`.
    Shared,
    /// `LOCK_EX`.
    Exclusive,
    /// `LOCK_UN`.
    Unlock,
}

/// `flock(fd, …)`; with `wait` false a lock held by another open file description makes
/// it return `Ok(false)` instead of waiting. Converting a lock is not atomic (the kernel
/// drops the old one first): callers convert only under a lock of their own.
pub fn flock(fd: &OwnedFd, lock: Lock, wait: bool) -> io::Result<bool> {
    let mut op = match lock {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
        Lock::Unlock => libc::LOCK_UN,
    };
    if !wait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a live descriptor.
        match check(unsafe { libc::flock(fd.as_raw_fd(), op) }) {
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A bound loop device, open. Closing the last descriptor of a device that is not
/// mounted detaches it (`LO_FLAGS_AUTOCLEAR`).
#[derive(Debug)]
pub struct LoopDevice {
    fd: OwnedFd,
    number: u32,
}

impl LoopDevice {
    /// `/dev/loop{n}`.
    pub fn path(&self) -> String {
        format!("/dev/loop{}", self.number)
    }

    /// Its number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Its device number: `st_dev` of every file of a filesystem mounted from it.
    pub fn rdev(&self) -> io::Result<u64> {
        stat_fd(&self.fd).map(|s| s.rdev)
    }

    /// (`st_dev`, `st_ino`) of the file backing it.
    pub fn backing(&self) -> io::Result<(u64, u64)> {
        status(&self.fd).map(|i| (i.lo_device, i.lo_inode))
    }
}

fn status(fd: &OwnedFd) -> io::Result<LoopInfo64> {
    // SAFETY: an all-zero loop_info64 is valid; the kernel fills it in.
    unsafe {
        let mut info: LoopInfo64 = std::mem::zeroed();
        check(libc::ioctl(
            fd.as_raw_fd(),
            LOOP_GET_STATUS64,
            &mut info as *mut LoopInfo64,
        ))?;
        Ok(info)
    }
}

fn open_loop(n: u32) -> io::Result<OwnedFd> {
    open_abs(&cstr(&format!("/dev/loop{n}"))?, libc::O_RDWR)
}

/// Whether loop devices can be handed out here (`/dev/loop-control` opens).
pub fn loop_control_available() -> io::Result<()> {
    open_abs(c"/dev/loop-control", libc::O_RDWR).map(drop)
}

/// Attaches a free loop device to the open file `backing` (read-write, autoclear). A
/// device another process took between `LOOP_CTL_GET_FREE` and the configure is skipped.
pub fn attach_loop(backing: &OwnedFd) -> io::Result<LoopDevice> {
    let ctl = open_abs(c"/dev/loop-control", libc::O_RDWR)?;
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..64 {
        // SAFETY: an ioctl without argument on the loop control descriptor.
        let n = check(unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) })? as u32;
        let dev = match open_loop(n) {
            Ok(d) => d,
            // Removed again by someone else before we opened it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                last = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        // SAFETY: zeroed loop_config is valid; the fields set are plain integers.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads a loop_config we own for the duration of the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok(LoopDevice { fd: dev, number: n });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EBUSY) => last = e,
            // Before Linux 5.8: bind, then set autoclear.
            Some(libc::EINVAL) | Some(libc::ENOTTY) => {
                // SAFETY: LOOP_SET_FD takes the backing descriptor as its argument.
                let r = unsafe {
                    libc::ioctl(
                        dev.as_raw_fd(),
                        LOOP_SET_FD,
                        backing.as_raw_fd() as libc::c_ulong,
                    )
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        last = e;
                        continue;
                    }
                    return Err(e);
                }
                // SAFETY: as above, a zeroed loop_info64 with the flags set.
                let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
                info.lo_flags = LO_FLAGS_AUTOCLEAR;
                // SAFETY: LOOP_SET_STATUS64 reads a loop_info64 we own.
                check(unsafe {
                    libc::ioctl(
                        dev.as_raw_fd(),
                        LOOP_SET_STATUS64,
                        &info as *const LoopInfo64,
                    )
                })?;
                return Ok(LoopDevice { fd: dev, number: n });
            }
            _ => return Err(e),
        }
    }
    Err(last)
}

/// The bound loop device whose backing file is (`dev`, `ino`), if any: found through
/// `/sys/block/loop*/loop` (present only for bound devices) and `LOOP_GET_STATUS64`.
pub fn find_loop(dev: u64, ino: u64) -> io::Result<Option<LoopDevice>> {
    let dir = match std::fs::read_dir("/sys/block") {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("loop"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if !entry.path().join("loop").exists() {
            continue;
        }
        let Ok(fd) = open_loop(n) else { continue };
        match status(&fd) {
            Ok(i) if i.lo_device == dev && i.lo_inode == ino => {
                return Ok(Some(LoopDevice { fd, number: n }));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// A mount option given to [`mount_detached`].
#[derive(Debug, Clone, Copy)]
pub enum MountOption<'a> {
    /// A flag (`noinit_itable`).
    Flag(&'a str),
    /// A key with a value (`errors`, `remount-ro`).
    Value(&'a str, &'a str),
}

/// The kernel's messages about a failed filesystem context (`fsopen` log), one line each.
fn context_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        // SAFETY: read into a buffer we own.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.push(
            String::from_utf8_lossy(&buf[..n as usize])
                .trim()
                .to_owned(),
        );
    }
    out.join("; ")
}

fn with_log(fs: &OwnedFd, e: io::Error, step: &str) -> io::Error {
    let log = context_log(fs);
    if log.is_empty() {
        io::Error::new(e.kind(), format!("{step}: {e}"))
    } else {
        io::Error::new(e.kind(), format!("{step}: {e} ({log})"))
    }
}

/// Whether this kernel can create a filesystem of type `fstype` through `fsopen` (the new
/// mount API, Linux 5.2+, and the filesystem built in or loadable).
pub fn fs_available(fstype: &str) -> io::Result<()> {
    let t = cstr(fstype)?;
    // SAFETY: fsopen with a NUL-terminated type name.
    own(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) as libc::c_int })
        .map(drop)
}

/// Creates a `fstype` filesystem from the block device `source` and returns it as a
/// detached mount (`fsopen` … `fsmount`, `nosuid,nodev`), attached nowhere yet: files can
/// be made in it through the descriptor, and [`attach_mount`] puts it onto a directory.
/// Closing the descriptor of a mount never attached unmounts it.
pub fn mount_detached(
    fstype: &str,
    source: &str,
    options: &[MountOption<'_>],
) -> io::Result<OwnedFd> {
    let t = cstr(fstype)?;
    // SAFETY: fsopen with a NUL-terminated type name.
    let fs =
        own(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) as libc::c_int })?;
    let set = |cmd: u32, key: Option<&CStr>, value: Option<&CStr>| -> io::Result<()> {
        // SAFETY: fsconfig on the live context with NUL-terminated key and value (or null
        // where the command takes none).
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key.map_or(std::ptr::null(), CStr::as_ptr),
                value.map_or(std::ptr::null(), CStr::as_ptr),
                0,
            ) as libc::c_int
        })
        .map(drop)
    };
    let src = cstr(source)?;
    set(FSCONFIG_SET_STRING, Some(c"source"), Some(&src))
        .map_err(|e| with_log(&fs, e, "source"))?;
    for o in options {
        match o {
            MountOption::Flag(k) => {
                let k = cstr(k)?;
                set(FSCONFIG_SET_FLAG, Some(&k), None)
            }
            MountOption::Value(k, v) => {
                let (k, v) = (cstr(k)?, cstr(v)?);
                set(FSCONFIG_SET_STRING, Some(&k), Some(&v))
            }
        }
        .map_err(|e| with_log(&fs, e, "mount option"))?;
    }
    set(FSCONFIG_CMD_CREATE, None, None).map_err(|e| with_log(&fs, e, "create"))?;
    // SAFETY: fsmount on the created context.
    own(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        ) as libc::c_int
    })
    .map_err(|e| with_log(&fs, e, "fsmount"))
}

/// Attaches the detached mount `mnt` onto the directory `target` (a descriptor: the path
/// it was opened by is never resolved again).
pub fn attach_mount(mnt: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    // SAFETY: move_mount between two live descriptors with empty paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        ) as libc::c_int
    })
    .map(drop)
}

/// Detaches the mount whose root `root` is (opened after the mount, so it names the mount
/// and not the directory beneath) from the host's tree (`MNT_DETACH`): jails that bound it
/// keep it until they end, and its loop device detaches after the last of them.
pub fn detach_mount(root: &OwnedFd) -> io::Result<()> {
    let p = cstr(&format!("/proc/self/fd/{}", root.as_raw_fd()))?;
    // SAFETY: umount2 with a NUL-terminated path naming our own descriptor.
    check(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// `fstatvfs(fd)`: (fragment size, total fragments, fragments free to unprivileged users).
pub fn fs_space(fd: &OwnedFd) -> io::Result<(u64, u64, u64)> {
    // SAFETY: an all-zero statvfs is valid to be filled in; a live descriptor.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        check(libc::fstatvfs(fd.as_raw_fd(), &mut s))?;
        Ok((s.f_frsize, s.f_blocks, s.f_bavail))
    }
}

/// Runs `f` when the process exits normally (returns from `main` or calls `exit`, as a
/// test binary does), after `main`'s own values were dropped or leaked: the last chance to
/// undo host state nothing else will (mounts of images whose sandboxes were never dropped).
/// Not run on a kill by signal.
pub fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: registers a plain function pointer; the C library calls it at exit.
    if unsafe { libc::atexit(f) } != 0 {
        return Err(io::Error::other("atexit refused another handler"));
    }
    Ok(())
}

/// The descriptor as a path another process can open (`/proc/{pid}/fd/{fd}`), for tools
/// such as `mkfs.ext4` that take a path: the file it names is the one this descriptor
/// holds, whatever happens to the path it was opened by.
pub fn fd_path(fd: &OwnedFd) -> String {
    fd_path_raw(fd.as_raw_fd())
}

fn fd_path_raw(fd: RawFd) -> String {
    format!("/proc/{}/fd/{fd}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        crate::process::euid() == 0
    }

    #[test]
    fn flock_excludes_other_descriptions_and_not_waiting_says_so() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("f");
        std::fs::write(&p, "").expect("write");
        let a: OwnedFd = std::fs::File::open(&p).expect("open").into();
        let b: OwnedFd = std::fs::File::open(&p).expect("open").into();
        assert!(flock(&a, Lock::Shared, false).expect("sh"));
        assert!(flock(&b, Lock::Shared, false).expect("sh"));
        assert!(!flock(&b, Lock::Exclusive, false).expect("ex while a holds sh"));
        assert!(flock(&a, Lock::Unlock, false).expect("un"));
        assert!(flock(&b, Lock::Exclusive, false).expect("ex alone"));
        assert!(!flock(&a, Lock::Shared, false).expect("sh while b holds ex"));
    }

    #[test]
    fn open_at_refuses_symlinks_and_paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/etc", tmp.path().join("l")).expect("symlink");
        let d: OwnedFd = std::fs::File::open(tmp.path()).expect("open").into();
        let dir = libc::O_RDONLY | libc::O_DIRECTORY;
        let e = open_at(&d, c"l", dir, 0).expect_err("a symlink is refused");
        assert!(
            matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
            "{e}"
        );
        assert_eq!(
            open_at(&d, c"a/b", dir, 0)
                .expect_err("paths are refused")
                .raw_os_error(),
            Some(libc::EINVAL)
        );
    }

    /// A loop device over a small ext4 image: attached, found again by its backing file,
    /// mounted detached and attached onto a directory, full at its size, detached again.
    #[test]
    fn loop_ext4_mount_cycle() {
        if !root() || loop_control_available().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root with loop devices"
            );
            eprintln!("SKIPPED: needs root and /dev/loop-control");
            return;
        }
        let Some(mkfs) = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            assert!(std::env::var_os("CI").is_none(), "CI installs e2fsprogs");
            eprintln!("SKIPPED: no mkfs.ext4");
            return;
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("img");
        let f = std::fs::File::create(&img).expect("create");
        f.set_len(8 << 20).expect("size");
        let st = std::process::Command::new(mkfs)
            .args(["-q", "-F", "-m", "0"])
            .arg(&img)
            .status()
            .expect("mkfs");
        assert!(st.success());
        let backing: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .expect("open")
            .into();
        let id = stat_fd(&backing).expect("stat");
        let dev = attach_loop(&backing).expect("attach");
        assert_eq!(dev.backing().expect("status"), (id.dev, id.ino));
        let again = find_loop(id.dev, id.ino)
            .expect("find")
            .expect("the bound device is found");
        assert_eq!(again.number(), dev.number());
        let mnt = mount_detached(
            "ext4",
            &dev.path(),
            &[MountOption::Value("errors", "remount-ro")],
        )
        .expect("mount");
        drop(again);
        drop(dev);
        let target_dir = tmp.path().join("mnt");
        std::fs::create_dir(&target_dir).expect("mkdir");
        let target: OwnedFd = std::fs::File::open(&target_dir).expect("open").into();
        attach_mount(&mnt, &target).expect("attach mount");
        let top: OwnedFd = std::fs::File::open(&target_dir).expect("open").into();
        let rdev = stat_fd(&top).expect("stat").dev;
        assert_ne!(
            rdev,
            stat_fd(&target).expect("stat").dev,
            "a new filesystem"
        );
        let mut f = std::fs::File::create(target_dir.join("big")).expect("create");
        let chunk = vec![7u8; 1 << 20];
        let mut written = 0u64;
        let err = loop {
            match std::io::Write::write_all(&mut f, &chunk) {
                Ok(()) => written += chunk.len() as u64,
                Err(e) => break e,
            }
            assert!(written < 16 << 20, "wrote past the image's size");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        detach_mount(&top).expect("detach");
        drop(top);
        drop(mnt);
        assert!(
            std::fs::read_dir(&target_dir)
                .expect("list")
                .next()
                .is_none(),
            "the directory beneath is empty again"
        );
        // The device detaches by itself once nothing holds it.
        let gone = (0..100).any(|_| {
            if find_loop(id.dev, id.ino).expect("find").is_none() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            false
        });
        assert!(gone, "autoclear detached the loop device");
    }
}
