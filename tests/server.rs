//! The local API server (`--features server`): every endpoint over real HTTP/1.1 on a loopback
//! port, with the request bodies of the cohort API's documentation, persistence across a restart,
//! and authentication.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

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
