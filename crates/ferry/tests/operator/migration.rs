//! A migration as an operator follows it: `ctl migrate-status`, the events
//! of both sides under one migration id, `ctl migrate-cancel`, and SIGTERM
//! on the source rolling the migration back before the VM stops.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::*;

/// A source `ferry run` (dirtier) and a destination `ferry receive`.
struct Pair {
    dir: TempDir,
    src_api: PathBuf,
    dst_api: PathBuf,
    secret: PathBuf,
    addr: String,
    src: Proc,
    dst: Proc,
}

impl Pair {
    fn start(name: &str, memory: &str, workload: &str) -> Pair {
        let dir = TempDir::new(name);
        let (src_api, dst_api, secret) = (
            dir.join("src.sock"),
            dir.join("dst.sock"),
            dir.join("secret"),
        );
        std::fs::write(&secret, "5e".repeat(32)).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let p = |p: &PathBuf| p.to_str().unwrap().to_string();
        let dst = Proc::spawn(
            dir.path(),
            "dst",
            &[
                "receive",
                "--listen",
                &addr,
                "--secret-file",
                &p(&secret),
                "--api",
                &p(&dst_api),
                "--name",
                name,
                "--serial",
                &p(&dir.join("dst.serial")),
            ],
        );
        let src = Proc::spawn(
            dir.path(),
            "src",
            &[
                "run",
                "--guest",
                "dirtier",
                "--memory",
                memory,
                "--append",
                workload,
                "--api",
                &p(&src_api),
                "--name",
                name,
                "--serial",
                &p(&dir.join("src.serial")),
            ],
        );
        ctl_json(&dst_api, &["--wait", "30s", "ping"]);
        ctl_json(&src_api, &["--wait", "30s", "ping"]);
        // The API answers while the guest boots; a migration needs it running.
        wait_for("the source guest to run", PATIENCE, || {
            (state(&src_api).as_deref() == Some("running")).then_some(())
        });
        Pair {
            dir,
            src_api,
            dst_api,
            secret,
            addr,
            src,
            dst,
        }
    }

    /// `ferry migrate` in the background, with `extra` flags.
    fn migrate(&self, extra: &[&str]) -> Proc {
        let mut args = vec![
            "migrate",
            "--api",
            self.src_api.to_str().unwrap(),
            "--to",
            &self.addr,
            "--secret-file",
            self.secret.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        Proc::spawn(self.dir.path(), "migrate", &args)
    }
}

fn phases(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "migration-phase")
        .map(|e| e["phase"].as_str().unwrap().to_string())
        .collect()
}

fn position(events: &[Value], kind: &str) -> usize {
    events
        .iter()
        .position(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", types(events)))
}

#[test]
fn a_migration_is_told_on_both_sides_under_one_id() {
    let _s = serial();
    let mut pair = Pair::start("moved-1", "64M", "ws=8M rate=2000");
    let src_events = follow_events(pair.dir.path(), "src-events", &pair.src_api);
    let dst_events = follow_events(pair.dir.path(), "dst-events", &pair.dst_api);
    wait_event(&dst_events, "vm-created");
    let mut migrate = pair.migrate(&[]);
    let started = wait_event(&src_events, "migration-started");
    let id = started["migration"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{started}");

    // Follows to the end (or finds it done), then prints the report.
    let (st, out, err) = ctl(&pair.src_api, &["migrate-status", "--json"]);
    assert!(st.success() || out.is_empty(), "{err}");
    if st.success() {
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["outcome"], "completed");
    }
    assert!(
        migrate.wait(PATIENCE).success(),
        "{}",
        migrate.stderr_text()
    );
    assert!(
        pair.src.wait(PATIENCE).success(),
        "{}",
        pair.src.stderr_text()
    );

    let mut src_events = src_events;
    src_events.wait(PATIENCE);
    let src = src_events.json_lines();
    assert_eq!(
        phases(&src),
        [
            "setup",
            "iterative",
            "stop-and-copy",
            "state-transfer",
            "commit",
            "done"
        ]
    );
    assert!(src.iter().any(|e| e["type"] == "migration-round"));
    let paused = position(&src, "vm-paused");
    assert_eq!(src[paused]["cause"], "migration");
    assert!(position(&src, "migration-completed") < position(&src, "vm-stopped"));
    assert_eq!(src[position(&src, "vm-stopped")]["reason"], "migrated");
    for e in src
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("migration-"))
    {
        assert_eq!(e["migration"], id.as_str(), "{e}");
    }
    let received = wait_event(&dst_events, "migration-received");
    assert_eq!(received["migration"], id.as_str());
    assert_eq!(received["vm"], "moved-1");
    wait_event(&dst_events, "vm-started");

    // Each change logged once, with the VM and the migration named.
    let log = pair.src.stderr_text();
    let completed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("migration completed"))
        .collect();
    assert_eq!(completed.len(), 1, "{log}");
    assert!(
        completed[0].contains(&id) && completed[0].contains("moved-1"),
        "{log}"
    );

    ctl_json(&pair.dst_api, &["shutdown"]);
    assert!(pair.dst.wait(PATIENCE).success());
}

/// A migration slow enough to be caught in its iterative rounds.
fn slow_migration(name: &str) -> (Pair, Proc, Proc) {
    let pair = Pair::start(name, "128M", "ws=16M rate=3000");
    let events = follow_events(pair.dir.path(), "src-events", &pair.src_api);
    let migrate = pair.migrate(&["--link-bandwidth", "20Mbit"]);
    wait_for("the iterative phase", PATIENCE, || {
        phases(&events.json_lines())
            .contains(&"iterative".to_string())
            .then_some(())
    });
    (pair, migrate, events)
}

#[test]
fn migrate_cancel_rolls_back_and_migrate_status_says_so() {
    let _s = serial();
    let (mut pair, mut migrate, events) = slow_migration("cancel-1");
    let status = ctl_json(&pair.src_api, &["migrate-status", "--once"]);
    assert_eq!(status["done"], false, "{status}");
    assert_eq!(
        ctl_json(&pair.src_api, &["migrate-cancel"])["cancelling"],
        true
    );
    let (st, _, err) = ctl(&pair.src_api, &["migrate-status"]);
    assert_eq!(st.code(), Some(1));
    assert_one_error_line(
        "migrate-status",
        &err,
        &["cancelled", status["id"].as_str().unwrap()],
    );
    let rolled = wait_event(&events, "migration-rolled-back");
    assert_eq!(rolled["cancelled"], true);
    assert_eq!(rolled["migration"], status["id"]);
    assert!(!phases(&events.json_lines()).contains(&"commit".to_string()));
    assert_eq!(state(&pair.src_api).as_deref(), Some("running"));
    assert_eq!(migrate.wait(PATIENCE).code(), Some(1));
    assert_eq!(
        pair.dst.wait(PATIENCE).code(),
        Some(1),
        "nothing runs on the destination"
    );
    ctl_json(&pair.src_api, &["shutdown"]);
    assert!(pair.src.wait(PATIENCE).success());
}

#[test]
fn sigterm_during_a_migration_rolls_it_back_before_stopping() {
    let _s = serial();
    let (mut pair, mut migrate, events) = slow_migration("sigterm-1");
    pair.src.signal(libc::SIGTERM);
    let st = pair.src.wait(PATIENCE);
    assert_eq!(st.code(), Some(0), "{}", pair.src.stderr_text());
    assert!(!pair.src_api.exists(), "the socket is left behind");
    let mut events = events;
    events.wait(PATIENCE);
    let all = events.json_lines();
    let rolled = position(&all, "migration-rolled-back");
    let stopped = position(&all, "vm-stopped");
    assert!(rolled < stopped, "{:?}", types(&all));
    assert_eq!(all[stopped]["reason"], "shutdown");
    assert!(!phases(&all).contains(&"commit".to_string()));
    assert_eq!(migrate.wait(PATIENCE).code(), Some(1));
    assert_eq!(
        pair.dst.wait(PATIENCE).code(),
        Some(1),
        "nothing runs on the destination"
    );
}

#[test]
fn sigterm_on_the_destination_abandons_the_incoming_migration() {
    let _s = serial();
    let (mut pair, mut migrate, events) = slow_migration("dst-sigterm-1");
    pair.dst.signal(libc::SIGTERM);
    let st = pair.dst.wait(PATIENCE);
    assert_eq!(st.code(), Some(0), "{}", pair.dst.stderr_text());
    assert!(
        pair.dst.stderr_text().contains("abandoned"),
        "{}",
        pair.dst.stderr_text()
    );
    assert!(!pair.dst_api.exists());
    let rolled = wait_event(&events, "migration-rolled-back");
    assert_eq!(rolled["cancelled"], false);
    assert_eq!(migrate.wait(PATIENCE).code(), Some(1));
    assert_eq!(state(&pair.src_api).as_deref(), Some("running"));
    ctl_json(&pair.src_api, &["shutdown"]);
    assert!(pair.src.wait(PATIENCE).success());
}
