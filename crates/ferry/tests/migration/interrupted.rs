//! Rows 1-4 and 10 of docs/SAFETY.md: the destination killed, the
//! connection dropped, stalled or corrupted, and the migration cancelled,
//! at each point of a migration.

use crate::harness::*;
use crate::points::*;

/// docs/SAFETY.md row 1.
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
                faulty_attempt(dir.path(), &src, &secret, &name, point, Action::Stall);
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

/// docs/SAFETY.md row 2.
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
            Action::Cut,
        );
        assert_rolled_back(&mut src, &mut m, &mut dest, &[]);
        dest.assert_discarded(&["nothing runs here"]);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

/// docs/SAFETY.md row 3.
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
            Action::Stall,
        );
        // migrate::DEFAULT_STALL_TIMEOUT is 10 s on both sides.
        assert_rolled_back(&mut src, &mut m, &mut dest, &["no progress"]);
        dest.assert_discarded(&["no progress"]);
        drop(proxy);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

/// docs/SAFETY.md row 4.
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

/// docs/SAFETY.md row 10.
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
                faulty_attempt(dir.path(), &src, &secret, &name, point, Action::Stall);
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
