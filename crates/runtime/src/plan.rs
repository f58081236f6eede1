//! A sandbox's jail plan: everything about its jail but the command — the root (mounts,
//! files, shims), the landlock ruleset, the ids it runs as, the idmappings of directories
//! other programs own, and its limits. Made once when the sandbox is prepared (blocking
//! filesystem work), used for every jail the sandbox builds.
//!
//! Invariant: directories are prepared on the host through descriptors opened without
//! following symlinks, starting from a directory Paddock trusts (the mount's host root), so
//! a tenant that swapped a directory it can write for a symlink never makes Paddock create
//! or chown anything outside it.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use paddock_core::{MountTable, SandboxError};
use paddock_sys::cgroup::{CgroupLimits, Controller, JoinPlan};
use paddock_sys::jail::{JailSpec, NetMode, Rlimit};
use paddock_sys::landlock::LandlockPlan;
use paddock_sys::mountplan::{
    DataBind, IdMap, JailFile, JailLink, MountInputs, MountPlan, locked_flags_from_statvfs,
    plan_mounts,
};

use crate::options::Network;
use crate::runtime::{JailBase, Runtime};

/// Where Paddock's own files and command shims live inside a jail.
pub const SHIM_DIR: &str = "/.paddock/bin";

/// Everything needed to build one of the sandbox's jails.
#[derive(Clone)]
pub(crate) struct JailPlan {
    pub rt: Arc<Runtime>,
    pub base: Arc<JailBase>,
    pub mounts: Arc<MountPlan>,
    pub landlock: Option<Arc<LandlockPlan>>,
    pub ids: (u32, u32),
    /// One user namespace per owner in `mounts.idmaps`.
    pub idmap_userns: Vec<Arc<OwnedFd>>,
}

fn internal(message: impl Into<String>) -> SandboxError {
    SandboxError::Internal {
        message: message.into(),
    }
}

impl JailPlan {
    /// Plans the jail of a sandbox over `table`, running as `ids`. Creates what the plan
    /// needs on the host: mount points of nested mounts, the sandbox user's account files,
    /// the idmapping namespaces.
    pub fn prepare(
        rt: &Arc<Runtime>,
        base: &Arc<JailBase>,
        table: &MountTable,
        ids: (u32, u32),
    ) -> Result<Self, SandboxError> {
        let o = rt.options();
        // Mount points of nested mounts must exist in the parent's host directory: a
        // read-only parent cannot get them from inside the jail.
        for m in table.mounts() {
            let parent = table
                .mounts()
                .iter()
                .filter(|p| p.container != m.container && m.container.starts_with(&p.container))
                .max_by_key(|p| p.container.depth());
            if let Some(p) = parent {
                let rel = m.container.strip_prefix(&p.container).unwrap_or_default();
                if p.host.join(rel) == m.host {
                    continue;
                }
                // A thread's data directory is canonical: a symlink in its path was
                // planted, so it is opened refusing one; other roots are the operator's.
                let made = if p.is_user_data() {
                    paddock_sys::tree::open_dir_no_symlinks(&p.host)
                        .and_then(|root| paddock_sys::tree::mkdirs_at(&root, rel))
                } else {
                    paddock_sys::tree::mkdirs_beneath(&p.host, rel)
                };
                made.map_err(|e| {
                    tracing::error!(error = %e, mount = %m.container, "could not create a mount point");
                    internal(format!("could not create the mount point of {}", m.container))
                })?;
            }
        }
        let privileged = base.privileged;
        let mut binds = Vec::new();
        for m in table.mounts() {
            let flags = paddock_sys::process::statvfs_flags(&m.host).map_err(|_| {
                internal(format!(
                    "could not inspect the directory of {}",
                    m.container
                ))
            })?;
            // A directory of another program (DeerFlow's gateway) is shown to the sandbox
            // as its own through an idmapped mount instead of being chowned.
            let idmap = if privileged && rt.layout().is_gateways(&m.host) {
                let owner = owner_of(&m.host).map_err(|e| {
                    tracing::error!(error = %e, mount = %m.container, "could not inspect a mount's owner");
                    internal(format!("could not inspect the directory of {}", m.container))
                })?;
                (owner != ids).then_some(IdMap {
                    uid: owner.0,
                    gid: owner.1,
                })
            } else {
                None
            };
            binds.push(DataBind {
                host: m.host.clone(),
                jail: m.container.to_string(),
                read_only: m.read_only,
                locked: locked_flags_from_statvfs(flags),
                idmap,
            });
        }
        let (files, links) = jail_extras(rt.prebuilds_shell());
        let mounts = plan_mounts(&MountInputs {
            facts: base.facts.clone(),
            binds,
            tmp_size_bytes: o.limits.tmp_size_bytes,
            staging: "/tmp".into(),
            files,
            links,
            etc_files: crate::etc::etc_files(rt.layout().root(), ids.0, ids.1).map_err(|e| {
                tracing::error!(error = %e, "could not write the sandbox user's account files");
                internal("could not write the sandbox user's account files")
            })?,
        })
        .map_err(|e| SandboxError::invalid_argument("mounts", e.to_string()))?;
        let landlock = paddock_sys::landlock::plan(
            base.landlock_abi,
            &mounts.writable_dirs,
            &mounts.device_files,
        );
        let idmap_userns = mounts
            .idmaps
            .iter()
            .map(|m| {
                paddock_sys::idmap::userns_for((m.uid, m.gid), ids)
                    .map(Arc::new)
                    .map_err(|e| {
                        tracing::error!(error = %e, "could not make an idmapping for a mount");
                        internal("could not map a directory's owner to the sandbox user")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            rt: rt.clone(),
            base: base.clone(),
            mounts: Arc::new(mounts),
            landlock: landlock.map(Arc::new),
            ids,
            idmap_userns,
        })
    }

    /// The sandbox's limits (for all its commands together).
    pub fn limits(&self) -> CgroupLimits {
        let o = self.rt.options();
        let nz = |v: u64| (v > 0).then_some(v);
        CgroupLimits {
            memory_bytes: nz(o.limits.memory_bytes),
            pids: nz(o.limits.pids),
            cpus: binding_cpus(o.limits.cpus, self.base.online_cpus),
        }
    }

    /// The jail's spec, joining `join`; `has` tells which controllers limit it (the others
    /// fall back to rlimits, which hold per process).
    pub fn spec(&self, join: JoinPlan, has: impl Fn(Controller) -> bool) -> JailSpec {
        let base = &self.base;
        let o = self.rt.options();
        let lim = self.limits();
        let mut rlimits = vec![Rlimit {
            resource: libc::RLIMIT_CORE as i32,
            value: 0,
        }];
        if o.limits.nofile > 0 {
            rlimits.push(Rlimit {
                resource: libc::RLIMIT_NOFILE as i32,
                value: o.limits.nofile.min(base.nofile_hard),
            });
        }
        if let (Some(p), false) = (lim.pids, has(Controller::Pids)) {
            rlimits.push(Rlimit {
                resource: libc::RLIMIT_NPROC as i32,
                value: p,
            });
        }
        if let (Some(m), false) = (lim.memory_bytes, has(Controller::Memory)) {
            rlimits.push(Rlimit {
                resource: libc::RLIMIT_AS as i32,
                value: m,
            });
        }
        JailSpec {
            mounts: (*self.mounts).clone(),
            landlock: self.landlock.as_deref().cloned(),
            seccomp: base.seccomp.clone(),
            uid: self.ids.0,
            gid: self.ids.1,
            privileged: base.privileged,
            net: match o.network {
                Network::Host => NetMode::Host,
                Network::None => NetMode::PerExec,
            },
            hostname: "sandbox".into(),
            program: base.shell.into(),
            rlimits,
            cgroup: join,
            cap_last_cap: base.cap_last_cap,
            waiting_shell: false,
            shell_locale: None,
            idmap_userns: self.idmap_userns.clone(),
        }
    }
}

/// The owner (uid, gid) of a directory.
pub(crate) fn owner_of(p: &Path) -> std::io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(p)?;
    Ok((md.uid(), md.gid()))
}

/// The cpu limit worth a cgroup: none for 0 (no limit) or for at least every online CPU,
/// which the quota could never hold back.
pub(crate) fn binding_cpus(cpus: f64, online: Option<u32>) -> Option<f64> {
    (cpus > 0.0 && online.is_none_or(|n| cpus < f64::from(n))).then_some(cpus)
}

/// `pip` for a root whose Python has pip but no `pip` command: `python3 -m pip`.
const PIP_SHIM: &[u8] = b"#!/bin/sh\nexec python3 -m pip \"$@\"\n";

/// What Paddock puts into every jail's root: the shell preload (when shells start ahead of
/// their command), and `python`/`pip` where the host's root has `python3` but not them —
/// in [`SHIM_DIR`], which comes last in `PATH`, so a root with its own always wins.
pub(crate) fn jail_extras(preload: bool) -> (Vec<JailFile>, Vec<JailLink>) {
    let mut files = Vec::new();
    let mut links = Vec::new();
    if preload {
        files.push(JailFile {
            path: paddock_sys::jail::SHELL_PRELOAD_PATH.into(),
            data: paddock_sys::jail::SHELL_PRELOAD,
            mode: 0o444,
        });
    }
    let (python, pip) = shims_needed(|p| Path::new(p).exists());
    if let Some(target) = python {
        links.push(JailLink {
            path: format!("{SHIM_DIR}/python"),
            target,
        });
    }
    match pip {
        Some(PipShim::Link(target)) => links.push(JailLink {
            path: format!("{SHIM_DIR}/pip"),
            target,
        }),
        Some(PipShim::Module) => files.push(JailFile {
            path: format!("{SHIM_DIR}/pip"),
            data: PIP_SHIM,
            mode: 0o555,
        }),
        None => {}
    }
    (files, links)
}

/// How `pip` is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PipShim {
    /// A link to the root's `pip3`.
    Link(String),
    /// `python3 -m pip`.
    Module,
}

/// The directories of the base `PATH` a command searches before the shims.
const SEARCHED: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Which shims a root needs, given what exists in it: `python` (a link to its `python3`)
/// when it has `python3` but no `python`; `pip` when it has no `pip` but `pip3` (a link) or
/// a Python whose `pip` module can run (`python3 -m pip`).
pub(crate) fn shims_needed(exists: impl Fn(&str) -> bool) -> (Option<String>, Option<PipShim>) {
    let find = |name: &str| {
        SEARCHED
            .iter()
            .map(|d| format!("{d}/{name}"))
            .find(|p| exists(p))
    };
    let python3 = find("python3");
    let python = match (&python3, find("python")) {
        (Some(p3), None) => Some(p3.clone()),
        _ => None,
    };
    let pip = if find("pip").is_some() {
        None
    } else if let Some(p3) = find("pip3") {
        Some(PipShim::Link(p3))
    } else if python3.is_some()
        && ["/usr/lib/python3/dist-packages/pip", "/usr/local/lib"]
            .iter()
            .any(|d| exists(d))
    {
        Some(PipShim::Module)
    } else {
        None
    };
    (python, pip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limits_only_where_they_can_bind() {
        assert_eq!(binding_cpus(0.0, Some(4)), None);
        assert_eq!(binding_cpus(1.5, Some(4)), Some(1.5));
        assert_eq!(binding_cpus(4.0, Some(4)), None);
        assert_eq!(binding_cpus(2.0, Some(2)), None);
        assert_eq!(binding_cpus(2.0, None), Some(2.0));
    }

    #[test]
    fn shims_only_where_the_root_lacks_the_command() {
        let root = |have: &'static [&'static str]| move |p: &str| have.contains(&p);
        // Debian with python3 only.
        assert_eq!(
            shims_needed(root(&[
                "/usr/bin/python3",
                "/usr/lib/python3/dist-packages/pip"
            ])),
            (Some("/usr/bin/python3".into()), Some(PipShim::Module))
        );
        assert_eq!(
            shims_needed(root(&["/usr/bin/python3", "/usr/bin/pip3"])),
            (
                Some("/usr/bin/python3".into()),
                Some(PipShim::Link("/usr/bin/pip3".into()))
            )
        );
        // A root with its own python and pip gets nothing.
        assert_eq!(
            shims_needed(root(&[
                "/usr/local/bin/python",
                "/usr/local/bin/python3",
                "/usr/local/bin/pip"
            ])),
            (None, None)
        );
        // No Python at all: nothing to offer.
        assert_eq!(shims_needed(root(&[])), (None, None));
        // python3 without pip: only python.
        assert_eq!(
            shims_needed(root(&["/usr/bin/python3"])),
            (Some("/usr/bin/python3".into()), None)
        );
    }

    #[test]
    fn the_shim_dir_is_searched_last() {
        let path = crate::env::ISOLATED_BASE
            .iter()
            .find(|(k, _)| *k == "PATH")
            .map(|(_, v)| *v)
            .unwrap_or_default();
        assert!(path.ends_with(&format!(":{SHIM_DIR}")), "{path}");
    }
}
