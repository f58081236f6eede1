//! Which host uid/gid a sandbox runs as, and the user-namespace map lines that put it there.
//!
//! Invariant: a sandbox never runs as host root. When Paddock is root the sandbox gets a
//! dedicated unprivileged uid (a fixed one, or one from a range chosen by a stable hash of
//! `(user, thread)` so a thread's files stay writable across restarts); when Paddock is not
//! root the only uid it may map is its own. The map is the identity on that one uid, so a
//! file shows the same owner number inside the jail and on the host.

/// Default sandbox uid and gid when Paddock runs as root.
pub const DEFAULT_SANDBOX_ID: u32 = 951_000;

/// A range of host ids handed out to sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id.
    pub start: u32,
    /// How many.
    pub count: u32,
}

/// Errors choosing ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// 0 would be host root.
    #[error(
        "{field} must not be 0 (that is host root); pick an unused unprivileged id such as 951000"
    )]
    Root {
        /// The config field.
        field: &'static str,
    },
    /// A range that is empty or overflows.
    #[error("uid_range must have count >= 1, start >= 1 and end below 4294967295")]
    BadRange,
}

/// 64-bit FNV-1a: stable across Rust versions and platforms (unlike `DefaultHasher`), which is
/// what makes a thread's uid survive restarts and upgrades.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The (uid, gid) a sandbox of `(user, thread)` runs as on the host.
///
/// * `euid != 0`: Paddock's own ids (nothing else may be mapped without privilege).
/// * with a range: `start + fnv1a(user \0 thread) % count` for both.
/// * otherwise the configured fixed ids.
pub fn choose_ids(
    euid: u32,
    egid: u32,
    fixed: (u32, u32),
    range: Option<IdRange>,
    user: &str,
    thread: &str,
) -> Result<(u32, u32), IdError> {
    if euid != 0 {
        return Ok((euid, egid));
    }
    if let Some(r) = range {
        if r.count == 0 || r.start == 0 || r.start.checked_add(r.count).is_none() {
            return Err(IdError::BadRange);
        }
        let mut key = Vec::with_capacity(user.len() + thread.len() + 1);
        key.extend_from_slice(user.as_bytes());
        key.push(0);
        key.extend_from_slice(thread.as_bytes());
        let off = u32::try_from(fnv1a(&key) % u64::from(r.count)).map_err(|_| IdError::BadRange)?;
        let id = r.start + off;
        return Ok((id, id));
    }
    if fixed.0 == 0 {
        return Err(IdError::Root {
            field: "sandbox_uid",
        });
    }
    if fixed.1 == 0 {
        return Err(IdError::Root {
            field: "sandbox_gid",
        });
    }
    Ok(fixed)
}

/// The identity map line for one id (`"{id} {id} 1\n"`).
pub fn identity_map(id: u32) -> String {
    format!("{id} {id} 1\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_root_uses_its_own_ids() {
        assert_eq!(
            choose_ids(1000, 1001, (951_000, 951_000), None, "u", "t"),
            Ok((1000, 1001))
        );
        let r = Some(IdRange {
            start: 200_000,
            count: 1000,
        });
        assert_eq!(
            choose_ids(1000, 1001, (5, 5), r, "u", "t"),
            Ok((1000, 1001))
        );
    }

    #[test]
    fn root_uses_fixed_ids_never_zero() {
        assert_eq!(
            choose_ids(0, 0, (951_000, 951_001), None, "u", "t"),
            Ok((951_000, 951_001))
        );
        assert_eq!(
            choose_ids(0, 0, (0, 5), None, "u", "t"),
            Err(IdError::Root {
                field: "sandbox_uid"
            })
        );
        assert_eq!(
            choose_ids(0, 0, (5, 0), None, "u", "t"),
            Err(IdError::Root {
                field: "sandbox_gid"
            })
        );
    }

    #[test]
    fn range_is_stable_and_spread() {
        let r = Some(IdRange {
            start: 200_000,
            count: 1000,
        });
        let a = choose_ids(0, 0, (1, 1), r, "alice", "t1").unwrap();
        assert_eq!(a, choose_ids(0, 0, (1, 1), r, "alice", "t1").unwrap());
        assert!((200_000..201_000).contains(&a.0));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        let x = choose_ids(0, 0, (1, 1), r, "ab", "c").unwrap();
        let y = choose_ids(0, 0, (1, 1), r, "a", "bc").unwrap();
        assert_ne!(x, y);
        let distinct: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| {
                choose_ids(0, 0, (1, 1), r, "u", &format!("t{i}"))
                    .unwrap()
                    .0
            })
            .collect();
        assert!(distinct.len() > 90);
        // Pinned value: changing the hash would silently change every thread's owner.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            choose_ids(0, 0, (1, 1), Some(IdRange { start: 1, count: 0 }), "u", "t"),
            Err(IdError::BadRange)
        );
        assert_eq!(
            choose_ids(
                0,
                0,
                (1, 1),
                Some(IdRange {
                    start: u32::MAX,
                    count: 2
                }),
                "u",
                "t"
            ),
            Err(IdError::BadRange)
        );
    }

    #[test]
    fn map_lines() {
        assert_eq!(identity_map(951_000), "951000 951000 1\n");
    }
}
