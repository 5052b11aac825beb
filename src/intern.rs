//! Interning of property keys and event names into dense ids, so the hot path compares `u32`s
//! instead of hashing strings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use smallvec::SmallVec;

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
///
/// Every table has an identity ([`Symbols::id`]) that the programs compiled against it carry, so
/// a program is never applied to data interned with another table.
#[derive(Clone, Debug)]
pub struct Symbols {
    /// Property keys.
    pub keys: Interner,
    /// Event names.
    pub events: Interner,
    id: u64,
}

/// The identity of the process-wide table behind every [`crate::Engine`].
const SHARED_ID: u64 = 0;

impl Default for Symbols {
    /// Empty tables with a new identity.
    fn default() -> Symbols {
        static NEXT: AtomicU64 = AtomicU64::new(SHARED_ID + 1);
        Symbols {
            keys: Interner::default(),
            events: Interner::default(),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Symbols {
    /// The table's identity: equal only for the same table (or a copy of it).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// The process-wide, grow-only name tables behind every [`crate::Engine`] (and so every
/// [`crate::Person`] and [`crate::History`] they build). An id, once given to a name, names it for
/// the life of the process, so a person built by one engine stays valid with every later engine
/// — across [`crate::LiveEngine`] updates and unrelated engines alike — with no rebuild and no
/// error path.
///
/// The tables hold every property key and event name that cohort definitions, persons and
/// histories have used in this process; memory grows with that vocabulary (a name's bytes plus
/// about 40 bytes), never with the number of persons or events.
pub(crate) struct SharedNames {
    inner: RwLock<Symbols>,
}

/// The process-wide tables.
pub(crate) fn shared() -> &'static SharedNames {
    static NAMES: OnceLock<SharedNames> = OnceLock::new();
    NAMES.get_or_init(|| SharedNames {
        inner: RwLock::new(Symbols {
            keys: Interner::default(),
            events: Interner::default(),
            id: SHARED_ID,
        }),
    })
}

/// Which table of [`Symbols`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Table {
    Keys,
    Events,
}

impl SharedNames {
    /// Read access (lookups, compilation). Poisoning cannot leave the tables inconsistent (an
    /// intern is one push and one insert), so a poisoned lock is used as it is.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Symbols> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Symbols> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids of `names` in `table`, interning the new ones. One read lock when every name is
    /// known (the steady state); one write lock more otherwise.
    pub(crate) fn resolve<'n>(
        &self,
        table: Table,
        names: impl Iterator<Item = &'n str> + Clone,
    ) -> SmallVec<[Sym; 16]> {
        fn pick(s: &Symbols, table: Table) -> &FnvMap<Box<str>, Sym> {
            match table {
                Table::Keys => &s.keys.map,
                Table::Events => &s.events.map,
            }
        }
        let mut out: SmallVec<[Sym; 16]> = SmallVec::new();
        let mut missing = false;
        {
            let guard = self.read();
            let map = pick(&guard, table);
            for n in names.clone() {
                let s = map.get(n).copied().unwrap_or(Sym::ABSENT);
                missing |= s == Sym::ABSENT;
                out.push(s);
            }
        }
        if missing {
            let mut guard = self.write();
            let t = match table {
                Table::Keys => &mut guard.keys,
                Table::Events => &mut guard.events,
            };
            for (slot, n) in out.iter_mut().zip(names) {
                if *slot == Sym::ABSENT {
                    *slot = t.intern(n);
                }
            }
        }
        out
    }

    /// The shared ids of every name of `table` of `names` (another table, e.g. a dataset's), by
    /// that table's ids: `out[local.0]` is the shared id.
    pub(crate) fn translate(&self, names: &Interner, table: Table) -> Vec<Sym> {
        let mut out = Vec::with_capacity(names.names.len());
        for chunk in names.names.chunks(16) {
            out.extend(self.resolve(table, chunk.iter().map(|n| &**n)));
        }
        out
    }

    /// Interns every name of `names` (the names a cohort set reads) and returns read access, for
    /// compiling against the tables.
    pub(crate) fn intern_all(&self, names: &Symbols) -> RwLockReadGuard<'_, Symbols> {
        let known = {
            let g = self.read();
            names.keys.names.iter().all(|n| g.keys.map.contains_key(n))
                && names
                    .events
                    .names
                    .iter()
                    .all(|n| g.events.map.contains_key(n))
        };
        if !known {
            let mut g = self.write();
            for n in &names.keys.names {
                g.keys.intern(n);
            }
            for n in &names.events.names {
                g.events.intern(n);
            }
        }
        self.read()
    }
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
