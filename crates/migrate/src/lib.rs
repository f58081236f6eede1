//! `paddock migrate-layout`: moves DeerFlow's legacy, pre-user-isolation data layout
//! (`threads/{tid}`, `memory.json`, `agents/{name}`, `skills/custom/*`) into the per-user
//! layout (`users/{user}/...`).
//!
//! The run is two steps: [`plan::plan`] reads the tree (and the owners in DeerFlow's
//! SQLite database) and decides what happens to every entry without touching anything;
//! [`apply::apply`] performs the decisions one atomic rename at a time. Invariant: no
//! destination is ever overwritten (renames use `RENAME_NOREPLACE`; an existing
//! destination sends the source to `migration-conflicts/`), and after a crash between
//! any two renames the tree is a state the next plan simply continues from — so a
//! re-run finishes the job and a complete run leaves nothing to do. `--dry-run` prints
//! the plan, which is exactly the report a real run prints.

pub mod apply;
pub mod cli;
pub mod fsutil;
pub mod owners;
pub mod plan;
pub mod report;

pub use apply::{ApplyOptions, apply};
pub use plan::{Action, Item, Kind, Plan, PlanOptions, plan};

/// Environment variable of the crash test hook: after this many successful moves a real
/// run announces `paddock-migrate: paused after N moves` on stderr and sleeps, so a test
/// can kill it between two renames. Never set it in production.
pub const PAUSE_AFTER_ENV: &str = "PADDOCK_MIGRATE_PAUSE_AFTER";

/// Directory, under the data dir, receiving sources whose destination already exists.
pub const CONFLICTS_DIR: &str = "migration-conflicts";

/// Errors that stop a migration before anything is moved.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The data directory is missing or not a directory.
    #[error("--data-dir {path}: {reason}")]
    DataDir {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--user-id` is not a valid user id.
    #[error("--user-id: {0}")]
    UserId(#[from] paddock_core::IdError),
    /// The owners database could not be read.
    #[error("owners database {path}: {reason}")]
    OwnersDb {
        /// The database file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A legacy directory could not be listed.
    #[error("cannot list {path}: {source}")]
    List {
        /// The directory, relative to the data dir.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
