//! Safety of live migration, end to end with real `ferry` processes, KVM and
//! TCP: every failure before Commit, injected at several points of a
//! migration, leaves exactly one copy of the VM running (on the source) with
//! its integrity check passing, and a retry then succeeds. docs/SAFETY.md
//! has the matrix of failures, points and tests.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use common::*;

/// Where in a migration a fault is injected, judged from the engine's own
/// progress (`GET /api/v1/vm.migrate`) or from the frames on the wire.
#[derive(Clone, Copy, Debug)]
enum Point {
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
    fn migrate_args(self) -> &'static [&'static str] {
        match self {
            Point::EarlyRound1 | Point::LateRounds => {
                &["--strategy", "downtime", "--max-bandwidth", SLOW]
            }
            Point::StopAndCopy => &["--strategy", "stop-and-copy", "--max-bandwidth", SLOW],
            Point::StateTransfer => &["--strategy", "stop-and-copy", "--max-bandwidth", "1Gbit"],
        }
    }

    /// Waits until the migration has reached this point (not for StateTransfer,
    /// which a proxy finds on the wire).
    fn wait(self, src: &Vm) {
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

    /// A proxy trigger for this point: the fault lands inside a frame of
    /// the right kind once the migration is there.
    fn trigger(self) -> Trigger {
        match self {
            Point::EarlyRound1 => Trigger {
                min_bytes: 2 << 20,
                kind: Some(PAGES),
                armed: true,
                after_frame: false,
            },
            // Armed by the test once progress shows the point.
            Point::LateRounds | Point::StopAndCopy => Trigger {
                min_bytes: 0,
                kind: Some(PAGES),
                armed: false,
                after_frame: false,
            },
            Point::StateTransfer => Trigger {
                min_bytes: 0,
                kind: Some(STATE),
                armed: true,
                after_frame: false,
            },
        }
    }
}

const ALL_POINTS: [Point; 4] = [
    Point::EarlyRound1,
    Point::LateRounds,
    Point::StopAndCopy,
    Point::StateTransfer,
];

/// Common checks after a failed attempt: `ferry migrate` failed with one
/// error line naming `words`, the VM runs on the source and verifies, and
/// it is the only copy.
fn assert_rolled_back(src: &mut Vm, migrate: &mut Proc, dest: &mut Dest, words: &[&str]) {
    migrate.assert_failed_with(PATIENCE, words);
    src.assert_running_and_healthy();
    assert_exactly_one(src, &mut [dest]);
    let m = src.migration().expect("migration status");
    assert_eq!(m["done"], true, "{m}");
    assert_eq!(m["report"]["vm_location"], "source", "{m}");
}

/// Proxy-injected fault at `point`; returns the proxy (kept alive by the caller).
fn faulty_attempt(
    dir: &Path,
    src: &Vm,
    secret: &Path,
    name: &str,
    point: Point,
    action: Action,
) -> (Dest, Proxy, Proc) {
    let dest = Dest::start(dir, &format!("{name}-dst"), secret, &[]);
    let proxy = Proxy::start(dest.socket_addr(), action, point.trigger());
    let m = src.start_migrate(
        dir,
        &format!("{name}-migrate"),
        &proxy.addr,
        secret,
        point.migrate_args(),
    );
    if matches!(point, Point::LateRounds | Point::StopAndCopy) {
        point.wait(src);
        proxy.arm();
    }
    proxy.wait_fired();
    (dest, proxy, m)
}

// 1 ------------------------------------------------------------------------

#[test]
fn destination_killed_at_each_point_vm_stays_on_source() {
    let _g = serial();
    let dir = TempDir::new("kill");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    for (i, point) in ALL_POINTS.into_iter().enumerate() {
        let name = format!("kill{i}");
        let (mut dest, proxy, mut m) = if let Point::StateTransfer = point {
            // Hold the stream inside the State frame, kill, then let the
            // source see the connection go as it would without a proxy.
            let (mut d, p, m) =
                faulty_attempt(dir.path(), &src, &secret, &name, point, Action::Freeze);
            d.proc.kill();
            p.sever();
            (d, Some(p), m)
        } else {
            let mut d = Dest::start(dir.path(), &format!("{name}-dst"), &secret, &[]);
            let m = src.start_migrate(
                dir.path(),
                &format!("{name}-migrate"),
                &d.addr,
                &secret,
                point.migrate_args(),
            );
            point.wait(&src);
            d.proc.kill();
            (d, None, m)
        };
        assert_rolled_back(&mut src, &mut m, &mut dest, &[]);
        assert!(!dest.proc.alive(), "{point:?}: destination still alive");
        drop(proxy);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

// 2 ------------------------------------------------------------------------

#[test]
fn connection_dropped_at_each_point_vm_stays_on_source() {
    let _g = serial();
    let dir = TempDir::new("drop");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    for (i, point) in ALL_POINTS.into_iter().enumerate() {
        let (mut dest, _proxy, mut m) = faulty_attempt(
            dir.path(),
            &src,
            &secret,
            &format!("drop{i}"),
            point,
            Action::Close,
        );
        assert_rolled_back(&mut src, &mut m, &mut dest, &[]);
        dest.assert_discarded(&["nothing runs here"]);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

// 3 ------------------------------------------------------------------------

#[test]
fn connection_stalled_source_aborts_after_stall_timeout() {
    let _g = serial();
    let dir = TempDir::new("stall");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    for (i, point) in [Point::EarlyRound1, Point::StopAndCopy, Point::StateTransfer]
        .into_iter()
        .enumerate()
    {
        let (mut dest, proxy, mut m) = faulty_attempt(
            dir.path(),
            &src,
            &secret,
            &format!("stall{i}"),
            point,
            Action::Freeze,
        );
        // migrate::DEFAULT_STALL_TIMEOUT is 10 s on both sides.
        assert_rolled_back(&mut src, &mut m, &mut dest, &["no progress"]);
        dest.assert_discarded(&["no progress"]);
        drop(proxy);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

// 4 ------------------------------------------------------------------------

#[test]
fn corrupted_stream_is_detected_and_vm_stays_on_source() {
    let _g = serial();
    let dir = TempDir::new("corrupt");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    for (i, point) in ALL_POINTS.into_iter().enumerate() {
        let (mut dest, _proxy, mut m) = faulty_attempt(
            dir.path(),
            &src,
            &secret,
            &format!("corrupt{i}"),
            point,
            Action::Corrupt,
        );
        assert_rolled_back(&mut src, &mut m, &mut dest, &["checksum"]);
        dest.assert_discarded(&["checksum"]);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

// 5 ------------------------------------------------------------------------

#[test]
fn destination_memory_limit_refuses_and_vm_stays_on_source() {
    let _g = serial();
    let dir = TempDir::new("oom");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "oom-dst", &secret, &["--max-memory", "64M"]);
    let mut m = src.start_migrate(dir.path(), "oom-migrate", &dest.addr, &secret, &[]);
    assert_rolled_back(&mut src, &mut m, &mut dest, &["memory", "64 MiB"]);
    dest.assert_discarded(&["memory", "max-memory"]);
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

// 6 ------------------------------------------------------------------------

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let _g = serial();
    let dir = TempDir::new("secret");
    let secret = dir.secret("secret");
    let other = dir.secret("other-secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "auth-dst", &other, &[]);
    let mut m = src.start_migrate(dir.path(), "auth-migrate", &dest.addr, &secret, &[]);
    assert_rolled_back(&mut src, &mut m, &mut dest, &["authenticat"]);
    dest.assert_discarded(&["authenticat"]);
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

// 7, 8 ---------------------------------------------------------------------

#[test]
fn unreachable_silent_and_garbage_peers_leave_vm_running() {
    let _g = serial();
    let dir = TempDir::new("peers");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let run = |src: &mut Vm, name: &str, to: &str, words: &[&str]| {
        let mut m = src.start_migrate(dir.path(), name, to, &secret, &[]);
        m.assert_failed_with(PATIENCE, words);
        src.assert_running_and_healthy();
        assert_exactly_one(src, &mut []);
    };

    // Nothing listens there.
    let closed = format!("127.0.0.1:{}", free_port());
    run(&mut src, "refused", &closed, &["cannot connect", "refused"]);

    // A listener that never accepts: the kernel completes the TCP handshake
    // but nobody ever answers Hello.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    run(
        &mut src,
        "silent",
        &silent_addr,
        &["no progress", "authenticating"],
    );
    drop(silent);

    // A peer that answers with random bytes.
    let garbage = GarbageServer::start();
    run(&mut src, "garbage", &garbage.addr.clone(), &[]);

    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

/// `ferry receive` fed garbage, a truncated stream, or a Hello of an unknown
/// protocol version exits non-zero with one error line, never a panic.
#[test]
fn receive_rejects_garbage_truncated_and_wrong_version() {
    require_kvm();
    let dir = TempDir::new("recv-bad");
    let secret = dir.secret("secret");

    let hello = |min: u16, max: u16| -> Vec<u8> {
        let mut w = wire::MessageWriter::new(Vec::new());
        w.hello(&wire::Hello {
            min_version: min,
            max_version: max,
            capabilities: wire::Capabilities::NONE,
            nonce: [7; wire::NONCE_LEN],
        })
        .unwrap();
        w.flush().unwrap();
        w.get_ref().clone()
    };
    let valid = hello(wire::MIN_PROTOCOL_VERSION, wire::PROTOCOL_VERSION);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("garbage", random_bytes(4096), &[]),
        ("truncated", valid[..valid.len() / 2].to_vec(), &[]),
        ("version", hello(90, 99), &["version"]),
    ];
    for (name, bytes, words) in cases {
        let mut dest = Dest::start(dir.path(), name, &secret, &[]);
        let mut s = TcpStream::connect(&dest.addr).unwrap();
        s.write_all(&bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // Whatever it answers (VersionRefused, Abort), then it closes.
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        dest.assert_discarded(words);
    }
}

// 9 ------------------------------------------------------------------------

#[test]
fn second_migration_is_refused_while_one_runs() {
    let _g = serial();
    let dir = TempDir::new("second");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut other = Dest::start(dir.path(), "other-dst", &secret, &[]);
    let mut first = src.start_migrate(
        dir.path(),
        "first",
        &dest.addr,
        &secret,
        &["--strategy", "xen", "--max-bandwidth", SLOW],
    );
    src.wait_progress("round 1 under way", |ph, _, b| {
        ph == "iterative" && b > 1 << 20
    });
    let mut second = Proc::spawn(
        dir.path(),
        "second",
        &[
            "migrate",
            "--api",
            src.sock.to_str().unwrap(),
            "--to",
            &other.addr,
            "--secret-file",
            secret.to_str().unwrap(),
            "--json",
        ],
    );
    second.assert_failed_with(PATIENCE, &["already running", "409"]);
    let st = first.wait(PATIENCE * 2);
    assert!(
        st.success(),
        "the first migration failed: {}",
        first.stderr_text()
    );
    assert_completed_on(&mut src, &mut dest, &first);
    // The refused destination never got a connection and still waits.
    assert!(other.proc.alive());
    assert!(other.state().is_none());
    other.proc.kill();
}

// 10 -----------------------------------------------------------------------

#[test]
fn cancelled_migration_leaves_vm_running_on_source() {
    let _g = serial();
    let dir = TempDir::new("cancel");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    for (i, point) in ALL_POINTS.into_iter().enumerate() {
        let name = format!("cancel{i}");
        let cancel = |src: &Vm| {
            src.client
                .put_ok(api::routes::VM_MIGRATE_CANCEL, None)
                .expect("cancel accepted");
        };
        if let Point::StateTransfer = point {
            // The stream is held inside the State frame, so the source waits
            // for Ready: cancelling must not wait for the stall timeout.
            let (mut dest, proxy, mut m) =
                faulty_attempt(dir.path(), &src, &secret, &name, point, Action::Freeze);
            cancel(&src);
            assert_rolled_back(&mut src, &mut m, &mut dest, &["cancelled"]);
            proxy.sever();
            dest.assert_discarded(&[]);
            continue;
        }
        let mut dest = Dest::start(dir.path(), &format!("{name}-dst"), &secret, &[]);
        let mut m = src.start_migrate(
            dir.path(),
            &format!("{name}-migrate"),
            &dest.addr,
            &secret,
            point.migrate_args(),
        );
        point.wait(&src);
        cancel(&src);
        assert_rolled_back(&mut src, &mut m, &mut dest, &["cancelled"]);
        dest.assert_discarded(&["cancel"]);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

// 11 -----------------------------------------------------------------------

fn happy_path(strategy: &str) {
    let _g = serial();
    let dir = TempDir::new(strategy);
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut m = src.start_migrate(
        dir.path(),
        "migrate",
        &dest.addr,
        &secret,
        &["--strategy", strategy, "--max-bandwidth", "1Gbit"],
    );
    let st = m.wait(PATIENCE * 2);
    assert!(st.success(), "migration failed: {}", m.stderr_text());
    let report: serde_json::Value = serde_json::from_str(&m.stdout_text()).unwrap();
    assert_eq!(report["strategy"], strategy);
    assert_completed_on(&mut src, &mut dest, &m);
}

#[test]
fn happy_path_stop_and_copy() {
    happy_path("stop-and-copy");
}

#[test]
fn happy_path_xen() {
    happy_path("xen");
}

#[test]
fn happy_path_downtime() {
    happy_path("downtime");
}

// The commit window (docs/PROTOCOL.md, "The commit rule, and the in-doubt
// window") ------------------------------------------------------------------

/// Starts a stop-and-copy migration through a proxy that closes both
/// connections at the Commit frame: just after it (`after_frame`, so the
/// destination reads Commit but its Resumed is lost) or inside it (Commit
/// never arrives).
fn commit_window_attempt(
    dir: &Path,
    src: &Vm,
    secret: &Path,
    after_frame: bool,
) -> (Dest, Proxy, Proc) {
    let dest = Dest::start(dir, "commit-dst", secret, &[]);
    let trigger = Trigger {
        min_bytes: 0,
        kind: Some(COMMIT),
        armed: true,
        after_frame,
    };
    let proxy = Proxy::start(dest.socket_addr(), Action::Close, trigger);
    let m = src.start_migrate(
        dir,
        "commit-migrate",
        &proxy.addr,
        secret,
        &["--strategy", "stop-and-copy", "--max-bandwidth", "1Gbit"],
    );
    proxy.wait_fired();
    (dest, proxy, m)
}

fn assert_in_doubt(report: &serde_json::Value) {
    assert_eq!(report["vm_location"], "unknown", "{report}");
    assert!(
        report["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("in doubt")),
        "{report}"
    );
}

/// The source's last heartbeat in its log stays put: its VM never runs again.
fn assert_source_never_resumes(src: &mut Vm) {
    let before = read_serial(&src.serial).heartbeats.last().copied();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = read_serial(&src.serial).heartbeats.last().copied();
    assert_eq!(before, after, "the source VM ran again after Commit");
    if src.proc.alive() {
        let state = src.state();
        assert!(
            state.as_deref().is_none_or(|s| !holds_vm(s)),
            "the source still holds a live VM after Commit: {state:?}"
        );
    }
}

#[test]
fn commit_delivered_but_ack_lost_vm_runs_only_on_destination() {
    let _g = serial();
    let dir = TempDir::new("commit-ack");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let (mut dest, _proxy, mut m) = commit_window_attempt(dir.path(), &src, &secret, true);
    let st = m.wait(PATIENCE);
    let report: serde_json::Value = serde_json::from_str(&m.stdout_text())
        .unwrap_or_else(|e| panic!("report: {e}: {}", m.stdout_text()));
    // Resumed may or may not slip through before the proxy closes.
    if st.success() {
        assert_eq!(report["outcome"], "completed", "{report}");
    } else {
        m.assert_failed_with(PATIENCE, &[]);
        assert_in_doubt(&report);
    }
    assert_source_never_resumes(&mut src);
    wait_for("the destination to run and verify", PATIENCE, || {
        let v = status(&dest.sock)?;
        assert_eq!(v["guest"]["verify_failures"], 0, "{v}");
        let log = read_serial(&dest.serial);
        (v["state"] == "running" && log.verify_ok >= 1 && !log.heartbeats.is_empty()).then_some(())
    });
    assert_exactly_one(&mut src, &mut [&mut dest]);
    let log = read_serial(&dest.serial);
    assert!(log.verify_fail.is_empty(), "{log:?}");
    assert_one_after_other(&read_serial(&src.serial), &log);
}

#[test]
fn commit_lost_in_flight_vm_never_runs_twice() {
    let _g = serial();
    let dir = TempDir::new("commit-lost");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let (mut dest, _proxy, mut m) = commit_window_attempt(dir.path(), &src, &secret, false);
    m.assert_failed_with(PATIENCE, &["resume"]);
    assert_in_doubt(&serde_json::from_str(&m.stdout_text()).unwrap());
    // The destination never read Commit: it discards; the source has retired
    // the VM. The documented cost of "never two" is this row: nowhere.
    dest.assert_discarded(&["nothing runs here"]);
    assert_source_never_resumes(&mut src);
}

/// docs/PROTOCOL.md: in the in-doubt case "the source keeps the paused,
/// retired VM (memory and state) instead of freeing it ... so an operator
/// can decide". `ferry migrate` must not shut the source down, and the
/// source process must keep the VM until told to stop.
fn source_keeps_retired_vm(hold: std::time::Duration) {
    let _g = serial();
    let dir = TempDir::new("commit-keep");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let (mut dest, _proxy, mut m) = commit_window_attempt(dir.path(), &src, &secret, false);
    m.assert_failed_with(PATIENCE, &["resume"]);
    assert!(m.stderr_text().contains("in doubt"), "{}", m.stderr_text());
    dest.assert_discarded(&["nothing runs here"]);
    std::thread::sleep(hold);
    assert!(
        src.proc.alive(),
        "the source process exited and freed the only copy of the VM: {}",
        src.proc.stderr_text()
    );
    assert_eq!(src.state().as_deref(), Some("migrated"));
    assert_source_never_resumes(&mut src);
}

#[test]
fn commit_lost_in_flight_source_keeps_retired_vm() {
    source_keeps_retired_vm(std::time::Duration::from_secs(1));
}

#[test]
fn commit_lost_in_flight_source_keeps_retired_vm_past_a_minute() {
    source_keeps_retired_vm(std::time::Duration::from_secs(65));
}

/// An error's cause appears once in `ferry receive`'s error line.
#[test]
fn receive_error_names_its_cause_once() {
    require_kvm();
    let dir = TempDir::new("recv-dup");
    let secret = dir.secret("secret");
    let mut dest = Dest::start(dir.path(), "dup", &secret, &[]);
    let mut s = TcpStream::connect(&dest.addr).unwrap();
    s.write_all(b"not a ferry peer").unwrap();
    drop(s);
    dest.proc.wait(PATIENCE);
    let err = dest.proc.stderr_text();
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .expect("an error line");
    let cause = line.rsplit(": ").next().unwrap();
    assert_eq!(line.matches(cause).count(), 1, "cause repeated: {line}");
}
