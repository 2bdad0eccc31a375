//! Log-linear latency histogram (8 sub-buckets per power of two, so a
//! percentile is exact to within 12.5%) and the percentile read-out.

/// Number of buckets: values 0-15 exactly, then 8 per power of two up to 2^64.
pub const BUCKETS: usize = 16 + 60 * 8;

/// The bucket of value `v`.
pub const fn bucket(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as usize;
    let sub = ((v >> (msb - 3)) & 7) as usize;
    16 + (msb - 4) * 8 + sub
}

/// The largest value that falls in bucket `b`.
pub const fn upper(b: usize) -> u64 {
    if b < 16 {
        return b as u64;
    }
    let msb = (b - 16) / 8 + 4;
    let sub = ((b - 16) % 8) as u64;
    let low = (8 + sub) << (msb - 3);
    low + ((1u64 << (msb - 3)) - 1)
}

/// The value below which a share `q` (0..=1) of the counted values lie,
/// reported as the upper bound of its bucket; 0 when nothing was counted.
pub fn percentile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    // Rank of the wanted value, 1-based, rounded up.
    let mut rank = (q * total as f64) as u64;
    if (rank as f64) < q * total as f64 {
        rank += 1;
    }
    let rank = rank.clamp(1, total);
    let mut seen = 0;
    for (b, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return upper(b);
        }
    }
    upper(counts.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1000,
            123_456,
            1 << 40,
            u64::MAX,
        ] {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            assert!(upper(b) >= v, "{v} above its bucket's bound {}", upper(b));
            if b >= 16 {
                assert!(upper(b - 1) < v, "{v} also fits the bucket below");
            }
            last = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles() {
        let mut counts = [0u64; BUCKETS];
        assert_eq!(percentile(&counts, 0.5), 0);
        // 90 ops at 100 ns, 9 at 1000 ns, 1 at 50 us.
        counts[bucket(100)] += 90;
        counts[bucket(1000)] += 9;
        counts[bucket(50_000)] += 1;
        let p50 = percentile(&counts, 0.5);
        assert!((100..=112).contains(&p50), "{p50}");
        let p99 = percentile(&counts, 0.99);
        assert!((1000..=1120).contains(&p99), "{p99}");
        let p999 = percentile(&counts, 0.999);
        assert!((50_000..=56_000).contains(&p999), "{p999}");
    }
}
