//! Planning: reads the legacy layout and decides, for every entry, what a run does —
//! move it, file it under `migration-conflicts/`, leave it in place (and why), or refuse
//! (and why) — and which emptied legacy directories are removed afterwards.
//!
//! Invariant: planning changes nothing on disk, and the plan is a pure function of the
//! tree, the owners database and the options, so a dry run shows exactly what a real
//! run does and a re-run after a crash plans only what is left.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use paddock_core::{ThreadId, UserId};
use serde::Serialize;

use crate::owners::{self, Owner};
use crate::{CONFLICTS_DIR, MigrateError, fsutil};

/// Inputs of a plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Target user for un-owned threads, memory, agents and custom skills.
    pub user_id: String,
    /// The owners database (default: `data_dir/deer-flow.db` when it exists).
    pub owners_db: Option<PathBuf>,
    /// Whether cross-filesystem moves may copy.
    pub allow_copy: bool,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `threads/{tid}`.
    Thread,
    /// `memory.json`.
    Memory,
    /// `agents/{name}`.
    Agent,
    /// `skills/custom/{name}`.
    Skill,
    /// `skills/custom/.history`.
    SkillHistory,
    /// A legacy directory itself (`threads/`, `agents/`, `skills/custom/`).
    LegacyDir,
}

impl Kind {
    /// The word used in the text report.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Thread => "thread",
            Kind::Memory => "memory",
            Kind::Agent => "agent",
            Kind::Skill => "skill",
            Kind::SkillHistory => "skill-history",
            Kind::LegacyDir => "legacy-dir",
        }
    }
}

/// The decision for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Rename (or, across filesystems with `--allow-copy`, copy) to its new place.
    Move,
    /// The destination exists: file the source under `migration-conflicts/`.
    Conflict,
    /// Left in place: the name or its owner is not valid in the new layout.
    Skip,
    /// Cannot be moved as things stand (permissions, another filesystem without
    /// `--allow-copy`, a file where a directory is needed); fix and re-run.
    Refuse,
    /// Remove a legacy directory emptied by the moves.
    RemoveEmptyDir,
    /// An interrupted `--allow-copy` move had already put its verified copy in place:
    /// delete what is left of the source and the marker.
    FinishCopy,
    /// An interrupted `--allow-copy` move left its marker but never put the copy in
    /// place: remove the marker (the source is planned like any other entry).
    DropMarker,
}

/// Where a thread's owner came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    /// The `threads_meta` table.
    Database,
    /// `--user-id` (default `default`).
    UserId,
}

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// What the entry is.
    pub kind: Kind,
    /// The decision.
    pub action: Action,
    /// The entry's name (lossy UTF-8).
    pub name: String,
    /// The source, relative to the data dir (lossy UTF-8).
    pub from: String,
    /// Where it goes, relative to the data dir (moves and conflicts).
    pub to: Option<String>,
    /// For a conflict: the destination that already exists.
    pub existing: Option<String>,
    /// The receiving user.
    pub user: Option<String>,
    /// Where the user came from (threads).
    pub owner_source: Option<OwnerSource>,
    /// Whether the move copies (another filesystem, `--allow-copy`).
    pub copy: bool,
    /// Why (skips, refusals) or a note (relative symlinks).
    pub reason: Option<String>,
    /// Absolute source.
    #[serde(skip)]
    pub src: PathBuf,
    /// Absolute target.
    #[serde(skip)]
    pub dst: Option<PathBuf>,
    /// Absolute conflicts path used if the destination appears during the run.
    #[serde(skip)]
    pub conflict_base: Option<PathBuf>,
    /// The copy marker of an interrupted copy (`FinishCopy`, `DropMarker`).
    #[serde(skip)]
    pub marker: Option<PathBuf>,
}

/// Suffix of the marker written next to a source, during a cross-filesystem copy,
/// between verifying the copy and putting it in place. It holds the destination
/// (relative to the data dir) and tells the next run that the copy there is complete.
pub const MARKER_SUFFIX: &str = ".paddock-migrate-copied";

/// The marker path of `src`: `.{name}.paddock-migrate-copied` next to it.
pub fn marker_path(src: &Path) -> PathBuf {
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    src.with_file_name(format!(".{name}{MARKER_SUFFIX}"))
}

/// The source name a marker file name stands for.
fn marker_source(name: &OsString) -> Option<String> {
    let n = name.to_str()?;
    let inner = n.strip_prefix('.')?.strip_suffix(MARKER_SUFFIX)?;
    (!inner.is_empty()).then(|| inner.to_owned())
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The data directory as given.
    pub data_dir: PathBuf,
    /// The owners database read, if any.
    pub owners_db: Option<PathBuf>,
    /// Threads with an owner in the database.
    pub owners_known: usize,
    /// The target user.
    pub user_id: String,
    /// Whether cross-filesystem moves may copy (also for an `EXDEV` planning missed).
    pub allow_copy: bool,
    /// Warnings (database, unreadable entries).
    pub warnings: Vec<String>,
    /// Every decision, in execution order.
    pub items: Vec<Item>,
}

impl Plan {
    /// Number of moves (moves and conflicts) a real run performs.
    pub fn move_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Move | Action::Conflict))
            .count()
    }

    /// Number of decisions with `action`.
    pub fn count(&self, action: Action) -> usize {
        self.items.iter().filter(|i| i.action == action).count()
    }

    /// Whether a real run would change anything.
    pub fn has_work(&self) -> bool {
        self.items.iter().any(|i| !matches!(i.action, Action::Skip))
    }
}

fn rel_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether an agent or skill name can be placed under a user: valid UTF-8, not hidden,
/// no control characters.
fn check_plain_name(name: &str) -> Result<(), String> {
    if name.starts_with('.') {
        return Err("hidden entries are not migrated".into());
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains control characters".into());
    }
    Ok(())
}

struct Planner {
    root: PathBuf,
    allow_copy: bool,
    reserved: HashSet<PathBuf>,
    items: Vec<Item>,
    warnings: Vec<String>,
}

struct Candidate<'a> {
    kind: Kind,
    name: &'a str,
    from_rel: PathBuf,
    to_rel: PathBuf,
    conflict_rel: PathBuf,
    user: &'a UserId,
    owner_source: Option<OwnerSource>,
}

impl Planner {
    fn exists(&self, rel: &Path) -> bool {
        fs::symlink_metadata(self.root.join(rel)).is_ok()
    }

    /// A conflicts path not yet used on disk or by this plan: `base`, `base.2`, ….
    fn unique_conflict(&mut self, base: &Path) -> PathBuf {
        let mut n = 1u32;
        loop {
            let cand = if n == 1 {
                base.to_path_buf()
            } else {
                let mut s = base.as_os_str().to_owned();
                s.push(format!(".{n}"));
                PathBuf::from(s)
            };
            if !self.exists(&cand) && !self.reserved.contains(&cand) {
                self.reserved.insert(cand.clone());
                return cand;
            }
            n += 1;
        }
    }

    fn skip(&mut self, kind: Kind, name: String, from_rel: &Path, reason: String) {
        self.items.push(Item {
            kind,
            action: Action::Skip,
            name,
            from: rel_string(from_rel),
            to: None,
            existing: None,
            user: None,
            owner_source: None,
            copy: false,
            reason: Some(reason),
            src: self.root.join(from_rel),
            dst: None,
            conflict_base: None,
            marker: None,
        });
    }

    /// Why `src` cannot be moved into `target` (both absolute), or whether it copies.
    fn feasibility(&self, src: &Path, target: &Path) -> Result<bool, String> {
        let rel = |p: &Path| {
            p.strip_prefix(&self.root)
                .map(|r| {
                    if r.as_os_str().is_empty() {
                        ".".to_owned()
                    } else {
                        rel_string(r)
                    }
                })
                .unwrap_or_else(|_| p.display().to_string())
        };
        let parent = src.parent().unwrap_or(&self.root);
        if let Err(e) = fsutil::writable_dir(parent) {
            return Err(format!("cannot remove entries from {}/: {e}", rel(parent)));
        }
        let src_meta = fs::symlink_metadata(src).map_err(|e| format!("{}: {e}", rel(src)))?;
        if src_meta.is_dir()
            && let Err(e) = fsutil::writable_dir(src)
        {
            return Err(format!(
                "{}/ is not writable ({e}); a directory can only be moved to a new parent when it is writable",
                rel(src)
            ));
        }
        let Some(anc) = fsutil::nearest_existing(target) else {
            return Err(format!("no existing ancestor of {}", rel(target)));
        };
        match fs::metadata(&anc) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory, so {} cannot be created",
                    rel(&anc),
                    rel(target)
                ));
            }
            Err(e) => return Err(format!("{}: {e}", rel(&anc))),
        }
        if let Err(e) = fsutil::writable_dir(&anc) {
            return Err(format!("cannot create entries in {}/: {e}", rel(&anc)));
        }
        let a = fsutil::fs_id(src).map_err(|e| format!("{}: {e}", rel(src)))?;
        // The target is created through `anc`, following a symlinked ancestor (e.g. a
        // `users` link to another volume), so compare with where it really leads.
        let real_anc = fs::canonicalize(&anc).map_err(|e| format!("{}: {e}", rel(&anc)))?;
        let b = fsutil::fs_id(&real_anc).map_err(|e| format!("{}: {e}", rel(&anc)))?;
        if a.same_fs(&b) {
            Ok(false)
        } else if self.allow_copy {
            Ok(true)
        } else {
            Err(format!(
                "{} and {}/ are on different filesystems; a rename is impossible (re-run with --allow-copy to copy, verify and delete the source)",
                rel(src),
                rel(&anc)
            ))
        }
    }

    fn candidate(&mut self, c: Candidate<'_>) {
        let src = self.root.join(&c.from_rel);
        let (action, to_rel, existing) = if self.exists(&c.to_rel) {
            let target = self.unique_conflict(&c.conflict_rel);
            (Action::Conflict, target, Some(rel_string(&c.to_rel)))
        } else {
            (Action::Move, c.to_rel.clone(), None)
        };
        let dst = self.root.join(&to_rel);
        let mut note = None;
        if let Ok(target) = fs::read_link(&src)
            && target.is_relative()
        {
            note = Some(format!(
                "symlink to relative target {:?}, moved as a link; it may no longer resolve",
                target.to_string_lossy()
            ));
        }
        let (action, copy, reason) = match self.feasibility(&src, &dst) {
            Ok(copy) => (action, copy, note),
            Err(why) => (Action::Refuse, false, Some(why)),
        };
        self.items.push(Item {
            kind: c.kind,
            action,
            name: c.name.to_owned(),
            from: rel_string(&c.from_rel),
            to: Some(rel_string(&to_rel)),
            existing,
            user: Some(c.user.to_string()),
            owner_source: c.owner_source,
            copy,
            reason,
            src,
            dst: Some(dst),
            conflict_base: Some(self.root.join(&c.conflict_rel)),
            marker: None,
        });
    }

    /// Sorted entries of a real (not symlinked) legacy directory; `None` when absent.
    fn list(
        &mut self,
        kind: Kind,
        rel: &Path,
    ) -> Result<Option<Vec<(OsString, fs::FileType)>>, MigrateError> {
        let abs = self.root.join(rel);
        match fs::symlink_metadata(&abs) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(MigrateError::List {
                    path: rel_string(rel),
                    source: e,
                });
            }
            Ok(m) if m.file_type().is_symlink() => {
                self.skip(
                    kind,
                    rel_string(rel),
                    rel,
                    "is a symlink; move the contents of its target by hand".into(),
                );
                return Ok(None);
            }
            Ok(m) if !m.is_dir() => {
                self.skip(kind, rel_string(rel), rel, "is not a directory".into());
                return Ok(None);
            }
            Ok(_) => {}
        }
        let list_err = |source| MigrateError::List {
            path: rel_string(rel),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&abs).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let ft = entry.file_type().map_err(list_err)?;
            out.push((entry.file_name(), ft));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(out))
    }

    /// Plans every copy marker among `entries` of legacy directory `dir`; returns the
    /// sources whose copies are complete (they are finished, not planned again).
    fn markers(
        &mut self,
        kind: Kind,
        dir: &Path,
        entries: &[(OsString, fs::FileType)],
    ) -> HashSet<OsString> {
        let mut finished = HashSet::new();
        for (name, _) in entries {
            if let Some(src) = marker_source(name)
                && self.marker_item(kind, &dir.join(&src))
            {
                finished.insert(OsString::from(src));
            }
        }
        finished
    }

    /// Plans what to do with the copy marker of source `src_rel`; returns whether the
    /// source itself is taken care of (its copy is complete at the destination).
    fn marker_item(&mut self, kind: Kind, src_rel: &Path) -> bool {
        let src = self.root.join(src_rel);
        let marker = marker_path(&src);
        let marker_rel = marker_path(src_rel);
        let dest_rel = fs::read_to_string(&marker)
            .ok()
            .map(|s| s.trim_end_matches('\n').to_owned())
            .filter(|s| {
                !s.is_empty() && !Path::new(s).is_absolute() && !s.split('/').any(|c| c == "..")
            });
        let dst = dest_rel.as_ref().map(|d| self.root.join(d));
        let finished = dst
            .as_ref()
            .is_some_and(|d| fs::symlink_metadata(d).is_ok());
        let name = src_rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.items.push(Item {
            kind,
            action: if finished {
                Action::FinishCopy
            } else {
                Action::DropMarker
            },
            name,
            from: rel_string(if finished { src_rel } else { &marker_rel }),
            to: dest_rel,
            existing: None,
            user: None,
            owner_source: None,
            copy: true,
            reason: None,
            src,
            dst,
            conflict_base: None,
            marker: Some(marker),
        });
        finished
    }

    /// Plans removal of `rel` when every entry in it is planned to move.
    fn remove_if_emptied(&mut self, rel: &Path, entries: usize, first_item: usize) {
        let moved: usize = self.items[first_item..]
            .iter()
            .map(|i| match i.action {
                Action::Move | Action::Conflict | Action::DropMarker => 1,
                Action::FinishCopy => 1 + usize::from(fs::symlink_metadata(&i.src).is_ok()),
                Action::Skip | Action::Refuse | Action::RemoveEmptyDir => 0,
            })
            .sum();
        if moved == entries {
            self.items.push(Item {
                kind: Kind::LegacyDir,
                action: Action::RemoveEmptyDir,
                name: rel_string(rel),
                from: rel_string(rel),
                to: None,
                existing: None,
                user: None,
                owner_source: None,
                copy: false,
                reason: None,
                src: self.root.join(rel),
                dst: None,
                conflict_base: None,
                marker: None,
            });
        }
    }
}

/// Plans the migration of `opts.data_dir`.
pub fn plan(opts: &PlanOptions) -> Result<Plan, MigrateError> {
    let root = opts.data_dir.clone();
    match fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(MigrateError::DataDir {
                path: root.display().to_string(),
                reason: "not a directory".into(),
            });
        }
        Err(e) => {
            return Err(MigrateError::DataDir {
                path: root.display().to_string(),
                reason: e.to_string(),
            });
        }
    }
    let user = UserId::new(opts.user_id.clone())?;
    let db = match &opts.owners_db {
        Some(p) => Some(p.clone()),
        None => Some(root.join("deer-flow.db")).filter(|p| p.is_file()),
    };
    let owners = match &db {
        Some(p) => owners::read(p)?,
        None => owners::Owners::default(),
    };
    let mut p = Planner {
        root: root.clone(),
        allow_copy: opts.allow_copy,
        reserved: HashSet::new(),
        items: Vec::new(),
        warnings: owners.warnings,
    };

    // Threads, each to its owner.
    let threads = Path::new("threads");
    if let Some(entries) = p.list(Kind::Thread, threads)? {
        let first = p.items.len();
        let finished = p.markers(Kind::Thread, threads, &entries);
        for (name, ft) in &entries {
            if marker_source(name).is_some() || finished.contains(name) {
                continue;
            }
            let from_rel = threads.join(name);
            let shown = name.to_string_lossy().into_owned();
            let Some(tid) = name.to_str() else {
                p.skip(
                    Kind::Thread,
                    shown,
                    &from_rel,
                    "the name is not valid UTF-8".into(),
                );
                continue;
            };
            if !ThreadId::is_valid(tid) {
                p.skip(
                    Kind::Thread,
                    shown,
                    &from_rel,
                    format!("not a valid thread_id (must match {})", ThreadId::RULE),
                );
                continue;
            }
            if !ft.is_dir() && !ft.is_symlink() {
                p.skip(Kind::Thread, shown, &from_rel, "not a directory".into());
                continue;
            }
            let (owner, source) = match owners.map.get(tid) {
                Some(Owner::One(u)) => match UserId::new(u.clone()) {
                    Ok(u) => (u, OwnerSource::Database),
                    Err(_) => {
                        let shown_owner: String = u.chars().take(64).collect();
                        p.skip(
                            Kind::Thread,
                            shown,
                            &from_rel,
                            format!(
                                "owner {shown_owner:?} from the database is not a valid user_id (must match {})",
                                UserId::RULE
                            ),
                        );
                        continue;
                    }
                },
                Some(Owner::Ambiguous(all)) => {
                    p.skip(
                        Kind::Thread,
                        shown,
                        &from_rel,
                        format!("the database names several owners: {}", all.join(", ")),
                    );
                    continue;
                }
                None => (user.clone(), OwnerSource::UserId),
            };
            let to_rel = PathBuf::from("users")
                .join(owner.as_str())
                .join("threads")
                .join(tid);
            p.candidate(Candidate {
                kind: Kind::Thread,
                name: tid,
                from_rel,
                to_rel,
                conflict_rel: Path::new(CONFLICTS_DIR).join("threads").join(tid),
                user: &owner,
                owner_source: Some(source),
            });
        }
        p.remove_if_emptied(threads, entries.len(), first);
    }

    let user_dir = PathBuf::from("users").join(user.as_str());

    // memory.json.
    let memory = Path::new("memory.json");
    let memory_finished = fs::symlink_metadata(marker_path(&root.join(memory))).is_ok()
        && p.marker_item(Kind::Memory, memory);
    match fs::symlink_metadata(root.join(memory)) {
        _ if memory_finished => {}
        Ok(m) if m.is_dir() => p.skip(
            Kind::Memory,
            "memory.json".into(),
            memory,
            "is a directory, not a file".into(),
        ),
        Ok(_) => p.candidate(Candidate {
            kind: Kind::Memory,
            name: "memory.json",
            from_rel: memory.to_path_buf(),
            to_rel: user_dir.join("memory.json"),
            conflict_rel: Path::new(CONFLICTS_DIR).join("memory.json"),
            user: &user,
            owner_source: None,
        }),
        Err(_) => {}
    }

    // Agents and custom skills, to the target user.
    for (kind, legacy, dest_sub, conflict_sub) in [
        (Kind::Agent, Path::new("agents"), "agents", "agents"),
        (
            Kind::Skill,
            Path::new("skills/custom"),
            "skills/custom",
            "skills",
        ),
    ] {
        let Some(entries) = p.list(kind, legacy)? else {
            continue;
        };
        let first = p.items.len();
        let finished = p.markers(kind, legacy, &entries);
        // `.history` first, as the reference does, so skills land next to their history.
        let mut ordered: Vec<&(OsString, fs::FileType)> = entries
            .iter()
            .filter(|(n, _)| kind == Kind::Skill && n == ".history")
            .collect();
        ordered.extend(
            entries
                .iter()
                .filter(|(n, _)| !(kind == Kind::Skill && n == ".history")),
        );
        for (name, ft) in ordered {
            if marker_source(name).is_some() || finished.contains(name) {
                continue;
            }
            let from_rel = legacy.join(name);
            let shown = name.to_string_lossy().into_owned();
            let Some(n) = name.to_str() else {
                p.skip(kind, shown, &from_rel, "the name is not valid UTF-8".into());
                continue;
            };
            let this_kind = if kind == Kind::Skill && n == ".history" {
                Kind::SkillHistory
            } else {
                if let Err(why) = check_plain_name(n) {
                    p.skip(kind, shown, &from_rel, why);
                    continue;
                }
                kind
            };
            if !ft.is_dir() && !ft.is_symlink() {
                p.skip(this_kind, shown, &from_rel, "not a directory".into());
                continue;
            }
            p.candidate(Candidate {
                kind: this_kind,
                name: n,
                from_rel,
                to_rel: user_dir.join(dest_sub).join(n),
                conflict_rel: Path::new(CONFLICTS_DIR).join(conflict_sub).join(n),
                user: &user,
                owner_source: None,
            });
        }
        p.remove_if_emptied(legacy, entries.len(), first);
    }

    Ok(Plan {
        data_dir: root,
        owners_db: db,
        owners_known: owners.map.len(),
        user_id: user.into_string(),
        allow_copy: opts.allow_copy,
        warnings: p.warnings,
        items: p.items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_round_trip() {
        let m = marker_path(Path::new("/d/threads/t1"));
        assert_eq!(m, Path::new("/d/threads/.t1.paddock-migrate-copied"));
        let name = m.file_name().expect("name").to_owned();
        assert_eq!(marker_source(&name).as_deref(), Some("t1"));
        let h = marker_path(Path::new("skills/custom/.history"));
        let name = h.file_name().expect("name").to_owned();
        assert_eq!(marker_source(&name).as_deref(), Some(".history"));
        for not in [
            ".t1",
            "t1.paddock-migrate-copied",
            "..paddock-migrate-copied",
        ] {
            assert_eq!(marker_source(&OsString::from(not)), None, "{not}");
        }
    }

    #[test]
    fn agent_and_skill_names() {
        assert!(check_plain_name("writer").is_ok());
        assert!(check_plain_name("my agent ü").is_ok());
        assert!(check_plain_name(".secret").is_err());
        assert!(check_plain_name("a\tb").is_err());
    }

    #[test]
    fn an_empty_data_dir_has_nothing_to_do_and_a_file_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let o = PlanOptions {
            data_dir: t.path().to_path_buf(),
            user_id: "default".into(),
            owners_db: None,
            allow_copy: false,
        };
        let p = plan(&o).expect("plan");
        assert!(p.items.is_empty() && !p.has_work());
        std::fs::write(t.path().join("f"), "").expect("write");
        let e = plan(&PlanOptions {
            data_dir: t.path().join("f"),
            ..o
        })
        .expect_err("a file is no data dir");
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
