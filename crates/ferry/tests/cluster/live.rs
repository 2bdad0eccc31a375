//! The whole loop on real processes, no command typed: a busy VM makes
//! its host (0.2 CPUs) a hotspot; the manager sees it in the agents'
//! reports, orders the VM to the idle host (1 CPU) and logs why; the
//! agents carry the order out; the order's end is logged, and the VM,
//! busy on its new host too, is not moved back within its cooldown.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{TempDir, require_kvm, wait_for};

use crate::agent::assert_moved;
use crate::harness::{FERRY, LIMIT, events, two_hosts};

fn manager(socket: &std::path::Path, dir: &TempDir) -> Child {
    Command::new(FERRY)
        .args(["manager", "--name", "m1", "--store-socket"])
        .arg(socket)
        .args(["--interval", "500ms", "--lease-ttl", "2s"])
        .args([
            "--pattern",
            "balance",
            "--detector",
            "thr",
            "--detector-param",
            "0.8",
        ])
        .args(["--per-host", "1", "--cooldown", "10m"])
        .arg("--decision-log")
        .arg(dir.join("decisions.jsonl"))
        .arg("--log-file")
        .arg(dir.join("manager.log"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_hotspot_is_relieved_by_a_migration_nobody_typed() {
    require_kvm();
    let mut t = two_hosts(
        "live",
        "dirtier,memory=64M,append=ws=8M",
        // A quota small enough to bind even when other work shares the
        // machine's CPUs (a capacity is a cap, not a guarantee).
        [&["--capacity", "0.2"], &["--capacity", "1"]],
    );
    let dir = TempDir::new("ferry-live-manager");
    t.guard.agents.push(manager(&t.store_socket, &dir));
    let log = dir.join("decisions.jsonl");
    let order = wait_for("an order", Duration::from_secs(60), || {
        events(&log, "order").pop()
    });
    let [h1, h2] = &t.names;
    assert_eq!(order["vm"], "web");
    assert_eq!(
        (order["from"].as_str(), order["to"].as_str()),
        (Some(h1.as_str()), Some(h2.as_str()))
    );
    assert_eq!(order["reason"], "hotspot");
    let why = order["why"].as_str().unwrap();
    assert!(why.contains(&format!("host {h1} is a hotspot")), "{why}");
    let ended = wait_for("the order's end", LIMIT, || {
        events(&log, "order-ended").pop()
    });
    assert_eq!(ended["outcome"], "completed", "{ended}");
    assert!(ended["downtime_ms"].as_f64().is_some(), "{ended}");
    assert_moved(&t);
    // Busy on h2 as well, it is not sent back within its cooldown.
    let seen = events(&log, "interval").len();
    wait_for("a few more decisions", LIMIT, || {
        (events(&log, "interval").len() >= seen + 4).then_some(())
    });
    assert_eq!(
        events(&log, "order").len(),
        1,
        "{:?}",
        events(&log, "move-dropped")
    );
}
