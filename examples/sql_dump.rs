//! Helper of the SQL differential test (`tests/sql_diff/run.py`).
//!
//! ```text
//! sql_dump sql COHORTS NOW                         # {"id": {"sql": "..."} | {"error": "..."}, ...}
//! sql_dump load COHORTS PERSONS EVENTS OUT_DIR      # the dataset as rows of the SQL schema
//! ```
//!
//! `load` writes `persons.jsonl`, `pdi.jsonl`, `events.jsonl` (timestamps as epoch micros, parsed
//! by the engine's own `time::parse_timestamp`) and `static.jsonl` (static members resolved to
//! person ids: a person id wins over a distinct id; unmatched entries are dropped). Property
//! objects are written as serde_json text.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use cohort_engine::internal::ast::Definition;
use cohort_engine::sql::{cohort_sql, SqlOptions};
use cohort_engine::{time, CohortSet};
use serde_json::{json, Map, Value};

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn props(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(m)) => Value::Object(m.clone()).to_string(),
        _ => Value::Object(Map::new()).to_string(),
    }
}

fn lines(path: &str) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{path}: {e}")))
        .collect()
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("sql") if args.len() == 3 => {
            let text = std::fs::read_to_string(&args[1]).map_err(|e| e.to_string())?;
            let set = CohortSet::from_json(&text).map_err(|e| e.to_string())?;
            let now = time::parse_absolute(&args[2]).ok_or("bad now")?;
            let opts = SqlOptions::new(now);
            let mut out = BTreeMap::new();
            for c in set.cohorts().iter().filter(|c| !c.is_deleted()) {
                let v = match cohort_sql(&set, c.id, &opts) {
                    Ok(sql) => json!({ "sql": sql }),
                    Err(e) => json!({ "error": e.to_string() }),
                };
                out.insert(c.id.to_string(), v);
            }
            println!(
                "{}",
                serde_json::to_string(&out).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Some("load") if args.len() == 5 => {
            let text = std::fs::read_to_string(&args[1]).map_err(|e| e.to_string())?;
            let set = CohortSet::from_json(&text).map_err(|e| e.to_string())?;
            let out = std::path::Path::new(&args[4]);
            std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
            let create = |name: &str| {
                std::fs::File::create(out.join(name))
                    .map(std::io::BufWriter::new)
                    .map_err(|e| e.to_string())
            };
            let (mut pf, mut df, mut ef, mut sf) = (
                create("persons.jsonl")?,
                create("pdi.jsonl")?,
                create("events.jsonl")?,
                create("static.jsonl")?,
            );
            let mut person_ids = HashSet::new();
            let mut distinct: HashMap<String, String> = HashMap::new();
            for p in lines(&args[2])? {
                let id = p
                    .get("id")
                    .filter(|v| !v.is_null())
                    .or_else(|| p.get("uuid"))
                    .and_then(id_string)
                    .ok_or("person without id")?;
                for d in p
                    .get("distinct_ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(d) = id_string(d) {
                        writeln!(df, "{}", json!({"distinct_id": d, "person_id": id}))
                            .map_err(|e| e.to_string())?;
                        distinct.insert(d, id.clone());
                    }
                }
                writeln!(
                    pf,
                    "{}",
                    json!({"person_id": id, "properties": props(p.get("properties"))})
                )
                .map_err(|e| e.to_string())?;
                person_ids.insert(id);
            }
            if args[3] != "-" {
                for e in lines(&args[3])? {
                    let ts = time::parse_timestamp(e.get("timestamp").unwrap_or(&Value::Null))?;
                    let row = json!({
                        "distinct_id": e.get("distinct_id").and_then(id_string).unwrap_or_default(),
                        "event": e.get("event").and_then(Value::as_str).unwrap_or_default(),
                        "ts": ts,
                        "properties": props(e.get("properties")),
                    });
                    writeln!(ef, "{row}").map_err(|e| e.to_string())?;
                }
            }
            for c in set.cohorts() {
                if let Definition::Static(members) = c.definition() {
                    let mut seen = HashSet::new();
                    for m in members {
                        let pid = if person_ids.contains(m) {
                            Some(m.clone())
                        } else {
                            distinct.get(m).cloned()
                        };
                        if let Some(pid) = pid.filter(|p| seen.insert(p.clone())) {
                            writeln!(sf, "{}", json!({"cohort_id": c.id, "person_id": pid}))
                                .map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
            for f in [&mut pf, &mut df, &mut ef, &mut sf] {
                f.flush().map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        _ => Err(
            "usage: sql_dump sql COHORTS NOW | sql_dump load COHORTS PERSONS EVENTS|- OUT_DIR"
                .into(),
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
