//! Writes: `write_text`, uploads ([`Upload`], fed chunk by chunk, and `write_from_reader`
//! over it) and `str_replace`.
//!
//! Invariant: every write first passes the read-only check on the mount that owns the
//! *resolved* path (so a symlink into a nested read-only mount is refused), and only
//! touches entries of the resolved directory fd: files are created `O_NOFOLLOW`, temp files
//! `O_EXCL`, and atomic replacement is a `renameat` within that same directory, which never
//! follows a symlink in its final component.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use paddock_core::SandboxError;
use paddock_core::mount::Node;
use paddock_core::sandbox::{ReplaceOutcome, StrReplace, WriteBytes, WriteOutcome, WriteText};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};

use crate::FsOps;
use crate::read::{not_regular, open_regular, read_capped};
use crate::resolve::{CREATE, FOLLOW, Resolved};

/// Mode of files created by a write (before the umask).
const NEW_FILE_MODE: u32 = 0o644;
/// Mode of files created by a write in a thread's data when it is private
/// ([`crate::FsOptions::private_user_data`]).
const PRIVATE_FILE_MODE: u32 = 0o600;

/// The mode a new file at `r` gets.
fn new_file_mode(ops: &FsOps, r: &Resolved<'_>) -> u32 {
    if ops.options().private_user_data && r.walked.mount.is_user_data() {
        PRIVATE_FILE_MODE
    } else {
        NEW_FILE_MODE
    }
}

/// Refuses targets that cannot be written as a regular file.
fn expect_writable_target(r: &Resolved<'_>) -> Result<(), SandboxError> {
    r.check_writable()?;
    match r.node() {
        Node::File | Node::Missing => Ok(()),
        Node::Dir => Err(SandboxError::IsADirectory { path: r.shown() }),
        Node::Other => Err(not_regular(r.requested.as_str())),
        Node::Symlink(_) => Err(SandboxError::SymlinkLoop { path: r.shown() }),
    }
}

fn chown(fd: &OwnedFd, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    Ok(())
}

/// Opens the final entry for writing in place (overwrite or append). The fstat check
/// refuses anything but a regular file swapped in since the lookup; `O_NONBLOCK` keeps a
/// FIFO from blocking the open.
fn open_in_place(
    ops: &FsOps,
    r: &Resolved<'_>,
    append: bool,
) -> Result<std::fs::File, SandboxError> {
    let mode = if append {
        OFlags::APPEND
    } else {
        OFlags::TRUNC
    };
    let created = matches!(r.node(), Node::Missing);
    let fd = r.open(
        "write",
        OFlags::WRONLY | OFlags::CREATE | OFlags::NONBLOCK | mode,
        new_file_mode(ops, r),
    )?;
    let st = rustix::fs::fstat(&fd).map_err(|e| r.io_err("stat", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_regular(r.requested.as_str()));
    }
    if created {
        chown(&fd, ops.options().owner_for(r.walked.mount)).map_err(|e| r.io_err("chown", e))?;
    }
    rustix::fs::fcntl_setfl(&fd, mode).map_err(|e| r.io_err("write", e))?;
    Ok(std::fs::File::from(fd))
}

pub(crate) fn write_text(ops: &FsOps, req: &WriteText) -> Result<WriteOutcome, SandboxError> {
    let r = ops.resolve(&req.path, CREATE)?;
    expect_writable_target(&r)?;
    let mut file = open_in_place(ops, &r, req.append)?;
    file.write_all(req.content.as_bytes())
        .map_err(|e| r.io_err("write", e))?;
    Ok(WriteOutcome {
        path: r.vpath().to_string(),
        bytes_written: req.content.len() as u64,
    })
}

/// Where a write lands, owned (so it can outlive the resolution that found it): the
/// directory fd, the final name in it and the path as requested (for errors).
#[derive(Debug)]
struct Place {
    dir: OwnedFd,
    name: Option<String>,
    requested: paddock_core::VirtualPath,
}

impl Place {
    fn of(r: Resolved<'_>) -> Self {
        let name = r.name().map(str::to_owned);
        Self {
            dir: r.dir,
            name,
            requested: r.requested,
        }
    }

    fn shown(&self) -> String {
        self.requested.to_string()
    }

    fn io_err(&self, op: &str, e: impl Into<std::io::Error>) -> SandboxError {
        SandboxError::from_io(op, self.requested.as_str(), &e.into())
    }
}

/// A temp file beside the target. Anonymous (`O_TMPFILE`) until it is committed: it is
/// never an entry of the tenant's directory while bytes arrive, and nothing is left behind
/// if Paddock dies mid-upload. On a filesystem without `O_TMPFILE` it is a named file
/// (`O_EXCL`), removed on drop unless committed. Either way it is given its owner before
/// the first byte is written, so a root-owned file never sits in the tenant's directory
/// (nor counts against root's disk quota instead of the sandbox's).
#[derive(Debug)]
struct TempFile {
    place: Place,
    /// Its name in the directory; `None` while anonymous.
    name: Option<String>,
    file: std::fs::File,
    committed: bool,
}

fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!(".paddock-upload-{:016x}.part", h.finish())
}

impl TempFile {
    /// A temp file in `place`'s directory, owned by `owner` (when given) and created with
    /// `mode` (before the umask).
    fn create(place: Place, owner: Option<(u32, u32)>, mode: u32) -> Result<Self, SandboxError> {
        let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
        match rustix::fs::openat(&place.dir, ".", flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => {
                chown(&fd, owner).map_err(|e| place.io_err("chown", e))?;
                return Ok(Self {
                    place,
                    name: None,
                    file: std::fs::File::from(fd),
                    committed: false,
                });
            }
            // No O_TMPFILE on this filesystem (or kernel): a named temp file.
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {}
            Err(e) => return Err(place.io_err("create", e)),
        }
        Self::create_named(place, owner, mode)
    }

    fn create_named(
        place: Place,
        owner: Option<(u32, u32)>,
        mode: u32,
    ) -> Result<Self, SandboxError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = None;
        for _ in 0..16 {
            let name = temp_name();
            match rustix::fs::openat(&place.dir, &name, flags, Mode::from_raw_mode(mode)) {
                Ok(fd) => {
                    if let Err(e) = chown(&fd, owner) {
                        let _ = rustix::fs::unlinkat(&place.dir, name.as_str(), AtFlags::empty());
                        return Err(place.io_err("chown", e));
                    }
                    return Ok(Self {
                        place,
                        name: Some(name),
                        file: std::fs::File::from(fd),
                        committed: false,
                    });
                }
                Err(rustix::io::Errno::EXIST) => last = Some(rustix::io::Errno::EXIST),
                Err(e) => return Err(place.io_err("create", e)),
            }
        }
        Err(place.io_err("create", last.unwrap_or(rustix::io::Errno::EXIST)))
    }

    /// Gives the anonymous file a name in its directory, by descriptor: `linkat` with
    /// `AT_EMPTY_PATH` (root), or through `/proc/self/fd` without that privilege.
    fn link_in(&mut self) -> Result<(), SandboxError> {
        let p = &self.place;
        let mut last = rustix::io::Errno::EXIST;
        for _ in 0..16 {
            let name = temp_name();
            let linked =
                match rustix::fs::linkat(&self.file, "", &p.dir, &name, AtFlags::EMPTY_PATH) {
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM) => {
                        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
                        let proc = format!("/proc/self/fd/{fd}");
                        rustix::fs::linkat(
                            rustix::fs::CWD,
                            proc.as_str(),
                            &p.dir,
                            &name,
                            AtFlags::SYMLINK_FOLLOW,
                        )
                    }
                    r => r,
                };
            match linked {
                Ok(()) => {
                    self.name = Some(name);
                    return Ok(());
                }
                Err(rustix::io::Errno::EXIST) => last = rustix::io::Errno::EXIST,
                Err(e) => return Err(p.io_err("link", e)),
            }
        }
        Err(p.io_err("link", last))
    }

    /// fsync, then (named in the directory if it was anonymous) rename over the target in
    /// the same directory, then fsync the directory.
    fn commit(mut self) -> Result<(), SandboxError> {
        let target = self
            .place
            .name
            .clone()
            .ok_or_else(|| SandboxError::IsADirectory {
                path: self.place.shown(),
            })?;
        self.file
            .sync_all()
            .map_err(|e| self.place.io_err("fsync", e))?;
        if self.name.is_none() {
            self.link_in()?;
        }
        let p = &self.place;
        let name = self.name.as_deref().unwrap_or_default();
        rustix::fs::renameat(&p.dir, name, &p.dir, target.as_str())
            .map_err(|e| p.io_err("rename", e))?;
        self.committed = true;
        // Durability of the rename itself; a failure here leaves a correct file behind.
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if let Ok(d) = rustix::fs::openat(&p.dir, ".", dir_flags, Mode::empty())
            && let Err(e) = rustix::fs::fsync(&d)
        {
            tracing::debug!(error = %e, "directory fsync failed after rename");
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // An anonymous file goes with its descriptor.
        if !self.committed
            && let Some(name) = &self.name
            && let Err(e) = rustix::fs::unlinkat(&self.place.dir, name.as_str(), AtFlags::empty())
        {
            tracing::warn!(error = %e, "could not remove an abandoned upload temp file");
        }
    }
}

/// Where an upload's bytes go: a temp file renamed over the target on success, or the
/// target itself when appending (cut back to its old length on failure).
#[derive(Debug)]
enum Sink {
    Atomic(TempFile),
    Append {
        place: Place,
        file: std::fs::File,
        before: u64,
    },
}

/// A write in progress whose bytes arrive in pieces (an upload from the network). The
/// caller receives the bytes however it likes (asynchronously) and hands them over with
/// [`Upload::write`], so no thread waits on the network here; each call is bounded
/// blocking file IO. Dropped without [`Upload::finish`], it leaves the target as it was.
#[derive(Debug)]
pub struct Upload {
    sink: Option<Sink>,
    vpath: paddock_core::VirtualPath,
    owner: Option<(u32, u32)>,
    written: u64,
    cap: u64,
}

impl Upload {
    fn place(&self) -> Option<&Place> {
        match self.sink.as_ref()? {
            Sink::Atomic(t) => Some(&t.place),
            Sink::Append { place, .. } => Some(place),
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk`, refusing to go past the cap (the upload is then abandoned: what
    /// was written is discarded when it is dropped).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SandboxError> {
        let total = self.written.saturating_add(chunk.len() as u64);
        let place = self.place().ok_or_else(|| SandboxError::Internal {
            message: "write after the upload ended".into(),
        })?;
        if total > self.cap {
            return Err(SandboxError::TooLarge {
                path: place.shown(),
                size: total,
                limit: self.cap,
            });
        }
        let res = match self.sink.as_mut() {
            Some(Sink::Atomic(t)) => t.file.write_all(chunk),
            Some(Sink::Append { file, .. }) => file.write_all(chunk),
            None => Ok(()),
        };
        if let Err(e) = res {
            let place = self.place().map(Place::shown).unwrap_or_default();
            return Err(SandboxError::from_io("write", &place, &e));
        }
        self.written = total;
        Ok(())
    }

    /// Completes the write: the temp file is synced and renamed over the target.
    pub fn finish(mut self) -> Result<WriteOutcome, SandboxError> {
        match self.sink.take() {
            Some(Sink::Atomic(tmp)) => {
                adopt_metadata(self.owner, &tmp.place, &tmp.file)?;
                tmp.commit()?;
            }
            Some(Sink::Append { .. }) | None => {}
        }
        Ok(WriteOutcome {
            path: self.vpath.to_string(),
            bytes_written: self.written,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // The temp file removes itself; a refused or abandoned append is undone so the
        // file is left as it was.
        if let Some(Sink::Append { file, before, .. }) = self.sink.take()
            && let Err(e) = file.set_len(before)
        {
            tracing::warn!(error = %e, "could not undo a refused append");
        }
    }
}

pub(crate) fn begin_write(ops: &FsOps, req: &WriteBytes) -> Result<Upload, SandboxError> {
    let cap = req.max_bytes.map_or(ops.options().upload_cap_bytes, |m| {
        m.min(ops.options().upload_cap_bytes)
    });
    let r = ops.resolve(&req.path, CREATE)?;
    expect_writable_target(&r)?;
    let vpath = r.vpath().clone();
    let owner = ops.options().owner_for(r.walked.mount);
    let sink = if req.append {
        let file = open_in_place(ops, &r, true)?;
        let before = file.metadata().map_err(|e| r.io_err("stat", e))?.len();
        Sink::Append {
            place: Place::of(r),
            file,
            before,
        }
    } else {
        let mode = new_file_mode(ops, &r);
        Sink::Atomic(TempFile::create(Place::of(r), owner, mode)?)
    };
    Ok(Upload {
        sink: Some(sink),
        vpath,
        owner,
        written: 0,
        cap,
    })
}

pub(crate) fn write_from_reader(
    ops: &FsOps,
    req: &WriteBytes,
    body: &mut dyn Read,
) -> Result<WriteOutcome, SandboxError> {
    let mut up = begin_write(ops, req)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return up.finish(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SandboxError::Io {
                    op: "upload".into(),
                    path: up.place().map(Place::shown).unwrap_or_default(),
                    message: format!("reading the request body failed: {e}"),
                });
            }
        };
        up.write(&buf[..n])?;
    }
}

/// Gives the temp file the mode and owner of the file it replaces, or the configured owner
/// for a new file.
fn adopt_metadata(
    owner: Option<(u32, u32)>,
    r: &Place,
    tmp: &std::fs::File,
) -> Result<(), SandboxError> {
    let fd = rustix::fd::AsFd::as_fd(tmp);
    let existing = r
        .name
        .as_deref()
        .and_then(|n| rustix::fs::statat(&r.dir, n, AtFlags::SYMLINK_NOFOLLOW).ok())
        .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
    match existing {
        Some(st) => {
            let same =
                rustix::fs::fstat(fd).is_ok_and(|t| t.st_uid == st.st_uid && t.st_gid == st.st_gid);
            if !same {
                let res = rustix::fs::fchown(
                    fd,
                    Some(Uid::from_raw(st.st_uid)),
                    Some(Gid::from_raw(st.st_gid)),
                );
                match res {
                    Ok(()) => {}
                    // Without privilege the owner cannot be kept; the write itself is allowed
                    // (the caller could open the file), so go on with our own ownership.
                    Err(rustix::io::Errno::PERM) => {
                        tracing::debug!(path = %r.requested, "cannot keep the owner of a replaced file");
                    }
                    Err(e) => return Err(r.io_err("chown", e)),
                }
            }
            // After the chown, which clears set-id bits.
            rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))
                .map_err(|e| r.io_err("chmod", e))?;
        }
        None => {
            if let Some((uid, gid)) = owner {
                rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(|e| r.io_err("chown", e))?;
            }
        }
    }
    Ok(())
}

/// The size `text` would have with `count` occurrences of `old` replaced by `new`
/// (`None`: it would not fit in a u64).
fn replaced_len(text_len: usize, old_len: usize, new_len: usize, count: usize) -> Option<u64> {
    let removed = (old_len as u64).checked_mul(count as u64)?;
    let added = (new_len as u64).checked_mul(count as u64)?;
    (text_len as u64).checked_sub(removed)?.checked_add(added)
}

pub(crate) fn str_replace(ops: &FsOps, req: &StrReplace) -> Result<ReplaceOutcome, SandboxError> {
    // The result is held by no one (it is written piece by piece), but it becomes a file
    // that later reads load: the read cap, the upload cap and the request's own bound all
    // hold for it as for the file it came from.
    let o = ops.options();
    let cap = req
        .max_bytes
        .map_or(o.text_cap_bytes, |m| m.min(o.text_cap_bytes))
        .min(o.upload_cap_bytes);
    let r = ops.resolve(&req.path, FOLLOW)?;
    let (file, st) = open_regular(&r)?;
    let bytes = read_capped(&r, &file, &st, cap)?;
    drop(file);
    let text = String::from_utf8(bytes).map_err(|_| SandboxError::NotText { path: r.shown() })?;
    if req.old.is_empty() {
        return Ok(ReplaceOutcome { replacements: 0 });
    }
    r.check_writable()?;
    let count = text.matches(req.old.as_str()).count();
    if count == 0 {
        return Err(SandboxError::NoMatch { path: r.shown() });
    }
    if req.expect_unique && count > 1 {
        return Err(SandboxError::Ambiguous {
            path: r.shown(),
            count,
        });
    }
    let replacements = if req.replace_all { count } else { 1 };
    let size = replaced_len(text.len(), req.old.len(), req.new.len(), replacements);
    if size.is_none_or(|n| n > cap) {
        return Err(SandboxError::ResultTooLarge {
            path: r.shown(),
            field: "new".into(),
            size: size.unwrap_or(u64::MAX),
            limit: cap,
        });
    }
    let mode = new_file_mode(ops, &r);
    let owner = o.owner_for(r.walked.mount);
    let mut tmp = TempFile::create(Place::of(r), owner, mode)?;
    {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut tmp.file);
        let mut last = 0;
        for (at, _) in text.match_indices(req.old.as_str()).take(replacements) {
            out.write_all(&text.as_bytes()[last..at])
                .and_then(|()| out.write_all(req.new.as_bytes()))
                .map_err(|e| tmp.place.io_err("write", e))?;
            last = at + req.old.len();
        }
        out.write_all(&text.as_bytes()[last..])
            .and_then(|()| out.flush())
            .map_err(|e| tmp.place.io_err("write", e))?;
    }
    adopt_metadata(owner, &tmp.place, &tmp.file)?;
    tmp.commit()?;
    Ok(ReplaceOutcome { replacements })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::tree;

    #[test]
    fn temp_names_are_unique_and_ignored() {
        let a = temp_name();
        let b = temp_name();
        assert_ne!(a, b);
        assert!(a.starts_with(".paddock-upload-") && a.ends_with(".part"));
        assert!(crate::ignore::is_ignored(&a));
    }

    #[test]
    fn abandoned_temp_files_are_removed() {
        let t = tree();
        let ops = t.ops(true);
        let names = |d: &std::path::Path| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            v.sort();
            v
        };
        let before = names(&t.w);
        // Anonymous: never an entry of the directory, gone with its descriptor.
        {
            let r = ops.resolve("/w/new.bin", CREATE).expect("resolve");
            let tmp = TempFile::create(Place::of(r), None, NEW_FILE_MODE).expect("temp");
            assert!(tmp.name.is_none(), "this filesystem has O_TMPFILE");
            assert_eq!(names(&t.w), before);
        }
        // Named (filesystems without O_TMPFILE): removed on drop.
        let r = ops.resolve("/w/new.bin", CREATE).expect("resolve");
        let name = {
            let tmp = TempFile::create_named(Place::of(r), None, NEW_FILE_MODE).expect("temp");
            let name = tmp.name.clone().expect("named");
            assert!(t.w.join(&name).exists());
            name
        };
        assert!(!t.w.join(name).exists());
        assert_eq!(names(&t.w), before);
    }

    #[test]
    fn temp_files_have_their_owner_and_mode_before_any_byte() {
        use std::os::unix::fs::MetadataExt;
        let root = rustix::process::geteuid().is_root();
        let owner = root.then_some((951_777, 951_778));
        let t = tree();
        let ops = t.ops(true);
        for named in [false, true] {
            let r = ops.resolve("/w/owned.bin", CREATE).expect("resolve");
            let mut tmp = if named {
                TempFile::create_named(Place::of(r), owner, PRIVATE_FILE_MODE)
            } else {
                TempFile::create(Place::of(r), owner, PRIVATE_FILE_MODE)
            }
            .expect("temp");
            let md = tmp.file.metadata().expect("fstat");
            assert_eq!(md.len(), 0);
            assert_eq!(md.mode() & 0o777, 0o600, "named: {named}");
            if let Some((uid, gid)) = owner {
                assert_eq!((md.uid(), md.gid()), (uid, gid), "named: {named}");
            }
            tmp.file.write_all(b"data").expect("write");
            tmp.commit().expect("commit");
            let md = std::fs::metadata(t.w.join("owned.bin")).expect("committed");
            assert_eq!(md.mode() & 0o777, 0o600);
            if let Some((uid, _)) = owner {
                assert_eq!(md.uid(), uid);
            }
            std::fs::remove_file(t.w.join("owned.bin")).expect("rm");
        }
    }
}
