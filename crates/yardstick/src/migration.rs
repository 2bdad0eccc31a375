//! QEMU-to-QEMU live migration on loopback, measured.
//!
//! The source gets `migrate-set-parameters` (max-bandwidth, downtime-limit),
//! then `migrate` to a destination started with `-incoming defer` +
//! `migrate-incoming tcp:127.0.0.1:0`; `query-migrate` is polled until the
//! migration completes or fails. QEMU's own numbers are copied into a
//! [`QemuMigration`]; the guest-visible downtime is sampled from the guest's
//! pass counters in both QEMUs ([`crate::sampled`], with
//! [`MigrationParams::sample_guest`]), and the largest heartbeat gap comes from both
//! serial logs via [`crate::serial::max_heartbeat_gap`], exactly as for Ferry.

use std::time::{Duration, Instant};

use guest::sampler::DowntimeFields;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use units::Bandwidth;

use crate::error::Error;
use crate::plot::RoundPoint;
use crate::qemu::{Qemu, QemuConfig};
use crate::sampled::Probe;
use crate::serial::{self, SerialLine, max_heartbeat_gap};

/// What QEMU's `max-bandwidth` is set to when the run asks for no limit:
/// 1 TiB/s, far above what loopback can carry (QEMU has no "off" value).
pub const UNLIMITED_BYTES_PER_S: u64 = 1 << 40;

/// QEMU's default `max-bandwidth` (128 MiB/s).
pub const QEMU_DEFAULT_BYTES_PER_S: u64 = 128 << 20;

/// The value passed to QEMU's `max-bandwidth` (bytes/s) for a cap
/// (`None` = unlimited, see [`UNLIMITED_BYTES_PER_S`]).
pub fn qemu_max_bandwidth(cap: Option<Bandwidth>) -> u64 {
    cap.map_or(UNLIMITED_BYTES_PER_S, |b| b.bytes_per_sec())
}

/// Parameters of one QEMU migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationParams {
    /// QEMU `max-bandwidth` (`None` = unlimited).
    pub max_bandwidth: Option<Bandwidth>,
    /// QEMU `downtime-limit` in ms (QEMU's default is 300).
    pub downtime_limit_ms: u64,
    /// Give up (and `migrate_cancel`) after this long.
    pub timeout: Duration,
    /// How often `query-migrate` is polled.
    pub poll_interval: Duration,
    /// How long to wait for the guest's first heartbeat on the destination.
    pub resume_timeout: Duration,
    /// QEMU migration capabilities to switch on with
    /// `migrate-set-capabilities` (e.g. `auto-converge`, `xbzrle`,
    /// `multifd`); empty for plain pre-copy, QEMU's default.
    pub capabilities: Vec<String>,
    /// Post-copy at once: `postcopy-ram` on both sides and
    /// `migrate-start-postcopy` right after `migrate` (QEMU switches at
    /// its next iteration).
    #[serde(default)]
    pub postcopy: bool,
    /// Sample the guest-visible downtime from the guest's pass counters
    /// ([`crate::sampled`]); the guest must be one of Ferry's programs.
    pub sample_guest: bool,
}

impl Default for MigrationParams {
    /// QEMU's own defaults: 128 MiB/s, 300 ms; 120 s timeout.
    fn default() -> Self {
        MigrationParams {
            max_bandwidth: Bandwidth::from_bytes_per_sec(QEMU_DEFAULT_BYTES_PER_S),
            downtime_limit_ms: 300,
            timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(10),
            resume_timeout: Duration::from_secs(10),
            capabilities: Vec::new(),
            postcopy: false,
            sample_guest: false,
        }
    }
}

impl MigrationParams {
    /// The capabilities to switch on: [`Self::capabilities`], and
    /// `postcopy-ram` with [`Self::postcopy`].
    pub fn all_capabilities(&self) -> Vec<String> {
        let mut caps = self.capabilities.clone();
        if self.postcopy && !caps.iter().any(|c| c == "postcopy-ram") {
            caps.push("postcopy-ram".into());
        }
        caps
    }
}

/// How a migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QemuOutcome {
    /// QEMU reported `completed`; the guest runs on the destination.
    Completed,
    /// QEMU reported `failed`; the guest keeps running on the source.
    Failed,
    /// QEMU reported `cancelled`.
    Cancelled,
    /// It did not finish within [`MigrationParams::timeout`] and was
    /// cancelled (e.g. the guest dirties memory faster than the link).
    TimedOut,
}

/// The result of one QEMU live migration, with field names shared with
/// Ferry's migration report where the meaning is the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuMigration {
    /// How it ended.
    pub outcome: QemuOutcome,
    /// QEMU's `error-desc`, when it failed.
    pub error: Option<String>,
    /// QEMU's `total-time`: from `migrate` to completion, in ms.
    pub total_time_ms: f64,
    /// QEMU's `downtime`: source stop to the end of the migration, in ms
    /// (QEMU's own measurement; it ends before the destination runs).
    pub downtime_ms: f64,
    /// QEMU's `setup-time` in ms.
    pub setup_time_ms: f64,
    /// Largest gap between heartbeats across the switchover, in ms.
    #[serde(default, alias = "guest_downtime_ms")]
    pub heartbeat_gap_ms: Option<f64>,
    /// Guest-visible downtime sampled from the guest's pass counters on
    /// both sides (with [`MigrationParams::sample_guest`]); flattened, so
    /// its fields read as this report's, as in Ferry's migration report.
    #[serde(flatten)]
    pub guest: DowntimeFields,
    /// Our own wall time from `migrate` to seeing `completed`, in ms.
    pub wall_time_ms: f64,
    /// From `migrate` to the first heartbeat the guest printed after it
    /// resumed on the destination, in ms.
    pub resume_time_ms: Option<f64>,
    /// `ram.transferred`: RAM bytes on the wire (with page headers).
    pub bytes_sent: u64,
    /// The guest's configured memory (`-m`) in bytes, like Ferry's
    /// `memory_bytes`.
    pub memory_bytes: u64,
    /// `ram.total`: all RAM blocks QEMU migrates (guest RAM plus firmware
    /// and option ROM blocks, a few hundred KiB more).
    pub ram_total_bytes: u64,
    /// `bytes_sent / memory_bytes`.
    pub bytes_per_memory: f64,
    /// `ram.duplicate`: zero pages, sent as a flag only.
    pub zero_pages: u64,
    /// `ram.normal`: pages sent with their data.
    pub normal_pages: u64,
    /// `ram.normal-bytes`.
    pub normal_bytes: u64,
    /// `ram.page-size`.
    pub page_size: u64,
    /// `ram.dirty-sync-count`: dirty-bitmap syncs, i.e. pre-copy rounds
    /// plus the final one.
    pub rounds: u64,
    /// `ram.mbps`: QEMU's measured throughput in Mbit/s.
    pub mbps: f64,
    /// `ram.downtime-bytes` (QEMU >= 7.1): bytes sent while stopped.
    pub downtime_bytes: Option<u64>,
    /// `ram.precopy-bytes` (QEMU >= 7.1).
    pub precopy_bytes: Option<u64>,
    /// The `max-bandwidth` that was set, in bytes/s.
    pub max_bandwidth_bytes_per_s: u64,
    /// The `downtime-limit` that was set, in ms.
    pub downtime_limit_ms: u64,
    /// Capabilities that were switched on.
    pub capabilities: Vec<String>,
    /// Per-round progress reconstructed from `query-migrate` polls: pages
    /// sent with data (`ram.normal` delta) per dirty-sync round, and QEMU's
    /// `dirty-pages-rate` at the round's end. Rounds shorter than the poll
    /// interval are merged into the next point.
    pub per_round: Vec<RoundPoint>,
    /// QEMU's version string.
    pub qemu_version: String,
}

/// Turns `query-migrate` polls into per-round points (see
/// [`QemuMigration::per_round`]). Each poll is `(dirty-sync-count,
/// ram.normal, dirty-pages-rate)`.
fn rounds_from_polls(polls: &[(u64, u64, f64)]) -> Vec<RoundPoint> {
    let mut out = Vec::new();
    let mut prev_sync = 0;
    let mut normal_at_boundary = 0;
    for (i, &(sync, normal, rate)) in polls.iter().enumerate() {
        let last = i + 1 == polls.len();
        if sync > prev_sync || (last && normal > normal_at_boundary) {
            // Pages counted up to this poll belong to the rounds that ended.
            // Before the first sync nothing has been sent as a round yet.
            if prev_sync > 0 || last {
                out.push(RoundPoint {
                    round: prev_sync.max(1) as u32,
                    pages_sent: normal.saturating_sub(normal_at_boundary),
                    dirty_rate: rate,
                });
                normal_at_boundary = normal;
            }
            prev_sync = sync;
        }
    }
    out
}

/// A finished migration and both QEMUs (the destination runs the guest when
/// it completed). Dropping it kills both.
#[derive(Debug)]
pub struct MigrationRun {
    /// The measurements.
    pub report: QemuMigration,
    /// The source QEMU (paused in `postmigrate` after success).
    pub source: Qemu,
    /// The destination QEMU.
    pub destination: Qemu,
}

/// How a polled migration ended.
struct Polled {
    /// The last `query-migrate` answer.
    info: Value,
    /// (dirty-sync count, normal pages, dirty-page rate) of every poll.
    polls: Vec<(u64, u64, f64)>,
    /// Cancelled because it ran past the timeout.
    timed_out: bool,
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn uint(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

impl Qemu {
    /// Live-migrates this QEMU's guest to `destination` (from
    /// [`Qemu::spawn_incoming`] with the same configuration) and measures
    /// it. A failed or timed-out migration is a report with that
    /// [`QemuOutcome`], not an error; errors are QMP or protocol trouble.
    pub fn migrate_to(
        &mut self,
        destination: &mut Qemu,
        params: &MigrationParams,
        guest_memory_bytes: u64,
    ) -> Result<QemuMigration, Error> {
        let uri = destination
            .incoming_uri()
            .ok_or_else(|| {
                Error::Config("the destination was not started with spawn_incoming".into())
            })?
            .to_string();
        let version = self.qmp().qemu_version().to_string();
        self.set_migration_parameters(destination, params)?;
        let probe = if params.sample_guest {
            let p = Probe::start(self)?;
            if !params.postcopy {
                p.attach(destination)?;
            }
            Some(p)
        } else {
            None
        };
        let t_start = serial::now();
        let started = Instant::now();
        self.qmp().execute("migrate", Some(json!({ "uri": uri })))?;
        if params.postcopy {
            self.qmp().execute("migrate-start-postcopy", None)?;
        }
        let Polled {
            info,
            polls,
            timed_out,
        } = self.poll_migration(
            params,
            started,
            probe
                .as_ref()
                .filter(|_| params.postcopy)
                .map(|p| (p, &mut *destination)),
        )?;
        let wall_time_ms = started.elapsed().as_secs_f64() * 1e3;
        let status = info["status"].as_str().unwrap_or("");
        let outcome = match status {
            "completed" => QemuOutcome::Completed,
            _ if timed_out => QemuOutcome::TimedOut,
            "failed" => QemuOutcome::Failed,
            _ => QemuOutcome::Cancelled,
        };
        let completed = outcome == QemuOutcome::Completed;
        let sampled = probe.and_then(|p| p.finish(completed, params.resume_timeout));
        let (heartbeat_gap_ms, resume_time_ms) = if completed {
            self.heartbeat_gap(destination, &info, t_start, params)?
        } else {
            (None, None)
        };

        let ram = &info["ram"];
        let bytes_sent = uint(ram, "transferred");
        Ok(QemuMigration {
            outcome,
            error: info["error-desc"].as_str().map(str::to_string),
            total_time_ms: num(&info, "total-time"),
            downtime_ms: num(&info, "downtime"),
            setup_time_ms: num(&info, "setup-time"),
            heartbeat_gap_ms,
            // QEMU restores the guest's TSC: its own gap would hide the stop.
            guest: sampled
                .as_ref()
                .map(|d| DowntimeFields {
                    guest_tsc_gap_us: None,
                    ..d.into()
                })
                .unwrap_or_default(),
            wall_time_ms,
            resume_time_ms,
            bytes_sent,
            memory_bytes: guest_memory_bytes,
            ram_total_bytes: uint(ram, "total"),
            bytes_per_memory: if guest_memory_bytes == 0 {
                0.0
            } else {
                bytes_sent as f64 / guest_memory_bytes as f64
            },
            zero_pages: uint(ram, "duplicate"),
            normal_pages: uint(ram, "normal"),
            normal_bytes: uint(ram, "normal-bytes"),
            page_size: uint(ram, "page-size"),
            rounds: uint(ram, "dirty-sync-count"),
            mbps: num(ram, "mbps"),
            downtime_bytes: ram.get("downtime-bytes").and_then(Value::as_u64),
            precopy_bytes: ram.get("precopy-bytes").and_then(Value::as_u64),
            max_bandwidth_bytes_per_s: qemu_max_bandwidth(params.max_bandwidth),
            downtime_limit_ms: params.downtime_limit_ms,
            capabilities: params.all_capabilities(),
            per_round: rounds_from_polls(&polls),
            qemu_version: version,
        })
    }

    /// Capabilities on both sides, then the source's bandwidth and downtime.
    fn set_migration_parameters(
        &mut self,
        destination: &mut Qemu,
        params: &MigrationParams,
    ) -> Result<(), Error> {
        let all = params.all_capabilities();
        if !all.is_empty() {
            let caps: Vec<Value> = all
                .iter()
                .map(|c| json!({"capability": c, "state": true}))
                .collect();
            self.qmp().execute(
                "migrate-set-capabilities",
                Some(json!({ "capabilities": caps })),
            )?;
            destination.qmp().execute(
                "migrate-set-capabilities",
                Some(json!({ "capabilities": caps })),
            )?;
        }
        self.qmp().execute(
            "migrate-set-parameters",
            Some(json!({
                "max-bandwidth": qemu_max_bandwidth(params.max_bandwidth),
                "downtime-limit": params.downtime_limit_ms,
            })),
        )?;
        Ok(())
    }

    /// Polls `query-migrate` until the migration ended, cancelling it after
    /// `params.timeout`. With `late`, attaches the probe to the destination
    /// once that is `postcopy-active` (polling it every millisecond until
    /// then).
    fn poll_migration(
        &mut self,
        params: &MigrationParams,
        started: Instant,
        mut late: Option<(&Probe, &mut Qemu)>,
    ) -> Result<Polled, Error> {
        let mut timed_out = false;
        let mut polls: Vec<(u64, u64, f64)> = Vec::new();
        let mut next_poll = Instant::now();
        loop {
            if let Some((probe, dst)) = late.as_mut() {
                let info = dst.qmp().execute("query-migrate", None)?;
                if info["status"].as_str() == Some("postcopy-active") {
                    probe.attach(dst)?;
                    late = None;
                } else if Instant::now() < next_poll {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            next_poll = Instant::now() + params.poll_interval;
            let info = self.qmp().execute("query-migrate", None)?;
            if let Some(ram) = info.get("ram") {
                polls.push((
                    uint(ram, "dirty-sync-count"),
                    uint(ram, "normal"),
                    num(ram, "dirty-pages-rate"),
                ));
            }
            let status = info["status"].as_str().unwrap_or("").to_string();
            // QEMU sets `completed` a moment before it computes the total
            // time and downtime: until they are there, ask again.
            if status == "completed"
                && info
                    .get("total-time")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
                    <= 0.0
                && started.elapsed() <= params.timeout
            {
                std::thread::sleep(params.poll_interval);
                continue;
            }
            match status.as_str() {
                // A post-copy whose destination died pauses for good (QEMU
                // waits for postcopy-recover): ended, not completed.
                "completed" | "failed" | "cancelled" | "postcopy-paused" => {
                    return Ok(Polled {
                        info,
                        polls,
                        timed_out,
                    });
                }
                "" => {
                    return Err(Error::Reply {
                        command: "query-migrate".into(),
                        detail: format!("no status: {info}"),
                    });
                }
                _ => {}
            }
            if started.elapsed() > params.timeout && !timed_out {
                timed_out = true;
                self.qmp().execute("migrate_cancel", None)?;
            }
            if timed_out && started.elapsed() > params.timeout * 2 {
                // Post-copy cannot be cancelled: give up on it.
                return Err(Error::Reply {
                    command: "migrate_cancel".into(),
                    detail: format!(
                        "the migration did not end after it was cancelled (status {status})"
                    ),
                });
            }
            std::thread::sleep(if late.is_some() {
                Duration::from_millis(1)
            } else {
                params.poll_interval
            });
        }
    }

    /// After a completed migration that started at `t_start`: the guest's
    /// largest heartbeat gap and the time to its first heartbeat on the
    /// destination, in ms.
    fn heartbeat_gap(
        &mut self,
        destination: &mut Qemu,
        info: &Value,
        t_start: f64,
        params: &MigrationParams,
    ) -> Result<(Option<f64>, Option<f64>), Error> {
        // QEMU's own stop time of the source; a heartbeat printed after
        // it ran on the destination. Earlier ones may still show up in
        // the destination's log (printed before the stop, flushed after).
        let paused_at = t_start + (num(info, "total-time") - num(info, "downtime")) / 1e3;
        let (_, first) = destination.wait_for_line(
            0,
            params.resume_timeout,
            "the first heartbeat on the destination after migration",
            |l| serial::is_heartbeat(l) && l.time >= paused_at,
        )?;
        let src = self.serial().lines();
        let dst = destination.serial().lines();
        let gap = max_heartbeat_gap(&[&src, &dst], t_start, first.time);
        Ok((
            gap.map(|g| g.seconds * 1e3),
            Some((first.time - t_start) * 1e3),
        ))
    }
}

/// Boots `config` in a source QEMU, waits for its first heartbeat and then
/// `warmup` more (so the workload is in its steady state), starts a
/// destination QEMU with the same configuration, and migrates.
pub fn migrate_guest(
    config: &QemuConfig,
    params: &MigrationParams,
    warmup: Duration,
) -> Result<MigrationRun, Error> {
    migrate_guest_after(
        config,
        params,
        "the first heartbeat",
        serial::is_heartbeat,
        warmup,
    )
}

/// Like [`migrate_guest`], but first waits (up to 60 s) for a serial line
/// satisfying `ready` (named `what` in errors), e.g. a verification showing
/// the working set is fully written, then `warmup` more.
pub fn migrate_guest_after(
    config: &QemuConfig,
    params: &MigrationParams,
    what: &str,
    ready: impl FnMut(&SerialLine) -> bool,
    warmup: Duration,
) -> Result<MigrationRun, Error> {
    let mut source = Qemu::spawn(config)?;
    source.wait_for_line(0, Duration::from_secs(60), what, ready)?;
    let mut destination = Qemu::spawn_incoming(config)?;
    std::thread::sleep(warmup);
    let report = source.migrate_to(&mut destination, params, config.memory_mib << 20)?;
    Ok(MigrationRun {
        report,
        source,
        destination,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_from_sampled_polls() {
        // sync count, normal pages, dirty rate
        let polls = [
            (0, 0, 0.0),
            (1, 100, 0.0),
            (1, 5000, 0.0),
            (2, 9000, 1200.0),
            (2, 9500, 1200.0),
            (4, 9900, 1500.0), // two short rounds merged
            (5, 10000, 1400.0),
        ];
        let r = rounds_from_polls(&polls);
        let got: Vec<(u32, u64, f64)> = r
            .iter()
            .map(|p| (p.round, p.pages_sent, p.dirty_rate))
            .collect();
        assert_eq!(got, [(1, 9000, 1200.0), (2, 900, 1500.0), (4, 100, 1400.0)]);
        assert!(rounds_from_polls(&[]).is_empty());
        // A migration seen only at its end still yields one point.
        let r = rounds_from_polls(&[(3, 700, 10.0)]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pages_sent, 700);
    }

    #[test]
    fn bandwidth_values() {
        let gbit = Bandwidth::from_bits_per_sec(1_000_000_000);
        assert_eq!(qemu_max_bandwidth(gbit), 125_000_000);
        assert_eq!(qemu_max_bandwidth(None), UNLIMITED_BYTES_PER_S);
    }
}
