//! Writes: `write_text`, `write_from_reader` (uploads) and `str_replace`.
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
        NEW_FILE_MODE,
    )?;
    let st = rustix::fs::fstat(&fd).map_err(|e| r.io_err("stat", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_regular(r.requested.as_str()));
    }
    if created {
        chown(&fd, ops.options().owner).map_err(|e| r.io_err("chown", e))?;
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

/// A temp file beside the target, removed on drop unless committed.
struct TempFile<'r, 't> {
    r: &'r Resolved<'t>,
    name: String,
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

impl<'r, 't> TempFile<'r, 't> {
    fn create(r: &'r Resolved<'t>) -> Result<Self, SandboxError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = None;
        for _ in 0..16 {
            let name = temp_name();
            match rustix::fs::openat(&r.dir, &name, flags, Mode::from_raw_mode(NEW_FILE_MODE)) {
                Ok(fd) => {
                    return Ok(Self {
                        r,
                        name,
                        file: std::fs::File::from(fd),
                        committed: false,
                    });
                }
                Err(rustix::io::Errno::EXIST) => last = Some(rustix::io::Errno::EXIST),
                Err(e) => return Err(r.io_err("create", e)),
            }
        }
        Err(r.io_err("create", last.unwrap_or(rustix::io::Errno::EXIST)))
    }

    /// fsync, then rename over the target in the same directory, then fsync the directory.
    fn commit(mut self) -> Result<(), SandboxError> {
        let r = self.r;
        let target = r
            .name()
            .ok_or_else(|| SandboxError::IsADirectory { path: r.shown() })?;
        self.file.sync_all().map_err(|e| r.io_err("fsync", e))?;
        rustix::fs::renameat(&r.dir, &self.name, &r.dir, target)
            .map_err(|e| r.io_err("rename", e))?;
        self.committed = true;
        // Durability of the rename itself; a failure here leaves a correct file behind.
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if let Ok(d) = rustix::fs::openat(&r.dir, ".", dir_flags, Mode::empty())
            && let Err(e) = rustix::fs::fsync(&d)
        {
            tracing::debug!(error = %e, "directory fsync failed after rename");
        }
        Ok(())
    }
}

impl Drop for TempFile<'_, '_> {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = rustix::fs::unlinkat(&self.r.dir, &self.name, AtFlags::empty())
        {
            tracing::warn!(error = %e, "could not remove an abandoned upload temp file");
        }
    }
}

/// Copies `body` into `out`, refusing more than `cap` bytes. Returns the bytes copied.
fn copy_capped(
    r: &Resolved<'_>,
    body: &mut dyn Read,
    out: &mut std::fs::File,
    cap: u64,
) -> Result<u64, SandboxError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SandboxError::Io {
                    op: "upload".into(),
                    path: r.shown(),
                    message: format!("reading the request body failed: {e}"),
                });
            }
        };
        total += n as u64;
        if total > cap {
            return Err(SandboxError::TooLarge {
                path: r.shown(),
                size: total,
                limit: cap,
            });
        }
        out.write_all(&buf[..n]).map_err(|e| r.io_err("write", e))?;
    }
}

pub(crate) fn write_from_reader(
    ops: &FsOps,
    req: &WriteBytes,
    body: &mut dyn Read,
) -> Result<WriteOutcome, SandboxError> {
    let cap = req.max_bytes.map_or(ops.options().upload_cap_bytes, |m| {
        m.min(ops.options().upload_cap_bytes)
    });
    let r = ops.resolve(&req.path, CREATE)?;
    expect_writable_target(&r)?;
    if req.append {
        let mut file = open_in_place(ops, &r, true)?;
        let before = file.metadata().map_err(|e| r.io_err("stat", e))?.len();
        let written = match copy_capped(&r, body, &mut file, cap) {
            Ok(n) => n,
            Err(e) => {
                // Undo the partial append so a refused upload leaves the file as it was.
                if let Err(te) = file.set_len(before) {
                    tracing::warn!(error = %te, "could not undo a refused append");
                }
                return Err(e);
            }
        };
        return Ok(WriteOutcome {
            path: r.vpath().to_string(),
            bytes_written: written,
        });
    }
    let mut tmp = TempFile::create(&r)?;
    let written = copy_capped(&r, body, &mut tmp.file, cap)?;
    adopt_metadata(ops, &r, &tmp.file)?;
    tmp.commit()?;
    Ok(WriteOutcome {
        path: r.vpath().to_string(),
        bytes_written: written,
    })
}

/// Gives the temp file the mode and owner of the file it replaces, or the configured owner
/// for a new file.
fn adopt_metadata(ops: &FsOps, r: &Resolved<'_>, tmp: &std::fs::File) -> Result<(), SandboxError> {
    let fd = rustix::fd::AsFd::as_fd(tmp);
    let existing = r
        .name()
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
            if let Some((uid, gid)) = ops.options().owner {
                rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(|e| r.io_err("chown", e))?;
            }
        }
    }
    Ok(())
}

pub(crate) fn str_replace(ops: &FsOps, req: &StrReplace) -> Result<ReplaceOutcome, SandboxError> {
    let r = ops.resolve(&req.path, FOLLOW)?;
    let (file, st) = open_regular(&r)?;
    let bytes = read_capped(&r, &file, &st, ops.options().text_cap_bytes)?;
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
    let (updated, replacements) = if req.replace_all {
        (text.replace(req.old.as_str(), &req.new), count)
    } else {
        (text.replacen(req.old.as_str(), &req.new, 1), 1)
    };
    let mut tmp = TempFile::create(&r)?;
    tmp.file
        .write_all(updated.as_bytes())
        .map_err(|e| r.io_err("write", e))?;
    adopt_metadata(ops, &r, &tmp.file)?;
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
        let r = ops.resolve("/w/new.bin", CREATE).expect("resolve");
        let name = {
            let tmp = TempFile::create(&r).expect("temp");
            assert!(t.w.join(&tmp.name).exists());
            tmp.name.clone()
        };
        assert!(!t.w.join(name).exists());
        assert!(!t.w.join("new.bin").exists());
    }
}
