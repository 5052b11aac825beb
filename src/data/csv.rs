//! Static-cohort CSV uploads, as the cohort API accepts them: a header row, then one member per
//! row in the `person_id` column, else `distinct_id`, else `email` (matched case-insensitively
//! against the person property `email`).

use std::collections::HashMap;

use super::Dataset;
use crate::error::Error;

/// The members a CSV upload names, resolved against a dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsvMembers {
    /// Person ids of the rows that resolved, in row order, without duplicates.
    pub person_ids: Vec<String>,
    /// Rows that resolved to no person (ignored).
    pub unmatched: usize,
}

/// Splits CSV text into records (RFC 4180: quoted fields, `""` escapes, CRLF or LF).
fn records(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut record));
                any = false;
            }
            c => field.push(c),
        }
    }
    if any {
        record.push(field);
        out.push(record);
    }
    out
}

impl Dataset {
    /// Resolves a static-cohort CSV upload against this dataset.
    ///
    /// # Errors
    /// `invalid_input` when there is no header row or it has none of the columns `person_id`,
    /// `distinct_id`, `email`.
    pub fn static_members_from_csv(&self, csv: &str) -> Result<CsvMembers, Error> {
        let rows = records(csv);
        let Some(header) = rows.first() else {
            return Err(Error::input("csv", "a header row is required"));
        };
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let (column, kind) = match (col("person_id"), col("distinct_id"), col("email")) {
            (Some(c), _, _) => (c, 0),
            (None, Some(c), _) => (c, 1),
            (None, None, Some(c)) => (c, 2),
            _ => {
                return Err(Error::input(
                    "csv",
                    "the header needs a person_id, distinct_id or email column",
                ))
            }
        };
        let emails: HashMap<String, usize> = if kind == 2 {
            let key = self.symbols.keys.get("email");
            match self.columns.get(key.0 as usize) {
                Some(col) => col
                    .iter()
                    .map(|(p, v)| (v.with_str(crate::value::lower), p as usize))
                    .collect(),
                None => HashMap::new(),
            }
        } else {
            HashMap::new()
        };
        let mut out = CsvMembers::default();
        let mut seen = std::collections::HashSet::new();
        for row in &rows[1..] {
            let Some(cell) = row.get(column).map(|c| c.trim()) else {
                out.unmatched += 1;
                continue;
            };
            if cell.is_empty() && row.len() == 1 {
                continue; // a blank line
            }
            let person = match kind {
                0 => self.person_index(cell),
                1 => self.distinct_owner(cell),
                _ => emails.get(&crate::value::lower(cell)).copied(),
            };
            match person.and_then(|p| self.person_id(p)) {
                Some(id) => {
                    if seen.insert(id.to_string()) {
                        out.person_ids.push(id.to_string());
                    }
                }
                None => out.unmatched += 1,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_fields() {
        assert_eq!(
            records("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\nlast"),
            vec![vec!["a", "b"], vec!["x,1", "say \"hi\""], vec!["last"]]
        );
    }

    #[test]
    fn resolves_by_column_preference() {
        let d = Dataset::from_jsonl(
            "{\"id\": \"p1\", \"distinct_ids\": [\"d1\"], \"properties\": {\"email\": \"Ada@X.io\"}}\n{\"id\": \"p2\", \"distinct_ids\": [\"d2\"]}\n",
            "",
        )
        .unwrap();
        let m = d
            .static_members_from_csv("email,person_id\nignored,p2\nx,nobody\n")
            .unwrap();
        assert_eq!(m.person_ids, ["p2"]);
        assert_eq!(m.unmatched, 1);
        let m = d
            .static_members_from_csv("distinct_id\nd1\nd2\nd1\nzz\n")
            .unwrap();
        assert_eq!(m.person_ids, ["p1", "p2"]);
        assert_eq!(m.unmatched, 1);
        let m = d.static_members_from_csv("Email\nada@x.IO\n").unwrap();
        assert_eq!(m.person_ids, ["p1"]);
        assert!(d.static_members_from_csv("name\nx\n").is_err());
        assert!(d.static_members_from_csv("").is_err());
    }
}
