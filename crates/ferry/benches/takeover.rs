//! How long a standby `ferry manager` takes to lead after the leader is
//! killed (SIGKILL), against the leadership lease's TTL (issue 10, section
//! 6): a real etcd on a free loopback port, manager processes deciding
//! every 200 ms, one kill per run (each run's standby is the next run's
//! leader). The takeover is from the kill to the `leader` event in the
//! standby's decision log, both on this machine's wall clock.
//!
//! `cargo bench -p ferry --bench takeover` (FERRY_TAKEOVER_RUNS, default 5,
//! runs per TTL).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent::unix_ms;

use testkit::{Etcd, TempDir, wait_for};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const INTERVAL: &str = "200ms";
const LIMIT: Duration = Duration::from_secs(60);

fn manager(etcd: &Etcd, dir: &Path, name: &str, ttl: &str) -> Child {
    Command::new(FERRY)
        .args(["manager", "--name", name, "--etcd", &etcd.endpoint()])
        .args([
            "--interval",
            INTERVAL,
            "--lease-ttl",
            ttl,
            "--pattern",
            "balance",
        ])
        .arg("--decision-log")
        .arg(dir.join(format!("{name}.jsonl")))
        .arg("--log-file")
        .arg(dir.join(format!("{name}.log")))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning ferry manager")
}

/// When `name` was elected, from its decision log.
fn elected_at(dir: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "leader")
        .and_then(|v| v["unix_ms"].as_u64())
}

/// The takeover times (ms) of `runs` kills with leases of `ttl`.
fn takeovers(ttl: &str, runs: usize) -> Vec<u64> {
    let etcd = Etcd::start("takeover");
    let dir = TempDir::new("ferry-takeover");
    let mut leader = manager(&etcd, dir.path(), "m0", ttl);
    wait_for("m0 to lead", LIMIT, || elected_at(dir.path(), "m0"));
    let mut out = Vec::new();
    for r in 1..=runs {
        let name = format!("m{r}");
        let mut standby = manager(&etcd, dir.path(), &name, ttl);
        // Standing: it logged its start, and a campaign call has begun.
        wait_for("the standby to stand", LIMIT, || {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).ok()?;
            log.contains("standing in the election").then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
        let killed = unix_ms();
        let _ = leader.kill();
        let _ = leader.wait();
        let at = wait_for("the standby to lead", LIMIT, || {
            elected_at(dir.path(), &name)
        });
        out.push(at.saturating_sub(killed));
        eprintln!(
            "  ttl {ttl}: run {r}/{runs}: {} ms",
            at.saturating_sub(killed)
        );
        std::mem::swap(&mut leader, &mut standby);
        let _ = standby.wait();
    }
    let _ = leader.kill();
    let _ = leader.wait();
    out
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let runs = std::env::var("FERRY_TAKEOVER_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(5);
    println!("| lease TTL | runs | takeover median (ms) | min-max (ms) | median / TTL |");
    println!("|---|---|---|---|---|");
    for (ttl, ttl_ms) in [("2s", 2000.0), ("5s", 5000.0)] {
        let mut t = takeovers(ttl, runs);
        let m = median(&mut t);
        println!(
            "| {ttl} | {runs} | {m} | {}-{} | {:.2} |",
            t[0],
            t[t.len() - 1],
            m as f64 / ttl_ms
        );
    }
}
