//! Points of a migration where faults are injected, and the checks after a
//! failed attempt.

use std::path::Path;

use crate::harness::*;

/// Where in a migration a fault is injected, judged from the engine's own
/// progress (`GET /api/v1/vm.migrate`) or from the frames on the wire.
#[derive(Clone, Copy, Debug)]
pub enum Point {
    /// Round 1 of pre-copy, a few MiB in (downtime strategy, slow link).
    EarlyRound1,
    /// Round 2 or later of pre-copy (downtime strategy, slow link).
    LateRounds,
    /// While memory is copied with the VM paused (stop-and-copy strategy).
    StopAndCopy,
    /// In the middle of the State frame (device and vCPU state).
    StateTransfer,
}

impl Point {
    pub fn migrate_args(self) -> &'static [&'static str] {
        match self {
            Point::EarlyRound1 | Point::LateRounds => {
                &["--strategy", "downtime", "--max-bandwidth", SLOW]
            }
            // The paused round ignores --max-bandwidth (as QEMU): emulate the link.
            Point::StopAndCopy => &["--strategy", "stop-and-copy", "--link-bandwidth", SLOW],
            Point::StateTransfer => &["--strategy", "stop-and-copy", "--max-bandwidth", "1Gbit"],
        }
    }

    /// Waits until the migration has reached this point (not for StateTransfer,
    /// which a proxy finds on the wire).
    pub fn wait(self, src: &Vm) {
        match self {
            Point::EarlyRound1 => src.wait_progress("round 1, 4 MiB sent", |ph, r, b| {
                ph == "iterative" && r == 1 && b >= 4 << 20
            }),
            // Round 2 or later; if a slowed-down guest dirtied so little that
            // the strategy switched over at once, its final round.
            Point::LateRounds => src.wait_progress("round 2 or later", |ph, r, _| {
                r >= 2 && (ph == "iterative" || ph == "stop-and-copy")
            }),
            Point::StopAndCopy => src.wait_progress("stop-and-copy, 2 MiB sent", |ph, _, b| {
                ph == "stop-and-copy" && b >= 2 << 20
            }),
            Point::StateTransfer => unreachable!("found by the proxy"),
        };
    }

    /// The proxy's fault for this point: `action` inside a frame of the
    /// right kind once the migration is there.
    fn fault(self, action: Action) -> Fault {
        match self {
            Point::EarlyRound1 => Fault::new(Dir::ToDest, PAGES, action).after_bytes(2 << 20),
            // Armed by the test once progress shows the point.
            Point::LateRounds | Point::StopAndCopy => {
                Fault::new(Dir::ToDest, PAGES, action).disarmed()
            }
            Point::StateTransfer => Fault::new(Dir::ToDest, STATE, action),
        }
    }
}

pub const ALL_POINTS: [Point; 4] = [
    Point::EarlyRound1,
    Point::LateRounds,
    Point::StopAndCopy,
    Point::StateTransfer,
];

/// Common checks after a failed attempt: `ferry migrate` failed with one
/// error line naming `words`, the VM runs on the source and verifies, and
/// it is the only copy.
pub fn assert_rolled_back(src: &mut Vm, migrate: &mut Proc, dest: &mut Dest, words: &[&str]) {
    migrate.assert_failed_with(PATIENCE, words);
    src.assert_running_and_healthy();
    assert_exactly_one(src, &mut [dest]);
    let m = src.migration().expect("migration status");
    assert_eq!(m["done"], true, "{m}");
    assert_eq!(m["report"]["vm_location"], "source", "{m}");
}

/// Proxy-injected fault at `point`; returns the proxy (kept alive by the caller).
pub fn faulty_attempt(
    dir: &Path,
    src: &Vm,
    secret: &Path,
    name: &str,
    point: Point,
    action: Action,
) -> (Dest, Proxy, Proc) {
    let dest = Dest::start(dir, &format!("{name}-dst"), secret, &[]);
    let proxy = start_proxy(dest.socket_addr(), point.fault(action));
    let m = src.start_migrate(
        dir,
        &format!("{name}-migrate"),
        &proxy.addr.to_string(),
        secret,
        point.migrate_args(),
    );
    if matches!(point, Point::LateRounds | Point::StopAndCopy) {
        point.wait(src);
        proxy.arm();
    }
    wait_fired(&proxy);
    (dest, proxy, m)
}
