//! Interning of property keys and event names into dense ids, so the hot path compares `u32`s
//! instead of hashing strings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, 64-bit, as a `Hasher`: short names (keys, event names, ids) hash several times faster
/// than with SipHash. It is not DoS-resistant; the tables it serves are filled from the data files
/// and cohort definitions a user loads into their own process.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` keyed by short strings, hashed with [`Fnv`].
pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// A dense id for an interned name. [`Sym::ABSENT`] names nothing in the data: a key that no
/// person has, an event name that no event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub u32);

impl Sym {
    /// The id of a name the data does not contain.
    pub const ABSENT: Sym = Sym(u32::MAX);
}

/// A string → [`Sym`] table.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    map: FnvMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
}

impl Interner {
    /// The id of `name`, adding it when new.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&s) = self.map.get(name) {
            return s;
        }
        let s = Sym(self.names.len() as u32);
        self.names.push(name.into());
        self.map.insert(name.into(), s);
        s
    }

    /// The id of `name`, or [`Sym::ABSENT`] when it was never interned.
    pub fn get(&self, name: &str) -> Sym {
        self.map.get(name).copied().unwrap_or(Sym::ABSENT)
    }

    /// The name of an id.
    pub fn name(&self, s: Sym) -> Option<&str> {
        self.names.get(s.0 as usize).map(|b| &**b)
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The two name tables a program and a store share: property keys (person and event properties
/// alike) and event names.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    /// Property keys.
    pub keys: Interner,
    /// Event names.
    pub events: Interner,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_densely() {
        let mut i = Interner::default();
        assert_eq!(i.intern("a"), Sym(0));
        assert_eq!(i.intern("b"), Sym(1));
        assert_eq!(i.intern("a"), Sym(0));
        assert_eq!(i.get("b"), Sym(1));
        assert_eq!(i.get("zzz"), Sym::ABSENT);
        assert_eq!(i.name(Sym(1)), Some("b"));
        assert_eq!(i.len(), 2);
    }
}
