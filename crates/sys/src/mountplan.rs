//! The mount plan of a jail: which directories, symlinks, tmpfs and bind mounts make up the
//! fresh root an exec runs in, in the order the child must perform them.
//!
//! Everything here is pure: host facts (is `/bin` a symlink, which flags does `/usr` carry,
//! which mounts lie below `/etc`) are gathered by [`HostFacts::gather`] and passed in, so the
//! plan is a deterministic function of its inputs and is unit-tested without privileges.
//! Invariant: every destination in a plan lies under the staging directory, every bind source
//! is referenced by index into [`MountPlan::sources`] (opened as a file descriptor by the
//! child before it changes uid, so a source is never looked up by path after that), and a
//! read-only bind is always followed by its read-only remount (and the remount of each of
//! its submounts) before anything else touches it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `MS_*` flags as the kernel defines them (the values are ABI and never change).
pub mod ms {
    /// Read-only.
    pub const RDONLY: u64 = 1;
    /// Ignore set-user-id bits.
    pub const NOSUID: u64 = 2;
    /// Disallow device files.
    pub const NODEV: u64 = 4;
    /// Disallow exec.
    pub const NOEXEC: u64 = 8;
    /// Change flags of an existing mount.
    pub const REMOUNT: u64 = 32;
    /// No access time updates.
    pub const NOATIME: u64 = 1024;
    /// No directory access time updates.
    pub const NODIRATIME: u64 = 2048;
    /// Bind mount.
    pub const BIND: u64 = 4096;
    /// Recursive.
    pub const REC: u64 = 16384;
    /// Private propagation.
    pub const PRIVATE: u64 = 1 << 18;
    /// Relative access time.
    pub const RELATIME: u64 = 1 << 21;
    /// Strict access time.
    pub const STRICTATIME: u64 = 1 << 24;
}

/// `statvfs` `f_flag` bits (`ST_*`).
pub mod st {
    /// Read-only.
    pub const RDONLY: u64 = 1;
    /// No set-uid.
    pub const NOSUID: u64 = 2;
    /// No devices.
    pub const NODEV: u64 = 4;
    /// No exec.
    pub const NOEXEC: u64 = 8;
    /// No atime.
    pub const NOATIME: u64 = 1024;
    /// No dir atime.
    pub const NODIRATIME: u64 = 2048;
    /// Relatime.
    pub const RELATIME: u64 = 4096;
}

/// The mount flags a remount must keep from the source mount. Inside a user namespace the
/// kernel locks `nosuid`, `nodev`, `noexec` and the atime mode of a mount inherited from the
/// host, and refuses a remount that would clear them, so they are carried over.
pub fn locked_flags_from_statvfs(f_flag: u64) -> u64 {
    let mut out = 0;
    for (s, m) in [
        (st::NOSUID, ms::NOSUID),
        (st::NODEV, ms::NODEV),
        (st::NOEXEC, ms::NOEXEC),
        (st::NOATIME, ms::NOATIME),
        (st::NODIRATIME, ms::NODIRATIME),
        (st::RELATIME, ms::RELATIME),
    ] {
        if f_flag & s != 0 {
            out |= m;
        }
    }
    if f_flag & (st::NOATIME | st::RELATIME) == 0 {
        // Neither noatime nor relatime: the source uses strictatime, which must be kept too.
        out |= ms::STRICTATIME;
    }
    out
}

/// What the host has at a top-level system path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemEntry {
    /// A symlink (merged-/usr systems: `/bin -> usr/bin`), recreated as the same symlink.
    Symlink {
        /// Name below `/` (`bin`).
        name: String,
        /// The link target as stored.
        target: String,
    },
    /// A directory, bound read-only.
    Dir {
        /// Name below `/` (`usr`).
        name: String,
        /// Locked flags of its mount (see [`locked_flags_from_statvfs`]).
        locked: u64,
        /// Mounts strictly below it: path relative to the directory, and their locked flags.
        submounts: Vec<(String, u64)>,
    },
}

/// Who owns a directory on disk, to be shown to the sandbox as its own ids through an
/// idmapped mount (a directory another program manages, such as DeerFlow's gateway, which
/// Paddock must not chown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdMap {
    /// The owner's host uid.
    pub uid: u32,
    /// The owner's host gid.
    pub gid: u32,
}

/// One bind of a mount-table directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataBind {
    /// Host directory (canonical).
    pub host: PathBuf,
    /// Virtual path inside the jail (absolute, normalised).
    pub jail: String,
    /// Read-only to the sandbox.
    pub read_only: bool,
    /// Locked flags of the host mount holding `host`.
    pub locked: u64,
    /// Show files of this owner as the sandbox's own (an idmapped mount); `None`: as they
    /// are on disk.
    pub idmap: Option<IdMap>,
}

/// Facts about the host that the plan depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// `/usr`, `/etc`, `/bin`, … as found.
    pub system: Vec<SystemEntry>,
    /// Locked flags of the mount holding `/dev`.
    pub dev_locked: u64,
}

/// Top-level names bound read-only when they are directories, recreated when symlinks.
pub const SYSTEM_NAMES: &[&str] = &[
    "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt",
];
/// Device nodes bound from the host `/dev`.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

impl HostFacts {
    /// Looks at the running host: symlink or directory for each of [`SYSTEM_NAMES`], mount
    /// flags via `statvfs`, submounts via `/proc/self/mountinfo`.
    pub fn gather() -> std::io::Result<Self> {
        Self::gather_with(&std::fs::read_to_string("/proc/self/mountinfo")?)
    }

    /// [`Self::gather`] with the text of `/proc/self/mountinfo` already read (reading it
    /// makes the kernel format every mount of the host; a caller that needs it for
    /// something else too reads it once).
    pub fn gather_with(mountinfo: &str) -> std::io::Result<Self> {
        let points = parse_mount_points(mountinfo);
        let mut system = Vec::new();
        for name in SYSTEM_NAMES {
            let p = Path::new("/").join(name);
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(&p)?;
                system.push(SystemEntry::Symlink {
                    name: (*name).to_owned(),
                    target: target.to_string_lossy().into_owned(),
                });
            } else if md.is_dir() {
                let locked = locked_flags_from_statvfs(crate::process::statvfs_flags(&p)?);
                let mut submounts = Vec::new();
                for sub in submounts_below(&points, &p) {
                    let flags = crate::process::statvfs_flags(Path::new(&sub.0)).unwrap_or(0);
                    submounts.push((sub.1, locked_flags_from_statvfs(flags)));
                }
                system.push(SystemEntry::Dir {
                    name: (*name).to_owned(),
                    locked,
                    submounts,
                });
            }
        }
        let dev_locked =
            locked_flags_from_statvfs(crate::process::statvfs_flags(Path::new("/dev"))?);
        Ok(Self { system, dev_locked })
    }
}

/// Mount points listed in a `/proc/self/mountinfo` text (field 5, octal escapes decoded).
pub fn parse_mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

/// Decodes the `\040`-style escapes mountinfo uses for space, tab, newline and backslash.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points strictly below `dir`: `(absolute, relative)` pairs, shallowest first.
pub fn submounts_below(points: &[String], dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = points
        .iter()
        .filter_map(|p| {
            let rel = Path::new(p).strip_prefix(dir).ok()?;
            let rel = rel.to_str()?;
            (!rel.is_empty()).then(|| (p.clone(), rel.to_owned()))
        })
        .collect();
    out.sort_by_key(|(_, r)| r.matches('/').count());
    out.dedup();
    out
}

/// One step of building the jail root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Mount a tmpfs.
    Tmpfs {
        /// Where.
        dst: PathBuf,
        /// Mount flags.
        flags: u64,
        /// `size=…,mode=…`.
        data: String,
    },
    /// Create a directory (an existing one is fine).
    Mkdir {
        /// Where.
        path: PathBuf,
    },
    /// Create a symlink.
    Symlink {
        /// Its target.
        target: String,
        /// Where.
        path: PathBuf,
    },
    /// Create an empty file (a mount point for a device node).
    Touch {
        /// Where.
        path: PathBuf,
    },
    /// Bind `sources[source]` onto `dst`.
    Bind {
        /// Index into [`MountPlan::sources`].
        source: usize,
        /// Where.
        dst: PathBuf,
        /// `MS_REC`: also bind the submounts.
        recursive: bool,
    },
    /// Bind `sources[source]` onto `dst` through an idmapped mount: files owned by
    /// `MountPlan::idmaps[idmap]` show as owned by the sandbox's ids, and what the sandbox
    /// creates there is owned by them on disk.
    IdmappedBind {
        /// Index into [`MountPlan::sources`].
        source: usize,
        /// Where.
        dst: PathBuf,
        /// Index into [`MountPlan::idmaps`].
        idmap: usize,
    },
    /// Change the flags of the mount at `dst` (`MS_REMOUNT | MS_BIND | flags`).
    Remount {
        /// Where.
        dst: PathBuf,
        /// Extra flags (`MS_RDONLY`, `MS_NOSUID`, … and the locked ones).
        flags: u64,
    },
    /// Mount a fresh procfs for the new pid namespace.
    Proc {
        /// Where.
        dst: PathBuf,
    },
    /// Mount a private devpts instance; failure is tolerated (terminals are a convenience).
    Devpts {
        /// Where.
        dst: PathBuf,
    },
    /// Create a file with these contents in the root tmpfs.
    File {
        /// Where.
        path: PathBuf,
        /// Its bytes.
        data: &'static [u8],
        /// Its mode.
        mode: u32,
    },
}

/// A host path a bind mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSource {
    /// The host path (absolute).
    pub path: PathBuf,
    /// Refuse the source when any component of the path is a symbolic link. Data
    /// directories are canonical when the plan is made, so a symlink found there at open
    /// time was planted since (a tenant swapping a directory it can write for a link to a
    /// host path); system directories are taken as the host has them.
    pub no_symlinks: bool,
}

impl std::ops::Deref for MountSource {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// Host paths the child opens (`O_PATH`) before it mounts anything.
    pub sources: Vec<MountSource>,
    /// The ordered steps.
    pub ops: Vec<MountOp>,
    /// The host directory the root tmpfs is mounted on (inside the child's mount namespace).
    pub staging: PathBuf,
    /// Jail paths where the sandbox may write (for landlock): directories.
    pub writable_dirs: Vec<String>,
    /// Jail paths of device files the sandbox may read and write (for landlock).
    pub device_files: Vec<String>,
    /// The distinct owners idmapped binds map to the sandbox's ids (each needs a user
    /// namespace holding that mapping when the jail is built).
    pub idmaps: Vec<IdMap>,
}

/// Inputs of [`plan_mounts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInputs {
    /// Host facts.
    pub facts: HostFacts,
    /// Mount-table directories.
    pub binds: Vec<DataBind>,
    /// Size of `/tmp` (and of `/dev/shm`), bytes.
    pub tmp_size_bytes: u64,
    /// Where the root tmpfs goes (a host directory every uid can traverse, e.g. `/tmp`).
    pub staging: PathBuf,
    /// Files bound read-only over the host's `/etc/{name}` (the sandbox user's `passwd`
    /// and `group` entries). Ignored when the host has no `/etc` directory.
    pub etc_files: Vec<EtcFile>,
    /// Files Paddock itself puts in the jail (the shell preload), read-only like the
    /// whole root; each under a top-level directory of its own.
    pub files: Vec<JailFile>,
    /// Symbolic links Paddock puts in the jail (command shims), placed as `files` are.
    pub links: Vec<JailLink>,
}

/// A file written into the jail's root (which then becomes read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFile {
    /// Jail path, absolute and normalised, at least two components deep.
    pub path: String,
    /// Contents.
    pub data: &'static [u8],
    /// Its mode (`0o444` for data, `0o555` for a program).
    pub mode: u32,
}

/// A symbolic link made in the jail's root, under a top directory of its own like a
/// [`JailFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailLink {
    /// Jail path of the link.
    pub path: String,
    /// What it points at.
    pub target: String,
}

/// A host file shown at `/etc/{name}` in the jail, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFile {
    /// The host file.
    pub host: PathBuf,
    /// Its name below `/etc` (one plain component).
    pub name: String,
    /// Locked flags of the file's host mount ([`locked_flags_from_statvfs`]).
    pub locked: u64,
}

/// Errors of planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A jail path is not absolute or not normalised.
    #[error("mount path {0:?} must be absolute and normalised")]
    BadJailPath(String),
    /// A mount would shadow a path the jail itself needs.
    #[error("mount path {0:?} collides with a system directory of the jail")]
    Reserved(String),
}

fn under(staging: &Path, jail: &str) -> PathBuf {
    staging.join(jail.trim_start_matches('/'))
}

fn valid_jail_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && p[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Builds the mount plan. Data binds are mounted shallowest first so a nested mount
/// (`/mnt/skills/custom`) lands on top of its parent (`/mnt/skills`); a nested mount point
/// must already exist in the parent's host directory (the runtime creates it when it prepares
/// the sandbox, because a read-only parent cannot be written from inside).
pub fn plan_mounts(inp: &MountInputs) -> Result<MountPlan, PlanError> {
    let s = &inp.staging;
    let mut sources: Vec<MountSource> = Vec::new();
    let mut ops = Vec::new();
    let mut src = |path: PathBuf, no_symlinks: bool| {
        sources.push(MountSource { path, no_symlinks });
        sources.len() - 1
    };
    ops.push(MountOp::Tmpfs {
        dst: s.clone(),
        flags: ms::NOSUID | ms::NODEV,
        data: "mode=0755,size=1m,nr_inodes=4096".into(),
    });
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for e in &inp.facts.system {
        match e {
            SystemEntry::Symlink { name, target } => {
                taken.insert(format!("/{name}"));
                ops.push(MountOp::Symlink {
                    target: target.clone(),
                    path: s.join(name),
                });
            }
            SystemEntry::Dir {
                name,
                locked,
                submounts,
            } => {
                taken.insert(format!("/{name}"));
                let dst = s.join(name);
                ops.push(MountOp::Mkdir { path: dst.clone() });
                let i = src(Path::new("/").join(name), false);
                ops.push(MountOp::Bind {
                    source: i,
                    dst: dst.clone(),
                    recursive: true,
                });
                ops.push(MountOp::Remount {
                    dst: dst.clone(),
                    flags: ms::RDONLY | ms::NOSUID | ms::NODEV | locked,
                });
                for (rel, sub_locked) in submounts {
                    ops.push(MountOp::Remount {
                        dst: dst.join(rel),
                        flags: ms::RDONLY | ms::NOSUID | ms::NODEV | sub_locked,
                    });
                }
                if name == "etc" {
                    for f in &inp.etc_files {
                        if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
                            return Err(PlanError::BadJailPath(format!("/etc/{}", f.name)));
                        }
                        let fdst = dst.join(&f.name);
                        let i = src(f.host.clone(), true);
                        ops.push(MountOp::Bind {
                            source: i,
                            dst: fdst.clone(),
                            recursive: false,
                        });
                        ops.push(MountOp::Remount {
                            dst: fdst,
                            flags: ms::RDONLY | ms::NOSUID | ms::NODEV | f.locked,
                        });
                    }
                }
            }
        }
    }
    // A fresh procfs; mounted before pivot_root because the kernel only lets a user namespace
    // mount proc while a fully visible proc is still in its mount namespace.
    ops.push(MountOp::Mkdir {
        path: s.join("proc"),
    });
    ops.push(MountOp::Proc {
        dst: s.join("proc"),
    });
    // A minimal /dev: a small tmpfs with single device nodes bound from the host.
    let dev = s.join("dev");
    ops.push(MountOp::Mkdir { path: dev.clone() });
    ops.push(MountOp::Tmpfs {
        dst: dev.clone(),
        flags: ms::NOSUID | ms::NOEXEC,
        data: "mode=0755,size=64k,nr_inodes=64".into(),
    });
    let mut device_files = Vec::new();
    for node in DEV_NODES {
        let p = dev.join(node);
        ops.push(MountOp::Touch { path: p.clone() });
        let i = src(Path::new("/dev").join(node), false);
        ops.push(MountOp::Bind {
            source: i,
            dst: p,
            recursive: false,
        });
        device_files.push(format!("/dev/{node}"));
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        ops.push(MountOp::Symlink {
            target: target.into(),
            path: dev.join(name),
        });
    }
    ops.push(MountOp::Mkdir {
        path: dev.join("pts"),
    });
    ops.push(MountOp::Devpts {
        dst: dev.join("pts"),
    });
    ops.push(MountOp::Mkdir {
        path: dev.join("shm"),
    });
    let tmp_data = format!("mode=1777,size={}", inp.tmp_size_bytes.max(4096));
    ops.push(MountOp::Tmpfs {
        dst: dev.join("shm"),
        flags: ms::NOSUID | ms::NODEV,
        data: tmp_data.clone(),
    });
    ops.push(MountOp::Mkdir {
        path: s.join("tmp"),
    });
    ops.push(MountOp::Tmpfs {
        dst: s.join("tmp"),
        flags: ms::NOSUID | ms::NODEV,
        data: tmp_data,
    });
    for t in ["/proc", "/dev", "/tmp"] {
        taken.insert(t.to_owned());
    }
    let mut writable_dirs = vec![
        "/tmp".to_owned(),
        "/dev/shm".to_owned(),
        "/dev/pts".to_owned(),
    ];
    let mut binds: Vec<&DataBind> = inp.binds.iter().collect();
    for b in &binds {
        if !valid_jail_path(&b.jail) {
            return Err(PlanError::BadJailPath(b.jail.clone()));
        }
        let top = format!("/{}", b.jail[1..].split('/').next().unwrap_or_default());
        if taken.contains(&top) {
            return Err(PlanError::Reserved(b.jail.clone()));
        }
    }
    binds.sort_by(|a, b| {
        a.jail
            .matches('/')
            .count()
            .cmp(&b.jail.matches('/').count())
            .then(a.jail.cmp(&b.jail))
    });
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut idmaps: Vec<IdMap> = Vec::new();
    let mut bound: Vec<&str> = Vec::new();
    for b in binds {
        let inside_bind = bound.iter().any(|p| b.jail.starts_with(&format!("{p}/")));
        if !inside_bind {
            let mut acc = String::new();
            for seg in b.jail[1..].split('/') {
                acc.push('/');
                acc.push_str(seg);
                if created.insert(acc.clone()) {
                    ops.push(MountOp::Mkdir {
                        path: under(s, &acc),
                    });
                }
            }
        }
        let dst = under(s, &b.jail);
        let i = src(b.host.clone(), true);
        match b.idmap {
            Some(m) => {
                let idmap = match idmaps.iter().position(|x| *x == m) {
                    Some(k) => k,
                    None => {
                        idmaps.push(m);
                        idmaps.len() - 1
                    }
                };
                ops.push(MountOp::IdmappedBind {
                    source: i,
                    dst: dst.clone(),
                    idmap,
                });
            }
            None => ops.push(MountOp::Bind {
                source: i,
                dst: dst.clone(),
                recursive: false,
            }),
        }
        let ro = if b.read_only { ms::RDONLY } else { 0 };
        ops.push(MountOp::Remount {
            dst,
            flags: ro | ms::NOSUID | ms::NODEV | b.locked,
        });
        if !b.read_only {
            writable_dirs.push(b.jail.clone());
        }
        bound.push(&b.jail);
    }
    let placed = inp
        .files
        .iter()
        .map(|f| (f.path.as_str(), Some(f)))
        .chain(inp.links.iter().map(|l| (l.path.as_str(), None)));
    for (i, (path, file)) in placed.enumerate() {
        let top = path
            .get(1..)
            .and_then(|r| r.split_once('/'))
            .map(|(t, _)| t);
        let Some(top) = top.filter(|_| valid_jail_path(path)) else {
            return Err(PlanError::BadJailPath(path.to_owned()));
        };
        let top = format!("/{top}");
        let under_top = format!("{top}/");
        if taken.contains(&top) || bound.iter().any(|b| *b == top || b.starts_with(&under_top)) {
            return Err(PlanError::Reserved(path.to_owned()));
        }
        let mut acc = String::new();
        let parent = &path[..path.rfind('/').unwrap_or(0)];
        for seg in parent[1..].split('/') {
            acc.push('/');
            acc.push_str(seg);
            if created.insert(acc.clone()) {
                ops.push(MountOp::Mkdir {
                    path: under(s, &acc),
                });
            }
        }
        match file {
            Some(f) => ops.push(MountOp::File {
                path: under(s, &f.path),
                data: f.data,
                mode: f.mode,
            }),
            None => {
                let l = &inp.links[i - inp.files.len()];
                ops.push(MountOp::Symlink {
                    target: l.target.clone(),
                    path: under(s, &l.path),
                });
            }
        }
    }
    // Last: the root itself becomes read-only, so nothing can be created at `/`.
    ops.push(MountOp::Remount {
        dst: s.clone(),
        flags: ms::RDONLY | ms::NOSUID | ms::NODEV,
    });
    Ok(MountPlan {
        sources,
        ops,
        staging: s.clone(),
        writable_dirs,
        device_files,
        idmaps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            system: vec![
                SystemEntry::Dir {
                    name: "usr".into(),
                    locked: ms::RELATIME,
                    submounts: vec![],
                },
                SystemEntry::Dir {
                    name: "etc".into(),
                    locked: ms::RELATIME,
                    submounts: vec![("resolv.conf".into(), ms::NOSUID | ms::RELATIME)],
                },
                SystemEntry::Symlink {
                    name: "bin".into(),
                    target: "usr/bin".into(),
                },
            ],
            dev_locked: 0,
        }
    }

    fn bind(host: &str, jail: &str, ro: bool) -> DataBind {
        DataBind {
            idmap: None,
            host: host.into(),
            jail: jail.into(),
            read_only: ro,
            locked: ms::RELATIME,
        }
    }

    fn inputs(binds: Vec<DataBind>) -> MountInputs {
        MountInputs {
            facts: facts(),
            binds,
            tmp_size_bytes: 1 << 20,
            staging: "/tmp".into(),
            etc_files: vec![],
            files: vec![],
            links: vec![],
        }
    }

    #[test]
    fn files_are_written_into_the_root_before_it_turns_read_only() {
        let mut inp = inputs(vec![bind("/h/ws", "/mnt/user-data/workspace", false)]);
        inp.files = vec![JailFile {
            path: "/.paddock/lib/preload.so".into(),
            data: b"\x7fELF",
            mode: 0o444,
        }];
        let plan = plan_mounts(&inp).unwrap();
        let at = |want: &MountOp| plan.ops.iter().position(|o| o == want).unwrap();
        let dir = at(&MountOp::Mkdir {
            path: "/tmp/.paddock".into(),
        });
        let sub = at(&MountOp::Mkdir {
            path: "/tmp/.paddock/lib".into(),
        });
        let file = at(&MountOp::File {
            path: "/tmp/.paddock/lib/preload.so".into(),
            data: b"\x7fELF",
            mode: 0o444,
        });
        let root_ro = at(&MountOp::Remount {
            dst: "/tmp".into(),
            flags: ms::RDONLY | ms::NOSUID | ms::NODEV,
        });
        assert!(dir < sub && sub < file && file < root_ro);
        assert_eq!(root_ro, plan.ops.len() - 1, "the root turns read-only last");
        assert!(
            !plan
                .writable_dirs
                .iter()
                .any(|d| d.starts_with("/.paddock"))
        );
    }

    #[test]
    fn files_keep_a_top_directory_of_their_own() {
        for (path, binds, want) in [
            ("/top.so", vec![], PlanError::BadJailPath("/top.so".into())),
            (
                "relative/x",
                vec![],
                PlanError::BadJailPath("relative/x".into()),
            ),
            ("/a/../x", vec![], PlanError::BadJailPath("/a/../x".into())),
            ("/usr/x.so", vec![], PlanError::Reserved("/usr/x.so".into())),
            ("/tmp/x.so", vec![], PlanError::Reserved("/tmp/x.so".into())),
            (
                "/mnt/x.so",
                vec![bind("/h", "/mnt/user-data", false)],
                PlanError::Reserved("/mnt/x.so".into()),
            ),
            (
                "/mnt/x.so",
                vec![bind("/h", "/mnt", true)],
                PlanError::Reserved("/mnt/x.so".into()),
            ),
        ] {
            let mut inp = inputs(binds);
            inp.files = vec![JailFile {
                path: path.into(),
                data: b"",
                mode: 0o444,
            }];
            assert_eq!(plan_mounts(&inp).unwrap_err(), want, "{path}");
        }
        // A bind whose name only starts like the file's directory is no collision.
        let mut inp = inputs(vec![bind("/h", "/mntx", false)]);
        inp.files = vec![JailFile {
            path: "/mnt/x.so".into(),
            data: b"",
            mode: 0o444,
        }];
        assert!(plan_mounts(&inp).is_ok());
    }

    #[test]
    fn etc_files_are_bound_read_only_over_the_hosts_etc() {
        let mut inp = inputs(vec![]);
        inp.etc_files = vec![EtcFile {
            host: "/data/state/jail-etc/951000.951000/passwd".into(),
            name: "passwd".into(),
            locked: ms::NOATIME,
        }];
        let plan = plan_mounts(&inp).unwrap();
        let at = |want: &MountOp| plan.ops.iter().position(|o| o == want).unwrap();
        let etc_ro = at(&MountOp::Remount {
            dst: "/tmp/etc".into(),
            flags: ms::RDONLY | ms::NOSUID | ms::NODEV | ms::RELATIME,
        });
        let i = plan
            .sources
            .iter()
            .position(|p| p.ends_with("passwd"))
            .unwrap();
        let bind = at(&MountOp::Bind {
            source: i,
            dst: "/tmp/etc/passwd".into(),
            recursive: false,
        });
        let ro = at(&MountOp::Remount {
            dst: "/tmp/etc/passwd".into(),
            flags: ms::RDONLY | ms::NOSUID | ms::NODEV | ms::NOATIME,
        });
        assert!(etc_ro < bind && bind + 1 == ro, "{:?}", plan.ops);
        for bad in ["", "a/b", "..", ".hidden"] {
            inp.etc_files[0].name = bad.into();
            assert!(plan_mounts(&inp).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn statvfs_flags_map_to_locked_mount_flags() {
        assert_eq!(
            locked_flags_from_statvfs(st::RELATIME | st::NOSUID),
            ms::RELATIME | ms::NOSUID
        );
        assert_eq!(
            locked_flags_from_statvfs(st::NOATIME | st::NODEV | st::NOEXEC),
            ms::NOATIME | ms::NODEV | ms::NOEXEC
        );
        assert_eq!(locked_flags_from_statvfs(0), ms::STRICTATIME);
        // RDONLY is not a locked flag: a remount adds it anyway.
        assert_eq!(
            locked_flags_from_statvfs(st::RDONLY | st::RELATIME),
            ms::RELATIME
        );
    }

    #[test]
    fn mountinfo_parsing() {
        let mi = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                  28 27 0:25 / /etc/my\\040dir ro,nosuid - tmpfs x ro\n\
                  29 27 0:26 / /etc/a/b rw - tmpfs y rw\n\
                  30 27 0:27 / /etcetera rw - tmpfs z rw\n";
        let pts = parse_mount_points(mi);
        assert_eq!(pts, ["/", "/etc/my dir", "/etc/a/b", "/etcetera"]);
        let subs = submounts_below(&pts, Path::new("/etc"));
        assert_eq!(
            subs,
            [
                ("/etc/my dir".to_owned(), "my dir".to_owned()),
                ("/etc/a/b".to_owned(), "a/b".to_owned())
            ]
        );
        assert_eq!(unescape_mountinfo("a\\134b\\011"), "a\\b\t");
    }

    #[test]
    fn system_dirs_are_bound_read_only_with_their_submounts() {
        let p = plan_mounts(&inputs(vec![])).unwrap();
        assert_eq!(p.sources[0].path, Path::new("/usr"));
        let i = p
            .ops
            .iter()
            .position(|o| matches!(o, MountOp::Bind { dst, .. } if dst == Path::new("/tmp/usr")))
            .unwrap();
        assert_eq!(
            p.ops[i + 1],
            MountOp::Remount {
                dst: "/tmp/usr".into(),
                flags: ms::RDONLY | ms::NOSUID | ms::NODEV | ms::RELATIME
            }
        );
        assert!(p.ops.contains(&MountOp::Remount {
            dst: "/tmp/etc/resolv.conf".into(),
            flags: ms::RDONLY | ms::NOSUID | ms::NODEV | ms::RELATIME
        }));
        assert!(p.ops.contains(&MountOp::Symlink {
            target: "usr/bin".into(),
            path: "/tmp/bin".into()
        }));
        // The root tmpfs is the first op and its read-only remount the last.
        assert!(matches!(&p.ops[0], MountOp::Tmpfs { dst, .. } if dst == Path::new("/tmp")));
        assert_eq!(
            p.ops.last(),
            Some(&MountOp::Remount {
                dst: "/tmp".into(),
                flags: ms::RDONLY | ms::NOSUID | ms::NODEV
            })
        );
        // proc is mounted before the root is finished (and long before pivot_root).
        assert!(p.ops.contains(&MountOp::Proc {
            dst: "/tmp/proc".into()
        }));
    }

    #[test]
    fn dev_is_minimal() {
        let p = plan_mounts(&inputs(vec![])).unwrap();
        let devs: Vec<&PathBuf> = p
            .ops
            .iter()
            .filter_map(|o| match o {
                MountOp::Bind { dst, .. } if dst.starts_with("/tmp/dev") => Some(dst),
                _ => None,
            })
            .collect();
        assert_eq!(devs.len(), DEV_NODES.len());
        assert!(p.device_files.contains(&"/dev/null".to_owned()));
        assert!(p.ops.contains(&MountOp::Symlink {
            target: "pts/ptmx".into(),
            path: "/tmp/dev/ptmx".into()
        }));
    }

    #[test]
    fn idmapped_binds_share_one_mapping_per_owner() {
        let owned = |host: &str, jail: &str, ro: bool, uid: u32| DataBind {
            idmap: Some(IdMap { uid, gid: uid }),
            ..bind(host, jail, ro)
        };
        let p = plan_mounts(&inputs(vec![
            owned("/g/config", "/mnt/integrations/lark-cli/config", true, 1000),
            owned(
                "/g/config/locks",
                "/mnt/integrations/lark-cli/config/locks",
                false,
                1000,
            ),
            owned("/g/data", "/mnt/integrations/lark-cli/data", false, 0),
            bind("/d/ws", "/mnt/user-data/workspace", false),
        ]))
        .unwrap();
        assert_eq!(
            p.idmaps,
            [
                IdMap {
                    uid: 1000,
                    gid: 1000
                },
                IdMap { uid: 0, gid: 0 }
            ]
        );
        let mapped: Vec<(&Path, usize)> = p
            .ops
            .iter()
            .filter_map(|o| match o {
                MountOp::IdmappedBind { source, idmap, .. } => {
                    Some((p.sources[*source].path.as_path(), *idmap))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            mapped,
            [
                (Path::new("/g/config"), 0),
                (Path::new("/g/data"), 1),
                (Path::new("/g/config/locks"), 0)
            ]
        );
        // Each is still followed by its remount (read-only where asked).
        let i = p
            .ops
            .iter()
            .position(|o| matches!(o, MountOp::IdmappedBind { idmap: 0, dst, .. } if dst.ends_with("config")))
            .unwrap();
        assert!(matches!(&p.ops[i + 1], MountOp::Remount { flags, .. } if flags & ms::RDONLY != 0));
        assert!(
            p.sources
                .iter()
                .all(|s| !s.path.starts_with("/g") || s.no_symlinks)
        );
    }

    #[test]
    fn data_binds_are_ordered_and_nested_mount_points_not_created() {
        let p = plan_mounts(&inputs(vec![
            bind("/d/skills/custom-u", "/mnt/skills/custom", true),
            bind("/d/ws", "/mnt/user-data/workspace", false),
            bind("/d/ud", "/mnt/user-data", false),
            bind("/d/skills", "/mnt/skills", true),
        ]))
        .unwrap();
        let order: Vec<&Path> = p
            .ops
            .iter()
            .filter_map(|o| match o {
                MountOp::Bind { source, .. } => Some(p.sources[*source].path.as_path()),
                _ => None,
            })
            .filter(|s| s.starts_with("/d"))
            .collect();
        assert_eq!(
            order,
            [
                Path::new("/d/skills"),
                Path::new("/d/ud"),
                Path::new("/d/skills/custom-u"),
                Path::new("/d/ws")
            ]
        );
        let mkdirs: Vec<&PathBuf> = p
            .ops
            .iter()
            .filter_map(|o| {
                if let MountOp::Mkdir { path } = o {
                    Some(path)
                } else {
                    None
                }
            })
            .collect();
        assert!(mkdirs.contains(&&PathBuf::from("/tmp/mnt")));
        assert!(mkdirs.contains(&&PathBuf::from("/tmp/mnt/skills")));
        // Inside a bind: the mount point comes from the host directory, never mkdir.
        assert!(!mkdirs.contains(&&PathBuf::from("/tmp/mnt/skills/custom")));
        assert!(!mkdirs.contains(&&PathBuf::from("/tmp/mnt/user-data/workspace")));
        assert!(p.ops.contains(&MountOp::Remount {
            dst: "/tmp/mnt/skills".into(),
            flags: ms::RDONLY | ms::NOSUID | ms::NODEV | ms::RELATIME
        }));
        assert!(p.ops.contains(&MountOp::Remount {
            dst: "/tmp/mnt/user-data".into(),
            flags: ms::NOSUID | ms::NODEV | ms::RELATIME
        }));
        assert_eq!(
            p.writable_dirs,
            [
                "/tmp",
                "/dev/shm",
                "/dev/pts",
                "/mnt/user-data",
                "/mnt/user-data/workspace"
            ]
        );
    }

    #[test]
    fn bad_binds_are_refused() {
        for (jail, want) in [
            ("relative", PlanError::BadJailPath("relative".into())),
            ("/a/../b", PlanError::BadJailPath("/a/../b".into())),
            ("/", PlanError::BadJailPath("/".into())),
            ("/usr/local/x", PlanError::Reserved("/usr/local/x".into())),
            ("/proc/x", PlanError::Reserved("/proc/x".into())),
        ] {
            assert_eq!(
                plan_mounts(&inputs(vec![bind("/h", jail, false)])).unwrap_err(),
                want
            );
        }
    }

    #[test]
    fn tmp_size_is_used() {
        let p = plan_mounts(&inputs(vec![])).unwrap();
        assert!(p.ops.contains(&MountOp::Tmpfs {
            dst: "/tmp/tmp".into(),
            flags: ms::NOSUID | ms::NODEV,
            data: format!("mode=1777,size={}", 1 << 20)
        }));
    }
}
