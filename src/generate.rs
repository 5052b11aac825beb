//! A deterministic synthetic data generator for benchmarks and comparisons: persons, events and a
//! fixed set of cohorts in the file formats of `CLI.md` §2.
//!
//! The same [`GenerateOptions`] always produce byte-identical files (a small SplitMix64 generator
//! written here, integer arithmetic for every written value). Everything is streamed through
//! buffered writers, so a million persons with fifty million events never sit in memory.
//!
//! What the data looks like:
//! - Persons `u000000`, `u000001`, … with one or two distinct ids (the person id itself, and for
//!   about 40% an anonymous id `anon-…`), and about fifteen properties of mixed types: `email`
//!   (a few domains, one of them spelt `Yahoo.com`), `name` (free text, some non-ASCII), `age`
//!   (integer, sometimes a numeric string, rarely garbage), `ltv` (float), `is_verified` and
//!   `newsletter` (booleans, sometimes as `"true"`/`"False"` strings), `signed_up_at` (ISO date-time,
//!   date-only or epoch seconds), `plan` (small set, mixed case), `country`, `city`, `app_version`
//!   (semver-ish, some with `v` prefix, pre-release, build or two components; a few unparsable),
//!   `company_size`, `referrer`, `utm_source`, `os`, `score`. Properties are missing or `null` at
//!   realistic rates.
//! - Events: fifty event names with Zipf-like popularity (`$pageview` most common, `upgrade` and
//!   `cancel` rare) plus one `signup` event when the person started; per-person counts vary around
//!   `events_per_person` (about 8% of persons have none, a few are heavy users). Timestamps cover
//!   the 400 days before `now` (a person is active from their start; some churned, some returned
//!   after a gap); about 0.2% lie up to 10 days after `now` (they must never count), about 2% lie
//!   exactly on typical window bounds (`now` itself, or whole days, weeks or calendar months
//!   before it) and about 0.1% belong to unknown distinct ids (they are skipped). Formats: RFC 3339 with `Z` (micro- or
//!   whole seconds), RFC 3339 with a `+02:00`/`-05:00` offset, or a JSON number of epoch seconds or
//!   milliseconds. Events are written person by person, not in time order. Properties: `$browser`,
//!   `path` (page events), `amount` (purchase-like events; sometimes a numeric string).
//! - Cohorts 1..=12: person operators (exact list, icontains, between, gt, is_date_after `-30d`,
//!   regex, is_set/is_not_set, semver_gte, in, is_not), every behavioral type, event filters,
//!   negated leaves, calendar-month windows, deep mixed trees and references (10 → 1, ¬3;
//!   12 → 9).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Number of persons.
    pub persons: u64,
    /// Average number of events per person (the actual count varies per person).
    pub events_per_person: u64,
    /// Seed of the random generator; the same options always give the same bytes.
    pub seed: u64,
    /// The reference instant (microseconds since the epoch): timestamps lie in the 400 days
    /// before it. Default: 2026-11-01T00:00:00Z.
    pub now: i64,
    /// What the persons and events look like.
    pub shape: Shape,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            persons: 10_000,
            events_per_person: 50,
            seed: 42,
            now: DEFAULT_NOW,
            shape: Shape::Simple,
        }
    }
}

/// The shape of the generated data (both shapes share the vocabulary the cohorts read, so the
/// same cohorts apply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// Persons `u000000`… whose first distinct id is the person id; three event properties at
    /// most; fifty event names.
    #[default]
    Simple,
    /// Closer to a PostHog export: UUID-like person ids and one to four distinct ids, none equal
    /// to the person id; six to ten event properties per event (long URLs with query strings,
    /// session and device ids, a nested `$set` object, an `$elements` list of objects); two
    /// hundred event names; extra person properties of every JSON type (lists, objects, numbers
    /// as strings, booleans, nulls).
    Wide,
}

impl Shape {
    /// The shape named `simple` or `wide`.
    pub fn from_name(name: &str) -> Option<Shape> {
        match name {
            "simple" => Some(Shape::Simple),
            "wide" => Some(Shape::Wide),
            _ => None,
        }
    }
}

/// The default reference instant, 2026-11-01T00:00:00Z, in microseconds since the epoch.
pub const DEFAULT_NOW: i64 = 1_793_491_200_000_000;

/// What [`generate`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerateStats {
    /// Person lines written.
    pub persons: u64,
    /// Event lines written (including the few with unknown distinct ids).
    pub events: u64,
    /// Cohorts written.
    pub cohorts: usize,
}

/// Writes `persons.jsonl`, `events.jsonl` and `cohorts.json` into `out_dir` (created if needed).
///
/// # Errors
/// Any I/O error creating the directory or writing the files.
pub fn generate(opts: &GenerateOptions, out_dir: &Path) -> io::Result<GenerateStats> {
    std::fs::create_dir_all(out_dir)?;
    let mut persons =
        BufWriter::with_capacity(1 << 20, File::create(out_dir.join("persons.jsonl"))?);
    let mut events = BufWriter::with_capacity(1 << 20, File::create(out_dir.join("events.jsonl"))?);
    let mut stats = GenerateStats::default();
    let mut gen = Generator::new(opts);
    let mut line = String::with_capacity(1024);
    for index in 0..opts.persons {
        gen.person(index, &mut line, &mut stats, &mut persons, &mut events)?;
    }
    persons.flush()?;
    events.flush()?;
    let mut cohorts = BufWriter::new(File::create(out_dir.join("cohorts.json"))?);
    cohorts.write_all(COHORTS.as_bytes())?;
    cohorts.flush()?;
    stats.cohorts = COHORT_COUNT;
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// Random numbers

/// SplitMix64: tiny, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn pick(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }

    /// Picks an index by integer weights.
    fn weighted(&mut self, cumulative: &[u64]) -> usize {
        let total = *cumulative.last().unwrap_or(&1);
        let x = self.below(total);
        cumulative.partition_point(|&c| c <= x)
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

/// Event names by popularity rank (weight ∝ 1/rank).
const EVENTS: [&str; 50] = [
    "$pageview",
    "$autocapture",
    "$pageleave",
    "login",
    "$screen",
    "search",
    "click_button",
    "view_item",
    "purchase",
    "add_to_cart",
    "$identify",
    "pricing_viewed",
    "logout",
    "share",
    "comment",
    "like",
    "open_settings",
    "file_upload",
    "file_download",
    "invite_sent",
    "notification_clicked",
    "filter_applied",
    "export_csv",
    "dashboard_viewed",
    "insight_created",
    "insight_viewed",
    "feature_flag_called",
    "session_recording_viewed",
    "team_member_added",
    "api_key_created",
    "integration_connected",
    "webhook_created",
    "report_scheduled",
    "onboarding_step",
    "onboarding_completed",
    "help_opened",
    "chat_started",
    "feedback_given",
    "survey_shown",
    "survey_answered",
    "billing_viewed",
    "payment_method_added",
    "coupon_applied",
    "trial_started",
    "trial_extended",
    "plan_changed",
    "password_reset",
    "account_deleted",
    "upgrade",
    "cancel",
];

const FIRST_NAMES: [&str; 24] = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Alan",
    "Barbara",
    "Dennis",
    "Frances",
    "Ken",
    "Radia",
    "Donald",
    "Katherine",
    "José",
    "Zoë",
    "Søren",
    "Anaïs",
    "Björn",
    "Chloé",
    "Mateo",
    "Aiko",
    "Priya",
    "Noah",
    "Olivia",
    "Liam",
];

const LAST_NAMES: [&str; 20] = [
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Turing",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
    "Perlman",
    "Knuth",
    "Johnson",
    "García",
    "Müller",
    "Kierkegaard",
    "Dubois",
    "Nilsson",
    "Martin",
    "Tanaka",
    "O'Brien",
];

const DOMAINS: [(&str, u64); 7] = [
    ("gmail.com", 300),
    ("acme.io", 150),
    ("example.com", 150),
    ("Yahoo.com", 60),
    ("yahoo.com", 90),
    ("posthog.com", 50),
    ("hey.com", 200),
];

const PLANS: [(&str, u64); 8] = [
    ("free", 300),
    ("Free", 150),
    ("starter", 150),
    ("pro", 120),
    ("Pro", 50),
    ("PRO", 30),
    ("enterprise", 50),
    ("Enterprise", 30),
];

const COUNTRIES: [(&str, u64); 9] = [
    ("US", 300),
    ("us", 30),
    ("CA", 60),
    ("GB", 100),
    ("DE", 120),
    ("FR", 80),
    ("IN", 120),
    ("BR", 80),
    ("JP", 60),
];

const CITIES: [&str; 10] = [
    "New York",
    "Toronto",
    "London",
    "Berlin",
    "Paris",
    "Bengaluru",
    "São Paulo",
    "Tokyo",
    "Zürich",
    "Austin",
];

const VERSIONS: [&str; 16] = [
    "1.9.0",
    "1.9.4",
    "2.0.0",
    "2.0.9",
    "2.1.0",
    "2.1.3",
    "v2.3.1",
    "2.10.0",
    "3.0.0-beta.1",
    "3.0.0",
    "3.1",
    "V3.2.0",
    "2.4.0+build.7",
    "02.1.0",
    "3",
    "1.2.3.4",
];

const REFERRERS: [&str; 6] = ["google", "twitter", "direct", "newsletter", "Twitter", "hn"];
const UTM: [&str; 4] = ["ads", "partner", "spring_sale", "webinar"];
const OSES: [&str; 5] = ["Mac OS X", "Windows", "Linux", "iOS", "Android"];
const BROWSERS: [(&str, u64); 5] = [
    ("Chrome", 550),
    ("Safari", 200),
    ("Firefox", 100),
    ("Edge", 80),
    ("Opera", 20),
];
const PATHS: [&str; 8] = [
    "/",
    "/pricing",
    "/Pricing/enterprise",
    "/docs/intro",
    "/docs/api",
    "/blog/post-1",
    "/signup",
    "/settings",
];

fn cumulative(weights: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut total = 0;
    weights
        .map(|w| {
            total += w;
            total
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Time formatting (proleptic Gregorian, Howard Hinnant's civil_from_days)

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` minus `n` calendar months in one step, keeping the time of day and clamping the day to the
/// end of the target month (SEMANTICS §C.2).
fn months_back(t: i64, n: i64) -> i64 {
    let (y, m, d) = civil_from_days(t.div_euclid(MICROS_PER_DAY));
    let total = y * 12 + i64::from(m) - 1 - n;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    let next = if nm == 12 { (ny + 1, 1) } else { (ny, nm + 1) };
    let month_days = days_from_civil(next.0, next.1, 1) - days_from_civil(ny, nm, 1);
    let nd = i64::from(d).min(month_days) as u32;
    days_from_civil(ny, nm, nd) * MICROS_PER_DAY + t.rem_euclid(MICROS_PER_DAY)
}

/// Writes `YYYY-MM-DD` for the UTC day of `t`.
fn push_date(out: &mut String, t: i64) {
    use std::fmt::Write as _;
    let (y, m, d) = civil_from_days(t.div_euclid(MICROS_PER_DAY));
    let _ = write!(out, "{y:04}-{m:02}-{d:02}");
}

/// Writes `YYYY-MM-DDTHH:MM:SS` (+ `.ffffff` when `micros`) of `t` shifted by `offset_min`
/// minutes, then the zone designator.
fn push_rfc3339(out: &mut String, t: i64, micros: bool, offset_min: i64) {
    use std::fmt::Write as _;
    let local = t + offset_min * 60 * MICROS_PER_SECOND;
    push_date(out, local);
    let tod = local.rem_euclid(MICROS_PER_DAY);
    let secs = tod / MICROS_PER_SECOND;
    let _ = write!(
        out,
        "T{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if micros {
        let _ = write!(out, ".{:06}", tod % MICROS_PER_SECOND);
    }
    if offset_min == 0 {
        out.push('Z');
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let a = offset_min.abs();
        let _ = write!(out, "{sign}{:02}:{:02}", a / 60, a % 60);
    }
}

/// Writes a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes cents as a decimal number with two fraction digits (`1234` → `12.34`).
fn push_cents(out: &mut String, cents: i64) {
    use std::fmt::Write as _;
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.abs();
    let _ = write!(out, "{sign}{}.{:02}", a / 100, a % 100);
}

// ---------------------------------------------------------------------------------------------
// The generator

struct Generator {
    rng: Rng,
    shape: Shape,
    /// The wide shape's event names (the fifty common ones first) and their weights.
    wide_names: Vec<String>,
    wide_weights: Vec<u64>,
    now: i64,
    events_per_person: u64,
    event_weights: Vec<u64>,
    domains: Vec<u64>,
    plans: Vec<u64>,
    countries: Vec<u64>,
    browsers: Vec<u64>,
}

/// A person's activity: events fall in `[start, end)` minus the gap `[gap.0, gap.1)`.
struct Activity {
    start: i64,
    end: i64,
    gap: Option<(i64, i64)>,
}

impl Generator {
    fn new(opts: &GenerateOptions) -> Generator {
        let wide_names: Vec<String> = EVENTS
            .iter()
            .map(|e| e.to_string())
            .chain(
                (0..WIDE_EVENTS - EVENTS.len())
                    .map(|k| format!("{}_{k:03}", WIDE_PREFIXES[k % WIDE_PREFIXES.len()])),
            )
            .collect();
        Generator {
            rng: Rng(opts.seed ^ 0x5eed_c0ff_ee00_0001),
            shape: opts.shape,
            wide_weights: cumulative((1..=wide_names.len() as u64).map(|r| 1_000_000 / r)),
            wide_names,
            now: opts.now,
            events_per_person: opts.events_per_person,
            // Weight ∝ 1/rank, scaled to integers.
            event_weights: cumulative((1..=EVENTS.len() as u64).map(|r| 1_000_000 / r)),
            domains: cumulative(DOMAINS.iter().map(|d| d.1)),
            plans: cumulative(PLANS.iter().map(|d| d.1)),
            countries: cumulative(COUNTRIES.iter().map(|d| d.1)),
            browsers: cumulative(BROWSERS.iter().map(|d| d.1)),
        }
    }

    fn person(
        &mut self,
        index: u64,
        line: &mut String,
        stats: &mut GenerateStats,
        persons: &mut impl Write,
        events: &mut impl Write,
    ) -> io::Result<()> {
        let now = self.now;
        let day = MICROS_PER_DAY;
        let (id, dids) = match self.shape {
            Shape::Simple => {
                let id = format!("u{index:06}");
                let mut dids = vec![id.clone()];
                if self.rng.chance(400) {
                    dids.push(format!("anon-{:012x}", self.rng.next_u64() >> 16));
                }
                (id, dids)
            }
            Shape::Wide => self.wide_ids(index),
        };

        // Activity profile: start within the last 400 days; 25% churned, 15% returned after a gap.
        let start = now - self.rng.range(day, 400 * day - 1);
        let profile = self.rng.below(100);
        let activity = if profile < 25 {
            let end = now - self.rng.range(0, (now - start) / day) * day;
            Activity {
                start,
                end: end.max(start + day),
                gap: None,
            }
        } else if profile < 40 {
            let g1 = now - self.rng.range(20, 150) * day;
            let g2 = now - self.rng.range(2, 19) * day;
            Activity {
                start,
                end: now,
                gap: Some((g1.max(start), g2)),
            }
        } else {
            Activity {
                start,
                end: now,
                gap: None,
            }
        };

        // ---- person line
        line.clear();
        line.push_str("{\"id\":");
        push_json_str(line, &id);
        line.push_str(",\"distinct_ids\":[");
        for (k, d) in dids.iter().enumerate() {
            if k > 0 {
                line.push(',');
            }
            push_json_str(line, d);
        }
        line.push_str("],\"properties\":{");
        self.person_properties(line, index, start);
        if self.shape == Shape::Wide {
            self.wide_person_properties(line);
        }
        line.push_str("}}\n");
        persons.write_all(line.as_bytes())?;
        stats.persons += 1;

        // ---- events
        let n = self.event_count();
        if n > 0 {
            // The signup event, at the start.
            self.event_line(line, &dids, "signup", start)?;
            events.write_all(line.as_bytes())?;
            stats.events += 1;
        }
        for _ in 0..n {
            let name: std::borrow::Cow<'static, str> = match self.shape {
                Shape::Simple => EVENTS[self.rng.weighted(&self.event_weights)].into(),
                Shape::Wide => self.wide_names[self.rng.weighted(&self.wide_weights)]
                    .clone()
                    .into(),
            };
            let ts = if self.rng.chance(2) {
                now + self.rng.range(0, 10 * day)
            } else if self.rng.chance(20) {
                self.boundary()
            } else {
                self.timestamp(&activity)
            };
            let ghost = self.rng.chance(1);
            if ghost {
                let g = format!("ghost-{:08x}", self.rng.next_u64() >> 32);
                self.event_line(line, &[g], &name, ts)?;
            } else {
                self.event_line(line, &dids, &name, ts)?;
            }
            events.write_all(line.as_bytes())?;
            stats.events += 1;
        }
        Ok(())
    }

    /// An instant exactly on a typical window bound: `now` minus whole days (0..=31), whole weeks
    /// (0..=5) or calendar months (0..=7, end-of-month clamped) — midnight batch imports.
    fn boundary(&mut self) -> i64 {
        let f = self.rng.below(10);
        if f < 6 {
            self.now - self.rng.range(0, 31) * MICROS_PER_DAY
        } else if f < 8 {
            self.now - self.rng.range(0, 5) * 7 * MICROS_PER_DAY
        } else {
            months_back(self.now, self.rng.range(0, 7))
        }
    }

    /// Events per person: 8% none, otherwise spread around the mean, 5% heavy users.
    fn event_count(&mut self) -> u64 {
        let m = self.events_per_person;
        if m == 0 || self.rng.chance(80) {
            return 0;
        }
        // Uniform in [0.25 m, 1.75 m], times 3 for heavy users.
        let base = m / 4 + self.rng.below(m * 3 / 2 + 1);
        let base = base.max(1);
        if self.rng.chance(50) {
            base * 3
        } else {
            base
        }
    }

    fn timestamp(&mut self, a: &Activity) -> i64 {
        let span = (a.end - a.start).max(1);
        let gap = a.gap.map_or(0, |(g1, g2)| (g2 - g1).max(0));
        let usable = (span - gap).max(1);
        let mut t = a.start + self.rng.below(usable as u64) as i64;
        if let Some((g1, _)) = a.gap {
            if t >= g1 {
                t += gap;
            }
        }
        t.min(self.now - 1)
    }

    /// Writes one event line of a person with distinct ids `dids`.
    fn event_line(
        &mut self,
        line: &mut String,
        dids: &[String],
        name: &str,
        ts: i64,
    ) -> io::Result<()> {
        use std::fmt::Write as _;
        line.clear();
        line.push_str("{\"distinct_id\":");
        match self.shape {
            Shape::Simple => match dids.get(1) {
                Some(a) if self.rng.chance(350) => push_json_str(line, a),
                _ => push_json_str(line, &dids[0]),
            },
            Shape::Wide => {
                let k = self.rng.below(dids.len() as u64) as usize;
                push_json_str(line, &dids[k]);
            }
        }
        line.push_str(",\"event\":");
        push_json_str(line, name);
        line.push_str(",\"timestamp\":");
        let f = self.rng.below(100);
        if f < 78 {
            line.push('"');
            push_rfc3339(line, ts, true, 0);
            line.push('"');
        } else if f < 84 {
            line.push('"');
            push_rfc3339(line, ts - ts.rem_euclid(MICROS_PER_SECOND), false, 0);
            line.push('"');
        } else if f < 90 {
            let off = if self.rng.chance(500) { 120 } else { -300 };
            line.push('"');
            push_rfc3339(line, ts, true, off);
            line.push('"');
        } else if f < 97 {
            let _ = write!(line, "{}", ts.div_euclid(MICROS_PER_SECOND));
        } else {
            let _ = write!(line, "{}", ts.div_euclid(1000));
        }
        line.push_str(",\"properties\":{");
        let mut first = true;
        let mut sep = |line: &mut String| {
            if !first {
                line.push(',');
            }
            first = false;
        };
        if !self.rng.chance(70) {
            sep(line);
            line.push_str("\"$browser\":");
            push_json_str(line, BROWSERS[self.rng.weighted(&self.browsers)].0);
        }
        if matches!(name, "$pageview" | "$pageleave" | "pricing_viewed") {
            sep(line);
            line.push_str("\"path\":");
            let p = if name == "pricing_viewed" && self.rng.chance(700) {
                "/pricing"
            } else {
                self.rng.pick(&PATHS)
            };
            push_json_str(line, p);
        }
        if matches!(name, "purchase" | "upgrade" | "add_to_cart") && !self.rng.chance(30) {
            sep(line);
            line.push_str("\"amount\":");
            // Cents, skewed low: 1.00 ..= 500.00.
            let a = self.rng.range(100, 50_000);
            let b = self.rng.range(100, 50_000);
            let cents = a.min(b);
            if self.rng.chance(100) {
                line.push('"');
                push_cents(line, cents);
                line.push('"');
            } else {
                push_cents(line, cents);
            }
        }
        if self.shape == Shape::Wide {
            self.wide_event_properties(line, name, &mut sep);
        }
        line.push_str("}}\n");
        Ok(())
    }

    #[allow(unused_assignments)] // the last `key!` leaves `first` unread
    fn person_properties(&mut self, line: &mut String, index: u64, start: i64) {
        use std::fmt::Write as _;
        let mut first = true;
        // Writes `"key":` (with a separator); returns false (writes nothing) when the property
        // is missing, writes `null` and returns false when it is null.
        macro_rules! key {
            ($k:expr, $missing:expr, $null:expr) => {{
                if self.rng.chance($missing) {
                    false
                } else {
                    if !first {
                        line.push(',');
                    }
                    first = false;
                    push_json_str(line, $k);
                    line.push(':');
                    if self.rng.chance($null) {
                        line.push_str("null");
                        false
                    } else {
                        true
                    }
                }
            }};
        }
        let fname = self.rng.pick(&FIRST_NAMES);
        let lname = self.rng.pick(&LAST_NAMES);
        if key!("email", 50, 10) {
            let domain = DOMAINS[self.rng.weighted(&self.domains)].0;
            let local: String = format!("{}.{}{}", fname, lname, index % 1000)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase();
            push_json_str(line, &format!("{local}@{domain}"));
        }
        if key!("name", 40, 0) {
            push_json_str(line, &format!("{fname} {lname}"));
        }
        if key!("age", 80, 20) {
            let age = self.rng.range(16, 79);
            let f = self.rng.below(100);
            if f < 85 {
                let _ = write!(line, "{age}");
            } else if f < 98 {
                let _ = write!(line, "\"{age}\"");
            } else {
                line.push_str("\"unknown\"");
            }
        }
        if key!("ltv", 300, 20) {
            let a = self.rng.range(0, 500_000);
            let b = self.rng.range(0, 500_000);
            push_cents(line, a.min(b));
        }
        if key!("is_verified", 100, 10) {
            let v = self.rng.chance(550);
            let f = self.rng.below(100);
            line.push_str(match (v, f < 85, f < 93) {
                (true, true, _) => "true",
                (false, true, _) => "false",
                (true, false, true) => "\"true\"",
                (false, false, true) => "\"False\"",
                (true, false, false) => "\"TRUE\"",
                (false, false, false) => "\"no\"",
            });
        }
        if key!("signed_up_at", 50, 10) {
            let f = self.rng.below(100);
            if f < 70 {
                line.push('"');
                push_rfc3339(line, start - start.rem_euclid(MICROS_PER_SECOND), false, 0);
                line.push('"');
            } else if f < 90 {
                line.push('"');
                push_date(line, start);
                line.push('"');
            } else {
                let _ = write!(line, "{}", start.div_euclid(MICROS_PER_SECOND));
            }
        }
        if key!("plan", 80, 20) {
            push_json_str(line, PLANS[self.rng.weighted(&self.plans)].0);
        }
        if key!("country", 60, 10) {
            push_json_str(line, COUNTRIES[self.rng.weighted(&self.countries)].0);
        }
        if key!("city", 200, 0) {
            push_json_str(line, self.rng.pick(&CITIES));
        }
        if key!("app_version", 150, 10) {
            push_json_str(line, self.rng.pick(&VERSIONS));
        }
        if key!("company_size", 250, 0) {
            let s = self.rng.range(1, 20) * self.rng.range(1, 60);
            let _ = write!(line, "{s}");
        }
        if key!("referrer", 400, 20) {
            push_json_str(line, self.rng.pick(&REFERRERS));
        }
        if key!("utm_source", 700, 30) {
            push_json_str(line, self.rng.pick(&UTM));
        }
        if key!("newsletter", 200, 0) {
            line.push_str(if self.rng.chance(400) {
                "true"
            } else {
                "false"
            });
        }
        if key!("os", 100, 0) {
            push_json_str(line, self.rng.pick(&OSES));
        }
        if key!("score", 300, 0) {
            let s = self.rng.range(-1000, 1000);
            let sign = if s < 0 { "-" } else { "" };
            let _ = write!(line, "{sign}{}.{}", s.abs() / 10, s.abs() % 10);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The wide shape

/// Event names in the wide shape: the fifty common ones, then generated ones.
const WIDE_EVENTS: usize = 200;
const WIDE_PREFIXES: [&str; 6] = [
    "feature_used",
    "button_clicked",
    "page_section_viewed",
    "experiment_exposure",
    "form_submitted",
    "$web_vitals",
];
const HOSTS: [&str; 4] = [
    "https://app.example.com",
    "https://www.example.com",
    "https://eu.example.com",
    "http://localhost:8000",
];
const SECTIONS: [&str; 6] = [
    "insights",
    "dashboard",
    "replay/recent",
    "feature_flags",
    "persons",
    "settings/project",
];
const LIBS: [&str; 5] = [
    "web",
    "posthog-js",
    "posthog-python",
    "posthog-ios",
    "posthog-node",
];
const TAGS: [&str; 6] = [
    "beta",
    "vip",
    "churn-risk",
    "newsletter",
    "Partner",
    "trial",
];

impl Generator {
    /// A wide person: a UUID-like person id and one to four distinct ids unlike it (an anonymous
    /// UUID-like id, an email, a numeric backend id, a device id).
    fn wide_ids(&mut self, index: u64) -> (String, Vec<String>) {
        let uuid = |rng: &mut Rng| {
            let (a, b) = (rng.next_u64(), rng.next_u64());
            format!(
                "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                (b >> 48) | 0x8000,
                b & 0xffff_ffff_ffff
            )
        };
        let id = uuid(&mut self.rng);
        let count = 1 + self.rng.below(4);
        let mut dids = vec![uuid(&mut self.rng)];
        if count > 1 {
            dids.push(format!("user{index}@mail{}.example", index % 7));
        }
        if count > 2 {
            // A numeric id, as an integer-looking string.
            dids.push(format!("{}", 10_000_000 + index * 13));
        }
        if count > 3 {
            dids.push(format!("device:{:016x}", self.rng.next_u64()));
        }
        (id, dids)
    }

    /// Extra person properties of every JSON type (appended after the common ones).
    fn wide_person_properties(&mut self, line: &mut String) {
        use std::fmt::Write as _;
        let sep = |line: &mut String| {
            if !line.ends_with('{') {
                line.push(',');
            }
        };
        sep(line);
        line.push_str("\"tags\":[");
        for k in 0..self.rng.below(4) {
            if k > 0 {
                line.push(',');
            }
            push_json_str(line, self.rng.pick(&TAGS));
        }
        line.push(']');
        if !self.rng.chance(300) {
            sep(line);
            let _ = write!(
                line,
                "\"address\":{{\"city\":\"{}\",\"zip\":{},\"geo\":[{}.{:02},{}.{:02}]}}",
                self.rng.pick(&CITIES),
                self.rng.range(10_000, 99_999),
                self.rng.range(-60, 60),
                self.rng.below(100),
                self.rng.range(-170, 170),
                self.rng.below(100)
            );
        }
        sep(line);
        line.push_str("\"visits\":");
        match self.rng.below(5) {
            0 => line.push_str("null"),
            1 => {
                let _ = write!(line, "\"{}\"", self.rng.below(500));
            }
            2 => line.push_str(if self.rng.chance(500) {
                "true"
            } else {
                "false"
            }),
            _ => {
                let _ = write!(line, "{}", self.rng.below(500));
            }
        }
        sep(line);
        let _ = write!(
            line,
            "\"$initial_referrer\":\"{}/{}?q={:x}\"",
            self.rng.pick(&HOSTS),
            self.rng.pick(&SECTIONS),
            self.rng.next_u64() >> 40
        );
        sep(line);
        let _ = write!(
            line,
            "\"ratio\":{}.{:03}",
            self.rng.below(3),
            self.rng.below(1000)
        );
    }

    /// Extra event properties: URLs, ids, a nested object, a list of objects.
    fn wide_event_properties(
        &mut self,
        line: &mut String,
        name: &str,
        sep: &mut impl FnMut(&mut String),
    ) {
        use std::fmt::Write as _;
        sep(line);
        let _ = write!(
            line,
            "\"$current_url\":\"{}/project/{}/{}/{:x}?utm_source={}&utm_campaign=spring_{}&ref=%2Fhome%3Fa%3D{}\"",
            self.rng.pick(&HOSTS),
            1 + self.rng.below(40),
            self.rng.pick(&SECTIONS),
            self.rng.next_u64() >> 24,
            self.rng.pick(&UTM),
            self.rng.below(30),
            self.rng.below(1000)
        );
        sep(line);
        let _ = write!(line, "\"$session_id\":\"{:016x}\"", self.rng.next_u64());
        sep(line);
        line.push_str("\"$lib\":");
        push_json_str(line, self.rng.pick(&LIBS));
        sep(line);
        let _ = write!(
            line,
            "\"$screen_width\":{}",
            [375, 390, 768, 1280, 1440, 1920][self.rng.below(6) as usize]
        );
        sep(line);
        let _ = write!(
            line,
            "\"$device_id\":\"{:012x}\"",
            self.rng.next_u64() >> 16
        );
        if self.rng.chance(500) {
            sep(line);
            let _ = write!(
                line,
                "\"$referrer\":\"{}/{}\"",
                self.rng.pick(&HOSTS),
                self.rng.pick(&SECTIONS)
            );
        }
        if self.rng.chance(250) {
            sep(line);
            let _ = write!(
                line,
                "\"$set\":{{\"plan\":\"{}\",\"seen\":{},\"flags\":{{\"beta\":{}}}}}",
                PLANS[self.rng.weighted(&self.plans)].0,
                self.rng.below(100),
                self.rng.chance(500)
            );
        }
        if name == "$autocapture" || self.rng.chance(150) {
            sep(line);
            let _ = write!(
                line,
                "\"$elements\":[{{\"tag_name\":\"button\",\"attr__class\":\"btn btn-{}\",\"nth_child\":{}}},{{\"tag_name\":\"div\"}}]",
                self.rng.below(5),
                self.rng.below(9)
            );
        }
        if self.rng.chance(500) {
            sep(line);
            line.push_str("\"is_mobile\":");
            line.push_str(if self.rng.chance(300) {
                "true"
            } else {
                "false"
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cohorts

const COHORT_COUNT: usize = 12;

/// The cohorts, ids 1..=12. Relative dates and windows only, so they fit any `now`.
const COHORTS: &str = r#"[
  {"id": 1, "name": "Paying plans", "is_static": false, "deleted": false,
   "filters": {"properties": {"type": "AND", "values": [
     {"type": "person", "key": "plan", "operator": "exact", "value": ["pro", "enterprise"]}]}}},
  {"id": 2, "name": "Acme staff aged 25 to 45", "filters": {"properties": {"type": "AND", "values": [
     {"type": "person", "key": "email", "operator": "icontains", "value": "@ACME.io"},
     {"type": "person", "key": "age", "operator": "between", "value": [25, 45]}]}}},
  {"id": 3, "name": "Recent signups, valuable or verified", "filters": {"properties": {"type": "AND", "values": [
     {"type": "person", "key": "signed_up_at", "operator": "is_date_after", "value": "-30d"},
     {"type": "OR", "values": [
       {"type": "person", "key": "ltv", "operator": "gt", "value": 1000},
       {"type": "person", "key": "is_verified", "operator": "exact", "value": true}]}]}}},
  {"id": 4, "name": "Webmail a-m with a referrer and no UTM", "filters": {"properties": {"type": "AND", "values": [
     {"type": "person", "key": "email", "operator": "regex", "value": "^[a-m][^@]*@(gmail|yahoo)\\.com$"},
     {"type": "person", "key": "referrer", "operator": "is_set", "value": "is_set"},
     {"type": "person", "key": "utm_source", "operator": "is_not_set", "value": "is_not_set"}]}}},
  {"id": 5, "name": "Modern app in North America, not free", "filters": {"properties": {"type": "AND", "values": [
     {"type": "person", "key": "app_version", "operator": "semver_gte", "value": "2.1.0"},
     {"type": "person", "key": "country", "operator": "in", "value": ["us", "CA"]},
     {"type": "person", "key": "plan", "operator": "is_not", "value": "FREE"}]}}},
  {"id": 6, "name": "Big recent Chrome buyers who browse, not example.com", "filters": {"properties": {"type": "AND", "values": [
     {"type": "behavioral", "key": "purchase", "event_type": "events", "value": "performed_event",
      "time_value": 30, "time_interval": "day",
      "event_filters": [{"type": "event", "key": "amount", "operator": "gt", "value": 50},
                        {"type": "event", "key": "$browser", "operator": "exact", "value": "chrome"}]},
     {"type": "behavioral", "key": "$pageview", "event_type": "events", "value": "performed_event_multiple",
      "operator": "gte", "operator_value": 5, "time_value": 2, "time_interval": "week"},
     {"type": "person", "key": "email", "operator": "icontains", "value": "@example.com", "negation": true}]}}},
  {"id": 7, "name": "Churned valuable users: stopped logging in", "filters": {"properties": {"type": "AND", "values": [
     {"type": "behavioral", "key": "login", "event_type": "events", "value": "stopped_performing_event",
      "time_value": 90, "time_interval": "day", "seq_time_value": 30, "seq_time_interval": "day"},
     {"type": "OR", "values": [
       {"type": "person", "key": "plan", "operator": "exact", "value": "pro"},
       {"type": "person", "key": "plan", "operator": "exact", "value": "Enterprise"},
       {"type": "person", "key": "ltv", "operator": "gte", "value": 500}]}]}}},
  {"id": 8, "name": "Came back after a break", "filters": {"properties": {"type": "AND", "values": [
     {"type": "behavioral", "key": "$pageview", "event_type": "events", "value": "restarted_performing_event",
      "time_value": 2, "time_interval": "month", "seq_time_value": 2, "seq_time_interval": "week"},
     {"type": "person", "key": "country", "operator": "is_not", "value": ["in", "br"]}]}}},
  {"id": 9, "name": "Upgraders: pricing then upgrade within a week, or first upgrade this month", "filters": {"properties": {"type": "OR", "values": [
     {"type": "behavioral", "key": "pricing_viewed", "event_type": "events", "value": "performed_event_sequence",
      "time_value": 6, "time_interval": "month", "seq_event": "upgrade", "seq_event_type": "events",
      "seq_time_value": 7, "seq_time_interval": "day"},
     {"type": "behavioral", "key": "upgrade", "event_type": "events", "value": "performed_event_first_time",
      "time_value": 30, "time_interval": "day",
      "event_filters": [{"type": "event", "key": "amount", "operator": "gte", "value": 20}]}]}}},
  {"id": 10, "name": "Paying, not a recent signup, engaged or German veterans", "filters": {"properties": {"type": "AND", "values": [
     {"type": "cohort", "key": "id", "value": 1},
     {"type": "cohort", "key": "id", "value": 3, "negation": true},
     {"type": "OR", "values": [
       {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event_multiple",
        "operator": "gte", "operator_value": 2, "time_value": 1, "time_interval": "month"},
       {"type": "AND", "values": [
         {"type": "person", "key": "country", "operator": "exact", "value": "de"},
         {"type": "person", "key": "age", "operator": "gte", "value": 40}]}]}]}}},
  {"id": 11, "name": "Regular visitors, verified or newsletter without Twitter", "filters": {"properties": {"type": "AND", "values": [
     {"type": "behavioral", "key": "$pageview", "event_type": "events", "value": "performed_event_regularly",
      "operator": "gte", "operator_value": 2, "time_value": 1, "time_interval": "week",
      "min_periods": 3, "total_periods": 4},
     {"type": "OR", "values": [
       {"type": "person", "key": "is_verified", "operator": "exact", "value": "true"},
       {"type": "AND", "values": [
         {"type": "person", "key": "newsletter", "operator": "exact", "value": true},
         {"type": "person", "key": "referrer", "operator": "icontains", "value": "twitter", "negation": true}]}]}]}}},
  {"id": 12, "name": "Deep mixed tree", "filters": {"properties": {"type": "AND", "values": [
     {"type": "OR", "values": [
       {"type": "AND", "values": [
         {"type": "person", "key": "ltv", "operator": "between", "value": [100, 2000]},
         {"type": "person", "key": "app_version", "operator": "semver_gte", "value": "2.0.0"}]},
       {"type": "AND", "values": [
         {"type": "person", "key": "company_size", "operator": "gt", "value": 200},
         {"type": "person", "key": "name", "operator": "icontains", "value": "AN"}]}]},
     {"type": "OR", "values": [
       {"type": "behavioral", "key": "add_to_cart", "event_type": "events", "value": "performed_event",
        "time_value": 14, "time_interval": "day",
        "event_filters": [{"type": "event", "key": "$browser", "operator": "exact", "value": ["Chrome", "Firefox"]}]},
       {"type": "cohort", "key": "id", "value": 9}]},
     {"type": "behavioral", "key": "cancel", "event_type": "events", "value": "performed_event",
      "time_value": 90, "time_interval": "day", "negation": true}]}}}
]
"#;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{BatchOptions, CohortSet, Dataset, LoadOptions};
    use std::path::PathBuf;

    /// The cohorts and data of a generated directory (all properties kept).
    pub(crate) fn load(dir: &Path) -> (CohortSet, Dataset) {
        let cohorts = std::fs::read_to_string(dir.join("cohorts.json")).unwrap();
        let data = Dataset::from_paths(
            &dir.join("persons.jsonl"),
            Some(&dir.join("events.jsonl")),
            &mut LoadOptions::default(),
        )
        .unwrap();
        (CohortSet::from_json(&cohorts).unwrap(), data)
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "cohort-engine-generate-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn opts(persons: u64, seed: u64) -> GenerateOptions {
        GenerateOptions {
            persons,
            events_per_person: 50,
            seed,
            ..GenerateOptions::default()
        }
    }

    #[test]
    fn default_now_is_2026_11_01() {
        assert_eq!(
            crate::time::parse_absolute("2026-11-01T00:00:00Z"),
            Some(DEFAULT_NOW)
        );
    }

    #[test]
    fn formatting() {
        let mut s = String::new();
        push_rfc3339(&mut s, DEFAULT_NOW + 1_500_000, true, 0);
        assert_eq!(s, "2026-11-01T00:00:01.500000Z");
        s.clear();
        push_rfc3339(&mut s, DEFAULT_NOW, false, -300);
        assert_eq!(s, "2026-10-31T19:00:00-05:00");
        assert_eq!(crate::time::parse_absolute(&s), Some(DEFAULT_NOW));
        s.clear();
        push_cents(&mut s, 5);
        assert_eq!(s, "0.05");
    }

    #[test]
    fn calendar_months() {
        let t = |s| crate::time::parse_absolute(s).unwrap();
        assert_eq!(months_back(DEFAULT_NOW, 2), t("2026-09-01T00:00:00Z"));
        assert_eq!(
            months_back(t("2024-03-31T10:00:00Z"), 1),
            t("2024-02-29T10:00:00Z")
        );
        assert_eq!(
            months_back(t("2024-03-31T10:00:00Z"), 2),
            t("2024-01-31T10:00:00Z")
        );
        assert_eq!(
            months_back(t("2024-01-15T00:00:00Z"), 13),
            t("2022-12-15T00:00:00Z")
        );
        for n in 0..30 {
            assert_eq!(
                months_back(DEFAULT_NOW, n),
                crate::time::back(DEFAULT_NOW, n as u64, crate::time::Unit::Month)
            );
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let (a, b, c) = (tmp("det-a"), tmp("det-b"), tmp("det-c"));
        let sa = generate(&opts(200, 7), &a).unwrap();
        let sb = generate(&opts(200, 7), &b).unwrap();
        let _sc = generate(&opts(200, 8), &c).unwrap();
        assert_eq!(sa, sb);
        for f in ["persons.jsonl", "events.jsonl", "cohorts.json"] {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
                "{f}"
            );
        }
        assert_ne!(
            std::fs::read(a.join("events.jsonl")).unwrap(),
            std::fs::read(c.join("events.jsonl")).unwrap()
        );
        assert_eq!(sa.persons, 200);
        assert!(
            sa.events > 200 * 30 && sa.events < 200 * 80,
            "{}",
            sa.events
        );
        for d in [a, b, c] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn cohorts_load() {
        let set = CohortSet::from_json(COHORTS).unwrap();
        assert_eq!(set.len(), COHORT_COUNT);
        let ids: Vec<_> = set.cohorts().iter().map(|c| c.id).collect();
        assert_eq!(ids, (1..=COHORT_COUNT as i64).collect::<Vec<_>>());
    }

    #[test]
    fn every_cohort_is_selective_at_small_scale() {
        let dir = tmp("small");
        let stats = generate(&opts(300, 42), &dir).unwrap();
        assert_eq!(stats.cohorts, COHORT_COUNT);
        let (set, data) = load(&dir);
        assert_eq!(data.len(), 300);
        assert!(data.skipped_events() > 0 || stats.events < 2000);
        let members = data
            .evaluate(&set, DEFAULT_NOW, &BatchOptions::default())
            .unwrap();
        let sizes: Vec<(i64, usize)> = members.iter().map(|(k, v)| (*k, v.len())).collect();
        for &(id, n) in &sizes {
            assert!(
                (1..300).contains(&n),
                "cohort {id} has {n} of 300 members: {sizes:?}"
            );
        }
        assert_eq!(sizes.len(), COHORT_COUNT);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
