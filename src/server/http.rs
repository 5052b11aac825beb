//! Routes, handlers, authentication, the access log and request-body decoding.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use http_body_util::BodyExt;
use memchr::memmem;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::db::{self, Db, DbError};
use super::log;
use crate::store::{CohortKind, CohortStore, ListQuery, PlannedChange, StoreError};
use crate::CohortId;

/// Shared server state.
///
/// The store is behind a read-write lock that is only ever held for in-memory work: readers
/// share it, and a write takes it exclusively just to install an already persisted change.
/// Writes are serialized by the database mutex, which is the only lock held while SQLite waits.
pub(crate) struct App {
    pub(crate) store: RwLock<CohortStore>,
    pub(crate) db: Arc<tokio::sync::Mutex<Db>>,
    pub(crate) key_digest: [u8; 32],
    pub(crate) public_url: Option<String>,
    pub(crate) max_body: usize,
    pub(crate) max_upload: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) busy_timeout: Duration,
    pub(crate) access_log: bool,
    pub(crate) auth_failures: Mutex<Failures>,
}

type Shared = Arc<App>;

const BASE: &str = "/api/projects/{project_id}/cohorts";

/// Every failed authentication waits at least this long before it is answered …
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(250);
/// … and failures are answered at most one per this interval, all clients together …
const AUTH_FAILURE_SPACING: Duration = Duration::from_millis(50);
/// … unless that would mean waiting longer than this.
const AUTH_FAILURE_MAX_WAIT: Duration = Duration::from_secs(30);
/// Failed authentications logged per second at most (the rest are counted).
const AUTH_FAILURE_LOG_PER_SECOND: u32 = 10;

/// Longest multipart boundary (RFC 2046 §5.1.1 allows 1 to 70 characters).
const MAX_BOUNDARY: usize = 70;

/// Bookkeeping of failed authentications: when the next one may be answered, and how many were
/// logged in the current second.
#[derive(Default)]
pub(crate) struct Failures {
    next_slot: Option<Instant>,
    second: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// The router with every endpoint, behind the API-key check and the access log.
pub(crate) fn router(app: Shared) -> Router {
    let mut r = Router::new();
    for slash in ["/", ""] {
        r = r
            .route(&format!("{BASE}{slash}"), get(list).post(create))
            .route(
                &format!("{BASE}/{{id}}{slash}"),
                get(retrieve)
                    .patch(update)
                    .put(update)
                    .delete(delete_forbidden),
            )
            .route(
                &format!("{BASE}/{{id}}/duplicate_as_static_cohort{slash}"),
                get(duplicate),
            )
            .route(&format!("{BASE}/{{id}}/persons{slash}"), get(persons))
            .route(
                &format!("{BASE}/{{id}}/add_persons_to_static_cohort{slash}"),
                patch(add_persons),
            )
            .route(
                &format!("{BASE}/{{id}}/remove_person_from_static_cohort{slash}"),
                patch(remove_person),
            );
    }
    r.fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(middleware::from_fn_with_state(app.clone(), access_log))
        .with_state(app)
}

// ---------------------------------------------------------------------------------------------
// Responses

fn error_body(status: StatusCode, kind: &str, code: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({"type": kind, "code": code, "detail": detail, "attr": null})),
    )
        .into_response()
}

fn not_found() -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "invalid_request",
        "not_found",
        "Not found.",
    )
}

/// A fault of the server (not of the request): logged in full, answered without details.
fn internal_error(what: &str) -> Response {
    log(&format!("error: {what}"));
    error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "error",
        "A server error occurred.",
    )
}

/// A database failure: 503 (the request may be retried), logged with the database's own
/// message, answered without it (it names the file).
fn db_unavailable(e: &DbError) -> Response {
    log(&format!("error: database: {}", e.message));
    let (code, detail) = if e.busy {
        (
            "database_busy",
            "The database is locked by another connection; try again.",
        )
    } else {
        (
            "database_unavailable",
            "The database cannot be written at the moment; try again later.",
        )
    };
    let mut r = error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        code,
        detail,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn validation_error(detail: &str) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        "validation_error",
        "invalid_input",
        detail,
    )
}

fn attr_error(attr: &str, detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "type": "validation_error",
            "code": "invalid_input",
            "detail": detail,
            "attr": attr,
        })),
    )
        .into_response()
}

fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::NotFound(m) if m.starts_with("cohort ") => not_found(),
        StoreError::NotFound(m) => {
            error_body(StatusCode::NOT_FOUND, "invalid_request", "not_found", m)
        }
        StoreError::Rejected(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "type": "validation_error",
                    "code": "invalid_input",
                    "detail": e.detail(),
                    "attr": null,
                    "errors": lines,
                })),
            )
                .into_response()
        }
    }
}

fn read(store: &RwLock<CohortStore>) -> RwLockReadGuard<'_, CohortStore> {
    store.read().unwrap_or_else(|e| e.into_inner())
}

fn write(store: &RwLock<CohortStore>) -> RwLockWriteGuard<'_, CohortStore> {
    store.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Access log, authentication and fallbacks

fn peer(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string())
}

/// One line per request: peer, method, path and query, status, time taken.
async fn access_log(State(app): State<Shared>, req: Request, next: Next) -> Response {
    if !app.access_log {
        return next.run(req).await;
    }
    let started = Instant::now();
    let who = peer(&req);
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), ToString::to_string);
    let response = next.run(req).await;
    log(&format!(
        "{who} \"{method} {}\" {} {:.1}ms",
        target.escape_debug(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    ));
    response
}

/// True when `presented` is the key: SHA-256 digests compared in constant time, so neither the
/// key's length nor a common prefix shows in the time taken.
fn key_matches(app: &App, presented: &str) -> bool {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    bool::from(digest.ct_eq(&app.key_digest))
}

async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let failure = match presented {
        Some(key) if key_matches(&app, key) => return next.run(req).await,
        Some(_) => (
            "authentication_failed",
            "Personal API key is invalid.",
            "a wrong key",
        ),
        None => (
            "not_authenticated",
            "Authentication credentials were not provided.",
            "no key",
        ),
    };
    let wait = failed_attempt(&app, &req, failure.2);
    tokio::time::sleep(wait).await;
    error_body(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        failure.0,
        failure.1,
    )
}

/// Logs a failed authentication (at most [`AUTH_FAILURE_LOG_PER_SECOND`] lines a second) and
/// says how long to wait before answering it: a fixed delay, plus a turn among all failures so
/// that guesses are answered at most one per [`AUTH_FAILURE_SPACING`] however many connections
/// make them.
fn failed_attempt(app: &App, req: &Request, what: &str) -> Duration {
    let now = Instant::now();
    let mut f = lock(&app.auth_failures);
    if f.second
        .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
    {
        if f.suppressed > 0 {
            log(&format!(
                "warning: {} more failed authentications not logged",
                f.suppressed
            ));
        }
        f.second = Some(now);
        f.logged = 0;
        f.suppressed = 0;
    }
    if f.logged < AUTH_FAILURE_LOG_PER_SECOND {
        f.logged += 1;
        log(&format!(
            "warning: authentication failed ({what}) from {} for \"{} {}\"",
            peer(req),
            req.method(),
            req.uri().path().escape_debug()
        ));
    } else {
        f.suppressed += 1;
    }
    let slot = f.next_slot.map_or(now, |s| s.max(now));
    let queue = slot.duration_since(now).min(AUTH_FAILURE_MAX_WAIT);
    f.next_slot = Some(now + queue + AUTH_FAILURE_SPACING);
    AUTH_FAILURE_DELAY + queue
}

async fn fallback() -> Response {
    not_found()
}

async fn method_not_allowed(method: Method) -> Response {
    error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "method_not_allowed",
        &format!("Method \"{method}\" not allowed."),
    )
}

async fn delete_forbidden() -> Response {
    method_not_allowed(Method::DELETE).await
}

// ---------------------------------------------------------------------------------------------
// Request decoding

/// Reads a request body: at most `--max-body` bytes (`--max-upload` for multipart), and no
/// pause longer than the body timeout between two pieces of it. Errors are JSON: 413 and 408.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let multipart = content_type(headers)
        .to_ascii_lowercase()
        .starts_with("multipart/form-data");
    let (limit, flag) = if multipart {
        (app.max_upload, "--max-upload")
    } else {
        (app.max_body, "--max-body")
    };
    let too_large = || {
        let mut r = error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "request_too_large",
            &format!("The request body is larger than {limit} bytes (the server's {flag})."),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = body;
    let mut out: Vec<u8> = Vec::new();
    loop {
        match tokio::time::timeout(app.body_timeout, body.frame()).await {
            Err(_) => {
                let mut r = error_body(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request",
                    "request_timeout",
                    "The request body stalled.",
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Err(r);
            }
            Ok(None) => return Ok(Bytes::from(out)),
            Ok(Some(Err(_))) => {
                return Err(validation_error("The request body could not be read."))
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if out.len().saturating_add(data.len()) > limit {
                        return Err(too_large());
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Query parameters in order, percent-decoded.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `limit` (a positive integer) and `offset` (a non-negative one), when given; anything else
/// is a 400 rather than silently ignored (a `limit=0` page would link to itself forever).
fn paging(pairs: &[(String, String)]) -> Result<(Option<usize>, usize), Box<Response>> {
    let limit = match param(pairs, "limit") {
        None => None,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(Box::new(attr_error(
                    "limit",
                    "limit must be a positive integer.",
                )))
            }
        },
    };
    let offset = match param(pairs, "offset") {
        None => 0,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return Err(Box::new(attr_error(
                    "offset",
                    "offset must be a non-negative integer.",
                )))
            }
        },
    };
    Ok((limit, offset))
}

/// A request body: its fields as a JSON object, and a CSV upload if any.
struct DecodedBody {
    fields: Value,
    csv: Option<String>,
}

/// Decodes a JSON, urlencoded-form or multipart-form body. Whatever the encoding, the fields
/// end up as one JSON object and go through the same checks (the store's, including the
/// nesting limit on `filters` and `groups`).
fn decode_body(headers: &HeaderMap, bytes: &[u8]) -> Result<DecodedBody, Box<Response>> {
    let content_type = content_type(headers);
    let lower = content_type.to_ascii_lowercase();
    if lower.starts_with("multipart/form-data") {
        let boundary = match boundary(content_type) {
            Ok(b) => b,
            Err(why) => return Err(Box::new(validation_error(why))),
        };
        let parts = multipart(bytes, &boundary).ok_or_else(|| {
            Box::new(validation_error(
                "Multipart form parse error - invalid body.",
            ))
        })?;
        let mut fields = Map::new();
        let mut csv = None;
        for part in parts {
            let Ok(text) = String::from_utf8(part.data.to_vec()) else {
                return Err(Box::new(validation_error(
                    "CSV file encoding is not supported. Please save your file as UTF-8 and try again.",
                )));
            };
            if part.name == "csv" {
                csv = Some(text);
            } else {
                let value = form_value(&part.name, text)?;
                fields.insert(part.name, value);
            }
        }
        return Ok(DecodedBody {
            fields: Value::Object(fields),
            csv,
        });
    }
    if lower.starts_with("application/x-www-form-urlencoded") {
        let text = String::from_utf8_lossy(bytes);
        let mut fields = Map::new();
        let mut csv = None;
        for (k, v) in query_pairs(Some(&text)) {
            if k == "csv" {
                csv = Some(v);
            } else {
                let value = form_value(&k, v)?;
                fields.insert(k, value);
            }
        }
        return Ok(DecodedBody {
            fields: Value::Object(fields),
            csv,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecodedBody {
            fields: Value::Object(Map::new()),
            csv: None,
        });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut obj)) => {
            let csv = match obj.remove("csv") {
                Some(Value::String(s)) => Some(s),
                _ => None,
            };
            Ok(DecodedBody {
                fields: Value::Object(obj),
                csv,
            })
        }
        Ok(_) => Err(Box::new(validation_error("Expected a JSON object."))),
        Err(e) => Err(Box::new(validation_error(&format!(
            "JSON parse error - {e}"
        )))),
    }
}

/// A form field as JSON: JSON-typed fields are parsed (a field that is not valid JSON is a 400,
/// as the same field in a JSON body would be), the rest stay strings.
fn form_value(name: &str, text: String) -> Result<Value, Box<Response>> {
    match name {
        "filters" | "groups" | "_create_static_person_ids" | "person_ids" => {
            serde_json::from_str(&text)
                .map_err(|e| Box::new(attr_error(name, &format!("{name}: JSON parse error - {e}"))))
        }
        _ => Ok(Value::String(text)),
    }
}

/// The multipart boundary of a content type: 1 to 70 characters.
fn boundary(content_type: &str) -> Result<String, &'static str> {
    let found = content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    });
    match found {
        None => Err("Multipart form parse error - missing boundary."),
        Some(b) if b.is_empty() => Err("Multipart form parse error - missing boundary."),
        Some(b) if b.len() > MAX_BOUNDARY => {
            Err("Multipart form parse error - the boundary is longer than 70 characters.")
        }
        Some(b) => Ok(b),
    }
}

struct Part<'a> {
    name: String,
    data: &'a [u8],
}

/// Splits a multipart/form-data body into named parts (RFC 7578). Every search is
/// `memchr::memmem` (linear time), so the cost is proportional to the body's length.
fn multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n{delim}");
    let find_next = memmem::Finder::new(next_delim.as_bytes());
    let crlf = memmem::Finder::new(b"\r\n");
    let head_end = memmem::Finder::new(b"\r\n\r\n");
    let mut parts = Vec::new();
    let mut pos = memmem::find(body, delim.as_bytes())? + delim.len();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(parts);
        }
        // Skip the line break after the delimiter.
        pos += crlf.find(body.get(pos..)?)? + 2;
        let headers_end = pos + head_end.find(body.get(pos..)?)?;
        let headers = String::from_utf8_lossy(&body[pos..headers_end]);
        let data_start = headers_end + 4;
        let next = data_start + find_next.find(body.get(data_start..)?)?;
        let name = headers.split("\r\n").find_map(|line| {
            let (k, v) = line.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            v.split(';').find_map(|p| {
                let (pk, pv) = p.trim().split_once('=')?;
                (pk.trim() == "name").then(|| pv.trim().trim_matches('"').to_string())
            })
        });
        if let Some(name) = name {
            parts.push(Part {
                name,
                data: &body[data_start..next],
            });
        }
        pos = next + next_delim.len();
    }
}

fn parse_id(id: &str) -> Option<CohortId> {
    id.parse::<CohortId>().ok().filter(|i| *i >= 0)
}

/// A pagination link: the request's path and query with `limit` and `offset` replaced; relative,
/// or under the configured public URL. Never built from the `Host` header.
fn page_url(app: &App, uri: &Uri, limit: usize, offset: usize) -> String {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("limit=") && !p.starts_with("offset="))
        .collect();
    let paging = format!("limit={limit}&offset={offset}");
    query.push(&paging);
    format!(
        "{}{}?{}",
        app.public_url.as_deref().unwrap_or(""),
        uri.path(),
        query.join("&")
    )
}

fn links(app: &App, uri: &Uri, total: usize, limit: usize, offset: usize) -> (Value, Value) {
    let next =
        (offset.saturating_add(limit) < total).then(|| page_url(app, uri, limit, offset + limit));
    let previous = (offset > 0).then(|| page_url(app, uri, limit, offset.saturating_sub(limit)));
    (json!(next), json!(previous))
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn list(State(app): State<Shared>, RawQuery(raw): RawQuery, uri: Uri) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let (limit, offset) = match paging(&pairs) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let q = ListQuery {
        limit,
        offset,
        kind: match param(&pairs, "type") {
            Some("static") => Some(CohortKind::Static),
            Some("dynamic") => Some(CohortKind::Dynamic),
            _ => None,
        },
        search: param(&pairs, "search").map(str::to_string),
        hide_behavioral_cohorts: param(&pairs, "hide_behavioral_cohorts")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    };
    let limit = q.limit.unwrap_or(crate::store::DEFAULT_LIMIT);
    let mut out = Vec::with_capacity(4096);
    let count = {
        let store = read(&app.store);
        let (count, ids) = store.list_ids(&q);
        out.extend_from_slice(b"{\"count\":");
        out.extend_from_slice(count.to_string().as_bytes());
        out.extend_from_slice(b",\"results\":[");
        let start = out.len();
        for id in ids {
            let mark = out.len();
            if mark > start {
                out.push(b',');
            }
            if !store.write_api_json(id, &mut out) {
                out.truncate(mark);
            }
        }
        count
    };
    let (next, previous) = links(&app, &uri, count, limit, q.offset);
    out.extend_from_slice(b"],\"next\":");
    out.extend_from_slice(next.to_string().as_bytes());
    out.extend_from_slice(b",\"previous\":");
    out.extend_from_slice(previous.to_string().as_bytes());
    out.push(b'}');
    json_bytes(out)
}

/// A 200 response whose body is already serialized JSON.
fn json_bytes(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Plans a change, persists it and installs it, in that order, holding the database mutex
/// throughout (writes are serialized) but the store's lock only to plan (shared with readers)
/// and to install (a few map insertions). `op` gets the new id when `allocate` is set (taken
/// from the database's AUTOINCREMENT sequence inside the same transaction, so a refused create
/// uses no id). Returns the cohort's id and its JSON.
async fn transact<F>(app: Shared, allocate: bool, op: F) -> Result<(CohortId, Value), Response>
where
    F: FnOnce(&CohortStore, Option<CohortId>) -> Result<PlannedChange, StoreError> + Send + 'static,
{
    let guard = match tokio::time::timeout(app.busy_timeout, app.db.clone().lock_owned()).await {
        Ok(g) => g,
        Err(_) => {
            return Err(db_unavailable(&DbError {
                busy: true,
                message: "timed out waiting for the write queue".into(),
            }))
        }
    };
    let task = tokio::task::spawn_blocking(move || -> Result<(CohortId, Value), Box<Response>> {
        let busy = |e: DbError| Box::new(db_unavailable(&e));
        let mut db = guard;
        let name = db.name().to_string();
        let wal = db.wal_path().to_path_buf();
        let tx = db.begin().map_err(busy)?;
        let new_id = match allocate {
            true => Some(db::allocate(&tx, &name).map_err(busy)?),
            false => None,
        };
        let change = op(&read(&app.store), new_id).map_err(|e| Box::new(store_error(&e)))?;
        db::save(&tx, &name, change.record()).map_err(busy)?;
        tx.commit().map_err(|e| busy(DbError::new(&name, &e)))?;
        let id = change.id();
        let installed = write(&app.store).apply(change);
        let body = read(&app.store).to_api_json(id).unwrap_or(Value::Null);
        // The next write may start now; this one is acknowledged once the WAL is on disk.
        drop(db);
        if let Err(e) = installed {
            // Cannot happen while writes are serialized by the database mutex.
            return Err(Box::new(internal_error(&format!(
                "cohort {id} was saved but not installed: {e}"
            ))));
        }
        db::sync(&wal, &name).map_err(busy)?;
        Ok((id, body))
    });
    match task.await {
        Ok(r) => r.map_err(|r| *r),
        Err(e) => Err(internal_error(&format!("a write failed: {e}"))),
    }
}

async fn create(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = match decode_body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let result = transact(app, true, move |store, id| {
        let id = id.unwrap_or_else(|| store.next_id());
        store.plan_create(id, &body.fields, body.csv.as_deref())
    })
    .await;
    match result {
        Ok((_, json)) => (StatusCode::CREATED, Json(json)).into_response(),
        Err(r) => r,
    }
}

async fn retrieve(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let mut out = Vec::with_capacity(1024);
    let found = read(&app.store).write_api_json(id, &mut out);
    match found {
        true => json_bytes(out),
        false => not_found(),
    }
}

async fn update(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let bytes = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = match decode_body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let result = transact(app, false, move |store, _| {
        store.plan_update(id, &body.fields, body.csv.as_deref())
    })
    .await;
    match result {
        Ok((_, json)) => Json(json).into_response(),
        Err(r) => r,
    }
}

async fn duplicate(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let result = transact(app, true, move |store, new_id| {
        let new_id = new_id.unwrap_or_else(|| store.next_id());
        store.plan_duplicate_as_static(id, new_id, store.now())
    })
    .await;
    match result {
        Ok((_, json)) => Json(json).into_response(),
        Err(r) => r,
    }
}

async fn persons(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let pairs = query_pairs(raw.as_deref());
    let (limit, offset) = match paging(&pairs) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let wants_csv = param(&pairs, "format") == Some("csv")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("text/csv"));
    if wants_csv {
        let csv = read(&app.store).persons_csv(id, limit, offset);
        return match csv {
            Ok(csv) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                )],
                csv,
            )
                .into_response(),
            Err(e) => store_error(&e),
        };
    }
    let page = read(&app.store).persons(id, limit, offset);
    match page {
        Ok(page) => {
            let limit = limit.unwrap_or(crate::store::DEFAULT_LIMIT);
            let (next, previous) = links(&app, &uri, page.total, limit, offset);
            Json(json!({"results": page.results, "next": next, "previous": previous}))
                .into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn add_persons(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let bytes = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = match decode_body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let ids: Vec<String> = match body.fields.get("person_ids") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return validation_error("person_ids must be a list"),
    };
    match transact(app, false, move |store, _| store.plan_add_persons(id, &ids)).await {
        Ok(_) => Json(json!({"success": true})).into_response(),
        Err(r) => r,
    }
}

async fn remove_person(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let bytes = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = match decode_body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let person = match body.fields.get("person_id") {
        None | Some(Value::Null) => return validation_error("person_id is required"),
        Some(Value::String(s)) if s.is_empty() => return validation_error("person_id is required"),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return validation_error("person_id must be a string"),
    };
    match transact(app, false, move |store, _| {
        store.plan_remove_person(id, &person)
    })
    .await
    {
        Ok(_) => Json(json!({"success": true})).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(percent_decode("a+b%20c%2Fd%"), "a b c/d%");
        assert_eq!(
            query_pairs(Some("search=Pay%20ing&type=static")),
            vec![
                ("search".to_string(), "Pay ing".to_string()),
                ("type".to_string(), "static".to_string())
            ]
        );
    }

    #[test]
    fn splits_multipart() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nImported\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csv\"; filename=\"m.csv\"\r\nContent-Type: text/csv\r\n\r\nperson_id\r\nu1\r\n\r\n--XyZ--\r\n";
        let parts = multipart(body, "XyZ").unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "name");
        assert_eq!(parts[0].data, b"Imported");
        assert_eq!(parts[1].name, "csv");
        assert_eq!(parts[1].data, b"person_id\r\nu1\r\n");
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\"").ok(),
            Some("XyZ".to_string())
        );
        assert!(boundary(&format!("multipart/form-data; boundary={}", "b".repeat(71))).is_err());
        assert!(boundary("multipart/form-data; boundary=").is_err());
        assert!(multipart(b"--XyZ\r\nno end", "XyZ").is_none());
    }

    #[test]
    fn a_near_miss_body_is_split_in_linear_time() {
        // A 4 MB body that almost matches the delimiter everywhere: the old byte-by-byte window
        // comparison costs body × boundary; memmem stays linear.
        let boundary = "b".repeat(MAX_BOUNDARY);
        let mut body =
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csv\"\r\n\r\n")
                .into_bytes();
        let near = format!("\r\n--{}", "b".repeat(MAX_BOUNDARY - 1));
        while body.len() < 4 << 20 {
            body.extend_from_slice(near.as_bytes());
            body.push(b'x');
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let started = Instant::now();
        let parts = multipart(&body, &boundary).unwrap_or_default();
        assert_eq!(parts.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
