//! Results: per-policy summaries, the text table, CSV, JSON and the SVG plot.

use std::fmt::Write as _;

use plotters::prelude::*;
use serde::Serialize;

use crate::engine::DayResult;

/// One policy over all simulated days: medians of the per-day metrics (as
/// Beloglazov & Buyya report them) and the total energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub policy: String,
    /// `ferry` or `cloudsim`.
    pub model: String,
    pub days: usize,
    pub energy_kwh: f64,
    pub energy_total_kwh: f64,
    pub slatah: f64,
    pub pdm: f64,
    pub slav: f64,
    pub esv: f64,
    pub slatah_ferry: f64,
    pub pdm_ferry: f64,
    pub slav_ferry: f64,
    pub esv_ferry: f64,
    pub migrations: f64,
    pub hotspot_migrations: f64,
    pub host_shutdowns: f64,
    pub mean_active_hosts: f64,
    pub load_imbalance: f64,
    pub vms_at_end: f64,
    pub mode_switches: f64,
    pub balance_intervals: f64,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Results {
    pub scenario: String,
    pub trace_dir: String,
    pub seed: u64,
    pub summaries: Vec<Summary>,
    pub days: Vec<DayResult>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Summaries in the order the policies first appear in `days`.
pub fn summarize(days: &[DayResult]) -> Vec<Summary> {
    let mut order: Vec<String> = Vec::new();
    for d in days {
        if !order.contains(&d.policy) {
            order.push(d.policy.clone());
        }
    }
    order
        .into_iter()
        .map(|p| {
            let rows: Vec<&DayResult> = days.iter().filter(|d| d.policy == p).collect();
            let m = |f: &dyn Fn(&DayResult) -> f64| median(rows.iter().map(|d| f(d)).collect());
            Summary {
                model: rows.first().map_or(String::new(), |d| d.model.clone()),
                days: rows.len(),
                energy_kwh: m(&|d| d.energy_kwh),
                energy_total_kwh: rows.iter().map(|d| d.energy_kwh).sum(),
                slatah: m(&|d| d.slatah),
                pdm: m(&|d| d.pdm),
                slav: m(&|d| d.slav),
                esv: m(&|d| d.esv),
                slatah_ferry: m(&|d| d.slatah_ferry),
                pdm_ferry: m(&|d| d.pdm_ferry),
                slav_ferry: m(&|d| d.slav_ferry),
                esv_ferry: m(&|d| d.esv_ferry),
                migrations: m(&|d| d.migrations as f64),
                hotspot_migrations: m(&|d| d.hotspot_migrations as f64),
                host_shutdowns: m(&|d| d.host_shutdowns as f64),
                mean_active_hosts: m(&|d| d.mean_active_hosts),
                load_imbalance: m(&|d| d.load_imbalance),
                vms_at_end: m(&|d| d.vms_at_end as f64),
                mode_switches: m(&|d| d.mode_switches as f64),
                balance_intervals: m(&|d| d.balance_intervals as f64),
                policy: p,
            }
        })
        .collect()
}

/// The text table (medians per day).
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    let days = r.summaries.first().map_or(0, |x| x.days);
    let model = r.summaries.first().map_or("", |x| x.model.as_str());
    let _ = writeln!(
        s,
        "Medians over {days} day(s); model {model}; scenario {}; traces {}",
        r.scenario, r.trace_dir
    );
    let _ = writeln!(
        s,
        "SLATAH, PDM, SLAV, ESV in CloudSim's definitions; SLATAH_F, ESV_F in Ferry's (docs/SIMULATOR.md)"
    );
    let _ = writeln!(
        s,
        "{:<14} {:>10} {:>8} {:>7} {:>9} {:>8} {:>9} {:>8} {:>10} {:>9} {:>8} {:>9}",
        "policy",
        "energy_kWh",
        "SLATAH%",
        "PDM%",
        "SLAV_e-5",
        "ESV_e-3",
        "SLATAH_F%",
        "ESV_F_e-3",
        "migrations",
        "shutdowns",
        "active",
        "imbalance"
    );
    for x in &r.summaries {
        let _ = writeln!(
            s,
            "{:<14} {:>10.2} {:>8.2} {:>7.3} {:>9.3} {:>8.3} {:>9.2} {:>8.3} {:>10.0} {:>9.0} {:>8.1} {:>9.3}",
            x.policy,
            x.energy_kwh,
            x.slatah * 100.0,
            x.pdm * 100.0,
            x.slav * 1e5,
            x.esv * 1e3,
            x.slatah_ferry * 100.0,
            x.esv_ferry * 1e3,
            x.migrations,
            x.host_shutdowns,
            x.mean_active_hosts,
            x.load_imbalance
        );
    }
    s
}

/// Per-day CSV.
pub fn days_csv(r: &Results) -> String {
    let mut s = String::from(
        "policy,day,hosts,vms,energy_kwh,slatah,pdm,slav,esv,migrations,hotspot_migrations,host_shutdowns,mean_active_hosts,load_imbalance,model,slatah_ferry,pdm_ferry,slav_ferry,esv_ferry,vms_at_end,mode_switches,balance_intervals\n",
    );
    for d in &r.days {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.6},{:.8},{:.8},{:.10},{:.10},{},{},{},{:.4},{:.6},{},{:.8},{:.8},{:.10},{:.10},{},{},{}",
            d.policy,
            d.day,
            d.hosts,
            d.vms,
            d.energy_kwh,
            d.slatah,
            d.pdm,
            d.slav,
            d.esv,
            d.migrations,
            d.hotspot_migrations,
            d.host_shutdowns,
            d.mean_active_hosts,
            d.load_imbalance,
            d.model,
            d.slatah_ferry,
            d.pdm_ferry,
            d.slav_ferry,
            d.esv_ferry,
            d.vms_at_end,
            d.mode_switches,
            d.balance_intervals
        );
    }
    s
}

/// Summary CSV (medians, plus total energy).
pub fn summary_csv(r: &Results) -> String {
    let mut s = String::from(
        "policy,days,energy_kwh_median,energy_kwh_total,slatah,pdm,slav,esv,migrations,hotspot_migrations,host_shutdowns,mean_active_hosts,load_imbalance,model,slatah_ferry,pdm_ferry,slav_ferry,esv_ferry,vms_at_end,mode_switches,balance_intervals\n",
    );
    for x in &r.summaries {
        let _ = writeln!(
            s,
            "{},{},{:.6},{:.6},{:.8},{:.8},{:.10},{:.10},{},{},{},{:.4},{:.6},{},{:.8},{:.8},{:.10},{:.10},{},{},{}",
            x.policy,
            x.days,
            x.energy_kwh,
            x.energy_total_kwh,
            x.slatah,
            x.pdm,
            x.slav,
            x.esv,
            x.migrations,
            x.hotspot_migrations,
            x.host_shutdowns,
            x.mean_active_hosts,
            x.load_imbalance,
            x.model,
            x.slatah_ferry,
            x.pdm_ferry,
            x.slav_ferry,
            x.esv_ferry,
            x.vms_at_end,
            x.mode_switches,
            x.balance_intervals
        );
    }
    s
}

/// SVG scatter plot: median energy per day (x, logarithmic when the values
/// span more than a factor of 5, as with the npa baseline) against SLAV (y),
/// one labelled point per policy; policies on the same point share a label.
pub fn plot_svg(r: &Results) -> Result<String, String> {
    let mut pts: Vec<(f64, f64, String)> = Vec::new();
    for x in &r.summaries {
        let (e, s) = (x.energy_kwh, x.slav * 1e5);
        match pts.iter_mut().find(|p| p.0 == e && p.1 == s) {
            Some(p) => p.2 = format!("{}, {}", p.2, x.policy),
            None => pts.push((e, s, x.policy.clone())),
        }
    }
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, 0.0f64, 0.0f64);
    for p in &pts {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y1 = y1.max(p.1);
    }
    if pts.is_empty() || !(x0 > 0.0) {
        (x0, x1) = (1.0, 10.0);
    }
    let ymax = if y1 > 0.0 { y1 * 1.15 } else { 1.0 };
    // Stack the labels of nearby points instead of printing them on top of
    // each other: each label moves down one line per earlier close neighbour.
    let log = x1 / x0 > 5.0;
    let near = |a: &(f64, f64, String), b: &(f64, f64, String)| {
        let dx = if log {
            (a.0 / b.0).ln().abs() < 0.15
        } else {
            (a.0 - b.0).abs() < 0.05 * (x1 - x0)
        };
        dx && (a.1 - b.1).abs() < 0.05 * ymax
    };
    let offsets: Vec<i32> = (0..pts.len())
        .map(|i| (0..i).filter(|&j| near(&pts[i], &pts[j])).count() as i32)
        .collect();
    let pts: Vec<(f64, f64, String, i32)> = pts
        .into_iter()
        .zip(offsets)
        .map(|((x, y, n), o)| (x, y, n, o))
        .collect();
    let title = "Energy vs SLA violation (median per day)";
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (800, 560)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60);
        let point = |(x, y, name, k): &(f64, f64, String, i32)| {
            EmptyElement::at((*x, *y))
                + Circle::new((0, 0), 4, BLUE.filled())
                + Text::new(name.clone(), (6, -14 + 15 * k), ("sans-serif", 13))
        };
        if log {
            let mut chart = builder
                .build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), 0.0..ymax)
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_labels(12)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .x_desc("energy, kWh per day (log scale)")
                .y_desc("SLAV (x 1e-5)")
                .draw()
                .map_err(e)?;
            chart.draw_series(pts.iter().map(point)).map_err(e)?;
        } else {
            let pad = ((x1 - x0) * 0.1).max(1.0);
            let mut chart = builder
                .build_cartesian_2d((x0 - pad).max(0.0)..(x1 + pad), 0.0..ymax)
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("energy, kWh per day")
                .y_desc("SLAV (x 1e-5)")
                .draw()
                .map_err(e)?;
            chart.draw_series(pts.iter().map(point)).map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(out)
}

/// SVG of the engine's pattern over each day: the pool's load per interval
/// (one line per policy and day) with the intervals decided in balance mode
/// marked on the line. `None` when no day ever balanced.
pub fn pattern_svg(r: &Results) -> Result<Option<String>, String> {
    let days: Vec<&DayResult> = r
        .days
        .iter()
        .filter(|d| d.balance_intervals > 0 && !d.pool_load.is_empty())
        .collect();
    if days.is_empty() {
        return Ok(None);
    }
    let n = days.iter().map(|d| d.pool_load.len()).max().unwrap_or(1);
    let top = days
        .iter()
        .flat_map(|d| d.pool_load.iter().copied())
        .fold(0.0f64, f64::max)
        * 1.1;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 520)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Pool load per interval; dots: balance mode",
                ("sans-serif", 20),
            )
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0..n, 0.0..top.max(0.1))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("scheduling interval")
            .y_desc("pool load (demand / capacity)")
            .draw()
            .map_err(e)?;
        for (i, d) in days.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let label = format!("{} {} ({} switches)", d.policy, d.day, d.mode_switches);
            chart
                .draw_series(LineSeries::new(
                    d.pool_load.iter().enumerate().map(|(t, l)| (t, *l)),
                    color,
                ))
                .map_err(e)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            let balance = d
                .modes
                .chars()
                .zip(d.pool_load.iter())
                .enumerate()
                .filter(|(_, (m, _))| *m == 'b')
                .map(|(t, (_, l))| Circle::new((t, *l), 2, color.filled()));
            chart.draw_series(balance).map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(Some(out))
}
