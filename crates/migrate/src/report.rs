//! The migration report: per round and totals.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::convergence::LimitReached;

/// What happened in one round (the last one is the stop-and-copy round).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// 1-based round number.
    pub round: u32,
    /// True for the stop-and-copy round (VM paused).
    pub stop_and_copy: bool,
    /// True if the migration failed during this round (its numbers are partial).
    pub interrupted: bool,
    /// Pages pending at the start of the round.
    pub pages_pending: u64,
    /// Pages the guest dirtied while the round ran.
    pub pages_dirtied: u64,
    /// Pages sent as data.
    pub pages_sent: u64,
    /// Pending pages not sent this round: dirtied again during the round,
    /// held back by the strategy, or not reached when the time limit cut
    /// the round short; they stay pending.
    pub pages_skipped: u64,
    /// Pending pages found all-zero (sent as a zero run, or not at all if the
    /// destination never received data for them).
    pub zero_pages: u64,
    /// Bytes written to the connection during the round, framing included.
    pub bytes: u64,
    pub duration_ms: f64,
    /// The rate limit in force, bits/s (`None` = unlimited).
    pub rate_limit_bps: Option<u64>,
    /// bytes * 8 / duration.
    pub transfer_rate_bps: f64,
    /// pages_dirtied * page size * 8 / duration.
    pub dirty_rate_bps: f64,
}

/// How a migration ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The VM runs on the destination and acknowledged it.
    Completed,
    /// Cancelled before Commit; the VM runs on the source.
    Cancelled,
    /// Failed before Commit; the VM runs on the source.
    Failed(String),
    /// Commit was sent but the destination's acknowledgement never came:
    /// the VM is paused and retired on the source and may or may not run on
    /// the destination (docs/PROTOCOL.md, "The in-doubt window").
    InDoubt(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed => f.write_str("completed"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::InDoubt(e) => write!(f, "in doubt: {e}"),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "completed" => Outcome::Completed,
            "cancelled" => Outcome::Cancelled,
            _ => {
                if let Some(e) = s.strip_prefix("failed: ") {
                    Outcome::Failed(e.to_string())
                } else if let Some(e) = s.strip_prefix("in doubt: ") {
                    Outcome::InDoubt(e.to_string())
                } else {
                    Outcome::Failed(s)
                }
            }
        })
    }
}

/// Where the VM runs after the migration attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmLocation {
    Source,
    Destination,
    /// Commit in doubt: the source will never run it; the destination may.
    Unknown,
}

/// The whole migration, as `ferry migrate --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    pub strategy: String,
    pub outcome: Outcome,
    pub vm_location: VmLocation,
    /// Connect to end (ack received, or failure).
    pub total_time_ms: f64,
    /// Source pause to destination resume, as measured by the engine
    /// (`None` if the VM never resumed on the destination).
    pub downtime_ms: Option<f64>,
    /// Largest heartbeat gap across the switchover seen in the guest's serial
    /// output; filled in by the caller that reads both sides' logs.
    pub guest_downtime_ms: Option<f64>,
    /// Bytes written to the connection, framing and protocol included.
    pub bytes_sent: u64,
    pub memory_bytes: u64,
    /// bytes_sent / memory_bytes.
    pub bytes_ratio: f64,
    /// Rounds, the stop-and-copy round included.
    pub rounds: u32,
    /// Page transmissions beyond each page's first (a page sent 3 times counts 2).
    pub pages_resent: u64,
    /// Pages sent as data, all rounds.
    pub pages_sent: u64,
    /// Pages that were all-zero when examined, all rounds.
    pub zero_pages: u64,
    /// The bandwidth cap while the guest runs (bits/s), if any.
    pub max_bandwidth_bps: Option<u64>,
    /// The emulated link's capacity (bits/s), capping every round, if any.
    #[serde(default)]
    pub link_bandwidth_bps: Option<u64>,
    pub max_downtime_ms: f64,
    /// Completed, with `downtime_ms` above `max_downtime_ms`: the VM moved,
    /// but its users noticed more than the operator allowed.
    #[serde(default)]
    pub downtime_target_missed: bool,
    /// The bound that ended pre-copy before the strategy's criterion was
    /// met (the switchover was forced, or the migration aborted), if any.
    #[serde(default)]
    pub limit_reached: Option<LimitReached>,
    /// Time the VM spent paused on the source before Commit or rollback.
    pub pause_ms: Option<f64>,
    pub per_round: Vec<RoundReport>,
}

impl MigrationReport {
    pub(crate) fn new(strategy: &str, memory_bytes: u64) -> Self {
        MigrationReport {
            strategy: strategy.to_string(),
            outcome: Outcome::Failed("not started".into()),
            vm_location: VmLocation::Source,
            total_time_ms: 0.0,
            downtime_ms: None,
            guest_downtime_ms: None,
            bytes_sent: 0,
            memory_bytes,
            bytes_ratio: 0.0,
            rounds: 0,
            pages_resent: 0,
            pages_sent: 0,
            zero_pages: 0,
            max_bandwidth_bps: None,
            link_bandwidth_bps: None,
            max_downtime_ms: 0.0,
            downtime_target_missed: false,
            limit_reached: None,
            pause_ms: None,
            per_round: Vec::new(),
        }
    }

    /// Recomputes the totals that derive from `per_round`.
    pub(crate) fn finish_totals(&mut self) {
        self.rounds = self.per_round.len() as u32;
        self.pages_sent = self.per_round.iter().map(|r| r.pages_sent).sum();
        self.zero_pages = self.per_round.iter().map(|r| r.zero_pages).sum();
        self.bytes_ratio = if self.memory_bytes > 0 {
            self.bytes_sent as f64 / self.memory_bytes as f64
        } else {
            0.0
        };
    }
}

impl MigrationReport {
    /// The downtime target, for people.
    fn target(&self) -> String {
        let d =
            std::time::Duration::try_from_secs_f64(self.max_downtime_ms / 1e3).unwrap_or_default();
        units::format_duration(d)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Bits(f64);
impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&units::format_bits_per_sec(self.0))
    }
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "migration {} (strategy {})", self.outcome, self.strategy)?;
        let loc = match self.vm_location {
            VmLocation::Source => "source",
            VmLocation::Destination => "destination",
            VmLocation::Unknown => "unknown (commit in doubt)",
        };
        writeln!(f, "  VM runs on:        {loc}")?;
        writeln!(f, "  total time:        {:.1} ms", self.total_time_ms)?;
        match self.downtime_ms {
            Some(d) if self.downtime_target_missed => writeln!(
                f,
                "  downtime:          {d:.1} ms (engine: pause to resume), ABOVE the {} target",
                self.target()
            )?,
            Some(d) => writeln!(
                f,
                "  downtime:          {d:.1} ms (engine: pause to resume; target {})",
                self.target()
            )?,
            None => writeln!(f, "  downtime:          -")?,
        }
        if let Some(l) = self.limit_reached {
            let what = match self.outcome {
                Outcome::Completed | Outcome::InDoubt(_) => "switchover forced",
                _ => "aborted",
            };
            writeln!(f, "  pre-copy:          {l} reached, {what}")?;
        }
        if let Some(g) = self.guest_downtime_ms {
            writeln!(f, "  guest downtime:    {g:.1} ms (largest heartbeat gap)")?;
        }
        writeln!(
            f,
            "  bytes sent:        {:.1} MiB for {:.1} MiB of memory ({:.2}x)",
            mib(self.bytes_sent),
            mib(self.memory_bytes),
            self.bytes_ratio
        )?;
        writeln!(
            f,
            "  pages:             {} sent, {} resent, {} zero",
            self.pages_sent, self.pages_resent, self.zero_pages
        )?;
        if let Some(b) = self.max_bandwidth_bps {
            writeln!(
                f,
                "  bandwidth cap:     {} while the guest runs",
                Bits(b as f64)
            )?;
        }
        if let Some(b) = self.link_bandwidth_bps {
            writeln!(f, "  emulated link:     {}", Bits(b as f64))?;
        }
        writeln!(f, "  rounds:            {}", self.rounds)?;
        if !self.per_round.is_empty() {
            writeln!(
                f,
                "  {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>16} {:>16}",
                "round",
                "pending",
                "dirtied",
                "sent",
                "skipped",
                "zero",
                "MiB",
                "ms",
                "rate",
                "dirty rate"
            )?;
            for r in &self.per_round {
                writeln!(
                    f,
                    "  {:>4}{} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10.2} {:>9.1} {:>16} {:>16}",
                    r.round,
                    if r.interrupted {
                        "!"
                    } else if r.stop_and_copy {
                        "*"
                    } else {
                        " "
                    },
                    r.pages_pending,
                    r.pages_dirtied,
                    r.pages_sent,
                    r.pages_skipped,
                    r.zero_pages,
                    mib(r.bytes),
                    r.duration_ms,
                    Bits(r.transfer_rate_bps).to_string(),
                    Bits(r.dirty_rate_bps).to_string()
                )?;
            }
            writeln!(
                f,
                "  (* = stop-and-copy round, VM paused; ! = interrupted by the failure)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_serializes_as_text() {
        for (o, s) in [
            (Outcome::Completed, "\"completed\""),
            (Outcome::Cancelled, "\"cancelled\""),
            (Outcome::Failed("boom".into()), "\"failed: boom\""),
            (Outcome::InDoubt("no ack".into()), "\"in doubt: no ack\""),
        ] {
            assert_eq!(serde_json::to_string(&o).unwrap(), s);
            assert_eq!(serde_json::from_str::<Outcome>(s).unwrap(), o);
        }
    }

    #[test]
    fn report_has_the_documented_fields() {
        let mut r = MigrationReport::new("xen", 1 << 20);
        r.bytes_sent = 1 << 21;
        r.per_round.push(RoundReport {
            round: 1,
            pages_sent: 256,
            ..Default::default()
        });
        r.finish_totals();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "strategy",
            "total_time_ms",
            "downtime_ms",
            "guest_downtime_ms",
            "bytes_sent",
            "memory_bytes",
            "rounds",
            "pages_resent",
            "outcome",
            "bytes_ratio",
            "per_round",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["bytes_ratio"], 2.0);
        assert_eq!(v["rounds"], 1);
        let text = r.to_string();
        assert!(
            text.contains("strategy xen") && text.contains("2.00x"),
            "{text}"
        );
    }
}
