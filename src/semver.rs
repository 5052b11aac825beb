//! Semantic-version parsing and the tilde / caret / wildcard ranges of SEMANTICS §B.7 and §G.
//!
//! Range values get the same normalisation as `parse_version` after their operator prefix is
//! removed: the whole text is trimmed, one optional `~` (tilde) or `^` (caret) is removed, and the
//! remainder goes through `parse_version` (which trims again, strips one `v`/`V` and drops any
//! pre-release/build suffix). So `~v1.2.3`, ` ^1.2.3-beta ` and `~ 1.2` are accepted; `~~1` is not.

/// (major, minor, patch)
pub type Version = (u64, u64, u64);

/// Parses a version and also reports how many components (1..=3) were given.
fn parse_with_precision(s: &str) -> Option<(Version, usize)> {
    // Most values need no trimming: skip the Unicode-aware trim when both ends are ASCII
    // non-space bytes.
    let plain = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii() && !b.is_ascii_whitespace());
    let s = if plain(s.as_bytes().first()) && plain(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    };
    let s = s
        .strip_prefix('v')
        .or_else(|| s.strip_prefix('V'))
        .unwrap_or(s);
    // One pass over the bytes: each component is a run of digits (no leading zero unless it is
    // "0"), components are separated by '.', and the first '-' or '+' ends the version (a
    // pre-release or build suffix is ignored).
    let b = s.as_bytes();
    let mut parts = [0u64; 3];
    let mut count = 0usize;
    let mut i = 0usize;
    loop {
        let start = i;
        let mut value = 0u64;
        while i < b.len() && b[i].is_ascii_digit() {
            let d = u64::from(b[i] - b'0');
            // Up to 19 digits cannot overflow; beyond, check.
            value = if i - start < 19 {
                value * 10 + d
            } else {
                value.checked_mul(10)?.checked_add(d)?
            };
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && b[start] == b'0') || count == 3 {
            return None;
        }
        parts[count] = value;
        count += 1;
        match b.get(i) {
            None | Some(b'-') | Some(b'+') => break,
            Some(b'.') => i += 1,
            Some(_) => return None,
        }
    }
    Some(((parts[0], parts[1], parts[2]), count))
}

/// §B.7 parse: trim, strip one leading v/V, drop from the first '-' or '+', split on '.', 1..=3
/// digit-only components without leading zeros, missing parts = 0; anything else → None.
pub fn parse_version(s: &str) -> Option<Version> {
    match parse_plain(s.as_bytes()) {
        Some(v) => Some(v),
        None => parse_with_precision(s).map(|(v, _)| v),
    }
}

/// The common shape only: 1..=3 dot-separated components of 1..=18 digits, no leading zero,
/// nothing before or after. `None` means "not this shape" (the full parse decides), so a
/// `Some` is always what [`parse_with_precision`] would give.
#[inline]
fn parse_plain(b: &[u8]) -> Option<Version> {
    // The finished components live in registers: filling an array by index and reading it
    // whole stalled on store forwarding (a wide load over narrow stores), 40 % of this call.
    let (mut first, mut second) = (0u64, 0u64);
    let (mut k, mut value, mut digits) = (0usize, 0u64, 0u32);
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d < 10 {
            // A second digit after a leading '0', or a 19th digit: leave it to the full parse.
            if (digits == 1 && value == 0) || digits == 18 {
                return None;
            }
            value = value * 10 + u64::from(d);
            digits += 1;
        } else if c == b'.' && digits > 0 && k < 2 {
            if k == 0 {
                first = value;
            } else {
                second = value;
            }
            k += 1;
            (value, digits) = (0, 0);
        } else {
            return None;
        }
    }
    if digits == 0 {
        return None;
    }
    Some(match k {
        0 => (value, 0, 0),
        1 => (first, value, 0),
        _ => (first, second, value),
    })
}

/// Trims, removes one optional `prefix` character, then parses the rest as a version.
fn parse_prefixed(s: &str, prefix: char) -> Option<Version> {
    let s = s.trim();
    parse_version(s.strip_prefix(prefix).unwrap_or(s))
}

/// Half-open range [lo, hi) for semver_tilde: optional leading '~' then a version;
/// [X.Y.Z, X.(Y+1).0); partial versions fill with 0.
pub fn tilde_range(s: &str) -> Option<(Version, Version)> {
    let (x, y, z) = parse_prefixed(s, '~')?;
    Some(((x, y, z), (x, y.checked_add(1)?, 0)))
}

/// semver_caret: optional leading '^'; X>0 → [X.Y.Z, (X+1).0.0); X=0,Y>0 → [0.Y.Z, 0.(Y+1).0);
/// else [0.0.Z, 0.0.(Z+1)).
pub fn caret_range(s: &str) -> Option<(Version, Version)> {
    let (x, y, z) = parse_prefixed(s, '^')?;
    let hi = if x > 0 {
        (x.checked_add(1)?, 0, 0)
    } else if y > 0 {
        (0, y.checked_add(1)?, 0)
    } else {
        (0, 0, z.checked_add(1)?)
    };
    Some(((x, y, z), hi))
}

/// semver_wildcard: strip trailing '*' and '.' chars; the rest must parse as a version (empty →
/// None); X → [X.0.0,(X+1).0.0); X.Y → [X.Y.0, X.(Y+1).0); X.Y.Z → [X.Y.Z, X.Y.(Z+1)).
pub fn wildcard_range(s: &str) -> Option<(Version, Version)> {
    let rest = s.trim().trim_end_matches(['*', '.']);
    if rest.trim().is_empty() {
        return None;
    }
    let ((x, y, z), precision) = parse_with_precision(rest)?;
    let hi = match precision {
        1 => (x.checked_add(1)?, 0, 0),
        2 => (x, y.checked_add(1)?, 0),
        _ => (x, y, z.checked_add(1)?),
    };
    Some(((x, y, z), hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The fast path gives the full parse's answer whenever it answers.
        #[test]
        fn plain_shape_agrees_with_the_full_parse(s in "[0-9.v+ -]{0,24}") {
            if let Some(v) = parse_plain(s.as_bytes()) {
                proptest::prop_assert_eq!(Some(v), parse_with_precision(&s).map(|(v, _)| v));
            }
        }

        /// ... and it does answer for every value of the plain shape.
        #[test]
        fn plain_shape_is_parsed_on_the_fast_path(
            s in "(0|[1-9][0-9]{0,17})([.](0|[1-9][0-9]{0,17})){0,2}"
        ) {
            proptest::prop_assert!(parse_plain(s.as_bytes()).is_some(), "{:?}", s);
            proptest::prop_assert_eq!(parse_plain(s.as_bytes()), parse_version(&s));
        }
    }

    #[test]
    fn plain_shape_defers_the_edge_cases() {
        assert_eq!(parse_plain(b"2.3.1"), Some((2, 3, 1)));
        assert_eq!(parse_plain(b"0.10"), Some((0, 10, 0)));
        for s in [
            "01",
            "1.02",
            "1.",
            ".1",
            "1.2.3.4",
            "1..2",
            "v1",
            " 1",
            "1-a",
            "",
            "1234567890123456789",
        ] {
            assert_eq!(parse_plain(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn parse_accepts() {
        assert_eq!(parse_version("1.2.3"), Some((1, 2, 3)));
        assert_eq!(parse_version("  v1.2.3\n"), Some((1, 2, 3)));
        assert_eq!(parse_version("V1.2.3"), Some((1, 2, 3)));
        assert_eq!(parse_version("1"), Some((1, 0, 0)));
        assert_eq!(parse_version("1.2"), Some((1, 2, 0)));
        assert_eq!(parse_version("0.0.0"), Some((0, 0, 0)));
        assert_eq!(parse_version("10.20.30"), Some((10, 20, 30)));
        assert_eq!(parse_version("1.2.3-beta.1"), Some((1, 2, 3)));
        assert_eq!(parse_version("1.2.3+build.5"), Some((1, 2, 3)));
        assert_eq!(parse_version("1.2-rc1"), Some((1, 2, 0)));
        assert_eq!(parse_version("1.2.3-01.x+y-z"), Some((1, 2, 3)));
        assert_eq!(parse_version("1.2.3 "), Some((1, 2, 3)));
        assert_eq!(parse_version("1.2.3+"), Some((1, 2, 3)));
        assert_eq!(parse_version("0"), Some((0, 0, 0)));
        assert_eq!(
            parse_version("18446744073709551615.0.1"),
            Some((u64::MAX, 0, 1))
        );
    }

    #[test]
    fn parse_rejects() {
        for s in [
            "",
            "   ",
            "v",
            "vv1.2.3",
            "-1.2.3",
            "+1",
            "1.",
            ".1",
            "1..2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "00",
            "1.2.x",
            "1.*",
            "*",
            "a.b.c",
            "1 .2",
            "1.2.3beta",
            "1.2.3_1",
            "+1.2.3",
            "١.2.3",
            "18446744073709551616",
            "1.2.3 -beta",
        ] {
            assert_eq!(parse_version(s), None, "{s:?}");
        }
    }

    #[test]
    fn tilde() {
        assert_eq!(tilde_range("~1.2.3"), Some(((1, 2, 3), (1, 3, 0))));
        assert_eq!(tilde_range("1.2.3"), Some(((1, 2, 3), (1, 3, 0))));
        assert_eq!(tilde_range("~1"), Some(((1, 0, 0), (1, 1, 0))));
        assert_eq!(tilde_range("~1.2"), Some(((1, 2, 0), (1, 3, 0))));
        assert_eq!(tilde_range("~v1.2.3"), Some(((1, 2, 3), (1, 3, 0))));
        assert_eq!(tilde_range(" ~ 0.0.1-alpha "), Some(((0, 0, 1), (0, 1, 0))));
        assert_eq!(tilde_range("~0.0.0"), Some(((0, 0, 0), (0, 1, 0))));
        assert_eq!(
            tilde_range("1.18446744073709551614.7"),
            Some(((1, u64::MAX - 1, 7), (1, u64::MAX, 0)))
        );
        assert_eq!(tilde_range("1.18446744073709551615.7"), None);
        for s in ["~", "", "~~1", "^1.2.3", "~1.*", "~1.2.3.4", "~01"] {
            assert_eq!(tilde_range(s), None, "{s:?}");
        }
    }

    #[test]
    fn caret() {
        assert_eq!(caret_range("^1.2.3"), Some(((1, 2, 3), (2, 0, 0))));
        assert_eq!(caret_range("1.2.3"), Some(((1, 2, 3), (2, 0, 0))));
        assert_eq!(caret_range("^0.2.3"), Some(((0, 2, 3), (0, 3, 0))));
        assert_eq!(caret_range("^0.0.3"), Some(((0, 0, 3), (0, 0, 4))));
        assert_eq!(caret_range("^0.0.0"), Some(((0, 0, 0), (0, 0, 1))));
        assert_eq!(caret_range("^1"), Some(((1, 0, 0), (2, 0, 0))));
        assert_eq!(caret_range("^0"), Some(((0, 0, 0), (0, 0, 1))));
        assert_eq!(caret_range("^0.1"), Some(((0, 1, 0), (0, 2, 0))));
        assert_eq!(caret_range(" ^V2.0.0+meta"), Some(((2, 0, 0), (3, 0, 0))));
        assert_eq!(caret_range("18446744073709551615"), None);
        assert_eq!(caret_range("0.18446744073709551615"), None);
        assert_eq!(caret_range("0.0.18446744073709551615"), None);
        assert_eq!(
            caret_range("1.18446744073709551615.18446744073709551615"),
            Some(((1, u64::MAX, u64::MAX), (2, 0, 0)))
        );
        for s in ["^", "", "^^1", "~1", "^1.x", "^*"] {
            assert_eq!(caret_range(s), None, "{s:?}");
        }
    }

    #[test]
    fn wildcard() {
        assert_eq!(wildcard_range("1.*"), Some(((1, 0, 0), (2, 0, 0))));
        assert_eq!(wildcard_range("1"), Some(((1, 0, 0), (2, 0, 0))));
        assert_eq!(wildcard_range("1.2.*"), Some(((1, 2, 0), (1, 3, 0))));
        assert_eq!(wildcard_range("1.2"), Some(((1, 2, 0), (1, 3, 0))));
        assert_eq!(wildcard_range("1.2.3"), Some(((1, 2, 3), (1, 2, 4))));
        assert_eq!(wildcard_range("1.2.3.*"), Some(((1, 2, 3), (1, 2, 4))));
        assert_eq!(wildcard_range("0.*.*"), Some(((0, 0, 0), (1, 0, 0))));
        assert_eq!(wildcard_range("v1.2.*"), Some(((1, 2, 0), (1, 3, 0))));
        assert_eq!(wildcard_range(" 3.* "), Some(((3, 0, 0), (4, 0, 0))));
        assert_eq!(wildcard_range("1.2-beta.*"), Some(((1, 2, 0), (1, 3, 0))));
        assert_eq!(wildcard_range("18446744073709551615.*"), None);
        assert_eq!(wildcard_range("1.18446744073709551615.*"), None);
        assert_eq!(wildcard_range("1.2.18446744073709551615"), None);
        for s in [
            "*",
            "",
            "**",
            ".*",
            "*.*",
            "1.*.3",
            "*.1",
            "1.2.3.4.*",
            "x.*",
            "01.*",
            "v*",
            " ",
        ] {
            assert_eq!(wildcard_range(s), None, "{s:?}");
        }
    }

    #[test]
    fn no_panics_on_noise() {
        let alphabet = [
            '0', '1', '9', '.', '*', '-', '+', 'v', 'V', '~', '^', ' ', 'é',
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 9) as usize;
            let text: String = (0..len)
                .map(|k| alphabet[((state >> (k * 6)) % alphabet.len() as u64) as usize])
                .collect();
            if let Some(v) = parse_version(&text) {
                assert_eq!(tilde_range(&text).map(|r| r.0), Some(v));
            }
            for (lo, hi) in [
                tilde_range(&text),
                caret_range(&text),
                wildcard_range(&text),
            ]
            .into_iter()
            .flatten()
            {
                assert!(lo < hi, "{text:?}");
            }
        }
    }
}
