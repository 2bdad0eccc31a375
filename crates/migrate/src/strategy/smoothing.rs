//! Per-page dirty prediction by dynamic exponential smoothing (seed 000):
//! each page's series "dirtied in round k" (0 or 1) is smoothed into a
//! forecast of the probability that it is dirtied in the next round, with
//! a smoothing factor that adapts to the forecast's own errors.
//!
//! The adaptive factor is Trigg and Leach's tracking signal (1967),
//! "adaptive response rate" smoothing: `alpha = |E| / M`, the smoothed
//! error over the smoothed absolute error. While a page's errors have a
//! sign (the page turned hot or cold) the signal nears 1 and the forecast
//! follows fast; while they are noise around a steady rate it nears 0 and
//! the forecast stays smooth. Chosen over Chow's method (three forecasts in
//! parallel, 3x the state) and over Kalman filtering (a noise model the
//! 0/1 series does not have) because it needs two numbers per page and no
//! search. As Whybark (1973) and Gardner (1985) advise against its
//! instability, the factor applied in round k is the signal of round k-1,
//! clamped to [`alpha_min`, `alpha_max`].
//!
//! [`alpha_min`]: SmoothingParams::alpha_min
//! [`alpha_max`]: SmoothingParams::alpha_max

use super::params::{ParamReader, Range, StrategyError};
use crate::bitmap::DirtyBitmap;

/// Parameters of the per-page predictor.
#[derive(Clone, Debug, PartialEq)]
pub struct SmoothingParams {
    /// Smoothing factor of a page until its first error is known (`alpha`).
    pub alpha: f64,
    /// Bounds of the adaptive smoothing factor (`alpha-min`, `alpha-max`).
    pub alpha_min: f64,
    pub alpha_max: f64,
    /// Smoothing of the error and absolute error (`phi`, Trigg-Leach's 0.2).
    pub phi: f64,
}

impl Default for SmoothingParams {
    fn default() -> Self {
        SmoothingParams {
            alpha: 0.5,
            alpha_min: 0.05,
            alpha_max: 0.95,
            phi: 0.2,
        }
    }
}

impl SmoothingParams {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = SmoothingParams::default();
        let unit = Range::open(0.0, 1.0);
        let p = SmoothingParams {
            alpha: r.number("alpha", d.alpha, unit)?,
            alpha_min: r.number("alpha-min", d.alpha_min, unit)?,
            alpha_max: r.number("alpha-max", d.alpha_max, unit)?,
            phi: r.number("phi", d.phi, unit)?,
        };
        if p.alpha_min > p.alpha_max {
            let v = p.alpha_min.to_string();
            return Err(r.bad(
                "alpha-min",
                &v,
                format_args!("is above alpha-max ({})", p.alpha_max),
            ));
        }
        Ok(p)
    }
}

/// One page's predictor state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct PageState {
    /// Forecast: probability that the page is dirtied in the next round.
    pub forecast: f32,
    /// Smoothed error.
    pub error: f32,
    /// Smoothed absolute error.
    pub abs_error: f32,
}

/// Below this a page's state is forgotten (it counts as never dirtied).
const FORGET: f32 = 1e-3;

impl PageState {
    /// The smoothing factor the next observation will use.
    pub fn alpha(&self, p: &SmoothingParams) -> f32 {
        if self.abs_error <= 0.0 {
            return p.alpha as f32;
        }
        (self.error.abs() / self.abs_error).clamp(p.alpha_min as f32, p.alpha_max as f32)
    }

    /// Takes observation `dirtied` of one round.
    pub fn observe(&mut self, dirtied: bool, p: &SmoothingParams) {
        let x = if dirtied { 1.0 } else { 0.0 };
        let alpha = self.alpha(p);
        let e = x - self.forecast;
        let phi = p.phi as f32;
        self.forecast += alpha * e;
        self.error = phi * e + (1.0 - phi) * self.error;
        self.abs_error = phi * e.abs() + (1.0 - phi) * self.abs_error;
    }

    fn forgettable(&self) -> bool {
        self.forecast < FORGET && self.abs_error < FORGET
    }
}

/// The predictor over every page: 12 bytes a page, updated only for pages
/// with a history (never-dirtied pages cost one bit test per 64).
pub(super) struct Smoother {
    params: SmoothingParams,
    pages: Vec<PageState>,
    /// Pages whose state is not all zero, one bit each.
    active: Vec<u64>,
}

impl Smoother {
    pub fn new(params: SmoothingParams) -> Self {
        Smoother {
            params,
            pages: Vec::new(),
            active: Vec::new(),
        }
    }

    /// Takes one round's observation for every page: set in `dirtied` or not.
    pub fn observe(&mut self, dirtied: &DirtyBitmap) {
        let words = dirtied.words();
        if self.pages.is_empty() {
            self.pages = vec![PageState::default(); words.len() * 64];
            self.active = vec![0; words.len()];
        }
        for (w, (&d, a)) in words.iter().zip(self.active.iter_mut()).enumerate() {
            let mut todo = d | *a;
            while todo != 0 {
                let bit = todo.trailing_zeros() as usize;
                todo &= todo - 1;
                let s = &mut self.pages[w * 64 + bit];
                s.observe(d >> bit & 1 == 1, &self.params);
                if s.forgettable() {
                    *s = PageState::default();
                    *a &= !(1 << bit);
                } else {
                    *a |= 1 << bit;
                }
            }
        }
    }

    /// The forecast for page `index` (0 before any observation).
    pub fn forecast(&self, index: u64) -> f32 {
        self.pages.get(index as usize).map_or(0.0, |s| s.forecast)
    }

    #[cfg(test)]
    pub fn state(&self, index: u64) -> PageState {
        self.pages.get(index as usize).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::{PAGE_SIZE, PageLayout};

    fn run(series: &[bool]) -> PageState {
        let p = SmoothingParams::default();
        let mut s = PageState::default();
        for &x in series {
            s.observe(x, &p);
        }
        s
    }

    #[test]
    fn first_observation_uses_the_initial_factor() {
        let s = run(&[true]);
        assert_eq!(s.forecast, 0.5);
        // e = 1: E = 0.2, M = 0.2: the signal is 1, clamped to alpha-max.
        assert!((s.error - 0.2).abs() < 1e-6 && (s.abs_error - 0.2).abs() < 1e-6);
        assert!((s.alpha(&SmoothingParams::default()) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn a_page_turning_hot_is_followed_fast() {
        // Two writes in a row: the biased errors push the factor up, so the
        // second forecast is far above what a fixed alpha = 0.5 gives (0.75).
        let s = run(&[true, true]);
        assert!(s.forecast > 0.95, "{s:?}");
        // And turning cold again is followed as fast.
        let s = run(&[true, true, true, false]);
        assert!(s.forecast < 0.2, "{s:?}");
    }

    #[test]
    fn noise_lowers_the_factor() {
        // A page dirtied every other round: errors alternate in sign, so
        // the tracking signal (|E| / M) falls and the forecast settles.
        let series: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let s = run(&series);
        let p = SmoothingParams::default();
        assert!(s.alpha(&p) < 0.5, "{s:?} alpha {}", s.alpha(&p));
        let mut t = s;
        let before = t.forecast;
        t.observe(true, &p);
        let up = t.forecast - before;
        // A steady series moves the forecast by less than a fixed 0.5 would.
        assert!(up < 0.5 * (1.0 - before), "{before} -> {}", t.forecast);
        assert!((0.2..0.8).contains(&t.forecast), "{t:?}");
    }

    #[test]
    fn the_factor_stays_within_its_bounds() {
        let p = SmoothingParams {
            alpha_min: 0.3,
            alpha_max: 0.6,
            ..SmoothingParams::default()
        };
        let mut s = PageState::default();
        for i in 0..50 {
            s.observe(i % 3 == 0, &p);
            let a = s.alpha(&p);
            assert!((0.3..=0.6).contains(&a), "{a}");
        }
    }

    #[test]
    fn the_smoother_tracks_pages_and_forgets_cold_ones() {
        let l = PageLayout::new(&[(0, 200 * PAGE_SIZE)]).unwrap();
        let mut sm = Smoother::new(SmoothingParams::default());
        let mut d = DirtyBitmap::new(&l);
        d.set(3);
        d.set(130);
        sm.observe(&d);
        sm.observe(&d);
        assert!(sm.forecast(3) > 0.9 && sm.forecast(130) > 0.9);
        assert_eq!(sm.forecast(4), 0.0);
        let empty = DirtyBitmap::new(&l);
        for _ in 0..40 {
            sm.observe(&empty);
        }
        // Long cold: the state is dropped, like a page never dirtied.
        assert_eq!(sm.state(3), PageState::default());
        assert_eq!(sm.active.iter().map(|w| w.count_ones()).sum::<u32>(), 0);
    }
}
