//! One trial: a source and a destination `ferry` process, the fault proxy
//! between them, one failure of a [`Plan`], then where the VM runs, whether
//! its own integrity check passes there, and whether it ever ran twice.

use std::path::Path;
use std::time::{Duration, Instant};

use api::routes;
use api::types::{MigrateRequest, MigrationStatus};
use migrate::faults::{Action, Proxy};
use migrate::{Phase, VmLocation};
use yardstick::serial::{heartbeat_seq, heartbeats, whole_beats};

use super::cell::{Failure, Plan, Point, When};
use crate::pair::{GuestSpec, Pair};
use crate::serial::{now, read_stamped_log};

/// What a trial found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub label: String,
    /// Whether the failure was injected (the migration may end before its
    /// point comes; such a trial counts for nothing).
    pub injected: bool,
    /// Whether the VM had to outlive it: [`Plan::survivable`], unless the
    /// source's report says the commit is in doubt or the VM had already
    /// moved when the destination died.
    pub survivable: bool,
    pub on_source: bool,
    pub on_destination: bool,
    /// A `VERIFY ok` after the failure on the host that runs the VM, and no
    /// `VERIFY FAIL` in either log; `None` when no host runs it and neither
    /// log has a `VERIFY FAIL`.
    pub integrity_ok: Option<bool>,
    /// Both sides ran the guest: both run it at the end, or their
    /// heartbeats, merged by time, repeat or go back.
    pub split: bool,
    /// From the failure to the first heartbeat after the migration settled,
    /// on the host that runs the VM.
    pub repair_ms: Option<f64>,
    /// The source's report (`outcome`, `vm_location`) and error, if any.
    pub report: Option<String>,
    pub error: Option<String>,
}

impl Outcome {
    /// The VM is gone or damaged though it had to survive, ran twice, or
    /// failed its integrity check anywhere.
    pub fn bad(&self) -> bool {
        let lost = !(self.on_source || self.on_destination);
        self.split
            || self.integrity_ok == Some(false)
            || (self.injected && self.survivable && (lost || self.integrity_ok != Some(true)))
    }
}

/// Every trial ends within this long, killing what it started.
pub const TRIAL_LIMIT: Duration = Duration::from_secs(90);
/// A stalled link is released (severed) after this long: past the 10 s
/// stall timeout of both sides.
const STALL_HOLD: Duration = Duration::from_secs(12);
/// How long the destination may take to settle once the source is done:
/// its own stall timeout and post-copy recovery timeout.
const SETTLE: Duration = Duration::from_secs(15);
/// How long to wait for the guest's integrity check once settled (it
/// verifies every 500 ms).
const VERIFY_WAIT: Duration = Duration::from_secs(15);

/// The guest: a dirtier over a 16 MiB working set, verified every 500 ms.
pub fn guest() -> GuestSpec {
    GuestSpec {
        guest: "dirtier".into(),
        memory: units::ByteSize(64 << 20),
        vcpus: 1,
        append: "ws=16M rate=2000 verify=500ms".into(),
    }
}

/// The migration: a 100 Mbit/s emulated link (a few seconds), short
/// post-copy lease and recovery timeout so post-copy failures settle fast.
fn request(plan: &Plan, to: String, secret: &Path) -> MigrateRequest {
    MigrateRequest {
        to,
        strategy: Some(plan.mode.strategy().into()),
        strategy_params: plan.mode.strategy_params(),
        link_bandwidth_bps: Some(100_000_000),
        lease_ms: Some(200),
        recovery_timeout_ms: Some(1000),
        sync_interval_ms: Some(100),
        secret_file: Some(secret.display().to_string()),
        ..MigrateRequest::default()
    }
}

/// Runs `plan` in `dir`: an `Err` is the bench's own failure (a process
/// that would not start), not the VM's.
pub fn run(dir: &Path, plan: &Plan) -> anyhow::Result<Outcome> {
    let mut pair = Pair::start_with(dir, &guest(), &["--recovery-timeout", "1s"])?;
    let ws_pages = 16 << 8;
    pair.wait_source("the dirtier to fill its working set", |g| {
        g.verify_passes >= 1 && g.pages_written >= ws_pages
    })?;
    let id = pair.source.get_ok(routes::VM)?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let proxy = Proxy::start(pair.addr.parse()?, plan.fault)?;
    let req = request(plan, proxy.addr.to_string(), &pair.secret);
    pair.source
        .put_ok(routes::VM_MIGRATE, Some(&serde_json::to_value(&req)?))?;
    let mut t = Tracker::new(plan, now(), id.clone());
    let end = Instant::now() + TRIAL_LIMIT;
    while Instant::now() < end && !t.settled(&mut pair) {
        t.step(&mut pair, &proxy);
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(proxy);
    let out = t.judge(&mut pair);
    // A restarted source still at work leaves its state directory.
    pair.kill_source();
    pair.forget_source_state(&id);
    drop(pair);
    Ok(out)
}

/// A trial's state as it runs.
struct Tracker<'a> {
    plan: &'a Plan,
    started: f64,
    /// When the failure happened (host clock of the stamped logs).
    injected: Option<f64>,
    armed: bool,
    severed: bool,
    /// Post-copy pages left when it began.
    set: Option<u64>,
    /// When the source's migration was seen over (or the source dead).
    source_done: Option<f64>,
    last: Option<MigrationStatus>,
    /// The VM's name, which names the state directory a killed source leaves.
    id: String,
}

impl<'a> Tracker<'a> {
    fn new(plan: &'a Plan, started: f64, id: String) -> Tracker<'a> {
        Tracker {
            plan,
            started,
            injected: None,
            armed: false,
            severed: false,
            set: None,
            source_done: None,
            last: None,
            id,
        }
    }

    /// Watches the migration; injects the failure at its point.
    fn step(&mut self, pair: &mut Pair, proxy: &Proxy) {
        let status = if self.source_done.is_none() && pair.source_alive() {
            pair.source
                .get_ok(routes::VM_MIGRATE)
                .ok()
                .and_then(|v| serde_json::from_value::<MigrationStatus>(v).ok())
        } else {
            None
        };
        if let Some(s) = &status {
            self.last = Some(s.clone());
        }
        let done = status.as_ref().is_some_and(|s| s.done) || !pair.source_alive();
        if done && self.source_done.is_none() {
            self.source_done = Some(now());
        }
        match self.injected {
            None if !done => self.inject(pair, proxy, status.as_ref()),
            Some(at) => {
                let stalled = self.plan.fault.is_some_and(|f| f.action == Action::Stall);
                if stalled
                    && !self.plan.failure.is_kill()
                    && !self.severed
                    && (done || now() - at > STALL_HOLD.as_secs_f64())
                {
                    proxy.sever();
                    self.severed = true;
                }
            }
            None => {}
        }
    }

    fn inject(&mut self, pair: &mut Pair, proxy: &Proxy, status: Option<&MigrationStatus>) {
        if proxy.fired() {
            if self.plan.failure.is_kill() {
                self.kill(pair);
                proxy.sever();
                self.severed = true;
            }
            self.injected = Some(now());
            return;
        }
        if self.armed || !self.due(status) {
            return;
        }
        if self.plan.fault.is_some_and(|f| !f.armed) {
            proxy.arm();
            self.armed = true;
        } else if self.plan.fault.is_none() {
            self.kill(pair);
            self.injected = Some(now());
        }
    }

    /// A source killed after the switch is started again on the state
    /// directory it left (`ferry run --recover`), as an operator would.
    fn kill(&self, pair: &mut Pair) {
        match self.plan.failure {
            Failure::KillSource => {
                pair.kill_source();
                if let Err(e) = pair.recover_source(&self.id) {
                    tracing::warn!("cannot restart the source: {e:#}");
                }
            }
            _ => pair.kill_destination(),
        }
    }

    /// Whether the progress reached the plan's point (or its time came).
    fn due(&mut self, status: Option<&MigrationStatus>) -> bool {
        let Some(p) = status.map(|s| &s.progress) else {
            return false;
        };
        let post = p.phase == Phase::Postcopy;
        if post && self.set.is_none() {
            self.set = Some(p.remaining_bytes);
        }
        let set = self.set.unwrap_or(0);
        match self.plan.when {
            When::After(d) => now() - self.started >= d.as_secs_f64(),
            When::At(Point::Round) => p.phase == Phase::Iterative && p.bytes_sent >= 2 << 20,
            When::At(Point::JustAfter) => post,
            When::At(Point::Half) => post && p.remaining_bytes <= set / 2,
            When::At(Point::FewLeft) => post && p.remaining_bytes <= set / 8,
            // Frame points: the proxy's fault is armed from the start.
            When::At(_) => false,
        }
    }

    /// The migration is over on the source and the destination has
    /// exited, runs the VM, or had its time to do either.
    fn settled(&mut self, pair: &mut Pair) -> bool {
        let Some(done) = self.source_done else {
            return false;
        };
        !pair.destination_alive()
            || state(&pair.destination).as_deref() == Some("running")
            || now() - done > SETTLE.as_secs_f64()
    }

    /// Where the VM runs, its integrity there, and the time to repair.
    fn judge(&self, pair: &mut Pair) -> Outcome {
        let on_source = pair.source_alive() && state(&pair.source).as_deref() == Some("running");
        let on_destination =
            pair.destination_alive() && state(&pair.destination).as_deref() == Some("running");
        let report = self.last.as_ref().and_then(|s| s.report.as_ref());
        let survivable = self.plan.survivable()
            && !matches!(
                (report.map(|r| r.vm_location), self.plan.failure),
                (Some(VmLocation::Unknown), _)
                    | (Some(VmLocation::Destination), Failure::KillDestination)
            );
        let settled = self.source_done.unwrap_or_else(now);
        let host = match (on_source, on_destination) {
            (true, false) => Some(&pair.src_log),
            (false, true) => Some(&pair.dst_log),
            _ => None,
        };
        let verified = host.is_some_and(|log| {
            pair.wait_line_after(log, settled, "VERIFY ok", VERIFY_WAIT)
                .is_ok()
        });
        let logs = [
            read_stamped_log(&pair.src_log).unwrap_or_default(),
            read_stamped_log(&pair.dst_log).unwrap_or_default(),
        ];
        let failed = logs
            .iter()
            .flatten()
            .any(|l| l.text.starts_with("VERIFY FAIL"));
        let repair_ms = match (self.injected, host) {
            (Some(at), Some(log)) => first_heartbeat_after(log, settled).map(|t| (t - at) * 1e3),
            _ => None,
        };
        Outcome {
            label: self.plan.label(),
            injected: self.injected.is_some(),
            survivable,
            on_source,
            on_destination,
            integrity_ok: if host.is_some() || failed {
                Some(!failed && verified)
            } else {
                None
            },
            split: (on_source && on_destination) || interleaved(&logs[0], &logs[1]),
            repair_ms,
            report: report.map(|r| {
                format!(
                    "{} ({:?})",
                    serde_json::to_string(&r.outcome).unwrap_or_default(),
                    r.vm_location
                )
            }),
            error: self.last.as_ref().and_then(|s| s.error.clone()),
        }
    }
}

/// The state a process's API reports, if it answers.
fn state(client: &api::Client) -> Option<String> {
    let v = client.get_ok(routes::VM).ok()?;
    v["state"].as_str().map(str::to_string)
}

fn first_heartbeat_after(log: &Path, after: f64) -> Option<f64> {
    let lines = read_stamped_log(log).ok()?;
    heartbeats(&lines)
        .into_iter()
        .find(|h| h.time >= after)
        .map(|h| h.time)
}

/// Whether the two logs' heartbeats, merged by time, fail to form one
/// strictly increasing sequence: the guest ran in both places at once.
fn interleaved(src: &[yardstick::SerialLine], dst: &[yardstick::SerialLine]) -> bool {
    let all = whole_heartbeats(src, dst);
    all.windows(2).any(|w| w[1].1 <= w[0].1)
}

/// (time, sequence number) of every heartbeat of both logs, by time, each
/// once ([`yardstick::serial::whole_beats`]). An older build joined a cut
/// head to its next heartbeat (`HB seq=436 tsc=1HB seq=642 ...`): the
/// line's last heartbeat counts.
fn whole_heartbeats(
    src: &[yardstick::SerialLine],
    dst: &[yardstick::SerialLine],
) -> Vec<(f64, u64)> {
    let hb: Vec<(f64, u64, &str)> = src
        .iter()
        .chain(dst)
        .filter_map(|l| {
            let at = l.text.rfind("HB seq=")?;
            let text = l.text[at..].trim_end();
            Some((l.time, heartbeat_seq(text)?, text))
        })
        .collect();
    let beats: Vec<(u64, &str)> = hb.iter().map(|&(_, seq, text)| (seq, text)).collect();
    let mut out: Vec<(f64, u64)> = hb
        .iter()
        .zip(whole_beats(&beats))
        .filter(|(_, whole)| *whole)
        .map(|(&(t, seq, _), _)| (t, seq))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[(f64, u64)]) -> Vec<yardstick::SerialLine> {
        lines
            .iter()
            .map(|&(time, seq)| yardstick::SerialLine {
                arrival: time,
                time,
                // Each print its own TSC, as a guest's are.
                text: format!("HB seq={seq} tsc={}", (time * 1000.0) as u64),
            })
            .collect()
    }

    #[test]
    fn heartbeats_from_both_sides_at_once_are_a_split() {
        let src = log(&[(1.0, 1), (2.0, 2), (5.0, 5)]);
        // One after the other (a recovery back to the source): no split.
        assert!(!interleaved(&src, &log(&[(3.0, 3), (4.0, 4)])));
        // The same numbers printed on both sides: a split.
        assert!(interleaved(&src, &log(&[(3.0, 2), (4.0, 3)])));
        // A half line joined to the next heartbeat counts as that one.
        let mut joined = log(&[(1.0, 1), (2.0, 2)]);
        joined.push(yardstick::SerialLine {
            arrival: 5.0,
            time: 5.0,
            text: "HB seq=3 tsc=1HB seq=5 tsc=9".into(),
        });
        assert!(!interleaved(&joined, &log(&[(3.0, 3), (4.0, 4)])));
        // A half line ended, then printed again whole: one heartbeat.
        let mut replayed = log(&[(1.0, 1), (2.0, 2), (5.0, 3), (5.1, 3), (6.0, 4)]);
        replayed[2].text = "HB seq=3 tsc=51".into();
        assert!(!interleaved(&replayed, &[]));
        // A head left on the source, ended when the VM came back after
        // the destination printed that heartbeat whole and more: not a split.
        let dst = log(&[(2.0, 2), (3.0, 3), (4.0, 5)]);
        let mut back = log(&[(1.0, 1), (9.0, 2), (10.0, 6)]);
        back[1].text = "HB seq=2 tsc=2".into();
        assert!(!interleaved(&back, &dst));
        // The same number twice, printed apart: a split.
        assert!(interleaved(&log(&[(1.0, 2), (2.0, 3), (3.0, 2)]), &[]));
    }
}
