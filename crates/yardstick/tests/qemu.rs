//! Integration tests against the real QEMU with KVM, on the crate's own tiny
//! heartbeat kernel. They need qemu-system-x86_64 and /dev/kvm and fail with
//! a clear message when either is missing (CI installs QEMU).

use std::time::Duration;

use testkit::require_qemu;
use units::Bandwidth;
use yardstick::migration::{MigrationParams, QemuOutcome};
use yardstick::qemu::{self, Firmware, ImageFile, Qemu, QemuConfig, guest_exit_value};
use yardstick::serial::{heartbeat_seq, heartbeats};
use yardstick::testkernel::heartbeat_kernel;
use yardstick::{Error, QmpError};

fn config(image: &ImageFile) -> QemuConfig {
    let mut c = QemuConfig::new(image.path());
    c.memory_mib = 64;
    c
}

#[test]
fn boots_and_heartbeats_are_read() {
    require_qemu();
    let image = ImageFile::new("hb.bin", &heartbeat_kernel(None)).unwrap();
    let mut q = Qemu::spawn(&config(&image)).unwrap();
    let first = q.wait_for_heartbeat(Duration::from_secs(30)).unwrap();
    assert_eq!(heartbeat_seq(&first.text), Some(0), "{first:?}");
    assert!(first.time >= q.spawned_at());
    q.wait_for_line(0, Duration::from_secs(30), "heartbeat 5", |l| {
        heartbeat_seq(&l.text) == Some(5)
    })
    .unwrap();
    let beats = heartbeats(&q.serial().lines());
    assert!(beats.len() >= 6);
    for (i, b) in beats.iter().enumerate() {
        assert_eq!(b.seq, i as u64, "heartbeats arrive in order without loss");
    }
    assert_eq!(q.run_state().unwrap(), "running");
}

#[test]
fn boot_time_is_measured() {
    require_qemu();
    let image = ImageFile::new("hb.bin", &heartbeat_kernel(None)).unwrap();
    let b = qemu::measure_boot(&config(&image), Duration::from_secs(30)).unwrap();
    assert!(
        b.first_heartbeat_ms > 0.0 && b.first_line_ms <= b.first_heartbeat_ms,
        "{b:?}"
    );
}

#[test]
fn guest_exit_status_is_reported() {
    require_qemu();
    let image = ImageFile::new("exit.bin", &heartbeat_kernel(Some((3, 0x21)))).unwrap();
    let mut q = Qemu::spawn(&config(&image)).unwrap();
    let status = q.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(guest_exit_value(status), Some(0x21));
    assert_eq!(heartbeats(&q.serial().lines()).len(), 3);
    assert!(q.serial().is_closed());
}

#[test]
fn qmp_errors_are_clear() {
    require_qemu();
    let image = ImageFile::new("hb.bin", &heartbeat_kernel(None)).unwrap();
    let mut q = Qemu::spawn(&config(&image)).unwrap();
    let err = q.qmp().execute("no-such-command", None).unwrap_err();
    assert!(
        matches!(err, QmpError::Command { ref class, .. } if class == "CommandNotFound"),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-command"), "{err}");
    let err = q
        .qmp()
        .execute(
            "migrate-set-parameters",
            Some(serde_json::json!({"downtime-limit": "soon"})),
        )
        .unwrap_err();
    assert!(err.to_string().contains("downtime-limit"), "{err}");
    // The session still works after errors.
    assert_eq!(q.run_state().unwrap(), "running");
    // After QEMU is gone, a command reports the closed connection.
    q.kill();
    let err = q.qmp().execute("query-status", None).unwrap_err();
    assert!(
        matches!(err, QmpError::Closed { .. } | QmpError::Io { .. }),
        "{err}"
    );
}

#[test]
fn bad_configurations_are_refused() {
    require_qemu();
    let missing = QemuConfig::new("/nonexistent/guest.elf");
    let err = Qemu::spawn(&missing).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/guest.elf"), "{err}");

    let image = ImageFile::new("hb.bin", &heartbeat_kernel(None)).unwrap();
    let mut c = config(&image);
    c.binary = "/nonexistent/qemu".into();
    let err = Qemu::spawn(&c).unwrap_err();
    assert!(matches!(err, Error::QemuNotFound { .. }), "{err}");

    let mut c = config(&image);
    c.firmware = Firmware::Custom("/nonexistent/bios.bin".into());
    assert!(matches!(
        Qemu::spawn(&c).unwrap_err(),
        Error::MissingFile { .. }
    ));

    // QEMU itself refuses: its stderr is in the error.
    let mut c = config(&image);
    c.cpu = "no-such-cpu".into();
    let err = Qemu::spawn(&c).unwrap_err();
    assert!(matches!(err, Error::QemuExited { .. }), "{err}");
    assert!(err.to_string().contains("no-such-cpu"), "{err}");

    // Not a Multiboot kernel: QEMU may start, but no heartbeat ever comes.
    let junk = ImageFile::new("junk.bin", &[0u8; 4096]).unwrap();
    let err = Qemu::spawn(&config(&junk))
        .and_then(|mut q| q.wait_for_heartbeat(Duration::from_secs(2)).map(drop))
        .unwrap_err();
    assert!(
        matches!(err, Error::QemuExited { .. } | Error::Timeout { .. }),
        "{err}"
    );
}

#[test]
fn migration_of_the_test_kernel() {
    require_qemu();
    let image = ImageFile::new("hb.bin", &heartbeat_kernel(None)).unwrap();
    let cfg = config(&image);
    let params = MigrationParams {
        max_bandwidth: None,
        ..MigrationParams::default()
    };
    let mut run = yardstick::migrate_guest(&cfg, &params, Duration::from_millis(200)).unwrap();
    let r = &run.report;
    assert_eq!(r.outcome, QemuOutcome::Completed, "{r:?}");
    // QEMU reports whole ms; a 64 MiB idle guest may stop for less than 1.
    assert!(
        r.total_time_ms > 0.0 && r.total_time_ms >= r.downtime_ms,
        "{r:?}"
    );
    assert_eq!(r.memory_bytes, cfg.memory_mib << 20, "{r:?}");
    assert!(r.ram_total_bytes >= r.memory_bytes, "{r:?}");
    assert!(
        r.zero_pages + r.normal_pages >= r.memory_bytes / 4096,
        "every page accounted: {r:?}"
    );
    assert!(r.rounds >= 2, "{r:?}");
    assert!(r.heartbeat_gap_ms.unwrap() > 0.0, "{r:?}");
    assert_eq!(run.destination.run_state().unwrap(), "running");
    assert_eq!(run.source.run_state().unwrap(), "postmigrate");
    // Heartbeat numbering continues on the destination.
    let source_last = heartbeats(&run.source.serial().lines()).last().unwrap().seq;
    run.destination
        .wait_for_line(0, Duration::from_secs(10), "a later heartbeat", |l| {
            heartbeat_seq(&l.text).is_some_and(|s| s > source_last + 2)
        })
        .unwrap();
    // The source is done: ending it delivers the line the guest was printing
    // when it paused, whose rest the destination printed.
    run.source.kill();
    let mut texts: Vec<String> = run
        .source
        .serial()
        .lines()
        .into_iter()
        .map(|l| l.text)
        .collect();
    let mut rest = run
        .destination
        .serial()
        .lines()
        .into_iter()
        .map(|l| l.text)
        .peekable();
    if let Some(head) = rest.next_if(|t| !t.starts_with("HB seq=")) {
        texts
            .last_mut()
            .expect("the source printed")
            .push_str(&head);
    }
    texts.extend(rest);
    let seqs: Vec<u64> = texts.iter().filter_map(|t| heartbeat_seq(t)).collect();
    assert_eq!(seqs.len(), texts.len(), "only whole heartbeats: {texts:?}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap and no repeat in numbering: {seqs:?}"
    );
    eprintln!("{}", serde_json::to_string_pretty(r).unwrap());
}

#[test]
fn failed_and_timed_out_migrations_leave_the_source_running() {
    require_qemu();
    let image = ImageFile::new("hb.bin", &heartbeat_kernel(None)).unwrap();
    let cfg = config(&image);
    let mut source = Qemu::spawn(&cfg).unwrap();
    source.wait_for_heartbeat(Duration::from_secs(30)).unwrap();

    // The destination dies before the migration starts.
    let mut dead = Qemu::spawn_incoming(&cfg).unwrap();
    dead.kill();
    let r = source
        .migrate_to(&mut dead, &MigrationParams::default(), cfg.memory_mib << 20)
        .unwrap();
    assert_eq!(r.outcome, QemuOutcome::Failed, "{r:?}");
    assert!(r.error.is_some() && r.heartbeat_gap_ms.is_none(), "{r:?}");
    assert_eq!(source.run_state().unwrap(), "running");

    // A link far too slow for the guest: cancelled after the timeout.
    let mut slow = Qemu::spawn_incoming(&cfg).unwrap();
    let params = MigrationParams {
        max_bandwidth: Bandwidth::from_bytes_per_sec(1000),
        timeout: Duration::from_millis(500),
        ..MigrationParams::default()
    };
    let r = source
        .migrate_to(&mut slow, &params, cfg.memory_mib << 20)
        .unwrap();
    assert_eq!(r.outcome, QemuOutcome::TimedOut, "{r:?}");
    assert_eq!(source.run_state().unwrap(), "running");
    // The guest keeps printing on the source.
    let n = source.serial().len();
    source
        .wait_for_line(
            n,
            Duration::from_secs(10),
            "a heartbeat after the cancel",
            |l| heartbeat_seq(&l.text).is_some(),
        )
        .unwrap();

    // A destination that was not started as one is refused up front.
    let mut plain = Qemu::spawn(&cfg).unwrap();
    let err = source
        .migrate_to(
            &mut plain,
            &MigrationParams::default(),
            cfg.memory_mib << 20,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}
