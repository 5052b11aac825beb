//! Translation of validated Rust `regex` patterns into RE2 patterns with the same matches
//! (SEMANTICS §H): Unicode `\d` and `\s` are spelt out, constructs RE2 reads differently are
//! refused.

/// Rust's Unicode `White_Space` (what `\s` and `str::trim` use), as RE2 class items.
pub(crate) const WHITE_SPACE_ITEMS: &str =
    r"\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}";

/// RE2's limit on counted repetition.
const MAX_REPEAT: u64 = 1000;

/// Rewrites a pattern the `regex` crate accepted into an RE2 pattern with the same matches, or
/// explains which construct cannot be made equal.
pub(crate) fn to_re2(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    // ClickHouse compiles `match` patterns with RE2's dot_nl: `(?-s)` restores "`.` does not
    // match a newline", the regex crate's default.
    let mut out = String::with_capacity(pattern.len() + 16);
    out.push_str("(?-s)");
    let mut i = 0;
    let refuse = |what: &str, why: &str| -> Result<String, String> {
        Err(format!(
            "regex {pattern:?}: {what} cannot be translated to ClickHouse (RE2): {why}"
        ))
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return refuse("a trailing backslash", "incomplete escape");
                };
                match n {
                    'd' => out.push_str(r"\p{Nd}"),
                    'D' => out.push_str(r"\P{Nd}"),
                    's' => {
                        out.push('[');
                        out.push_str(WHITE_SPACE_ITEMS);
                        out.push(']');
                    }
                    'S' => {
                        out.push_str("[^");
                        out.push_str(WHITE_SPACE_ITEMS);
                        out.push(']');
                    }
                    'w' | 'W' | 'b' | 'B' | '<' | '>' => {
                        return refuse(
                            &format!("\\{n}"),
                            "RE2's word classes and boundaries are ASCII-only, the regex crate's are Unicode",
                        )
                    }
                    'u' | 'U' => {
                        return refuse(&format!("\\{n}"), "RE2 has no \\u / \\U escapes")
                    }
                    'p' | 'P' | 'x' => {
                        // \pL, \p{…}, \x7F, \x{…}: copy the whole escape.
                        out.push('\\');
                        out.push(n);
                        i += 2;
                        if chars.get(i) == Some(&'{') {
                            while i < chars.len() {
                                out.push(chars[i]);
                                i += 1;
                                if chars[i - 1] == '}' {
                                    break;
                                }
                            }
                        } else {
                            let take = if n == 'x' { 2 } else { 1 };
                            for _ in 0..take {
                                if let Some(&ch) = chars.get(i) {
                                    out.push(ch);
                                    i += 1;
                                }
                            }
                        }
                        continue;
                    }
                    _ => {
                        out.push('\\');
                        out.push(n);
                    }
                }
                i += 2;
            }
            '[' => {
                i = class(&chars, i, &mut out, pattern)?;
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                // Flags `(?flags)` / `(?flags:` or a named group.
                let mut j = i + 2;
                if matches!(chars.get(j), Some('P' | '<')) {
                    // Named group: (?P<name>…) or (?<name>…); RE2 reads both.
                    out.push_str("(?");
                    i += 2;
                    continue;
                }
                while j < chars.len() && chars[j] != ')' && chars[j] != ':' {
                    if !matches!(chars[j], 'i' | 'm' | 's' | 'U' | '-') {
                        return refuse(
                            &format!("the flag {:?}", chars[j]),
                            "RE2 supports only the flags i, m, s and U",
                        );
                    }
                    j += 1;
                }
                out.extend(&chars[i..j.min(chars.len())]);
                i = j;
            }
            '{' => {
                // Counted repetition: RE2 refuses counts above 1000.
                let mut j = i + 1;
                let mut num = String::new();
                while j < chars.len() && chars[j] != '}' {
                    num.push(chars[j]);
                    j += 1;
                }
                for part in num.split(',') {
                    if let Ok(n) = part.trim().parse::<u64>() {
                        if n > MAX_REPEAT {
                            return refuse(
                                &format!("the repetition {{{num}}}"),
                                "RE2 allows at most 1000 repetitions",
                            );
                        }
                    }
                }
                out.push('{');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Copies a bracketed class starting at `chars[start] == '['`; returns the index after it.
fn class(chars: &[char], start: usize, out: &mut String, pattern: &str) -> Result<usize, String> {
    let refuse = |what: &str, why: &str| -> Result<usize, String> {
        Err(format!(
            "regex {pattern:?}: {what} cannot be translated to ClickHouse (RE2): {why}"
        ))
    };
    let mut i = start + 1;
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A `]` first in the class is a literal.
    if chars.get(i) == Some(&']') {
        out.push_str(r"\]");
        i += 1;
    }
    while i < chars.len() {
        let c = chars[i];
        match c {
            ']' => {
                out.push(']');
                return Ok(i + 1);
            }
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return refuse("a trailing backslash", "incomplete escape");
                };
                match n {
                    'd' => out.push_str(r"\p{Nd}"),
                    'D' => out.push_str(r"\P{Nd}"),
                    's' => out.push_str(WHITE_SPACE_ITEMS),
                    'S' | 'w' | 'W' | 'b' | 'B' => {
                        return refuse(
                            &format!("\\{n} inside a class"),
                            "RE2's class is ASCII-only and has no Unicode complement to use",
                        )
                    }
                    'u' | 'U' => return refuse(&format!("\\{n}"), "RE2 has no \\u / \\U escapes"),
                    'p' | 'P' | 'x' => {
                        out.push('\\');
                        out.push(n);
                        i += 2;
                        if chars.get(i) == Some(&'{') {
                            while i < chars.len() {
                                out.push(chars[i]);
                                i += 1;
                                if chars[i - 1] == '}' {
                                    break;
                                }
                            }
                        } else {
                            let take = if n == 'x' { 2 } else { 1 };
                            for _ in 0..take {
                                if let Some(&ch) = chars.get(i) {
                                    out.push(ch);
                                    i += 1;
                                }
                            }
                        }
                        continue;
                    }
                    _ => {
                        out.push('\\');
                        out.push(n);
                    }
                }
                i += 2;
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                // POSIX class [:name:] (ASCII in both engines).
                let mut j = i + 2;
                while j + 1 < chars.len() && !(chars[j] == ':' && chars[j + 1] == ']') {
                    j += 1;
                }
                out.extend(&chars[i..(j + 2).min(chars.len())]);
                i = j + 2;
            }
            '[' => {
                return refuse(
                    "a nested character class",
                    "RE2 has no nested classes or class set operations",
                )
            }
            '&' | '-' | '~' if chars.get(i + 1) == Some(&c) => {
                return refuse(
                    &format!("the class operator {c}{c}"),
                    "RE2 has no class set operations",
                )
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    refuse("an unterminated class", "missing ]")
}
