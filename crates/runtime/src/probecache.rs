//! Remembers, per boot, that the kernel passed the isolated runtime's probes, so a process
//! that runs one command (`paddock exec`) does not spend a throwaway jail on probing first.
//!
//! Why it is safe: a hit only ever skips probes that *passed* under the same boot, kernel,
//! uid and network mode; a failure is never cached. The probes exist to name a missing
//! feature before the first command; without them a missing feature still fails the first
//! jail loudly (its setup step is reported), so a stale or forged "passed" can cost the
//! nicer message, never an isolation layer. The file is trusted only when it belongs to
//! Paddock's uid and nobody else can write it.

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const HEADER: &str = "paddock kernel probe v1";

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
        )
    }

    fn with_facts(
        data_root: &Path,
        boot_id: &str,
        release: &str,
        euid: u32,
        landlock_abi: i32,
        network_ns: bool,
    ) -> Self {
        // Without a boot id nothing identifies this boot: never hit.
        let key = if boot_id.is_empty() {
            String::new()
        } else {
            format!(
                "{HEADER}\nboot_id={boot_id}\nrelease={release}\neuid={euid}\nlandlock_abi={landlock_abi}\nnetwork_ns={network_ns}\n"
            )
        };
        Self {
            file: data_root.join("state").join("kernel-probe"),
            key,
        }
    }

    /// Whether the probes passed before under the same facts.
    pub(crate) fn hit(&self) -> bool {
        if self.key.is_empty() {
            return false;
        }
        let Ok(meta) = std::fs::symlink_metadata(&self.file) else {
            return false;
        };
        if !meta.is_file() || meta.uid() != paddock_sys::process::euid() || meta.mode() & 0o022 != 0
        {
            return false;
        }
        std::fs::read_to_string(&self.file).is_ok_and(|s| s == self.key)
    }

    /// Records that the probes passed (atomically; mode 0600).
    pub(crate) fn record(&self) -> io::Result<()> {
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
        }
        std::fs::rename(&tmp, &self.file)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn cache(root: &Path, boot: &str, net: bool) -> ProbeCache {
        ProbeCache::with_facts(root, boot, "6.18.0", 0, 7, net)
    }

    #[test]
    fn a_recorded_pass_hits_only_under_the_same_facts() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), "b1", false);
        assert!(!c.hit());
        c.record().unwrap();
        assert!(c.hit());
        let mode = std::fs::metadata(tmp.path().join("state/kernel-probe"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another boot, another network mode, another kernel: probe again.
        assert!(!cache(tmp.path(), "b2", false).hit());
        assert!(!cache(tmp.path(), "b1", true).hit());
        assert!(!ProbeCache::with_facts(tmp.path(), "b1", "6.19.0", 0, 7, false).hit());
        assert!(!ProbeCache::with_facts(tmp.path(), "b1", "6.18.0", 0, 6, false).hit());
    }

    #[test]
    fn no_boot_id_never_hits_and_writable_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), "", false);
        c.record().unwrap();
        assert!(!c.hit());
        assert!(!tmp.path().join("state/kernel-probe").exists());
        let c = cache(tmp.path(), "b1", false);
        c.record().unwrap();
        let f = tmp.path().join("state/kernel-probe");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!c.hit(), "a group/world-writable cache must not be trusted");
    }
}
