//! Thread owners from DeerFlow's SQLite database (`threads_meta(thread_id, user_id)`).
//!
//! Invariant: the database is opened read-only and never modified (a dry run leaves
//! every byte of the data dir as it was). A missing `threads_meta` table is a warning
//! (every thread then goes to the target user); an unreadable or corrupt database is an
//! error, because guessing owners for a whole tree would misfile data.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::MigrateError;

/// What the database says about one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Exactly one owner.
    One(String),
    /// Several rows with different owners.
    Ambiguous(Vec<String>),
}

/// Owners by thread id, plus warnings about the database.
#[derive(Debug, Default)]
pub struct Owners {
    /// Thread id → owner.
    pub map: BTreeMap<String, Owner>,
    /// Things the operator should know (missing table, unusable rows).
    pub warnings: Vec<String>,
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s),
        Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `path` percent-encoded for an SQLite `file:` URI (everything but unreserved
/// characters and `/`), made absolute so the URI has no authority ambiguity.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = String::new();
    for &b in abs.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the owners from `db`.
pub fn read(db: &Path) -> Result<Owners, MigrateError> {
    let err = |reason: String| MigrateError::OwnersDb {
        path: db.display().to_string(),
        reason,
    };
    if !db.is_file() {
        return Err(err("no such file".into()));
    }
    let mut warnings = Vec::new();
    let wal = {
        let mut p = db.as_os_str().to_owned();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    let has_wal = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    // Without a write-ahead log the file is read as immutable: SQLite then takes no lock
    // and creates no `-wal`/`-shm` files, so a dry run leaves the tree byte-identical.
    // With one, its committed pages are needed, so SQLite reads through it (read-only).
    let uri = if has_wal {
        warnings.push(format!(
            "{} has a write-ahead log (is DeerFlow still running?); reading through it",
            db.display()
        ));
        format!("file:{}?mode=ro", uri_path(db))
    } else {
        format!("file:{}?mode=ro&immutable=1", uri_path(db))
    };
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| err(e.to_string()))?;
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'threads_meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| err(e.to_string()))?;
    let mut out = Owners {
        map: BTreeMap::new(),
        warnings,
    };
    if !has_table {
        out.warnings.push(format!(
            "{} has no threads_meta table; threads get the target user",
            db.display()
        ));
        return Ok(out);
    }
    let mut stmt = conn
        .prepare("SELECT thread_id, user_id FROM threads_meta WHERE user_id IS NOT NULL")
        .map_err(|e| err(format!("reading threads_meta(thread_id, user_id): {e}")))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, Value>(0)?, r.get::<_, Value>(1)?)))
        .map_err(|e| err(e.to_string()))?;
    let mut unusable = 0usize;
    for row in rows {
        let (t, u) = row.map_err(|e| err(e.to_string()))?;
        let (Some(t), Some(u)) = (text(t), text(u)) else {
            unusable += 1;
            continue;
        };
        match out.map.get_mut(&t) {
            None => {
                out.map.insert(t, Owner::One(u));
            }
            Some(Owner::One(prev)) if *prev == u => {}
            Some(Owner::One(prev)) => {
                let all = vec![prev.clone(), u];
                out.map.insert(t, Owner::Ambiguous(all));
            }
            Some(Owner::Ambiguous(all)) => {
                if !all.contains(&u) {
                    all.push(u);
                }
            }
        }
    }
    if unusable > 0 {
        out.warnings.push(format!(
            "{}: {unusable} threads_meta row(s) with a non-text thread_id or user_id were ignored",
            db.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_owners_and_flags_ambiguity() {
        let t = tempfile::tempdir().expect("tempdir");
        let db = t.path().join("deer-flow.db");
        let c = Connection::open(&db).expect("open");
        c.execute_batch(
            "CREATE TABLE threads_meta (thread_id TEXT, user_id TEXT, title TEXT);
             INSERT INTO threads_meta VALUES ('t1', 'alice', 'x'), ('t2', NULL, 'y'),
               ('t3', 'bob', ''), ('t3', 'carol', ''), ('t4', 'dave', ''), ('t4', 'dave', ''),
               (X'00', 'eve', '');",
        )
        .expect("schema");
        drop(c);
        let o = read(&db).expect("read");
        assert_eq!(o.map.get("t1"), Some(&Owner::One("alice".into())));
        assert_eq!(o.map.get("t2"), None);
        assert_eq!(
            o.map.get("t3"),
            Some(&Owner::Ambiguous(vec!["bob".into(), "carol".into()]))
        );
        assert_eq!(o.map.get("t4"), Some(&Owner::One("dave".into())));
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
    }

    #[test]
    fn wal_database_is_read_without_leaving_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let db = t.path().join("deer-flow.db");
        let c = Connection::open(&db).expect("open");
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE threads_meta (thread_id TEXT, user_id TEXT);
             INSERT INTO threads_meta VALUES ('t1', 'alice');",
        )
        .expect("schema");
        drop(c);
        let names = || {
            let mut v: Vec<_> = std::fs::read_dir(t.path())
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            v.sort();
            v
        };
        let before = names();
        let bytes = std::fs::read(&db).expect("read");
        let o = read(&db).expect("read owners");
        assert_eq!(o.map.get("t1"), Some(&Owner::One("alice".into())));
        assert_eq!(names(), before, "reading must not leave -wal/-shm files");
        assert_eq!(std::fs::read(&db).expect("read"), bytes);
    }

    #[test]
    fn odd_database_paths_and_live_wal_are_read() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("a dir?#%ü");
        std::fs::create_dir(&dir).expect("mkdir");
        let db = dir.join("deer flow.db");
        let c = Connection::open(&db).expect("open");
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA wal_autocheckpoint=0;
             CREATE TABLE threads_meta (thread_id TEXT, user_id TEXT);
             INSERT INTO threads_meta VALUES ('t9', 'zoe');",
        )
        .expect("schema");
        // The writer is still open: the row lives only in the -wal file.
        let o = read(&db).expect("read owners");
        assert_eq!(o.map.get("t9"), Some(&Owner::One("zoe".into())));
        assert!(
            o.warnings[0].contains("write-ahead log"),
            "{:?}",
            o.warnings
        );
        drop(c);
    }

    #[test]
    fn missing_table_warns_and_garbage_errors() {
        let t = tempfile::tempdir().expect("tempdir");
        let db = t.path().join("deer-flow.db");
        Connection::open(&db)
            .expect("open")
            .execute_batch("CREATE TABLE other (x)")
            .expect("schema");
        let o = read(&db).expect("read");
        assert!(o.map.is_empty());
        assert!(o.warnings[0].contains("no threads_meta table"));
        let bad = t.path().join("bad.db");
        std::fs::write(&bad, vec![b'x'; 4096]).expect("write");
        let e = read(&bad).expect_err("garbage");
        assert!(e.to_string().contains("bad.db"), "{e}");
        let e = read(&t.path().join("none.db")).expect_err("missing");
        assert!(e.to_string().contains("no such file"), "{e}");
    }
}
