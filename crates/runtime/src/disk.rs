//! Per-thread disk quotas: a thread's writable data (`users/{u}/threads/{t}/user-data`,
//! `/mnt/user-data` inside) lives in an ext4 image file beside it (`user-data.img`, a
//! sparse file of `sandbox.disk_quota_bytes`), attached to a loop device and mounted by
//! host root at `user-data` for as long as a sandbox of the thread lives. A sandbox that
//! fills it gets `ENOSPC`, however it writes (its commands, or the server's file API on
//! its behalf as root: `-m 0` leaves no blocks reserved for root), and the host's
//! filesystem never holds more than the image's size for the thread.
//!
//! Why images and not project quotas: project quotas need the data directory's filesystem
//! made and mounted for them (ext4 `quota,project` + `prjquota`, or xfs `pquota`), which
//! almost no host has, and ext4 lets `CAP_SYS_RESOURCE` (the server, as root) write past a
//! project's hard limit. An image works on any filesystem the data directory is on, caps
//! every writer, and the sandbox's `/proc/self/mountinfo` shows a loop device instead of
//! the host's data path. The cost: one loop device per live sandbox, a `mkfs.ext4` (about
//! 10 ms) on a thread's first use, a few percent of the quota for the filesystem's own
//! metadata, and data that is visible on the host only while the image is mounted.
//!
//! Lifecycle. [`Disks::attach`] (when a sandbox is prepared) creates the image on the
//! thread's first use with a quota, moving data already in `user-data` into it (a thread
//! from before quotas), or mounts the existing one. A runtime keeps a thread's image
//! mounted while any sandbox of the thread lives and for a while after (the
//! [`IDLE_IMAGES_KEPT`] most recently used threads without a sandbox), so data is visible
//! on the host beside its sandbox and shortly after it is deleted, as a plain directory's
//! is; older idle images are unmounted, and every image when the runtime goes (the server
//! stops) or the process exits. Data persists in the image across sandboxes and restarts;
//! an image is grown (offline, `resize2fs`) when the quota was raised, never shrunk. While
//! an image is not mounted its data is not visible on the host (only the image file is).
//! The default quota applies in `paddock serve`, whose sandboxes belong to many tenants;
//! elsewhere (`paddock exec`, whose data must be on the host when it returns; `paddock
//! agent`, one sandbox per process; embeddings) only a configured one does, and a thread's
//! existing image is mounted either way.
//!
//! Locks. Mounting and unmounting a thread's image happen under an exclusive `flock` of
//! the thread directory; every user of a mounted image holds a shared `flock` of the image
//! file, and only the user that can turn it into an exclusive one (no one else left)
//! unmounts. Locks die with their process, so a Paddock killed with SIGKILL leaves a
//! mount the next user of the thread takes over (and [`sweep`] at start unmounts the ones
//! nobody uses). The image is never attached to a second loop device while one is bound
//! to it ([`paddock_sys::disk::find_loop`]): a jail that outlived the host's unmount still
//! holds the first.
//!
//! Crash safety. A new image is built as `user-data.img.new` and renamed into place once
//! its data is written and synced; data moved into it waits in `user-data.migrating`
//! until then, and a crash at any point leaves a state [`attach`] finishes or undoes.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use paddock_core::DataLayout;
use paddock_sys::disk::{self as kdisk, Lock, MountOption};
use paddock_sys::tree;

use crate::options::{DEFAULT_DISK_QUOTA_BYTES, DiskQuotaMode, RuntimeOptions};

/// The image file, in the thread directory.
pub const IMAGE: &str = "user-data.img";
const IMAGE_C: &CStr = c"user-data.img";
const IMAGE_NEW: &CStr = c"user-data.img.new";
const MIGRATING: &CStr = c"user-data.migrating";
const USER_DATA: &CStr = c"user-data";
/// The directories Paddock makes in `user-data`; empty ones are not data.
const OWN_DIRS: [&str; 3] = ["workspace", "uploads", "outputs"];
/// Mount options of an image: inode tables of a fresh sparse image read as zeros already,
/// so the kernel need not write them (`noinit_itable`); a corrupted image turns read-only.
const MOUNT_OPTIONS: [MountOption<'static>; 2] = [
    MountOption::Flag("noinit_itable"),
    MountOption::Value("errors", "remount-ro"),
];

/// Why a thread's disk could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A step failed on the host.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `mkfs.ext4`, `e2fsck` or `resize2fs` failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The program.
        tool: String,
        /// Its exit status and what it printed.
        message: String,
    },
    /// The data already in `user-data` is larger than the quota.
    #[error(
        "the thread's data does not fit in its disk quota of {quota} bytes; it was left as it was (raise sandbox.disk_quota_bytes)"
    )]
    DoesNotFit {
        /// The quota.
        quota: u64,
    },
    /// `user-data` has a mount that is not the thread's image.
    #[error("another filesystem is mounted on the thread's user-data directory")]
    Foreign,
    /// The thread has an image and this process cannot mount it.
    #[error("the thread's data is in a disk image, and mounting it needs {needs}")]
    CannotMount {
        /// What is missing.
        needs: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DiskError {
    let what = what.into();
    move |source| DiskError::Io { what, source }
}

/// The e2fsprogs programs an image needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `mkfs.ext4` (or `mke2fs`, then given `-t ext4`).
    pub mkfs: PathBuf,
    /// Whether `mkfs` is `mke2fs`.
    pub mke2fs: bool,
    /// `e2fsck` and `resize2fs`, to grow an image when the quota was raised.
    pub e2fsck: Option<PathBuf>,
    /// See `e2fsck`.
    pub resize2fs: Option<PathBuf>,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl Tools {
    /// The programs found in `PATH` (and the usual sbin directories).
    pub fn find() -> Option<Self> {
        let (mkfs, mke2fs) = match find_program("mkfs.ext4") {
            Some(p) => (p, false),
            None => (find_program("mke2fs")?, true),
        };
        Some(Self {
            mkfs,
            mke2fs,
            e2fsck: find_program("e2fsck"),
            resize2fs: find_program("resize2fs"),
        })
    }
}

/// What the runtime does about disk quotas, decided once when it starts.
#[derive(Debug, Clone)]
pub struct DiskQuota {
    /// The size of a new image; `None`: no new images (existing ones are still mounted).
    pub image_bytes: Option<u64>,
    /// The programs, when found.
    pub tools: Option<Tools>,
    /// The configured mode.
    pub mode: DiskQuotaMode,
    /// What is in force and why, for the log and `paddock doctor`.
    pub reason: String,
}

impl DiskQuota {
    /// No quota, for `reason`.
    pub fn off(mode: DiskQuotaMode, reason: impl Into<String>) -> Self {
        Self {
            image_bytes: None,
            tools: Tools::find(),
            mode,
            reason: reason.into(),
        }
    }

    /// Whether new threads get images.
    pub fn active(&self) -> bool {
        self.image_bytes.is_some()
    }
}

/// What [`decide`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Images of this many bytes.
    Image(u64),
    /// No quota; why.
    Off(String),
    /// Refuse to start: what is wrong and what to do.
    Refuse {
        /// What is wrong.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
}

/// Decides from the configuration, whether users' data is a gateway's (DeerFlow's state
/// root), and whether this host can make and mount images (`support`, asked only when it
/// matters). A quota set explicitly (`disk_quota_bytes`, or `disk_quota_mode: image`) is
/// enforced or refused; the default one is applied where the host can.
pub fn decide(
    mode: DiskQuotaMode,
    bytes: Option<u64>,
    gateway: bool,
    default_applies: bool,
    support: impl FnOnce() -> Result<(), String>,
) -> Decision {
    let explicit = bytes.is_some() || mode == DiskQuotaMode::Image;
    let size = bytes.unwrap_or(DEFAULT_DISK_QUOTA_BYTES);
    if mode == DiskQuotaMode::Off {
        return Decision::Off("sandbox.disk_quota_mode is off".into());
    }
    if size == 0 {
        return Decision::Off("sandbox.disk_quota_bytes is 0".into());
    }
    if !default_applies && !explicit {
        return Decision::Off(
            "no quota is configured, and the default one applies only in paddock serve (a thread's existing image is still mounted)".into(),
        );
    }
    if gateway && mode == DiskQuotaMode::Auto {
        let why = "users' data is under DeerFlow's state root (deerflow.host_base_dir), which DeerFlow's gateway reads too; \
                   an image mounted there is seen by the gateway only if it runs on this host or sees mounts made below that directory (rslave or rshared propagation)";
        return if explicit {
            Decision::Refuse {
                detail: format!("a disk quota is configured, but {why}"),
                hint: "set sandbox.disk_quota_mode: image when the gateway sees mounts made below its state root, or sandbox.disk_quota_bytes: 0",
            }
        } else {
            Decision::Off(format!(
                "no default quota: {why}; set sandbox.disk_quota_mode: image to enable it"
            ))
        };
    }
    match support() {
        Ok(()) => Decision::Image(size),
        Err(why) if explicit => Decision::Refuse {
            detail: format!("a disk quota is configured, but images cannot be used here: {why}"),
            hint: "run Paddock as root with loop devices and e2fsprogs (mkfs.ext4), or set sandbox.disk_quota_bytes: 0; `paddock doctor` shows what is missing",
        },
        Err(why) => Decision::Off(format!("the default quota cannot be enforced here: {why}")),
    }
}

/// Whether this host can make and mount images: root, the e2fsprogs programs, loop
/// devices, ext4 through the new mount API, and — with `dir` — a real image made in `dir`,
/// attached and mounted (a container may have the devices and still refuse the mount).
pub fn support(dir: Option<&Path>) -> Result<Tools, String> {
    if paddock_sys::process::euid() != 0 {
        return Err(
            "Paddock is not running as root (attaching loop devices and mounting need it)".into(),
        );
    }
    let tools = Tools::find().ok_or("mkfs.ext4 was not found (install e2fsprogs)")?;
    kdisk::loop_control_available().map_err(|e| {
        format!("/dev/loop-control: {e} (load the loop module; a container needs the loop devices)")
    })?;
    kdisk::fs_available("ext4").map_err(|e| format!("ext4 cannot be mounted: {e}"))?;
    if let Some(dir) = dir {
        probe_image(dir, &tools)
            .map_err(|e| format!("a test image could not be made and mounted: {e}"))?;
    }
    Ok(tools)
}

fn probe_image(dir: &Path, tools: &Tools) -> Result<(), DiskError> {
    std::fs::create_dir_all(dir).map_err(io_err("create the data directory"))?;
    let d = tree::open_root(dir).map_err(io_err("open the data directory"))?;
    let name = CString::new(format!(".disk-probe-{}.img", std::process::id()))
        .map_err(|_| io_err("probe name")(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let _ = kdisk::unlink_at(&d, &name, false);
    let f = kdisk::open_at(
        &d,
        &name,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map_err(io_err("create a test image"))?;
    let r = (|| {
        std::fs::File::from(f.try_clone().map_err(io_err("dup"))?)
            .set_len(crate::options::MIN_DISK_QUOTA_BYTES)
            .map_err(io_err("size the test image"))?;
        mkfs(tools, &f)?;
        let dev = kdisk::attach_loop(&f).map_err(io_err("attach a loop device"))?;
        kdisk::mount_detached("ext4", &dev.path(), &MOUNT_OPTIONS)
            .map_err(io_err("mount the test image"))?;
        Ok(())
    })();
    let _ = kdisk::unlink_at(&d, &name, false);
    r
}

/// Resolves the quota of a runtime over `layout`; `Err` is a refusal to start (what is
/// wrong, what to do). `probe_dir`: where to try a real image (`None`: the cheap checks
/// only, as a one-shot `paddock exec` does); `default_applies`: whether an unset
/// `disk_quota_bytes` means the default quota (`paddock serve`) or none.
pub fn resolve(
    opts: &RuntimeOptions,
    layout: &DataLayout,
    probe_dir: Option<&Path>,
    default_applies: bool,
) -> Result<DiskQuota, (String, &'static str)> {
    let mut tools = None;
    let decision = decide(
        opts.disk_quota_mode,
        opts.disk_quota_bytes,
        layout.gateway_root().is_some(),
        default_applies,
        || support(probe_dir).map(|t| tools = Some(t)),
    );
    match decision {
        Decision::Image(bytes) => Ok(DiskQuota {
            image_bytes: Some(bytes),
            tools,
            mode: opts.disk_quota_mode,
            reason: format!(
                "image: each thread's /mnt/user-data is an ext4 image of {bytes} bytes on a loop device"
            ),
        }),
        Decision::Off(why) => Ok(DiskQuota::off(opts.disk_quota_mode, format!("off: {why}"))),
        Decision::Refuse { detail, hint } => Err((detail, hint)),
    }
}

fn run_tool(program: &Path, args: &[&OsStr]) -> Result<(), DiskError> {
    let name = program
        .file_name()
        .map_or_else(|| "tool".into(), |n| n.to_string_lossy().into_owned());
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(io_err(format!("run {name}")))?;
    // e2fsck: 1 is "errors corrected", not a failure.
    let ok = out.status.success() || (name == "e2fsck" && out.status.code() == Some(1));
    if ok {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    text.truncate(2000);
    Err(DiskError::Tool {
        tool: name,
        message: format!("{} ({text})", out.status),
    })
}

/// Formats the open image file `f` as ext4: no blocks reserved for root (the server writes
/// as root and must stay within the quota), no resize inode (its blocks would be written
/// out at once), inode tables and journal left sparse.
fn mkfs(tools: &Tools, f: &OwnedFd) -> Result<(), DiskError> {
    let path = kdisk::fd_path(f);
    let mut args: Vec<&OsStr> = Vec::new();
    if tools.mke2fs {
        args.extend(["-t", "ext4"].map(OsStr::new));
    }
    args.extend(
        [
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            "^resize_inode",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            "-L",
            "paddock-data",
        ]
        .map(OsStr::new),
    );
    args.push(OsStr::new(&path));
    run_tool(&tools.mkfs, &args)
}

/// Holds an exclusive lock of the thread directory until dropped.
struct DirLock<'a>(&'a OwnedFd);

impl<'a> DirLock<'a> {
    fn exclusive(dir: &'a OwnedFd) -> Result<Self, DiskError> {
        kdisk::flock(dir, Lock::Exclusive, true).map_err(io_err("lock the thread directory"))?;
        Ok(Self(dir))
    }

    fn try_exclusive(dir: &'a OwnedFd) -> Option<Self> {
        matches!(kdisk::flock(dir, Lock::Exclusive, false), Ok(true)).then_some(Self(dir))
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        let _ = kdisk::flock(self.0, Lock::Unlock, false);
    }
}

fn exists_at(dir: &OwnedFd, name: &CStr) -> io::Result<bool> {
    match tree::stat_at(dir, OsStr::from_bytes(name.to_bytes())) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn open_dir(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    tree::open_dir_at(dir, OsStr::from_bytes(name.to_bytes()))
}

/// Whether `user-data` holds nothing but Paddock's own empty directories.
fn holds_no_data(ud: &OwnedFd) -> io::Result<bool> {
    for name in tree::dir_names(ud)? {
        let own = name.to_str().is_some_and(|n| OWN_DIRS.contains(&n));
        if !own {
            return Ok(false);
        }
        match tree::open_dir_at(ud, &name) {
            Ok(d) => {
                if !tree::dir_names(&d)?.is_empty() {
                    return Ok(false);
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Opens `user-data` of the thread, creating it (mode 0755, root's) when missing.
fn user_data_dir(tdir: &OwnedFd) -> Result<OwnedFd, DiskError> {
    match kdisk::mkdir_at(tdir, USER_DATA, 0o755) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            return Err(io_err("create user-data")(e));
        }
        _ => {}
    }
    open_dir(tdir, USER_DATA).map_err(io_err("open user-data"))
}

/// Moves `user-data` aside to `to` and makes a fresh, empty one with its owner and mode.
fn replace_user_data(tdir: &OwnedFd, ud: OwnedFd, to: &CStr) -> Result<OwnedFd, DiskError> {
    let st = kdisk::stat_fd(&ud).map_err(io_err("inspect user-data"))?;
    drop(ud);
    kdisk::rename_noreplace_at(tdir, USER_DATA, to).map_err(io_err("move user-data aside"))?;
    kdisk::mkdir_at(tdir, USER_DATA, 0o700).map_err(io_err("create user-data"))?;
    let ud = open_dir(tdir, USER_DATA).map_err(io_err("open user-data"))?;
    kdisk::set_owner_mode(&ud, st.uid, st.gid, st.mode).map_err(io_err("set user-data's owner"))?;
    Ok(ud)
}

/// How many images of threads without a sandbox a runtime keeps mounted (the most
/// recently used): their data stays visible on the host for a while after the sandbox is
/// deleted or reaped, as a plain directory's would, and the mounts (a loop device and a
/// journal thread each) stay bounded however many threads a server serves.
pub const IDLE_IMAGES_KEPT: usize = 64;

/// One mounted image this process holds: the thread directory, and the image opened for
/// the shared "in use" lock. Dropping it only closes them; [`Held::release`] unmounts.
#[derive(Debug)]
struct Held {
    thread: OwnedFd,
    lock: OwnedFd,
    /// `st_dev` of the mounted filesystem.
    dev: u64,
}

/// Every image this process holds and has not released: a process that exits without
/// dropping its runtime (a test binary, a server whose tasks still hold sandboxes when it
/// returns) releases them at exit, so no mount outlives a Paddock that ended normally. One
/// killed by a signal leaves its mounts to [`sweep`] and the thread's next user.
static LIVE: Mutex<Vec<Arc<Held>>> = Mutex::new(Vec::new());
static EXIT_HOOK: Once = Once::new();

extern "C" fn release_at_exit() {
    // Another thread may hold the list at exit: then leave the mounts to `sweep`.
    let Ok(mut live) = LIVE.try_lock() else {
        return;
    };
    for h in live.drain(..) {
        h.unmount_if_unused();
    }
}

fn live() -> std::sync::MutexGuard<'static, Vec<Arc<Held>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The keeper: a small shell process started with the first image this process mounts.
/// It reads the directories of the threads whose images this process mounts from a pipe
/// only this process can write; when the pipe closes — this process is gone, however it
/// ended, SIGKILL included — it unmounts each of those images that no one else holds
/// (the same two `flock`s as [`release`]) and exits. So a killed Paddock's mounts go
/// within moments even when no Paddock ever uses its data directory again.
const KEEPER_SCRIPT: &str = r#"dirs=''
while IFS= read -r d; do dirs="$dirs
$d"; done
printf '%s
' "$dirs" | while IFS= read -r d; do
  [ -n "$d" ] && [ -f "$d/user-data.img" ] || continue
  [ "$(stat -c %d "$d")" != "$(stat -c %d "$d/user-data")" ] || continue
  flock -n -x "$d" flock -n -x "$d/user-data.img" umount -l "$d/user-data"
done 2>/dev/null
exit 0"#;

struct Keeper {
    stdin: std::process::ChildStdin,
    pid: u32,
}

static KEEPER: Mutex<Option<Keeper>> = Mutex::new(None);

/// The keeper's pid, once one was started.
pub fn keeper_pid() -> Option<u32> {
    KEEPER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|k| k.pid)
}

/// Tells the keeper about a thread whose image this process mounted (starting it first).
fn tell_keeper(thread_dir: &Path) {
    use std::io::Write;
    let mut k = KEEPER.lock().unwrap_or_else(|p| p.into_inner());
    if k.is_none() {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", KEEPER_SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(mut c) => {
                if let Some(stdin) = c.stdin.take() {
                    *k = Some(Keeper { stdin, pid: c.id() });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start the disk image keeper: images of a Paddock killed by a signal stay mounted until its data directory is used again");
                return;
            }
        }
    }
    let Some(keeper) = k.as_mut() else {
        return;
    };
    let mut line = thread_dir.as_os_str().as_bytes().to_vec();
    if line.contains(&b'\n') {
        return;
    }
    line.push(b'\n');
    if let Err(e) = keeper.stdin.write_all(&line) {
        tracing::warn!(error = %e, "the disk image keeper is gone");
        *k = None;
    }
}

impl Held {
    fn track(self, thread_dir: &Path) -> Arc<Self> {
        EXIT_HOOK.call_once(|| {
            if let Err(e) = kdisk::at_exit(release_at_exit) {
                tracing::warn!(error = %e, "disk images still held at exit are not unmounted");
            }
        });
        tell_keeper(thread_dir);
        let h = Arc::new(self);
        live().push(h.clone());
        h
    }

    /// Stops holding the image, unmounting it when no one else (another runtime, another
    /// Paddock) uses it.
    fn release(self: &Arc<Self>) {
        live().retain(|h| !Arc::ptr_eq(h, self));
        self.unmount_if_unused();
    }

    fn unmount_if_unused(&self) {
        // Never wait here: a thread directory locked right now belongs to someone
        // attaching the image, who will use the mount.
        let Some(_g) = DirLock::try_exclusive(&self.thread) else {
            return;
        };
        match release(&self.thread, &self.lock, self.dev) {
            Ok(true) => tracing::debug!("unmounted a thread's disk image"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not unmount a thread's disk image"),
        }
    }

    /// Whether the image is still what is mounted at `user-data`.
    fn still_mounted(&self) -> bool {
        open_dir(&self.thread, USER_DATA)
            .and_then(|d| kdisk::stat_fd(&d))
            .is_ok_and(|st| st.dev == self.dev)
    }
}

/// Unmounts the thread's image when no one else uses it (the caller holds the thread
/// directory's lock and, through `lock`, a shared lock of the image); true when it did.
fn release(tdir: &OwnedFd, lock: &OwnedFd, dev: u64) -> io::Result<bool> {
    if !kdisk::flock(lock, Lock::Exclusive, false)? {
        return Ok(false);
    }
    let ud = open_dir(tdir, USER_DATA)?;
    if kdisk::stat_fd(&ud)?.dev != dev {
        return Ok(false);
    }
    kdisk::detach_mount(&ud)?;
    Ok(true)
}

/// A thread directory, by its (`st_dev`, `st_ino`).
type ThreadKey = (u64, u64);

struct Entry {
    held: Arc<Held>,
    /// Sandboxes using it now.
    users: usize,
    /// When the last of them went (a tick of [`Registry`]).
    idle_since: u64,
}

#[derive(Default)]
struct Registry {
    entries: std::collections::HashMap<ThreadKey, Entry>,
    tick: u64,
}

/// The images one runtime has mounted: each thread's once, shared by its sandboxes, kept
/// mounted after the last of them goes (up to [`IDLE_IMAGES_KEPT`], least recently used
/// unmounted first), and all released when the runtime goes.
#[derive(Default)]
pub struct Disks {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Disks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disks").finish_non_exhaustive()
    }
}

/// A sandbox's use of its thread's mounted image.
pub struct Attached {
    registry: std::sync::Weak<Mutex<Registry>>,
    key: ThreadKey,
    dev: u64,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached").field("dev", &self.dev).finish()
    }
}

impl Attached {
    /// `st_dev` of the thread's mounted filesystem.
    pub fn dev(&self) -> u64 {
        self.dev
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let Some(reg) = self.registry.upgrade() else {
            return;
        };
        let evicted = {
            let mut r = reg.lock().unwrap_or_else(|p| p.into_inner());
            r.tick += 1;
            let tick = r.tick;
            if let Some(e) = r.entries.get_mut(&self.key) {
                e.users = e.users.saturating_sub(1);
                if e.users == 0 {
                    e.idle_since = tick;
                }
            }
            let mut idle: Vec<(u64, ThreadKey)> = r
                .entries
                .iter()
                .filter(|(_, e)| e.users == 0)
                .map(|(k, e)| (e.idle_since, *k))
                .collect();
            let excess = idle.len().saturating_sub(IDLE_IMAGES_KEPT);
            idle.sort_unstable();
            idle.into_iter()
                .take(excess)
                .filter_map(|(_, k)| r.entries.remove(&k))
                .collect::<Vec<_>>()
        };
        for e in evicted {
            e.held.release();
        }
    }
}

impl Disks {
    /// Sets up the disk of the thread whose directory is `thread_dir` (which exists): its
    /// image mounted at `user-data` (created first when `quota` makes images), or `None`
    /// when the thread's data is a plain directory.
    pub fn attach(
        &self,
        quota: &DiskQuota,
        thread_dir: &Path,
    ) -> Result<Option<Attached>, DiskError> {
        let tdir = tree::open_root(thread_dir).map_err(io_err("open the thread directory"))?;
        let st = kdisk::stat_fd(&tdir).map_err(io_err("inspect the thread directory"))?;
        let key = (st.dev, st.ino);
        let handle = |dev| Attached {
            registry: Arc::downgrade(&self.registry),
            key,
            dev,
        };
        {
            let mut r = self.lock();
            if let Some(e) = r.entries.get_mut(&key) {
                if e.held.still_mounted() {
                    e.users += 1;
                    return Ok(Some(handle(e.held.dev)));
                }
                // Unmounted behind our back: start again.
                if let Some(e) = r.entries.remove(&key) {
                    live().retain(|h| !Arc::ptr_eq(h, &e.held));
                }
            }
        }
        let Some(held) = attach(quota, tdir)? else {
            return Ok(None);
        };
        let mut r = self.lock();
        let e = r.entries.entry(key).or_insert_with(|| Entry {
            held: held.track(thread_dir),
            users: 0,
            idle_since: 0,
        });
        e.users += 1;
        Ok(Some(handle(e.held.dev)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Releases every image (the runtime is going): each is unmounted unless another
    /// runtime or Paddock still uses it.
    pub fn release_all(&self) {
        let entries: Vec<Entry> = self.lock().entries.drain().map(|(_, e)| e).collect();
        for e in entries {
            e.held.release();
        }
    }
}

/// Mounts the thread's image (creating it first when `quota` makes images), under the
/// thread directory's lock, and takes the shared "in use" lock; `None`: the thread's data
/// is a plain directory.
fn attach(quota: &DiskQuota, tdir: OwnedFd) -> Result<Option<Held>, DiskError> {
    let guard = DirLock::exclusive(&tdir)?;
    let image = match kdisk::open_at(&tdir, IMAGE_C, libc::O_RDWR, 0) {
        Ok(f) => Some(f),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(io_err("open the thread's disk image")(e)),
    };
    let (image, dev) = match image {
        Some(img) => {
            let dev = mount_existing(quota, &tdir, &img)?;
            (img, dev)
        }
        None => {
            if let Err(e) = kdisk::unlink_at(&tdir, IMAGE_NEW, false)
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                return Err(io_err("remove an unfinished disk image")(e));
            }
            let Some(bytes) = quota.image_bytes else {
                undo_migration(&tdir)?;
                return Ok(None);
            };
            let tools = quota.tools.as_ref().ok_or_else(|| DiskError::CannotMount {
                needs: "mkfs.ext4 (e2fsprogs)".into(),
            })?;
            create(&tdir, bytes, tools)?
        }
    };
    drop(image);
    let lock = kdisk::open_at(&tdir, IMAGE_C, libc::O_RDONLY, 0)
        .map_err(io_err("open the thread's disk image"))?;
    kdisk::flock(&lock, Lock::Shared, true).map_err(io_err("lock the thread's disk image"))?;
    drop(guard);
    Ok(Some(Held {
        thread: tdir,
        lock,
        dev,
    }))
}

/// A migration interrupted while quotas were turned off: the data goes back to
/// `user-data` (when nothing was written there since).
fn undo_migration(tdir: &OwnedFd) -> Result<(), DiskError> {
    if !exists_at(tdir, MIGRATING).map_err(io_err("inspect the thread directory"))? {
        return Ok(());
    }
    let ud = user_data_dir(tdir)?;
    if !holds_no_data(&ud).map_err(io_err("inspect user-data"))? {
        tracing::warn!(
            "a thread has data both in user-data and in user-data.migrating (an interrupted move into a disk image); both are kept"
        );
        return Ok(());
    }
    drop(ud);
    tree::remove_tree_at(tdir, OsStr::from_bytes(USER_DATA.to_bytes()))
        .map_err(io_err("remove the empty user-data"))?;
    kdisk::rename_noreplace_at(tdir, MIGRATING, USER_DATA)
        .map_err(io_err("put the thread's data back"))
}

/// Makes the thread's image (moving data already in `user-data` into it) and mounts it.
fn create(tdir: &OwnedFd, bytes: u64, tools: &Tools) -> Result<(OwnedFd, u64), DiskError> {
    let tdev = kdisk::stat_fd(tdir)
        .map_err(io_err("inspect the thread directory"))?
        .dev;
    let mut ud = user_data_dir(tdir)?;
    let st = kdisk::stat_fd(&ud).map_err(io_err("inspect user-data"))?;
    if st.dev != tdev {
        return Err(DiskError::Foreign);
    }
    // Data already there (a thread from before quotas) moves into the image; it waits in
    // user-data.migrating until the image is complete.
    let source = if exists_at(tdir, MIGRATING).map_err(io_err("inspect the thread directory"))? {
        Some(open_dir(tdir, MIGRATING).map_err(io_err("open user-data.migrating"))?)
    } else if !holds_no_data(&ud).map_err(io_err("inspect user-data"))? {
        ud = replace_user_data(tdir, ud, MIGRATING)?;
        Some(open_dir(tdir, MIGRATING).map_err(io_err("open user-data.migrating"))?)
    } else {
        None
    };
    let img = kdisk::open_at(
        tdir,
        IMAGE_NEW,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map_err(io_err("create the disk image"))?;
    let built = build(&img, bytes, tools, &st, source.as_ref());
    let mnt = match built {
        Ok(m) => m,
        Err(e) => {
            let _ = kdisk::unlink_at(tdir, IMAGE_NEW, false);
            if source.is_some() {
                drop(ud);
                // Put the data back where it was.
                if let Err(e) = undo_migration(tdir) {
                    tracing::error!(error = %e, "could not move a thread's data back after a failed move into its disk image");
                }
            }
            return Err(e);
        }
    };
    kdisk::rename_at(tdir, IMAGE_NEW, IMAGE_C).map_err(io_err("name the disk image"))?;
    std::fs::File::from(tdir.try_clone().map_err(io_err("dup"))?)
        .sync_all()
        .map_err(io_err("sync the thread directory"))?;
    if source.is_some() {
        drop(source);
        if let Err(e) = tree::remove_tree_at(tdir, OsStr::from_bytes(MIGRATING.to_bytes())) {
            // Removed by the next attach: the image is complete.
            tracing::warn!(error = %e, "could not remove a thread's data after moving it into its disk image");
        }
    }
    kdisk::attach_mount(&mnt, &ud).map_err(io_err("mount the disk image"))?;
    let dev = mounted_dev(tdir)?;
    Ok((img, dev))
}

/// Sizes and formats the image, mounts it detached, gives its root the owner and mode of
/// `user-data` (`st`), copies `source` in and syncs it: the mount, ready to attach.
fn build(
    img: &OwnedFd,
    bytes: u64,
    tools: &Tools,
    st: &kdisk::FileStat,
    source: Option<&OwnedFd>,
) -> Result<OwnedFd, DiskError> {
    std::fs::File::from(img.try_clone().map_err(io_err("dup"))?)
        .set_len(bytes)
        .map_err(io_err("size the disk image"))?;
    mkfs(tools, img)?;
    let dev = kdisk::attach_loop(img).map_err(io_err("attach a loop device"))?;
    let mnt = kdisk::mount_detached("ext4", &dev.path(), &MOUNT_OPTIONS)
        .map_err(io_err("mount the disk image"))?;
    drop(dev);
    let root = kdisk::open_at(&mnt, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(io_err("open the disk image"))?;
    match kdisk::unlink_at(&root, c"lost+found", true) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
            return Err(io_err("remove lost+found")(e));
        }
        _ => {}
    }
    kdisk::set_owner_mode(&root, st.uid, st.gid, st.mode)
        .map_err(io_err("set the image's owner"))?;
    if let Some(src) = source {
        let names = tree::dir_names(src).map_err(io_err("list the thread's data"))?;
        for name in names {
            if let Err(e) = tree::copy_tree_at(src, &name, &root, &name) {
                return Err(if no_space(&e) {
                    DiskError::DoesNotFit { quota: bytes }
                } else {
                    io_err("move the thread's data into its disk image")(e)
                });
            }
        }
    }
    kdisk::syncfs(&root).map_err(|e| {
        if no_space(&e) {
            DiskError::DoesNotFit { quota: bytes }
        } else {
            io_err("sync the disk image")(e)
        }
    })?;
    Ok(mnt)
}

fn no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.to_string().contains("No space left on device")
}

/// `st_dev` of what is mounted at `user-data` now.
fn mounted_dev(tdir: &OwnedFd) -> Result<u64, DiskError> {
    let ud = open_dir(tdir, USER_DATA).map_err(io_err("open user-data"))?;
    Ok(kdisk::stat_fd(&ud)
        .map_err(io_err("inspect user-data"))?
        .dev)
}

/// Mounts the thread's existing image `img` at `user-data` (or finds it mounted there).
fn mount_existing(quota: &DiskQuota, tdir: &OwnedFd, img: &OwnedFd) -> Result<u64, DiskError> {
    if paddock_sys::process::euid() != 0 {
        return Err(DiskError::CannotMount {
            needs: "root (run Paddock as root)".into(),
        });
    }
    // Leftovers of a creation finished before a crash: the image is complete.
    if exists_at(tdir, MIGRATING).map_err(io_err("inspect the thread directory"))?
        && let Err(e) = tree::remove_tree_at(tdir, OsStr::from_bytes(MIGRATING.to_bytes()))
    {
        tracing::warn!(error = %e, "could not remove a thread's data already moved into its disk image");
    }
    let _ = kdisk::unlink_at(tdir, IMAGE_NEW, false);
    let id = kdisk::stat_fd(img).map_err(io_err("inspect the disk image"))?;
    let tdev = kdisk::stat_fd(tdir)
        .map_err(io_err("inspect the thread directory"))?
        .dev;
    let mut ud = user_data_dir(tdir)?;
    let udev = kdisk::stat_fd(&ud)
        .map_err(io_err("inspect user-data"))?
        .dev;
    let bound =
        kdisk::find_loop(id.dev, id.ino).map_err(io_err("look for the image's loop device"))?;
    if udev != tdev {
        // Mounted already: by another sandbox of the thread, or left by a Paddock that died.
        return match &bound {
            Some(l) if l.rdev().ok() == Some(udev) => Ok(udev),
            _ => Err(DiskError::Foreign),
        };
    }
    if !holds_no_data(&ud).map_err(io_err("inspect user-data"))? {
        // Written while the image was not mounted (by hand, or by a Paddock without root):
        // kept aside, never mixed in or lost.
        let aside = leftover_name(tdir)?;
        ud = replace_user_data(tdir, ud, &aside)?;
        tracing::warn!(
            kept = %aside.to_string_lossy(),
            "a thread's user-data directory held data beside its disk image; it was moved aside"
        );
    }
    let dev = match bound {
        Some(l) => l,
        None => {
            if let Some(bytes) = quota.image_bytes
                && bytes > id.size
            {
                grow(quota.tools.as_ref(), img, bytes);
            }
            kdisk::attach_loop(img).map_err(io_err("attach a loop device"))?
        }
    };
    let mnt = kdisk::mount_detached("ext4", &dev.path(), &MOUNT_OPTIONS)
        .map_err(io_err("mount the disk image"))?;
    drop(dev);
    kdisk::attach_mount(&mnt, &ud).map_err(io_err("mount the disk image"))?;
    if let Some(bytes) = quota.image_bytes
        && bytes < id.size
    {
        tracing::debug!(
            image = id.size,
            quota = bytes,
            "a thread's disk image is larger than the quota (images are never shrunk)"
        );
    }
    mounted_dev(tdir)
}

/// Grows an image that is not mounted anywhere to `bytes` (the quota was raised): checked,
/// extended, resized. A failure leaves it as it was, or larger with the filesystem at its
/// old size; either way it is still mounted.
fn grow(tools: Option<&Tools>, img: &OwnedFd, bytes: u64) {
    let Some((e2fsck, resize2fs)) =
        tools.and_then(|t| Some((t.e2fsck.as_ref()?, t.resize2fs.as_ref()?)))
    else {
        tracing::warn!(
            "a thread's disk image is smaller than the quota and cannot grow: e2fsck or resize2fs is missing"
        );
        return;
    };
    let path = kdisk::fd_path(img);
    let r = run_tool(
        e2fsck,
        &[OsStr::new("-f"), OsStr::new("-p"), OsStr::new(&path)],
    )
    .and_then(|()| {
        std::fs::File::from(img.try_clone().map_err(io_err("dup"))?)
            .set_len(bytes)
            .map_err(io_err("extend the disk image"))
    })
    .and_then(|()| run_tool(resize2fs, &[OsStr::new(&path)]));
    match r {
        Ok(()) => tracing::info!(bytes, "grew a thread's disk image to the quota"),
        Err(e) => tracing::warn!(error = %e, "could not grow a thread's disk image to the quota"),
    }
}

fn leftover_name(tdir: &OwnedFd) -> Result<CString, DiskError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for n in 0..1000 {
        let name = if n == 0 {
            format!("user-data.leftover-{now}")
        } else {
            format!("user-data.leftover-{now}-{n}")
        };
        let c = CString::new(name)
            .map_err(|_| io_err("name")(io::Error::from_raw_os_error(libc::EINVAL)))?;
        if !exists_at(tdir, &c).map_err(io_err("inspect the thread directory"))? {
            return Ok(c);
        }
    }
    Err(io_err("name the data kept aside")(
        io::Error::from_raw_os_error(libc::EEXIST),
    ))
}

/// Undoes the escaping of a `/proc/self/mountinfo` field (`\040` for a space, …).
pub fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Thread directories (`{base}/users/{u}/threads/{t}`) whose `user-data` is a mount point
/// in `mountinfo`.
pub fn mounted_threads(mountinfo: &str, base: &Path) -> Vec<PathBuf> {
    let users = base.join("users");
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(f))))
        .filter(|p| p.file_name() == Some(OsStr::new("user-data")))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .filter(|t| {
            t.strip_prefix(&users).is_ok_and(|rel| {
                let parts: Vec<_> = rel.components().collect();
                parts.len() == 3 && parts[1].as_os_str() == "threads"
            })
        })
        .collect()
}

/// Unmounts thread images under `layout` that nobody uses (left mounted by a Paddock that
/// was killed); returns how many.
pub fn sweep(layout: &DataLayout) -> usize {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let base = layout.gateway_root().unwrap_or(layout.root());
    let Ok(base) = std::fs::canonicalize(base) else {
        return 0;
    };
    let mut n = 0;
    for t in mounted_threads(&mountinfo, &base) {
        let r = (|| -> io::Result<bool> {
            let tdir = tree::open_root(&t)?;
            let Some(_g) = DirLock::try_exclusive(&tdir) else {
                return Ok(false);
            };
            let img = kdisk::open_at(&tdir, IMAGE_C, libc::O_RDONLY, 0)?;
            let id = kdisk::stat_fd(&img)?;
            let Some(l) = kdisk::find_loop(id.dev, id.ino)? else {
                return Ok(false);
            };
            release(&tdir, &img, l.rdev()?)
        })();
        match r {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => tracing::debug!(error = %e, "could not sweep a thread's disk image"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_quotas_are_enforced_or_refused_and_the_default_is_best_effort() {
        use DiskQuotaMode::*;
        let yes = || Ok(());
        let no = || Err("no loop devices".to_owned());
        let d = DEFAULT_DISK_QUOTA_BYTES;
        assert_eq!(decide(Auto, None, false, true, yes), Decision::Image(d));
        assert_eq!(
            decide(Auto, Some(16 << 20), false, true, yes),
            Decision::Image(16 << 20)
        );
        assert!(
            matches!(decide(Auto, None, false, true, no), Decision::Off(w) if w.contains("no loop devices"))
        );
        assert!(
            matches!(decide(Auto, Some(16 << 20), false, true, no), Decision::Refuse { detail, .. } if detail.contains("no loop devices"))
        );
        assert!(matches!(
            decide(Image, None, false, true, no),
            Decision::Refuse { .. }
        ));
        assert_eq!(decide(Image, None, true, true, yes), Decision::Image(d));
        // Off and 0 never ask the host.
        let never = || -> Result<(), String> { panic!("asked") };
        assert!(matches!(
            decide(Off, Some(16 << 20), false, true, never),
            Decision::Off(_)
        ));
        assert!(matches!(
            decide(Auto, Some(0), false, true, never),
            Decision::Off(_)
        ));
        assert!(matches!(
            decide(Image, Some(0), false, true, never),
            Decision::Off(_)
        ));
        // Under DeerFlow's state root: no default image; an explicit quota needs `image`.
        assert!(
            matches!(decide(Auto, None, true, true, never), Decision::Off(w) if w.contains("DeerFlow"))
        );
        assert!(
            matches!(decide(Auto, Some(16 << 20), true, true, never), Decision::Refuse { hint, .. } if hint.contains("disk_quota_mode: image"))
        );
        // Outside paddock serve only a configured quota applies.
        assert!(
            matches!(decide(Auto, None, false, false, never), Decision::Off(w) if w.contains("only in paddock serve"))
        );
        assert_eq!(
            decide(Auto, Some(16 << 20), false, false, yes),
            Decision::Image(16 << 20)
        );
        assert_eq!(decide(Image, None, false, false, yes), Decision::Image(d));
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(
            unescape_mountinfo(r"/a\040b\011c\134d"),
            b"/a b\tc\\d".to_vec()
        );
        assert_eq!(unescape_mountinfo(r"/x\9"), b"/x\\9".to_vec());
        assert_eq!(unescape_mountinfo(r"\04"), b"\\04".to_vec());
    }

    #[test]
    fn mounted_threads_are_found_below_the_users_base_only() {
        let mi = "\
36 25 7:0 / /d/users/u1/threads/t1/user-data rw,relatime shared:1 - ext4 /dev/loop0 rw
37 25 7:1 / /d/users/u\\0402/threads/t\\0402/user-data rw - ext4 /dev/loop1 rw
38 25 7:2 / /d/users/u1/threads/t1/user-data/workspace rw - ext4 /dev/loop2 rw
39 25 7:3 / /other/users/u1/threads/t1/user-data rw - ext4 /dev/loop3 rw
40 25 7:4 / /d/users/u1/user-data rw - ext4 /dev/loop4 rw
";
        assert_eq!(
            mounted_threads(mi, Path::new("/d")),
            vec![
                PathBuf::from("/d/users/u1/threads/t1"),
                PathBuf::from("/d/users/u 2/threads/t 2")
            ]
        );
    }
}
