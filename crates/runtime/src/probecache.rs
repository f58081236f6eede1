//! Remembers, per boot, that the kernel passed the isolated runtime's probes, so a process
//! that runs one command (`paddock exec`) does not spend a throwaway jail on probing first.
//!
//! Why it is safe: a hit only ever skips probes that *passed* under the same boot, kernel,
//! uid and network mode; a failure is never cached. The probes exist to name a missing
//! feature before the first command; without them a missing feature still fails the first
//! jail loudly (its setup step is reported), so a stale or forged "passed" can cost the
//! nicer message, never an isolation layer. The file is trusted only when it belongs to
//! Paddock's uid and nobody else can write it.
//!
//! It also remembers whether processes this one leaves behind are reaped, a property of the
//! pid namespace (its pid 1), hence the namespace in the key: the first run leaves an orphan
//! ([`paddock_sys::process::leave_orphan`]) and notes it; a later run looks whether it was
//! reaped (an adopter may reap on a timer: seconds are fine, never is not). A `paddock
//! exec` that knows orphans are reaped exits as soon as its command's status is known,
//! leaving the kernel to finish tearing the jail down; a forged "yes" could only leave
//! zombies behind, never weaken isolation.

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const HEADER: &str = "paddock kernel probe v2";
const ORPHANS: &str = "orphans_reaped=";
const ORPHAN_LEFT: &str = "orphan_left=";

/// What is known about orphans being reaped here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orphans {
    /// Nothing yet.
    Unknown,
    /// An orphan was left at `at` (seconds since the epoch) and is to be looked at.
    Left {
        orphan: paddock_sys::process::Orphan,
        at: u64,
    },
    /// Found out: they are reaped, or they are not.
    Reaped(bool),
}

impl Orphans {
    fn line(self) -> String {
        match self {
            Self::Unknown => String::new(),
            Self::Left { orphan, at } => {
                format!("{ORPHAN_LEFT}{} {} {at}\n", orphan.pid, orphan.start_ticks)
            }
            Self::Reaped(r) => format!("{ORPHANS}{}\n", if r { "yes" } else { "no" }),
        }
    }

    fn parse(rest: &str) -> Option<Self> {
        if rest.is_empty() {
            return Some(Self::Unknown);
        }
        if let Some(v) = rest.strip_prefix(ORPHANS) {
            return match v {
                "yes\n" => Some(Self::Reaped(true)),
                "no\n" => Some(Self::Reaped(false)),
                _ => None,
            };
        }
        let v = rest.strip_prefix(ORPHAN_LEFT)?.strip_suffix('\n')?;
        let mut f = v.split(' ');
        let (pid, start_ticks, at) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some() {
            return None;
        }
        Some(Self::Left {
            orphan: paddock_sys::process::Orphan {
                pid: pid.parse().ok().filter(|p| *p > 0)?,
                start_ticks: start_ticks.parse().ok()?,
            },
            at: at.parse().ok()?,
        })
    }
}

/// The cache file of one data directory and what a valid entry must say.
#[derive(Debug, Clone)]
pub(crate) struct ProbeCache {
    file: PathBuf,
    key: String,
}

impl ProbeCache {
    /// The cache for probes run with `network_ns` (whether execs get a network namespace).
    pub(crate) fn new(data_root: &Path, network_ns: bool) -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Self::with_facts(
            data_root,
            &read("/proc/sys/kernel/random/boot_id"),
            &read("/proc/sys/kernel/osrelease"),
            paddock_sys::process::euid(),
            paddock_sys::landlock::kernel_abi(),
            network_ns,
            paddock_sys::process::pid_namespace_inode_of_self(),
        )
    }

    fn with_facts(
        data_root: &Path,
        boot_id: &str,
        release: &str,
        euid: u32,
        landlock_abi: i32,
        network_ns: bool,
        pid_ns: Option<u64>,
    ) -> Self {
        // Without a boot id nothing identifies this boot: never hit.
        let key = match (boot_id.is_empty(), pid_ns) {
            (false, Some(pid_ns)) => format!(
                "{HEADER}\nboot_id={boot_id}\nrelease={release}\neuid={euid}\nlandlock_abi={landlock_abi}\nnetwork_ns={network_ns}\npid_ns={pid_ns}\n"
            ),
            _ => String::new(),
        };
        Self {
            file: data_root.join("state").join("kernel-probe"),
            key,
        }
    }

    /// `Some` when the probes passed before under the same facts, with what is known about
    /// orphans.
    pub(crate) fn lookup(&self) -> Option<Orphans> {
        if self.key.is_empty() {
            return None;
        }
        let meta = std::fs::symlink_metadata(&self.file).ok()?;
        if !meta.is_file() || meta.uid() != paddock_sys::process::euid() || meta.mode() & 0o022 != 0
        {
            return None;
        }
        let text = std::fs::read_to_string(&self.file).ok()?;
        Orphans::parse(text.strip_prefix(self.key.as_str())?)
    }

    /// Records that the probes passed, and what is known about orphans (atomically; mode
    /// 0600).
    pub(crate) fn record(&self, orphans: Orphans) -> io::Result<()> {
        if self.key.is_empty() {
            return Ok(());
        }
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".kernel-probe.{}", std::process::id()));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.key.as_bytes())?;
            f.write_all(orphans.line().as_bytes())?;
        }
        std::fs::rename(&tmp, &self.file)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn cache(root: &Path, boot: &str, net: bool) -> ProbeCache {
        ProbeCache::with_facts(root, boot, "6.18.0", 0, 7, net, Some(4026531836))
    }

    #[test]
    fn a_recorded_pass_hits_only_under_the_same_facts() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), "b1", false);
        assert_eq!(c.lookup(), None);
        c.record(Orphans::Unknown).unwrap();
        assert_eq!(c.lookup(), Some(Orphans::Unknown));
        let mode = std::fs::metadata(tmp.path().join("state/kernel-probe"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another boot, another network mode, another kernel: probe again.
        assert_eq!(cache(tmp.path(), "b2", false).lookup(), None);
        assert_eq!(cache(tmp.path(), "b1", true).lookup(), None);
        let facts = |release, abi, pid_ns| {
            ProbeCache::with_facts(tmp.path(), "b1", release, 0, abi, false, pid_ns)
        };
        assert_eq!(facts("6.19.0", 7, Some(4026531836)).lookup(), None);
        assert_eq!(facts("6.18.0", 6, Some(4026531836)).lookup(), None);
        // Another pid namespace (another container): its pid 1 may reap or not.
        assert_eq!(facts("6.18.0", 7, Some(4026532000)).lookup(), None);
        // No pid namespace to name: never hit, never written.
        let c = facts("6.18.0", 7, None);
        assert_eq!(c.lookup(), None);
    }

    #[test]
    fn whether_orphans_are_reaped_is_remembered_with_the_probes() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), "b1", false);
        let left = Orphans::Left {
            orphan: paddock_sys::process::Orphan {
                pid: 4242,
                start_ticks: 987654,
            },
            at: 1_796_000_000,
        };
        c.record(left).unwrap();
        assert_eq!(c.lookup(), Some(left));
        c.record(Orphans::Reaped(true)).unwrap();
        assert_eq!(c.lookup(), Some(Orphans::Reaped(true)));
        c.record(Orphans::Reaped(false)).unwrap();
        assert_eq!(c.lookup(), Some(Orphans::Reaped(false)));
        // Anything else after the key is not trusted at all.
        let f = tmp.path().join("state/kernel-probe");
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(
            &f,
            text.replace("orphans_reaped=no", "orphans_reaped=maybe"),
        )
        .unwrap();
        assert_eq!(c.lookup(), None);
        std::fs::write(&f, format!("{}extra\n", c.key)).unwrap();
        assert_eq!(c.lookup(), None);
        for bad in [
            "orphan_left=0 1 2\n",
            "orphan_left=1 2\n",
            "orphan_left=1 2 3 4\n",
            "orphan_left=x 2 3\n",
        ] {
            std::fs::write(&f, format!("{}{bad}", c.key)).unwrap();
            assert_eq!(c.lookup(), None, "{bad}");
        }
    }

    #[test]
    fn no_boot_id_never_hits_and_writable_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), "", false);
        c.record(Orphans::Reaped(true)).unwrap();
        assert_eq!(c.lookup(), None);
        assert!(!tmp.path().join("state/kernel-probe").exists());
        let c = cache(tmp.path(), "b1", false);
        c.record(Orphans::Reaped(true)).unwrap();
        let f = tmp.path().join("state/kernel-probe");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            c.lookup(),
            None,
            "a group/world-writable cache must not be trusted"
        );
    }
}
