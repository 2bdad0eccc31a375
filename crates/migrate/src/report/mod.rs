//! The migration report: per round and totals.

use std::fmt;

use guest::sampler::DowntimeFields;
use serde::{Deserialize, Serialize};

use crate::convergence::LimitReached;

mod text;

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
    /// Pending pages not sent this round because the guest dirtied them
    /// again during it, or not reached when the time limit cut the round
    /// short; they stay pending.
    pub pages_skipped: u64,
    /// Pending pages the strategy held back this round; they stay pending
    /// (the stop-and-copy sends those still held).
    #[serde(default)]
    pub pages_held_back: u64,
    /// Pending pages the strategy predicted will be written again (its
    /// hold-back candidates before any budget); `None` if it predicts nothing.
    #[serde(default)]
    pub pages_predicted_hot: Option<u64>,
    /// Of the pages held back, the share the guest dirtied during the round
    /// (for strategies that predict; `None` if nothing was held back).
    #[serde(default)]
    pub prediction_precision: Option<f64>,
    /// Of the pending pages the guest dirtied during the round, the share
    /// that was held back (`None` if it dirtied none of them).
    #[serde(default)]
    pub prediction_recall: Option<f64>,
    /// Share of time the vCPUs were kept out of the guest, percent.
    #[serde(default)]
    pub throttle_pct: f64,
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
    /// the destination (docs/PROTOCOL.md, "The in-doubt window"); or, in
    /// post-copy, every page was sent but the destination's acknowledgement
    /// that it holds them never came.
    InDoubt(String),
    /// Post-copy broke after the switchover, before the destination held
    /// every page: it cannot run the VM on and discards it; the source
    /// keeps the VM paused and retired, its memory as it was at the switch
    /// (docs/PROTOCOL.md, "Post-copy failures": recovery is a known gap).
    Interrupted(String),
    /// Post-copy broke after the switchover; once the destination's lease
    /// had certainly run out, the VM ran on here from the latest
    /// transaction the source applied (docs/SAFETY.md, "Transactions").
    Recovered(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed => f.write_str("completed"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::InDoubt(e) => write!(f, "in doubt: {e}"),
            Outcome::Interrupted(e) => write!(f, "interrupted: {e}"),
            Outcome::Recovered(e) => write!(f, "recovered: {e}"),
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
                } else if let Some(e) = s.strip_prefix("interrupted: ") {
                    Outcome::Interrupted(e.to_string())
                } else if let Some(e) = s.strip_prefix("recovered: ") {
                    Outcome::Recovered(e.to_string())
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
    /// Post-copy interrupted: runs nowhere (the source keeps it paused).
    Nowhere,
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
    /// output (ms); filled in by the caller that reads both sides' logs.
    #[serde(default, alias = "guest_downtime_ms")]
    pub heartbeat_gap_ms: Option<f64>,
    /// Guest-visible downtime sampled from the guest's pass counters on
    /// both sides, filled in by a caller that sampled them
    /// (`guest::sampler`); flattened, so its fields read as this report's.
    #[serde(flatten)]
    pub guest: DowntimeFields,
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
    /// Bytes read from the destination (its requests and answers).
    #[serde(default)]
    pub bytes_received: u64,
    /// What happened after a switch to post-copy, if there was one.
    #[serde(default)]
    pub postcopy: Option<PostcopyReport>,
    /// A pre-copy whose Commit went out under the post-copy lease: the
    /// destination ran the VM only under it until the source gave the VM
    /// up, so a lost acknowledgement has one outcome (docs/PROTOCOL.md,
    /// "The commit rule").
    #[serde(default)]
    pub leased_commit: bool,
    pub per_round: Vec<RoundReport>,
}

/// Post-copy, from the switch to the destination holding every page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PostcopyReport {
    /// How the switch came: "strategy", "operator" (a manual switch), or
    /// the limit reached ("round limit", "time limit").
    pub trigger: String,
    /// Pages the destination had to fetch at the switch.
    pub pages_to_fetch: u64,
    /// Pages sent in answer to the destination's requests.
    pub pages_requested: u64,
    /// Pages pushed in the background.
    pub pages_pushed: u64,
    /// Of those pages (either way), those that were zero.
    pub zero_pages: u64,
    /// Requests the destination made (each for a block of pages).
    pub requests: u64,
    /// Bytes sent source -> destination after the switch.
    pub bytes_sent: u64,
    /// VM resumed on the destination -> the destination holds every page
    /// (the source's clock), ms.
    pub duration_ms: f64,
    /// Faults the destination's vCPUs waited on, and how long they waited
    /// (p50, p99), ms, as the destination measured.
    pub faults: u64,
    pub fault_p50_ms: Option<f64>,
    pub fault_p99_ms: Option<f64>,
    /// Times the link broke and the source reconnected.
    #[serde(default)]
    pub reconnects: u64,
    /// Transactions the destination sent back and the source applied.
    #[serde(default)]
    pub transactions: u64,
}

impl MigrationReport {
    pub(crate) fn new(strategy: &str, memory_bytes: u64) -> Self {
        MigrationReport {
            strategy: strategy.to_string(),
            outcome: Outcome::Failed("not started".into()),
            vm_location: VmLocation::Source,
            total_time_ms: 0.0,
            downtime_ms: None,
            heartbeat_gap_ms: None,
            guest: DowntimeFields::default(),
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
            bytes_received: 0,
            postcopy: None,
            leased_commit: false,
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
            (Outcome::Interrupted("cut".into()), "\"interrupted: cut\""),
            (Outcome::Recovered("cut".into()), "\"recovered: cut\""),
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
            "heartbeat_gap_ms",
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
        // Not sampled: the sampled fields are absent.
        assert!(v.get("guest_downtime_us").is_none());
        let text = r.to_string();
        assert!(
            text.contains("strategy xen") && text.contains("2.00x"),
            "{text}"
        );
        r.guest.guest_downtime_us = Some(12_345);
        r.guest.guest_downtime_resolution_us = Some(1_500);
        r.guest.guest_downtime_coarse = Some(true);
        r.guest.guest_sampler_realtime = Some(true);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["guest_downtime_us"], 12_345);
        assert_eq!(v["guest_downtime_resolution_us"], 1_500);
        assert_eq!(v["guest_downtime_coarse"], true);
        let text = r.to_string();
        assert!(
            text.contains("12.345 ms") && text.contains("COARSE"),
            "{text}"
        );
        // Reports written before the rename still read.
        let mut old = serde_json::to_value(&r).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("heartbeat_gap_ms");
        o.insert("guest_downtime_ms".into(), 7.5.into());
        let back: MigrationReport = serde_json::from_value(old).unwrap();
        assert_eq!(back.heartbeat_gap_ms, Some(7.5));
    }

    #[test]
    fn prediction_and_throttle_columns_appear_when_used() {
        let mut r = MigrationReport::new("predictive", 1 << 20);
        r.per_round.push(RoundReport {
            round: 1,
            ..Default::default()
        });
        let plain = r.to_string();
        assert!(
            plain.contains("held") && !plain.contains("precision") && !plain.contains("throttle")
        );
        r.per_round.push(RoundReport {
            round: 2,
            pages_held_back: 40,
            pages_predicted_hot: Some(50),
            prediction_precision: Some(0.75),
            prediction_recall: None,
            throttle_pct: 30.0,
            ..Default::default()
        });
        let text = r.to_string();
        assert!(
            text.contains("precision") && text.contains("75.0%") && text.contains("30%"),
            "{text}"
        );
        let v = serde_json::to_value(&r.per_round[1]).unwrap();
        assert_eq!(v["pages_held_back"], 40);
        assert_eq!(v["prediction_precision"], 0.75);
        assert!(v["prediction_recall"].is_null());
        // Reports written before these fields still load.
        let old = r#"{"round":1,"stop_and_copy":false,"interrupted":false,"pages_pending":1,
            "pages_dirtied":0,"pages_sent":1,"pages_skipped":0,"zero_pages":0,"bytes":4096,
            "duration_ms":1.0,"rate_limit_bps":null,"transfer_rate_bps":1.0,"dirty_rate_bps":0.0}"#;
        let back: RoundReport = serde_json::from_str(old).unwrap();
        assert_eq!(back.throttle_pct, 0.0);
    }
}
