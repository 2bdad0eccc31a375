//! Ferry's guest programs under QEMU: boot, and a QEMU-to-QEMU live
//! migration of the dirtier whose integrity check passes on the destination.
//! They need qemu-system-x86_64 and /dev/kvm and fail with a clear message
//! when either is missing (CI installs QEMU).

use std::time::Duration;

use testkit::require_qemu;
use yardstick::guests::{guest_config, verify_result};
use yardstick::migration::{MigrationParams, QemuOutcome};
use yardstick::qemu::Qemu;
use yardstick::serial::{heartbeat_seq, heartbeats};

#[test]
fn idle_guest_boots_and_heartbeats() {
    require_qemu();
    let g = guest_config("idle", "hb=1ms").unwrap();
    let mut q = Qemu::spawn(&g.config).unwrap();
    let first = q.wait_for_heartbeat(Duration::from_secs(30)).unwrap();
    assert_eq!(heartbeat_seq(&first.text), Some(0), "{first:?}");
    q.wait_for_line(0, Duration::from_secs(30), "heartbeat 50", |l| {
        heartbeat_seq(&l.text).is_some_and(|s| s >= 50)
    })
    .unwrap();
    let lines = q.serial().lines();
    assert!(
        lines[0].text.starts_with("READY guest=idle"),
        "{:?}",
        lines[0]
    );
    // Refined times never run ahead of arrival and keep heartbeat order.
    let beats = heartbeats(&lines);
    for w in beats.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert!(w[1].time >= w[0].time, "{w:?}");
    }
    assert!(lines.iter().all(|l| l.time <= l.arrival + 1e-9));
}

#[test]
fn dirtier_migrates_qemu_to_qemu() {
    require_qemu();
    // 32 MiB written sequentially at 20k pages/s: the whole working set is
    // resident (non-zero) well within the warm-up, and keeps being dirtied.
    let mut g = guest_config("dirtier", "ws=32M rate=20000 pattern=seq verify=500ms").unwrap();
    g.config.memory_mib = 256;
    let params = MigrationParams {
        max_bandwidth: None,
        timeout: Duration::from_secs(60),
        sample_guest: true,
        ..MigrationParams::default()
    };
    // Migrate once the guest has completed a full pass over its working set
    // (a verification reporting generation 2 or more), so all of it is
    // resident whatever the machine's load.
    let mut run = yardstick::migration::migrate_guest_after(
        &g.config,
        &params,
        "a VERIFY with gen>=2",
        |l| verify_result(l) == Some(true) && generation(&l.text) >= 2,
        Duration::from_millis(200),
    )
    .unwrap();
    let r = run.report.clone();
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!(r.outcome, QemuOutcome::Completed, "{r:?}");
    // The whole resident working set must cross.
    assert!(r.bytes_sent >= 32 << 20, "{r:?}");
    assert!(r.normal_pages * 4096 >= 32 << 20, "{r:?}");
    assert!(
        r.downtime_ms > 0.0 && r.total_time_ms >= r.downtime_ms,
        "{r:?}"
    );
    let gap = r.heartbeat_gap_ms.expect("heartbeat gap measured");
    assert!(gap > 0.0, "{r:?}");
    // Sampled in both QEMU processes (values are not asserted: timing).
    assert!(r.guest.guest_downtime_us.is_some(), "{r:?}");
    assert!(r.guest.guest_downtime_resolution_us.is_some(), "{r:?}");
    assert!(!r.per_round.is_empty(), "{r:?}");

    // The source verified before; the destination verifies after migration.
    let src = run.source.serial().lines();
    let non_hb = |lines: &[yardstick::SerialLine]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| heartbeat_seq(&l.text).is_none())
            .map(|l| l.text.clone())
            .collect()
    };
    assert!(
        src.iter().any(|l| verify_result(l) == Some(true)),
        "source never verified: {:?}",
        non_hb(&src)
    );
    let (_, v) = run
        .destination
        .wait_for_line(
            0,
            Duration::from_secs(30),
            "VERIFY on the destination",
            |l| verify_result(l).is_some(),
        )
        .unwrap();
    assert_eq!(verify_result(&v), Some(true), "{v:?}");
    assert_eq!(run.source.run_state().unwrap(), "postmigrate");
    assert_eq!(run.destination.run_state().unwrap(), "running");
}

/// The `gen=` value of a VERIFY line (0 when absent).
fn generation(text: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("gen="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn idle_in_shared_ram_is_sampled_in_its_ram_files() {
    require_qemu();
    let mut g = guest_config("idle", "").unwrap();
    g.config.memory_mib = 64;
    // RAM as memory-backend-file in /dev/shm: the sampler maps both files.
    g.config.shared_ram = true;
    let params = MigrationParams {
        max_bandwidth: None,
        sample_guest: true,
        ..MigrationParams::default()
    };
    let run = yardstick::migrate_guest(&g.config, &params, Duration::from_millis(200)).unwrap();
    let r = &run.report;
    assert_eq!(r.outcome, QemuOutcome::Completed, "{r:?}");
    let (src, dst) = (run.source.ram_file(), run.destination.ram_file());
    assert!(src.unwrap().starts_with("/dev/shm") && dst.unwrap().starts_with("/dev/shm"));
    assert!(r.guest.guest_downtime_us.is_some(), "{r:?}");
    assert!(r.guest.guest_switchover_us.is_some(), "{r:?}");
    // The files go with the QEMUs.
    let dir = src.unwrap().parent().unwrap().to_path_buf();
    drop(run);
    assert!(!dir.exists());
}
