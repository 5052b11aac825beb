//! A fixed-length bitset over person indices, with word-wise boolean operations: the batch
//! evaluator's unit of work (one per cohort and per group result).

/// A set of person indices `0..len`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
    len: usize,
}

impl Bitset {
    /// The empty set over `len` persons.
    pub fn zeros(len: usize) -> Bitset {
        Bitset {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// The full set over `len` persons.
    pub fn ones(len: usize) -> Bitset {
        let mut b = Bitset {
            words: vec![u64::MAX; len.div_ceil(64)],
            len,
        };
        b.clear_tail();
        b
    }

    fn clear_tail(&mut self) {
        let rem = self.len % 64;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
    }

    /// Number of persons the set ranges over.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set ranges over no persons.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no bit is set.
    pub fn none(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Number of members.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Is `i` a member?
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    /// Adds or removes `i`. Out of range (`i >= len`): nothing.
    #[inline]
    pub fn set(&mut self, i: usize, value: bool) {
        if i >= self.len {
            return;
        }
        if let Some(w) = self.words.get_mut(i / 64) {
            let bit = 1u64 << (i % 64);
            if value {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// Adds `i` if `hit`, without a branch on `hit` (for results that go either way as often);
    /// never removes it. Out of range: nothing.
    #[inline]
    pub fn insert_if(&mut self, i: usize, hit: bool) {
        if i >= self.len {
            return;
        }
        if let Some(w) = self.words.get_mut(i / 64) {
            *w |= (hit as u64) << (i % 64);
        }
    }

    /// self ∩= other
    pub fn and_assign(&mut self, other: &Bitset) {
        self.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a &= b);
    }

    /// self ∪= other
    pub fn or_assign(&mut self, other: &Bitset) {
        self.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a |= b);
    }

    /// self −= other
    pub fn and_not_assign(&mut self, other: &Bitset) {
        self.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a &= !b);
    }

    /// Clears every bit outside `range`.
    pub(crate) fn retain_range(&mut self, range: std::ops::Range<usize>) {
        let (lo, hi) = (range.start, range.end);
        for (w, word) in self.words.iter_mut().enumerate() {
            let first = w * 64;
            if first + 64 <= lo || first >= hi {
                *word = 0;
            } else {
                let from = lo.saturating_sub(first);
                let to = (hi - first).min(64);
                *word &= (u64::MAX >> (64 - (to - from))) << from;
            }
        }
    }

    /// The raw words (bit i of word w is person 64·w + i).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The raw words, to set bits in bulk (bits at or past `len` must stay clear).
    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// Members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        Ones::new(&self.words[..])
    }

    /// Members in ascending order, the iterator owning the set.
    pub(crate) fn into_ones(self) -> Ones<Vec<u64>> {
        Ones::new(self.words)
    }
}

/// The set bits of a run of words in ascending order (bit i of word w is 64·w + i), borrowed
/// or owned.
#[derive(Clone, Debug)]
pub(crate) struct Ones<W> {
    words: W,
    /// The word being read, and what is left of it.
    at: usize,
    word: u64,
}

impl<W: AsRef<[u64]>> Ones<W> {
    /// The set bits of `words`, counted from the first word's bit 0.
    pub(crate) fn new(words: W) -> Ones<W> {
        let word = words.as_ref().first().copied().unwrap_or(0);
        Ones { words, at: 0, word }
    }
}

impl<W: AsRef<[u64]>> Iterator for Ones<W> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.word == 0 {
            self.at += 1;
            self.word = *self.words.as_ref().get(self.at)?;
        }
        let bit = self.word.trailing_zeros() as usize;
        self.word &= self.word - 1;
        Some(self.at * 64 + bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations() {
        let mut a = Bitset::ones(70);
        assert_eq!(a.count(), 70);
        let mut b = Bitset::zeros(70);
        b.set(3, true);
        b.set(69, true);
        assert_eq!(b.iter().collect::<Vec<_>>(), [3, 69]);
        // insert_if adds on true, leaves members on false, ignores out of range.
        let mut c = b.clone();
        c.insert_if(64, true);
        c.insert_if(3, false);
        c.insert_if(5, false);
        c.insert_if(70, true);
        c.set(70, true);
        assert_eq!(c.iter().collect::<Vec<_>>(), [3, 64, 69]);
        assert_eq!(c.count(), 3);
        a.and_not_assign(&b);
        assert_eq!(a.count(), 68);
        assert!(!a.get(69) && a.get(68));
        a.and_assign(&b);
        assert!(a.none());
        a.or_assign(&b);
        assert_eq!(a, b);
        assert!(!b.get(1000));
    }
}
