//! Small statistics used by the detectors and selectors, written to give the
//! same numbers as CloudSim's `MathUtil` (Apache Commons Math underneath).

/// Runs `f` on a scratch copy of `data` (on the stack for short slices).
fn with_copy<R>(data: &[f64], f: impl FnOnce(&mut [f64]) -> R) -> R {
    if data.len() <= 64 {
        let mut buf = [0.0; 64];
        buf[..data.len()].copy_from_slice(data);
        f(&mut buf[..data.len()])
    } else {
        f(&mut data.to_vec())
    }
}

/// Median of a slice it may reorder.
fn median_mut(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    // Selection, not a full sort: this runs for every candidate host.
    let (left, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *mid;
    if n % 2 == 1 {
        upper
    } else {
        let lower = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// Median of `data` (the mean of the two middle values for an even count).
/// Returns NaN for an empty slice.
pub fn median(data: &[f64]) -> f64 {
    with_copy(data, median_mut)
}

/// Median absolute deviation: `median(|x - median(x)|)`; 0 for an empty slice.
pub fn mad(data: &[f64]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    with_copy(data, |v| {
        let m = median_mut(v);
        for x in v.iter_mut() {
            *x = (m - *x).abs();
        }
        median_mut(v)
    })
}

/// Interquartile range as CloudSim computes it: sort, then
/// `Q1 = x[round(0.25 (n+1)) - 1]` and `Q3 = x[round(0.75 (n+1)) - 1]`
/// (Java `Math.round`, half up). Returns NaN for an empty slice.
pub fn iqr(data: &[f64]) -> f64 {
    if data.is_empty() {
        return f64::NAN;
    }
    with_copy(data, |v| {
        let n = v.len() as f64;
        let idx = |q: f64| -> usize {
            let i = (q * (n + 1.0) + 0.5).floor() as isize - 1;
            i.clamp(0, v.len() as isize - 1) as usize
        };
        let (i1, i3) = (idx(0.25), idx(0.75));
        // Two selections instead of a sort: Q3 first, then Q1 left of it.
        let (left, q3, _) = v.select_nth_unstable_by(i3, f64::total_cmp);
        let q3 = *q3;
        let q1 = if i1 < i3 {
            *left.select_nth_unstable_by(i1, f64::total_cmp).1
        } else {
            q3
        };
        q3 - q1
    })
}

/// Ordinary least squares line through `(x[i], y[i])`: returns
/// `(intercept, slope)`; NaN when the x values do not vary.
pub fn linear_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let mut sxx = 0.0;
    let mut sxy = 0.0;
    for (a, b) in x.iter().zip(y) {
        sxx += (a - mx) * (a - mx);
        sxy += (a - mx) * (b - my);
    }
    if sxx == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let slope = sxy / sxx;
    (my - slope * mx, slope)
}

/// CloudSim's tricube "weights" for `n` points (`MathUtil.getTricubeWeigts`):
/// the reciprocal of the tricube kernel, with the first two copied from the third.
pub fn tricube_weights(n: usize) -> Vec<f64> {
    let mut w = vec![0.0; n];
    tricube_weights_into(&mut w);
    w
}

fn tricube_weights_into(w: &mut [f64]) {
    let n = w.len();
    let top = n as f64 - 1.0;
    for (i, wi) in w.iter_mut().enumerate().skip(2) {
        let k = (1.0 - ((top - i as f64) / top).powi(3)).powi(3);
        *wi = if k > 0.0 { 1.0 / k } else { f64::MAX };
    }
    if n > 2 {
        w[0] = w[2];
        w[1] = w[2];
    }
}

/// CloudSim's bisquare-times-tricube weights from residuals
/// (`MathUtil.getTricubeBisquareWeigts`).
pub fn tricube_bisquare_weights(residuals: &[f64]) -> Vec<f64> {
    let n = residuals.len();
    let w = tricube_weights(n);
    let abs: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
    let s6 = median(&abs) * 6.0;
    let mut w2 = vec![0.0; n];
    for i in 2..n {
        let k = (1.0 - (residuals[i] / s6).powi(2)).powi(2);
        w2[i] = if k > 0.0 { (1.0 / k) * w[i] } else { f64::MAX };
    }
    if n > 2 {
        w2[0] = w2[2];
        w2[1] = w2[2];
    }
    w2
}

/// CloudSim's "weighted" regression (`createWeigthedLinearRegression`): the
/// weights are applied (x and y multiplied by sqrt(w)) only when at least 40 %
/// of them are zero; otherwise it is a plain least-squares fit.
fn weighted_fit(x: &[f64], y: &[f64], w: &[f64]) -> (f64, f64) {
    let zeros = w.iter().filter(|v| **v <= 0.0).count();
    if zeros as f64 >= 0.4 * w.len() as f64 {
        let xw: Vec<f64> = x.iter().zip(w).map(|(a, b)| b.sqrt() * a).collect();
        let yw: Vec<f64> = y.iter().zip(w).map(|(a, b)| b.sqrt() * a).collect();
        linear_fit(&xw, &yw)
    } else {
        linear_fit(x, y)
    }
}

/// Runs `f` with x = 1..n and CloudSim's tricube weights for `y`, on the
/// stack for the short windows the detectors use.
fn with_positions<R>(y: &[f64], f: impl FnOnce(&[f64], &[f64]) -> R) -> R {
    let n = y.len();
    if n <= 64 {
        let mut x = [0.0; 64];
        for (i, xi) in x.iter_mut().take(n).enumerate() {
            *xi = (i + 1) as f64;
        }
        let mut w = [0.0; 64];
        tricube_weights_into(&mut w[..n]);
        f(&x[..n], &w[..n])
    } else {
        let x: Vec<f64> = (1..=n).map(|i| i as f64).collect();
        f(&x, &tricube_weights(n))
    }
}

/// Local-regression parameter estimates `(intercept, slope)` of `y` against
/// x = 1..n, as `MathUtil.getLoessParameterEstimates`.
pub fn loess(y: &[f64]) -> (f64, f64) {
    with_positions(y, |x, w| weighted_fit(x, y, w))
}

/// Robust local-regression estimates, as `MathUtil.getRobustLoessParameterEstimates`:
/// a second fit with bisquare weights from the first fit's residuals, falling
/// back to the first fit when the second is undefined. When most residuals
/// are exactly zero (a flat history with a few bumps that cancel out) the
/// bisquare weights are undefined: the median absolute residual is zero, so
/// every other point would get weight 0 and the "fit" would be arbitrary.
/// The first fit is kept then. CloudSim's own arithmetic (Apache Commons'
/// `SimpleRegression`) leaves rounding noise in those residuals and never
/// meets the case on the PlanetLab traces (its LR and LRR agree there).
pub fn robust_loess(y: &[f64]) -> (f64, f64) {
    with_positions(y, |x, w| {
        let first = weighted_fit(x, y, w);
        let residuals: Vec<f64> = x
            .iter()
            .zip(y)
            .map(|(a, b)| b - (first.0 + first.1 * a))
            .collect();
        let abs: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
        if median(&abs) == 0.0 {
            return first;
        }
        let second = weighted_fit(x, y, &tricube_bisquare_weights(&residuals));
        if second.0.is_nan() || second.1.is_nan() {
            first
        } else {
            second
        }
    })
}

/// Coefficient of determination (R²) of the multiple linear regression, with
/// intercept, of `y` on the columns `xs` (each as long as `y`). `None` when the
/// fit has no degrees of freedom left or the normal equations are singular.
pub fn r_squared(y: &[f64], xs: &[&[f64]]) -> Option<f64> {
    let m = y.len();
    let p = xs.len() + 1;
    if m <= p {
        return None;
    }
    // Normal equations A b = c with A = X'X, c = X'y, X = [1 | xs].
    let col = |j: usize, i: usize| if j == 0 { 1.0 } else { xs[j - 1][i] };
    let mut a = vec![vec![0.0; p + 1]; p];
    for (r, row) in a.iter_mut().enumerate() {
        for (c, cell) in row.iter_mut().enumerate().take(p) {
            *cell = (0..m).map(|i| col(r, i) * col(c, i)).sum();
        }
        row[p] = (0..m).map(|i| col(r, i) * y[i]).sum();
    }
    // Gaussian elimination with partial pivoting.
    for k in 0..p {
        let piv = (k..p).max_by(|i, j| a[*i][k].abs().total_cmp(&a[*j][k].abs()))?;
        if a[piv][k].abs() < 1e-12 {
            return None;
        }
        a.swap(k, piv);
        for r in k + 1..p {
            let f = a[r][k] / a[k][k];
            for c in k..=p {
                a[r][c] -= f * a[k][c];
            }
        }
    }
    let mut b = vec![0.0; p];
    for k in (0..p).rev() {
        let s: f64 = (k + 1..p).map(|c| a[k][c] * b[c]).sum();
        b[k] = (a[k][p] - s) / a[k][k];
    }
    let my = y.iter().sum::<f64>() / m as f64;
    let mut ss_res = 0.0;
    let mut ss_tot = 0.0;
    for i in 0..m {
        let fit: f64 = (0..p).map(|j| b[j] * col(j, i)).sum();
        ss_res += (y[i] - fit).powi(2);
        ss_tot += (y[i] - my).powi(2);
    }
    Some(1.0 - ss_res / ss_tot)
}

/// Population standard deviation; 0 for fewer than two values.
pub fn std_dev(data: &[f64]) -> f64 {
    if data.len() < 2 {
        return 0.0;
    }
    let n = data.len() as f64;
    let m = data.iter().sum::<f64>() / n;
    (data.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        // |x - 2| = 1,0,1,2,7 -> median 1
        assert_eq!(mad(&[1.0, 2.0, 3.0, 4.0, 9.0]), 1.0);
    }

    #[test]
    fn mad_matches_the_definition() {
        let naive = |d: &[f64]| {
            let mut s = d.to_vec();
            s.sort_by(f64::total_cmp);
            let med = |s: &[f64]| {
                let n = s.len();
                if n % 2 == 1 {
                    s[n / 2]
                } else {
                    (s[n / 2 - 1] + s[n / 2]) / 2.0
                }
            };
            let m = med(&s);
            let mut dev: Vec<f64> = s.iter().map(|x| (m - x).abs()).collect();
            dev.sort_by(f64::total_cmp);
            med(&dev)
        };
        let mut x: u64 = 7;
        for n in 1..40 {
            let d: Vec<f64> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((x >> 40) % 50) as f64 / 50.0
                })
                .collect();
            assert_eq!(mad(&d), naive(&d), "{d:?}");
            assert_eq!(median(&d), {
                let mut s = d.clone();
                s.sort_by(f64::total_cmp);
                let n = s.len();
                if n % 2 == 1 {
                    s[n / 2]
                } else {
                    (s[n / 2 - 1] + s[n / 2]) / 2.0
                }
            });
        }
    }

    /// A flat history whose bumps cancel out: most residuals are exactly
    /// zero, the bisquare weights are undefined, and the robust fit is the
    /// plain one (not an arbitrary line through zero-weighted points).
    #[test]
    fn robust_loess_keeps_the_plain_fit_when_residuals_vanish() {
        let c = 0.005639097744360902;
        let y = [
            c,
            c,
            c,
            c,
            c,
            c,
            c,
            0.006578947368421053,
            0.0037593984962406013,
            0.006578947368421053,
        ];
        let (a, b) = robust_loess(&y);
        let (a0, b0) = loess(&y);
        assert_eq!((a.to_bits(), b.to_bits()), (a0.to_bits(), b0.to_bits()));
        assert!((a - c).abs() < 1e-9 && b.abs() < 1e-12, "{a} {b}");
    }

    #[test]
    fn iqr_uses_cloudsim_indices() {
        // n = 8: q1 index round(2.25)-1 = 1, q3 index round(6.75)-1 = 6.
        let d = [8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0];
        assert_eq!(iqr(&d), 7.0 - 2.0);
        // n = 12: q1 = round(3.25)-1 = 2, q3 = round(9.75)-1 = 9.
        let d: Vec<f64> = (0..12).map(|i| i as f64 * 10.0).collect();
        assert_eq!(iqr(&d), 90.0 - 20.0);
    }

    #[test]
    fn loess_is_least_squares_for_cloudsim_weights() {
        // y = 2 + 0.5 x exactly: both fits recover it.
        let y: Vec<f64> = (1..=10).map(|x| 2.0 + 0.5 * x as f64).collect();
        let (a, b) = loess(&y);
        assert!((a - 2.0).abs() < 1e-9 && (b - 0.5).abs() < 1e-9);
        let (a, b) = robust_loess(&y);
        assert!((a - 2.0).abs() < 1e-9 && (b - 0.5).abs() < 1e-9);
        // A noisy series: the fit equals plain OLS (CloudSim applies no weights
        // unless 40 % of them are zero).
        let y = [0.1, 0.3, 0.2, 0.4, 0.5, 0.3, 0.6, 0.7, 0.5, 0.9];
        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(loess(&y), linear_fit(&x, &y));
    }

    #[test]
    fn r_squared_of_exact_and_free_fits() {
        let x1 = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [3.0, 5.0, 7.0, 9.0, 11.0];
        assert!((r_squared(&y, &[&x1]).unwrap() - 1.0).abs() < 1e-9);
        // Not enough observations for two regressors plus intercept.
        assert!(r_squared(&y[..3], &[&x1[..3], &x1[..3]]).is_none());
    }
}
