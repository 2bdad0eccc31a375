//! `ferry` child processes for the operator tests, and what they print.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
pub use testkit::{TempDir, free_port, require_kvm, wait_for};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// Longest wait for anything that should happen soon (noisy, shared machine).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Tests that start VMs run one at a time (two shared cores).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    require_kvm();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `ferry ARGS` to completion.
pub fn ferry(args: &[&str]) -> Output {
    Command::new(FERRY)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {FERRY}: {e}"))
}

/// `ferry ctl --api SOCKET ARGS`: exit status, stdout, stderr.
pub fn ctl(api: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let mut all = vec!["ctl", "--api", api.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = ferry(&all);
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ferry ctl ... ARGS` that must succeed; its stdout as JSON (Null if empty).
pub fn ctl_json(api: &Path, args: &[&str]) -> Value {
    let (st, out, err) = ctl(api, args);
    assert!(st.success(), "ctl {args:?} failed: {err}");
    if out.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {out}"))
    }
}

/// The state `GET /api/v1/vm` reports, if the socket answers.
pub fn state(api: &Path) -> Option<String> {
    let (st, out, _) = ctl(api, &["status"]);
    if !st.success() {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    v["state"].as_str().map(str::to_string)
}

/// Asserts `stderr` holds exactly one error line, containing `words`.
pub fn assert_one_error_line(who: &str, stderr: &str, words: &[&str]) {
    assert!(!stderr.contains("panicked"), "{who} panicked:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{who}: expected one error line:\n{stderr}");
    for w in words {
        assert!(
            lines[0].contains(w),
            "{who}: '{w}' missing from: {}",
            lines[0]
        );
    }
}

// The one process harness, shared with the migration suite.
#[allow(dead_code)]
#[path = "../migration/harness/process.rs"]
mod process;
pub use process::Proc;

impl Proc {
    /// `ferry run` of the idle guest named `name`, API on `api`, serial in `dir`.
    pub fn idle_vm(dir: &Path, name: &str, api: &Path) -> Proc {
        let serial = dir.join(format!("{name}.serial"));
        Proc::spawn(
            dir,
            name,
            &[
                "run",
                "--guest",
                "idle",
                "--memory",
                "64M",
                "--name",
                name,
                "--api",
                api.to_str().unwrap(),
                "--serial",
                serial.to_str().unwrap(),
            ],
        )
    }
}

/// Follows the events of the process serving `api` (`ferry ctl events`).
pub fn follow_events(dir: &Path, name: &str, api: &Path) -> Proc {
    Proc::spawn(
        dir,
        name,
        &[
            "ctl",
            "--api",
            api.to_str().unwrap(),
            "--wait",
            "30s",
            "events",
        ],
    )
}

/// The `type`s of `events`, in order.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Waits until the follower has printed an event of type `kind`.
pub fn wait_event(follower: &Proc, kind: &str) -> Value {
    wait_for(&format!("event {kind}"), PATIENCE, || {
        follower
            .json_lines()
            .into_iter()
            .find(|e| e["type"] == kind)
    })
}
