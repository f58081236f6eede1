//! The ignore list that list, glob and grep apply to entry names: version-control and
//! build directories, editor droppings, caches and logs, as in the reference
//! implementation, plus Paddock's own in-flight upload temp files.
//!
//! Invariant: matching is on a single name (never a path) and case-sensitive, as on Linux.

use std::sync::OnceLock;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Names (exact, or globs when they contain `*`) skipped by list/glob/grep.
pub const IGNORE_PATTERNS: &[&str] = &[
    ".git",
    ".svn",
    ".hg",
    ".bzr",
    "node_modules",
    "__pycache__",
    ".venv",
    "venv",
    ".env",
    "env",
    ".tox",
    ".nox",
    ".eggs",
    "*.egg-info",
    "site-packages",
    "dist",
    "build",
    ".next",
    ".nuxt",
    ".output",
    ".turbo",
    "target",
    "out",
    ".idea",
    ".vscode",
    "*.swp",
    "*.swo",
    "*~",
    ".project",
    ".classpath",
    ".settings",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "*.lnk",
    "*.log",
    "*.tmp",
    "*.temp",
    ".upload-*.part",
    "*.bak",
    "*.cache",
    ".cache",
    "logs",
    ".coverage",
    "coverage",
    ".nyc_output",
    "htmlcov",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    // Paddock's own: uploads in flight (see `write_from_reader`).
    ".paddock-upload-*.part",
];

fn set() -> Option<&'static GlobSet> {
    static SET: OnceLock<Option<GlobSet>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut b = GlobSetBuilder::new();
        for p in IGNORE_PATTERNS {
            match Glob::new(p) {
                Ok(g) => {
                    b.add(g);
                }
                Err(e) => tracing::error!(pattern = p, error = %e, "bad built-in ignore pattern"),
            }
        }
        b.build()
            .map_err(|e| tracing::error!(error = %e, "ignore list did not compile"))
            .ok()
    })
    .as_ref()
}

/// Whether `name` is on the ignore list.
pub fn is_ignored(name: &str) -> bool {
    match set() {
        Some(s) => s.is_match(name),
        // Unreachable with the built-in list; fall back to exact names rather than panic.
        None => IGNORE_PATTERNS.contains(&name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_names_and_globs() {
        for yes in [
            ".git",
            "node_modules",
            "x.egg-info",
            "a.swp",
            "notes~",
            "run.log",
            ".upload-1.part",
            ".paddock-upload-ab.part",
            "target",
        ] {
            assert!(is_ignored(yes), "{yes}");
        }
        for no in ["src", "main.rs", "logs2", "gitx", "a.logx", "Target"] {
            assert!(!is_ignored(no), "{no}");
        }
    }
}
