//! Load test of `cohort-engine serve` (the cohort API server), loopback only.
//!
//! ```sh
//! cargo build --release --features server
//! cargo run --release --example server_load -- [--clients 16] [--seconds 30] [--persons 10000]
//!     [--events-per-person 50] [--list-limit 100] [--mix 15,15,20,50] [--bin PATH]
//! ```
//!
//! Generates the dataset with `cohort-engine generate` (seed 42), starts the server as a child
//! process on 127.0.0.1 with a fresh database, creates the generated dataset's 12 cohorts, then
//! runs `--clients` keep-alive HTTP/1.1 clients for `--seconds`, each picking create / patch /
//! list / get by the `--mix` weights. A create posts one of the 12 generated definitions (person
//! properties, every behavioral type, references to the first cohorts); a patch renames a cohort
//! the client created and swaps its filters for another definition; list is `GET /?limit=L`;
//! get retrieves a random created cohort. Prints throughput, latency percentiles per operation
//! and per time window (to show whether latency grows as cohorts accumulate), and the server's
//! resident memory per cohort.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "load-test-key-0123456789";
const OPS: [&str; 4] = ["create", "patch", "list", "get"];

struct Args {
    clients: usize,
    seconds: u64,
    persons: usize,
    events_per_person: usize,
    list_limit: usize,
    mix: [u32; 4],
    bin: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        clients: 16,
        seconds: 30,
        persons: 10_000,
        events_per_person: 50,
        list_limit: 100,
        mix: [15, 15, 20, 50],
        bin: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/cohort-engine"),
    };
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        a.bin = PathBuf::from(dir).join("release/cohort-engine");
    }
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv
            .get(i + 1)
            .cloned()
            .ok_or(format!("{} needs a value", argv[i]))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{}: {e}", argv[i]));
        match argv[i].as_str() {
            "--clients" => a.clients = num(&value)? as usize,
            "--seconds" => a.seconds = num(&value)?,
            "--persons" => a.persons = num(&value)? as usize,
            "--events-per-person" => a.events_per_person = num(&value)? as usize,
            "--list-limit" => a.list_limit = num(&value)? as usize,
            "--bin" => a.bin = PathBuf::from(value),
            "--mix" => {
                let w: Vec<u32> = value
                    .split(',')
                    .map(|x| x.trim().parse::<u32>().map_err(|e| format!("--mix: {e}")))
                    .collect::<Result<_, _>>()?;
                if w.len() != 4 || w.iter().sum::<u32>() == 0 {
                    return Err("--mix takes four weights: create,patch,list,get".into());
                }
                a.mix = [w[0], w[1], w[2], w[3]];
            }
            other => return Err(format!("unknown flag {other}")),
        }
        i += 2;
    }
    if a.clients == 0 || a.seconds == 0 || a.list_limit == 0 {
        return Err("--clients, --seconds and --list-limit must be positive".into());
    }
    Ok(a)
}

/// xorshift64*: a small deterministic generator per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            stream: None,
            buf: Vec::with_capacity(1 << 16),
        }
    }

    /// Sends a request and returns (status, body).
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), String> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                self.stream = Some(s);
            }
            match self.try_call(method, path, body) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.stream = None;
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        Err("unreachable".into())
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), String> {
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} /api/projects/1/cohorts/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body.as_bytes());
        stream.write_all(&req).map_err(|e| e.to_string())?;
        self.buf.clear();
        let mut chunk = [0u8; 65536];
        let (status, header_end, length) = loop {
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad status line")?;
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or("no content-length")?;
                break (status, end + 4, length);
            }
        };
        while self.buf.len() < header_end + length {
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, self.buf[header_end..header_end + length].to_vec()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The generated cohorts as create bodies; references to file ids are mapped to `ids`.
fn templates(cohorts: &[Value], ids: &[i64]) -> Vec<Value> {
    cohorts
        .iter()
        .map(|c| {
            let mut filters = c["filters"].clone();
            remap(&mut filters, ids);
            json!({"name": c["name"], "filters": filters})
        })
        .collect()
}

fn remap(v: &mut Value, ids: &[i64]) {
    match v {
        Value::Object(m) => {
            if m.get("type") == Some(&json!("cohort")) {
                if let Some(old) = m.get("value").and_then(Value::as_i64) {
                    let new = ids.get((old - 1).max(0) as usize).copied().unwrap_or(old);
                    m.insert("value".into(), json!(new));
                }
            }
            for x in m.values_mut() {
                remap(x, ids);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| remap(x, ids)),
        _ => {}
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

struct Sample {
    op: u8,
    at_ms: u32,
    micros: u32,
    ok: bool,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("server_load: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("server_load: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !args.bin.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release --features server` first (or pass --bin)",
            args.bin.display()
        ));
    }
    let work = std::env::temp_dir().join(format!("cohort-engine-load-{}", std::process::id()));
    let data = std::env::temp_dir().join(format!(
        "cohort-engine-load-data-{}-{}",
        args.persons, args.events_per_person
    ));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    if !data.join("cohorts.json").exists() {
        let out = Command::new(&args.bin)
            .args(["generate", "--persons", &args.persons.to_string()])
            .args(["--events-per-person", &args.events_per_person.to_string()])
            .args(["--seed", "42", "--out"])
            .arg(&data)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    let cohorts: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(data.join("cohorts.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;

    let (mut child, addr) = start_server(&args.bin, &data, &work)?;
    let pid = child.id();
    let result = drive(args, addr, pid, &cohorts);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn start_server(
    bin: &Path,
    data: &Path,
    work: &Path,
) -> Result<(std::process::Child, SocketAddr), String> {
    let log = std::fs::File::create(work.join("server.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .arg("--db")
        .arg(work.join("cohorts.sqlite"))
        .args(["--listen", "127.0.0.1:0"])
        .env("COHORT_ENGINE_API_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pipe = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = log;
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(a) = line.split("serving on http://").nth(1) {
                let _ = tx.send(a.trim().to_string());
            }
            let _ = writeln!(log, "{line}");
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| "the server did not start".to_string())?;
    let addr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    Ok((child, addr))
}

fn drive(args: &Args, addr: SocketAddr, pid: u32, cohorts: &[Value]) -> Result<(), String> {
    // The generated cohorts, in file order (later ones reference earlier ones).
    let mut setup = Client::new(addr);
    let mut base: Vec<i64> = Vec::new();
    for t in templates(cohorts, &[]).iter_mut() {
        let mut t = t.clone();
        remap(&mut t, &base);
        let (status, body) = setup.call("POST", "", Some(&t.to_string()))?;
        if status != 201 {
            return Err(format!(
                "setup create: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        base.push(v["id"].as_i64().ok_or("no id")?);
    }
    let bodies: Arc<Vec<String>> = Arc::new(
        templates(cohorts, &base)
            .iter()
            .map(|t| t.to_string())
            .collect(),
    );
    let definition_bytes: usize =
        bodies.iter().map(String::len).sum::<usize>() / bodies.len().max(1);
    let rss_before = rss_kb(pid);
    println!(
        "dataset: {} persons, {} events/person (cohort-engine generate --seed 42)",
        args.persons, args.events_per_person
    );
    println!(
        "load: {} clients, {} s, mix create/patch/list/get = {:?}, list limit {}",
        args.clients, args.seconds, args.mix, args.list_limit
    );

    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let total: u32 = args.mix.iter().sum();
    let threads: Vec<_> = (0..args.clients)
        .map(|c| {
            let stop = stop.clone();
            let created = created.clone();
            let bodies = bodies.clone();
            let mix = args.mix;
            let list_limit = args.list_limit;
            let base = base.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1) * 0x1000_0001));
                let mut client = Client::new(addr);
                let mut mine: Vec<i64> = Vec::new();
                let mut samples = Vec::with_capacity(1 << 16);
                let mut known: Vec<i64> = base.clone();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let mut pick = (rng.next() % total as u64) as u32;
                    let mut op = 0u8;
                    for (i, w) in mix.iter().enumerate() {
                        if pick < *w {
                            op = i as u8;
                            break;
                        }
                        pick -= w;
                    }
                    if op == 1 && mine.is_empty() {
                        op = 0;
                    }
                    let t0 = Instant::now();
                    let result = match op {
                        0 => client.call("POST", "", Some(&bodies[rng.below(bodies.len())])),
                        1 => {
                            let id = mine[rng.below(mine.len())];
                            let mut patch: Value =
                                serde_json::from_str(&bodies[rng.below(bodies.len())])
                                    .unwrap_or(Value::Null);
                            patch["name"] = json!(format!("client {c} patch {n}"));
                            client.call("PATCH", &format!("{id}/"), Some(&patch.to_string()))
                        }
                        2 => client.call("GET", &format!("?limit={list_limit}"), None),
                        _ => {
                            let id = known[rng.below(known.len())];
                            client.call("GET", &format!("{id}/"), None)
                        }
                    };
                    let micros = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    let ok = match &result {
                        Ok((status, body)) => {
                            if op == 0 && *status == 201 {
                                if let Some(id) = serde_json::from_slice::<Value>(body)
                                    .ok()
                                    .and_then(|v| v["id"].as_i64())
                                {
                                    mine.push(id);
                                    known.push(id);
                                    created.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            (200..300).contains(status)
                        }
                        Err(_) => false,
                    };
                    samples.push(Sample {
                        op,
                        at_ms: started.elapsed().as_millis() as u32,
                        micros,
                        ok,
                    });
                }
                samples
            })
        })
        .collect();
    // Sample the server's memory and the clock while the clients run.
    let mut rss_peak = rss_before;
    // (RSS, cohorts created so far) once a quarter of the run is over: the slope from there on
    // leaves out one-time growth (allocator arenas, SQLite's page cache) that the first writes
    // cause whatever the number of cohorts.
    let mut quarter: Option<(u64, usize)> = None;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(Duration::from_millis(250));
        let rss = rss_kb(pid);
        rss_peak = rss_peak.max(rss);
        if quarter.is_none() && started.elapsed() >= Duration::from_secs(args.seconds) / 4 {
            quarter = Some((rss, created.load(Ordering::Relaxed)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Sample> = Vec::new();
    for t in threads {
        samples.extend(t.join().map_err(|_| "a client panicked")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = rss_kb(pid);
    let mut check = Client::new(addr);
    let (_, body) = check.call("GET", "?limit=1", None)?;
    let count = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["count"].as_u64())
        .unwrap_or(0);

    let errors = samples.iter().filter(|s| !s.ok).count();
    println!(
        "requests: {} in {:.1} s = {:.0} req/s; errors (non-2xx or I/O): {}",
        samples.len(),
        elapsed,
        samples.len() as f64 / elapsed,
        errors
    );
    println!(
        "{:<8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, mut lat: Vec<u32>| {
        lat.sort_unstable();
        println!(
            "{:<8} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.90),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    };
    row("all", samples.iter().map(|s| s.micros).collect());
    for (i, name) in OPS.iter().enumerate() {
        row(
            name,
            samples
                .iter()
                .filter(|s| s.op as usize == i)
                .map(|s| s.micros)
                .collect(),
        );
    }
    println!("over time (as cohorts accumulate):");
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "window", "creates", "req/s", "p50 ms", "p99 ms", "write p99"
    );
    let window = (args.seconds * 1000 / 6).max(1000) as u32;
    let mut creates_so_far = 0usize;
    let mut w = 0u32;
    while w * window < (elapsed * 1000.0) as u32 {
        let in_w: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at_ms >= w * window && s.at_ms < (w + 1) * window)
            .collect();
        creates_so_far += in_w.iter().filter(|s| s.op == 0 && s.ok).count();
        let mut all: Vec<u32> = in_w.iter().map(|s| s.micros).collect();
        let mut writes: Vec<u32> = in_w.iter().filter(|s| s.op < 2).map(|s| s.micros).collect();
        all.sort_unstable();
        writes.sort_unstable();
        println!(
            "{:<10} {:>9} {:>9.0} {:>9.2} {:>12.2} {:>12.2}",
            format!("{}-{}s", w * window / 1000, (w + 1) * window / 1000),
            creates_so_far,
            in_w.len() as f64 / (window as f64 / 1000.0),
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&writes, 0.99)
        );
        w += 1;
    }
    let cohorts_now = count.max(1);
    let grown = rss_after.saturating_sub(rss_before);
    println!(
        "memory: RSS {} KB after setup, {} KB at the end (peak {} KB), {} cohorts: {:.2} KB per cohort \
         overall (average definition {} bytes as JSON)",
        rss_before,
        rss_after,
        rss_peak,
        count,
        grown as f64 / cohorts_now as f64,
        definition_bytes
    );
    if let Some((rss_q, created_q)) = quarter {
        let n = created.load(Ordering::Relaxed).saturating_sub(created_q);
        if n > 0 {
            println!(
                "memory growth from a quarter of the run to the end: {} KB for {} cohorts = {:.2} KB per cohort",
                rss_after.saturating_sub(rss_q),
                n,
                rss_after.saturating_sub(rss_q) as f64 / n as f64
            );
        }
    }
    Ok(())
}
