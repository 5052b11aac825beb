//! Routes, handlers, authentication and request-body decoding.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::db::{self, Db};
use crate::error::Error;
use crate::store::{CohortKind, CohortStore, ListQuery, StoreError};
use crate::CohortId;

/// Shared server state. Locks are taken store first, then database.
pub(crate) struct App {
    pub(crate) store: Mutex<CohortStore>,
    pub(crate) db: Mutex<Db>,
    pub(crate) api_key: String,
}

type Shared = Arc<App>;

const BASE: &str = "/api/projects/{project_id}/cohorts";

/// The router with every endpoint, behind the API-key check.
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

fn server_error(e: &Error) -> Response {
    error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "error",
        &e.to_string(),
    )
}

fn validation_error(detail: &str) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        "validation_error",
        "invalid_input",
        detail,
    )
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the blocking pool (evaluation and SQLite are synchronous).
async fn blocking<F>(app: Shared, f: F) -> Response
where
    F: FnOnce(&App) -> Response + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(&app)).await {
        Ok(r) => r,
        Err(e) => server_error(&Error::input("server", format!("request failed: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication and fallbacks

async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => error_body(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "not_authenticated",
            "Authentication credentials were not provided.",
        ),
        Some(key) if !same(key.as_bytes(), app.api_key.as_bytes()) => error_body(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "authentication_failed",
            "Personal API key is invalid.",
        ),
        Some(_) => next.run(req).await,
    }
}

/// Constant-time comparison (for equal lengths).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

fn usize_param(pairs: &[(String, String)], key: &str) -> Option<usize> {
    param(pairs, key).and_then(|v| v.trim().parse().ok())
}

/// A request body: its fields as a JSON object, and a CSV upload if any.
struct Body {
    fields: Value,
    csv: Option<String>,
}

/// Decodes a JSON, urlencoded-form or multipart-form body.
fn decode_body(headers: &HeaderMap, bytes: &Bytes) -> Result<Body, Box<Response>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let lower = content_type.to_ascii_lowercase();
    if lower.starts_with("multipart/form-data") {
        let Some(boundary) = boundary(&content_type) else {
            return Err(Box::new(validation_error(
                "Multipart form parse error - missing boundary.",
            )));
        };
        let parts = multipart(bytes, &boundary).ok_or_else(|| {
            Box::new(validation_error(
                "Multipart form parse error - invalid body.",
            ))
        })?;
        let mut fields = Map::new();
        let mut csv = None;
        for part in parts {
            let Ok(text) = String::from_utf8(part.data) else {
                return Err(Box::new(validation_error(
                    "CSV file encoding is not supported. Please save your file as UTF-8 and try again.",
                )));
            };
            if part.name == "csv" {
                csv = Some(text);
            } else {
                fields.insert(part.name.clone(), form_value(&part.name, text));
            }
        }
        return Ok(Body {
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
                fields.insert(k.clone(), form_value(&k, v));
            }
        }
        return Ok(Body {
            fields: Value::Object(fields),
            csv,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body {
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
            Ok(Body {
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

/// A form field as JSON: JSON-typed fields are parsed, the rest stay strings.
fn form_value(name: &str, text: String) -> Value {
    match name {
        "filters" | "groups" | "_create_static_person_ids" | "person_ids" => {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        _ => Value::String(text),
    }
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

struct Part {
    name: String,
    data: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Splits a multipart/form-data body into named parts (RFC 7578).
fn multipart(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0)? + delim.len();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(parts);
        }
        // Skip the line break after the delimiter.
        pos = find(body, b"\r\n", pos)? + 2;
        let headers_end = find(body, b"\r\n\r\n", pos)?;
        let headers = String::from_utf8_lossy(&body[pos..headers_end]).into_owned();
        let data_start = headers_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), data_start)?;
        let name = headers.lines().find_map(|line| {
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
                data: body[data_start..next].to_vec(),
            });
        }
        pos = next + 2 + delim.len();
    }
}

fn parse_id(id: &str) -> Option<CohortId> {
    id.parse::<CohortId>().ok().filter(|i| *i >= 0)
}

/// `http://host/path?…&limit=L&offset=O` for pagination links.
fn page_url(headers: &HeaderMap, uri: &Uri, limit: usize, offset: usize) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let mut query: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("limit=") && !p.starts_with("offset="))
        .map(str::to_string)
        .collect();
    query.push(format!("limit={limit}"));
    query.push(format!("offset={offset}"));
    format!("http://{host}{}?{}", uri.path(), query.join("&"))
}

fn links(
    headers: &HeaderMap,
    uri: &Uri,
    total: usize,
    limit: usize,
    offset: usize,
) -> (Value, Value) {
    let next = (offset.saturating_add(limit) < total)
        .then(|| page_url(headers, uri, limit, offset + limit));
    let previous =
        (offset > 0).then(|| page_url(headers, uri, limit, offset.saturating_sub(limit)));
    (json!(next), json!(previous))
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn list(
    State(app): State<Shared>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let q = ListQuery {
        limit: usize_param(&pairs, "limit"),
        offset: usize_param(&pairs, "offset").unwrap_or(0),
        kind: match param(&pairs, "type") {
            Some("static") => Some(CohortKind::Static),
            Some("dynamic") => Some(CohortKind::Dynamic),
            _ => None,
        },
        search: param(&pairs, "search").map(str::to_string),
        hide_behavioral_cohorts: param(&pairs, "hide_behavioral_cohorts")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    };
    blocking(app, move |app| {
        let page = lock(&app.store).list(&q);
        let limit = q.limit.unwrap_or(crate::store::DEFAULT_LIMIT);
        let (next, previous) = links(&headers, &uri, page.count, limit, q.offset);
        Json(json!({
            "count": page.count,
            "next": next,
            "previous": previous,
            "results": page.results,
        }))
        .into_response()
    })
    .await
}

/// Applies `op` to a copy of the store inside a database transaction, persists the cohort it
/// returns, and installs the copy only once the transaction has committed. With `allocate`,
/// the copy's next id comes from the database's AUTOINCREMENT sequence first.
fn transact<F>(app: &App, allocate: bool, op: F) -> Result<(CohortId, Value), Box<Response>>
where
    F: FnOnce(&mut CohortStore) -> Result<CohortId, StoreError>,
{
    let mut store = lock(&app.store);
    let mut db = lock(&app.db);
    let name = db.name().to_string();
    let tx = db
        .conn
        .transaction()
        .map_err(|e| Box::new(server_error(&db::db_error(&name, e))))?;
    let mut next = store.clone();
    if allocate {
        let id = db::allocate(&tx, &name).map_err(|e| Box::new(server_error(&e)))?;
        next.set_next_id(id)
            .map_err(|e| Box::new(store_error(&e)))?;
    }
    let id = op(&mut next).map_err(|e| Box::new(store_error(&e)))?;
    let Some(record) = next.get(id) else {
        return Err(Box::new(not_found()));
    };
    db::save(&tx, &name, record).map_err(|e| Box::new(server_error(&e)))?;
    tx.commit()
        .map_err(|e| Box::new(server_error(&db::db_error(&name, e))))?;
    let body = next.to_api_json(id).unwrap_or(Value::Null);
    *store = next;
    Ok((id, body))
}

async fn create(State(app): State<Shared>, headers: HeaderMap, bytes: Bytes) -> Response {
    let body = match decode_body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    blocking(app, move |app| {
        let result = transact(app, true, |store| match &body.csv {
            Some(csv) => store.create_from_csv(&body.fields, csv),
            None => store.create(&body.fields),
        });
        match result {
            Ok((_, json)) => (StatusCode::CREATED, Json(json)).into_response(),
            Err(r) => *r,
        }
    })
    .await
}

async fn retrieve(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    blocking(app, move |app| match lock(&app.store).to_api_json(id) {
        Some(json) => Json(json).into_response(),
        None => not_found(),
    })
    .await
}

async fn update(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let body = match decode_body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    blocking(app, move |app| {
        let result = transact(app, false, |store| {
            match &body.csv {
                Some(csv) => store.update_with_csv(id, &body.fields, csv)?,
                None => store.update(id, &body.fields)?,
            }
            Ok(id)
        });
        match result {
            Ok((_, json)) => Json(json).into_response(),
            Err(r) => *r,
        }
    })
    .await
}

async fn duplicate(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    blocking(app, move |app| {
        match transact(app, true, |store| {
            let now = store.now();
            store.duplicate_as_static(id, now)
        }) {
            Ok((_, json)) => Json(json).into_response(),
            Err(r) => *r,
        }
    })
    .await
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
    let limit = usize_param(&pairs, "limit");
    let offset = usize_param(&pairs, "offset").unwrap_or(0);
    let wants_csv = param(&pairs, "format") == Some("csv")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("text/csv"));
    blocking(app, move |app| {
        let store = lock(&app.store);
        if wants_csv {
            return match store.persons_csv(id, limit, offset) {
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
        match store.persons(id, limit, offset) {
            Ok(page) => {
                let limit = limit.unwrap_or(crate::store::DEFAULT_LIMIT);
                let (next, previous) = links(&headers, &uri, page.total, limit, offset);
                Json(json!({"results": page.results, "next": next, "previous": previous}))
                    .into_response()
            }
            Err(e) => store_error(&e),
        }
    })
    .await
}

async fn add_persons(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
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
    blocking(app, move |app| {
        match transact(app, false, |store| store.add_persons(id, &ids).map(|_| id)) {
            Ok(_) => Json(json!({"success": true})).into_response(),
            Err(r) => *r,
        }
    })
    .await
}

async fn remove_person(
    State(app): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
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
    blocking(app, move |app| {
        match transact(app, false, |store| {
            store.remove_person(id, &person).map(|()| id)
        }) {
            Ok(_) => Json(json!({"success": true})).into_response(),
            Err(r) => *r,
        }
    })
    .await
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
            boundary("multipart/form-data; boundary=\"XyZ\"").as_deref(),
            Some("XyZ")
        );
    }
}
