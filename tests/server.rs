//! The local API server (`--features server`): every endpoint over real HTTP/1.1 on a loopback
//! port, with the request bodies of the cohort API's documentation, persistence across a restart,
//! and authentication.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cohort_engine::server::{spawn, ServeOptions, ServerHandle};
use serde_json::{json, Value};

const KEY: &str = "phx_test_key_0123456789";

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection.
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

struct Api {
    addr: SocketAddr,
}

impl Api {
    fn get(&self, path: &str) -> Resp {
        raw(self.addr, "GET", &url(path), Some(KEY), None, b"")
    }
    fn send(&self, method: &str, path: &str, body: Value) -> Resp {
        raw(
            self.addr,
            method,
            &url(path),
            Some(KEY),
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }
    fn post(&self, body: Value) -> Resp {
        self.send("POST", "", body)
    }
    fn patch(&self, path: &str, body: Value) -> Resp {
        self.send("PATCH", path, body)
    }
    fn create(&self, body: Value) -> i64 {
        let r = self.post(body);
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_i64().unwrap()
    }
}

fn url(path: &str) -> String {
    format!("/api/projects/1/cohorts/{path}")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fresh directory with `persons.jsonl` and `events.jsonl`; `u-ada` logged in 6 times in the
/// last days, `u-grace` once, `u-linus` never.
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cohort-engine-server-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("persons.jsonl"),
        concat!(
            r#"{"id": "u-ada", "distinct_ids": ["d-ada"], "properties": {"email": "ada@example.com", "plan": "pro"}}"#, "\n",
            r#"{"id": "u-grace", "distinct_ids": ["d-grace"], "properties": {"email": "grace@navy.mil", "plan": "free"}}"#, "\n",
            r#"{"id": "u-linus", "distinct_ids": ["d-linus"], "properties": {"plan": "pro"}}"#, "\n",
        ),
    )
    .unwrap();
    let t = now_secs();
    let mut events = String::new();
    for h in 1..=6 {
        events.push_str(&format!(
            "{{\"distinct_id\": \"d-ada\", \"event\": \"$pageview\", \"timestamp\": {}}}\n",
            t - h * 3600
        ));
    }
    events.push_str(&format!(
        "{{\"distinct_id\": \"d-grace\", \"event\": \"$pageview\", \"timestamp\": {}}}\n",
        t - 7200
    ));
    std::fs::write(dir.join("events.jsonl"), events).unwrap();
    dir
}

fn options(dir: &Path) -> ServeOptions {
    let mut opts = ServeOptions::new(dir.join("cohorts.sqlite"));
    opts.data_dir = Some(dir.to_path_buf());
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.api_key = Some(KEY.to_string());
    opts.access_log = false;
    opts
}

fn start_with(opts: ServeOptions) -> (ServerHandle, Api) {
    let handle = spawn(opts).unwrap();
    let api = Api {
        addr: handle.addr(),
    };
    (handle, api)
}

fn start(dir: &Path) -> (ServerHandle, Api) {
    start_with(options(dir))
}

fn is_set_body() -> Value {
    json!({
        "name": "Users with email",
        "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "email", "operator": "is_set", "value": null}
        ]}}
    })
}

fn behavioral_body() -> Value {
    json!({
        "name": "Recent visitors",
        "description": "Viewed a page in the last 30 days",
        "filters": {"properties": {"type": "AND", "values": [
            {"type": "behavioral", "key": "$pageview", "event_type": "events",
             "value": "performed_event", "time_value": 30, "time_interval": "day"}
        ]}}
    })
}

fn reference(id: i64) -> Value {
    json!({"properties": {"type": "AND", "values": [{"type": "cohort", "key": "id", "value": id}]}})
}

fn ids(list: &Value) -> Vec<i64> {
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn requests_without_the_key_are_rejected() {
    let dir = data_dir("auth");
    let (server, api) = start(&dir);
    let r = raw(api.addr, "GET", &url(""), None, None, b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "authentication_error");
    let r = raw(api.addr, "GET", &url(""), Some("wrong"), None, b"");
    assert_eq!(r.status, 401);
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        None,
        Some("application/json"),
        is_set_body().to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(api.get("").json()["count"], 0, "nothing was created");
    assert_eq!(api.get("").status, 200);
    server.shutdown().unwrap();
}

#[test]
fn the_server_refuses_to_start_without_a_key() {
    let dir = data_dir("nokey");
    let opts = |key: Option<&str>| {
        let mut o = options(&dir);
        o.api_key = key.map(str::to_string);
        o
    };
    let e = spawn(opts(Some("  "))).err().unwrap();
    assert_eq!(e.code(), "usage");
    if std::env::var_os("COHORT_ENGINE_API_KEY").is_none() {
        let e = spawn(opts(None)).err().unwrap();
        assert_eq!(e.code(), "usage");
        assert!(e.to_string().contains("COHORT_ENGINE_API_KEY"));
    }
}

#[test]
fn create_retrieve_update_delete_and_list() {
    let dir = data_dir("crud");
    let (server, api) = start(&dir);

    // Create with is_set (the documentation's example body).
    let r = api.post(is_set_body());
    assert_eq!(r.status, 201, "{}", r.body);
    let email = r.json();
    let email_id = email["id"].as_i64().unwrap();
    assert_eq!(email["name"], "Users with email");
    assert_eq!(email["version"], 1);
    assert_eq!(email["count"], 2);
    assert_eq!(email["is_static"], false);
    assert_eq!(email["deleted"], false);
    assert_eq!(email["errors_calculating"], 0);
    assert!(email["last_calculation"].is_string());

    // Create behavioral.
    let r = api.post(behavioral_body());
    assert_eq!(r.status, 201, "{}", r.body);
    let visitors = r.json();
    let visitors_id = visitors["id"].as_i64().unwrap();
    assert_eq!(visitors["count"], 2);
    assert_eq!(visitors["cohort_type"], "behavioral");

    // Retrieve, and 404s.
    let got = api.get(&format!("{visitors_id}/"));
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json()["description"],
        "Viewed a page in the last 30 days"
    );
    let missing = api.get("999/");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["detail"], "Not found.");
    assert_eq!(api.get("abc/").status, 404);
    assert_eq!(api.get(&format!("{visitors_id}/nonsense/")).status, 404);

    // Update filters: performed_event_multiple with gte 5.
    let r = api.patch(
        &format!("{visitors_id}/"),
        json!({"filters": {"properties": {"type": "AND", "values": [
            {"type": "behavioral", "key": "$pageview", "event_type": "events",
             "value": "performed_event_multiple", "operator": "gte", "operator_value": 5,
             "time_value": 30, "time_interval": "day"}
        ]}}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let updated = r.json();
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["pending_version"], 2);
    assert_eq!(updated["count"], 1);
    assert_eq!(
        updated["name"], "Recent visitors",
        "PATCH keeps other fields"
    );
    let persons = api.get(&format!("{visitors_id}/persons/")).json();
    assert_eq!(persons["results"][0]["id"], "u-ada");
    assert_eq!(persons["results"].as_array().unwrap().len(), 1);

    // A bad filter is a 400 and changes nothing.
    let r = api.patch(
        &format!("{visitors_id}/"),
        json!({"filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "email", "operator": "startswith", "value": "a"}]}}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "validation_error");
    assert!(r.json()["detail"].as_str().unwrap().contains("startswith"));
    assert_eq!(api.get(&format!("{visitors_id}/")).json()["version"], 2);
    let r = api.post(json!({"name": "no filters key", "filters": {"type": "AND"}}));
    assert_eq!(r.status, 400);
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some("application/json"),
        b"{nope",
    );
    assert_eq!(r.status, 400);

    // Soft delete; list excludes it, retrieve still shows it; restore.
    let r = api.patch(&format!("{email_id}/"), json!({"deleted": true}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["deleted"], true);
    assert_eq!(ids(&api.get("").json()), [visitors_id]);
    assert_eq!(api.get(&format!("{email_id}/")).json()["deleted"], true);
    let r = api.patch(&format!("{email_id}/"), json!({"deleted": false}));
    assert_eq!(r.json()["deleted"], false);
    assert_eq!(ids(&api.get("").json()), [visitors_id, email_id]);

    // Hard delete does not exist.
    let r = raw(
        api.addr,
        "DELETE",
        &url(&format!("{email_id}/")),
        Some(KEY),
        None,
        b"",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["detail"], "Method \"DELETE\" not allowed.");
    assert_eq!(api.get(&format!("{email_id}/")).status, 200);

    // hide_behavioral_cohorts.
    assert_eq!(
        ids(&api.get("?hide_behavioral_cohorts=true").json()),
        [email_id]
    );
    server.shutdown().unwrap();
}

#[test]
fn list_filters_and_pagination() {
    let dir = data_dir("list");
    let (server, api) = start(&dir);
    let a = api.create(
        json!({"name": "Paying customers", "filters": {"properties": {"type": "AND", "values": [
        {"type": "person", "key": "plan", "operator": "exact", "value": "pro"}]}}}),
    );
    let b = api.create(json!({"name": "VIP import", "is_static": true, "_create_static_person_ids": ["u-ada", "d-grace"]}));
    let c = api.create(json!({"name": "Static payers", "is_static": true, "_create_static_person_ids": ["u-linus"]}));
    let d = api.create(behavioral_body());

    let all = api.get("").json();
    assert_eq!(all["count"], 4);
    assert_eq!(ids(&all), [d, c, b, a], "newest first");

    let statics = api.get("?type=static").json();
    assert_eq!(ids(&statics), [c, b]);
    let search = api.get("?type=static&search=PAYERS").json();
    assert_eq!(ids(&search), [c]);
    let search = api.get("?search=pay").json();
    assert_eq!(ids(&search), [c, a]);
    let spaced = api.get("?search=vip%20imp").json();
    assert_eq!(ids(&spaced), [b]);
    assert_eq!(ids(&api.get("?type=dynamic").json()), [d, a]);

    let page1 = api.get("?limit=2").json();
    assert_eq!(page1["count"], 4);
    assert_eq!(ids(&page1), [d, c]);
    assert_eq!(page1["previous"], Value::Null);
    let next = page1["next"].as_str().unwrap();
    assert!(
        next.ends_with("/api/projects/1/cohorts/?limit=2&offset=2"),
        "{next}"
    );
    let path = &next[next.find("/api/").unwrap()..];
    let page2 = raw(api.addr, "GET", path, Some(KEY), None, b"").json();
    assert_eq!(ids(&page2), [b, a]);
    assert_eq!(page2["next"], Value::Null);
    assert!(page2["previous"]
        .as_str()
        .unwrap()
        .ends_with("limit=2&offset=0"));
    server.shutdown().unwrap();
}

#[test]
fn a_cycle_is_rejected_with_400() {
    let dir = data_dir("cycle");
    let (server, api) = start(&dir);
    let a = api.create(is_set_body());
    let b = api.create(json!({"name": "B", "filters": reference(a)}));
    let c = api.create(json!({"name": "C", "filters": reference(b)}));
    let r = api.patch(&format!("{a}/"), json!({"filters": reference(c)}));
    assert_eq!(r.status, 400);
    let body = r.json();
    assert_eq!(body["type"], "validation_error");
    assert_eq!(
        body["detail"],
        "Cohorts cannot reference other cohorts in a loop."
    );
    let again = api.get(&format!("{a}/")).json();
    assert_eq!(again["version"], 1);
    assert_eq!(
        again["filters"]["properties"]["values"][0]["type"],
        "person"
    );
    // Unknown references are a 400 too.
    let r = api.post(json!({"name": "D", "filters": reference(12345)}));
    assert_eq!(r.status, 400);
    // So is deleting a cohort others use, naming them.
    let r = api.patch(&format!("{a}/"), json!({"deleted": true}));
    assert_eq!(r.status, 400);
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("cohort {b} \"B\"")));
    server.shutdown().unwrap();
}

#[test]
fn static_cohorts_persons_and_duplicates() {
    let dir = data_dir("static");
    let (server, api) = start(&dir);

    // A static cohort from a CSV upload (multipart, as the API takes it).
    let boundary = "XyZzy42";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nImported\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"is_static\"\r\n\r\ntrue\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"csv\"; filename=\"m.csv\"\r\n\
         Content-Type: text/csv\r\n\r\ndistinct_id\r\nd-grace\r\nd-nobody\r\n\r\n--{boundary}--\r\n"
    );
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some(&format!("multipart/form-data; boundary={boundary}")),
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let imported = r.json();
    assert_eq!(imported["is_static"], true);
    assert_eq!(imported["count"], 1);
    let imported_id = imported["id"].as_i64().unwrap();

    // Add and remove persons.
    let r = api.patch(
        &format!("{imported_id}/add_persons_to_static_cohort/"),
        json!({"person_ids": ["u-ada", "u-linus"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"success": true}));
    assert_eq!(api.get(&format!("{imported_id}/")).json()["count"], 3);
    let r = api.patch(
        &format!("{imported_id}/remove_person_from_static_cohort/"),
        json!({"person_id": "u-linus"}),
    );
    assert_eq!(r.status, 200);
    let r = api.patch(
        &format!("{imported_id}/remove_person_from_static_cohort/"),
        json!({"person_id": "u-linus"}),
    );
    assert_eq!(r.status, 404);
    let r = api.patch(
        &format!("{imported_id}/add_persons_to_static_cohort/"),
        json!({"person_ids": "u-ada"}),
    );
    assert_eq!(r.status, 400);

    // Persons: JSON pages and CSV.
    let page = api.get(&format!("{imported_id}/persons/?limit=1")).json();
    assert_eq!(page["results"][0]["id"], "u-ada");
    assert_eq!(page["results"][0]["distinct_ids"], json!(["d-ada"]));
    assert_eq!(page["results"][0]["properties"]["plan"], "pro");
    assert_eq!(page["previous"], Value::Null);
    assert!(page["next"].as_str().unwrap().contains("limit=1&offset=1"));
    let page2 = api
        .get(&format!("{imported_id}/persons/?limit=1&offset=1"))
        .json();
    assert_eq!(page2["results"][0]["id"], "u-grace");
    assert_eq!(page2["next"], Value::Null);
    let csv = api.get(&format!("{imported_id}/persons/?format=csv"));
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv
        .body
        .starts_with("id,email,name,distinct_ids,properties.plan\r\n"));
    assert!(csv
        .body
        .contains("u-grace,grace@navy.mil,grace@navy.mil,d-grace,free\r\n"));
    assert_eq!(api.get("77/persons/").status, 404);

    // Duplicate a dynamic cohort as static.
    let pro = api.create(
        json!({"name": "Pro", "filters": {"properties": {"type": "AND", "values": [
        {"type": "person", "key": "plan", "operator": "exact", "value": "pro"}]}}}),
    );
    let r = api.get(&format!("{pro}/duplicate_as_static_cohort/"));
    assert_eq!(r.status, 200, "{}", r.body);
    let copy = r.json();
    assert_eq!(copy["name"], "Pro (static copy)");
    assert_eq!(copy["is_static"], true);
    assert_eq!(copy["count"], 2);
    assert!(copy["id"].as_i64().unwrap() > pro);
    let r = api.get(&format!("{imported_id}/duplicate_as_static_cohort/"));
    assert_eq!(r.status, 400);
    server.shutdown().unwrap();
}

#[test]
fn a_restart_keeps_every_cohort() {
    let dir = data_dir("restart");
    let (server, api) = start(&dir);
    let a = api.create(is_set_body());
    let b = api.create(json!({"name": "Listed", "is_static": true, "_create_static_person_ids": ["u-linus", "u-grace"]}));
    let c = api.create(
        json!({"name": "Listed with email", "filters": {"properties": {"type": "AND", "values": [
        {"type": "cohort", "key": "id", "value": b},
        {"type": "cohort", "key": "id", "value": a}]}}}),
    );
    let d = api.create(behavioral_body());
    assert_eq!(
        api.patch(&format!("{d}/"), json!({"name": "Visitors"}))
            .status,
        200
    );
    assert_eq!(
        api.patch(&format!("{d}/"), json!({"deleted": true})).status,
        200
    );
    // A rejected create does not leave a row behind.
    assert_eq!(
        api.post(json!({"name": "bad", "filters": reference(999)}))
            .status,
        400
    );
    let before: Vec<Value> = [a, b, c, d]
        .iter()
        .map(|id| api.get(&format!("{id}/")).json())
        .collect();
    let list_before = api.get("").json();
    server.shutdown().unwrap();

    let (server, api) = start(&dir);
    for (id, old) in [a, b, c, d].iter().zip(&before) {
        let now = api.get(&format!("{id}/")).json();
        for field in [
            "id",
            "name",
            "description",
            "filters",
            "groups",
            "deleted",
            "is_static",
            "version",
            "pending_version",
            "count",
            "created_at",
        ] {
            assert_eq!(now[field], old[field], "cohort {id} field {field}");
        }
    }
    assert_eq!(ids(&api.get("").json()), ids(&list_before));
    let persons = api.get(&format!("{c}/persons/")).json();
    assert_eq!(persons["results"][0]["id"], "u-grace");
    assert_eq!(persons["results"].as_array().unwrap().len(), 1);
    // Ids are never reused.
    let e = api.create(is_set_body());
    assert!(e > d, "{e} > {d}");
    server.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Hardening (issue 20): each test below reproduces one finding of the hostile-client audit.

const BIN: &str = env!("CARGO_BIN_EXE_cohort-engine");

/// Sends `request` as is over a fresh connection and reads the response (or what the server
/// sends before closing), giving up after `wait`.
fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> (Option<Resp>, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    (parse_response(&bytes), started.elapsed())
}

fn parse_response(bytes: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// A request with the key and a body of the given content type.
fn request(method: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {KEY}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        url(path),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn multipart_body(boundary: &str, fields: &[(&str, &str)], csv: Option<&str>) -> Vec<u8> {
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    if let Some(csv) = csv {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csv\"; filename=\"m.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n{csv}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body.into_bytes()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `depth` nested arrays.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// Finding 1: a create sent as a form or multipart body with ~126 levels of nesting was stored,
/// and the next start-up failed on that record.
#[test]
fn deeply_nested_form_and_multipart_bodies_are_refused() {
    let dir = data_dir("deep");
    let (server, api) = start(&dir);
    let mut filters = is_set_body()["filters"].clone();
    filters["extra"] = nested(126);
    let filters = filters.to_string();
    let form = format!("name=deep&filters={}", percent_encode(&filters));
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some("application/x-www-form-urlencoded"),
        form.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("nested more than"));
    let body = multipart_body("B0undary", &[("name", "deep"), ("filters", &filters)], None);
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some("multipart/form-data; boundary=B0undary"),
        &body,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // A form field that is not JSON is refused rather than stored as a string.
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some("application/x-www-form-urlencoded"),
        b"name=x&filters=%7Bnope",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["attr"], "filters");
    // The same cohort in a form, legally nested, is created and survives a restart.
    let form = format!(
        "name=ok&filters={}",
        percent_encode(&is_set_body()["filters"].to_string())
    );
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some("application/x-www-form-urlencoded"),
        form.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    server.shutdown().unwrap();
    let (server, api) = start(&dir);
    assert_eq!(api.get(&format!("{id}/")).json()["count"], 2);
    server.shutdown().unwrap();
}

/// A `cohort-engine serve` child process, its address and everything it wrote on stderr.
struct Proc {
    child: std::process::Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn start(args: &[&str], key_env: Option<&str>) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("COHORT_ENGINE_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(k) = key_env {
            cmd.env("COHORT_ENGINE_API_KEY", k);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(a) = line.split("serving on http://").nth(1) {
                    let _ = tx.send(a.trim().parse().unwrap());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {}", stderr.lock().unwrap());
            }
        };
        Proc {
            child,
            addr,
            stderr,
        }
    }

    fn api(&self) -> Api {
        Api { addr: self.addr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` holds, for at most `secs` seconds.
fn eventually(secs: u64, f: impl Fn() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Finding 1: one unreadable record (written by an older version, or by hand) kept the whole
/// server from starting. Now it is quarantined with an error naming its id.
#[test]
fn an_unreadable_record_is_quarantined_and_the_rest_is_served() {
    let dir = data_dir("quarantine");
    let db = dir.join("cohorts.sqlite");
    let db_arg = db.to_str().unwrap().to_string();
    let data_arg = dir.to_str().unwrap().to_string();
    let args = ["--db", &db_arg, "--data", &data_arg];
    let server = Proc::start(&args, Some(KEY));
    let a = server.api().create(is_set_body());
    let b = server.api().create(behavioral_body());
    let c = server
        .api()
        .create(json!({"name": "uses b", "filters": reference(b)}));
    server.kill();
    // Damage a's record (nested past serde_json's limit) and make b's filter invalid.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let record: String = conn
        .query_row("SELECT record FROM cohorts WHERE id = ?1", [a], |r| {
            r.get(0)
        })
        .unwrap();
    let mut record: Value = serde_json::from_str(&record).unwrap();
    record["filters"]["extra"] = nested(200);
    let deep = record.to_string();
    conn.execute(
        "UPDATE cohorts SET record = ?1 WHERE id = ?2",
        rusqlite::params![deep, a],
    )
    .unwrap();
    let record: String = conn
        .query_row("SELECT record FROM cohorts WHERE id = ?1", [b], |r| {
            r.get(0)
        })
        .unwrap();
    let broken = record.replace("performed_event", "performed_nonsense");
    conn.execute(
        "UPDATE cohorts SET record = ?1 WHERE id = ?2",
        rusqlite::params![broken, b],
    )
    .unwrap();
    drop(conn);

    let server = Proc::start(&args, Some(KEY));
    let log = server.log();
    for id in [a, b, c] {
        assert!(
            log.contains(&format!("error: cohort {id} cannot be served")),
            "{log}"
        );
    }
    assert!(log.contains("recursion limit"), "{log}");
    let api = server.api();
    assert_eq!(api.get(&format!("{a}/")).status, 404);
    assert_eq!(api.get(&format!("{b}/")).status, 404);
    assert_eq!(api.get("").json()["count"], 0);
    let d = api.create(is_set_body());
    assert!(d > c, "ids of quarantined cohorts are not reused");
    drop(server);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let quarantined: Vec<i64> = conn
        .prepare("SELECT id FROM quarantine ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(quarantined, [a, b, c]);
    // The next start has nothing to quarantine.
    drop(conn);
    let server = Proc::start(&args, Some(KEY));
    assert!(!server.log().contains("cannot be served"));
    assert_eq!(server.api().get("").json()["count"], 1);
}

/// Finding 2: a connection that never completes its request head is closed.
#[test]
fn a_stalled_request_head_is_closed() {
    let dir = data_dir("slowhead");
    let mut opts = options(&dir);
    opts.header_timeout = Duration::from_millis(800);
    let (server, api) = start_with(opts);
    let (resp, took) = exchange(
        api.addr,
        b"GET /api/projects/1/cohorts/ HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    // hyper answers 408 or just closes; either way the connection is gone.
    assert!(resp.is_none_or(|r| r.status == 408));
    // An idle keep-alive connection with nothing sent is closed too.
    let (_, took) = exchange(api.addr, b"", Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    server.shutdown().unwrap();
}

/// Finding 2: a body that stops arriving is answered 408 (JSON) and the connection closed.
#[test]
fn a_stalled_body_is_refused() {
    let dir = data_dir("slowbody");
    let mut opts = options(&dir);
    opts.body_timeout = Duration::from_millis(800);
    let (server, api) = start_with(opts);
    let mut req = request("POST", "", "application/json", b"{}");
    // Claim 100 bytes, send 2.
    let text = String::from_utf8(req.clone()).unwrap();
    req = text
        .replace("Content-Length: 2", "Content-Length: 100")
        .into_bytes();
    let (resp, took) = exchange(api.addr, &req, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    let resp = resp.expect("a response");
    assert_eq!(resp.status, 408);
    assert_eq!(resp.json()["code"], "request_timeout");
    assert_eq!(api.get("").json()["count"], 0);
    server.shutdown().unwrap();
}

/// Finding 2: connections beyond the cap wait (in the listen backlog) until one closes.
#[test]
fn connections_are_capped() {
    let dir = data_dir("cap");
    let mut opts = options(&dir);
    opts.max_connections = 2;
    opts.header_timeout = Duration::from_secs(30);
    let (server, api) = start_with(opts);
    let idle1 = TcpStream::connect(api.addr).unwrap();
    let idle2 = TcpStream::connect(api.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(api.addr).unwrap();
    third
        .write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n",
                url("")
            )
            .as_bytes(),
        )
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        third.read(&mut buf).is_err(),
        "a third connection was served beyond the cap of 2"
    );
    drop(idle1);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(idle2);
    server.shutdown().unwrap();
}

/// Finding 2: an open partial request made Ctrl-C hang; stopping now takes bounded time.
#[test]
fn shutdown_finishes_in_bounded_time() {
    let dir = data_dir("shutdown");
    let mut opts = options(&dir);
    opts.header_timeout = Duration::from_secs(60);
    opts.body_timeout = Duration::from_secs(60);
    opts.shutdown_timeout = Duration::from_millis(500);
    let (server, api) = start_with(opts);
    let mut partial = TcpStream::connect(api.addr).unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut body = TcpStream::connect(api.addr).unwrap();
    body.write_all(&request("POST", "", "application/json", b"{}")[..120])
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(server.shutdown());
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("shutdown hung");
    result.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    drop((partial, body));
}

/// Finding 3: the multipart boundary search cost body × boundary length (a 300 KB boundary
/// took seconds of CPU); boundaries are now at most 70 characters and searched in linear time.
#[test]
fn a_huge_multipart_boundary_is_refused_at_once() {
    let dir = data_dir("boundary");
    let (server, api) = start(&dir);
    // Dashes are legal in a boundary; a body of long runs of them nearly matches the delimiter
    // at every position, which made the old window-by-window search take seconds of CPU.
    let boundary = "-".repeat(300_000);
    let mut body = Vec::new();
    for _ in 0..6 {
        body.extend_from_slice(&[b'-'; 299_990]);
        body.push(b'x');
    }
    let started = Instant::now();
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some(&format!("multipart/form-data; boundary={boundary}")),
        &body,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["detail"].as_str().unwrap().contains("boundary"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A 70-character boundary still works.
    let b = "z".repeat(70);
    let body = multipart_body(&b, &[("name", "seventy")], Some("person_id\nu-ada\n"));
    let r = raw(
        api.addr,
        "POST",
        &url(""),
        Some(KEY),
        Some(&format!("multipart/form-data; boundary={b}")),
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["count"], 1);
    server.shutdown().unwrap();
}

/// Finding 4: with the database locked by another connection, readers stalled behind the
/// writer's busy wait, and the writer got a 500 labelled invalid_input showing the file's path.
#[test]
fn a_locked_database_stalls_no_reader_and_answers_503() {
    let dir = data_dir("locked");
    let mut opts = options(&dir);
    opts.db_busy_timeout = Duration::from_secs(3);
    let db_path = opts.db_path.clone();
    let (server, api) = start_with(opts);
    let a = api.create(is_set_body());
    let other = rusqlite::Connection::open(&db_path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let addr = api.addr;
    let writer = std::thread::spawn(move || {
        let started = Instant::now();
        let r = Api { addr }.post(behavioral_body());
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // The writer is waiting on SQLite now (for up to 3 s); readers are not: the old server held
    // the store's lock through that wait, so these took the rest of it.
    for path in [String::new(), format!("{a}/"), format!("{a}/persons/")] {
        let started = Instant::now();
        assert_eq!(api.get(&path).status, 200);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "GET {path} took {took:?}"
        );
    }
    let (r, took) = writer.join().unwrap();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert_eq!(r.status, 503, "{}", r.body);
    let body = r.json();
    assert_eq!(body["type"], "server_error");
    assert_eq!(body["code"], "database_busy");
    let text = r.body.to_lowercase();
    assert!(!text.contains("sqlite") && !text.contains(&dir.display().to_string().to_lowercase()));
    other.execute_batch("ROLLBACK").unwrap();
    // Once the lock is gone, writes go through, and nothing half-done was left behind.
    let b = api.create(behavioral_body());
    assert_eq!(b, a + 1);
    assert_eq!(api.get("").json()["count"], 2);
    server.shutdown().unwrap();
}

/// Finding 5: a live cohort could come to reference a soft-deleted one.
#[test]
fn references_to_deleted_cohorts_are_refused() {
    let dir = data_dir("deletedref");
    let (server, api) = start(&dir);
    let a = api.create(is_set_body());
    assert_eq!(
        api.patch(&format!("{a}/"), json!({"deleted": true})).status,
        200
    );
    let r = api.post(json!({"name": "uses a", "filters": reference(a)}));
    assert_eq!(r.status, 400, "{}", r.body);
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(&format!("cohort {a} \"Users with email\" is deleted")),
        "{detail}"
    );
    // Restore path: b uses a; delete b, then a; restoring b is refused, naming a.
    assert_eq!(
        api.patch(&format!("{a}/"), json!({"deleted": false}))
            .status,
        200
    );
    let b = api.create(json!({"name": "uses a", "filters": reference(a)}));
    assert_eq!(
        api.patch(&format!("{b}/"), json!({"deleted": true})).status,
        200
    );
    assert_eq!(
        api.patch(&format!("{a}/"), json!({"deleted": true})).status,
        200
    );
    let r = api.patch(&format!("{b}/"), json!({"deleted": false}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("cohort {a} ")));
    assert_eq!(api.get(&format!("{b}/")).json()["deleted"], true);
    server.shutdown().unwrap();
}

/// Finding 5: `limit=0` linked to the same page forever; bad `limit`/`offset` were ignored.
#[test]
fn bad_limit_and_offset_are_a_400() {
    let dir = data_dir("paging");
    let (server, api) = start(&dir);
    let a = api.create(is_set_body());
    for q in [
        "?limit=0",
        "?limit=-1",
        "?limit=abc",
        "?limit=",
        "?offset=-1",
        "?offset=x",
        "?limit=1.5",
    ] {
        for path in [String::new(), format!("{a}/persons/")] {
            let r = api.get(&format!("{path}{q}"));
            assert_eq!(r.status, 400, "{path}{q}: {}", r.body);
            assert_eq!(r.json()["type"], "validation_error");
        }
    }
    assert_eq!(api.get("?limit=1&offset=0").status, 200);
    assert_eq!(
        api.get(&format!("{a}/persons/?limit=1&offset=5")).status,
        200
    );
    server.shutdown().unwrap();
}

/// Finding 5: `next`/`previous` copied the unchecked Host header.
#[test]
fn pagination_links_never_use_the_host_header() {
    let dir = data_dir("links");
    let mut opts = options(&dir);
    let (server, api) = start_with(opts.clone());
    api.create(is_set_body());
    api.create(behavioral_body());
    let req = format!(
        "GET {}?limit=1 HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {KEY}\r\n\
         Connection: close\r\n\r\n",
        url("")
    );
    let (r, _) = exchange(api.addr, req.as_bytes(), Duration::from_secs(5));
    let body = r.unwrap().json();
    assert_eq!(body["next"], "/api/projects/1/cohorts/?limit=1&offset=1");
    server.shutdown().unwrap();
    opts.public_url = Some("https://cohorts.example.com/".into());
    let (server, api) = start_with(opts);
    let (r, _) = exchange(api.addr, req.as_bytes(), Duration::from_secs(5));
    let body = r.unwrap().json();
    assert_eq!(
        body["next"],
        "https://cohorts.example.com/api/projects/1/cohorts/?limit=1&offset=1"
    );
    server.shutdown().unwrap();
}

/// Finding 6: uploads — a byte-order mark, an unterminated quote, the body cap, JSON 413s.
#[test]
fn csv_uploads_bom_quotes_and_size_limits() {
    let dir = data_dir("uploads");
    let mut opts = options(&dir);
    opts.max_body = 1024;
    opts.max_upload = 256 * 1024;
    let (server, api) = start_with(opts);
    let upload = |csv: &str| {
        let body = multipart_body("Bnd", &[("name", "up")], Some(csv));
        raw(
            api.addr,
            "POST",
            &url(""),
            Some(KEY),
            Some("multipart/form-data; boundary=Bnd"),
            &body,
        )
    };
    let r = upload("\u{feff}distinct_id\r\nd-grace\r\n");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["count"], 1);
    let r = upload("person_id\n\"u-ada\nu-grace\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("unterminated quote"));
    // A realistic upload, larger than the JSON cap: 150 KB of rows.
    let mut csv = String::from("person_id\n");
    while csv.len() < 150_000 {
        csv.push_str("u-linus\nsomeone-we-do-not-know\n");
    }
    let r = upload(&csv);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["count"], 1);
    // Over the caps: JSON 413s.
    csv.push_str(&"x".repeat(200_000));
    let r = upload(&csv);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "request_too_large");
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let mut big = is_set_body();
    big["description"] = json!("d".repeat(2000));
    let r = api.post(big);
    assert_eq!(r.status, 413);
    assert!(r.json()["detail"].as_str().unwrap().contains("--max-body"));
    server.shutdown().unwrap();
}

/// Finding 7: keys shorter than 16 characters, padded with spaces or not ASCII are refused at
/// start-up; a key file works.
#[test]
fn weak_or_unusable_keys_are_refused_and_a_key_file_works() {
    let dir = data_dir("keys");
    for bad in [
        "x",
        "fifteen-chars!!",
        " phx_test_key_0123456789",
        "phx_test_key_01234567ü",
    ] {
        let mut opts = options(&dir);
        opts.api_key = Some(bad.to_string());
        let e = spawn(opts).err().expect(bad);
        assert_eq!(e.code(), "usage", "{bad:?}");
        assert!(!e.to_string().contains(bad), "the error shows the key");
    }
    let file = dir.join("key.txt");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let mut opts = options(&dir);
    opts.api_key = None;
    opts.api_key_file = Some(file.clone());
    let (server, api) = start_with(opts.clone());
    assert_eq!(api.get("").status, 200);
    server.shutdown().unwrap();
    opts.api_key = Some(KEY.into());
    assert_eq!(spawn(opts).err().unwrap().code(), "usage", "two keys");
}

/// Finding 7: the key on the command line warns; failed authentications are logged and slowed
/// down; every request is in the access log.
#[test]
fn auth_failures_are_logged_and_slowed_and_requests_logged() {
    let dir = data_dir("authlog");
    let db = dir.join("cohorts.sqlite");
    let server = Proc::start(&["--db", db.to_str().unwrap(), "--api-key", KEY], None);
    let api = server.api();
    assert_eq!(api.get("").status, 200);
    let started = Instant::now();
    let r = raw(
        api.addr,
        "GET",
        &url(""),
        Some("phx_wrong_key_0123456789"),
        None,
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // Many guesses in parallel are answered one at a time.
    let started = Instant::now();
    let guesses: Vec<_> = (0..20)
        .map(|i| {
            let addr = api.addr;
            std::thread::spawn(move || {
                raw(
                    addr,
                    "GET",
                    &url(""),
                    Some(&format!("guess-{i:016}")),
                    None,
                    b"",
                )
                .status
            })
        })
        .collect();
    for g in guesses {
        assert_eq!(g.join().unwrap(), 401);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "20 guesses in {:?}",
        started.elapsed()
    );
    assert!(eventually(5, || server
        .log()
        .contains("authentication failed (a wrong key)")));
    let log = server.log();
    assert!(log.contains("--api-key is visible"), "{log}");
    assert!(
        log.contains("\"GET /api/projects/1/cohorts/\" 200"),
        "{log}"
    );
    assert!(
        log.contains("\"GET /api/projects/1/cohorts/\" 401"),
        "{log}"
    );
    assert!(!log.contains(KEY), "the key is never logged");
}

/// Finding 7: the database file is created readable by its owner only.
#[cfg(unix)]
#[test]
fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir("mode");
    let (server, api) = start(&dir);
    api.create(is_set_body());
    server.shutdown().unwrap();
    let mode = std::fs::metadata(dir.join("cohorts.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// Finding 8: `serve` refused to start without `--data`.
#[test]
fn the_server_starts_without_data() {
    let dir = data_dir("nodata");
    let mut opts = options(&dir);
    opts.data_dir = None;
    let (server, api) = start_with(opts);
    let r = api.post(is_set_body());
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["count"], 0);
    let id = r.json()["id"].as_i64().unwrap();
    assert_eq!(
        api.get(&format!("{id}/persons/")).json()["results"],
        json!([])
    );
    server.shutdown().unwrap();
    // Started with data later, the same cohorts get their members.
    let (server, api) = start(&dir);
    assert_eq!(api.get(&format!("{id}/")).json()["count"], 2);
    server.shutdown().unwrap();
}

/// Crash safety: no acknowledged write is lost when the server is killed with `kill -9` in the
/// middle of a stream of writes.
#[test]
fn no_acknowledged_write_is_lost_under_kill_9() {
    let dir = data_dir("kill9");
    let db = dir.join("cohorts.sqlite");
    let db_arg = db.to_str().unwrap().to_string();
    let data_arg = dir.to_str().unwrap().to_string();
    let args = ["--db", &db_arg, "--data", &data_arg, "--no-access-log"];
    for round in 0..2 {
        let server = Proc::start(&args, Some(KEY));
        let addr = server.addr;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    // (created ids, (patched id, last acknowledged patch number))
                    let mut created = Vec::new();
                    let mut patched: Option<(i64, u64)> = None;
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let r = std::panic::catch_unwind(|| {
                            let api = Api { addr };
                            match patched {
                                Some((id, _)) if n.is_multiple_of(2) => {
                                    let r = api.patch(
                                        &format!("{id}/"),
                                        json!({"name": format!("w{w}-r{round}-{n}")}),
                                    );
                                    (r.status == 200).then_some((id, true))
                                }
                                _ => {
                                    let r = api.post(is_set_body());
                                    (r.status == 201)
                                        .then(|| (r.json()["id"].as_i64().unwrap(), false))
                                }
                            }
                        });
                        match r {
                            Ok(Some((id, true))) => patched = Some((id, n)),
                            Ok(Some((id, false))) => {
                                created.push(id);
                                if patched.is_none() {
                                    patched = Some((id, 0));
                                }
                            }
                            // The server is gone (killed) or refused: stop writing.
                            _ => break,
                        }
                    }
                    (created, patched)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1200));
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let acked: usize = results.iter().map(|(c, _)| c.len()).sum();
        assert!(acked > 10, "only {acked} writes before the kill");
        // Restart and check every acknowledged write.
        let server = Proc::start(&args, Some(KEY));
        let api = server.api();
        for (w, (created, patched)) in results.iter().enumerate() {
            for id in created {
                assert_eq!(api.get(&format!("{id}/")).status, 200, "cohort {id} lost");
            }
            if let Some((id, last)) = patched {
                if *last > 0 {
                    let name = api.get(&format!("{id}/")).json()["name"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let prefix = format!("w{w}-r{round}-");
                    let stored: u64 = name
                        .strip_prefix(&prefix)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("cohort {id}: patch {last} lost ({name})"));
                    assert!(stored >= *last, "cohort {id}: patch {last} lost ({name})");
                }
            }
        }
        drop(server);
    }
}
