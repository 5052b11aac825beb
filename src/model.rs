//! Stage one: the wire shape of a cohorts file (`CLI.md` §2) — a JSON array of cohort objects or
//! the API's paginated `{"count", "next", "previous", "results": [...]}` — split into cohort
//! objects with their ids. The filter inside each object is left as JSON for [`crate::ast::parse`].

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::{Error, Errors};
use crate::CohortId;

/// One cohort object of a cohorts file, with its checked id.
#[derive(Clone, Debug)]
pub struct RawCohort {
    /// The cohort id (0 ≤ id ≤ 2^63−1).
    pub id: CohortId,
    /// The whole object as sent.
    pub object: Map<String, Value>,
}

/// Splits a parsed cohorts document into cohort objects; `source` names the file in errors.
///
/// # Errors
/// `invalid_input` for a document that is neither a list nor a paginated response, for an element
/// that is not an object with an integer `id`, and for duplicate ids — all of them, in order.
pub fn cohort_objects(doc: Value, source: &str) -> Result<Vec<RawCohort>, Errors> {
    let (items, prefix) = match doc {
        Value::Array(items) => (items, ""),
        Value::Object(mut obj) => match obj.remove("results") {
            Some(Value::Array(items)) => (items, "results"),
            _ => {
                return Err(Error::input(
                    source,
                    "expected a JSON array of cohorts or an object with a \"results\" array",
                )
                .into())
            }
        },
        _ => {
            return Err(Error::input(
                source,
                "expected a JSON array of cohorts or an object with a \"results\" array",
            )
            .into())
        }
    };
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    let mut seen: HashMap<CohortId, usize> = HashMap::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let at = format!("{source}: {prefix}[{index}]");
        let Value::Object(object) = item else {
            errors.push(Error::input(at, "expected a cohort object"));
            continue;
        };
        let id = match object.get("id") {
            Some(Value::Number(n)) => n.as_i64().filter(|i| *i >= 0),
            _ => None,
        };
        let Some(id) = id else {
            let got = object
                .get("id")
                .map_or("nothing".to_string(), Value::to_string);
            errors.push(Error::input(
                at,
                format!("expected an integer \"id\" between 0 and 2^63-1, got {got}"),
            ));
            continue;
        };
        if let Some(first) = seen.insert(id, index) {
            errors.push(Error::input(
                at,
                format!("duplicate cohort id {id} (first at element {first})"),
            ));
            continue;
        }
        out.push(RawCohort { id, object });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Errors(errors))
    }
}

/// Parses cohorts-file text into a JSON document; `source` names the file in errors.
///
/// # Errors
/// `invalid_input` for text that is not JSON (including nesting deeper than 128 levels).
pub fn parse_document(text: &str, source: &str) -> Result<Value, Errors> {
    serde_json::from_str(text).map_err(|e| {
        Error::input(
            format!("{source}:{}", e.line()),
            format!("not valid JSON: {e}"),
        )
        .into()
    })
}
