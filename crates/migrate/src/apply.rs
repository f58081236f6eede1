//! Performing a plan: one atomic, non-replacing rename per move (or, across filesystems
//! with `--allow-copy`, copy to a hidden sibling, verify, rename into place, delete the
//! source), then removal of emptied legacy directories.
//!
//! Invariant: every step is individually atomic and leaves a tree the next plan handles.
//! A crash mid-copy leaves only a hidden `.{name}.paddock-migrate-partial` next to the
//! destination, which the retry replaces; a destination that appears after planning is
//! never replaced (the source is filed under `migration-conflicts/` instead).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::fsutil;
use crate::plan::{Action, Item, Plan};

/// Options of a real run.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Test hook: stop (sleep) after this many moves. See [`crate::PAUSE_AFTER_ENV`].
    pub pause_after: Option<usize>,
}

impl ApplyOptions {
    /// Options from the environment (the test hook only).
    pub fn from_env() -> Self {
        Self {
            pause_after: std::env::var(crate::PAUSE_AFTER_ENV)
                .ok()
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// What happened to one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Performed.
    Done,
    /// Attempted and failed; the source is where it was.
    Failed,
    /// Not attempted (skips and refusals).
    NotAttempted,
}

/// The outcome of one decision.
#[derive(Debug, Clone, Serialize)]
pub struct ItemOutcome {
    /// What happened.
    pub status: Status,
    /// Where the entry actually went when that differs from the plan.
    pub moved_to: Option<String>,
    /// The error of a failed step.
    pub error: Option<String>,
}

/// The outcome of a run, parallel to `plan.items`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// One per plan item.
    pub items: Vec<ItemOutcome>,
}

impl Outcome {
    /// Number of failed steps.
    pub fn failed(&self) -> usize {
        self.items
            .iter()
            .filter(|o| o.status == Status::Failed)
            .count()
    }
}

fn rel(plan: &Plan, p: &Path) -> String {
    p.strip_prefix(&plan.data_dir)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn partial_path(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dst.with_file_name(format!(".{name}.paddock-migrate-partial"))
}

/// Copies `src` to `dst` through a hidden sibling, verifies it, records in a marker next
/// to the source that the copy is complete, renames it into place, deletes the source and
/// the marker. `dst_rel` (the destination relative to the data dir) is the marker's text.
fn copy_move(src: &Path, dst: &Path, dst_rel: &str) -> io::Result<()> {
    let partial = partial_path(dst);
    if fs::symlink_metadata(&partial).is_ok() {
        // Left by an interrupted run: the source is intact, start over.
        fsutil::remove_tree(&partial)?;
    }
    fsutil::copy_tree(src, &partial)?;
    if let Err(diff) = fsutil::verify_copy(src, &partial)? {
        let _ = fsutil::remove_tree(&partial);
        return Err(io::Error::other(format!(
            "copy verification failed ({diff}); the source is kept"
        )));
    }
    // From here on a crash leaves the marker: the next plan either finishes (the copy
    // reached `dst`: delete the rest of the source) or drops it (it did not: start over).
    let marker = crate::plan::marker_path(src);
    {
        let mut f = fs::File::create(&marker)?;
        f.write_all(dst_rel.as_bytes())?;
        f.sync_all()?;
    }
    if let Err(e) = fsutil::rename_noreplace(&partial, dst) {
        let _ = fsutil::remove_tree(&partial);
        let _ = fs::remove_file(&marker);
        return Err(e);
    }
    fsutil::remove_tree(src)?;
    fs::remove_file(&marker)
}

fn next_free(base: &Path) -> PathBuf {
    let mut n = 1u32;
    loop {
        let cand = if n == 1 {
            base.to_path_buf()
        } else {
            let mut s = base.as_os_str().to_owned();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        };
        if fs::symlink_metadata(&cand).is_err() {
            return cand;
        }
        n += 1;
    }
}

fn move_one(plan: &Plan, item: &Item, dst: &Path, copy: bool) -> io::Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    if copy {
        copy_move(&item.src, dst, &rel(plan, dst))
    } else {
        fsutil::rename_noreplace(&item.src, dst)
    }
}

/// Performs `plan`, calling `progress` with the number of moves done after each one.
pub fn apply(plan: &Plan, opts: &ApplyOptions, progress: &mut dyn FnMut(usize)) -> Outcome {
    let mut items = Vec::with_capacity(plan.items.len());
    let mut moves = 0usize;
    for item in &plan.items {
        let outcome = match item.action {
            Action::Skip | Action::Refuse => ItemOutcome {
                status: Status::NotAttempted,
                moved_to: None,
                error: None,
            },
            Action::RemoveEmptyDir => match fs::remove_dir(&item.src) {
                Ok(()) => ItemOutcome {
                    status: Status::Done,
                    moved_to: None,
                    error: None,
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => ItemOutcome {
                    status: Status::Done,
                    moved_to: None,
                    error: None,
                },
                Err(e) => ItemOutcome {
                    status: Status::Failed,
                    moved_to: None,
                    error: Some(format!("removing {}/: {e}", item.from)),
                },
            },
            Action::FinishCopy | Action::DropMarker => {
                let finish = if item.action == Action::FinishCopy
                    && fs::symlink_metadata(&item.src).is_ok()
                {
                    fsutil::remove_tree(&item.src)
                } else {
                    Ok(())
                };
                let result = finish.and_then(|()| match &item.marker {
                    Some(m) => fs::remove_file(m).or_else(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    }),
                    None => Ok(()),
                });
                match result {
                    Ok(()) => ItemOutcome {
                        status: Status::Done,
                        moved_to: None,
                        error: None,
                    },
                    Err(e) => ItemOutcome {
                        status: Status::Failed,
                        moved_to: None,
                        error: Some(format!(
                            "finishing the interrupted copy of {}: {e}",
                            item.from
                        )),
                    },
                }
            }
            Action::Move | Action::Conflict => {
                let Some(dst) = item.dst.as_deref() else {
                    items.push(ItemOutcome {
                        status: Status::Failed,
                        moved_to: None,
                        error: Some("no destination planned".into()),
                    });
                    continue;
                };
                let out = apply_move(plan, item, dst);
                if out.status == Status::Done {
                    moves += 1;
                    progress(moves);
                    if opts.pause_after == Some(moves) {
                        pause(moves);
                    }
                }
                out
            }
        };
        items.push(outcome);
    }
    Outcome { items }
}

fn apply_move(plan: &Plan, item: &Item, dst: &Path) -> ItemOutcome {
    let failed = |e: String| ItemOutcome {
        status: Status::Failed,
        moved_to: None,
        error: Some(e),
    };
    match move_one(plan, item, dst, item.copy) {
        Ok(()) => ItemOutcome {
            status: Status::Done,
            moved_to: None,
            error: None,
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // The destination appeared after planning: never replace it.
            let Some(base) = item.conflict_base.as_deref() else {
                return failed(format!("{} exists", rel(plan, dst)));
            };
            let alt = next_free(base);
            match move_one(plan, item, &alt, item.copy) {
                Ok(()) => ItemOutcome {
                    status: Status::Done,
                    moved_to: Some(rel(plan, &alt)),
                    error: None,
                },
                Err(e) => failed(format!(
                    "{} appeared during the run, and filing the source under {} failed: {e}",
                    rel(plan, dst),
                    rel(plan, &alt)
                )),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices && plan.allow_copy && !item.copy => {
            // Planning saw one filesystem but the kernel disagrees: copy as allowed.
            match move_one(plan, item, dst, true) {
                Ok(()) => ItemOutcome {
                    status: Status::Done,
                    moved_to: None,
                    error: None,
                },
                Err(e) => failed(format!(
                    "copying {} to {} (another filesystem): {e}",
                    item.from,
                    rel(plan, dst)
                )),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => failed(format!(
            "{} and {} are on different filesystems (re-run with --allow-copy): {e}",
            item.from,
            rel(plan, dst)
        )),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(&item.src).is_err() =>
        {
            failed(format!("{} vanished during the run", item.from))
        }
        Err(e) => failed(format!("moving {} to {}: {e}", item.from, rel(plan, dst))),
    }
}

fn pause(moves: usize) -> ! {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "paddock-migrate: paused after {moves} moves");
    let _ = err.flush();
    drop(err);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
