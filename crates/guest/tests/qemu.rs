//! Boots every guest program under QEMU with KVM (1 and 2 vCPUs) and checks
//! its output: READY, consecutive heartbeats, passing verification, the
//! exit status of `run=`; and that bad parameters are refused with exit value 2.
//! QEMU and /dev/kvm are required: a missing one fails the test with a clear
//! message (CI installs QEMU).

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use guest::output::{Line, parse_line};
use testkit::{TempDir, require_qemu};

struct Run {
    lines: Vec<Line>,
    status: ExitStatus,
    /// From QEMU's start to the first heartbeat line read.
    first_hb: Option<Duration>,
}

fn boot(name: &str, smp: u32, append: &str) -> Run {
    let qemu = require_qemu();
    let dir = TempDir::new(&format!("guest-{name}-{smp}"));
    let kernel = dir.join(format!("{name}.elf"));
    std::fs::write(&kernel, guest::image(name).unwrap()).unwrap();
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-enable-kvm",
            "-cpu",
            "qemu64,-pni",
            "-m",
            "1G",
            "-smp",
            &smp.to_string(),
        ])
        .arg("-kernel")
        .arg(&kernel)
        .args(["-append", append])
        .args([
            "-serial",
            "stdio",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start qemu");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let deadline = start + Duration::from_secs(90);
    let mut lines = Vec::new();
    let mut first_hb = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((t, l)) => {
                let line = parse_line(&l);
                if first_hb.is_none() && matches!(line, Line::Heartbeat { .. }) {
                    first_hb = Some(t - start);
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} (smp {smp}) did not exit within 90 s; output: {lines:?}");
                }
            }
        }
    }
    reader.join().unwrap();
    let status = child.wait().unwrap();
    Run {
        lines,
        status,
        first_hb,
    }
}

fn check_run(name: &str, smp: u32) {
    check_run_with(name, smp, "");
}

fn check_run_with(name: &str, smp: u32, extra: &str) {
    let run = boot(name, smp, &format!("run=2 verify=500ms {extra}"));
    let lines = &run.lines;
    let ready = lines.iter().find(|l| matches!(l, Line::Ready { .. }));
    match ready {
        Some(Line::Ready {
            guest,
            vcpus,
            mem,
            tsc_khz,
            ..
        }) => {
            assert_eq!(guest, name);
            assert_eq!(*vcpus, smp, "vCPUs found by the guest");
            assert!(*mem > 512 << 20, "{mem}");
            assert!(*tsc_khz > 100_000, "{tsc_khz}");
        }
        _ => panic!("{name}: no READY line: {lines:?}"),
    }
    let seqs: Vec<u64> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Heartbeat { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert!(seqs.len() >= 20, "{name}: only {} heartbeats", seqs.len());
    assert_eq!(seqs[0], 0);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{name}: heartbeat numbering has a gap"
    );
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, Line::Verify { ok: true, .. })),
        "{name}: no VERIFY ok"
    );
    assert!(
        !lines.iter().any(|l| matches!(
            l,
            Line::Verify { ok: false, .. } | Line::Error(_) | Line::Exception { .. }
        )),
        "{name}: {lines:?}"
    );
    if name == "kvstore" {
        assert!(
            lines
                .iter()
                .any(|l| matches!(l, Line::Kv { ops_s, .. } if *ops_s > 0)),
            "no KV line"
        );
    }
    if name == "dirtier" {
        assert!(
            lines
                .iter()
                .any(|l| matches!(l, Line::Heartbeat { rate, .. } if *rate > 0)),
            "dirtier wrote nothing"
        );
    }
    // The last line of the output is a heartbeat (every flush ends with one).
    assert!(
        matches!(lines.last(), Some(Line::Heartbeat { .. })),
        "{name}: {:?}",
        lines.last()
    );
    // isa-debug-exit: value 0 -> status 1.
    assert_eq!(
        run.status.code(),
        Some(1),
        "{name} smp {smp}: {:?}",
        run.status
    );
    eprintln!(
        "{name} smp {smp}: QEMU start to first heartbeat {:?}",
        run.first_hb.unwrap()
    );
}

#[test]
fn idle_1_vcpu() {
    check_run("idle", 1);
}
#[test]
fn idle_2_vcpus() {
    check_run("idle", 2);
}
#[test]
fn dirtier_1_vcpu() {
    check_run("dirtier", 1);
}
#[test]
fn dirtier_2_vcpus() {
    check_run("dirtier", 2);
}
#[test]
fn kvstore_1_vcpu() {
    check_run("kvstore", 1);
}
#[test]
fn kvstore_2_vcpus() {
    check_run("kvstore", 2);
}

/// QEMU does not know Ferry's idle port (it ignores the write): a guest
/// with `idle=sleep` spins there and runs as with `idle=spin`.
#[test]
fn dirtier_with_idle_sleep_runs_under_qemu() {
    check_run_with(
        "dirtier",
        2,
        "idle=sleep rate=5000 phases=busy:500ms,idle:500ms,busy:0",
    );
}

#[test]
fn bad_parameter_exits_with_2() {
    let run = boot("dirtier", 1, "ws=lots");
    assert!(
        matches!(run.lines.first(), Some(Line::Error(e)) if e.starts_with("bad parameter ws=lots")),
        "{:?}",
        run.lines
    );
    assert_eq!(run.status.code(), Some(5));
}
