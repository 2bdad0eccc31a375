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
    pub days: usize,
    pub energy_kwh: f64,
    pub energy_total_kwh: f64,
    pub slatah: f64,
    pub pdm: f64,
    pub slav: f64,
    pub esv: f64,
    pub migrations: f64,
    pub hotspot_migrations: f64,
    pub host_shutdowns: f64,
    pub mean_active_hosts: f64,
    pub load_imbalance: f64,
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
                days: rows.len(),
                energy_kwh: m(&|d| d.energy_kwh),
                energy_total_kwh: rows.iter().map(|d| d.energy_kwh).sum(),
                slatah: m(&|d| d.slatah),
                pdm: m(&|d| d.pdm),
                slav: m(&|d| d.slav),
                esv: m(&|d| d.esv),
                migrations: m(&|d| d.migrations as f64),
                hotspot_migrations: m(&|d| d.hotspot_migrations as f64),
                host_shutdowns: m(&|d| d.host_shutdowns as f64),
                mean_active_hosts: m(&|d| d.mean_active_hosts),
                load_imbalance: m(&|d| d.load_imbalance),
                policy: p,
            }
        })
        .collect()
}

/// The text table (medians per day).
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    let days = r.summaries.first().map_or(0, |x| x.days);
    let _ = writeln!(
        s,
        "Medians over {days} day(s); scenario {}; traces {}",
        r.scenario, r.trace_dir
    );
    let _ = writeln!(
        s,
        "{:<14} {:>10} {:>8} {:>7} {:>9} {:>8} {:>10} {:>9} {:>8} {:>9}",
        "policy",
        "energy_kWh",
        "SLATAH%",
        "PDM%",
        "SLAV_e-5",
        "ESV_e-3",
        "migrations",
        "shutdowns",
        "active",
        "imbalance"
    );
    for x in &r.summaries {
        let _ = writeln!(
            s,
            "{:<14} {:>10.2} {:>8.2} {:>7.3} {:>9.3} {:>8.3} {:>10.0} {:>9.0} {:>8.1} {:>9.3}",
            x.policy,
            x.energy_kwh,
            x.slatah * 100.0,
            x.pdm * 100.0,
            x.slav * 1e5,
            x.esv * 1e3,
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
        "policy,day,hosts,vms,energy_kwh,slatah,pdm,slav,esv,migrations,hotspot_migrations,host_shutdowns,mean_active_hosts,load_imbalance\n",
    );
    for d in &r.days {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.6},{:.8},{:.8},{:.10},{:.10},{},{},{},{:.4},{:.6}",
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
            d.load_imbalance
        );
    }
    s
}

/// Summary CSV (medians, plus total energy).
pub fn summary_csv(r: &Results) -> String {
    let mut s = String::from(
        "policy,days,energy_kwh_median,energy_kwh_total,slatah,pdm,slav,esv,migrations,hotspot_migrations,host_shutdowns,mean_active_hosts,load_imbalance\n",
    );
    for x in &r.summaries {
        let _ = writeln!(
            s,
            "{},{},{:.6},{:.6},{:.8},{:.8},{:.10},{:.10},{},{},{},{:.4},{:.6}",
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
            x.load_imbalance
        );
    }
    s
}

/// SVG scatter plot: median energy per day (x) against SLAV (y), one labelled
/// point per policy.
pub fn plot_svg(r: &Results) -> Result<String, String> {
    let pts: Vec<(f64, f64, &str)> = r
        .summaries
        .iter()
        .map(|x| (x.energy_kwh, x.slav * 1e5, x.policy.as_str()))
        .collect();
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, 0.0f64, 0.0f64);
    for p in &pts {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y1 = y1.max(p.1);
    }
    if pts.is_empty() {
        (x0, x1) = (0.0, 1.0);
    }
    let xpad = ((x1 - x0) * 0.1).max(1.0);
    let ymax = if y1 > 0.0 { y1 * 1.15 } else { 1.0 };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (800, 560)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Energy vs SLA violation (median per day)",
                ("sans-serif", 20),
            )
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - xpad).max(0.0)..(x1 + xpad), 0.0..ymax)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("energy, kWh per day")
            .y_desc("SLAV (x 1e-5)")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(pts.iter().map(|(x, y, name)| {
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 4, BLUE.filled())
                    + Text::new(name.to_string(), (6, -14), ("sans-serif", 13))
            }))
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(out)
}
