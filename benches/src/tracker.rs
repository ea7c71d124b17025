//! Which sequence numbers arrived: one bit per message per (publisher, subscriber), from
//! which loss, duplicates and reordering are counted after the run.

/// A growable bitset of sequence numbers. A bit per message keeps even a long run's
/// bookkeeping to a few MB, and makes unions (shared groups) and differences (acked but
/// not delivered) word-wide operations.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    count: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was already there.
    pub fn insert(&mut self, seq: u32) -> bool {
        let (w, bit) = (seq as usize / 64, 1u64 << (seq % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let new = self.words[w] & bit == 0;
        self.words[w] |= bit;
        self.count += u64::from(new);
        new
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn contains(&self, seq: u32) -> bool {
        let (w, bit) = (seq as usize / 64, 1u64 << (seq % 64));
        self.words.get(w).is_some_and(|word| word & bit != 0)
    }

    /// A bound above every member: `seq < end()` for all of them.
    pub fn end(&self) -> u32 {
        (self.words.len() * 64).min(u32::MAX as usize) as u32
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds every member of `other`; returns how many were already here.
    pub fn union_with(&mut self, other: &SeqSet) -> u64 {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        let mut overlap = 0;
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            overlap += u64::from((*mine & theirs).count_ones());
            *mine |= theirs;
        }
        self.count += other.count - overlap;
        overlap
    }

    /// Members of `self` that are not in `other`.
    pub fn count_missing_from(&self, other: &SeqSet) -> u64 {
        let theirs = other.words.iter().copied().chain(std::iter::repeat(0));
        self.words
            .iter()
            .zip(theirs)
            .map(|(mine, theirs)| u64::from((mine & !theirs).count_ones()))
            .sum()
    }
}

/// What one subscriber (or one shared group, once merged) received from one publisher.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    pub seen: SeqSet,
    /// One past the highest sequence number seen: anything new below it came late.
    next: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl Stream {
    /// Records one delivery; true if it is the first copy of that message.
    pub fn record(&mut self, seq: u32) -> bool {
        if !self.seen.insert(seq) {
            self.duplicated += 1;
            return false;
        }
        if u64::from(seq) < self.next {
            self.reordered += 1;
        }
        self.next = self.next.max(u64::from(seq) + 1);
        true
    }

    /// Folds in a sibling group member's stream: copies both received count as duplicates.
    pub fn merge(&mut self, other: &Stream) {
        self.duplicated += other.duplicated + self.seen.union_with(&other.seen);
        self.reordered += other.reordered;
        self.next = self.next.max(other.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_late_arrivals() {
        let mut s = Stream::default();
        for seq in [0, 1, 3, 2, 3, 5] {
            s.record(seq);
        }
        assert_eq!((s.seen.len(), s.duplicated, s.reordered), (5, 1, 1));
    }

    #[test]
    fn merge_counts_overlap_as_duplicates() {
        let (mut a, mut b) = (Stream::default(), Stream::default());
        for seq in [0, 2, 4, 100] {
            a.record(seq);
        }
        for seq in [1, 3, 4, 200] {
            b.record(seq);
        }
        a.merge(&b);
        assert_eq!((a.seen.len(), a.duplicated), (7, 1));
    }

    #[test]
    fn missing_counts_acked_but_not_seen() {
        let (mut acked, mut seen) = (SeqSet::default(), SeqSet::default());
        for seq in 0..130 {
            acked.insert(seq);
        }
        for seq in (0..70).step_by(2) {
            seen.insert(seq);
        }
        assert_eq!(acked.count_missing_from(&seen), 130 - 35);
        assert_eq!(seen.count_missing_from(&acked), 0);
    }
}
