//! SVG plots for benchmark reports, drawn with plotters' SVG backend (text
//! is emitted as SVG `<text>`, so no font files are needed).
//!
//! Every function returns the SVG document as a string; [`save`] writes it.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One pre-copy round of a migration, as plotted by [`rounds_svg`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundPoint {
    /// Round number (1-based by convention; the final stop-and-copy is the
    /// last round).
    pub round: u32,
    /// Pages sent in the round.
    pub pages_sent: u64,
    /// Pages dirtied per second during the round.
    pub dirty_rate: f64,
}

/// A named series of values, one per category (see [`grouped_bars_svg`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend label, e.g. `Ferry` or `QEMU`.
    pub name: String,
    /// One value per category; missing trailing values are not drawn.
    pub values: Vec<f64>,
}

/// A named line of (x, y) points (see [`lines_svg`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Polyline {
    /// Legend label.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 600;

fn err(e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: "<svg>".into(),
        detail: e.to_string(),
    }
}

fn check_finite(what: &str, values: impl IntoIterator<Item = f64>) -> Result<(), Error> {
    match values.into_iter().find(|v| !v.is_finite()) {
        Some(v) => Err(err(format!("{what} contains a non-finite value ({v})"))),
        None => Ok(()),
    }
}

/// Upper end of a y axis starting at 0 that shows `max` with headroom.
fn y_top(max: f64) -> f64 {
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

/// Writes an SVG document to `path`.
pub fn save(path: &Path, svg: &str) -> Result<(), Error> {
    std::fs::write(path, svg).map_err(|e| Error::Plot {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Per-round plot of a migration: pages sent per round (bars, top) and the
/// dirty rate per round (line with points, bottom).
pub fn rounds_svg(title: &str, rounds: &[RoundPoint]) -> Result<String, Error> {
    if rounds.is_empty() {
        return Err(err("no rounds to plot"));
    }
    check_finite("dirty rates", rounds.iter().map(|r| r.dirty_rate))?;
    let first = rounds.iter().map(|r| r.round).min().unwrap_or(0) as f64;
    let last = rounds.iter().map(|r| r.round).max().unwrap_or(0) as f64;
    let x_range = (first - 0.5)..(last + 0.5);
    let n_labels = (last - first) as usize + 1;
    let max_sent = rounds.iter().map(|r| r.pages_sent).max().unwrap_or(0) as f64;
    let max_rate = rounds.iter().map(|r| r.dirty_rate).fold(0.0, f64::max);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2 - 20);

        let mut chart = ChartBuilder::on(&top)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone(), 0f64..y_top(max_sent))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("round")
            .y_desc("pages sent")
            .x_labels(n_labels.min(30))
            .x_label_formatter(&integer_label)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(rounds.iter().map(|r| {
                let x = r.round as f64;
                Rectangle::new(
                    [(x - 0.35, 0.0), (x + 0.35, r.pages_sent as f64)],
                    BLUE.mix(0.7).filled(),
                )
            }))
            .map_err(err)?;

        let mut chart = ChartBuilder::on(&bottom)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, 0f64..y_top(max_rate))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("round")
            .y_desc("dirty pages/s")
            .x_labels(n_labels.min(30))
            .x_label_formatter(&integer_label)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        let pts: Vec<(f64, f64)> = rounds
            .iter()
            .map(|r| (r.round as f64, r.dirty_rate))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), RED.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, RED.filled())))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Grouped bar chart: one group per category, one bar per series in each
/// group, with a legend (e.g. categories = workloads, series = Ferry and
/// QEMU, values = guest-visible downtime).
pub fn grouped_bars_svg(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Series],
) -> Result<String, Error> {
    if categories.is_empty() || series.is_empty() {
        return Err(err("a grouped bar chart needs categories and series"));
    }
    for s in series {
        if s.values.len() > categories.len() {
            return Err(err(format!(
                "series {:?} has {} values for {} categories",
                s.name,
                s.values.len(),
                categories.len()
            )));
        }
        check_finite(&format!("series {:?}", s.name), s.values.iter().copied())?;
    }
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let min = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::min);
    let n = categories.len();
    let y_min = if min < 0.0 { min * 1.1 } else { 0.0 };
    let width = 0.8 / series.len() as f64;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, y_min..y_top(max))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_label)
            .x_labels(0)
            .draw()
            .map_err(err)?;
        // Category names under their groups, in pixel coordinates.
        let font =
            TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, name) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64, y_min));
            root.draw(&Text::new(name.clone(), (px, py + 8), font.clone()))
                .map_err(err)?;
        }
        for (si, s) in series.iter().enumerate() {
            let color = Palette99::pick(si).to_rgba();
            let offset = -0.4 + width * si as f64;
            chart
                .draw_series(s.values.iter().enumerate().map(|(ci, v)| {
                    let x0 = ci as f64 + offset;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.92, *v)], color.filled())
                }))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Line chart of several named lines with points and a legend.
pub fn lines_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Polyline],
) -> Result<String, Error> {
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .collect();
    if all.is_empty() {
        return Err(err("no points to plot"));
    }
    check_finite("points", all.iter().flat_map(|p| [p.0, p.1]))?;
    let (x0, x1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        (x0 - 1.0, x0 + 1.0)
    };
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max);
    let y_min = all.iter().map(|p| p.1).fold(0.0, f64::min);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y_min..y_top(y_max))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(err)?;
        for (i, l) in lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(l.points.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(l.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
            chart
                .draw_series(l.points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Labels an f64 axis tick only at whole numbers (round numbers, counts).
fn integer_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{:.0}", x)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_plot_has_bars_labels_and_line() {
        let rounds: Vec<RoundPoint> = (1..=5)
            .map(|r| RoundPoint {
                round: r,
                pages_sent: 10_000 / r as u64,
                dirty_rate: 3000.0 + r as f64 * 100.0,
            })
            .collect();
        let svg = rounds_svg("dirtier 1 Gbit/s", &rounds).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("dirtier 1 Gbit/s"));
        assert!(svg.contains("pages sent") && svg.contains("dirty pages/s"));
        assert!(svg.matches("<rect").count() > 5);
        assert!(svg.contains("<polyline"));
        assert!(rounds_svg("x", &[]).is_err());
    }

    #[test]
    fn grouped_plot_has_legend_and_categories() {
        let cats = vec![
            "idle".to_string(),
            "dirtier".to_string(),
            "kvstore".to_string(),
        ];
        let series = vec![
            Series {
                name: "Ferry".into(),
                values: vec![10.0, 200.0, 50.0],
            },
            Series {
                name: "QEMU".into(),
                values: vec![12.0, 250.0, 70.0],
            },
        ];
        let svg = grouped_bars_svg("guest downtime", "ms", &cats, &series).unwrap();
        for word in [
            "idle",
            "dirtier",
            "kvstore",
            "Ferry",
            "QEMU",
            "guest downtime",
        ] {
            assert!(svg.contains(word), "{word} missing");
        }
        let bad = vec![Series {
            name: "x".into(),
            values: vec![1.0; 4],
        }];
        assert!(grouped_bars_svg("t", "y", &cats, &bad).is_err());
        let nan = vec![Series {
            name: "x".into(),
            values: vec![f64::NAN],
        }];
        assert!(grouped_bars_svg("t", "y", &cats, &nan).is_err());
    }

    #[test]
    fn lines_plot_and_save() {
        let lines = vec![Polyline {
            name: "rate".into(),
            points: vec![(0.0, 1.0), (1.0, 3.0)],
        }];
        let svg = lines_svg("t", "s", "pages/s", &lines).unwrap();
        assert!(svg.contains("rate") && svg.contains("<polyline"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.svg");
        save(&p, &svg).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), svg);
        let e = save(Path::new("/nonexistent/dir/x.svg"), &svg).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/x.svg"));
        assert!(lines_svg("t", "x", "y", &[]).is_err());
    }
}
