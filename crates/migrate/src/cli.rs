//! `paddock migrate-layout`: the report on stdout, progress on stderr and the exit code,
//! for options the `paddock` binary parsed from its flags.
//!
//! Exit codes: 0 when every planned move succeeded (entries left in place because their
//! names are invalid are warnings), 1 when some move failed or was refused (the report
//! names each), 2 when the run could not start (bad arguments, unreadable database).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use crate::apply::{ApplyOptions, apply};
use crate::plan::{PlanOptions, plan};
use crate::report;

/// What `paddock migrate-layout` does (its flags; it reads no config file).
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The data directory holding the legacy layout (`threads/`, `memory.json`, `agents/`,
    /// `skills/custom/`).
    pub data_dir: PathBuf,
    /// The user receiving threads with no owner in the database, `memory.json`, agents and
    /// custom skills.
    pub user_id: String,
    /// DeerFlow's SQLite database with the `threads_meta` table (`None`:
    /// `data_dir/deer-flow.db` when it exists).
    pub owners_db: Option<PathBuf>,
    /// Print the decisions without changing anything.
    pub dry_run: bool,
    /// Print the report as JSON.
    pub json: bool,
    /// Allow moves across filesystems by copying, verifying and deleting the source.
    pub allow_copy: bool,
}

/// Runs the migration; returns the process exit code.
pub fn run(args: MigrateOptions) -> anyhow::Result<i32> {
    let opts = PlanOptions {
        data_dir: args.data_dir.clone(),
        user_id: args.user_id.clone(),
        owners_db: args.owners_db.clone(),
        allow_copy: args.allow_copy,
    };
    let plan = match plan(&opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("paddock migrate-layout: {e}");
            return Ok(2);
        }
    };
    let outcome = if args.dry_run {
        None
    } else {
        let progress = report::Progress::new(plan.move_count(), std::io::stderr().is_terminal());
        let out = apply(&plan, &ApplyOptions::from_env(), &mut |done| {
            progress.tick(done)
        });
        progress.finish();
        Some(out)
    };
    let text = if args.json {
        let mut s =
            serde_json::to_string_pretty(&report::json(&plan, outcome.as_ref(), args.dry_run))?;
        s.push('\n');
        s
    } else {
        report::text(&plan, outcome.as_ref(), args.dry_run)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(report::exit_code(&plan, outcome.as_ref()))
}
