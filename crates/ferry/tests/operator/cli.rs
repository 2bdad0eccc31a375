//! What is generated from the clap definitions, and the log flags.

use serde_json::Value;

use crate::harness::*;

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ferry(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("migrate-status"), "{shell}: {text}");
    }
    let out = ferry(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_for_every_subcommand() {
    let dir = TempDir::new("man");
    let out_dir = dir.join("man1");
    let out = ferry(&["man", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "ferry.1",
        "ferry-run.1",
        "ferry-ctl.1",
        "ferry-ctl-events.1",
        "ferry-migrate.1",
    ] {
        let text =
            std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
}

#[test]
fn help_works_with_and_without_a_command() {
    let out = ferry(&["help", "--help"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ferry(&["help", "ctl", "events"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("Usage: ferry ctl --api <SOCKET> events"),
        "{text}"
    );
    assert_eq!(
        text,
        String::from_utf8_lossy(&ferry(&["ctl", "events", "-h"]).stdout)
    );
    let out = ferry(&["help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("completions"));
    let out = ferry(&["help", "ctl", "teleport"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line("help", &String::from_utf8_lossy(&out.stderr), &["teleport"]);
}

#[test]
fn json_logs_in_a_file_name_the_vm_of_each_event() {
    let _s = serial();
    let dir = TempDir::new("logs");
    let (api, log) = (dir.join("vm.sock"), dir.join("ferry.log"));
    let serial_log = dir.join("serial");
    let mut vm = Proc::spawn(
        dir.path(),
        "run",
        &[
            "--log-format",
            "json",
            "--log-file",
            log.to_str().unwrap(),
            "run",
            "--guest",
            "idle",
            "--memory",
            "64M",
            "--name",
            "logged",
            "--api",
            api.to_str().unwrap(),
            "--serial",
            serial_log.to_str().unwrap(),
        ],
    );
    ctl_json(&api, &["--wait", "30s", "ping"]);
    wait_for("the guest to run", PATIENCE, || {
        (state(&api).as_deref() == Some("running")).then_some(())
    });
    ctl_json(&api, &["pause"]);
    ctl_json(&api, &["shutdown"]);
    assert!(vm.wait(PATIENCE).success());
    assert_eq!(vm.stderr_text(), "", "logs went to the file");
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for want in ["vm-created", "vm-started", "vm-paused", "vm-stopped"] {
        assert_eq!(
            events.iter().filter(|e| **e == want).count(),
            1,
            "{want}: {events:?}"
        );
    }
    for l in lines.iter().filter(|l| l["event"].is_string()) {
        assert_eq!(l["vm"], "logged", "{l}");
        assert_eq!(l["level"], "INFO", "{l}");
    }
}

#[test]
fn quiet_hides_info_and_rust_log_wins() {
    let _s = serial();
    let dir = TempDir::new("quiet");
    let api = dir.join("vm.sock");
    let serial_log = dir.join("serial");
    let args = |q: bool| {
        let mut a = vec!["run", "--guest", "idle", "--memory", "64M"];
        if q {
            a.insert(0, "-q");
        }
        a.extend([
            "--api",
            api.to_str().unwrap(),
            "--serial",
            serial_log.to_str().unwrap(),
        ]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let quiet = std::process::Command::new(FERRY)
        .args(args(true))
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ctl_json(&api, &["--wait", "30s", "shutdown"]);
    let out = quiet.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "-q shows no info lines"
    );

    let loud = std::process::Command::new(FERRY)
        .args(args(true))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ctl_json(&api, &["--wait", "30s", "shutdown"]);
    let out = loud.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("VM started"));
}
