//! Short ASCII strings in a register: the single-value string tests (`exact`, `icontains`) on a
//! value of at most 16 ASCII bytes, the common shape of plans, countries and short emails.
//!
//! A value is loaded into two 64-bit words with overlapping reads (no per-byte loop, no copy),
//! lower-cased eight bytes per instruction, then compared with needles packed the same way at
//! compile time.
//! Equality is one comparison per needle; containment finds the positions of the needle's first
//! byte all at once and checks only those. Anything else (longer or non-ASCII values) takes the
//! general path, which decides the same.

/// `b` in every byte of a `u64`.
const fn splat(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

const HIGH: u64 = splat(0x80);

/// An ASCII string of at most 16 bytes, lower-cased, packed little-endian into two words (bytes
/// past its end are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Short {
    lo: u64,
    hi: u64,
    len: usize,
}

#[inline(always)]
fn u32_le(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[inline(always)]
fn u64_le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// ASCII bytes lower-cased, eight at a time: every byte is below 0x80, so the sums never carry
/// into the next byte; a byte's high bit is set in `w + 0x3f` iff it is ≥ 'A', and in `w + 0x25`
/// iff it is > 'Z'.
#[inline(always)]
fn lower_word(w: u64) -> u64 {
    let upper = w.wrapping_add(splat(0x3f)) & !w.wrapping_add(splat(0x25)) & HIGH;
    w | upper >> 2
}

impl Short {
    /// `s` lower-cased and packed, or `None` when it is longer than 16 bytes or not ASCII.
    #[inline(always)]
    pub(crate) fn lower(s: &[u8]) -> Option<Short> {
        let len = s.len();
        // Overlapping reads cover the string: the bytes they share are the same bytes, so OR-ing
        // them together is exact.
        let (lo, hi) = match len {
            0 => (0, 0),
            1..=3 => (
                u64::from(s[0])
                    | u64::from(s[len / 2]) << (8 * (len / 2))
                    | u64::from(s[len - 1]) << (8 * (len - 1)),
                0,
            ),
            4..=8 => (u32_le(s) | u32_le(&s[len - 4..]) << (8 * (len - 4)), 0),
            9..=16 => (u64_le(s), u64_le(&s[len - 8..]) >> (8 * (16 - len))),
            _ => return None,
        };
        if (lo | hi) & HIGH != 0 {
            return None;
        }
        Some(Short {
            lo: lower_word(lo),
            hi: lower_word(hi),
            len,
        })
    }

    /// Equal to `needle`.
    #[inline(always)]
    pub(crate) fn eq(self, needle: Short) -> bool {
        (self.len ^ needle.len) as u64 | (self.lo ^ needle.lo) | (self.hi ^ needle.hi) == 0
    }

    /// Contains `needle`.
    #[inline]
    pub(crate) fn contains(self, needle: &Needle) -> bool {
        let Some(last) = self.len.checked_sub(needle.short.len) else {
            return false;
        };
        let word = u128::from(self.lo) | u128::from(self.hi) << 64;
        // A zero byte of `x` marks a position holding the needle's first byte. The usual test
        // `(x - 1) & !x & 0x80` is exact at the lowest zero byte and may flag bytes above it,
        // so every flagged position is checked in full (and the empty needle is at 0).
        let x = word ^ needle.first;
        let mut starts = x.wrapping_sub(LOW) & !x & (LOW << 7) | needle.empty;
        while starts != 0 {
            let at = starts.trailing_zeros() & !7;
            // Positions ascend; only `0..=last` can start a match.
            if at as usize > 8 * last {
                return false;
            }
            if (word >> at) & needle.mask == needle.word {
                return true;
            }
            starts &= starts - 1;
        }
        false
    }
}

/// `0x01` in every byte of a `u128`.
const LOW: u128 = u128::MAX / 0xff;

/// A [`Short`] needle, with what [`Short::contains`] derives from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needle {
    short: Short,
    word: u128,
    first: u128,
    mask: u128,
    /// Bit 7 when the needle is empty (found at position 0), else 0.
    empty: u128,
}

impl Needle {
    fn new(short: Short) -> Needle {
        let word = u128::from(short.lo) | u128::from(short.hi) << 64;
        Needle {
            short,
            word,
            first: (word & 0xff) * LOW,
            mask: u128::MAX
                .checked_shr(8 * (16 - short.len) as u32)
                .unwrap_or(0),
            empty: if short.len == 0 { 0x80 } else { 0 },
        }
    }

    /// The needle itself, for equality.
    #[inline(always)]
    pub(crate) fn short(&self) -> Short {
        self.short
    }
}

/// The lower-cased needles of an `exact` or `icontains` test, with the ones a short value can
/// match (ASCII, at most 16 bytes) also packed.
#[derive(Clone, Debug)]
pub(crate) struct Needles {
    all: Box<[Box<str>]>,
    short: Box<[Needle]>,
}

impl Needles {
    /// Needles already lower-cased.
    pub(crate) fn new(all: Vec<Box<str>>) -> Needles {
        let short = all
            .iter()
            .filter_map(|n| Short::lower(n.as_bytes()))
            .map(Needle::new)
            .collect();
        Needles {
            all: all.into(),
            short,
        }
    }

    /// Every needle, lower-cased.
    pub(crate) fn all(&self) -> &[Box<str>] {
        &self.all
    }

    /// The needles a short ASCII value can equal or contain: a non-ASCII needle never matches
    /// an ASCII value (it lower-cases to ASCII), nor does one longer than the value.
    #[inline]
    pub(crate) fn short(&self) -> &[Needle] {
        &self.short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(s: &str) -> Option<Short> {
        Short::lower(s.as_bytes())
    }

    #[test]
    fn packs_lower_cased_ascii_up_to_16_bytes() {
        for s in [
            "",
            "a",
            "Ab",
            "ABC",
            "abcD",
            "Hello",
            "@ACME.",
            "abcdefG",
            "ABCDEFGH",
            "x@Y.io",
            "ada@ACME.io",
            "0123456789ABCDEF",
            "[`{@Z]",
            "\0\0A",
        ] {
            let p = short(s).unwrap();
            let mut bytes = [0u8; 16];
            bytes[..s.len()].copy_from_slice(s.to_ascii_lowercase().as_bytes());
            let word = u128::from(p.lo) | u128::from(p.hi) << 64;
            assert_eq!(word, u128::from_le_bytes(bytes), "{s:?}");
            assert_eq!(p.len, s.len());
        }
        assert_eq!(short("0123456789abcdefg"), None);
        assert_eq!(short("é"), None);
        assert_eq!(short("abcdefghijklmné"), None);
    }

    #[test]
    fn eq_and_contains_agree_with_lowercase_then_compare() {
        let words = [
            "",
            "a",
            "A",
            "ab",
            "ba",
            "aab",
            "@acme",
            "ada@ACME.io",
            "ACME",
            "io",
            ".io",
            "o",
            "\0",
            "a\0",
            "\0a",
            "aaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaab",
            "ab\0ab",
            "[b",
            "{B",
            "`d",
            "Pro",
            "pro",
            "enterprise",
            "0123456789abcdef",
            "9abcdef",
            "zzzz@",
        ];
        for hay in words {
            for needle in words {
                let (h, n) = (short(hay).unwrap(), short(&needle.to_lowercase()).unwrap());
                let n = &Needle::new(n);
                let lower = hay.to_ascii_lowercase();
                assert_eq!(
                    h.eq(n.short()),
                    lower == needle.to_lowercase(),
                    "{hay:?} == {needle:?}"
                );
                assert_eq!(
                    h.contains(n),
                    lower.contains(&needle.to_lowercase()),
                    "{hay:?} contains {needle:?}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Random strings over a small alphabet (so matches are frequent), of every length up
        /// to 17, with bytes either side of the letter ranges and NUL.
        #[test]
        fn agree_with_lowercase_then_compare(
            hay in "[aAbB@.zZ\\[`{\\x00]{0,17}",
            needle in "[aAbB@.zZ\\[`{\\x00]{0,17}",
        ) {
            let lower = (hay.to_ascii_lowercase(), needle.to_ascii_lowercase());
            match (short(&hay), short(&lower.1)) {
                (Some(h), Some(n)) => {
                    proptest::prop_assert_eq!(h.eq(n), lower.0 == lower.1);
                    proptest::prop_assert_eq!(h.contains(&Needle::new(n)), lower.0.contains(&lower.1));
                }
                (h, n) => {
                    proptest::prop_assert!(h.is_none() == (hay.len() > 16));
                    proptest::prop_assert!(n.is_none() == (needle.len() > 16));
                }
            }
        }
    }
}
