//! Parser for the lines the guests print on their serial port.

/// One line of guest output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `READY guest=NAME vcpus=N mem=BYTES tsc_khz=K ...`, once at boot.
    Ready {
        guest: String,
        vcpus: u32,
        mem: u64,
        tsc_khz: u64,
        /// Every `key=value` of the line, including the ones above, in order.
        fields: Vec<(String, String)>,
    },
    /// `HB seq=N tsc=T rate=R`: heartbeat number `seq` (from 0, +1 each),
    /// the guest's TSC when it was written, and its work rate (pages/s for
    /// the dirtier, ops/s for kvstore, 0 for idle).
    Heartbeat { seq: u64, tsc: u64, rate: u64 },
    /// `VERIFY ok pages=N ...` or `VERIFY FAIL page=P expected=E found=F ...`.
    Verify {
        ok: bool,
        /// Pages checked (for `ok`; 0 when the line does not say).
        pages: u64,
        /// Everything after `ok`/`FAIL`.
        detail: String,
    },
    /// `KV ops=N ops_s=R p50_ns=.. p99_ns=.. p999_ns=..`, kvstore, every second.
    Kv {
        ops: u64,
        ops_s: u64,
        p50_ns: u64,
        p99_ns: u64,
        p999_ns: u64,
    },
    /// `ERROR ...`: the guest refused its parameters or could not run.
    Error(String),
    /// `EXCEPTION vector=V err=E rip=R`: a CPU exception; the guest exits with 0x7f.
    Exception { vector: u64, err: u64, rip: u64 },
    /// Anything else (including malformed lines with a known prefix).
    Other(String),
}

impl Line {
    /// The guest TSC the line carries (heartbeats), used by [`crate::stamp`].
    pub fn tsc(&self) -> Option<u64> {
        match self {
            Line::Heartbeat { tsc, .. } => Some(*tsc),
            _ => None,
        }
    }
}

/// Parses one line (without or with its trailing newline).
pub fn parse_line(line: &str) -> Line {
    let line = line.trim_end_matches(['\n', '\r']);
    parse_known(line).unwrap_or_else(|| Line::Other(line.to_string()))
}

fn parse_known(line: &str) -> Option<Line> {
    let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
    match head {
        "HB" => {
            let f = Fields::new(rest);
            Some(Line::Heartbeat {
                seq: f.num("seq")?,
                tsc: f.num("tsc")?,
                rate: f.num("rate")?,
            })
        }
        "READY" => {
            let f = Fields::new(rest);
            Some(Line::Ready {
                guest: f.get("guest")?.to_string(),
                vcpus: u32::try_from(f.num("vcpus")?).ok()?,
                mem: f.num("mem")?,
                tsc_khz: f.num("tsc_khz")?,
                fields: f
                    .0
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        }
        "VERIFY" => {
            let (verdict, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            let ok = match verdict {
                "ok" => true,
                "FAIL" => false,
                _ => return None,
            };
            let pages = Fields::new(detail).num("pages").unwrap_or(0);
            Some(Line::Verify {
                ok,
                pages,
                detail: detail.to_string(),
            })
        }
        "KV" => {
            let f = Fields::new(rest);
            Some(Line::Kv {
                ops: f.num("ops")?,
                ops_s: f.num("ops_s")?,
                p50_ns: f.num("p50_ns")?,
                p99_ns: f.num("p99_ns")?,
                p999_ns: f.num("p999_ns")?,
            })
        }
        "ERROR" => Some(Line::Error(rest.to_string())),
        "EXCEPTION" => {
            let f = Fields::new(rest);
            Some(Line::Exception {
                vector: f.num("vector")?,
                err: f.num("err")?,
                rip: f.num("rip")?,
            })
        }
        _ => None,
    }
}

/// The `key=value` words of a line.
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn new(s: &'a str) -> Self {
        Fields(
            s.split_ascii_whitespace()
                .filter_map(|w| w.split_once('='))
                .collect(),
        )
    }
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    /// A decimal or `0x` hexadecimal number.
    fn num(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind() {
        let r = parse_line(
            "READY guest=dirtier vcpus=2 mem=1073216512 tsc_khz=2596200 tsc_src=pit boot_us=15374 hb_us=1000 ws=268435456 rate=0\n",
        );
        match r {
            Line::Ready {
                guest,
                vcpus,
                mem,
                tsc_khz,
                fields,
            } => {
                assert_eq!(
                    (guest.as_str(), vcpus, mem, tsc_khz),
                    ("dirtier", 2, 1073216512, 2596200)
                );
                assert!(fields.contains(&("ws".into(), "268435456".into())));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_line("HB seq=7 tsc=2853314369348 rate=1615786\r\n"),
            Line::Heartbeat {
                seq: 7,
                tsc: 2853314369348,
                rate: 1615786
            }
        );
        assert_eq!(
            parse_line("VERIFY ok pages=65536 gen=28"),
            Line::Verify {
                ok: true,
                pages: 65536,
                detail: "pages=65536 gen=28".into()
            }
        );
        assert_eq!(
            parse_line("VERIFY FAIL page=12 expected=3 found=2 failures=1"),
            Line::Verify {
                ok: false,
                pages: 0,
                detail: "page=12 expected=3 found=2 failures=1".into()
            }
        );
        assert_eq!(
            parse_line("KV ops=1034930 ops_s=1018756 p50_ns=87 p99_ns=767 p999_ns=1279"),
            Line::Kv {
                ops: 1034930,
                ops_s: 1018756,
                p50_ns: 87,
                p99_ns: 767,
                p999_ns: 1279
            }
        );
        assert_eq!(
            parse_line("ERROR bad parameter ws=abc: expected a size"),
            Line::Error("bad parameter ws=abc: expected a size".into())
        );
        assert_eq!(
            parse_line("EXCEPTION vector=14 err=0x6 rip=0x101234"),
            Line::Exception {
                vector: 14,
                err: 6,
                rip: 0x101234
            }
        );
    }

    #[test]
    fn malformed_lines_are_other() {
        for l in [
            "HB seq=x tsc=1 rate=0",
            "HB seq=1",
            "VERIFY maybe",
            "KV ops=1",
            "READY vcpus=1",
            "hello",
            "",
        ] {
            assert_eq!(parse_line(l), Line::Other(l.into()), "{l}");
        }
        assert_eq!(parse_line("HB seq=1 tsc=5 rate=0").tsc(), Some(5));
        assert_eq!(parse_line("VERIFY ok pages=1").tsc(), None);
    }
}
