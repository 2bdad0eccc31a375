//! Results: per-policy summaries, the text table, CSV, JSON and the SVG plot.

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
    /// The placement's tie tolerance, W (left out when 0, the exact rule).
    #[serde(skip_serializing_if = "is_zero")]
    pub tie_tolerance_w: f64,
    pub summaries: Vec<Summary>,
    pub days: Vec<DayResult>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
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
    let days = r.summaries.first().map_or(0, |x| x.days);
    let model = r.summaries.first().map_or("", |x| x.model.as_str());
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header([
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
        "imbalance",
    ]);
    for x in &r.summaries {
        t.add_row([
            x.policy.clone(),
            format!("{:.2}", x.energy_kwh),
            format!("{:.2}", x.slatah * 100.0),
            format!("{:.3}", x.pdm * 100.0),
            format!("{:.3}", x.slav * 1e5),
            format!("{:.3}", x.esv * 1e3),
            format!("{:.2}", x.slatah_ferry * 100.0),
            format!("{:.3}", x.esv_ferry * 1e3),
            format!("{:.0}", x.migrations),
            format!("{:.0}", x.host_shutdowns),
            format!("{:.1}", x.mean_active_hosts),
            format!("{:.3}", x.load_imbalance),
        ]);
    }
    for i in 1..12 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    let ties = if r.tie_tolerance_w > 0.0 {
        format!("; tie tolerance {} W", r.tie_tolerance_w)
    } else {
        String::new()
    };
    format!(
        "Medians over {days} day(s); model {model}{ties}; scenario {}; traces {}\n\
         SLATAH, PDM, SLAV, ESV in CloudSim's definitions; SLATAH_F, ESV_F in Ferry's (docs/SIMULATOR.md)\n{t}\n",
        r.scenario, r.trace_dir
    )
}

/// Rows as CSV, with a header row named after their fields.
fn csv_of<T: Serialize>(rows: &[T]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One CSV row of a [`DayResult`]: every field but the per-interval series
/// (`modes`, `pool_load`), which only results.json carries.
#[derive(Serialize)]
struct DayRow<'a> {
    policy: &'a str,
    day: &'a str,
    model: &'a str,
    hosts: usize,
    vms: usize,
    energy_kwh: f64,
    slatah: f64,
    pdm: f64,
    slav: f64,
    esv: f64,
    slatah_ferry: f64,
    pdm_ferry: f64,
    slav_ferry: f64,
    esv_ferry: f64,
    migrations: u64,
    hotspot_migrations: u64,
    host_shutdowns: u64,
    mean_active_hosts: f64,
    load_imbalance: f64,
    vms_at_end: usize,
    mode_switches: u64,
    balance_intervals: usize,
}

impl<'a> From<&'a DayResult> for DayRow<'a> {
    fn from(d: &'a DayResult) -> Self {
        DayRow {
            policy: &d.policy,
            day: &d.day,
            model: &d.model,
            hosts: d.hosts,
            vms: d.vms,
            energy_kwh: d.energy_kwh,
            slatah: d.slatah,
            pdm: d.pdm,
            slav: d.slav,
            esv: d.esv,
            slatah_ferry: d.slatah_ferry,
            pdm_ferry: d.pdm_ferry,
            slav_ferry: d.slav_ferry,
            esv_ferry: d.esv_ferry,
            migrations: d.migrations,
            hotspot_migrations: d.hotspot_migrations,
            host_shutdowns: d.host_shutdowns,
            mean_active_hosts: d.mean_active_hosts,
            load_imbalance: d.load_imbalance,
            vms_at_end: d.vms_at_end,
            mode_switches: d.mode_switches,
            balance_intervals: d.balance_intervals,
        }
    }
}

/// Per-day CSV: one row per policy and day, every scalar field of
/// [`DayResult`].
pub fn days_csv(r: &Results) -> Result<String, csv::Error> {
    let rows: Vec<DayRow> = r.days.iter().map(DayRow::from).collect();
    csv_of(&rows)
}

/// Summary CSV: one row per policy, every field of [`Summary`] (medians
/// per day, and the total energy).
pub fn summary_csv(r: &Results) -> Result<String, csv::Error> {
    csv_of(&r.summaries)
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
