//! The trials summed up by cell: the table of `ferry bench faults`.

use std::time::Duration;

use yardstick::table::Table;

use super::trial::Outcome;

/// One row: the trials of one cell (or one kind of random trial).
#[derive(Debug, Default, serde::Serialize)]
pub struct Row {
    pub cell: String,
    pub trials: usize,
    /// Trials whose failure was injected (the others count for nothing).
    pub injected: usize,
    pub on_source: usize,
    pub on_destination: usize,
    /// Of the injected trials that had to survive, those that lost the VM.
    pub lost: usize,
    pub integrity_ok: usize,
    /// Injected trials after which a host ran the VM or a check failed.
    pub integrity_judged: usize,
    pub split: usize,
    pub repair_p50_ms: Option<f64>,
    pub repair_p95_ms: Option<f64>,
}

/// Rows in the order their cells first ran.
pub fn rows(outcomes: &[Outcome]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut repairs: Vec<Vec<f64>> = Vec::new();
    for o in outcomes {
        let i = match rows.iter().position(|r| r.cell == o.label) {
            Some(i) => i,
            None => {
                rows.push(Row {
                    cell: o.label.clone(),
                    ..Row::default()
                });
                repairs.push(Vec::new());
                rows.len() - 1
            }
        };
        let r = &mut rows[i];
        r.trials += 1;
        if !o.injected {
            continue;
        }
        r.injected += 1;
        r.on_source += usize::from(o.on_source);
        r.on_destination += usize::from(o.on_destination);
        r.lost += usize::from(o.survivable && !o.on_source && !o.on_destination);
        r.integrity_ok += usize::from(o.integrity_ok == Some(true));
        r.integrity_judged += usize::from(o.integrity_ok.is_some());
        r.split += usize::from(o.split);
        repairs[i].extend(o.repair_ms);
    }
    for (r, mut v) in rows.iter_mut().zip(repairs) {
        v.sort_by(f64::total_cmp);
        r.repair_p50_ms = quantile(&v, 0.5);
        r.repair_p95_ms = quantile(&v, 0.95);
    }
    rows
}

/// The nearest-rank quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new([
        "cell (mode / failure / point)",
        "trials",
        "injected",
        "VM on source",
        "VM on destination",
        "lost (survivable)",
        "integrity OK / judged",
        "split-brain",
        "repair p50",
        "repair p95",
    ]);
    let ms = |v: Option<f64>| {
        v.map_or("-".to_string(), |m| {
            units::format_duration(Duration::from_millis(m.round() as u64))
        })
    };
    for r in rows {
        t.row([
            r.cell.clone(),
            r.trials.to_string(),
            r.injected.to_string(),
            r.on_source.to_string(),
            r.on_destination.to_string(),
            r.lost.to_string(),
            if r.integrity_judged == 0 {
                "-".to_string()
            } else {
                format!("{}/{}", r.integrity_ok, r.integrity_judged)
            },
            r.split.to_string(),
            ms(r.repair_p50_ms),
            ms(r.repair_p95_ms),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(label: &str, injected: bool, on_source: bool, repair: f64) -> Outcome {
        Outcome {
            label: label.into(),
            injected,
            survivable: true,
            on_source,
            on_destination: false,
            integrity_ok: Some(on_source),
            split: false,
            repair_ms: Some(repair),
            report: None,
            error: None,
        }
    }

    #[test]
    fn rows_count_injected_trials_and_lost_vms() {
        let rows = rows(&[
            outcome("a", true, true, 10.0),
            outcome("b", true, false, 1.0),
            outcome("a", true, true, 30.0),
            outcome("a", false, false, 99.0),
        ]);
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!((a.trials, a.injected, a.on_source, a.lost), (3, 2, 2, 0));
        assert_eq!((a.repair_p50_ms, a.repair_p95_ms), (Some(10.0), Some(30.0)));
        assert_eq!((rows[1].lost, rows[1].integrity_ok), (1, 0));
        assert!(table(&rows).to_markdown().contains("| b "));
    }
}
