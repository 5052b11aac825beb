//! A local HTTP server speaking the cohort API (`cohort-engine serve`, cargo feature `server`).
//!
//! Endpoints, under `/api/projects/:project_id/cohorts/` (any project id; one project per
//! server), with the API's JSON shapes and status codes:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | list: `{"count", "next", "previous", "results"}`; `limit`, `offset`, `type=static\|dynamic`, `search`, `hide_behavioral_cohorts=true` |
//! | `POST /` | create (JSON, or multipart/form-data with a `csv` file for a static cohort) → 201 |
//! | `GET /:id/` | retrieve (deleted cohorts too) |
//! | `PATCH /:id/` (and `PUT`) | update; `deleted: true`/`false` soft-deletes / restores |
//! | `DELETE /:id/` | 405: hard delete does not exist |
//! | `GET /:id/duplicate_as_static_cohort/` | a static copy of a dynamic cohort's current members |
//! | `GET /:id/persons/` | `{"results", "next", "previous"}`; `limit` (default 100), `offset`, `format=csv` |
//! | `PATCH /:id/add_persons_to_static_cohort/` | `{"person_ids": [...]}` → `{"success": true}` |
//! | `PATCH /:id/remove_person_from_static_cohort/` | `{"person_id": "..."}` → `{"success": true}` |
//!
//! Errors: 400 `{"type": "validation_error", "code": "invalid_input", "detail": …, "attr": null,
//! "errors": [engine error lines]}` (a cycle's detail is "Cohorts cannot reference other cohorts in
//! a loop."), 401 without the API key (`Authorization: Bearer KEY`), 404 `{"type":
//! "invalid_request", "code": "not_found", "detail": "Not found."}`, 405 for `DELETE`.
//!
//! Cohort definitions and static members persist in SQLite (`--db FILE`); ids come from an
//! AUTOINCREMENT column and are never reused. Membership is recalculated synchronously on every
//! change (at the system clock's now), and for every cohort at start-up.

mod db;
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::data::{Dataset, LoadOptions};
use crate::error::{Error, ErrorKind};
use crate::store::CohortStore;

/// The environment variable holding the API key when `--api-key` is not given.
pub const API_KEY_ENV: &str = "COHORT_ENGINE_API_KEY";

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Directory holding `persons.jsonl` and (optionally) `events.jsonl` (`.gz` accepted too).
    pub data_dir: PathBuf,
    /// The SQLite file of cohort definitions and static members (created if absent).
    pub db_path: PathBuf,
    /// Address to listen on (port 0 picks a free port; see [`ServerHandle::addr`]).
    pub listen: SocketAddr,
    /// The API key requests must present as `Authorization: Bearer KEY`; `None` falls back to
    /// the environment variable `COHORT_ENGINE_API_KEY`.
    pub api_key: Option<String>,
}

/// Runs the server until Ctrl-C (blocking; builds its own tokio runtime). Prints the address it
/// listens on to stderr.
///
/// # Errors
/// `usage` without an API key; `invalid_input` for unreadable data files, a database that cannot
/// be opened or holds invalid cohorts, or an address that cannot be bound.
pub fn serve(opts: ServeOptions) -> Result<(), Error> {
    let handle = spawn(opts)?;
    eprintln!("cohort-engine: serving on http://{}", handle.addr());
    let (tx, rx) = mpsc::channel::<()>();
    let waiter = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
        }
        let _ = tx.send(());
    });
    let _ = rx.recv();
    drop(waiter);
    handle.shutdown()
}

/// A server running on its own thread; dropping it stops the server.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (in-flight requests finish) and waits for it.
    ///
    /// # Errors
    /// What the server loop failed with, if it did.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::input("server", "the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Loads everything, binds the address and starts serving on a background thread.
///
/// # Errors
/// As [`serve`].
pub fn spawn(opts: ServeOptions) -> Result<ServerHandle, Error> {
    let api_key = opts
        .api_key
        .clone()
        .or_else(|| std::env::var(API_KEY_ENV).ok())
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Usage,
                format!("serve needs an API key: pass --api-key KEY or set {API_KEY_ENV}"),
            )
        })?;
    let data = load_data(&opts.data_dir)?;
    let db = db::Db::open(&opts.db_path)?;
    let loaded = db.load()?;
    let store = CohortStore::restore(data, loaded.records, loaded.next_id).map_err(|e| {
        Error::input(
            db.name(),
            format!("the stored cohorts do not validate: {}", e.detail()),
        )
    })?;
    let app = Arc::new(http::App {
        store: Mutex::new(store),
        db: Mutex::new(db),
        api_key,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input("server", format!("cannot start the runtime: {e}")))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(opts.listen))
        .map_err(|e| Error::input(opts.listen.to_string(), format!("cannot listen: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::input(opts.listen.to_string(), format!("cannot listen: {e}")))?;
    let (stop, stopped) = mpsc::channel::<()>();
    let router = http::router(app);
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let shutdown = async move {
                let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
            };
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|e| Error::input("server", format!("server error: {e}")))
        })
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Loads `persons.jsonl` (required) and `events.jsonl` (optional), or their `.gz` forms.
fn load_data(dir: &Path) -> Result<Dataset, Error> {
    let pick = |name: &str| {
        let plain = dir.join(name);
        let gz = dir.join(format!("{name}.gz"));
        if plain.exists() {
            Some(plain)
        } else if gz.exists() {
            Some(gz)
        } else {
            None
        }
    };
    let persons = pick("persons.jsonl").ok_or_else(|| {
        Error::input(
            dir.display().to_string(),
            "the data directory has no persons.jsonl",
        )
    })?;
    let events = pick("events.jsonl");
    Dataset::from_paths(&persons, events.as_deref(), &mut LoadOptions::default())
}
