//! A set of byte strings kept in one arena: every member's bytes back to back in one buffer, an
//! end offset per member and an open-addressing table of member numbers. Interning a string that
//! is already a member does not allocate, and neither does interning a new one once the buffers
//! have grown to their working size, so a loader thread that clears and reuses one set per block
//! of lines allocates nothing per line in the steady state.
//!
//! Members are numbered densely in insertion order (`0..len`), which makes the set a dictionary:
//! a column stores member numbers, the set stores each distinct value once.

/// Marks an empty slot of the table.
const EMPTY: u32 = u32::MAX;

/// A hash of a byte string, eight bytes at a time (short keys and long URLs alike).
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(tail))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^ (h >> 29)
}

/// A dense, arena-backed set of byte strings (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(crate) struct StrSet {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<u32>,
    /// Member numbers by hash, linear probing; its length is zero or a power of two.
    table: Vec<u32>,
}

impl StrSet {
    /// Number of members.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are no members.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Member `i`'s bytes.
    #[inline]
    pub(crate) fn get(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Member `i` as text (members interned from `&str` are always valid UTF-8).
    #[inline]
    pub(crate) fn get_str(&self, i: u32) -> &str {
        std::str::from_utf8(self.get(i)).unwrap_or_default()
    }

    /// The member number of `bytes`, if it is a member.
    #[inline]
    pub(crate) fn find(&self, bytes: &[u8]) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let h = hash_bytes(bytes);
        let mask = self.table.len() - 1;
        let mut slot = h as usize & mask;
        loop {
            let m = self.table[slot];
            if m == EMPTY {
                return None;
            }
            if self.hashes[m as usize] == (h >> 32) as u32 && self.get(m) == bytes {
                return Some(m);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The member number of `bytes`, adding it when new.
    #[inline]
    pub(crate) fn intern(&mut self, bytes: &[u8]) -> u32 {
        if (self.len() + 1) * 2 > self.table.len() {
            self.grow();
        }
        let h = hash_bytes(bytes);
        let mask = self.table.len() - 1;
        let mut slot = h as usize & mask;
        loop {
            let m = self.table[slot];
            if m == EMPTY {
                break;
            }
            if self.hashes[m as usize] == (h >> 32) as u32 && self.get(m) == bytes {
                return m;
            }
            slot = (slot + 1) & mask;
        }
        let m = self.len() as u32;
        self.bytes.extend_from_slice(bytes);
        self.ends.push(self.bytes.len());
        self.hashes.push((h >> 32) as u32);
        self.table[slot] = m;
        m
    }

    /// Doubles the table and re-inserts every member.
    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(64);
        self.table.clear();
        self.table.resize(size, EMPTY);
        let mask = size - 1;
        for m in 0..self.len() {
            let h = hash_bytes(self.get(m as u32));
            let mut slot = h as usize & mask;
            while self.table[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            self.table[slot] = m as u32;
        }
    }

    /// Empties the set, keeping its buffers for reuse.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.hashes.clear();
        self.table.iter_mut().for_each(|s| *s = EMPTY);
    }

    /// Total length of the members' bytes.
    pub(crate) fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.ends.capacity() * 8
            + self.hashes.capacity() * 4
            + self.table.capacity() * 4
    }

    /// Members in number order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len() as u32).map(move |i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_densely_and_survives_growth_and_clear() {
        let mut s = StrSet::default();
        for round in 0..2 {
            for i in 0..1000u32 {
                assert_eq!(s.intern(format!("value-{i}").as_bytes()), i);
            }
            assert_eq!(s.intern(b"value-17"), 17);
            assert_eq!(s.find(b"value-999"), Some(999));
            assert_eq!(s.find(b"value-1000"), None);
            assert_eq!(s.get(5), b"value-5");
            assert_eq!(s.intern(b""), 1000);
            assert_eq!(s.get(1000), b"");
            assert_eq!(s.len(), 1001, "round {round}");
            s.clear();
            assert_eq!(s.find(b"value-1"), None);
        }
    }

    #[test]
    fn hashes_differ_by_length_and_tail() {
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
        assert_ne!(hash_bytes(b"abcdefgh1"), hash_bytes(b"abcdefgh2"));
    }
}
