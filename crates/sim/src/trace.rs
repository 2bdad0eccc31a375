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
    /// Per VM, CPU utilization as a fraction (percent / 100) per interval.
    pub utilization: Vec<Vec<f64>>,
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
    let mut utilization = Vec::with_capacity(files.len());
    for f in &files {
        let path = day_dir.join(f);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        utilization.push(parse_trace(&path, &text, samples)?);
    }
    Ok(Day {
        name: name.to_string(),
        files,
        utilization,
    })
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
}
