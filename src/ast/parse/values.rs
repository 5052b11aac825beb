//! Property filters and their values: operators, scalars, numbers, dates, versions, regexes.

use serde_json::{Map, Value};

use super::*;

impl Parser<'_> {
    pub(super) fn string_field(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &JsonPath,
    ) -> Option<String> {
        let p = path.field(key);
        match obj.get(key) {
            Some(Value::String(s)) => self.check_len(s, &p).then(|| s.clone()),
            None | Some(Value::Null) => {
                self.err(&p, "missing: a string is required");
                None
            }
            Some(other) => {
                self.err(&p, format!("expected a string, got {}", show(other)));
                None
            }
        }
    }

    /// A person leaf, or an `event_filters` entry.
    pub(super) fn property_filter(
        &mut self,
        obj: &Map<String, Value>,
        path: &JsonPath,
    ) -> Option<PropertyFilter> {
        let key = self.string_field(obj, "key", path);
        let op_path = path.field("operator");
        let operator = match obj.get("operator") {
            None | Some(Value::Null) => Some(Operator::Exact),
            Some(Value::String(s)) => match Operator::from_wire(s) {
                Some(op) => Some(op),
                None => {
                    let names: Vec<&str> = Operator::ALL.iter().map(|o| o.as_str()).collect();
                    self.err(
                        &op_path,
                        format!(
                            "unknown operator {:?} (expected one of {})",
                            s,
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
            Some(other) => {
                self.err(
                    &op_path,
                    format!("expected an operator name, got {}", show(other)),
                );
                None
            }
        };
        let value = match operator {
            Some(op) => self.filter_value(op, obj.get("value"), &path.field("value")),
            None => None,
        };
        let negation = self.flag(obj, "negation", path, true);
        Some(PropertyFilter {
            key: key?,
            operator: operator?,
            value: value?,
            negation,
            path: path.to_string(),
        })
    }

    pub(super) fn scalar(&mut self, v: &Value, path: &JsonPath) -> Option<Scalar> {
        match v {
            Value::String(s) => self.check_len(s, path).then(|| Scalar::Str(s.clone())),
            Value::Number(n) => Some(Scalar::Num(n.clone())),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            other => {
                self.err(
                    path,
                    format!("expected a string, number or boolean, got {}", show(other)),
                );
                None
            }
        }
    }

    pub(super) fn number(
        &mut self,
        v: &Value,
        path: &JsonPath,
        op: Operator,
    ) -> Option<(f64, Scalar)> {
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => crate::value::numeric_str(s),
            _ => None,
        };
        match n {
            Some(x) => Some((x, self.scalar(v, path)?)),
            None => {
                self.err(
                    path,
                    format!("operator {} needs a number, got {}", op.as_str(), show(v)),
                );
                None
            }
        }
    }

    pub(super) fn filter_value(
        &mut self,
        op: Operator,
        v: Option<&Value>,
        path: &JsonPath,
    ) -> Option<FilterValue> {
        use Operator::*;
        if matches!(op, IsSet | IsNotSet) {
            return Some(FilterValue::None);
        }
        let v = match v {
            None | Some(Value::Null) => {
                self.err(
                    path,
                    format!("missing: operator {} needs a value", op.as_str()),
                );
                return None;
            }
            Some(v) => v,
        };
        match op {
            Exact | IsNot | In | NotIn | IContains | NotIContains | IContainsMulti
            | NotIContainsMulti | Regex | NotRegex => {
                let (items, list) = match v {
                    Value::Array(items) => {
                        if items.len() > self.limits.max_list_len {
                            self.err(
                                path,
                                format!(
                                    "list of {} elements exceeds the limit of {} (max_list_len)",
                                    items.len(),
                                    self.limits.max_list_len
                                ),
                            );
                            return None;
                        }
                        let mut out = Vec::with_capacity(items.len());
                        let mut ok = true;
                        for (i, item) in items.iter().enumerate() {
                            match self.scalar(item, &path.index(i)) {
                                Some(s) => out.push(s),
                                None => ok = false,
                            }
                        }
                        if !ok {
                            return None;
                        }
                        (out, true)
                    }
                    Value::Object(_) => {
                        self.err(
                            path,
                            format!(
                                "operator {} needs a string, number, boolean or a list of them, got {}",
                                op.as_str(),
                                show(v)
                            ),
                        );
                        return None;
                    }
                    scalar => (vec![self.scalar(scalar, path)?], false),
                };
                let mut regexes = Vec::new();
                if matches!(op, Regex | NotRegex) {
                    let mut ok = true;
                    for (i, item) in items.iter().enumerate() {
                        let p = if list { path.index(i) } else { path.clone() };
                        match build_regex(&item.string_form(), self.limits) {
                            Ok(re) => regexes.push(super::CompiledRegex(re)),
                            Err(msg) => {
                                self.err(&p, msg);
                                ok = false;
                            }
                        }
                    }
                    if !ok {
                        return None;
                    }
                }
                Some(FilterValue::Scalars {
                    items,
                    list,
                    regexes,
                })
            }
            Gt | Gte | Lt | Lte | Min | Max => {
                let (x, s) = self.number(v, path, op)?;
                Some(FilterValue::Number(x, s))
            }
            Between | NotBetween => {
                let items = match v {
                    Value::Array(items) if items.len() == 2 => items,
                    other => {
                        self.err(
                            path,
                            format!(
                                "operator {} needs a list [min, max], got {}",
                                op.as_str(),
                                show(other)
                            ),
                        );
                        return None;
                    }
                };
                let lo = self.number(&items[0], &path.index(0), op);
                let hi = self.number(&items[1], &path.index(1), op);
                let ((lo, ls), (hi, hs)) = (lo?, hi?);
                if lo > hi {
                    self.err(
                        path,
                        format!(
                            "operator {}: min {} is greater than max {}",
                            op.as_str(),
                            ls.string_form(),
                            hs.string_form()
                        ),
                    );
                    return None;
                }
                Some(FilterValue::Range(lo, hi, ls, hs))
            }
            IsDateBefore | IsDateAfter | IsDateExact => match v {
                Value::String(s) => match parse_date_spec(s) {
                    Some(d) => Some(FilterValue::Date(d, s.clone())),
                    None => {
                        self.err(path, format!("unparsable date {:?} (expected a relative date such as \"-7d\" or an ISO 8601 date)", s));
                        None
                    }
                },
                other => {
                    self.err(
                        path,
                        format!(
                            "operator {} needs a date string, got {}",
                            op.as_str(),
                            show(other)
                        ),
                    );
                    None
                }
            },
            SemverEq | SemverNeq | SemverGt | SemverGte | SemverLt | SemverLte | SemverTilde
            | SemverCaret | SemverWildcard => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        self.err(
                            path,
                            format!(
                                "operator {} needs a version string, got {}",
                                op.as_str(),
                                show(other)
                            ),
                        );
                        return None;
                    }
                };
                let parsed = match op {
                    SemverTilde => semver::tilde_range(&text)
                        .map(|(l, h)| FilterValue::VersionRange(l, h, text.clone())),
                    SemverCaret => semver::caret_range(&text)
                        .map(|(l, h)| FilterValue::VersionRange(l, h, text.clone())),
                    SemverWildcard => semver::wildcard_range(&text)
                        .map(|(l, h)| FilterValue::VersionRange(l, h, text.clone())),
                    _ => semver::parse_version(&text)
                        .map(|ver| FilterValue::Version(ver, text.clone())),
                };
                if parsed.is_none() {
                    self.err(
                        path,
                        format!("invalid version {:?} for operator {}", text, op.as_str()),
                    );
                }
                parsed
            }
            IsSet | IsNotSet => Some(FilterValue::None),
        }
    }
}

/// Builds a regex under the limits of `CLI.md` §3, or says why it cannot be.
pub(super) fn build_regex(pattern: &str, limits: &Limits) -> Result<regex::Regex, String> {
    if pattern.len() > limits.max_regex_len {
        return Err(format!(
            "regex pattern of {} bytes exceeds the limit of {} bytes (max_regex_len)",
            pattern.len(),
            limits.max_regex_len
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(limits.max_regex_size)
        .dfa_size_limit(crate::limits::REGEX_DFA_SIZE)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!(
                "regex {:?} compiles to more than {limit} bytes (max_regex_size)",
                truncate(pattern)
            ),
            other => format!(
                "invalid regex {:?}: {}",
                truncate(pattern),
                other
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("syntax error")
                    .trim()
            ),
        })
}

pub(super) fn truncate(s: &str) -> &str {
    if s.len() <= 60 {
        return s;
    }
    let mut end = 60;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
