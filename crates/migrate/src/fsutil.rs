//! Filesystem primitives of the migration: a rename that never replaces, the
//! filesystem identity used to tell a rename from a cross-filesystem move, and the
//! copy / verify / delete used only with `--allow-copy`.
//!
//! Invariant: nothing here follows a symbolic link — links are renamed, copied and
//! deleted as links — and nothing replaces an existing path. Below the entry a copy,
//! verification or removal starts from, every entry is reached through descriptors
//! (`paddock_sys::tree`), so a tree a tenant changes while it is migrated cannot steer
//! them outside it.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use paddock_sys::tree::{self, EntryKind};

use rustix::fs::{Access, AtFlags, CWD, RenameFlags, StatxFlags};

/// Identity of the filesystem (mount) a path is on: the mount id when the kernel reports
/// it (bind mounts of one device differ, and renames between them fail), else the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsId {
    dev: u64,
    mnt: Option<u64>,
}

/// The filesystem identity of `path` itself (not following a final symlink).
pub fn fs_id(path: &Path) -> io::Result<FsId> {
    let meta = fs::symlink_metadata(path)?;
    let mnt = rustix::fs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID)
        .ok()
        .filter(|st| StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID))
        .map(|st| st.stx_mnt_id);
    Ok(FsId {
        dev: meta.dev(),
        mnt,
    })
}

impl FsId {
    /// Whether a rename between the two can succeed as far as filesystems go.
    pub fn same_fs(&self, other: &FsId) -> bool {
        match (self.mnt, other.mnt) {
            (Some(a), Some(b)) => a == b,
            _ => self.dev == other.dev,
        }
    }
}

/// The nearest existing ancestor of `path` (or `path` itself), not following symlinks
/// for the final component checked.
pub fn nearest_existing(path: &Path) -> Option<PathBuf> {
    let mut cur = Some(path);
    while let Some(p) = cur {
        if fs::symlink_metadata(p).is_ok() {
            return Some(p.to_path_buf());
        }
        cur = p.parent();
    }
    None
}

/// Whether this process may create and remove entries in directory `dir`
/// (checked with the effective ids, so it also reports a read-only mount).
pub fn writable_dir(dir: &Path) -> io::Result<()> {
    accessat_w(dir)
}

fn accessat_w(path: &Path) -> io::Result<()> {
    rustix::fs::accessat(CWD, path, Access::WRITE_OK, AtFlags::EACCESS).map_err(io::Error::from)
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing `to`.
/// Falls back to check-then-rename on filesystems without `RENAME_NOREPLACE`.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Copies `from` (file, symlink or directory tree) to the new path `to`, keeping modes
/// (and owners, when run as root) and copying symlinks as links. The two parents are the
/// migration's own directories; everything below `from` is read through descriptors that
/// never follow a link ([`tree::copy_tree_at`]), so a tree changed while it is copied (a
/// directory swapped for a link to elsewhere on the host) makes the copy fail instead of
/// copying from outside it.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    tree::copy_tree_beneath(from, to)
}

/// Checks that `copy` is the same tree as `orig`: same entries, kinds, sizes, symlink
/// targets and file contents. Returns a description of the first difference. Both trees
/// are read through descriptors, never following a link.
pub fn verify_copy(orig: &Path, copy: &Path) -> io::Result<Result<(), String>> {
    let (op, on) = tree::split_path(orig)?;
    let (cp, cn) = tree::split_path(copy)?;
    let (od, cd) = (tree::open_root(op)?, tree::open_root(cp)?);
    verify_at(&od, on, &cd, cn, copy, 0)
}

fn verify_at(
    od: &OwnedFd,
    on: &OsStr,
    cd: &OwnedFd,
    cn: &OsStr,
    shown: &Path,
    depth: usize,
) -> io::Result<Result<(), String>> {
    let a = tree::stat_at(od, on)?;
    let Ok(b) = tree::stat_at(cd, cn) else {
        return Ok(Err(format!("{} is missing", shown.display())));
    };
    if a.kind == EntryKind::Symlink || b.kind == EntryKind::Symlink {
        if a.kind != b.kind || tree::read_link_at(od, on)? != tree::read_link_at(cd, cn)? {
            return Ok(Err(format!("symlink {} differs", shown.display())));
        }
        return Ok(Ok(()));
    }
    if a.kind == EntryKind::Dir {
        if b.kind != EntryKind::Dir {
            return Ok(Err(format!("{} is not a directory", shown.display())));
        }
        if depth >= tree::MAX_DEPTH {
            return Err(io::Error::other(format!(
                "{} is more than {} levels deep",
                shown.display(),
                tree::MAX_DEPTH
            )));
        }
        let (osub, csub) = (tree::open_dir_at(od, on)?, tree::open_dir_at(cd, cn)?);
        let mut names_a = tree::dir_names(&osub)?;
        let mut names_b = tree::dir_names(&csub)?;
        names_a.sort();
        names_b.sort();
        if names_a != names_b {
            return Ok(Err(format!("{} has different entries", shown.display())));
        }
        for n in names_a {
            if let Err(d) = verify_at(&osub, &n, &csub, &n, &shown.join(&n), depth + 1)? {
                return Ok(Err(d));
            }
        }
        return Ok(Ok(()));
    }
    if a.size != b.size {
        return Ok(Err(format!(
            "{} has {} bytes, the source {}",
            shown.display(),
            b.size,
            a.size
        )));
    }
    if hash_reader(tree::open_file_at(od, on)?)? != hash_reader(tree::open_file_at(cd, cn)?)? {
        return Ok(Err(format!("{} has different contents", shown.display())));
    }
    Ok(Ok(()))
}

/// A 128-bit FNV-1a digest of the regular file `path` (its last component opened without
/// following a link). Used to compare a copy with its source (both local, so a
/// non-cryptographic digest is enough).
pub fn hash_file(path: &Path) -> io::Result<u128> {
    let (parent, name) = tree::split_path(path)?;
    hash_reader(tree::open_file_at(tree::open_root(parent)?, name)?)
}

/// [`hash_file`] of what `r` yields, streamed.
pub fn hash_reader(mut r: impl Read) -> io::Result<u128> {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut buf = vec![0u8; 64 * 1024];
    let mut h = OFFSET;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        for b in &buf[..n] {
            h ^= u128::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    }
}

/// Removes `path` (file, symlink or tree) without following symlinks: the parent is the
/// migration's own directory, everything below is removed through descriptors
/// ([`tree::remove_tree_at`]).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    tree::remove_tree_beneath(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noreplace_refuses_existing_file_and_empty_dir() {
        let t = tempfile::tempdir().expect("tempdir");
        let a = t.path().join("a");
        let b = t.path().join("b");
        fs::write(&a, "a").expect("write");
        fs::write(&b, "b").expect("write");
        let e = rename_noreplace(&a, &b).expect_err("must refuse");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&b).expect("read"), "b");
        // An empty directory would be silently replaced by a plain rename(2).
        fs::create_dir(t.path().join("d1")).expect("mkdir");
        fs::create_dir(t.path().join("d2")).expect("mkdir");
        let e = rename_noreplace(&t.path().join("d1"), &t.path().join("d2")).expect_err("refuse");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(t.path().join("d1").is_dir());
    }

    #[test]
    fn copy_and_verify_keep_links_and_detect_changes() {
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        fs::create_dir_all(src.join("sub")).expect("mkdir");
        fs::write(src.join("sub/f"), "hello").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).expect("symlink");
        std::os::unix::fs::symlink("sub/f", src.join("rel")).expect("symlink");
        let dst = t.path().join("dst");
        copy_tree(&src, &dst).expect("copy");
        assert_eq!(verify_copy(&src, &dst).expect("verify"), Ok(()));
        assert_eq!(
            fs::read_link(dst.join("link")).expect("readlink"),
            Path::new("/etc/passwd")
        );
        fs::write(dst.join("sub/f"), "hellO").expect("write");
        let diff = verify_copy(&src, &dst)
            .expect("verify")
            .expect_err("differs");
        assert!(diff.contains("different contents"), "{diff}");
        fs::write(dst.join("sub/f"), "hello!").expect("write");
        let diff = verify_copy(&src, &dst)
            .expect("verify")
            .expect_err("differs");
        assert!(diff.contains("bytes"), "{diff}");
        remove_tree(&dst).expect("remove");
        assert!(fs::symlink_metadata(&dst).is_err());
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn fs_id_same_for_siblings() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::create_dir(t.path().join("x")).expect("mkdir");
        let a = fs_id(t.path()).expect("id");
        let b = fs_id(&t.path().join("x")).expect("id");
        assert!(a.same_fs(&b));
        let proc_id = fs_id(Path::new("/proc")).expect("id");
        assert!(!a.same_fs(&proc_id));
    }
}
