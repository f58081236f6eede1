//! The mount table: how virtual paths map to host directories for one sandbox.
//!
//! Invariant: a path accepted by [`MountTable::locate`] or [`MountTable::walk`] lies inside
//! the mount it started in, and a host path never leaves this module in an error.
//! Resolution is longest-prefix on whole segments; `..` may not leave the mount the path
//! started in; symlinks are interpreted in the *virtual* namespace (exactly as the command
//! running inside the sandbox sees them) and may not leave that mount either.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, shown};
use crate::ids::{ThreadId, UserId};
use crate::layout::{DataLayout, LayoutError};
use crate::vpath::{VirtualPath, lex};

/// `/mnt/user-data`.
pub const USER_DATA: &str = "/mnt/user-data";
/// `/mnt/user-data/workspace`, the cwd of every command.
pub const WORKSPACE: &str = "/mnt/user-data/workspace";
/// `/mnt/user-data/uploads`.
pub const UPLOADS: &str = "/mnt/user-data/uploads";
/// `/mnt/user-data/outputs`.
pub const OUTPUTS: &str = "/mnt/user-data/outputs";
/// `/mnt/acp-workspace` (read-only to the agent).
pub const ACP_WORKSPACE: &str = "/mnt/acp-workspace";
/// `/mnt/skills` (read-only).
pub const SKILLS: &str = "/mnt/skills";
/// `/mnt/skills/custom` (read-only, per user).
pub const CUSTOM_SKILLS: &str = "/mnt/skills/custom";
/// `/mnt/skills/legacy` (read-only, per user, with a gateway root).
pub const LEGACY_SKILLS: &str = "/mnt/skills/legacy";

/// The container paths DeerFlow's gateway sends as extra mounts of every create, exactly
/// the set its own provisioner accepts (`ALLOWED_EXTRA_MOUNT_PATHS`).
pub const GATEWAY_MOUNT_PATHS: &[&str] = &[
    "/mnt/acp-workspace",
    "/mnt/skills/custom",
    "/mnt/skills/integrations",
    "/mnt/integrations/lark-cli/config",
    "/mnt/integrations/lark-cli/config/locks",
    "/mnt/integrations/lark-cli/data",
    "/mnt/integrations/lark-cli/runtime",
];
/// Most gateway mounts per sandbox (DeerFlow's `MAX_EXTRA_MOUNTS`).
pub const MAX_GATEWAY_MOUNTS: usize = 10;

/// Container paths no custom mount may take or nest under.
pub const RESERVED_PREFIXES: &[&str] = &[USER_DATA, SKILLS, ACP_WORKSPACE];
/// System directories no custom mount may shadow (`/lib*` is matched by prefix).
pub const SYSTEM_DIRS: &[&str] = &[
    "/proc", "/sys", "/dev", "/usr", "/etc", "/bin", "/sbin", "/tmp",
];
/// Default cap on custom mounts.
pub const DEFAULT_MAX_CUSTOM_MOUNTS: usize = 16;

/// What a mount is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountKind {
    /// `/mnt/user-data`.
    UserData,
    /// `/mnt/user-data/workspace`.
    Workspace,
    /// `/mnt/user-data/uploads`.
    Uploads,
    /// `/mnt/user-data/outputs`.
    Outputs,
    /// `/mnt/acp-workspace`.
    AcpWorkspace,
    /// `/mnt/skills`.
    Skills,
    /// `/mnt/skills/custom`.
    CustomSkills,
    /// `/mnt/skills/legacy` (read-only, per user; with a gateway root only).
    LegacySkills,
    /// Operator-configured.
    Custom,
    /// Supplied by DeerFlow's gateway with the create request (see
    /// [`validate_gateway_mounts`]); replaces a built-in mount at the same path.
    Gateway,
}

/// One mapping of a virtual directory onto a host directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where the agent sees it.
    pub container: VirtualPath,
    /// The host directory (canonical when built by this crate's constructors).
    pub host: PathBuf,
    /// Whether writes are refused.
    pub read_only: bool,
    /// What it is.
    pub kind: MountKind,
}

impl Mount {
    /// Whether this is the thread's user data (`/mnt/user-data` and its three directories),
    /// the sandbox's own writable data.
    pub fn is_user_data(&self) -> bool {
        matches!(
            self.kind,
            MountKind::UserData | MountKind::Workspace | MountKind::Uploads | MountKind::Outputs
        )
    }
}

/// A custom mount as written in config or sent by a client (DeerFlow's `ExtraMount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// Absolute host directory.
    pub host_path: String,
    /// Absolute container path.
    pub container_path: String,
    /// Read-only (default false).
    #[serde(default)]
    pub read_only: bool,
}

/// Which custom-mount rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountRule {
    /// More mounts than allowed.
    #[error("too many mounts (at most {max})")]
    TooMany {
        /// The cap.
        max: usize,
    },
    /// `host_path` is relative.
    #[error("host_path must be absolute")]
    HostPathNotAbsolute,
    /// `host_path` does not exist or is not a directory.
    #[error("host_path does not exist or is not a directory")]
    HostPathMissing,
    /// `host_path` is outside every allowed root.
    #[error("host_path is not inside any of the allowed_host_roots")]
    HostPathNotAllowed,
    /// No allowed roots are configured, so no custom mount is possible.
    #[error("no allowed_host_roots are configured, so custom mounts are disabled")]
    NoAllowedRoots,
    /// `container_path` is malformed.
    #[error("container_path {0}")]
    ContainerPathInvalid(String),
    /// `/` or `/mnt`.
    #[error("container_path may not be / or /mnt")]
    ContainerPathTooBroad,
    /// Under a reserved prefix.
    #[error("container_path is reserved ({0} and everything under it belongs to Paddock)")]
    ContainerPathReserved(&'static str),
    /// A system directory.
    #[error("container_path may not be a system directory ({0})")]
    ContainerPathSystem(String),
    /// Two mounts on one container path.
    #[error("container_path is used by another mount")]
    Duplicate,
    /// A gateway mount arrived but no gateway root is configured.
    #[error(
        "container_path is one of DeerFlow's gateway mounts, but no DeerFlow state root is \
         configured (set DEER_FLOW_HOST_BASE_DIR or deerflow.host_base_dir)"
    )]
    NoGatewayRoot,
    /// A gateway mount's host path is outside the gateway's state root.
    #[error("host_path is outside the DeerFlow state root (DEER_FLOW_HOST_BASE_DIR)")]
    OutsideGatewayRoot,
    /// A gateway mount's host path is in another user's directory of the state root.
    #[error("host_path is inside another user's directory of the DeerFlow state root")]
    OtherUsersDirectory,
    /// A gateway mount's host path lies in a thread's `user-data`, which that thread's
    /// sandbox can change while the path is checked, created and mounted.
    #[error(
        "host_path is inside a thread's user-data, which its sandbox can change (refused: \
         Paddock would create and mount through directories a tenant controls)"
    )]
    InsideThreadData,
    /// A component of the host path is a symbolic link.
    #[error("host_path contains a symbolic link (refused, never followed)")]
    HostPathSymlink,
    /// A host path that is not lexically normalised (`.`, `..`, `//`).
    #[error("host_path must be normalised (no '.', '..' or empty segments)")]
    HostPathNotNormalised,
}

/// A rejected mount, named by its index and container path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mount {index} ({container_path}): {rule}")]
pub struct MountError {
    /// Index in the list given.
    pub index: usize,
    /// Its container path as given.
    pub container_path: String,
    /// The broken rule.
    pub rule: MountRule,
}

/// Errors building a thread's mount table.
#[derive(Debug, thiserror::Error)]
pub enum MountTableError {
    /// The thread's directories could not be made.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A mount was invalid.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A built-in directory could not be resolved.
    #[error("could not resolve the {what} directory")]
    Resolve {
        /// Which one.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What an operator allows for custom mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountPolicy {
    /// Host directories under which custom mounts may live.
    pub allowed_host_roots: Vec<PathBuf>,
    /// Cap on the number of custom mounts (0 means [`DEFAULT_MAX_CUSTOM_MOUNTS`]).
    pub max_mounts: usize,
}

/// Validates custom mounts against SPEC section 3 and returns them with canonical host
/// paths. Every rejection names the mount and the rule.
pub fn validate_custom_mounts(
    specs: &[MountSpec],
    policy: &MountPolicy,
) -> Result<Vec<Mount>, MountError> {
    let max = if policy.max_mounts == 0 {
        DEFAULT_MAX_CUSTOM_MOUNTS
    } else {
        policy.max_mounts
    };
    let err = |index: usize, spec: &MountSpec, rule| MountError {
        index,
        container_path: shown(&spec.container_path),
        rule,
    };
    if specs.len() > max {
        return Err(err(max, &specs[max], MountRule::TooMany { max }));
    }
    let roots: Vec<PathBuf> = policy
        .allowed_host_roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    let mut out: Vec<Mount> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let container =
            validate_container_path(&spec.container_path).map_err(|r| err(i, spec, r))?;
        if out.iter().any(|m| m.container == container) {
            return Err(err(i, spec, MountRule::Duplicate));
        }
        let host = Path::new(&spec.host_path);
        if !host.is_absolute() || spec.host_path.contains('\0') {
            return Err(err(i, spec, MountRule::HostPathNotAbsolute));
        }
        if policy.allowed_host_roots.is_empty() {
            return Err(err(i, spec, MountRule::NoAllowedRoots));
        }
        // Canonicalise so a symlink under an allowed root cannot point outside it.
        let canonical = match std::fs::canonicalize(host) {
            Ok(c) if c.is_dir() => c,
            _ => return Err(err(i, spec, MountRule::HostPathMissing)),
        };
        if !roots.iter().any(|r| canonical.starts_with(r)) {
            return Err(err(i, spec, MountRule::HostPathNotAllowed));
        }
        out.push(Mount {
            container,
            host: canonical,
            read_only: spec.read_only,
            kind: MountKind::Custom,
        });
    }
    Ok(out)
}

/// Validates the extra mounts DeerFlow's gateway sends (SPEC section 3, gateway-supplied
/// mounts), as DeerFlow's own provisioner does and stricter where it is lax: at most
/// [`MAX_GATEWAY_MOUNTS`]; the container path normalised and one of [`GATEWAY_MOUNT_PATHS`],
/// used once; the host path absolute, normalised, strictly inside `gateway_root`, inside
/// the requesting user's own `users/{user}` when it is under `users/`, and free of symbolic
/// links. A read-write mount's missing directory is created (as the gateway's user, see
/// [`DataLayout::ensure_thread_dirs`]); a read-only one must exist. The returned mounts
/// replace built-in ones at the same container path ([`MountTable::for_thread`]).
pub fn validate_gateway_mounts(
    specs: &[(usize, &MountSpec)],
    user: &UserId,
    gateway_root: Option<&Path>,
) -> Result<Vec<Mount>, MountError> {
    let err = |index: usize, spec: &MountSpec, rule| MountError {
        index,
        container_path: shown(&spec.container_path),
        rule,
    };
    if let Some((i, spec)) = specs.get(MAX_GATEWAY_MOUNTS) {
        return Err(err(
            *i,
            spec,
            MountRule::TooMany {
                max: MAX_GATEWAY_MOUNTS,
            },
        ));
    }
    let mut out: Vec<Mount> = Vec::with_capacity(specs.len());
    for (i, spec) in specs {
        let (i, spec) = (*i, *spec);
        let container = gateway_container_path(&spec.container_path).ok_or_else(|| {
            err(
                i,
                spec,
                MountRule::ContainerPathInvalid("is not a gateway mount path".into()),
            )
        })?;
        if out.iter().any(|m| m.container == container) {
            return Err(err(i, spec, MountRule::Duplicate));
        }
        let Some(root) = gateway_root else {
            return Err(err(i, spec, MountRule::NoGatewayRoot));
        };
        let host = Path::new(&spec.host_path);
        if !host.is_absolute() || spec.host_path.contains('\0') {
            return Err(err(i, spec, MountRule::HostPathNotAbsolute));
        }
        let trimmed = spec
            .host_path
            .strip_suffix('/')
            .filter(|t| !t.is_empty())
            .unwrap_or(&spec.host_path);
        if trimmed[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(err(i, spec, MountRule::HostPathNotNormalised));
        }
        let host = Path::new(trimmed);
        let rel = match host.strip_prefix(root) {
            Ok(r) if !r.as_os_str().is_empty() => r,
            _ => return Err(err(i, spec, MountRule::OutsideGatewayRoot)),
        };
        let mut parts = rel.components().map(|c| c.as_os_str());
        if parts.next() == Some(std::ffi::OsStr::new("users")) {
            if parts.next() != Some(std::ffi::OsStr::new(user.as_str())) {
                return Err(err(i, spec, MountRule::OtherUsersDirectory));
            }
            // users/{u}/threads/{t}/user-data/...: checked and created by path below, as
            // root, while the thread's sandbox may be changing it.
            let rest: Vec<_> = parts.collect();
            if rest.len() >= 3
                && rest[0] == std::ffi::OsStr::new("threads")
                && rest[2] == std::ffi::OsStr::new("user-data")
            {
                return Err(err(i, spec, MountRule::InsideThreadData));
            }
        }
        // Refuse a symlink anywhere below the root (the root itself is the operator's).
        let mut at = root.to_path_buf();
        for c in rel.components() {
            at.push(c);
            match std::fs::symlink_metadata(&at) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(err(i, spec, MountRule::HostPathSymlink));
                }
                Ok(md) if !md.is_dir() => return Err(err(i, spec, MountRule::HostPathMissing)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !spec.read_only => {
                    crate::layout::create_as_owner_of(root, host)
                        .map_err(|_| err(i, spec, MountRule::HostPathMissing))?;
                    break;
                }
                Err(_) => return Err(err(i, spec, MountRule::HostPathMissing)),
            }
        }
        out.push(Mount {
            container,
            host: host.to_path_buf(),
            read_only: spec.read_only,
            kind: MountKind::Gateway,
        });
    }
    Ok(out)
}

/// The normalised container path when `raw` names one of [`GATEWAY_MOUNT_PATHS`].
pub fn gateway_container_path(raw: &str) -> Option<VirtualPath> {
    if raw.split('/').any(|s| s == "..") {
        return None;
    }
    let vp = VirtualPath::parse(raw).ok()?;
    GATEWAY_MOUNT_PATHS.contains(&vp.as_str()).then_some(vp)
}

fn validate_container_path(raw: &str) -> Result<VirtualPath, MountRule> {
    if raw.split('/').any(|s| s == "..") {
        return Err(MountRule::ContainerPathInvalid(
            "may not contain '..'".into(),
        ));
    }
    let vp = VirtualPath::parse(raw).map_err(|e| match e {
        SandboxError::InvalidPath { reason, .. } => MountRule::ContainerPathInvalid(reason),
        other => MountRule::ContainerPathInvalid(other.to_string()),
    })?;
    if vp.is_root() || vp.as_str() == "/mnt" {
        return Err(MountRule::ContainerPathTooBroad);
    }
    for reserved in RESERVED_PREFIXES {
        let r = VirtualPath::parse(reserved)
            .map_err(|e| MountRule::ContainerPathInvalid(e.to_string()))?;
        if vp.starts_with(&r) {
            return Err(MountRule::ContainerPathReserved(reserved));
        }
    }
    let first = vp.segments().next().unwrap_or_default();
    let top = format!("/{first}");
    if SYSTEM_DIRS.contains(&top.as_str()) || first.starts_with("lib") {
        return Err(MountRule::ContainerPathSystem(top));
    }
    Ok(vp)
}

/// The result of lexical location: the normalised path and the mount it starts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<'a> {
    /// The normalised virtual path.
    pub vpath: VirtualPath,
    /// The mount whose container path is its longest prefix.
    pub mount: &'a Mount,
    /// The part below the mount root (`""` for the root itself).
    pub rel: String,
}

/// What a [`Walker`] found for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Nothing there.
    Missing,
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink with this target.
    Symlink(String),
    /// Anything else (device, socket, fifo).
    Other,
}

/// A filesystem cursor the walk algorithm drives. Implementations keep a stack of
/// directories; `fsops` uses file descriptors opened with `O_NOFOLLOW`, so a symlink
/// swapped in between two steps is seen as a symlink, never followed by the kernel.
pub trait Walker {
    /// Empties the stack.
    fn reset(&mut self);
    /// Pushes the root directory of `mount`.
    fn push_mount(&mut self, mount: &Mount) -> std::io::Result<()>;
    /// Looks at `name` in the top directory without following a symlink.
    fn lookup(&mut self, name: &str) -> std::io::Result<Node>;
    /// Pushes the directory `name` of the top directory (not following symlinks).
    fn descend(&mut self, name: &str) -> std::io::Result<()>;
    /// Pops the top directory.
    fn ascend(&mut self);
    /// Creates directory `name` in the top directory (an existing one is fine).
    fn mkdir(&mut self, name: &str) -> std::io::Result<()>;
}

/// How to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalkOptions {
    /// Follow a symlink in the last component.
    pub follow_final: bool,
    /// Create missing intermediate directories (refused in read-only mounts).
    pub create_parents: bool,
}

/// Where a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The path names the walker's top directory (a mount root, or after `..`).
    Current,
    /// The path names `name` inside the walker's top directory.
    Entry {
        /// The entry name.
        name: String,
        /// What it is (a symlink only when not followed).
        node: Node,
    },
}

/// The end of a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked<'a> {
    /// The final virtual path (after following symlinks).
    pub vpath: VirtualPath,
    /// The mount that owns the final path (longest prefix).
    pub mount: &'a Mount,
    /// Where it ended.
    pub target: Target,
}

/// Most symlinks followed in one resolution (Linux uses 40).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// The roots (host, virtual) longest first, and which bytes a root can start with.
#[derive(Debug, Clone)]
struct HostMask {
    roots: Vec<(String, VirtualPath)>,
    first_bytes: [bool; 256],
}

/// The mount table of one sandbox.
#[derive(Debug, Clone)]
pub struct MountTable {
    /// Sorted by container depth, deepest first.
    mounts: Vec<Mount>,
    /// Built on first use: the host roots longest first.
    host_mask: OnceLock<Option<HostMask>>,
}

impl PartialEq for MountTable {
    fn eq(&self, other: &Self) -> bool {
        self.mounts == other.mounts
    }
}

impl MountTable {
    /// A table from explicit mounts. Refuses two mounts on one container path.
    pub fn new(mut mounts: Vec<Mount>) -> Result<Self, MountError> {
        for (i, m) in mounts.iter().enumerate() {
            if mounts[..i].iter().any(|o| o.container == m.container) {
                return Err(MountError {
                    index: i,
                    container_path: m.container.to_string(),
                    rule: MountRule::Duplicate,
                });
            }
        }
        mounts.sort_by(|a, b| {
            b.container
                .depth()
                .cmp(&a.container.depth())
                .then(a.container.cmp(&b.container))
        });
        Ok(Self {
            mounts,
            host_mask: OnceLock::new(),
        })
    }

    /// The standard table of a thread (SPEC section 3): creates the thread's directories,
    /// the global skills dir and the user's custom skills dir, then maps them, plus the
    /// already validated `custom` mounts.
    pub fn for_thread(
        layout: &DataLayout,
        user: &UserId,
        thread: &ThreadId,
        custom: Vec<Mount>,
    ) -> Result<Self, MountTableError> {
        let dirs = layout.ensure_thread_dirs(user, thread)?;
        let skills = layout.skills_dir();
        let custom_skills = layout.user_custom_skills_dir(user);
        let legacy_skills = layout.user_legacy_skills_dir(user);
        let skill_dirs = [
            ("skills", Some(&skills)),
            ("custom skills", Some(&custom_skills)),
        ]
        .into_iter()
        .chain(std::iter::once(("legacy skills", legacy_skills.as_ref())));
        for (what, dir) in skill_dirs {
            let Some(dir) = dir else { continue };
            match layout.gateway_root() {
                Some(g) => crate::layout::create_as_owner_of(g, dir),
                None => std::fs::create_dir_all(dir),
            }
            .map_err(|source| MountTableError::Resolve { what, source })?;
        }
        let canon = |what: &'static str, p: &Path| {
            std::fs::canonicalize(p).map_err(|source| MountTableError::Resolve { what, source })
        };
        // Below the thread directory every directory is one Paddock made, and the agent can
        // write into user-data: a symlink there was planted, so it is refused, never
        // followed (its target would become a mount root the file API resolves beneath).
        let own = |what: &'static str, parent: &Path, name: &str| {
            let p = parent.join(name);
            let md = std::fs::symlink_metadata(&p)
                .map_err(|source| MountTableError::Resolve { what, source })?;
            if md.is_dir() {
                Ok(p)
            } else {
                Err(MountTableError::Resolve {
                    what,
                    source: std::io::Error::other(if md.is_symlink() {
                        "it is a symbolic link (refusing to follow it)"
                    } else {
                        "it is not a directory"
                    }),
                })
            }
        };
        let thread_dir = canon("thread", &dirs.thread)?;
        let user_data = own("user-data", &thread_dir, "user-data")?;
        let vp = |s: &str| {
            VirtualPath::parse(s).map_err(|e| MountTableError::Resolve {
                what: "virtual",
                source: std::io::Error::other(e.to_string()),
            })
        };
        let mut mounts = vec![
            Mount {
                container: vp(USER_DATA)?,
                host: user_data.clone(),
                read_only: false,
                kind: MountKind::UserData,
            },
            Mount {
                container: vp(WORKSPACE)?,
                host: own("workspace", &user_data, "workspace")?,
                read_only: false,
                kind: MountKind::Workspace,
            },
            Mount {
                container: vp(UPLOADS)?,
                host: own("uploads", &user_data, "uploads")?,
                read_only: false,
                kind: MountKind::Uploads,
            },
            Mount {
                container: vp(OUTPUTS)?,
                host: own("outputs", &user_data, "outputs")?,
                read_only: false,
                kind: MountKind::Outputs,
            },
            Mount {
                container: vp(ACP_WORKSPACE)?,
                host: own("acp-workspace", &thread_dir, "acp-workspace")?,
                read_only: true,
                kind: MountKind::AcpWorkspace,
            },
            Mount {
                container: vp(SKILLS)?,
                host: canon("skills", &skills)?,
                read_only: true,
                kind: MountKind::Skills,
            },
            Mount {
                container: vp(CUSTOM_SKILLS)?,
                host: canon("custom skills", &custom_skills)?,
                read_only: true,
                kind: MountKind::CustomSkills,
            },
        ];
        if let Some(legacy) = &legacy_skills {
            mounts.push(Mount {
                container: vp(LEGACY_SKILLS)?,
                host: canon("legacy skills", legacy)?,
                read_only: true,
                kind: MountKind::LegacySkills,
            });
        }
        // A mount the gateway manages replaces the built-in one at its path: the gateway
        // knows the directory it means (its own projection of the user's skills, the ACP
        // workspace it writes), and two mounts cannot share a path. User data is never
        // replaced (the gateway's validation refuses those paths).
        mounts.retain(|b| {
            !custom
                .iter()
                .any(|m| m.kind == MountKind::Gateway && m.container == b.container)
        });
        mounts.extend(custom);
        Ok(Self::new(mounts)?)
    }

    /// The mounts, deepest container path first.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The mounts as shown to clients (virtual path and access, never the host path),
    /// sorted by path.
    pub fn infos(&self) -> Vec<crate::sandbox::MountInfo> {
        let mut infos: Vec<crate::sandbox::MountInfo> = self
            .mounts
            .iter()
            .map(|m| crate::sandbox::MountInfo {
                path: m.container.to_string(),
                read_only: m.read_only,
            })
            .collect();
        infos.sort_by(|a, b| a.path.cmp(&b.path));
        infos
    }

    /// The mount whose container path is the longest whole-segment prefix of `vp`.
    pub fn mount_for(&self, vp: &VirtualPath) -> Option<&Mount> {
        self.mounts.iter().find(|m| vp.starts_with(&m.container))
    }

    /// The mount at exactly `vp`.
    pub fn mount_at(&self, vp: &VirtualPath) -> Option<&Mount> {
        self.mounts.iter().find(|m| &m.container == vp)
    }

    /// Mounts whose container path is a direct child of `vp` (listed as virtual children).
    pub fn child_mounts<'a>(&'a self, vp: &'a VirtualPath) -> impl Iterator<Item = &'a Mount> + 'a {
        self.mounts
            .iter()
            .filter(move |m| m.container.parent().as_ref() == Some(vp))
    }

    /// Whether any mount lies strictly below `vp`.
    pub fn has_nested(&self, vp: &VirtualPath) -> bool {
        self.mounts
            .iter()
            .any(|m| &m.container != vp && m.container.starts_with(vp))
    }

    /// Lexical resolution: validates and normalises `raw`, finds its mount, and refuses a
    /// `..` that leaves the mount the path started in (as DeerFlow does:
    /// `/mnt/user-data/workspace/../uploads` is an escape from the workspace mount).
    pub fn locate(&self, raw: &str) -> Result<Located<'_>, SandboxError> {
        let lexed = lex(raw)?;
        if let Some(before) = &lexed.before_dotdot {
            let started_in = self.mount_for(before);
            let stays = started_in.is_some_and(|m| lexed.normalized.starts_with(&m.container));
            if !stays {
                return Err(SandboxError::Escape { path: shown(raw) });
            }
        }
        let mount = self
            .mount_for(&lexed.normalized)
            .ok_or_else(|| SandboxError::Unmapped {
                path: lexed.normalized.to_string(),
            })?;
        let rel = lexed
            .normalized
            .strip_prefix(&mount.container)
            .unwrap_or_default()
            .to_owned();
        Ok(Located {
            vpath: lexed.normalized,
            mount,
            rel,
        })
    }

    /// Resolves `raw` through the filesystem with `walker`, following symlinks in the
    /// virtual namespace and refusing any that leave the starting mount.
    pub fn walk<W: Walker + ?Sized>(
        &self,
        raw: &str,
        opts: WalkOptions,
        w: &mut W,
    ) -> Result<Walked<'_>, SandboxError> {
        let loc = self.locate(raw)?;
        let shown_path = loc.vpath.to_string();
        let io = |e: std::io::Error| SandboxError::from_io("resolve", &shown_path, &e);
        let containment = loc.mount;
        let base_depth = containment.container.depth();
        let mut cur: Vec<String> = containment
            .container
            .segments()
            .map(str::to_owned)
            .collect();
        let mut queue: std::collections::VecDeque<String> = loc
            .rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        w.reset();
        w.push_mount(containment).map_err(io)?;
        let mut hops = 0usize;
        let mut last: Option<(String, Node)> = None;
        while let Some(c) = queue.pop_front() {
            last = None;
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    if cur.len() <= base_depth {
                        return Err(SandboxError::Escape { path: shown_path });
                    }
                    cur.pop();
                    w.ascend();
                    continue;
                }
                _ => {}
            }
            let is_last = queue.is_empty();
            let next =
                VirtualPath::from_segments(cur.iter().map(String::as_str).chain([c.as_str()]));
            if let Some(nested) = self.mount_at(&next) {
                w.push_mount(nested).map_err(io)?;
                cur.push(c);
                continue;
            }
            let node = w.lookup(&c).map_err(io)?;
            match node {
                Node::Symlink(target) if !is_last || opts.follow_final => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(SandboxError::SymlinkLoop { path: shown_path });
                    }
                    if target.is_empty() || target.contains('\0') {
                        return Err(SandboxError::NotFound { path: shown_path });
                    }
                    if target.starts_with('/') {
                        // Absolute targets are virtual paths: they must stay in this mount.
                        let t = lex(&target).map_err(|_| SandboxError::Escape {
                            path: shown_path.clone(),
                        })?;
                        let Some(rest) = t.normalized.strip_prefix(&containment.container) else {
                            return Err(SandboxError::Escape { path: shown_path });
                        };
                        let mut spliced: std::collections::VecDeque<String> = rest
                            .split('/')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect();
                        spliced.extend(queue.drain(..));
                        queue = spliced;
                        w.reset();
                        w.push_mount(containment).map_err(io)?;
                        cur = containment
                            .container
                            .segments()
                            .map(str::to_owned)
                            .collect();
                    } else {
                        for seg in target.rsplit('/') {
                            queue.push_front(seg.to_owned());
                        }
                    }
                }
                Node::Dir if !is_last => {
                    w.descend(&c).map_err(io)?;
                    cur.push(c);
                }
                Node::Missing if !is_last => {
                    if !opts.create_parents {
                        return Err(SandboxError::NotFound { path: shown_path });
                    }
                    let owner = self.mount_for(&next).unwrap_or(containment);
                    if owner.read_only {
                        return Err(SandboxError::ReadOnly { path: shown_path });
                    }
                    w.mkdir(&c).map_err(io)?;
                    w.descend(&c).map_err(io)?;
                    cur.push(c);
                }
                Node::File | Node::Other | Node::Symlink(_) | Node::Missing | Node::Dir
                    if !is_last =>
                {
                    return Err(SandboxError::NotADirectory { path: shown_path });
                }
                node => {
                    cur.push(c.clone());
                    last = Some((c, node));
                }
            }
        }
        let vpath = VirtualPath::from_segments(cur.iter().map(String::as_str));
        let mount = self.mount_for(&vpath).unwrap_or(containment);
        let target = match last {
            Some((name, node)) => Target::Entry { name, node },
            None => Target::Current,
        };
        Ok(Walked {
            vpath,
            mount,
            target,
        })
    }

    /// Resolves `raw` to a host path with a path-based walker (std::fs). Race-free
    /// callers use `paddock-fsops`; this is for `isolation: none` and for tests.
    pub fn resolve_host(
        &self,
        raw: &str,
        opts: WalkOptions,
    ) -> Result<(PathBuf, Walked<'_>), SandboxError> {
        let mut w = StdWalker::default();
        let walked = self.walk(raw, opts, &mut w)?;
        let top = w.top().cloned().unwrap_or_default();
        let host = match &walked.target {
            Target::Current => top,
            Target::Entry { name, .. } => top.join(name),
        };
        Ok((host, walked))
    }

    /// Refuses a write to `walked` when its owning mount is read-only.
    pub fn check_writable(walked: &Walked<'_>) -> Result<(), SandboxError> {
        if walked.mount.read_only {
            Err(SandboxError::ReadOnly {
                path: walked.vpath.to_string(),
            })
        } else {
            Ok(())
        }
    }

    /// The virtual path of a host path, when it lies under a mount (deepest host root wins).
    pub fn host_to_virtual(&self, host: &Path) -> Option<VirtualPath> {
        let mut best: Option<(&Mount, usize)> = None;
        for m in &self.mounts {
            if host.starts_with(&m.host) {
                let len = m.host.as_os_str().len();
                if best.is_none_or(|(_, l)| len > l) {
                    best = Some((m, len));
                }
            }
        }
        let (m, _) = best?;
        let rel = host.strip_prefix(&m.host).ok()?;
        let rel = rel.to_str()?;
        if rel.is_empty() {
            Some(m.container.clone())
        } else {
            m.container.join(rel).ok()
        }
    }

    fn host_roots_longest_first(&self) -> Vec<(&str, &VirtualPath)> {
        let mut roots: Vec<(&str, &VirtualPath)> = self
            .mounts
            .iter()
            .filter_map(|m| m.host.to_str().map(|h| (h, &m.container)))
            .filter(|(h, _)| *h != "/")
            .collect();
        roots.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        roots
    }

    /// Replaces host paths of this table's mounts in `text` by their virtual paths, so no
    /// host path reaches an agent. A root only matches at a path boundary
    /// (`/data/skills` does not match inside `/data/skills-extra`).
    pub fn mask_host_paths<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mask = self.host_mask.get_or_init(|| {
            let roots: Vec<(String, VirtualPath)> = self
                .host_roots_longest_first()
                .into_iter()
                .filter(|(h, _)| !h.is_empty())
                .map(|(h, c)| (h.to_owned(), c.clone()))
                .collect();
            if roots.is_empty() {
                return None;
            }
            let mut first_bytes = [false; 256];
            for (h, _) in &roots {
                first_bytes[usize::from(h.as_bytes()[0])] = true;
            }
            Some(HostMask { roots, first_bytes })
        });
        let Some(mask) = mask else {
            return Cow::Borrowed(text);
        };
        // A root starts with an ASCII byte or a UTF-8 lead byte, never a continuation
        // byte, so every position that passes the first-byte test is a char boundary.
        let bytes = text.as_bytes();
        let boundary_after = |end: usize| {
            text[end..]
                .chars()
                .next()
                .is_none_or(|c| c == '/' || !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-')))
        };
        let mut out: Option<String> = None;
        let (mut pos, mut i) = (0, 0);
        while i < bytes.len() {
            if mask.first_bytes[usize::from(bytes[i])] {
                let hit = mask.roots.iter().find(|(host, _)| {
                    bytes[i..].starts_with(host.as_bytes()) && boundary_after(i + host.len())
                });
                if let Some((host, container)) = hit {
                    let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    o.push_str(&text[pos..i]);
                    o.push_str(container.as_str());
                    i += host.len();
                    pos = i;
                    continue;
                }
            }
            i += 1;
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut o) => {
                o.push_str(&text[pos..]);
                Cow::Owned(o)
            }
        }
    }

    /// Rewrites virtual paths in a shell command into host paths (only for
    /// `isolation: none`, where commands run on the host). Every rewritten path is
    /// resolved first, so one that escapes its mount refuses the whole command.
    pub fn rewrite_command(&self, command: &str) -> Result<String, SandboxError> {
        const DELIMS: &[char] = &[
            ' ', '\t', '\n', '\r', '"', '\'', '`', ';', '&', '|', '<', '>', '(', ')',
        ];
        let mut containers: Vec<&Mount> = self.mounts.iter().collect();
        containers.sort_by_key(|m| std::cmp::Reverse(m.container.as_str().len()));
        let mut out = String::with_capacity(command.len());
        let mut i = 0;
        let bytes = command.as_bytes();
        while i < command.len() {
            let prev_ok = i == 0 || {
                let p = command[..i].chars().next_back().unwrap_or(' ');
                !(p.is_alphanumeric() || matches!(p, '_' | '.' | '-' | '/'))
            };
            if prev_ok && bytes[i] == b'/' {
                let rest = &command[i..];
                let hit = containers.iter().find(|m| {
                    let c = m.container.as_str();
                    rest.starts_with(c)
                        && rest[c.len()..]
                            .chars()
                            .next()
                            .is_none_or(|n| n == '/' || DELIMS.contains(&n))
                });
                if hit.is_some() {
                    let end = rest.find(DELIMS).unwrap_or(rest.len());
                    let token = &rest[..end];
                    let opts = WalkOptions {
                        follow_final: false,
                        create_parents: false,
                    };
                    let host = match self.resolve_host(token, opts) {
                        Ok((h, _)) => h,
                        // A path that does not exist yet is fine: the command may create it.
                        Err(SandboxError::NotFound { .. }) => {
                            let l = self.locate(token)?;
                            if l.rel.is_empty() {
                                l.mount.host.clone()
                            } else {
                                l.mount.host.join(&l.rel)
                            }
                        }
                        Err(e) => return Err(e),
                    };
                    out.push_str(&host.to_string_lossy());
                    i += end;
                    continue;
                }
            }
            let ch = command[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        Ok(out)
    }
}

/// A path-based [`Walker`] over `std::fs`. Not race-free; see `paddock-fsops` for that.
#[derive(Debug, Default)]
pub struct StdWalker {
    stack: Vec<PathBuf>,
}

impl StdWalker {
    /// The current directory.
    pub fn top(&self) -> Option<&PathBuf> {
        self.stack.last()
    }
}

impl Walker for StdWalker {
    fn reset(&mut self) {
        self.stack.clear();
    }
    fn push_mount(&mut self, mount: &Mount) -> std::io::Result<()> {
        self.stack.push(mount.host.clone());
        Ok(())
    }
    fn lookup(&mut self, name: &str) -> std::io::Result<Node> {
        let p = self.stack.last().map(|t| t.join(name)).unwrap_or_default();
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Node::Missing),
            Err(e) => Err(e),
            Ok(md) if md.file_type().is_symlink() => {
                let t = std::fs::read_link(&p)?;
                Ok(Node::Symlink(
                    t.to_str().map(str::to_owned).unwrap_or_default(),
                ))
            }
            Ok(md) if md.is_dir() => Ok(Node::Dir),
            Ok(md) if md.is_file() => Ok(Node::File),
            Ok(_) => Ok(Node::Other),
        }
    }
    fn descend(&mut self, name: &str) -> std::io::Result<()> {
        let p = self.stack.last().map(|t| t.join(name)).unwrap_or_default();
        self.stack.push(p);
        Ok(())
    }
    fn ascend(&mut self) {
        self.stack.pop();
    }
    fn mkdir(&mut self, name: &str) -> std::io::Result<()> {
        let p = self.stack.last().map(|t| t.join(name)).unwrap_or_default();
        match std::fs::create_dir(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
#[path = "mount_tests.rs"]
mod tests;
