//! What a cluster run leaves behind: samples of every host's load and VMs
//! and of the manager's pattern at each interval, and every order with its
//! outcome, downtime and bytes (`cluster.json`); and a plot of it
//! (`timeline.svg`): host loads over time, the planning mode as a band
//! along the top, each migration as a marker.

use std::collections::BTreeMap;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::observe::{Observed, OrderState, load_ratio};

/// A whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub started_unix_ms: u64,
    pub hosts: Vec<HostInfo>,
    pub link_bits_per_sec: u64,
    pub interval_ms: u64,
    pub samples: Vec<Sample>,
    /// Every order seen, by when it was issued.
    pub orders: Vec<OrderState>,
}

/// A host as set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub name: String,
    /// Its address (loopback without namespaces).
    pub ip: String,
    pub capacity_cpus: f64,
}

/// One interval's look.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// The manager's pattern (`auto`) and its mode then (`consolidate`,
    /// `balance`), from its latest interval; None before its first.
    pub pattern: Option<String>,
    pub mode: Option<String>,
    pub pool_load: Option<f64>,
    pub hosts: Vec<HostSample>,
    pub migrations_running: usize,
    pub migrations_ended: usize,
}

/// One host at one sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSample {
    pub name: String,
    /// False when it has no report (its agent is gone or not started).
    pub reporting: bool,
    pub load_cpus: Option<f64>,
    /// Load over capacity.
    pub load_ratio: Option<f64>,
    pub switched_off: bool,
    pub vms: Vec<String>,
}

impl Timeline {
    /// Records what was seen `t_s` seconds into the run.
    pub fn record(&mut self, t_s: f64, seen: &Observed, interval: Option<&Value>) {
        let hosts = self
            .hosts
            .iter()
            .map(|h| match seen.hosts.get(&h.name) {
                Some(r) => HostSample {
                    name: h.name.clone(),
                    reporting: true,
                    load_cpus: r.load_cpus,
                    load_ratio: load_ratio(r),
                    switched_off: r.switched_off,
                    vms: r.vms.iter().map(|v| v.name.clone()).collect(),
                },
                None => HostSample {
                    name: h.name.clone(),
                    reporting: false,
                    load_cpus: None,
                    load_ratio: None,
                    switched_off: false,
                    vms: Vec::new(),
                },
            })
            .collect();
        let text = |k: &str| interval.and_then(|i| i[k].as_str()).map(str::to_string);
        self.samples.push(Sample {
            t_s,
            pattern: text("pattern"),
            mode: text("mode"),
            pool_load: interval.and_then(|i| i["pool_load"].as_f64()),
            hosts,
            migrations_running: seen.running(),
            migrations_ended: seen.orders.len() - seen.running(),
        });
        self.merge_orders(seen);
    }

    /// Keeps the latest state of every order seen (orders are removed from
    /// the store after a while; the timeline keeps them).
    pub fn merge_orders(&mut self, seen: &Observed) {
        let mut all: BTreeMap<String, OrderState> =
            self.orders.drain(..).map(|o| (o.id.clone(), o)).collect();
        for (id, o) in &seen.orders {
            all.insert(id.clone(), o.clone());
        }
        self.orders = all.into_values().collect();
        self.orders.sort_by_key(|o| o.issued_unix_ms);
    }

    /// Seconds into the run of a UNIX time in ms.
    pub fn t_of(&self, unix_ms: u64) -> f64 {
        unix_ms.saturating_sub(self.started_unix_ms) as f64 / 1e3
    }

    /// The plot; see the module's documentation.
    pub fn svg(&self) -> anyhow::Result<String> {
        let end = self.samples.last().map_or(1.0, |s| s.t_s).max(1.0);
        let y_top = self
            .samples
            .iter()
            .flat_map(|s| s.hosts.iter().filter_map(|h| h.load_ratio))
            .fold(1.2, f64::max)
            + 0.1;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1000, 560)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    "ferry cluster: host loads, planning mode, migrations",
                    ("sans-serif", 20),
                )
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..end, 0.0..y_top)?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc("load / capacity")
                .draw()?;
            self.draw_band(&mut chart, y_top)?;
            for (i, h) in self.hosts.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64)> = self
                    .samples
                    .iter()
                    .filter_map(|s| Some((s.t_s, s.hosts.get(i)?.load_ratio?)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(h.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                    });
            }
            for (k, o) in self.orders.iter().enumerate() {
                let t = self.t_of(o.issued_unix_ms);
                // Labels step down so that close markers stay readable.
                let label_y = y_top * (0.86 - 0.05 * (k % 4) as f64);
                let color = if o.outcome.as_deref() == Some("completed") {
                    BLACK.to_rgba()
                } else {
                    RED.to_rgba()
                };
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(t, 0.0), (t, y_top * 0.9)],
                    color.stroke_width(1),
                )))?;
                let label = format!(
                    "{} {}>{} {}",
                    o.vm,
                    o.from,
                    o.to,
                    o.outcome.as_deref().unwrap_or("running")
                );
                chart.draw_series(std::iter::once(Text::new(
                    label,
                    (t, label_y),
                    ("sans-serif", 12).into_font().color(&color),
                )))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        Ok(svg)
    }

    /// The mode of each interval as a band along the top: blue for
    /// consolidate, orange for balance, grey before the first decision.
    fn draw_band<DB: DrawingBackend>(
        &self,
        chart: &mut ChartContext<
            '_,
            DB,
            Cartesian2d<
                plotters::coord::types::RangedCoordf64,
                plotters::coord::types::RangedCoordf64,
            >,
        >,
        y_top: f64,
    ) -> anyhow::Result<()> {
        let (lo, hi) = (y_top * 0.94, y_top);
        let mut prev = 0.0;
        for s in &self.samples {
            let color = match s.mode.as_deref() {
                Some("consolidate") => RGBColor(70, 130, 180),
                Some("balance") => RGBColor(255, 140, 0),
                _ => RGBColor(200, 200, 200),
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(prev, lo), (s.t_s, hi)],
                    color.filled(),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            prev = s.t_s;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::HostReport;

    fn report(host: &str, load: f64, vms: usize) -> HostReport {
        let json = serde_json::json!({
            "host": host, "unix_ms": 0, "interval_ms": 1000, "capacity_cpus": 0.5,
            "cpu_seconds": 1.0, "load_cpus": load, "throttled_periods": 0,
            "vms": (0..vms).map(|i| serde_json::json!({
                "name": format!("vm{i}"), "pid": 1, "state": "running", "vcpus": 1,
                "memory_bytes": 1, "resident_bytes": 1, "cpu_seconds": 0.0,
            })).collect::<Vec<_>>(),
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn samples_and_orders_make_json_and_a_plot() {
        let mut t = Timeline {
            started_unix_ms: 1_000,
            hosts: ["h1", "h2"]
                .map(|n| HostInfo {
                    name: n.into(),
                    ip: "10.0.0.1".into(),
                    capacity_cpus: 0.5,
                })
                .to_vec(),
            ..Timeline::default()
        };
        let mut seen = Observed::default();
        seen.hosts.insert("h1".into(), report("h1", 0.5, 2));
        let interval =
            serde_json::json!({"pattern": "auto", "mode": "consolidate", "pool_load": 0.5});
        t.record(1.0, &seen, Some(&interval));
        seen.orders.insert(
            "o1".into(),
            OrderState {
                id: "o1".into(),
                vm: "vm1".into(),
                from: "h1".into(),
                to: "h2".into(),
                reason: "hotspot".into(),
                issued_unix_ms: 2_500,
                outcome: Some("completed".into()),
                stage: Some("completed".into()),
                bytes_sent: 1 << 20,
                total_time_ms: Some(900.0),
                downtime_ms: Some(12.0),
                error: None,
            },
        );
        seen.hosts.insert("h2".into(), report("h2", 0.25, 1));
        t.record(2.0, &seen, Some(&interval));
        seen.orders.clear();
        t.record(3.0, &seen, None);
        assert_eq!(t.orders.len(), 1, "orders removed from the store are kept");
        assert!(!t.samples[0].hosts[1].reporting);
        assert_eq!(t.samples[1].hosts[0].load_ratio, Some(1.0));
        assert_eq!(t.samples[1].migrations_ended, 1);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["orders"][0]["downtime_ms"], 12.0);
        let svg = t.svg().unwrap();
        assert!(
            svg.contains("vm1 h1&gt;h2 completed") || svg.contains("vm1 h1>h2 completed"),
            "{svg}"
        );
        assert!(svg.contains("h2"));
    }
}
