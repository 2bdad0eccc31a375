//! Zipf key popularity for kvstore: a CDF table over ranks and sampling by
//! binary search, with the `ln`/`exp` a `no_std` guest needs (no libm).

/// Natural logarithm (x > 0), to ~1e-15.
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52)); // [1, 2)
    let (m, e) = if m > core::f64::consts::SQRT_2 {
        (m / 2.0, e + 1)
    } else {
        (m, e)
    };
    // ln(m) = 2 atanh((m - 1) / (m + 1)), |s| < 0.172.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 40.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * core::f64::consts::LN_2
}

/// e^x (for |x| < 700).
pub fn exp(x: f64) -> f64 {
    let k = (x / core::f64::consts::LN_2) as i64;
    let r = x - k as f64 * core::f64::consts::LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut i = 1.0;
    while i < 25.0 {
        term *= r / i;
        sum += term;
        i += 1.0;
    }
    let k = k.clamp(-1022, 1023);
    sum * f64::from_bits(((k + 1023) as u64) << 52)
}

/// Weight of rank `r` (from 0): 1 / (r + 1)^s.
pub fn weight(r: usize, s: f64) -> f64 {
    exp(-s * ln((r + 1) as f64))
}

/// Fills `cdf` with the cumulative Zipf(s) distribution over `cdf.len()`
/// ranks, scaled to 2^32, given the sum of all weights. `tick` is called
/// every 1024 ranks (the guest keeps its heartbeat there).
pub fn fill_cdf(cdf: &mut [u32], s: f64, total: f64, mut tick: impl FnMut()) {
    let mut acc = 0.0;
    for (r, c) in cdf.iter_mut().enumerate() {
        acc += weight(r, s);
        *c = ((acc / total) * 4_294_967_296.0).min(4_294_967_295.0) as u32;
        if r % 1024 == 0 {
            tick();
        }
    }
    if let Some(last) = cdf.last_mut() {
        *last = u32::MAX;
    }
}

/// The sum of the weights of `n` ranks.
pub fn total(n: usize, s: f64, mut tick: impl FnMut()) -> f64 {
    let mut t = 0.0;
    for r in 0..n {
        t += weight(r, s);
        if r % 1024 == 0 {
            tick();
        }
    }
    t
}

/// The rank whose CDF interval holds `u` (uniform over 32 bits).
#[inline]
pub fn rank(cdf: &[u32], u: u32) -> usize {
    cdf.partition_point(|&c| c <= u)
        .min(cdf.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_and_exp() {
        for x in [1e-9, 0.3, 1.0, 2.0, 10.0, 12345.678, 1e12] {
            assert!((ln(x) - x.ln()).abs() < 1e-12, "ln {x}");
        }
        for x in [-20.0, -1.0, 0.0, 0.5, 3.0, 50.0] {
            assert!(
                ((exp(x) - f64::exp(x)) / f64::exp(x)).abs() < 1e-12,
                "exp {x}"
            );
        }
    }

    #[test]
    fn zipf_shape() {
        let n = 1000;
        let s = 0.99;
        let mut cdf = vec![0u32; n];
        let t = total(n, s, || {});
        fill_cdf(&mut cdf, s, t, || {});
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
        // P(rank 0) = 1 / H(n, s).
        let p0 = cdf[0] as f64 / 4_294_967_296.0;
        assert!((p0 - 1.0 / t).abs() < 1e-6, "{p0}");
        assert_eq!(rank(&cdf, 0), 0);
        assert_eq!(rank(&cdf, u32::MAX), n - 1);
        // Sampling on an even grid reproduces the head of the distribution.
        let mut hits = [0u32; 3];
        let steps = 100_000u64;
        for i in 0..steps {
            let r = rank(&cdf, ((i << 32) / steps) as u32);
            if r < 3 {
                hits[r] += 1;
            }
        }
        for (r, &h) in hits.iter().enumerate() {
            let want = weight(r, s) / t;
            assert!((h as f64 / steps as f64 - want).abs() < 0.001, "rank {r}");
        }
        // Uniform when s = 0.
        let mut flat = vec![0u32; 4];
        fill_cdf(&mut flat, 0.0, total(4, 0.0, || {}), || {});
        assert_eq!(rank(&flat, (1 << 30) - 1), 0);
        assert_eq!(rank(&flat, 1 << 30), 1);
        assert_eq!(rank(&flat, 3 << 30), 3);
    }
}
