//! Host-side operations on directory trees a tenant can write (a thread's user data, a
//! legacy tree the migration copies): creating directories below a trusted root, handing a
//! tree to the sandbox's uid, copying and removing one. Everything goes through
//! descriptors: each directory is opened relative to its parent with `O_NOFOLLOW |
//! O_DIRECTORY`, each file with `O_NOFOLLOW` (and checked with `fstat` once open), each
//! change is made on an open descriptor or with `*at` calls and `AT_SYMLINK_NOFOLLOW`, so a
//! tenant that swaps a directory for a symlink while Paddock (as root) walks its tree never
//! makes Paddock create, chown, chmod, read, copy or delete anything outside it.
//!
//! Invariant: no path below the starting directory is ever resolved by the kernel from a
//! string; the number of descriptors open at once is bounded by [`MAX_DEPTH`] (two per
//! level for a copy), whatever the tree's width.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::syscalls::{OpenHow, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS};

/// Deepest directory level a walk goes to; below it the walk fails (and says so) rather
/// than hold more descriptors.
pub const MAX_DEPTH: usize = 256;

/// Times an operation retries an entry that keeps changing under it (a directory that
/// becomes a symlink and back, a directory refilled while it is emptied) before it gives up
/// on that entry.
const RETRIES: usize = 8;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn os_cstr(name: &OsStr) -> io::Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single entry name",
        ));
    }
    cstr(b)
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn errno_is(e: &io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

/// Adds where an error happened (a path relative to the operation's start).
fn at_path(e: io::Error, rel: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{rel}: {e}"))
}

fn open_dir_raw(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: openat on a live directory descriptor with a NUL-terminated name.
    owned(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Opens `name` in `dir` for reading without following a symlink and without blocking (on
/// a FIFO or a lease); the caller checks with `fstat` what it got.
fn open_read_raw(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: openat on a live directory descriptor with a NUL-terminated name.
    owned(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })
}

/// Opens `root` (a directory Paddock trusts: the operator's or its own data dir; symlinks
/// in its own path are allowed).
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let c = cstr(root.as_os_str().as_bytes())?;
    // SAFETY: open with a NUL-terminated path.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens the directory `path`, refusing (`ELOOP`) a symbolic link in any of its components:
/// for a path known to be canonical (a thread's data directories are), a link found there
/// was planted since. `openat2(RESOLVE_NO_SYMLINKS)`, or on a kernel without it a walk
/// from `/` (or the working directory) opening each component with `O_NOFOLLOW`.
pub fn open_dir_no_symlinks(path: &Path) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    let c = cstr(bytes)?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a NUL-terminated path and a live `open_how` of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    } as libc::c_int;
    match owned(fd) {
        Err(e) if errno_is(&e, &[libc::ENOSYS]) => {}
        r => return r,
    }
    let (mut cur, rest) = match bytes.strip_prefix(b"/") {
        Some(rest) => (open_root(Path::new("/"))?, rest),
        None => (open_root(Path::new("."))?, bytes),
    };
    for part in rest.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
        cur = open_dir_raw(cur.as_raw_fd(), &cstr(part)?)?;
    }
    Ok(cur)
}

/// Opens the directory `name` of `dir` without following a symlink (`ELOOP` or `ENOTDIR`
/// when it is not a directory now).
pub fn open_dir_at(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    open_dir_raw(dir.as_fd().as_raw_fd(), &os_cstr(name)?)
}

/// Opens the regular file `name` of `dir` for reading, never following a symlink; anything
/// but a regular file (a FIFO, a device, a link swapped in) is refused without blocking.
pub fn open_file_at(dir: impl AsFd, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = open_read_raw(dir.as_fd().as_raw_fd(), &os_cstr(name)?)?;
    if fstat(fd.as_raw_fd())?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// Creates `rel` (a relative path of plain components) below `root`, like `mkdir -p`,
/// never following a symlink: a component that is one fails with `ELOOP`/`ENOTDIR`.
pub fn mkdirs_beneath(root: &Path, rel: &str) -> io::Result<()> {
    mkdirs_at(open_root(root)?, rel)
}

/// [`mkdirs_beneath`] from an open directory (e.g. one from [`open_dir_no_symlinks`]).
pub fn mkdirs_at(root: impl AsFd, rel: &str) -> io::Result<()> {
    let mut cur: Option<OwnedFd> = None;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let c = cstr(part.as_bytes())?;
        let at = cur
            .as_ref()
            .map_or(root.as_fd().as_raw_fd(), |f| f.as_raw_fd());
        // SAFETY: mkdirat on a live directory descriptor.
        if let Err(e) = check(unsafe { libc::mkdirat(at, c.as_ptr(), 0o755) })
            && !errno_is(&e, &[libc::EEXIST])
        {
            return Err(e);
        }
        cur = Some(open_dir_raw(at, &c)?);
    }
    Ok(())
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: fstat into a zeroed local.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd, &mut st))?;
        Ok(st)
    }
}

fn fstatat_raw(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: fstatat (never following) into a zeroed local, relative to a live descriptor.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstatat(
            dir,
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ))?;
        Ok(st)
    }
}

fn fchownat_raw(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchownat relative to a live directory descriptor, never following.
    check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
}

fn fchown_raw(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown on a live descriptor.
    check(unsafe { libc::fchown(fd, uid, gid) })
}

fn fchmod_raw(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a live descriptor.
    check(unsafe { libc::fchmod(fd, mode) })
}

fn unlinkat_raw(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unlinkat relative to a live directory descriptor (it never follows a link).
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) })
}

fn readlinkat_raw(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: readlinkat into a buffer of the length given.
        let n = unsafe {
            libc::readlinkat(
                dir,
                name.as_ptr(),
                buf.as_mut_ptr().cast::<libc::c_char>(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        if buf.len() >= 1 << 16 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// What an entry is, as seen without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device node.
    Other,
}

/// Facts about one entry, not following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    /// Its kind.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
}

fn kind_of(mode: u32) -> EntryKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => EntryKind::File,
        libc::S_IFDIR => EntryKind::Dir,
        libc::S_IFLNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

fn entry_stat(st: &libc::stat) -> EntryStat {
    EntryStat {
        kind: kind_of(st.st_mode),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
    }
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)` of `name` in `dir`.
pub fn stat_at(dir: impl AsFd, name: &OsStr) -> io::Result<EntryStat> {
    fstatat_raw(dir.as_fd().as_raw_fd(), &os_cstr(name)?).map(|st| entry_stat(&st))
}

/// The target of the symbolic link `name` in `dir`.
pub fn read_link_at(dir: impl AsFd, name: &OsStr) -> io::Result<OsString> {
    readlinkat_raw(dir.as_fd().as_raw_fd(), &os_cstr(name)?).map(OsString::from_vec)
}

/// The names in an open directory (`.` and `..` left out).
pub fn dir_names(dir: impl AsFd) -> io::Result<Vec<OsString>> {
    Ok(names(dir.as_fd().as_raw_fd())?
        .into_iter()
        .map(|c| OsString::from_vec(c.into_bytes()))
        .collect())
}

/// Reads the names of an open directory, closing its stream.
fn names(dir: RawFd) -> io::Result<Vec<CString>> {
    // fdopendir takes the descriptor: give it a duplicate.
    // SAFETY: F_DUPFD_CLOEXEC of a live descriptor.
    let dup = unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // The duplicate shares the file position: start from the first entry, whoever read
    // this directory before.
    // SAFETY: lseek on our own descriptor.
    unsafe { libc::lseek(dup, 0, libc::SEEK_SET) };
    // SAFETY: fdopendir takes ownership of `dup`; closedir below releases both.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: `dup` was not taken.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: readdir on a live stream; errno is cleared first to tell end from error.
        let (ent, err) = unsafe {
            *libc::__errno_location() = 0;
            let e = libc::readdir(d);
            (e, *libc::__errno_location())
        };
        if ent.is_null() {
            // SAFETY: closing the stream we opened.
            unsafe { libc::closedir(d) };
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
            return Ok(out);
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push(name.to_owned());
        }
    }
}

/// Gives an open entry to `uid:gid` and, when `private`, takes the group's and others'
/// permission bits away (read after the chown, which clears set-id bits of a file).
fn hand_over_fd(fd: RawFd, uid: u32, gid: u32, private: bool) -> io::Result<()> {
    let st = fstat(fd)?;
    if st.st_uid != uid || st.st_gid != gid {
        fchown_raw(fd, uid, gid)?;
    }
    if private {
        let mode = fstat(fd)?.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            fchmod_raw(fd, mode & !0o077)?;
        }
    }
    Ok(())
}

/// Hands `name` of `dir` over without opening it (links, FIFOs, sockets, and files whose
/// mode needs no change): `fchownat(AT_SYMLINK_NOFOLLOW)` when its owner differs.
fn hand_over_name(dir: RawFd, name: &CStr, st: &libc::stat, uid: u32, gid: u32) -> io::Result<()> {
    if st.st_uid == uid && st.st_gid == gid {
        return Ok(());
    }
    fchownat_raw(dir, name, uid, gid)
}

/// Gives `root` and everything below it to `uid:gid` when that is not done already (the
/// common case costs one `fstat`). With `private`, also takes the group's and others'
/// permission bits away from `root`, every directory and every regular file below it, so
/// nothing of the tree is readable by other users of the host; `root` gets its new mode
/// last, so a walk that did not finish is done again next time.
///
/// `root` is opened refusing a symlink in any of its components (it is a canonical data
/// directory; a link there was planted). Below it a directory is entered only through
/// `O_NOFOLLOW`, a file's mode is changed only on a descriptor opened `O_NOFOLLOW` and
/// checked to be a regular file, and anything else is chowned with `AT_SYMLINK_NOFOLLOW`
/// (a symlink itself, its target never). An entry swapped mid-walk is handed over as what
/// it is then, never followed; FIFOs and sockets keep their modes (opening them could
/// block or fail; below a private root they cannot be reached anyway).
///
/// Returns how many entries could not be handed over (raced or unreadable).
pub fn chown_tree(root: &Path, uid: u32, gid: u32, private: bool) -> io::Result<usize> {
    let top = open_dir_no_symlinks(root)?;
    let st = fstat(top.as_raw_fd())?;
    let owned_already = st.st_uid == uid && st.st_gid == gid;
    if owned_already && (!private || st.st_mode & 0o077 == 0) {
        return Ok(0);
    }
    if !owned_already {
        fchown_raw(top.as_raw_fd(), uid, gid)?;
    }
    let mut failed = 0usize;
    // Depth-first, one open directory per level (bounded by MAX_DEPTH): each level holds
    // its directory and the names still to visit.
    let first = names(top.as_raw_fd())?;
    let mut stack: Vec<(OwnedFd, Vec<CString>)> = vec![(top.try_clone()?, first)];
    loop {
        let next = match stack.last_mut() {
            None => break,
            Some((dir, pending)) => pending.pop().map(|n| (dir.as_raw_fd(), n)),
        };
        let Some((dfd, name)) = next else {
            stack.pop();
            continue;
        };
        let est = match fstatat_raw(dfd, &name) {
            Ok(s) => s,
            Err(e) if errno_is(&e, &[libc::ENOENT]) => continue,
            Err(_) => {
                failed += 1;
                continue;
            }
        };
        match est.st_mode & libc::S_IFMT {
            libc::S_IFDIR => match open_dir_raw(dfd, &name) {
                Ok(child) => {
                    if hand_over_fd(child.as_raw_fd(), uid, gid, private).is_err() {
                        failed += 1;
                    }
                    if stack.len() >= MAX_DEPTH {
                        failed += 1;
                        continue;
                    }
                    match names(child.as_raw_fd()) {
                        Ok(n) => stack.push((child, n)),
                        Err(_) => failed += 1,
                    }
                }
                // Swapped for something else since the stat: hand over what is there now,
                // never following it.
                Err(e) if errno_is(&e, &[libc::ENOTDIR, libc::ELOOP]) => {
                    if fchownat_raw(dfd, &name, uid, gid).is_err() {
                        failed += 1;
                    }
                }
                Err(e) if errno_is(&e, &[libc::ENOENT]) => {}
                Err(_) => failed += 1,
            },
            libc::S_IFREG if private && est.st_mode & 0o077 != 0 => {
                let done = match open_read_raw(dfd, &name) {
                    Ok(f)
                        if fstat(f.as_raw_fd())
                            .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG) =>
                    {
                        hand_over_fd(f.as_raw_fd(), uid, gid, private)
                    }
                    Err(e) if errno_is(&e, &[libc::ENOENT]) => Ok(()),
                    // A link or something else swapped in: its owner only.
                    _ => fchownat_raw(dfd, &name, uid, gid),
                };
                if done.is_err() {
                    failed += 1;
                }
            }
            _ => {
                if hand_over_name(dfd, &name, &est, uid, gid).is_err() {
                    failed += 1;
                }
            }
        }
    }
    if private {
        fchmod_raw(top.as_raw_fd(), st.st_mode & 0o7777 & !0o077)?;
    }
    Ok(failed)
}

/// What happened to one entry a removal looked at.
enum Removal {
    /// Unlinked (or gone already).
    Done,
    /// A directory, opened to be emptied first.
    Opened(OwnedFd),
}

/// Unlinks `name` in `dir`, or opens it (`O_NOFOLLOW`) when it is a directory. An entry
/// that turns from a directory into something else between the two is unlinked as what it
/// is then.
fn remove_or_open(dir: RawFd, name: &CStr) -> io::Result<Removal> {
    for _ in 0..RETRIES {
        match unlinkat_raw(dir, name, 0) {
            Ok(()) => return Ok(Removal::Done),
            Err(e) if errno_is(&e, &[libc::ENOENT]) => return Ok(Removal::Done),
            Err(e) if errno_is(&e, &[libc::EISDIR]) => match open_dir_raw(dir, name) {
                Ok(fd) => return Ok(Removal::Opened(fd)),
                Err(e) if errno_is(&e, &[libc::ENOENT]) => return Ok(Removal::Done),
                Err(e) if errno_is(&e, &[libc::ELOOP, libc::ENOTDIR]) => continue,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("it kept changing while being removed"))
}

struct RmLevel {
    dir: OwnedFd,
    name: CString,
    pending: Vec<CString>,
    refills: usize,
}

fn rel_of(levels: &[&CStr], last: Option<&CStr>) -> String {
    let mut s = String::new();
    for n in levels.iter().copied().chain(last) {
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(&String::from_utf8_lossy(n.to_bytes()));
    }
    s
}

/// Removes `name` of `dir` and, when it is a directory, everything below it, never
/// following a symlink: entries are unlinked relative to their directory's descriptor, a
/// directory is entered only through `O_NOFOLLOW`, so a link swapped in anywhere is removed
/// as a link and what it points to is never touched. A directory refilled while it is being
/// emptied is emptied again (a few times). Returns the first error, after removing all it
/// could; a missing `name` is `NotFound`.
pub fn remove_tree_at(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    let base = dir.as_fd().as_raw_fd();
    let top = os_cstr(name)?;
    // The entry itself must exist (as `remove_dir_all` reports).
    fstatat_raw(base, &top)?;
    let first = match remove_or_open(base, &top)? {
        Removal::Done => return Ok(()),
        Removal::Opened(fd) => fd,
    };
    let pending = names(first.as_raw_fd())?;
    let mut stack = vec![RmLevel {
        dir: first,
        name: top,
        pending,
        refills: 0,
    }];
    let mut err: Option<io::Error> = None;
    let path = |stack: &[RmLevel], last: Option<&CStr>| {
        let v: Vec<&CStr> = stack.iter().map(|l| l.name.as_c_str()).collect();
        rel_of(&v, last)
    };
    while let Some(level) = stack.last_mut() {
        if let Some(n) = level.pending.pop() {
            let parent = level.dir.as_raw_fd();
            match remove_or_open(parent, &n) {
                Ok(Removal::Done) => {}
                Ok(Removal::Opened(fd)) => {
                    if stack.len() >= MAX_DEPTH {
                        let e = io::Error::other(format!("deeper than {MAX_DEPTH} levels"));
                        err.get_or_insert(at_path(e, &path(&stack, Some(&n))));
                        continue;
                    }
                    match names(fd.as_raw_fd()) {
                        Ok(pending) => stack.push(RmLevel {
                            dir: fd,
                            name: n,
                            pending,
                            refills: 0,
                        }),
                        Err(e) => {
                            err.get_or_insert(at_path(e, &path(&stack, Some(&n))));
                        }
                    }
                }
                Err(e) => {
                    err.get_or_insert(at_path(e, &path(&stack, Some(&n))));
                }
            }
            continue;
        }
        // Emptied: remove the directory from its parent.
        let parent = match stack.len() {
            1 => base,
            n => stack[n - 2].dir.as_raw_fd(),
        };
        let at_top = stack.len() == 1;
        let rescan_parent = !at_top && stack[stack.len() - 2].refills < RETRIES;
        let Some(level) = stack.last_mut() else {
            break;
        };
        match unlinkat_raw(parent, &level.name, libc::AT_REMOVEDIR) {
            Ok(()) => {
                stack.pop();
            }
            Err(e) if errno_is(&e, &[libc::ENOENT]) => {
                stack.pop();
            }
            // Below the top, the name no longer holds the directory just emptied (swapped
            // for a link, or for another directory, or refilled): look at the parent's
            // entries again, which finds whatever is there now.
            Err(_) if rescan_parent => {
                stack.pop();
                if let Some(up) = stack.last_mut() {
                    up.refills += 1;
                    match names(up.dir.as_raw_fd()) {
                        Ok(p) => up.pending = p,
                        Err(e) => {
                            err.get_or_insert(at_path(e, &path(&stack, None)));
                        }
                    }
                }
            }
            Err(e)
                if at_top
                    && errno_is(&e, &[libc::ENOTEMPTY, libc::EEXIST])
                    && level.refills < RETRIES =>
            {
                // Something was added meanwhile: empty it again.
                level.refills += 1;
                match names(level.dir.as_raw_fd()) {
                    Ok(p) => level.pending = p,
                    Err(e) => {
                        err.get_or_insert(at_path(e, &path(&stack, None)));
                        stack.pop();
                    }
                }
            }
            Err(e) => {
                err.get_or_insert(at_path(e, &path(&stack, None)));
                stack.pop();
            }
        }
    }
    err.map_or(Ok(()), Err)
}

/// [`remove_tree_at`] of the last component of `path`, its parent opened as Paddock trusts
/// it ([`open_root`]).
pub fn remove_tree_beneath(path: &Path) -> io::Result<()> {
    let (parent, name) = split_path(path)?;
    remove_tree_at(open_root(parent)?, name)
}

/// [`copy_tree_at`] from the last component of `from` to that of `to`, both parents opened
/// as Paddock trusts them ([`open_root`]).
pub fn copy_tree_beneath(from: &Path, to: &Path) -> io::Result<()> {
    let (sp, sn) = split_path(from)?;
    let (dp, dn) = split_path(to)?;
    copy_tree_at(open_root(sp)?, sn, open_root(dp)?, dn)
}

/// A path's parent and last component (`.` when it has no parent).
pub fn split_path(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no last component", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

struct CopyLevel {
    src: OwnedFd,
    dst: OwnedFd,
    name: CString,
    pending: Vec<CString>,
    /// The source directory's mode and owner, given to the copy once it is filled (so a
    /// read-only directory can be filled first).
    st: libc::stat,
}

/// Copies one entry; a directory is created (private until it is filled) and returned to
/// be filled.
fn copy_entry(
    sdir: RawFd,
    name: &CStr,
    ddir: RawFd,
    dname: &CStr,
    keep_owner: bool,
) -> io::Result<Option<(OwnedFd, OwnedFd, libc::stat)>> {
    let st = fstatat_raw(sdir, name)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFLNK => {
            let target = cstr(&readlinkat_raw(sdir, name)?)?;
            // SAFETY: symlinkat with NUL-terminated strings relative to a live descriptor.
            check(unsafe { libc::symlinkat(target.as_ptr(), ddir, dname.as_ptr()) })?;
            if keep_owner {
                fchownat_raw(ddir, dname, st.st_uid, st.st_gid)?;
            }
            Ok(None)
        }
        libc::S_IFREG => {
            let src = open_read_raw(sdir, name)?;
            let fst = fstat(src.as_raw_fd())?;
            if fst.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(io::Error::other("changed while being copied"));
            }
            // SAFETY: openat relative to a live descriptor with a NUL-terminated name.
            let out = owned(unsafe {
                libc::openat(
                    ddir,
                    dname.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            })?;
            let (mut r, mut w) = (std::fs::File::from(src), std::fs::File::from(out));
            io::copy(&mut r, &mut w)?;
            if keep_owner {
                fchown_raw(w.as_raw_fd(), fst.st_uid, fst.st_gid)?;
            }
            // After the chown, which would clear set-id bits.
            fchmod_raw(w.as_raw_fd(), fst.st_mode & 0o7777)?;
            Ok(None)
        }
        libc::S_IFDIR => {
            let src = match open_dir_raw(sdir, name) {
                Err(e) if errno_is(&e, &[libc::ELOOP, libc::ENOTDIR]) => {
                    return Err(io::Error::other("changed while being copied"));
                }
                r => r?,
            };
            let fst = fstat(src.as_raw_fd())?;
            // SAFETY: mkdirat relative to a live descriptor with a NUL-terminated name.
            check(unsafe { libc::mkdirat(ddir, dname.as_ptr(), 0o700) })?;
            let dst = open_dir_raw(ddir, dname)?;
            Ok(Some((src, dst, fst)))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "is a special file (fifo, socket or device); it cannot be copied",
        )),
    }
}

fn finish_dir(level: &CopyLevel, keep_owner: bool) -> io::Result<()> {
    if keep_owner {
        fchown_raw(level.dst.as_raw_fd(), level.st.st_uid, level.st.st_gid)?;
    }
    fchmod_raw(level.dst.as_raw_fd(), level.st.st_mode & 0o7777)
}

/// Copies `src_name` of `src` (a file, symlink or directory tree) to the new entry
/// `dst_name` of `dst`, keeping modes (and owners, when run as root), copying symlinks as
/// links and refusing special files. Nothing is followed: a source entry is read only
/// through a descriptor opened `O_NOFOLLOW` and checked, so a directory swapped for a link
/// to somewhere else makes the copy fail (`changed while being copied`) instead of copying
/// from there; the destination entries are created `O_EXCL`/`mkdirat` and filled through
/// their descriptors. Errors name the entry relative to `src_name`.
pub fn copy_tree_at(
    src: impl AsFd,
    src_name: &OsStr,
    dst: impl AsFd,
    dst_name: &OsStr,
) -> io::Result<()> {
    let keep_owner = crate::process::euid() == 0;
    let (sname, dname) = (os_cstr(src_name)?, os_cstr(dst_name)?);
    let (sbase, dbase) = (src.as_fd().as_raw_fd(), dst.as_fd().as_raw_fd());
    let Some((s, d, st)) = copy_entry(sbase, &sname, dbase, &dname, keep_owner)
        .map_err(|e| at_path(e, &rel_of(&[sname.as_c_str()], None)))?
    else {
        return Ok(());
    };
    let pending = names(s.as_raw_fd())?;
    let mut stack = vec![CopyLevel {
        src: s,
        dst: d,
        name: sname,
        pending,
        st,
    }];
    let path = |stack: &[CopyLevel], last: Option<&CStr>| {
        let v: Vec<&CStr> = stack.iter().map(|l| l.name.as_c_str()).collect();
        rel_of(&v, last)
    };
    while let Some(level) = stack.last_mut() {
        let Some(n) = level.pending.pop() else {
            let Some(done) = stack.pop() else {
                break;
            };
            finish_dir(&done, keep_owner)
                .map_err(|e| at_path(e, &path(&stack, Some(&done.name))))?;
            continue;
        };
        let (sfd, dfd) = (level.src.as_raw_fd(), level.dst.as_raw_fd());
        let copied = copy_entry(sfd, &n, dfd, &n, keep_owner)
            .map_err(|e| at_path(e, &path(&stack, Some(&n))))?;
        if let Some((s, d, st)) = copied {
            if stack.len() >= MAX_DEPTH {
                let e = io::Error::other(format!("deeper than {MAX_DEPTH} levels"));
                return Err(at_path(e, &path(&stack, Some(&n))));
            }
            let pending = names(s.as_raw_fd()).map_err(|e| at_path(e, &path(&stack, Some(&n))))?;
            stack.push(CopyLevel {
                src: s,
                dst: d,
                name: n,
                pending,
                st,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tmp() -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = std::fs::canonicalize(t.path()).unwrap();
        (t, p)
    }

    #[test]
    fn mkdirs_never_follow_a_symlink() {
        let (_t, base) = tmp();
        let root = base.join("root");
        std::fs::create_dir(&root).unwrap();
        mkdirs_beneath(&root, "a/b/c").unwrap();
        assert!(root.join("a/b/c").is_dir());
        mkdirs_beneath(&root, "a/b/c").unwrap();
        let outside = base.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert!(mkdirs_beneath(&root, "link/x").is_err());
        assert!(mkdirs_at(open_dir_no_symlinks(&root).unwrap(), "link/x").is_err());
        assert!(!outside.join("x").exists());
        assert!(mkdirs_beneath(&root, "../x").is_err());
    }

    #[test]
    fn a_symlink_anywhere_in_a_strict_root_is_refused() {
        let (_t, base) = tmp();
        std::fs::create_dir_all(base.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        assert!(open_dir_no_symlinks(&base.join("real/sub")).is_ok());
        let e = open_dir_no_symlinks(&base.join("link/sub")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(
            open_root(&base.join("link/sub")).is_ok(),
            "a trusted root may"
        );
    }

    #[test]
    fn chown_tree_hands_over_without_following_links() {
        if crate::process::euid() != 0 {
            eprintln!("SKIPPED: chown needs root");
            return;
        }
        let (_t, base) = tmp();
        let d = base.join("ws");
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("sub/f"), "x").unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, "host").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("link")).unwrap();
        assert_eq!(chown_tree(&d, 951_123, 951_124, false).unwrap(), 0);
        for p in ["sub", "sub/f", "sub/deeper"] {
            assert_eq!(std::fs::metadata(d.join(p)).unwrap().uid(), 951_123, "{p}");
        }
        assert_eq!(
            std::fs::symlink_metadata(d.join("link")).unwrap().uid(),
            951_123
        );
        assert_eq!(
            std::fs::metadata(&victim).unwrap().uid(),
            0,
            "target untouched"
        );
        // Already owned: nothing to do.
        assert_eq!(chown_tree(&d, 951_123, 951_124, false).unwrap(), 0);
    }

    #[test]
    fn a_private_handover_takes_group_and_other_bits_away() {
        if crate::process::euid() != 0 {
            eprintln!("SKIPPED: chown needs root");
            return;
        }
        let (_t, base) = tmp();
        let d = base.join("ws");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(d.join("sub/f"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, "host").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("link")).unwrap();
        // Owned already but world-readable (a tree from before): still walked.
        std::os::unix::fs::chown(&d, Some(951_123), Some(951_124)).unwrap();
        assert_eq!(chown_tree(&d, 951_123, 951_124, true).unwrap(), 0);
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("sub")), 0o700);
        assert_eq!(mode(&d.join("sub/f")), 0o700);
        assert_eq!(std::fs::metadata(d.join("sub/f")).unwrap().uid(), 951_123);
        assert_eq!(mode(&victim), 0o644, "a link's target keeps its mode");
        assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
    }

    #[test]
    fn remove_tree_removes_links_not_their_targets() {
        let (_t, base) = tmp();
        let outside = base.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "k").unwrap();
        let d = base.join("d");
        std::fs::create_dir_all(d.join("a/b/c")).unwrap();
        std::fs::write(d.join("a/b/c/f"), "x").unwrap();
        std::fs::write(d.join("top"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("a/link")).unwrap();
        if crate::process::euid() == 0 {
            // Root removes from a read-only directory as well.
            std::fs::set_permissions(d.join("a/b"), std::fs::Permissions::from_mode(0o500))
                .unwrap();
        }
        let parent = open_root(&base).unwrap();
        remove_tree_at(&parent, OsStr::new("d")).unwrap();
        assert!(std::fs::symlink_metadata(&d).is_err());
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "k");
        let e = remove_tree_at(&parent, OsStr::new("d")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // A link given as the entry itself is unlinked, never entered.
        std::os::unix::fs::symlink(&outside, base.join("l")).unwrap();
        remove_tree_beneath(&base.join("l")).unwrap();
        assert!(outside.join("keep").exists());
        assert!(remove_tree_at(&parent, OsStr::new("../x")).is_err());
    }

    #[test]
    fn copy_tree_keeps_modes_and_links_and_refuses_special_files() {
        let (_t, base) = tmp();
        let src = base.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "hello").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        copy_tree_beneath(&src, &base.join("dst")).unwrap();
        let dst = base.join("dst");
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "hello");
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dst.join("sub/f")), 0o640);
        assert_eq!(mode(&dst.join("sub")), 0o555);
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        // The destination is never replaced.
        assert_eq!(
            copy_tree_beneath(&src, &dst).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let fifo = base.join("fifosrc");
        std::fs::create_dir(&fifo).unwrap();
        let c = CString::new(fifo.join("p").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = copy_tree_beneath(&fifo, &base.join("fifodst")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("fifosrc/p"), "{e}");
        std::fs::set_permissions(dst.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
