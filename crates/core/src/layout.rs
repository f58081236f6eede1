//! The data layout on disk. Every per-thread path is built from validated ids, so no
//! request can name a directory outside `{data_dir}/users/{user}/threads/{thread}`.

use std::io;
use std::path::{Path, PathBuf};

use crate::ids::{ThreadId, UserId};

/// Error from preparing a thread's directories.
#[derive(Debug, thiserror::Error)]
#[error("could not create the {what} directory for thread {thread} of user {user}")]
pub struct LayoutError {
    /// Which directory (`workspace`, `uploads`, …).
    pub what: &'static str,
    /// The user.
    pub user: String,
    /// The thread.
    pub thread: String,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Paths of one thread's directories on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadDirs {
    /// `users/{u}/threads/{t}`.
    pub thread: PathBuf,
    /// `…/user-data`.
    pub user_data: PathBuf,
    /// `…/user-data/workspace`.
    pub workspace: PathBuf,
    /// `…/user-data/uploads`.
    pub uploads: PathBuf,
    /// `…/user-data/outputs`.
    pub outputs: PathBuf,
    /// `…/acp-workspace`.
    pub acp_workspace: PathBuf,
}

/// The root of Paddock's data (`data_dir`) and the paths derived from it.
///
/// With a gateway root (DeerFlow's state root, `DEER_FLOW_HOST_BASE_DIR`), users' data is
/// the gateway's own copy of the layout: threads under `{gateway}/users/{u}/threads/{t}`,
/// skills from its projections (`{gateway}/skills_view`, `{gateway}/users/{u}/skills_view`),
/// so a file the gateway puts in `uploads/` is in the sandbox at once and one a command
/// writes to `outputs/` is where the gateway serves it from. Paddock's own state stays in
/// `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLayout {
    root: PathBuf,
    gateway: Option<PathBuf>,
}

impl DataLayout {
    /// A layout rooted at `root` (not created until needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            gateway: None,
        }
    }

    /// The same layout with users' data in the gateway's state root `gateway`.
    pub fn with_gateway_root(mut self, gateway: Option<PathBuf>) -> Self {
        self.gateway = gateway;
        self
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The gateway's state root, when users' data lives there.
    pub fn gateway_root(&self) -> Option<&Path> {
        self.gateway.as_deref()
    }

    fn users_base(&self) -> &Path {
        self.gateway.as_deref().unwrap_or(&self.root)
    }

    /// `{root}/users/{user}` (the gateway root's with one).
    pub fn user_dir(&self, user: &UserId) -> PathBuf {
        self.users_base().join("users").join(user.as_str())
    }

    /// `{root}/users/{user}/threads/{thread}`.
    pub fn thread_dir(&self, user: &UserId, thread: &ThreadId) -> PathBuf {
        self.user_dir(user).join("threads").join(thread.as_str())
    }

    /// All directories of one thread.
    pub fn thread_dirs(&self, user: &UserId, thread: &ThreadId) -> ThreadDirs {
        let thread_dir = self.thread_dir(user, thread);
        let user_data = thread_dir.join("user-data");
        ThreadDirs {
            workspace: user_data.join("workspace"),
            uploads: user_data.join("uploads"),
            outputs: user_data.join("outputs"),
            acp_workspace: thread_dir.join("acp-workspace"),
            user_data,
            thread: thread_dir,
        }
    }

    /// `{root}/skills` (global skills, read-only to sandboxes); with a gateway root, its
    /// global projection `{gateway}/skills_view` (holding `public/`).
    pub fn skills_dir(&self) -> PathBuf {
        match &self.gateway {
            Some(g) => g.join("skills_view"),
            None => self.root.join("skills"),
        }
    }

    /// `{root}/users/{user}/skills/custom` (per-user skills, read-only to sandboxes); with a
    /// gateway root, the user's projection `{gateway}/users/{user}/skills_view/custom`.
    pub fn user_custom_skills_dir(&self, user: &UserId) -> PathBuf {
        match &self.gateway {
            Some(_) => self.user_dir(user).join("skills_view").join("custom"),
            None => self.user_dir(user).join("skills").join("custom"),
        }
    }

    /// With a gateway root, the user's projection of legacy skills
    /// (`{gateway}/users/{user}/skills_view/legacy`, at `/mnt/skills/legacy`).
    pub fn user_legacy_skills_dir(&self, user: &UserId) -> Option<PathBuf> {
        self.gateway
            .as_ref()
            .map(|_| self.user_dir(user).join("skills_view").join("legacy"))
    }

    /// `{root}/threads` — the legacy layout from before user isolation.
    pub fn legacy_threads_dir(&self) -> PathBuf {
        self.root.join("threads")
    }

    /// Creates the thread's directories (idempotent) and returns them.
    pub fn ensure_thread_dirs(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<ThreadDirs, LayoutError> {
        let dirs = self.thread_dirs(user, thread);
        let err = |what: &'static str| {
            let user = user.to_string();
            let thread = thread.to_string();
            move |source| LayoutError {
                what,
                user,
                thread,
                source,
            }
        };
        for (what, path) in [
            ("workspace", &dirs.workspace),
            ("uploads", &dirs.uploads),
            ("outputs", &dirs.outputs),
            ("acp-workspace", &dirs.acp_workspace),
        ] {
            match &self.gateway {
                None => std::fs::create_dir_all(path).map_err(err(what))?,
                Some(g) => create_as_owner_of(g, path).map_err(err(what))?,
            }
        }
        Ok(dirs)
    }
}

/// Creates `path` and its missing parents below `root`, each new directory given to the
/// owner of `root` (the gateway's user, who must be able to write its own tree) with mode
/// 0777 as the gateway makes them (containers of other uids write there).
pub(crate) fn create_as_owner_of(root: &Path, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let owner = std::fs::metadata(root)?;
    let rel = path
        .strip_prefix(root)
        .map_err(|_| io::Error::other("directory outside the gateway root"))?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::create_dir(&at) {
            Ok(()) => {
                std::os::unix::fs::lchown(&at, Some(owner.uid()), Some(owner.gid()))?;
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o777))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl DataLayout {
    /// Whether `path` lies in the gateway's tree (a directory another program owns).
    pub fn is_gateways(&self, path: &Path) -> bool {
        self.gateway.as_ref().is_some_and(|g| path.starts_with(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_spec() {
        let l = DataLayout::new("/d");
        let u = UserId::new("u1").unwrap();
        let t = ThreadId::new("t1").unwrap();
        let d = l.thread_dirs(&u, &t);
        assert_eq!(
            d.workspace,
            Path::new("/d/users/u1/threads/t1/user-data/workspace")
        );
        assert_eq!(
            d.uploads,
            Path::new("/d/users/u1/threads/t1/user-data/uploads")
        );
        assert_eq!(
            d.outputs,
            Path::new("/d/users/u1/threads/t1/user-data/outputs")
        );
        assert_eq!(
            d.acp_workspace,
            Path::new("/d/users/u1/threads/t1/acp-workspace")
        );
        assert_eq!(l.skills_dir(), Path::new("/d/skills"));
        assert_eq!(
            l.user_custom_skills_dir(&u),
            Path::new("/d/users/u1/skills/custom")
        );
        assert_eq!(l.legacy_threads_dir(), Path::new("/d/threads"));
    }

    #[test]
    fn a_gateway_root_holds_users_data_and_skill_projections() {
        let l = DataLayout::new("/d").with_gateway_root(Some("/df".into()));
        let u = UserId::new("u1").unwrap();
        let t = ThreadId::new("t1").unwrap();
        assert_eq!(
            l.thread_dirs(&u, &t).workspace,
            Path::new("/df/users/u1/threads/t1/user-data/workspace")
        );
        assert_eq!(l.root(), Path::new("/d"));
        assert_eq!(l.skills_dir(), Path::new("/df/skills_view"));
        assert_eq!(
            l.user_custom_skills_dir(&u),
            Path::new("/df/users/u1/skills_view/custom")
        );
        assert_eq!(
            l.user_legacy_skills_dir(&u).unwrap(),
            Path::new("/df/users/u1/skills_view/legacy")
        );
        assert!(l.is_gateways(Path::new("/df/users/u1")));
        assert!(!l.is_gateways(Path::new("/d/users/u1")));
        assert!(DataLayout::new("/d").user_legacy_skills_dir(&u).is_none());
    }

    #[test]
    fn ensure_creates_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let l = DataLayout::new(tmp.path());
        let u = UserId::default();
        let t = ThreadId::new("t").unwrap();
        let d = l.ensure_thread_dirs(&u, &t).unwrap();
        std::fs::write(d.workspace.join("keep"), "x").unwrap();
        let d2 = l.ensure_thread_dirs(&u, &t).unwrap();
        assert_eq!(d, d2);
        assert!(d.uploads.is_dir() && d.outputs.is_dir() && d.acp_workspace.is_dir());
        assert_eq!(
            std::fs::read_to_string(d.workspace.join("keep")).unwrap(),
            "x"
        );
    }

    #[test]
    fn ensure_reports_which_dir_failed() {
        let tmp = tempfile::tempdir().unwrap();
        // A file where the users/ directory should be.
        std::fs::write(tmp.path().join("users"), "").unwrap();
        let l = DataLayout::new(tmp.path());
        let e = l
            .ensure_thread_dirs(&UserId::default(), &ThreadId::new("t").unwrap())
            .unwrap_err();
        assert_eq!(e.what, "workspace");
        assert!(e.to_string().contains("thread t of user default"));
    }
}
