//! The machine's memory, from /proc/meminfo: what an agent declares for
//! its host when it is not told.

use std::path::Path;

use crate::HostmonError;

/// MemTotal of /proc/meminfo, in bytes.
pub fn mem_total() -> Result<u64, HostmonError> {
    let path = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(path).map_err(|error| HostmonError::Io {
        action: "read",
        path: path.into(),
        error,
    })?;
    parse_mem_total(&text).ok_or_else(|| HostmonError::Parse {
        path: path.into(),
        detail: "no MemTotal line in kB".into(),
    })
}

fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kb: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then(|| kb.checked_mul(1024))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_576_000 * 1024));
        assert_eq!(parse_mem_total("MemTotal: 12\n"), None);
        assert_eq!(parse_mem_total("MemFree: 12 kB\n"), None);
        assert!(mem_total().unwrap() > 0);
    }
}
