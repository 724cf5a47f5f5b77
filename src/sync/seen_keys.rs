//! Which member keys a run has staged already, approximately: a Bloom filter that grows. A "no"
//! is certain; a "yes" may be wrong about 2 % of the time, which only sends a row to the diff's
//! ranking of possible duplicates. Memory stays near 8 bits per member (about 4 MB for 4 M).
use fastbloom::BloomFilter;

/// False-positive rate of each filter in the series: a false positive only stages a row instead
/// of sending it at once, so memory matters more.
const FALSE_POSITIVES: f64 = 0.02;

/// The first filter's capacity at most: 16 M keys, about 16 MB. The planner's estimate for a query
/// it cannot see through (or a stale statistic) may say billions; the series grows past it anyway.
pub const MAX_FIRST_CAPACITY: usize = 1 << 24;

pub struct SeenKeys {
    /// Each full filter is followed by one twice its size.
    filters: Vec<BloomFilter>,
    capacity: usize,
    in_last: usize,
}

impl SeenKeys {
    /// Sized for `expected` keys (at most [`MAX_FIRST_CAPACITY`]: an estimate can be wildly off);
    /// more are fine.
    pub fn new(expected: usize) -> Self {
        let capacity = expected.clamp(1 << 16, MAX_FIRST_CAPACITY);
        SeenKeys {
            filters: vec![BloomFilter::with_false_pos(FALSE_POSITIVES).expected_items(capacity)],
            capacity,
            in_last: 0,
        }
    }

    /// Records `key` (a uniformly random hash, such as a SHA-256 prefix) and says whether it may
    /// have been recorded before.
    pub fn insert(&mut self, key: u64) -> bool {
        if self.filters.iter().any(|f| f.contains_hash(key)) {
            return true;
        }
        if self.in_last == self.capacity {
            self.capacity *= 2;
            self.in_last = 0;
            self.filters
                .push(BloomFilter::with_false_pos(FALSE_POSITIVES).expected_items(self.capacity));
        }
        self.in_last += 1;
        self.filters
            .last_mut()
            .expect("there is always a filter")
            .insert_hash(key);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u64, salt: u64) -> impl Iterator<Item = u64> {
        (0..n).map(move |i| {
            // SplitMix64: uniform like a SHA-256 prefix.
            let mut z = i.wrapping_add(salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    }

    #[test]
    fn an_absurd_estimate_does_not_size_the_first_filter_past_the_cap() {
        let capped = SeenKeys::new(usize::MAX / 2);
        assert_eq!(capped.capacity, MAX_FIRST_CAPACITY);
        let bytes = capped.filters[0].as_slice().len() * 8;
        assert!(bytes <= 32 << 20, "first filter takes {bytes} bytes");
    }

    #[test]
    fn a_key_seen_before_is_always_reported_even_past_the_expected_size() {
        let mut seen = SeenKeys::new(1_000);
        for k in keys(300_000, 1) {
            seen.insert(k);
        }
        assert!(seen.filters.len() > 1, "it grew");
        assert!(keys(300_000, 1).all(|k| seen.insert(k)));
    }

    #[test]
    fn new_keys_are_rarely_mistaken_for_seen_ones() {
        let mut seen = SeenKeys::new(100_000);
        for k in keys(400_000, 1) {
            seen.insert(k);
        }
        let mistaken = keys(100_000, u64::MAX / 2)
            .filter(|&k| seen.insert(k))
            .count();
        assert!(mistaken < 5_000, "{mistaken} of 100000");
    }
}
