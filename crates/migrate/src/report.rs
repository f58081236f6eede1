//! The report: one text line per decision and a summary, or the same as JSON; and the
//! progress display on stderr.
//!
//! Invariant: the decision lines depend only on the plan, so a dry run and the real run
//! it predicts print the same lines; a real run adds a line per failed step and its
//! summary counts what was done.

use std::fmt::Write as _;
use std::io::Write as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::apply::{Outcome, Status};
use crate::plan::{Action, Item, OwnerSource, Plan};

/// Shows a path or name as is when it is plain, quoted and escaped otherwise (spaces,
/// quotes, control or non-ASCII whitespace characters).
pub fn show(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\')
    {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

fn decision_line(item: &Item) -> String {
    let kind = item.kind.word();
    let from = show(&item.from);
    let to = item.to.as_deref().map(show).unwrap_or_default();
    let mut line = match item.action {
        Action::Move => format!("move      {kind:<13} {from} -> {to}"),
        Action::Conflict => format!(
            "conflict  {kind:<13} {from} -> {to} ({} exists)",
            item.existing.as_deref().map(show).unwrap_or_default()
        ),
        Action::Skip => format!("skip      {kind:<13} {from}: left in place"),
        Action::Refuse => format!("refuse    {kind:<13} {from}: not moved"),
        Action::RemoveEmptyDir => format!("remove    {kind:<13} {from}/ (empty after the moves)"),
        Action::FinishCopy => format!(
            "finish    {kind:<13} {from} -> {to} (an interrupted run's verified copy is in place; deleting what is left of the source)"
        ),
        Action::DropMarker => format!(
            "cleanup   {kind:<13} {from} (marker of an interrupted copy that never reached {to}; the source moves again)"
        ),
    };
    if let (Some(user), Some(src)) = (&item.user, item.owner_source)
        && item.action != Action::Refuse
    {
        let _ = match src {
            OwnerSource::Database => write!(line, " [owner {user} from the database]"),
            OwnerSource::UserId => write!(line, " [user {user}]"),
        };
    }
    if item.copy {
        line.push_str(" [copy: other filesystem]");
    }
    if let Some(r) = &item.reason {
        let _ = write!(line, " -- {r}");
    }
    line
}

/// The text report.
pub fn text(plan: &Plan, outcome: Option<&Outcome>, dry_run: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "data dir: {}", plan.data_dir.display());
    match &plan.owners_db {
        Some(db) => {
            let _ = writeln!(
                out,
                "owners: {} ({} thread(s) with an owner)",
                db.display(),
                plan.owners_known
            );
        }
        None => {
            let _ = writeln!(
                out,
                "owners: no database; threads go to user {}",
                plan.user_id
            );
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for item in &plan.items {
        let _ = writeln!(out, "{}", decision_line(item));
    }
    if let Some(o) = outcome {
        for (item, r) in plan.items.iter().zip(&o.items) {
            if let Some(to) = &r.moved_to {
                let _ = writeln!(
                    out,
                    "note      {} {}: destination appeared during the run; filed under {}",
                    item.kind.word(),
                    show(&item.from),
                    show(to)
                );
            }
            if r.status == Status::Failed {
                let _ = writeln!(
                    out,
                    "failed    {} {}: {}",
                    item.kind.word(),
                    show(&item.from),
                    r.error.as_deref().unwrap_or("unknown error")
                );
            }
        }
    }
    let moves = plan.count(Action::Move);
    let conflicts = plan.count(Action::Conflict);
    let skips = plan.count(Action::Skip);
    let refused = plan.count(Action::Refuse);
    let removes = plan.count(Action::RemoveEmptyDir);
    let finishing = plan.count(Action::FinishCopy) + plan.count(Action::DropMarker);
    if !plan.has_work() {
        let _ = writeln!(
            out,
            "summary: nothing to do ({skips} entr{} left in place)",
            if skips == 1 { "y" } else { "ies" }
        );
    } else {
        let _ = writeln!(
            out,
            "summary: {moves} to move, {conflicts} conflict(s) to migration-conflicts/, {skips} left in place, {refused} refused, {removes} empty dir(s) to remove{}",
            if finishing > 0 {
                format!(", {finishing} interrupted cop(ies) to finish")
            } else {
                String::new()
            }
        );
    }
    match outcome {
        None if dry_run => out.push_str("dry run: nothing was changed\n"),
        None => {}
        Some(o) => {
            let done = o
                .items
                .iter()
                .zip(&plan.items)
                .filter(|(r, i)| {
                    r.status == Status::Done && matches!(i.action, Action::Move | Action::Conflict)
                })
                .count();
            let _ = writeln!(out, "done: {done} moved, {} failed", o.failed());
        }
    }
    out
}

/// The JSON report.
pub fn json(plan: &Plan, outcome: Option<&Outcome>, dry_run: bool) -> Value {
    let items: Vec<Value> = plan
        .items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            let mut v = serde_json::to_value(item).unwrap_or(Value::Null);
            if let (Some(o), Value::Object(map)) = (outcome.and_then(|o| o.items.get(n)), &mut v) {
                map.insert(
                    "status".into(),
                    serde_json::to_value(o.status).unwrap_or(Value::Null),
                );
                map.insert("moved_to".into(), json!(o.moved_to));
                map.insert("error".into(), json!(o.error));
            }
            v
        })
        .collect();
    json!({
        "data_dir": plan.data_dir.to_string_lossy(),
        "owners_db": plan.owners_db.as_ref().map(|p| p.to_string_lossy().into_owned()),
        "owners_known": plan.owners_known,
        "user_id": plan.user_id,
        "dry_run": dry_run,
        "warnings": plan.warnings,
        "decisions": items,
        "summary": {
            "move": plan.count(Action::Move),
            "conflict": plan.count(Action::Conflict),
            "skip": plan.count(Action::Skip),
            "refuse": plan.count(Action::Refuse),
            "remove_empty_dir": plan.count(Action::RemoveEmptyDir),
            "finish_copy": plan.count(Action::FinishCopy),
            "drop_marker": plan.count(Action::DropMarker),
            "failed": outcome.map(Outcome::failed).unwrap_or(0),
        },
    })
}

/// The exit code: 1 when something was refused or failed, else 0.
pub fn exit_code(plan: &Plan, outcome: Option<&Outcome>) -> i32 {
    if plan.count(Action::Refuse) > 0 || outcome.is_some_and(|o| o.failed() > 0) {
        1
    } else {
        0
    }
}

/// Progress on stderr: a bar on a terminal, a plain line per tenth otherwise; silent for
/// small runs.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    bar: Option<ProgressBar>,
    step: usize,
}

/// Runs below this many moves show no progress.
const PROGRESS_MIN: usize = 50;

impl Progress {
    /// Progress over `total` moves.
    pub fn new(total: usize, terminal: bool) -> Self {
        let bar = (terminal && total >= PROGRESS_MIN).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("migrating {bar:40} {pos}/{len} moves")
            {
                bar.set_style(style);
            }
            bar
        });
        let step = if terminal || total < PROGRESS_MIN {
            0
        } else {
            total.div_ceil(10)
        };
        Self { total, bar, step }
    }

    /// `done` moves are complete.
    pub fn tick(&self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        } else if self.step > 0 && (done.is_multiple_of(self.step) || done == self.total) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "paddock migrate-layout: {done}/{} moves done",
                self.total
            );
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_and_odd_ones_are_quoted() {
        assert_eq!(show("threads/t-1"), "threads/t-1");
        assert_eq!(show("threads/ünïcode"), "threads/ünïcode");
        assert_eq!(show("threads/a b"), "\"threads/a b\"");
        assert_eq!(show("threads/a\nb"), "\"threads/a\\nb\"");
        assert_eq!(show("q\"uote"), "\"q\\\"uote\"");
        assert_eq!(show(""), "\"\"");
    }

    #[test]
    fn progress_steps_by_tenths_only_off_terminal_and_for_big_runs() {
        assert_eq!(Progress::new(10, false).step, 0);
        assert_eq!(Progress::new(200, false).step, 20);
        assert_eq!(Progress::new(205, false).step, 21);
        let p = Progress::new(200, true);
        assert_eq!(p.step, 0);
        assert!(p.bar.is_some());
        p.finish();
    }
}
