//! The landlock ruleset of a sandboxed command: read and execute everywhere in the jail,
//! write only beneath the writable mounts, `/tmp`, `/dev/shm`, `/dev/pts` and the few device
//! files, and (ABI 6+) no signals or abstract unix sockets across the sandbox boundary.
//!
//! The access masks come from the `landlock` crate for the kernel's ABI; the rules are
//! planned here as plain data ([`LandlockPlan`]) and installed by the jail child with raw
//! syscalls on paths *inside* the jail, after `pivot_root` — the jail's `/tmp` is a tmpfs
//! that only exists in the child, so no rule could be built for it before the clone.
//! Invariant: a path gets write rights only if it is in the plan's writable list; the
//! handled set is always the full set of the ABI, so any right not granted is denied.

use landlock::{ABI, Access, AccessFs, Scope};

/// One rule: a jail path and the rights granted beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Absolute path inside the jail.
    pub path: String,
    /// Granted access bits (`LANDLOCK_ACCESS_FS_*`).
    pub access: u64,
}

/// A ruleset to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    /// The kernel ABI the plan targets (>= 1).
    pub abi: i32,
    /// Handled filesystem rights.
    pub handled_fs: u64,
    /// Scopes (ABI 6+: abstract unix sockets, signals).
    pub scoped: u64,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// The kernel's landlock ABI version (0 when landlock is unavailable).
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: with a NULL attribute, size 0 and the VERSION flag the syscall only returns
    // the ABI number (or an error); it reads and writes no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        0
    } else {
        i32::try_from(r).unwrap_or(0)
    }
}

/// Rights that apply to regular files (a rule on a file may only grant these).
pub fn file_rights(abi: i32) -> u64 {
    AccessFs::from_file(ABI::from(abi)).bits()
}

/// Every filesystem right of `abi`.
pub fn all_rights(abi: i32) -> u64 {
    AccessFs::from_all(ABI::from(abi)).bits()
}

/// Read-only rights of `abi` (execute, read file, read dir).
pub fn read_rights(abi: i32) -> u64 {
    AccessFs::from_read(ABI::from(abi)).bits()
}

/// Plans the ruleset for a jail with these writable directories and device files. Returns
/// `None` when the kernel has no landlock (`abi < 1`).
pub fn plan(abi: i32, writable_dirs: &[String], device_files: &[String]) -> Option<LandlockPlan> {
    if abi < 1 {
        return None;
    }
    let all = all_rights(abi);
    let mut rules = vec![Rule {
        path: "/".into(),
        access: read_rights(abi),
    }];
    for d in writable_dirs {
        rules.push(Rule {
            path: d.clone(),
            access: all,
        });
    }
    for f in device_files {
        rules.push(Rule {
            path: f.clone(),
            access: file_rights(abi) & !execute_bit(),
        });
    }
    let scoped = if abi >= 6 {
        Scope::from_all(ABI::from(abi)).bits()
    } else {
        0
    };
    Some(LandlockPlan {
        abi,
        handled_fs: all,
        scoped,
        rules,
    })
}

fn execute_bit() -> u64 {
    landlock::BitFlags::from(AccessFs::Execute).bits()
}

/// Size of `struct landlock_ruleset_attr` the kernel understands at `abi`.
pub fn ruleset_attr_size(abi: i32) -> usize {
    match abi {
        ..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_uapi() {
        // LANDLOCK_ACCESS_FS_EXECUTE .. MAKE_SYM are bits 0..=12 in ABI 1.
        assert_eq!(all_rights(1), (1 << 13) - 1);
        assert_eq!(all_rights(2), (1 << 14) - 1); // + REFER
        assert_eq!(all_rights(3), (1 << 15) - 1); // + TRUNCATE
        assert_eq!(all_rights(5), (1 << 16) - 1); // + IOCTL_DEV
        assert_eq!(read_rights(5), 0b1101); // EXECUTE | READ_FILE | READ_DIR
        assert_eq!(file_rights(5) & (1 << 3), 0, "READ_DIR is not a file right");
    }

    #[test]
    fn plan_grants_writes_only_where_listed() {
        let p = plan(
            7,
            &["/tmp".into(), "/mnt/user-data".into()],
            &["/dev/null".into()],
        )
        .unwrap();
        assert_eq!(
            p.rules[0],
            Rule {
                path: "/".into(),
                access: read_rights(7)
            }
        );
        assert_eq!(p.rules[0].access & (1 << 1), 0, "no WRITE_FILE on /");
        assert_eq!(p.rules[1].access, all_rights(7));
        assert_eq!(p.rules[3].path, "/dev/null");
        assert_ne!(p.rules[3].access & (1 << 1), 0, "/dev/null is writable");
        assert_eq!(p.rules[3].access & 1, 0, "device files are not executable");
        assert_eq!(p.handled_fs, all_rights(7));
        assert_eq!(
            p.scoped, 0b11,
            "signals and abstract sockets are scoped from ABI 6"
        );
        assert_eq!(plan(5, &[], &[]).unwrap().scoped, 0);
        assert!(plan(0, &[], &[]).is_none());
    }

    #[test]
    fn attr_sizes() {
        assert_eq!(ruleset_attr_size(1), 8);
        assert_eq!(ruleset_attr_size(4), 16);
        assert_eq!(ruleset_attr_size(7), 24);
    }
}
