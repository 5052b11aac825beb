//! Command-line parsing and the `eval` command, following `CLI.md` to the letter: one JSON line on
//! stdout on success; on failure exit status 2, nothing on stdout, one `error: KIND: …` line per
//! problem on stderr.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use cohort_engine::time::{parse_absolute, Micros};
use cohort_engine::Projection;
use cohort_engine::{
    BatchOptions, CohortId, CohortSet, Dataset, Error, ErrorKind, Limits, LoadOptions, Transition,
};

/// Decide who is in a cohort: evaluate PostHog cohort definitions over persons and events.
#[derive(Parser, Debug)]
#[command(name = "cohort-engine", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Evaluate cohorts over persons (and events); print each cohort's members as one JSON line.
    Eval(EvalArgs),
    /// Explain one person's membership of one cohort: the filter tree with results and evidence.
    Explain(ExplainArgs),
    /// Track memberships: read events and property changes as JSONL on stdin, print transitions.
    Watch(WatchArgs),
    /// Write a deterministic synthetic dataset (persons.jsonl, events.jsonl, cohorts.json).
    Generate(GenerateArgs),
    /// Print ClickHouse SQL computing each cohort's members (same semantics as `eval`).
    Sql(SqlArgs),
    /// Serve the cohort API's endpoints locally (cargo feature `server`).
    #[cfg(feature = "server")]
    Serve(ServeArgs),
}

#[cfg(feature = "server")]
#[derive(Args, Debug)]
struct ServeArgs {
    /// Directory holding persons.jsonl and events.jsonl (default: none, an empty population:
    /// cohorts can be managed, and get members once the server runs with data).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// SQLite file storing cohort definitions and static members (created, mode 0600, if missing).
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// Address to listen on (a non-loopback address is served with a warning).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8010")]
    listen: String,
    /// File holding the API key clients must send as `Authorization: Bearer KEY` (default:
    /// $COHORT_ENGINE_API_KEY). At least 16 printable ASCII characters.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// The API key itself; visible to other users in the process list, so prefer
    /// --api-key-file or $COHORT_ENGINE_API_KEY.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Base URL for absolute pagination links, e.g. https://cohorts.example.com (default:
    /// relative links).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Largest JSON or form request body (bytes; K, M, G suffixes are powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "2M")]
    max_body: String,
    /// Largest multipart request body, i.e. a CSV upload (bytes; K, M, G suffixes).
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    max_upload: String,
    /// Seconds a client has to send a complete request head (and an idle connection stays open).
    #[arg(long, value_name = "SECS", default_value = "10")]
    header_timeout: f64,
    /// Longest pause, in seconds, while a request body is being received.
    #[arg(long, value_name = "SECS", default_value = "30")]
    body_timeout: f64,
    /// Most connections served at once (more wait in the listen backlog).
    #[arg(long, value_name = "N", default_value = "256")]
    max_connections: usize,
    /// Seconds requests in flight get to finish when the server stops.
    #[arg(long, value_name = "SECS", default_value = "10")]
    shutdown_timeout: f64,
    /// Do not log each request on stderr.
    #[arg(long)]
    no_access_log: bool,
}

#[derive(Args, Debug)]
struct SqlArgs {
    /// Cohorts file.
    #[arg(long, value_name = "FILE")]
    cohorts: PathBuf,
    /// Only these cohorts (repeatable); default: every non-deleted cohort.
    #[arg(long = "cohort", value_name = "ID", allow_hyphen_values = true)]
    cohort: Vec<String>,
    /// The instant windows are computed from (they become literals). Default: now.
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// SQL dialect; only `clickhouse` is supported.
    #[arg(long, value_name = "DIALECT", default_value = "clickhouse")]
    dialect: String,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Number of persons.
    #[arg(long, value_name = "N")]
    persons: u64,
    /// Average number of events per person.
    #[arg(long, value_name = "M")]
    events_per_person: u64,
    /// Random seed: the same flags always write the same bytes.
    #[arg(long, value_name = "S", default_value_t = 42)]
    seed: u64,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The instant the data ends at (timestamps cover the 400 days before it).
    #[arg(long, value_name = "TIME", default_value = "2026-11-01T00:00:00Z")]
    now: String,
    /// Output shape: `jsonl` (persons.jsonl, events.jsonl), or PostHog's batch exports as
    /// directories of part files (persons/, events/): `posthog-jsonl` or `posthog-parquet`.
    #[arg(long, value_name = "FORMAT", default_value = "jsonl")]
    format: String,
    /// Part files per model for the posthog formats.
    #[arg(long, value_name = "N", default_value_t = 4)]
    parts: usize,
    /// Data shape: `simple` (person id = first distinct id, up to 3 event properties, 50 event
    /// names) or `wide` (1-4 distinct ids unlike the person id, 6-10 event properties with long
    /// URLs and nested objects, 200 event names, person properties of every JSON type).
    #[arg(long, value_name = "SHAPE", default_value = "simple")]
    shape: String,
}

#[derive(Args, Debug)]
struct DataArgs {
    /// Cohorts file: a JSON array of cohort objects, or the API's paginated list response.
    #[arg(long, value_name = "FILE")]
    cohorts: PathBuf,
    /// Persons file (JSONL; `.gz` read compressed).
    #[arg(long, value_name = "FILE")]
    persons: PathBuf,
    /// Events file (JSONL; `.gz` read compressed).
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Evaluation instant: RFC 3339 with offset, or a naive date/date-time (UTC). Default: now.
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// Print nothing on stderr except errors.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ExplainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The cohort to explain.
    #[arg(long = "cohort", value_name = "ID", allow_hyphen_values = true)]
    cohort: String,
    /// The person (person id, or one of its distinct ids).
    #[arg(long = "person", value_name = "PID")]
    person: String,
    /// Output format: indented text (default) or one JSON line.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    format: String,
}

#[derive(Args, Debug)]
struct WatchArgs {
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Only print these cohorts (repeatable); referenced cohorts are still evaluated.
    #[arg(long = "cohort", value_name = "ID", allow_hyphen_values = true)]
    cohort: Vec<String>,
    /// Evaluate only persons whose partition is I of N (FNV-1a 64 of the person id, mod N).
    #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
    partition: Option<String>,
    /// Worker threads (default: all cores); never changes the output.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    threads: Option<String>,
}

/// Runs the CLI and returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                };
            }
            return fail(&[Error::new(ErrorKind::Usage, one_line(&e))]);
        }
    };
    let result = match cli.command {
        Command::Eval(args) => eval(args),
        Command::Explain(args) => explain(args),
        Command::Watch(args) => watch(args),
        Command::Generate(args) => generate(args),
        Command::Sql(args) => sql(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => 0,
        Err(errors) => fail(&errors),
    }
}

/// A clap error as one line that keeps what matters: which arguments are missing, or clap's
/// message with its tips, without the usage block and the "try --help" footer.
fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind as K};
    if e.kind() == K::MissingRequiredArgument {
        if let Some(ContextValue::Strings(missing)) = e.get(ContextKind::InvalidArg) {
            return format!("missing {}", missing.join(", "));
        }
    }
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.trim_start_matches("error: "))
        .collect();
    if parts.is_empty() {
        "invalid arguments".to_string()
    } else {
        parts.join("; ")
    }
}

fn fail(errors: &[Error]) -> i32 {
    let stderr = std::io::stderr();
    let mut w = stderr.lock();
    for e in errors {
        let _ = writeln!(w, "error: {e}");
    }
    2
}

fn usage(msg: impl Into<String>) -> Vec<Error> {
    vec![Error::new(ErrorKind::Usage, msg)]
}

fn parse_now(s: &Option<String>) -> Result<Micros, Vec<Error>> {
    match s {
        Some(t) => parse_absolute(t).ok_or_else(|| {
            usage(format!(
                "--now must be an RFC 3339 date-time or a naive ISO date/date-time, got {t:?}"
            ))
        }),
        None => {
            let d = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Ok(d.as_micros() as Micros)
        }
    }
}

fn parse_partition(s: &Option<String>) -> Result<Option<(u64, u64)>, Vec<Error>> {
    let Some(s) = s else { return Ok(None) };
    let parsed = s.split_once('/').and_then(|(i, n)| {
        let all_digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(i) || !all_digits(n) {
            return None;
        }
        Some((i.parse::<u64>().ok()?, n.parse::<u64>().ok()?))
    });
    match parsed {
        Some((i, n)) if i < n => Ok(Some((i, n))),
        _ => Err(usage("--partition must be I/N with 0 <= I < N")),
    }
}

fn eval(args: EvalArgs) -> Result<(), Vec<Error>> {
    let now = parse_now(&args.data.now)?;
    let partition = parse_partition(&args.partition)?;
    let threads = match &args.threads {
        None => 0,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(usage(format!(
                    "--threads must be a positive integer, got {t:?}"
                )))
            }
        },
    };
    let wanted = args
        .cohort
        .iter()
        .map(|c| parse_cohort_id(c))
        .collect::<Result<Vec<_>, _>>()?;
    let set = load_set(&args.data.cohorts)?;
    requested(&set, &wanted)?;
    let data = load_data(&args.data, threads, &set)?;
    let eval_started = Instant::now();
    let mut options = BatchOptions::default().threads(threads);
    options.cohorts = (!wanted.is_empty()).then_some(wanted);
    options.partition = partition;
    // Each cohort's member ids (borrowed, in byte order) written as JSON on the evaluation's
    // own threads, once every cohort is done: the evaluation time reported covers the member
    // lists, and no id is copied into a String.
    let program = data.compile(&set).map_err(|e| vec![e])?;
    let lists = data
        .evaluate_each(&program, now, &options, |_, bits| {
            let mut out = Vec::with_capacity(data.member_ids_json_len(bits.count()));
            data.write_member_ids_json(&bits, &mut out);
            out
        })
        .map_err(|e| vec![e])?;
    if !args.data.quiet {
        eprintln!(
            "evaluated {} cohorts in {:.3} s",
            lists.len(),
            eval_started.elapsed().as_secs_f64()
        );
    }
    write_stdout(&eval_line(&lists))
}

/// The `eval` output line, `{"id":[member ids in byte order],...}` and a newline, in parts to
/// be written in order: the cohorts' lists (from [`Dataset::write_member_ids_json`]) between
/// the keys and braces.
fn eval_line(
    lists: &std::collections::BTreeMap<CohortId, Vec<u8>>,
) -> Vec<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    let mut parts = Vec::with_capacity(2 * lists.len() + 2);
    parts.push(Cow::Borrowed(&b"{"[..]));
    for (i, (id, list)) in lists.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        parts.push(Cow::Owned(format!("{sep}\"{id}\":").into_bytes()));
        parts.push(Cow::Borrowed(&list[..]));
    }
    parts.push(Cow::Borrowed(&b"}\n"[..]));
    parts
}

/// Reads and validates the cohorts file.
fn load_set(path: &std::path::Path) -> Result<CohortSet, Vec<Error>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Error::input(name.clone(), format!("cannot read: {e}"))])?;
    CohortSet::from_json_with(&text, &name, &Limits::default()).map_err(|e| e.0)
}

/// Loads the data files, with progress on stderr unless quiet. Only what the cohorts of `set`
/// read is kept (every command loading data knows its cohorts first).
fn load_data(args: &DataArgs, threads: usize, set: &CohortSet) -> Result<Dataset, Vec<Error>> {
    let started = Instant::now();
    let mut progress = |file: &str, lines: u64, elapsed: Duration| {
        if elapsed.as_secs_f64() >= 1.0 {
            let rate = lines as f64 / elapsed.as_secs_f64().max(1e-9);
            eprintln!(
                "{file}: {lines} lines read, {rate:.0} lines/s, {:.1} s",
                elapsed.as_secs_f64()
            );
        }
    };
    let mut opts = LoadOptions::default()
        .threads(threads)
        .projection(Projection::of(set));
    if !args.quiet {
        opts.progress = Some(&mut progress);
    }
    let data = Dataset::from_paths(&args.persons, args.events.as_deref(), &mut opts)
        .map_err(|e| vec![e])?;
    if !args.quiet {
        let stats = data.stats();
        eprintln!(
            "loaded {} persons and {} events in {:.2} s ({:.0} bytes/event, {:.0} bytes/person)",
            stats.persons,
            stats.events,
            started.elapsed().as_secs_f64(),
            data.event_bytes() as f64 / (data.event_count().max(1)) as f64,
            data.person_bytes() as f64 / (stats.persons.max(1)) as f64
        );
        if stats.dropped_events > 0 {
            eprintln!(
                "kept {} events: {} are of names no cohort reads",
                data.event_count(),
                stats.dropped_events
            );
        }
        if stats.skipped_events > 0 {
            eprintln!(
                "skipped {} events whose distinct id no person owns",
                stats.skipped_events
            );
        }
    }
    Ok(data)
}

fn parse_cohort_id(s: &str) -> Result<CohortId, Vec<Error>> {
    match s.parse::<CohortId>() {
        Ok(id) if id >= 0 => Ok(id),
        _ => Err(usage(format!(
            "--cohort must be a cohort id (a non-negative integer), got {s:?}"
        ))),
    }
}

/// The `--cohort` ids, each checked against the set (after the file's own errors, before any data
/// file is read).
fn requested(set: &CohortSet, ids: &[CohortId]) -> Result<(), Vec<Error>> {
    let unknown: Vec<Error> = ids
        .iter()
        .filter_map(|&id| check_cohort(set, id).err())
        .flatten()
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unknown)
    }
}

fn check_cohort(set: &CohortSet, id: CohortId) -> Result<(), Vec<Error>> {
    if set.get(id).is_none_or(|c| c.is_deleted()) {
        return Err(vec![Error::new(
            ErrorKind::UnknownCohort,
            format!("--cohort {id}: cohort {id} is not in the set"),
        )]);
    }
    Ok(())
}

fn explain(args: ExplainArgs) -> Result<(), Vec<Error>> {
    let now = parse_now(&args.data.now)?;
    let cohort = parse_cohort_id(&args.cohort)?;
    let json = match args.format.as_str() {
        "json" => true,
        "text" => false,
        other => {
            return Err(usage(format!(
                "--format must be text or json, got {other:?}"
            )))
        }
    };
    let set = load_set(&args.data.cohorts)?;
    check_cohort(&set, cohort)?;
    let data = load_data(&args.data, 0, &set)?;
    let Some(index) = data.resolve(&args.person) else {
        return Err(usage(format!(
            "--person {:?}: no person has this id or distinct id",
            args.person
        )));
    };
    let program = data.compile(&set).map_err(|e| vec![e])?;
    let mut scratch = cohort_engine::Scratch::new();
    let explanation = data
        .explain(&program, cohort, index, now, &mut scratch)
        .map_err(|e| vec![e])?;
    let text = if json {
        format!("{}\n", explanation.to_json_string())
    } else {
        explanation.to_string()
    };
    write_stdout(&[text.as_bytes()])
}

fn write_stdout<B: AsRef<[u8]>>(parts: &[B]) -> Result<(), Vec<Error>> {
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    let mut write = || {
        for part in parts {
            w.write_all(part.as_ref())?;
        }
        w.flush()
    };
    write().map_err(|e| {
        vec![Error::new(
            ErrorKind::InvalidInput,
            format!("cannot write output: {e}"),
        )]
    })
}

fn watch(args: WatchArgs) -> Result<(), Vec<Error>> {
    let Some(now_text) = &args.data.now else {
        return Err(usage("watch needs --now TIME"));
    };
    let now = parse_now(&Some(now_text.clone()))?;
    let set = load_set(&args.data.cohorts)?;
    let data = load_data(&args.data, 0, &set)?;
    let started = Instant::now();
    let engine = cohort_engine::Engine::new(&set).map_err(|e| e.0)?;
    let mut tracker = cohort_engine::Tracker::from_dataset(engine, &data, now);
    drop(data);
    // Plain event lines go through the loader's scanner; the rest through serde (below).
    let lines = cohort_engine::internal::EventLines::new(&set);
    let quiet = args.data.quiet;
    if !quiet {
        let live = set.cohorts().iter().filter(|c| !c.is_deleted()).count();
        eprintln!(
            "tracker ready: {} persons, {live} cohorts in {:.2} s",
            tracker.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let (mut line_no, mut count) = (0usize, 0usize);
    let mut out = Vec::new();
    // Lines are read, checked and scanned on a thread of their own, a batch at a time, while
    // this one applies them in order: the tracker's work and the parsing overlap.
    let (batches, received) = std::sync::mpsc::sync_channel::<WatchBatch>(4);
    let (returned, free) = std::sync::mpsc::channel::<WatchBatch>();
    std::thread::spawn(move || read_watch_input(lines, batches, free));
    'batches: loop {
        // Output is flushed whenever no more input is waiting: prompt for an interactive
        // stream, batched for a fast one.
        let batch = match received.try_recv() {
            Ok(batch) => batch,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                if w.flush().is_err() {
                    break;
                }
                match received.recv() {
                    Ok(batch) => batch,
                    Err(_) => break,
                }
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        };
        for (no, line) in &batch.lines {
            out.clear();
            match line {
                WatchLine::Scanned(i) => batch.scanned.apply(*i, &mut tracker, &mut out),
                WatchLine::Bad(message) => {
                    eprintln!("error: invalid_input: stdin:{no}: {message}");
                    continue;
                }
                WatchLine::Other(range) => {
                    let text = &batch.text[range.clone()];
                    if !fast_event(&mut tracker, text, &mut out) {
                        let update = match cohort_engine::Update::from_json(text) {
                            Ok(u) => u,
                            Err(msg) => {
                                eprintln!("error: invalid_input: stdin:{no}: {msg}");
                                continue;
                            }
                        };
                        if let Err(e) = tracker.apply_into(&update, &mut out) {
                            eprintln!("error: invalid_input: stdin:{no}: {}", e.message());
                            continue;
                        }
                    }
                }
            }
            count += out.len();
            let mut failed = false;
            for t in &out {
                failed |= serde_json::to_writer(&mut w, t).is_err() || w.write_all(b"\n").is_err();
            }
            if failed {
                break 'batches;
            }
        }
        line_no = batch.line_no;
        // The reader takes the batch back for its next lines (gone once it has finished).
        let _ = returned.send(batch);
    }
    let _ = w.flush();
    if !quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "processed {line_no} lines in {secs:.2} s ({:.0} lines/s), {count} transitions",
            line_no as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

/// A batch of `watch` input lines, in input order: each with its line number.
#[derive(Default)]
struct WatchBatch {
    lines: Vec<(usize, WatchLine)>,
    /// Plain event lines, scanned.
    scanned: cohort_engine::internal::ScannedEvents,
    /// The text of the other lines.
    text: String,
    /// Lines read so far, blank ones included.
    line_no: usize,
}

/// One input line of a [`WatchBatch`].
enum WatchLine {
    /// A plain event line: its number in the batch's scanned events.
    Scanned(usize),
    /// Any other line: its text in the batch (applied through serde).
    Other(std::ops::Range<usize>),
    /// A line that cannot be read: the message.
    Bad(String),
}

/// Reads `watch` input lines from stdin into batches sent to `batches` (taking emptied ones
/// back from `free`): a batch ends after 1,024 lines or when no more input is waiting, so an
/// interactive stream is answered line by line. Stops at the end of input, at a read error (its
/// line reported) or when the receiver has gone.
fn read_watch_input(
    mut lines: cohort_engine::internal::EventLines,
    batches: std::sync::mpsc::SyncSender<WatchBatch>,
    free: std::sync::mpsc::Receiver<WatchBatch>,
) {
    use std::io::BufRead;
    let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut done = false;
    while !done {
        let mut batch = free.try_recv().unwrap_or_default();
        batch.lines.clear();
        batch.scanned.clear();
        batch.text.clear();
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    done = true;
                    break;
                }
                Ok(_) => line_no += 1,
                Err(e) => {
                    batch
                        .lines
                        .push((line_no + 1, WatchLine::Bad(format!("cannot read: {e}"))));
                    done = true;
                    break;
                }
            }
            match std::str::from_utf8(&buf).map(str::trim) {
                Err(_) => batch
                    .lines
                    .push((line_no, WatchLine::Bad("not valid UTF-8".into()))),
                Ok("") => {}
                Ok(text) => {
                    let line = if lines.scan(text, &mut batch.scanned) {
                        WatchLine::Scanned(batch.scanned.len() - 1)
                    } else {
                        let start = batch.text.len();
                        batch.text.push_str(text);
                        WatchLine::Other(start..batch.text.len())
                    };
                    batch.lines.push((line_no, line));
                }
            }
            if batch.lines.len() >= 1024 || input.buffer().is_empty() {
                break;
            }
        }
        batch.line_no = line_no;
        if batches.send(batch).is_err() {
            return;
        }
    }
}

/// An event line the scanner did not take (escapes, containers in properties), applied without
/// building a JSON tree for the envelope. Returns false (nothing applied) for anything else,
/// which then takes the exact path of [`cohort_engine::Update::from_json`] with its error
/// messages.
fn fast_event(tracker: &mut cohort_engine::Tracker, line: &str, out: &mut Vec<Transition>) -> bool {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Ts<'a> {
        Str(#[serde(borrow)] Cow<'a, str>),
        Num(serde_json::Number),
    }
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        distinct_id: Cow<'a, str>,
        #[serde(borrow)]
        event: Cow<'a, str>,
        #[serde(borrow)]
        timestamp: Ts<'a>,
        #[serde(default)]
        properties: Option<serde_json::Map<String, serde_json::Value>>,
        #[serde(rename = "$now", default)]
        now: Option<serde::de::IgnoredAny>,
        #[serde(rename = "$set", default)]
        set: Option<serde::de::IgnoredAny>,
        #[serde(rename = "$unset", default)]
        unset: Option<serde::de::IgnoredAny>,
        #[serde(rename = "$delete", default)]
        delete: Option<serde::de::IgnoredAny>,
    }
    let Ok(l) = serde_json::from_str::<Line<'_>>(line) else {
        return false;
    };
    if l.now.is_some() || l.set.is_some() || l.unset.is_some() || l.delete.is_some() {
        return false;
    }
    let ts = match &l.timestamp {
        Ts::Str(s) => parse_absolute(s),
        Ts::Num(n) => {
            cohort_engine::time::parse_timestamp(&serde_json::Value::Number(n.clone())).ok()
        }
    };
    let Some(ts) = ts else {
        return false;
    };
    let empty = serde_json::Map::new();
    tracker.event(
        &l.distinct_id,
        &l.event,
        ts,
        l.properties.as_ref().unwrap_or(&empty),
        out,
    );
    true
}

fn generate(args: GenerateArgs) -> Result<(), Vec<Error>> {
    use cohort_engine::internal::export::{ExportFormat, ExportOptions};
    let now = parse_now(&Some(args.now.clone()))?;
    let export = match args.format.as_str() {
        "jsonl" => None,
        "posthog-jsonl" => Some(ExportFormat::Jsonl),
        "posthog-parquet" => Some(ExportFormat::Parquet),
        other => {
            return Err(usage(format!(
                "--format must be jsonl, posthog-jsonl or posthog-parquet, got {other:?}"
            )))
        }
    };
    if args.parts == 0 {
        return Err(usage("--parts must be at least 1"));
    }
    let Some(shape) = cohort_engine::internal::generate::Shape::from_name(&args.shape) else {
        return Err(usage(format!(
            "--shape must be simple or wide, got {:?}",
            args.shape
        )));
    };
    let opts = cohort_engine::internal::generate::GenerateOptions {
        persons: args.persons,
        events_per_person: args.events_per_person,
        seed: args.seed,
        now,
        shape,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| {
        vec![Error::input(
            args.out.display().to_string(),
            format!("cannot create: {e}"),
        )]
    })?;
    let started = Instant::now();
    let stats = cohort_engine::internal::generate::generate(&opts, &args.out).map_err(|e| {
        vec![Error::input(
            args.out.display().to_string(),
            format!("cannot write: {e}"),
        )]
    })?;
    if let Some(format) = export {
        let opts = ExportOptions::new(format, args.parts);
        cohort_engine::internal::export::export(&args.out, &opts).map_err(|e| {
            vec![Error::input(
                args.out.display().to_string(),
                format!("cannot write: {e}"),
            )]
        })?;
    }
    eprintln!(
        "wrote {} persons, {} events and {} cohorts to {} in {:.1} s",
        stats.persons,
        stats.events,
        stats.cohorts,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(feature = "server")]
fn serve(args: ServeArgs) -> Result<(), Vec<Error>> {
    let listen = args.listen.parse().map_err(|_| {
        usage(format!(
            "--listen must be an address such as 127.0.0.1:8010, got {:?}",
            args.listen
        ))
    })?;
    if args.api_key.is_some() {
        eprintln!(
            "cohort-engine: warning: --api-key is visible to other users in the process list; \
             use --api-key-file or {} instead",
            cohort_engine::server::API_KEY_ENV
        );
    }
    let mut opts = cohort_engine::server::ServeOptions::new(args.db);
    opts.data_dir = args.data;
    opts.listen = listen;
    opts.api_key = args.api_key;
    opts.api_key_file = args.api_key_file;
    opts.public_url = args.public_url;
    opts.max_body = parse_size("--max-body", &args.max_body)?;
    opts.max_upload = parse_size("--max-upload", &args.max_upload)?;
    opts.header_timeout = seconds("--header-timeout", args.header_timeout)?;
    opts.body_timeout = seconds("--body-timeout", args.body_timeout)?;
    opts.shutdown_timeout = seconds("--shutdown-timeout", args.shutdown_timeout)?;
    if args.max_connections == 0 {
        return Err(usage("--max-connections must be at least 1"));
    }
    opts.max_connections = args.max_connections;
    opts.access_log = !args.no_access_log;
    cohort_engine::server::serve(opts).map_err(|e| vec![e])
}

/// `123`, `64K`, `2M`, `1G` (also `KiB`, `MiB`, `GiB`): bytes, suffixes in powers of 1024.
#[cfg(feature = "server")]
fn parse_size(flag: &str, s: &str) -> Result<usize, Vec<Error>> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match t[digits.len()..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => 0,
    };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 && unit > 0 => n
            .checked_mul(unit)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| usage(format!("{flag} is too large: {s:?}"))),
        _ => Err(usage(format!(
            "{flag} must be a positive size such as 2M or 65536, got {s:?}"
        ))),
    }
}

#[cfg(feature = "server")]
fn seconds(flag: &str, secs: f64) -> Result<Duration, Vec<Error>> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(usage(format!(
            "{flag} must be a number of seconds above 0 (at most a day), got {secs}"
        )))
    }
}

fn sql(args: SqlArgs) -> Result<(), Vec<Error>> {
    if args.dialect != "clickhouse" {
        return Err(usage(format!(
            "--dialect {:?} is not supported (only clickhouse)",
            args.dialect
        )));
    }
    let now = parse_now(&args.now)?;
    let wanted = args
        .cohort
        .iter()
        .map(|c| parse_cohort_id(c))
        .collect::<Result<Vec<_>, _>>()?;
    let set = load_set(&args.cohorts)?;
    requested(&set, &wanted)?;
    let ids: Vec<CohortId> = if wanted.is_empty() {
        set.cohorts()
            .iter()
            .filter(|c| !c.is_deleted())
            .map(|c| c.id)
            .collect()
    } else {
        wanted
    };
    let opts = cohort_engine::sql::SqlOptions::new(now);
    let mut out = String::new();
    let mut errors = Vec::new();
    for id in ids {
        match cohort_engine::sql::cohort_sql(&set, id, &opts) {
            Ok(q) => out.push_str(&format!("-- cohort {id}\n{q};\n\n")),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    write_stdout(&[out.as_bytes()])
}
