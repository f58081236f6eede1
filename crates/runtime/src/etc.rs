//! The sandbox user's account entries. Commands run as an unprivileged host uid (951000 by
//! default) that the host's `/etc/passwd` does not know, and many programs ask for their
//! account: `whoami`, `id -un`, Python's `getpass.getuser()`, git and ssh refuse or complain,
//! and every shell start searches every NSS source for it (loading extra libraries each
//! time). The jail therefore sees `/etc/passwd` and `/etc/group` as the host's plus one
//! `sandbox` entry, bound read-only over the host's files from
//! `{data_dir}/state/jail-etc/{uid}.{gid}/`.
//!
//! Invariant: the files are rewritten only when their content changes, atomically (a jail
//! being built concurrently binds either the old or the new file, never a partial one).

use std::io;
use std::path::Path;

use paddock_sys::mountplan::{EtcFile, locked_flags_from_statvfs};

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `text` with `line` appended, unless a line's field `id_field` (`:`-separated) is `id`
/// already, in which case the host's own entry stands and `None` is returned.
fn with_entry(text: &str, line: &str, id_field: usize, id: u32) -> Option<String> {
    let known = text
        .lines()
        .any(|l| l.split(':').nth(id_field) == Some(id.to_string().as_str()));
    if known {
        return None;
    }
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    Some(out)
}

/// The `passwd` and `group` overlays for a sandbox running as `uid`:`gid` (only those the
/// host does not already cover), written below `data_root/state/jail-etc`.
pub(crate) fn etc_files(data_root: &Path, uid: u32, gid: u32) -> io::Result<Vec<EtcFile>> {
    let dir = data_root
        .join("state")
        .join("jail-etc")
        .join(format!("{uid}.{gid}"));
    let wanted = [
        (
            "passwd",
            2,
            uid,
            format!(
                "sandbox:x:{uid}:{gid}:Paddock sandbox:{}:/bin/bash",
                paddock_core::mount::WORKSPACE
            ),
        ),
        ("group", 2, gid, format!("sandbox:x:{gid}:")),
    ];
    let mut out = Vec::new();
    let mut dir_made = false;
    for (name, field, id, line) in wanted {
        let host = std::fs::read_to_string(Path::new("/etc").join(name)).unwrap_or_default();
        let Some(text) = with_entry(&host, &line, field, id) else {
            continue;
        };
        if !dir_made {
            std::fs::create_dir_all(&dir)?;
            dir_made = true;
        }
        let file = dir.join(name);
        if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            // Unique per writer: sandboxes of one uid may be prepared concurrently.
            let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.join(format!(".{name}.{}.{n}", std::process::id()));
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, &file)?;
        }
        let locked = locked_flags_from_statvfs(paddock_sys::process::statvfs_flags(&file)?);
        out.push(EtcFile {
            host: file,
            name: name.into(),
            locked,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_only_for_unknown_ids() {
        let host = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/sbin/nologin";
        let line = "sandbox:x:951000:951000:Paddock sandbox:/w:/bin/bash";
        let t = with_entry(host, line, 2, 951000).unwrap();
        assert_eq!(t, format!("{host}\n{line}\n"));
        assert_eq!(with_entry(host, line, 2, 65534), None);
        assert_eq!(with_entry("", "g:x:5:", 2, 5).unwrap(), "g:x:5:\n");
        // A name field equal to the id is not an id match.
        assert!(with_entry("951000:x:1:1::/:/bin/sh\n", line, 2, 951000).is_some());
    }

    #[test]
    fn concurrent_writers_do_not_trip_over_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for i in 0..8u32 {
                let root = tmp.path();
                s.spawn(move || {
                    for j in 0..20u32 {
                        // Alternate contents so files really get rewritten concurrently.
                        let gid = 3_999_000 + (i + j) % 2;
                        etc_files(root, 3_999_999, gid).unwrap();
                    }
                });
            }
        });
    }

    #[test]
    fn files_are_written_once_and_kept_when_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        // An id no host knows.
        let files = etc_files(tmp.path(), 3_999_999, 3_999_998).unwrap();
        assert_eq!(files.len(), 2);
        let passwd = std::fs::read_to_string(&files[0].host).unwrap();
        assert!(passwd.ends_with(
            "sandbox:x:3999999:3999998:Paddock sandbox:/mnt/user-data/workspace:/bin/bash\n"
        ));
        let group = std::fs::read_to_string(&files[1].host).unwrap();
        assert!(group.ends_with("sandbox:x:3999998:\n"));
        let before = std::fs::metadata(&files[0].host)
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let again = etc_files(tmp.path(), 3_999_999, 3_999_998).unwrap();
        assert_eq!(again, files);
        let after = std::fs::metadata(&files[0].host)
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "an unchanged file was rewritten");
        // uid 0 is in every host's passwd: no passwd overlay.
        let root = etc_files(tmp.path(), 0, 3_999_998).unwrap();
        assert_eq!(root.len(), 1);
        assert_eq!(root[0].name, "group");
    }
}
