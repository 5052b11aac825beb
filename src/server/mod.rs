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
//! Errors are JSON: 400 `{"type": "validation_error", "code": "invalid_input", "detail": …,
//! "attr": null, "errors": [engine error lines]}` (a cycle's detail is "Cohorts cannot reference
//! other cohorts in a loop."; a `limit` that is not a positive integer or an `offset` that is not
//! a non-negative one is a 400 too), 401 without the API key (`Authorization: Bearer KEY`), 404
//! `{"type": "invalid_request", "code": "not_found", "detail": "Not found."}`, 405 for `DELETE`,
//! 408 for a request body that stalls, 413 for a body over the limit, 503 `{"type":
//! "server_error", …}` when the database cannot be written (locked by another connection, say).
//! Pagination links are relative (`/api/projects/1/cohorts/?limit=…&offset=…`), or absolute under
//! [`ServeOptions::public_url`]; they never copy the request's `Host` header.
//!
//! Cohort definitions and static members persist in SQLite (`--db FILE`, created with mode
//! 0600, in WAL mode; a write is acknowledged only once the WAL is flushed to disk, so it survives
//! `kill -9` and power loss); ids come from an
//! AUTOINCREMENT column and are never reused. Membership is recalculated synchronously on every
//! change (at the system clock's now) for the changed cohort and its dependents, and for every
//! cohort at start-up. A stored record that cannot be read back or no longer validates is moved
//! to a `quarantine` table at start-up, with an error on stderr naming its id, and the rest is
//! served.
//!
//! Hardening: a request head must arrive within [`ServeOptions::header_timeout`] and a body must
//! not stall for longer than [`ServeOptions::body_timeout`]; at most
//! [`ServeOptions::max_connections`] connections are served at once (more wait in the listen
//! backlog); stopping waits at most [`ServeOptions::shutdown_timeout`] for requests in flight.
//! Writes are serialized on the database; readers never wait for the database. The API key is
//! compared in constant time (over SHA-256 digests); failed attempts are logged and answered
//! only after a delay, at most about 20 a second in all. Every request is logged on stderr
//! (unless [`ServeOptions::access_log`] is off).

mod db;
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Semaphore};

use crate::data::{Dataset, LoadOptions};
use crate::error::{Error, ErrorKind};
use crate::store::CohortStore;

/// The environment variable holding the API key when neither `--api-key` nor `--api-key-file`
/// is given.
pub const API_KEY_ENV: &str = "COHORT_ENGINE_API_KEY";

/// Shortest API key accepted, in characters.
pub const MIN_KEY_LEN: usize = 16;

/// Default cap on a JSON or urlencoded request body (2 MiB).
pub const DEFAULT_MAX_BODY: usize = 2 << 20;
/// Default cap on a multipart (CSV upload) request body (64 MiB).
pub const DEFAULT_MAX_UPLOAD: usize = 64 << 20;

/// How to run the server. [`ServeOptions::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Directory holding `persons.jsonl` and (optionally) `events.jsonl` (`.gz` accepted too);
    /// `None` serves an empty population (cohorts can be managed; they have no members until the
    /// server is restarted with data).
    pub data_dir: Option<PathBuf>,
    /// The SQLite file of cohort definitions and static members (created, mode 0600, if absent).
    pub db_path: PathBuf,
    /// Address to listen on (port 0 picks a free port; see [`ServerHandle::addr`]). A
    /// non-loopback address is served with a warning.
    pub listen: SocketAddr,
    /// The API key requests must present as `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// A file holding the API key (one trailing line break is ignored). Only one of `api_key`
    /// and `api_key_file` may be given; with neither, the environment variable
    /// `COHORT_ENGINE_API_KEY` is used.
    pub api_key_file: Option<PathBuf>,
    /// Base URL for absolute pagination links (`https://cohorts.example.com`); `None` gives
    /// relative links.
    pub public_url: Option<String>,
    /// Largest JSON or urlencoded request body, in bytes.
    pub max_body: usize,
    /// Largest multipart request body (CSV uploads), in bytes.
    pub max_upload: usize,
    /// Time a client has to send a complete request head (also how long an idle keep-alive
    /// connection stays open).
    pub header_timeout: Duration,
    /// Longest pause allowed while a request body is being received.
    pub body_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Longest wait for requests in flight when stopping.
    pub shutdown_timeout: Duration,
    /// Longest wait for the database's write lock when another connection holds it.
    pub db_busy_timeout: Duration,
    /// Log every request on stderr.
    pub access_log: bool,
}

impl ServeOptions {
    /// The defaults: no data directory, listening on 127.0.0.1:8010, the key from the
    /// environment, 2 MiB bodies and 64 MiB uploads, 10 s for a request head, 30 s for a stalled
    /// body, 256 connections, 10 s to stop, 5 s for a locked database, access log on.
    pub fn new(db_path: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            data_dir: None,
            db_path: db_path.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8010)),
            api_key: None,
            api_key_file: None,
            public_url: None,
            max_body: DEFAULT_MAX_BODY,
            max_upload: DEFAULT_MAX_UPLOAD,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            shutdown_timeout: Duration::from_secs(10),
            db_busy_timeout: Duration::from_secs(5),
            access_log: true,
        }
    }
}

/// Writes one line on stderr in a single write, so lines from concurrent requests never mix.
pub(crate) fn log(line: &str) {
    use std::io::Write;
    let mut text = String::with_capacity(line.len() + 16);
    text.push_str("cohort-engine: ");
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Runs the server until Ctrl-C or SIGTERM (blocking; builds its own tokio runtime). Prints the
/// address it listens on to stderr.
///
/// # Errors
/// `usage` without a valid API key; `invalid_input` for unreadable data files, a database that
/// cannot be opened, or an address that cannot be bound.
pub fn serve(opts: ServeOptions) -> Result<(), Error> {
    let handle = spawn(opts)?;
    log(&format!("serving on http://{}", handle.addr()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input("server", format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    });
    log("stopping");
    handle.shutdown()
}

/// A server running on its own thread; dropping it stops the server.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server: no new connections, requests in flight get up to the shutdown timeout
    /// to finish, then the rest are closed. Waits for it.
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

/// Checks an API key: at least [`MIN_KEY_LEN`] printable ASCII characters, without leading or
/// trailing spaces (a key that cannot be sent in a header could never authenticate).
///
/// # Errors
/// `usage`, saying what is wrong (never the key itself).
pub fn check_api_key(key: &str) -> Result<(), Error> {
    let problem = if !key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        Some("must be printable ASCII (no control or non-ASCII characters)".to_string())
    } else if key.starts_with(' ') || key.ends_with(' ') {
        Some("must not start or end with a space".to_string())
    } else if key.len() < MIN_KEY_LEN {
        Some(format!(
            "is {} characters long; use at least {MIN_KEY_LEN}",
            key.len()
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::new(ErrorKind::Usage, format!("the API key {p}"))),
        None => Ok(()),
    }
}

/// The API key from the options or the environment, checked.
fn api_key(opts: &ServeOptions) -> Result<String, Error> {
    let key = match (&opts.api_key, &opts.api_key_file) {
        (Some(_), Some(_)) => {
            return Err(Error::new(
                ErrorKind::Usage,
                "give the API key one way: --api-key or --api-key-file",
            ))
        }
        (Some(k), None) => k.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::new(
                    ErrorKind::Usage,
                    format!("cannot read the API key file {}: {e}", path.display()),
                )
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_string()
        }
        (None, None) => std::env::var(API_KEY_ENV).map_err(|_| {
            Error::new(
                ErrorKind::Usage,
                format!(
                    "serve needs an API key: set {API_KEY_ENV}, or pass --api-key-file FILE \
                     (or --api-key KEY)"
                ),
            )
        })?,
    };
    check_api_key(&key)?;
    Ok(key)
}

/// The warning for an address other hosts can reach, if it is one.
pub fn listen_warning(addr: &SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "warning: listening on {addr}, which is not a loopback address: other hosts can \
             reach the API (in plain HTTP; put a TLS proxy in front of it)"
        )
    })
}

/// Loads everything, binds the address and starts serving on a background thread.
///
/// # Errors
/// As [`serve`].
pub fn spawn(opts: ServeOptions) -> Result<ServerHandle, Error> {
    let key = api_key(&opts)?;
    let public_url = match &opts.public_url {
        None => None,
        Some(u) => Some(check_public_url(u)?),
    };
    if let Some(w) = listen_warning(&opts.listen) {
        log(&w);
    }
    let data = match &opts.data_dir {
        Some(dir) => load_data(dir)?,
        None => Dataset::default(),
    };
    let mut db = db::Db::open(&opts.db_path, opts.db_busy_timeout)?;
    if db::readable_by_others(&opts.db_path) {
        log(&format!(
            "warning: {} can be read by other users (chmod 600 it)",
            opts.db_path.display()
        ));
    }
    let loaded = db.load()?;
    let (store, rejected) = CohortStore::restore_valid(data, loaded.records, loaded.next_id)
        .map_err(|e| {
            Error::input(
                db.name(),
                format!("the stored cohorts do not validate: {}", e.detail()),
            )
        })?;
    let mut quarantine: Vec<(i64, String, String)> = loaded
        .unreadable
        .into_iter()
        .map(|u| (u.id, u.text, u.error))
        .collect();
    for r in rejected {
        let text = serde_json::to_string(&r.record).unwrap_or_default();
        let why: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        quarantine.push((r.record.id, text, why.join("; ")));
    }
    for (id, _, why) in &quarantine {
        log(&format!(
            "error: cohort {id} cannot be served and was moved to the quarantine table: {why}"
        ));
    }
    if !quarantine.is_empty() {
        db.quarantine(&quarantine)?;
    }
    let app = Arc::new(http::App {
        store: RwLock::new(store),
        db: Arc::new(tokio::sync::Mutex::new(db)),
        key_digest: Sha256::digest(key.as_bytes()).into(),
        public_url,
        max_body: opts.max_body,
        max_upload: opts.max_upload,
        body_timeout: opts.body_timeout,
        busy_timeout: opts.db_busy_timeout,
        access_log: opts.access_log,
        auth_failures: Mutex::new(http::Failures::default()),
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
    let (stop, stopped) = oneshot::channel::<()>();
    let router = http::router(app);
    let limits = Limits {
        header_timeout: opts.header_timeout,
        max_connections: opts.max_connections.max(1),
        shutdown_timeout: opts.shutdown_timeout,
    };
    let thread = std::thread::spawn(move || {
        rt.block_on(accept_loop(listener, router, limits, stopped));
        // Blocking work still running (a calculation) gets a moment; then it is abandoned.
        rt.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

struct Limits {
    header_timeout: Duration,
    max_connections: usize,
    shutdown_timeout: Duration,
}

/// Accepts connections until `stop`, at most `max_connections` at a time, each with a header
/// read timeout; then lets requests in flight finish for at most the shutdown timeout.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    log(&format!("error: accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            async move {
                use tower_service::Service;
                router.call(req).await
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_timeout) => {
            log("shutdown: closing connections that did not finish in time");
        }
    }
}

/// `https://host[:port][/prefix]` without a trailing slash.
fn check_public_url(url: &str) -> Result<String, Error> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && !url.contains(['?', '#', ' '])
        && url.is_ascii()
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if !ok {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("--public-url must be an http(s) URL without query, got {url:?}"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_long_printable_and_unpadded() {
        assert!(check_api_key("0123456789abcdef").is_ok());
        assert!(check_api_key("phx_0123 456789abcdef").is_ok());
        for bad in [
            "",
            "x",
            "0123456789abcde",
            " 0123456789abcdef",
            "0123456789abcdef ",
            "0123456789abcdef\t",
            "0123456789abcdéf",
            "0123456789\nabcdef",
        ] {
            let e = check_api_key(bad).err();
            assert_eq!(e.map(|e| e.code()), Some("usage"), "{bad:?}");
        }
    }

    #[test]
    fn only_non_loopback_addresses_warn() {
        let local: SocketAddr = "127.0.0.1:80"
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 80)));
        assert!(listen_warning(&local).is_none());
        assert!(listen_warning(&SocketAddr::from(([0, 0, 0, 0], 80))).is_some());
        assert!(listen_warning(&SocketAddr::from(([10, 1, 2, 3], 80))).is_some());
        assert!(listen_warning(&"[::1]:80".parse().unwrap_or(local)).is_none());
    }

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(
            check_public_url("https://c.example.com/").ok().as_deref(),
            Some("https://c.example.com")
        );
        assert!(check_public_url("c.example.com").is_err());
        assert!(check_public_url("https://").is_err());
        assert!(check_public_url("https://x/?a=b").is_err());
    }
}
