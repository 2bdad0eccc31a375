//! Reading PlanetLab CoMon CPU traces: one folder per day, one file per VM,
//! one integer CPU percentage per line.

use std::path::{Path, PathBuf};

/// Problems with trace files; each names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace directory {0} does not exist or is not a directory")]
    MissingDir(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no trace files")]
    Empty(PathBuf),
    #[error("trace directory {0} has no day folders")]
    NoDays(PathBuf),
    #[error("{path}:{line}: {text:?} is not a CPU percentage (a number from 0 to 100)")]
    BadValue {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path} has {found} samples, expected {expected}")]
    WrongLength {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
}

/// One day of traces.
#[derive(Debug, Clone)]
pub struct Day {
    /// Folder name, e.g. `20110303`.
    pub name: String,
    /// File names, in the order VMs are numbered in (see `FileOrder`).
    pub files: Vec<String>,
    /// CPU utilization as a fraction (percent / 100), interval by interval:
    /// every VM's at interval 0, then at 1, ... (the simulator reads one
    /// interval of every VM at a time; stored by VM, those reads went to a
    /// separate cache line per VM and were a tenth of THR's time at 16,000
    /// hosts; docs/BENCHMARKS.md, "Scale").
    by_interval: Vec<f64>,
    vms: usize,
}

impl Day {
    /// A day from each VM's utilization per interval (all of one length).
    pub fn new(name: String, files: Vec<String>, by_vm: &[Vec<f64>]) -> Self {
        let samples = by_vm.first().map_or(0, Vec::len);
        let mut day = Day::zeros(name, files, by_vm.len(), samples);
        day.set_vms(0, by_vm);
        day
    }

    /// A day of `vms` VMs and `samples` intervals, all zero.
    fn zeros(name: String, files: Vec<String>, vms: usize, samples: usize) -> Self {
        Day {
            name,
            files,
            by_interval: vec![0.0; vms * samples],
            vms,
        }
    }

    /// Sets the utilization of VMs `first..first + by_vm.len()`, interval
    /// by interval (a few VMs at a time, each interval's values for them
    /// are written together).
    fn set_vms(&mut self, first: usize, by_vm: &[Vec<f64>]) {
        let samples = self.samples();
        assert!(
            by_vm.iter().all(|u| u.len() == samples),
            "every VM has as many samples"
        );
        for t in 0..samples {
            let at = &mut self.by_interval[t * self.vms + first..][..by_vm.len()];
            for (x, u) in at.iter_mut().zip(by_vm) {
                *x = u[t];
            }
        }
    }

    /// VMs (trace files) in the day.
    pub fn vms(&self) -> usize {
        self.vms
    }

    /// Intervals in the day.
    pub fn samples(&self) -> usize {
        self.by_interval.len().checked_div(self.vms).unwrap_or(0)
    }

    /// Every VM's utilization at interval `t`, indexed by VM.
    pub fn at(&self, t: usize) -> &[f64] {
        &self.by_interval[t * self.vms..(t + 1) * self.vms]
    }

    /// VM `v`'s utilization at intervals `from..=to`, oldest first.
    pub fn window(&self, v: usize, from: usize, to: usize) -> impl Iterator<Item = f64> + '_ {
        (from..=to).map(move |t| self.by_interval[t * self.vms + v])
    }
}

/// Lists the day folders under `dir`, sorted by name.
pub fn list_days(dir: &Path) -> Result<Vec<String>, TraceError> {
    if !dir.is_dir() {
        return Err(TraceError::MissingDir(dir.to_path_buf()));
    }
    let io = |e| TraceError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut days = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            days.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    days.sort();
    if days.is_empty() {
        return Err(TraceError::NoDays(dir.to_path_buf()));
    }
    Ok(days)
}

/// The order a day's trace files are numbered in (VM i replays file i, and
/// VM types are given by number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOrder {
    /// Sorted by name, byte-wise: the same on every machine.
    #[default]
    Name,
    /// As the file system lists the folder (Java's `File.listFiles`, which
    /// CloudSim's PlanetLab examples use): repeatable on one copy of the
    /// traces, different on another.
    Listing,
}

/// Reads one day folder; every file must have exactly `samples` values.
pub fn load_day(
    dir: &Path,
    name: &str,
    samples: usize,
    order: FileOrder,
) -> Result<Day, TraceError> {
    let day_dir = dir.join(name);
    if !day_dir.is_dir() {
        return Err(TraceError::MissingDir(day_dir));
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| TraceError::Io { path: p, source: e }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&day_dir).map_err(io(&day_dir))? {
        let entry = entry.map_err(io(&day_dir))?;
        if entry.file_type().map_err(io(&day_dir))?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                files.push(name);
            }
        }
    }
    if order == FileOrder::Name {
        files.sort();
    }
    if files.is_empty() {
        return Err(TraceError::Empty(day_dir));
    }
    // Parsed 8 files at a time (a cache line of each interval's values),
    // so the day is never held twice.
    let mut day = Day::zeros(name.to_string(), Vec::new(), files.len(), samples);
    let mut some = Vec::with_capacity(8);
    for (i, chunk) in files.chunks(8).enumerate() {
        some.clear();
        for f in chunk {
            let path = day_dir.join(f);
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            some.push(parse_trace(&path, &text, samples)?);
        }
        day.set_vms(i * 8, &some);
    }
    day.files = files;
    Ok(day)
}

/// Parses one trace file's text into utilization fractions. Blank lines at
/// the end of the file (an editor's trailing newline) are ignored; a blank
/// line between values is an error.
pub fn parse_trace(path: &Path, text: &str, samples: usize) -> Result<Vec<f64>, TraceError> {
    let mut out = Vec::with_capacity(samples);
    let body = text.trim_end_matches(|c: char| c.is_ascii_whitespace());
    for (i, line) in body.lines().enumerate() {
        let t = line.trim();
        let v: f64 = t.parse().map_err(|_| TraceError::BadValue {
            path: path.to_path_buf(),
            line: i + 1,
            text: t.to_string(),
        })?;
        if !(0.0..=100.0).contains(&v) {
            return Err(TraceError::BadValue {
                path: path.to_path_buf(),
                line: i + 1,
                text: t.to_string(),
            });
        }
        out.push(v / 100.0);
    }
    if out.len() != samples {
        return Err(TraceError::WrongLength {
            path: path.to_path_buf(),
            found: out.len(),
            expected: samples,
        });
    }
    Ok(out)
}

/// Where the PlanetLab traces are by default: `../shared/traces/planetlab`
/// from the current directory, then the same next to this source tree's
/// repository, then any `shared/traces/planetlab` in a parent directory.
pub fn default_trace_dir() -> Option<PathBuf> {
    let rel = Path::new("shared").join("traces").join("planetlab");
    let mut tries = vec![Path::new("..").join(&rel)];
    // crates/sim -> repo root -> its parent.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(root_parent) = manifest.ancestors().nth(3) {
        tries.push(root_parent.join(&rel));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for a in cwd.ancestors() {
            tries.push(a.join(&rel));
        }
    }
    tries.into_iter().find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_file_and_line() {
        let p = Path::new("d/vm a");
        assert_eq!(
            parse_trace(p, "1\n2\n3\n", 3).unwrap(),
            vec![0.01, 0.02, 0.03]
        );
        let e = parse_trace(p, "1\nx\n3\n", 3).unwrap_err().to_string();
        assert!(e.contains("d/vm a:2") && e.contains("\"x\""), "{e}");
        // Trailing blank lines are accepted (a saved file's last newline, and more).
        assert_eq!(parse_trace(p, "1\n2\n3\n\n", 3).unwrap().len(), 3);
        assert_eq!(parse_trace(p, "1\n2\n3\r\n\r\n \n", 3).unwrap().len(), 3);
        let e = parse_trace(p, "1\n2\n", 3).unwrap_err().to_string();
        assert!(e.contains("has 2 samples, expected 3"), "{e}");
        let e = parse_trace(p, "1\n\n3\n", 3).unwrap_err().to_string();
        assert!(e.contains(":2"), "{e}");
        let e = parse_trace(p, "1\n101\n3\n", 3).unwrap_err().to_string();
        assert!(e.contains("101"), "{e}");
    }

    #[test]
    fn a_day_reads_by_interval_and_by_vm() {
        let by_vm = vec![vec![0.1, 0.2, 0.3], vec![0.4, 0.5, 0.6]];
        let d = Day::new("d".into(), vec!["a".into(), "b".into()], &by_vm);
        assert_eq!((d.vms(), d.samples()), (2, 3));
        assert_eq!(d.at(0), &[0.1, 0.4]);
        assert_eq!(d.at(2), &[0.3, 0.6]);
        assert_eq!(d.window(1, 0, 2).collect::<Vec<_>>(), by_vm[1]);
        assert_eq!(d.window(0, 1, 1).collect::<Vec<_>>(), vec![0.2]);
    }
}
