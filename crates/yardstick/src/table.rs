//! Benchmark results as GitHub Markdown tables (docs/BENCHMARKS.md).
//!
//! Columns whose cells all look numeric are right-aligned, in the text and
//! in the alignment row (`---:`) so that they render right-aligned too. The
//! table crates (tabled, comfy-table) pad cells but write no alignment row
//! (tabled issue #539), hence this small printer.

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of strings with a header row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row. Short rows are padded with empty cells; cells beyond
    /// the header count are kept and get an empty header.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True without data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn columns(&self) -> usize {
        self.rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0)
    }

    fn cell(row: &[String], i: usize) -> &str {
        row.get(i).map_or("", String::as_str)
    }

    fn alignments(&self) -> Vec<Align> {
        (0..self.columns())
            .map(|i| {
                let mut cells = self
                    .rows
                    .iter()
                    .map(|r| Self::cell(r, i))
                    .filter(|c| !c.is_empty())
                    .peekable();
                if cells.peek().is_some() && cells.all(looks_numeric) {
                    Align::Right
                } else {
                    Align::Left
                }
            })
            .collect()
    }

    fn widths(&self, shown: impl Fn(&str) -> String) -> Vec<usize> {
        (0..self.columns())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| Self::cell(r, i))
                    .chain([Self::cell(&self.headers, i)])
                    .map(|c| shown(c).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// GitHub-flavoured Markdown; `|` inside cells is escaped.
    pub fn to_markdown(&self) -> String {
        let aligns = self.alignments();
        let esc = |s: &str| s.replace('|', "\\|");
        let widths: Vec<usize> = self.widths(esc).into_iter().map(|w| w.max(3)).collect();
        let line = |row: &[String]| {
            let cells: Vec<String> = (0..widths.len())
                .map(|i| pad(&esc(Self::cell(row, i)), widths[i], aligns[i]))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.headers);
        let seps: Vec<String> = widths
            .iter()
            .zip(&aligns)
            .map(|(w, a)| match a {
                Align::Left => "-".repeat(*w),
                Align::Right => format!("{}:", "-".repeat(w - 1)),
            })
            .collect();
        out.push_str(&format!("| {} |\n", seps.join(" | ")));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

fn pad(s: &str, width: usize, align: Align) -> String {
    let fill = width.saturating_sub(s.chars().count());
    match align {
        Align::Left => format!("{s}{}", " ".repeat(fill)),
        Align::Right => format!("{}{s}", " ".repeat(fill)),
    }
}

/// True for cells like `12`, `-3.5`, `0.83x`, `42 ms`, `1.5 GiB`, `25%`,
/// `n/a`: a number optionally followed by a unit.
fn looks_numeric(cell: &str) -> bool {
    let c = cell.trim();
    if c == "n/a" || c == "-" {
        return true;
    }
    let num_end = c
        .char_indices()
        .find(|&(i, ch)| {
            !(ch.is_ascii_digit() || ch == '.' || ((ch == '-' || ch == '+') && i == 0))
        })
        .map_or(c.len(), |(i, _)| i);
    let (num, unit) = c.split_at(num_end);
    num.parse::<f64>().is_ok()
        && unit
            .trim()
            .chars()
            .all(|ch| ch.is_alphabetic() || "%/".contains(ch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(["workload", "time ms", "ratio"]);
        t.row(["idle", "12.5", "0.83x"])
            .row(["dirtier|hot", "1200", "n/a"]);
        t
    }

    #[test]
    fn markdown() {
        let md = sample().to_markdown();
        let expect = "\
| workload     | time ms | ratio |
| ------------ | ------: | ----: |
| idle         |    12.5 | 0.83x |
| dirtier\\|hot |    1200 |   n/a |
";
        assert_eq!(md, expect);
    }

    #[test]
    fn ragged_rows() {
        let mut t = sample();
        t.row(["kvstore"]);
        assert_eq!(t.len(), 3);
        assert!(
            t.to_markdown()
                .ends_with("| kvstore      |         |       |\n")
        );
    }

    #[test]
    fn numeric_detection() {
        for yes in [
            "1", "-2.5", "0.83x", "42 ms", "1.5 GiB", "25%", "n/a", "3 MB/s",
        ] {
            assert!(looks_numeric(yes), "{yes}");
        }
        for no in ["idle", "x1", "1.2.3", "", "ms 3"] {
            assert!(!looks_numeric(no), "{no}");
        }
    }
}
