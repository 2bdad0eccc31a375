//! SIGTERM and SIGINT stop the VM as `ferry ctl shutdown` does, and remove
//! the socket. (During a migration: see `migration.rs`.)

use crate::harness::*;

#[test]
fn sigterm_and_sigint_stop_the_vm_like_shutdown() {
    let _s = serial();
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let dir = TempDir::new("signal");
        let api = dir.join("vm.sock");
        let mut vm = Proc::idle_vm(dir.path(), "vm", &api);
        let events = follow_events(dir.path(), "events", &api);
        wait_event(&events, "vm-started");
        vm.signal(signal);
        let st = vm.wait(PATIENCE);
        assert_eq!(st.code(), Some(0), "{name}: {}", vm.stderr_text());
        assert!(!api.exists(), "{name}: the socket is left behind");
        let stopped = wait_event(&events, "vm-stopped");
        assert_eq!(stopped["reason"], "shutdown", "{name}");
        assert!(
            vm.stderr_text().contains(&format!("{name} received")),
            "{}",
            vm.stderr_text()
        );
    }
}

#[test]
fn a_receiver_waiting_for_a_vm_stops_on_sigterm() {
    let _s = serial();
    let dir = TempDir::new("signal-receiver");
    let (api, secret) = (dir.join("dst.sock"), dir.join("secret"));
    std::fs::write(&secret, "ab".repeat(32)).unwrap();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut dst = Proc::spawn(
        dir.path(),
        "receive",
        &[
            "receive",
            "--listen",
            &listen,
            "--secret-file",
            secret.to_str().unwrap(),
            "--api",
            api.to_str().unwrap(),
        ],
    );
    let status = ctl_json(&api, &["--wait", "30s", "status"]);
    assert_eq!(status["state"], "incoming", "{status}");
    dst.signal(libc::SIGTERM);
    assert_eq!(dst.wait(PATIENCE).code(), Some(0), "{}", dst.stderr_text());
    assert!(!api.exists());
}
