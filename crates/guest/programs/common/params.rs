//! Guest parameters from the Multiboot command line (`key=value` words).
//!
//! Compiled into the guests (no_std) and into the host library, so the host
//! can validate a command line before booting and this code is unit-tested.

use core::fmt;

/// Which guest program a command line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Writes pages of a working set at a paced rate.
    Dirtier,
    /// Heartbeats only; a mostly-zero VM.
    Idle,
    /// In-memory hash table serving a generated request loop.
    Kvstore,
}

impl Program {
    /// The program's name, as in `NAMES` and on the READY line.
    pub const fn name(self) -> &'static str {
        match self {
            Program::Dirtier => "dirtier",
            Program::Idle => "idle",
            Program::Kvstore => "kvstore",
        }
    }

    /// The program called `name`.
    pub fn from_name(name: &str) -> Option<Program> {
        match name {
            "dirtier" => Some(Program::Dirtier),
            "idle" => Some(Program::Idle),
            "kvstore" => Some(Program::Kvstore),
            _ => None,
        }
    }
}

/// Dirtier access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessPattern {
    /// Each vCPU walks its partition in order.
    Seq,
    /// Uniformly random pages of the partition.
    Random,
    /// `hotshare` of the writes go to the first `hot` fraction of the partition.
    Hot,
}

/// How a vCPU waits when it has nothing to do (idle phases, pacer waits,
/// parked vCPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Spins in ring 3: the vCPU's host thread stays busy.
    Spin,
    /// Sleeps in the VMM through the idle port, in slices of at most 1 ms
    /// (docs/GUESTS.md); where the port is unknown (QEMU) it spins.
    Sleep,
}

/// One dirtier phase; the last one lasts forever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadPhase {
    /// Writing at `rate` (true) or heartbeats only (false).
    pub busy: bool,
    /// Length in nanoseconds.
    pub ns: u64,
    /// Pattern `hot`: where the hot set starts, as a fraction of the
    /// partition (`busy@0.5`: half-way; the set wraps around the end).
    pub hot_at: f64,
}

/// Most phases a command line may list.
pub const MAX_PHASES: usize = 8;

/// Every parameter, with its default unless the command line set it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Heartbeat interval (ns), `hb=1ms`.
    pub hb_ns: u64,
    /// Longest time between serial flushes (ns), `flush=10ms`.
    pub flush_ns: u64,
    /// Run time before the guest exits with its verification result (ns); 0 = forever.
    pub run_ns: u64,
    /// Interval of the periodic self-verification (ns); 0 = only at the end.
    pub verify_ns: u64,
    /// Most of vCPU 0's time serial output may take, in percent (`serial=25`).
    /// Every byte written to the UART is a VM exit; when heartbeat lines would
    /// exceed this budget they are spaced further apart than `hb`.
    pub serial_pct: u64,
    /// How waits are spent, `idle=spin`.
    pub idle: IdleMode,
    /// Dirtier working-set size in bytes (a multiple of 4 KiB), `ws=256M`.
    pub ws: u64,
    /// Dirtier access pattern, `pattern=seq`.
    pub pattern: AccessPattern,
    /// Hot-set fraction of the working set, `hot=0.1`.
    pub hot: f64,
    /// Share of writes that go to the hot set, `hotshare=0.9`.
    pub hotshare: f64,
    /// Pattern `hot`: how far the hot set moves per second, as a fraction
    /// of the partition (`drift=0.02`); 0 = it stays.
    pub drift: f64,
    /// Target pages/s for the whole VM; 0 = as fast as possible.
    pub rate: u64,
    /// Dirtier phases; `nphases == 0` means always busy.
    pub phases: [LoadPhase; MAX_PHASES],
    /// Number of valid entries in `phases`.
    pub nphases: usize,
    /// kvstore: number of keys.
    pub keys: u64,
    /// kvstore: value size in bytes (a multiple of 8).
    pub vsize: u64,
    /// kvstore: Zipf exponent of the key distribution (0 = uniform).
    pub zipf: f64,
    /// kvstore: share of requests that are reads.
    pub reads: f64,
}

impl Params {
    /// The defaults every program starts from.
    pub const DEFAULT: Params = Params {
        hb_ns: 1_000_000,
        flush_ns: 10_000_000,
        run_ns: 0,
        verify_ns: 2_000_000_000,
        serial_pct: 25,
        idle: IdleMode::Spin,
        ws: 256 << 20,
        pattern: AccessPattern::Seq,
        hot: 0.1,
        hotshare: 0.9,
        drift: 0.0,
        rate: 0,
        phases: [LoadPhase {
            busy: true,
            ns: 0,
            hot_at: 0.0,
        }; MAX_PHASES],
        nphases: 0,
        keys: 100_000,
        vsize: 256,
        zipf: 0.99,
        reads: 0.9,
    };

    /// The phases that apply; an always-busy phase when none were given.
    pub fn phases(&self) -> &[LoadPhase] {
        if self.nphases == 0 {
            &Params::DEFAULT.phases[..1]
        } else {
            &self.phases[..self.nphases]
        }
    }
}

/// Why a command line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError<'a> {
    /// A key this program does not know.
    UnknownKey(&'a str),
    /// A word without `=` (other than a leading kernel path).
    NotKeyValue(&'a str),
    /// A known key with a value that does not parse or is out of range.
    BadValue {
        key: &'a str,
        value: &'a str,
        expected: &'static str,
    },
}

impl fmt::Display for ParamError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::UnknownKey(k) => write!(f, "unknown key {k}"),
            ParamError::NotKeyValue(w) => write!(f, "{w}: expected key=value"),
            ParamError::BadValue {
                key,
                value,
                expected,
            } => {
                write!(f, "{key}={value}: expected {expected}")
            }
        }
    }
}

/// Parses a command line for `program`. The first word is skipped when it
/// has no `=`: boot loaders (QEMU, GRUB) put the kernel's path there.
pub fn parse(program: Program, cmdline: &str) -> Result<Params, ParamError<'_>> {
    let mut p = Params::DEFAULT;
    // A key that only means something with `pattern=hot`, if one was given.
    let mut needs_hot = None;
    for (i, word) in cmdline.split_ascii_whitespace().enumerate() {
        let Some((key, value)) = word.split_once('=') else {
            if i == 0 {
                continue;
            }
            return Err(ParamError::NotKeyValue(word));
        };
        let bad = |expected| ParamError::BadValue {
            key,
            value,
            expected,
        };
        const DUR: &str = "a duration like 10ms, 500us or 2s (bare numbers are seconds)";
        const FRAC: &str = "a number from 0 to 1";
        match (key, program) {
            ("hb", _) => {
                p.hb_ns = duration(value)
                    .filter(|&n| n >= 10_000)
                    .ok_or(bad("a duration of at least 10us"))?
            }
            ("flush", _) => p.flush_ns = duration(value).ok_or(bad(DUR))?,
            ("run", _) => p.run_ns = duration(value).ok_or(bad(DUR))?,
            ("verify", _) => p.verify_ns = duration(value).ok_or(bad(DUR))?,
            ("serial", _) => {
                p.serial_pct = number(value)
                    .filter(|n| (1..=100).contains(n))
                    .ok_or(bad("a percentage from 1 to 100"))?
            }
            ("idle", _) => {
                p.idle = match value {
                    "spin" => IdleMode::Spin,
                    "sleep" => IdleMode::Sleep,
                    _ => return Err(bad("spin or sleep")),
                }
            }
            ("ws", Program::Dirtier) => {
                p.ws = size(value)
                    .filter(|n| (4096..=1 << 40).contains(n))
                    .map(|n| n.div_ceil(4096) * 4096)
                    .ok_or(bad("a size from 4K to 1T like 256M"))?
            }
            ("pattern", Program::Dirtier) => {
                p.pattern = match value {
                    "seq" => AccessPattern::Seq,
                    "random" => AccessPattern::Random,
                    "hot" => AccessPattern::Hot,
                    _ => return Err(bad("seq, random or hot")),
                }
            }
            ("hot", Program::Dirtier) => {
                p.hot = fraction(value)
                    .filter(|&f| f > 0.0)
                    .ok_or(bad("a number above 0 up to 1"))?
            }
            ("hotshare", Program::Dirtier) => p.hotshare = fraction(value).ok_or(bad(FRAC))?,
            ("drift", Program::Dirtier) => {
                p.drift = fraction(value).ok_or(bad(FRAC))?;
                if p.drift > 0.0 {
                    needs_hot = Some((key, value));
                }
            }
            ("rate", Program::Dirtier) => {
                p.rate = number(value)
                    .filter(|&n| n <= 1_000_000_000)
                    .ok_or(bad("pages per second up to 10^9 (0 = unlimited)"))?
            }
            ("phases", Program::Dirtier) => {
                let expected = "phases like idle:2s,busy:10s,busy@0.5:10s (at most 8)";
                p.nphases = 0;
                for item in value.split(',') {
                    let (kind, len) = item.split_once(':').ok_or(bad(expected))?;
                    let (kind, hot_at) = match kind.split_once('@') {
                        Some((k, at)) => {
                            needs_hot = Some((key, value));
                            (k, fraction(at).filter(|&f| f < 1.0).ok_or(bad(expected))?)
                        }
                        None => (kind, 0.0),
                    };
                    let busy = match kind {
                        "idle" => false,
                        "busy" => true,
                        _ => return Err(bad(expected)),
                    };
                    let ns = duration(len).ok_or(bad(expected))?;
                    if p.nphases == MAX_PHASES {
                        return Err(bad(expected));
                    }
                    p.phases[p.nphases] = LoadPhase { busy, ns, hot_at };
                    p.nphases += 1;
                }
            }
            ("keys", Program::Kvstore) => {
                p.keys = number(value)
                    .filter(|&n| (1..=1 << 30).contains(&n))
                    .ok_or(bad("a key count from 1 to 2^30"))?
            }
            ("vsize", Program::Kvstore) => {
                p.vsize = size(value)
                    .filter(|&n| (8..=65536).contains(&n))
                    .map(|n| n.div_ceil(8) * 8)
                    .ok_or(bad("a value size from 8 to 64K bytes"))?
            }
            ("zipf", Program::Kvstore) => {
                p.zipf = decimal(value)
                    .filter(|&z| (0.0..=5.0).contains(&z))
                    .ok_or(bad("a Zipf exponent from 0 to 5"))?
            }
            ("reads", Program::Kvstore) => p.reads = fraction(value).ok_or(bad(FRAC))?,
            _ => return Err(ParamError::UnknownKey(key)),
        }
    }
    if let Some((key, value)) = needs_hot
        && p.pattern != AccessPattern::Hot
    {
        return Err(ParamError::BadValue {
            key,
            value,
            expected: "pattern=hot (it moves the hot set)",
        });
    }
    Ok(p)
}

/// A plain decimal integer.
pub fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// A duration in nanoseconds: a number with unit `ns`, `us`, `ms` or `s`;
/// a bare number is seconds.
pub fn duration(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let mul = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" | "" => 1_000_000_000,
        _ => return None,
    };
    number(n)?.checked_mul(mul)
}

/// A size in bytes: a number with an optional suffix K, M, G or T (powers of 1024).
pub fn size(s: &str) -> Option<u64> {
    let (n, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    number(n)?.checked_mul(1u64 << shift)
}

/// A non-negative decimal like `0.99`, `1` or `.5`.
pub fn decimal(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let i = if int.is_empty() { 0 } else { number(int)? };
    let mut v = i as f64;
    if !frac.is_empty() {
        if frac.len() > 15 {
            return None;
        }
        let f = number(frac)?;
        let mut div = 1.0;
        for _ in 0..frac.len() {
            div *= 10.0;
        }
        v += f as f64 / div;
    }
    Some(v)
}

/// A decimal from 0 to 1.
pub fn fraction(s: &str) -> Option<f64> {
    decimal(s).filter(|&f| f <= 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_kernel_path() {
        let p = parse(Program::Dirtier, "/tmp/dirtier.elf").unwrap();
        assert_eq!(p, Params::DEFAULT);
        assert_eq!(
            p.phases(),
            &[LoadPhase {
                busy: true,
                ns: 0,
                hot_at: 0.0
            }]
        );
        assert_eq!(parse(Program::Idle, "").unwrap(), Params::DEFAULT);
    }

    #[test]
    fn dirtier_keys() {
        let p = parse(
            Program::Dirtier,
            "k.elf ws=1G pattern=hot hot=0.25 hotshare=.75 rate=5000 phases=idle:2s,busy:500ms,busy@0.5:0 drift=0.02 hb=250us flush=0 run=3s verify=1s",
        )
        .unwrap();
        assert_eq!(p.ws, 1 << 30);
        assert_eq!(p.pattern, AccessPattern::Hot);
        assert_eq!(p.hot, 0.25);
        assert_eq!(p.hotshare, 0.75);
        assert_eq!(p.rate, 5000);
        assert_eq!(
            p.phases(),
            &[
                LoadPhase {
                    busy: false,
                    ns: 2_000_000_000,
                    hot_at: 0.0
                },
                LoadPhase {
                    busy: true,
                    ns: 500_000_000,
                    hot_at: 0.0
                },
                LoadPhase {
                    busy: true,
                    ns: 0,
                    hot_at: 0.5
                }
            ]
        );
        assert_eq!(p.drift, 0.02);
        assert_eq!(
            (p.hb_ns, p.flush_ns, p.run_ns, p.verify_ns),
            (250_000, 0, 3_000_000_000, 1_000_000_000)
        );
        assert_eq!(parse(Program::Dirtier, "ws=5000").unwrap().ws, 8192);
    }

    #[test]
    fn idle_mode_for_every_program() {
        assert_eq!(Params::DEFAULT.idle, IdleMode::Spin);
        for program in [Program::Dirtier, Program::Idle, Program::Kvstore] {
            assert_eq!(parse(program, "idle=sleep").unwrap().idle, IdleMode::Sleep);
            assert_eq!(parse(program, "idle=spin").unwrap().idle, IdleMode::Spin);
        }
        let e = parse(Program::Idle, "idle=nap").unwrap_err();
        assert_eq!(format!("{e}"), "idle=nap: expected spin or sleep");
    }

    #[test]
    fn kvstore_keys() {
        let p = parse(Program::Kvstore, "keys=1000 vsize=100 zipf=1.2 reads=0.5").unwrap();
        assert_eq!((p.keys, p.vsize, p.zipf, p.reads), (1000, 104, 1.2, 0.5));
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            parse(Program::Idle, "ws=1G"),
            Err(ParamError::UnknownKey("ws"))
        );
        assert_eq!(
            parse(Program::Dirtier, "keys=10"),
            Err(ParamError::UnknownKey("keys"))
        );
        assert_eq!(
            parse(Program::Dirtier, "ws=1G oops"),
            Err(ParamError::NotKeyValue("oops"))
        );
        let e = parse(Program::Dirtier, "pattern=zigzag").unwrap_err();
        assert!(matches!(
            e,
            ParamError::BadValue {
                key: "pattern",
                value: "zigzag",
                ..
            }
        ));
        assert_eq!(
            format!("{e}"),
            "pattern=zigzag: expected seq, random or hot"
        );
        for bad in [
            "hb=5us",
            "hb=1h",
            "hb=ms",
            "ws=0",
            "ws=12Q",
            "ws=",
            "hot=0",
            "hot=1.5",
            "hotshare=x",
            "rate=-1",
            "serial=0",
            "serial=101",
            "phases=idle",
            "phases=nap:1s",
            "phases=busy:1s,",
            "phases=busy@1:1s",
            "phases=busy@x:1s",
            "run=99999999999999999999s",
            "drift=2",
        ] {
            assert!(parse(Program::Dirtier, bad).is_err(), "{bad} accepted");
        }
        // Moving the hot set needs one.
        let e = parse(Program::Dirtier, "drift=0.1 pattern=random").unwrap_err();
        assert_eq!(
            format!("{e}"),
            "drift=0.1: expected pattern=hot (it moves the hot set)"
        );
        assert!(parse(Program::Dirtier, "phases=busy@0.5:1s").is_err());
        assert!(parse(Program::Dirtier, "pattern=hot phases=busy@0.5:1s drift=0").is_ok());
        for bad in [
            "keys=0", "vsize=4", "vsize=1M", "zipf=9", "reads=2", "reads=.",
        ] {
            assert!(parse(Program::Kvstore, bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn units() {
        assert_eq!(duration("0"), Some(0));
        assert_eq!(duration("7ns"), Some(7));
        assert_eq!(duration("3us"), Some(3_000));
        assert_eq!(duration("2s"), Some(2_000_000_000));
        assert_eq!(duration("2"), Some(2_000_000_000));
        assert_eq!(duration("ms"), None);
        assert_eq!(size("4k"), Some(4096));
        assert_eq!(size("3G"), Some(3 << 30));
        assert_eq!(size("123"), Some(123));
        assert_eq!(decimal("0.99"), Some(0.99));
        assert_eq!(decimal("2"), Some(2.0));
        assert_eq!(decimal("1.2.3"), None);
        assert_eq!(number("18446744073709551616"), None);
    }
}
