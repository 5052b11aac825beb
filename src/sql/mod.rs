//! The SQL back end: compiles a validated cohort to one ClickHouse `SELECT` returning its members'
//! person ids, with the semantics of the in-memory evaluator (SEMANTICS.md, §H for the places
//! where ClickHouse needs help).
//!
//! The schema (table names configurable through [`Tables`]):
//!
//! ```sql
//! persons(person_id String, properties String /* JSON object */)
//! person_distinct_ids(distinct_id String, person_id String)
//! events(distinct_id String, event String, timestamp DateTime64(6, 'UTC'), properties String /* JSON */)
//! static_cohort_members(cohort_id Int64, person_id String)  -- static members resolved to person ids
//! ```
//!
//! How the semantics are kept:
//! - Property values are read from the JSON text with `JSONType`/`JSONExtract*`; a property is
//!   missing when the key is absent or null. The §B.1 string form is rebuilt in SQL: integers as
//!   digits, floats in serde_json's Display form (from ClickHouse's shortest digits), booleans as
//!   `true`/`false`. Numeric strings follow `str::parse::<f64>`'s grammar and are parsed as
//!   correctly rounded doubles. Case-insensitive comparisons use `lowerUTF8` (with `Σ` mapped to
//!   `σ` first, since ICU applies the final-sigma rule and `char::to_lowercase` does not).
//! - Every instant (windows, relative dates, calendar months with end-of-month clamping) is
//!   computed here from [`SqlOptions::now`] and emitted as a literal, so ClickHouse's `now()` and
//!   interval arithmetic are never used, except `addMonths` for the per-event window of a
//!   calendar-unit `performed_event_sequence` (which clamps like `time::forward`).
//! - Regex patterns are translated to RE2: `\d` → `\p{Nd}`, `\s` → Rust's Unicode white space.
//!
//! What is refused (an `invalid_filter` [`Error`] naming the construct, never different members):
//! regex patterns with `\w`, `\W`, `\b`, `\B`, `\<`, `\>` (RE2's are ASCII-only), `\S`/`\w` inside a
//! class, nested classes and class set operations, the flags `x`, `u`, `R`, `\u` escapes, counted
//! repetition above 1000; `exact`/`is_not`/`in`/`not_in` values whose string form starts with `[`
//! or `{` (they could only equal an array or object, whose key order and number formatting
//! ClickHouse does not keep); a calendar-unit sequence window that would reach past year 9999.
//!
//! Known limits of the JSON text itself (not of the filters, so they cannot be refused): an
//! integer literal beyond the u64 range (serde_json reads a float, ClickHouse a string), `-0`
//! (serde_json: float `-0.0`, ClickHouse: integer 0), and arrays or objects under string operators
//! (their string form is ClickHouse's compact JSON, which keeps the document's key order and
//! prints integral floats without `.0`). Data written by serde_json (or any writer that prints
//! floats with a fraction or exponent) avoids the first two.

mod expr;
mod regex;

use std::collections::HashSet;

pub use expr::{quote_ident, quote_string};

use crate::ast::{
    Behavior, BehavioralLeaf, CohortLeaf, CountOp, Definition, FilterValue, Group, GroupOp, Leaf,
    Node, Operator, PropertyFilter, Scalar, Since, Span,
};
use crate::error::Error;
use crate::set::CohortSet;
use crate::time::{back, forward, Micros, Unit, MAX_MICROS, NEG_INF, POS_INF};
use crate::value::lower;
use crate::CohortId;

use expr::{float_lit, micros_lit, ts_cmp, version_lit, Prop};

/// The names of the four tables the generated SQL reads (each may be `database.table`). Start
/// from [`Tables::default`] and set the fields that differ.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tables {
    /// `persons(person_id String, properties String)`.
    pub persons: String,
    /// `person_distinct_ids(distinct_id String, person_id String)`.
    pub person_distinct_ids: String,
    /// `events(distinct_id String, event String, timestamp DateTime64(6, 'UTC'), properties String)`.
    pub events: String,
    /// `static_cohort_members(cohort_id Int64, person_id String)`.
    pub static_cohort_members: String,
}

impl Default for Tables {
    /// `persons`, `person_distinct_ids`, `events`, `static_cohort_members`.
    fn default() -> Tables {
        Tables {
            persons: "persons".into(),
            person_distinct_ids: "person_distinct_ids".into(),
            events: "events".into(),
            static_cohort_members: "static_cohort_members".into(),
        }
    }
}

/// Options of the SQL generator: [`SqlOptions::new`], then set the fields that differ.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlOptions {
    /// Table names.
    pub tables: Tables,
    /// The evaluation instant (microseconds since the epoch, UTC): every window and relative date
    /// is computed from it, and events after it are never counted.
    pub now: i64,
}

impl SqlOptions {
    /// Default table names and the given `now`.
    pub fn new(now: impl Into<crate::Timestamp>) -> SqlOptions {
        SqlOptions {
            tables: Tables::default(),
            now: now.into().as_micros(),
        }
    }

    /// These table names instead of the defaults.
    pub fn with_tables(mut self, tables: Tables) -> SqlOptions {
        self.tables = tables;
        self
    }
}

/// Compiles cohort `id` of `set` to one ClickHouse `SELECT person_id FROM …` returning its members.
/// The cohorts it references are computed in the same pass, as columns `cohort_<id>` in
/// dependency order (so a reference is an expression, not a sub-query).
///
/// # Errors
/// `unknown_cohort` when `id` is absent or deleted; `invalid_filter` naming the construct when a
/// filter (of the cohort or of one it references) cannot be expressed with the same semantics in
/// ClickHouse (see the module documentation).
pub fn cohort_sql(set: &CohortSet, id: CohortId, opts: &SqlOptions) -> Result<String, Error> {
    match set.get(id) {
        Some(c) if !c.is_deleted() => {}
        _ => {
            return Err(Error::missing(
                id,
                format!("cohort {id} is not in the set (or is deleted)"),
            ))
        }
    }
    let gen = Gen { set, opts };
    let deps: HashSet<CohortId> = set.dependencies(id).into_iter().collect();
    let mut columns = Vec::new();
    for &pos in set.evaluation_order() {
        let c = &set.cohorts()[pos];
        if deps.contains(&c.id) && !c.is_deleted() {
            columns.push(format!("({}) AS cohort_{}", gen.condition(c.id)?, c.id));
        }
    }
    columns.push(format!("({}) AS is_member", gen.condition(id)?));
    Ok(format!(
        "SELECT person_id FROM (\nSELECT p.person_id AS person_id,\n{}\nFROM {} AS p\n) WHERE is_member",
        columns.join(",\n"),
        quote_ident(&opts.tables.persons)
    ))
}

struct Gen<'a> {
    set: &'a CohortSet,
    opts: &'a SqlOptions,
}

/// A SQL boolean that is never NULL.
type Sql = String;

fn not(e: &str) -> Sql {
    format!("NOT ({e})")
}

impl Gen<'_> {
    fn t(&self, name: &str) -> String {
        quote_ident(name)
    }

    fn now(&self) -> Micros {
        self.opts.now
    }

    /// Membership of one non-deleted cohort as a boolean over the row `p` of persons (the
    /// cohorts it references are columns `cohort_<id>` by then).
    fn condition(&self, id: CohortId) -> Result<String, Error> {
        let Some(c) = self.set.get(id) else {
            return Err(Error::missing(id, format!("cohort {id} is not in the set")));
        };
        Ok(match &c.definition {
            Definition::Dynamic(g) => self.group(g).map_err(|(path, msg)| {
                Error::filter(
                    id,
                    path,
                    format!("not supported by the ClickHouse SQL back end: {msg}"),
                )
            })?,
            Definition::Static(_) => format!(
                "p.person_id IN (SELECT s.person_id FROM {} AS s WHERE s.cohort_id = {id})",
                self.t(&self.opts.tables.static_cohort_members)
            ),
            Definition::Deleted => "0".into(),
        })
    }

    fn group(&self, g: &Group) -> Result<Sql, (String, String)> {
        let parts = g
            .children
            .iter()
            .map(|n| self.node(n))
            .collect::<Result<Vec<_>, _>>()?;
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().unwrap_or_default());
        }
        let op = match g.op {
            GroupOp::And => " AND ",
            GroupOp::Or => " OR ",
        };
        Ok(format!(
            "({})",
            parts
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(op)
        ))
    }

    fn node(&self, n: &Node) -> Result<Sql, (String, String)> {
        match n {
            Node::Group(g) => self.group(g),
            Node::Leaf(Leaf::Person(p)) => {
                property("p.properties", p, self.now()).map_err(|m| (p.path.clone(), m))
            }
            Node::Leaf(Leaf::Behavioral(b)) => {
                let sub = self.behavioral(b).map_err(|m| (b.path.clone(), m))?;
                let e = format!("p.person_id IN (\n{sub}\n)");
                Ok(if b.negation { not(&e) } else { e })
            }
            Node::Leaf(Leaf::Cohort(c)) => Ok(self.cohort_leaf(c)),
        }
    }

    fn cohort_leaf(&self, c: &CohortLeaf) -> Sql {
        let member = match self.set.get(c.target) {
            Some(t) if !t.is_deleted() => format!("cohort_{}", c.target),
            _ => "0".into(),
        };
        let r = if c.not_in { not(&member) } else { member };
        if c.negation {
            not(&r)
        } else {
            r
        }
    }

    /// `FROM events JOIN person_distinct_ids`: the events of known distinct ids with their person.
    fn events_from(&self) -> String {
        format!(
            "FROM {} AS e INNER JOIN {} AS pdi ON e.distinct_id = pdi.distinct_id",
            self.t(&self.opts.tables.events),
            self.t(&self.opts.tables.person_distinct_ids)
        )
    }

    /// The person ids for which a behavioral leaf holds (before its negation).
    fn behavioral(&self, b: &BehavioralLeaf) -> Result<String, String> {
        let now = self.now();
        let name = format!("e.event = {}", quote_string(&b.event));
        let mut matching = vec![name.clone()];
        for f in &b.event_filters {
            matching.push(format!("({})", property("e.properties", f, now)?));
        }
        let matching = matching.join(" AND ");
        let from = self.events_from();
        let ts = "e.timestamp";
        let since = |s: &Since| match s {
            Since::Back(span) => back(now, span.n, span.unit),
            Since::Explicit(d, _) => d.resolve(now),
        };
        let window = |lo: Micros, lo_op: &str, hi: Micros, hi_op: &str| {
            format!("{} AND {}", ts_cmp(ts, lo_op, lo), ts_cmp(ts, hi_op, hi))
        };
        Ok(match &b.behavior {
            Behavior::PerformedEvent { since: s } => format!(
                "SELECT DISTINCT pdi.person_id {from} WHERE {matching} AND {}",
                window(since(s), ">", now, "<")
            ),
            Behavior::PerformedEventMultiple {
                since: s,
                op,
                value,
            } => format!(
                "SELECT pdi.person_id {from} WHERE {matching} AND {} GROUP BY pdi.person_id HAVING count() {} {value}",
                window(since(s), ">", now, "<"),
                count_op(*op)
            ),
            Behavior::PerformedEventFirstTime { time } => {
                let t = back(now, time.n, time.unit);
                format!(
                    "SELECT pdi.person_id {from} WHERE {matching} GROUP BY pdi.person_id HAVING {} AND {}",
                    ts_cmp("min(e.timestamp)", ">=", t),
                    ts_cmp("min(e.timestamp)", "<", now)
                )
            }
            Behavior::StoppedPerformingEvent { time, seq } => {
                let (t, s) = (back(now, time.n, time.unit), back(now, seq.n, seq.unit));
                format!(
                    "SELECT pdi.person_id {from} WHERE {matching} GROUP BY pdi.person_id \
                     HAVING countIf({}) > 0 AND countIf({}) = 0",
                    window(t, ">", s, "<="),
                    window(s, ">", now, "<=")
                )
            }
            Behavior::RestartedPerformingEvent { time, seq } => {
                let (t, s) = (back(now, time.n, time.unit), back(now, seq.n, seq.unit));
                format!(
                    "SELECT pdi.person_id {from} WHERE {matching} GROUP BY pdi.person_id \
                     HAVING countIf({}) > 0 AND countIf({}) = 0 AND countIf({}) > 0",
                    ts_cmp(ts, "<=", t),
                    window(t, ">", s, "<="),
                    window(s, ">", now, "<=")
                )
            }
            Behavior::PerformedEventSequence {
                time,
                seq_event,
                seq,
            } => {
                let t = back(now, time.n, time.unit);
                let within = self.within(t, *seq)?;
                let us = "toUnixTimestamp64Micro(e.timestamp)";
                format!(
                    "SELECT person_id FROM (SELECT pdi.person_id AS person_id, \
                     groupArrayIf({us}, {matching}) AS t0, groupArrayIf({us}, e.event = {s1}) AS t1 \
                     {from} WHERE (e.event = {s0} OR e.event = {s1}) AND {} GROUP BY pdi.person_id) \
                     WHERE arrayExists(a -> arrayExists(b -> b > a AND ({within}), t1), t0)",
                    window(t, ">", now, "<="),
                    s0 = quote_string(&b.event),
                    s1 = quote_string(seq_event),
                )
            }
            Behavior::PerformedEventRegularly {
                time,
                op,
                value,
                min_periods,
                total_periods,
            } => {
                let bounds: Vec<Micros> = (1..=*total_periods)
                    .map(|k| back(now, time.n.saturating_mul(k), time.unit))
                    .collect();
                let last = bounds.last().copied().unwrap_or(now);
                let list = bounds
                    .iter()
                    .map(|&b| micros_lit(b))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "SELECT person_id FROM (SELECT pdi.person_id AS person_id, \
                     groupArray(arrayCount(x -> toUnixTimestamp64Micro(e.timestamp) <= x, [{list}])) AS ks \
                     {from} WHERE {matching} AND {} GROUP BY pdi.person_id) \
                     WHERE arrayCount(k -> countEqual(ks, k) {} {value}, range({total_periods})) >= {min_periods}",
                    window(last, ">", now, "<="),
                    count_op(*op),
                )
            }
        })
    }

    /// The condition `b <= forward(a, seq)` on micros `a`, `b` (both in `(t, now]`).
    fn within(&self, t: Micros, seq: Span) -> Result<String, String> {
        let now = self.now();
        // forward is monotone: when even the earliest possible first step reaches now, every
        // second step qualifies.
        if t != NEG_INF && forward(t, seq.n, seq.unit) >= now {
            return Ok("1".into());
        }
        let secs: i64 = match seq.unit {
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month | Unit::Year => {
                let end = forward(now, seq.n, seq.unit);
                if end == POS_INF || end > MAX_MICROS {
                    return Err(format!(
                        "performed_event_sequence: a window of {} {} after an event can reach past \
                         year 9999, where ClickHouse's date arithmetic does not follow the calendar",
                        seq.n,
                        seq.unit.as_str()
                    ));
                }
                let months = if seq.unit == Unit::Year {
                    seq.n.saturating_mul(12)
                } else {
                    seq.n
                };
                return Ok(format!(
                    "b <= toUnixTimestamp64Micro(addMonths(fromUnixTimestamp64Micro(a, 'UTC'), {months}))"
                ));
            }
        };
        // Exact in Int128: a + n·unit, beyond year 9999 it exceeds every stored b.
        let w = i128::from(secs) * 1_000_000 * i128::from(seq.n);
        Ok(format!("toInt128(b) <= toInt128(a) + toInt128('{w}')"))
    }
}

fn count_op(op: CountOp) -> &'static str {
    match op {
        CountOp::Eq => "=",
        CountOp::Gt => ">",
        CountOp::Gte => ">=",
        CountOp::Lt => "<",
        CountOp::Lte => "<=",
    }
}

/// A property condition (person leaf or event filter) on the JSON column `col`, `negation`
/// included; relative dates are resolved from `now`.
fn property(col: &str, f: &PropertyFilter, now: Micros) -> Result<Sql, String> {
    use Operator::*;
    let p = Prop::new(col, &f.key);
    let invert = matches!(
        f.operator,
        IsNot | NotIn | NotIContains | NotIContainsMulti | NotRegex | IsNotSet
    );
    let missing = f.operator.missing_result();
    let test: Sql = match (&f.value, f.operator) {
        (_, IsSet | IsNotSet) => "1".into(),
        (FilterValue::Scalars { items, .. }, Exact | IsNot | In | NotIn) => exact(&p, items, f)?,
        (
            FilterValue::Scalars { items, .. },
            IContains | NotIContains | IContainsMulti | NotIContainsMulti,
        ) => {
            if items.is_empty() {
                "0".into()
            } else {
                let hay = p.lower_string_form();
                let ors: Vec<String> = items
                    .iter()
                    .map(|s| {
                        let needle = lower(&s.string_form());
                        format!("position({hay}, {}) > 0", quote_string(&needle))
                    })
                    .collect();
                format!("({})", ors.join(" OR "))
            }
        }
        (FilterValue::Scalars { items, .. }, Regex | NotRegex) => {
            if items.is_empty() {
                "0".into()
            } else {
                let hay = p.string_form();
                let ors = items
                    .iter()
                    .map(|s| {
                        let re = regex::to_re2(&s.string_form())?;
                        Ok(format!("match({hay}, {})", quote_string(&re)))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                format!("({})", ors.join(" OR "))
            }
        }
        (FilterValue::Number(x, _), op) => {
            let o = match op {
                Gt => ">",
                Gte | Min => ">=",
                Lt => "<",
                _ => "<=",
            };
            format!("ifNull({} {o} {}, 0)", p.number(), float_lit(*x))
        }
        (FilterValue::Range(lo, hi, ..), Between) => format!(
            "ifNull(arrayMap(v -> v >= {} AND v <= {}, [{}])[1], 0)",
            float_lit(*lo),
            float_lit(*hi),
            p.number()
        ),
        (FilterValue::Range(lo, hi, ..), _) => format!(
            "ifNull(arrayMap(v -> v < {} OR v > {}, [{}])[1], 0)",
            float_lit(*lo),
            float_lit(*hi),
            p.number()
        ),
        (FilterValue::Date(d, _), op) => {
            let f_instant = d.resolve(now);
            let o = match op {
                IsDateBefore => "<",
                IsDateAfter => ">",
                _ => "=",
            };
            format!("ifNull({} {o} {}, 0)", p.date(), micros_lit(f_instant))
        }
        (FilterValue::Version(v, _), op) => {
            let o = match op {
                SemverEq => "=",
                SemverNeq => "!=",
                SemverGt => ">",
                SemverGte => ">=",
                SemverLt => "<",
                _ => "<=",
            };
            let lit = version_lit(*v);
            expr::semver_test(&p.string_form(), &|t| format!("{t} {o} {lit}"))
        }
        (FilterValue::VersionRange(lo, hi, _), _) => {
            let (lo, hi) = (version_lit(*lo), version_lit(*hi));
            expr::semver_test(&p.string_form(), &|t| format!("{t} >= {lo} AND {t} < {hi}"))
        }
        (v, op) => {
            return Err(format!(
                "operator {} with value {v:?} is not supported",
                op.as_str()
            ))
        }
    };
    let test = if invert { not(&test) } else { test };
    let present = p.present();
    let r = if missing {
        format!("(NOT {present} OR ({test}))")
    } else {
        format!("({present} AND ({test}))")
    };
    Ok(if f.negation { not(&r) } else { r })
}

/// `exact` with its boolean, list and scalar modes (§B.3).
fn exact(p: &Prop, items: &[Scalar], f: &PropertyFilter) -> Result<Sql, String> {
    if let Some(t) = crate::ast::boolean_target(items) {
        return Ok(format!(
            "{} = '{}'",
            p.lower_string_form(),
            if t { "true" } else { "false" }
        ));
    }
    if items.is_empty() {
        return Ok("0".into());
    }
    let mut needles = Vec::with_capacity(items.len());
    for s in items {
        let n = lower(&s.string_form());
        if n.starts_with('[') || n.starts_with('{') {
            return Err(format!(
                "{} with the value {:?}: it could only equal a JSON array or object, whose string \
                 form ClickHouse does not reproduce (key order, number formatting)",
                f.operator.as_str(),
                s.string_form()
            ));
        }
        needles.push(quote_string(&n));
    }
    Ok(format!(
        "{} IN ({})",
        p.lower_string_form(),
        needles.join(", ")
    ))
}
