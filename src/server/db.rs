//! The SQLite store: one row per cohort (its [`CohortRecord`] as JSON) under an AUTOINCREMENT id,
//! and static members in their own table.

use std::path::Path;

use rusqlite::{params, Connection, Transaction};

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
";

/// An open database.
pub(crate) struct Db {
    pub(crate) conn: Connection,
    name: String,
}

/// What a database holds: every cohort record (static members filled in) and the next id.
pub(crate) struct Loaded {
    pub(crate) records: Vec<CohortRecord>,
    pub(crate) next_id: CohortId,
}

impl Db {
    /// Opens (creating if needed) the database file.
    pub(crate) fn open(path: &Path) -> Result<Db, Error> {
        let name = path.display().to_string();
        let conn = Connection::open(path).map_err(|e| db_error(&name, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| db_error(&name, e))?;
        Ok(Db { conn, name })
    }

    /// The database's name for errors.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Reads every cohort.
    pub(crate) fn load(&self) -> Result<Loaded, Error> {
        let err = |e| db_error(&self.name, e);
        let mut records = Vec::new();
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
                let mut record: CohortRecord = serde_json::from_str(&text).map_err(|e| {
                    Error::input(
                        format!("{}: cohort {id}", self.name),
                        format!("unreadable record: {e}"),
                    )
                })?;
                record.id = id;
                records.push(record);
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
            next_id: seq.saturating_add(1),
        })
    }
}

/// Allocates a new cohort id (AUTOINCREMENT: never one used before) inside `tx`.
pub(crate) fn allocate(tx: &Transaction<'_>, name: &str) -> Result<CohortId, Error> {
    tx.execute("INSERT INTO cohorts (record) VALUES ('{}')", [])
        .map_err(|e| db_error(name, e))?;
    Ok(tx.last_insert_rowid())
}

/// Writes a cohort's record and static members inside `tx`.
pub(crate) fn save(tx: &Transaction<'_>, name: &str, record: &CohortRecord) -> Result<(), Error> {
    let err = |e| db_error(name, e);
    let text = serde_json::to_string(record)
        .map_err(|e| Error::input(name, format!("cannot encode cohort {}: {e}", record.id)))?;
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

pub(crate) fn db_error(name: &str, e: rusqlite::Error) -> Error {
    Error::input(name, format!("database error: {e}"))
}
