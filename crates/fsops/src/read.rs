//! Reads: `read_text`, `open_read` and `stat`.
//!
//! Invariant: only regular files are ever read. The final entry is opened `O_NOFOLLOW |
//! O_NONBLOCK` and checked with `fstat` on the opened fd, so a FIFO cannot hang a read and
//! a device or socket swapped in after the lookup is refused, not read.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;

use paddock_core::SandboxError;
use paddock_core::mount::Node;
use paddock_core::sandbox::{Entry, EntryKind, ReadBytes, ReadText, TextContent};
use rustix::fs::{AtFlags, FileType, OFlags, Stat};

use crate::resolve::{FOLLOW, Resolved};
use crate::{FsOps, OpenedFile};

/// The refusal for FIFOs, sockets and devices.
pub(crate) fn not_regular(path: &str) -> SandboxError {
    SandboxError::invalid_path(path, "is not a regular file (fifo, socket or device)")
}

/// Refuses what cannot be a regular file before anything is opened.
pub(crate) fn expect_file_node(r: &Resolved<'_>) -> Result<(), SandboxError> {
    match r.node() {
        Node::File => Ok(()),
        Node::Dir => Err(SandboxError::IsADirectory { path: r.shown() }),
        Node::Missing => Err(SandboxError::NotFound { path: r.shown() }),
        Node::Other => Err(not_regular(r.requested.as_str())),
        // A final symlink is always followed by the resolution; one here was swapped in.
        Node::Symlink(_) => Err(SandboxError::SymlinkLoop { path: r.shown() }),
    }
}

/// Opens the resolved regular file read-only and returns it with its `fstat`.
pub(crate) fn open_regular(r: &Resolved<'_>) -> Result<(std::fs::File, Stat), SandboxError> {
    expect_file_node(r)?;
    let fd: OwnedFd = r.open("open", OFlags::RDONLY | OFlags::NONBLOCK, 0)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| r.io_err("stat", e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(SandboxError::IsADirectory { path: r.shown() }),
        _ => return Err(not_regular(r.requested.as_str())),
    }
    // O_NONBLOCK only guarded the open; regular files ignore it, but callers stream this fd.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| r.io_err("open", e))?;
    Ok((std::fs::File::from(fd), st))
}

/// Reads the whole file, refusing more than `cap` bytes (checked by size and by reading,
/// as the file may grow meanwhile).
pub(crate) fn read_capped(
    r: &Resolved<'_>,
    mut file: &std::fs::File,
    st: &Stat,
    cap: u64,
) -> Result<Vec<u8>, SandboxError> {
    let size = st.st_size.max(0) as u64;
    if size > cap {
        return Err(SandboxError::TooLarge {
            path: r.shown(),
            size,
            limit: cap,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    (&mut file)
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| r.io_err("read", e))?;
    if buf.len() as u64 > cap {
        return Err(SandboxError::TooLarge {
            path: r.shown(),
            size: buf.len() as u64,
            limit: cap,
        });
    }
    Ok(buf)
}

/// Lines as a line-oriented reader counts them: a final line without `\n` counts.
pub(crate) fn count_lines(text: &str) -> u64 {
    let newlines = text.bytes().filter(|&b| b == b'\n').count() as u64;
    if text.is_empty() || text.ends_with('\n') {
        newlines
    } else {
        newlines + 1
    }
}

fn select_lines(text: &str, start: u64, end: u64) -> String {
    let skip = usize::try_from(start.saturating_sub(1)).unwrap_or(usize::MAX);
    let take = usize::try_from(end.saturating_sub(start).saturating_add(1)).unwrap_or(usize::MAX);
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .skip(skip)
        .take(take)
        .map(|l| {
            l.strip_suffix("\r\n")
                .or_else(|| l.strip_suffix('\n'))
                .unwrap_or(l)
        })
        .collect();
    lines.join("\n")
}

pub(crate) fn read_text(ops: &FsOps, req: &ReadText) -> Result<TextContent, SandboxError> {
    req.validate()?;
    let r = ops.resolve(&req.path, FOLLOW)?;
    let (file, st) = open_regular(&r)?;
    let cap = ops.options().text_cap_bytes;
    let cap = req.max_bytes.map_or(cap, |m| m.min(cap));
    let bytes = read_capped(&r, &file, &st, cap)?;
    let text = String::from_utf8(bytes).map_err(|_| SandboxError::NotText { path: r.shown() })?;
    let total_lines = count_lines(&text);
    let content = if req.start_line.is_none() && req.end_line.is_none() {
        text
    } else {
        select_lines(
            &text,
            req.start_line.unwrap_or(1),
            req.end_line.unwrap_or(u64::MAX),
        )
    };
    Ok(TextContent {
        path: r.vpath().to_string(),
        content,
        total_lines,
    })
}

pub(crate) fn open_read(ops: &FsOps, req: &ReadBytes) -> Result<OpenedFile, SandboxError> {
    let r = ops.resolve(&req.path, FOLLOW)?;
    let (mut file, st) = open_regular(&r)?;
    let file_size = st.st_size.max(0) as u64;
    if req.offset > file_size {
        return Err(SandboxError::invalid_argument(
            "offset",
            format!(
                "{} is past the end of {} ({file_size} bytes)",
                req.offset,
                r.shown()
            ),
        ));
    }
    let available = file_size - req.offset;
    let len = match req.len {
        None => available,
        Some(l) if l <= available => l,
        Some(l) => {
            return Err(SandboxError::invalid_argument(
                "len",
                format!(
                    "{l} bytes from offset {} runs past the end of {} ({file_size} bytes)",
                    req.offset,
                    r.shown()
                ),
            ));
        }
    };
    let cap = ops.options().download_cap_bytes;
    if len > cap {
        return Err(SandboxError::TooLarge {
            path: r.shown(),
            size: len,
            limit: cap,
        });
    }
    file.seek(SeekFrom::Start(req.offset))
        .map_err(|e| r.io_err("seek", e))?;
    Ok(OpenedFile {
        file,
        len,
        file_size,
        vpath: r.vpath().clone(),
    })
}

/// An [`Entry`] from a stat result.
pub(crate) fn entry_from_stat(path: paddock_core::VirtualPath, st: &Stat) -> Entry {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    let size = if kind == EntryKind::File {
        st.st_size.max(0) as u64
    } else {
        0
    };
    Entry {
        path,
        kind,
        size,
        modified: Some(st.st_mtime),
        escaped_path: None,
    }
}

pub(crate) fn stat(ops: &FsOps, path: &str) -> Result<Entry, SandboxError> {
    let r = ops.resolve(path, FOLLOW)?;
    if matches!(r.node(), Node::Missing) {
        return Err(SandboxError::NotFound { path: r.shown() });
    }
    let st = match r.name() {
        None => rustix::fs::fstat(&r.dir),
        Some(name) => rustix::fs::statat(&r.dir, name, AtFlags::SYMLINK_NOFOLLOW),
    }
    .map_err(|e| r.io_err("stat", e))?;
    Ok(entry_from_stat(r.vpath().clone(), &st))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counting() {
        assert_eq!(count_lines(""), 0);
        assert_eq!(count_lines("a"), 1);
        assert_eq!(count_lines("a\n"), 1);
        assert_eq!(count_lines("a\nb"), 2);
        assert_eq!(count_lines("\n\n"), 2);
    }

    #[test]
    fn line_selection_strips_terminators() {
        let t = "one\r\ntwo\nthree\nfour";
        assert_eq!(select_lines(t, 1, 2), "one\ntwo");
        assert_eq!(select_lines(t, 3, u64::MAX), "three\nfour");
        assert_eq!(select_lines(t, 4, 4), "four");
        assert_eq!(select_lines(t, 9, 12), "");
        assert_eq!(select_lines(t, 2, 2), "two");
    }
}
