//! The SQLite store: one row per cohort (its [`CohortRecord`] as JSON) under an AUTOINCREMENT id,
//! static members in their own table, and a quarantine for records that cannot be served.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`, and a write is acknowledged only once
//! [`Db::sync`] has flushed the WAL file to disk: no acknowledged write is lost when the process
//! is killed or the machine loses power. The flush happens after the commit, outside the write
//! lock, so concurrent writes share flushes instead of queueing behind one each.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, Transaction, TransactionBehavior};

use crate::error::Error;
use crate::store::CohortRecord;
use crate::CohortId;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cohorts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS static_members (
    cohort_id INTEGER NOT NULL REFERENCES cohorts(id),
    position INTEGER NOT NULL,
    person_id TEXT NOT NULL,
    PRIMARY KEY (cohort_id, position)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    error TEXT NOT NULL,
    quarantined_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
";

/// An open database.
pub(crate) struct Db {
    pub(crate) conn: Connection,
    name: String,
    wal: std::path::PathBuf,
}

/// A stored record that could not be read back, with the reason.
pub(crate) struct Unreadable {
    pub(crate) id: CohortId,
    pub(crate) text: String,
    pub(crate) error: String,
}

/// What a database holds: every readable cohort record (static members filled in), the rows
/// that could not be read, and the next id.
pub(crate) struct Loaded {
    pub(crate) records: Vec<CohortRecord>,
    pub(crate) unreadable: Vec<Unreadable>,
    pub(crate) next_id: CohortId,
}

/// A database failure, kept apart from request errors: it is the server's fault, not the
/// client's, and its text (which names the file) is logged, never sent.
#[derive(Debug)]
pub(crate) struct DbError {
    /// The database was locked by another connection for longer than the busy timeout.
    pub(crate) busy: bool,
    /// What failed, for the log.
    pub(crate) message: String,
}

impl DbError {
    pub(crate) fn new(name: &str, e: &rusqlite::Error) -> DbError {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        );
        DbError {
            busy,
            message: format!("{name}: {e}"),
        }
    }
}

impl Db {
    /// Opens (creating if needed, readable by its owner only) the database file.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<Db, Error> {
        let name = path.display().to_string();
        create_private(path).map_err(|e| Error::input(&name, format!("cannot create: {e}")))?;
        let conn = Connection::open(path).map_err(|e| db_error(&name, &e))?;
        conn.busy_timeout(busy_timeout)
            .map_err(|e| db_error(&name, &e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db_error(&name, &e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| db_error(&name, &e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| db_error(&name, &e))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Db {
            conn,
            name,
            wal: wal.into(),
        })
    }

    /// The WAL file's path (for [`sync`]).
    pub(crate) fn wal_path(&self) -> &Path {
        &self.wal
    }

    /// The database's name for the log.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Starts a write transaction, taking the database's write lock at once (so a lock held by
    /// another connection shows here, as busy, before any work is done).
    pub(crate) fn begin(&mut self) -> Result<Transaction<'_>, DbError> {
        let name = self.name.clone();
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| DbError::new(&name, &e))
    }

    /// Reads every cohort. A row whose record does not parse is returned as unreadable rather
    /// than failing the load.
    pub(crate) fn load(&self) -> Result<Loaded, Error> {
        let err = |e: rusqlite::Error| db_error(&self.name, &e);
        let mut records: Vec<CohortRecord> = Vec::new();
        let mut unreadable = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT id, record FROM cohorts ORDER BY id")
                .map_err(err)?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(err)?;
            for row in rows {
                let (id, text) = row.map_err(err)?;
                let parsed = serde_json::from_str::<CohortRecord>(&text).and_then(|r| {
                    // `filters` is kept as text: check that it parses too.
                    match &r.filters {
                        Some(f) => f.parse().map(|_| r),
                        None => Ok(r),
                    }
                });
                match parsed {
                    Ok(mut record) => {
                        record.id = id;
                        records.push(record);
                    }
                    Err(e) => unreadable.push(Unreadable {
                        id,
                        text,
                        error: format!("unreadable record: {e}"),
                    }),
                }
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT cohort_id, person_id FROM static_members ORDER BY cohort_id, position",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(err)?;
            for row in rows {
                let (id, person) = row.map_err(err)?;
                if let Ok(i) = records.binary_search_by_key(&id, |r| r.id) {
                    records[i].static_members.push(person);
                }
            }
        }
        let seq: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'cohorts'",
                [],
                |row| row.get(0),
            )
            .map_err(err)?;
        Ok(Loaded {
            records,
            unreadable,
            next_id: seq.saturating_add(1),
        })
    }

    /// Moves cohort rows that cannot be served into the quarantine table (record text and the
    /// reason), in one transaction. Their ids stay used: AUTOINCREMENT never hands them out again.
    pub(crate) fn quarantine(&mut self, rows: &[(CohortId, String, String)]) -> Result<(), Error> {
        let name = self.name.clone();
        let err = |e: rusqlite::Error| db_error(&name, &e);
        let tx = self.conn.transaction().map_err(err)?;
        for (id, text, error) in rows {
            tx.execute(
                "INSERT OR REPLACE INTO quarantine (id, record, error) VALUES (?1, ?2, ?3)",
                params![id, text, error],
            )
            .map_err(err)?;
            tx.execute("DELETE FROM cohorts WHERE id = ?1", params![id])
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

/// Creates the file with mode 0600 if it does not exist yet (the database holds the static
/// members' person ids; SQLite gives its WAL and shared-memory files the same mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// True when the file can be read by users other than its owner.
pub(crate) fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Flushes the WAL file to disk: every transaction committed before the call is then durable.
/// (A checkpoint that moved committed pages into the database file synced that file first.)
/// Called after a commit, without holding the database, so one flush can cover several writers.
pub(crate) fn sync(wal: &Path, name: &str) -> Result<(), DbError> {
    let file = std::fs::File::open(wal).map_err(|e| DbError {
        busy: false,
        message: format!("{name}: cannot open the WAL to flush it: {e}"),
    })?;
    file.sync_data().map_err(|e| DbError {
        busy: false,
        message: format!("{name}: cannot flush the WAL: {e}"),
    })
}

/// Allocates a new cohort id (AUTOINCREMENT: never one used before) inside `tx`.
pub(crate) fn allocate(tx: &Transaction<'_>, name: &str) -> Result<CohortId, DbError> {
    tx.execute("INSERT INTO cohorts (record) VALUES ('{}')", [])
        .map_err(|e| DbError::new(name, &e))?;
    Ok(tx.last_insert_rowid())
}

/// Writes a cohort's record and static members inside `tx`.
pub(crate) fn save(tx: &Transaction<'_>, name: &str, record: &CohortRecord) -> Result<(), DbError> {
    let err = |e: rusqlite::Error| DbError::new(name, &e);
    let text = serde_json::to_string(record).map_err(|e| DbError {
        busy: false,
        message: format!("{name}: cannot encode cohort {}: {e}", record.id),
    })?;
    tx.execute(
        "INSERT INTO cohorts (id, record) VALUES (?1, ?2)
         ON CONFLICT(id) DO UPDATE SET record = excluded.record",
        params![record.id, text],
    )
    .map_err(err)?;
    tx.execute(
        "DELETE FROM static_members WHERE cohort_id = ?1",
        params![record.id],
    )
    .map_err(err)?;
    if record.is_static {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO static_members (cohort_id, position, person_id) VALUES (?1, ?2, ?3)",
            )
            .map_err(err)?;
        for (i, person) in record.static_members.iter().enumerate() {
            stmt.execute(params![record.id, i as i64, person])
                .map_err(err)?;
        }
    }
    Ok(())
}

pub(crate) fn db_error(name: &str, e: &rusqlite::Error) -> Error {
    Error::input(name, format!("database error: {e}"))
}
