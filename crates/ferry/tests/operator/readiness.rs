//! The API socket answers before the guest boots; a socket in use is
//! refused before booting, a stale one replaced; `ctl --wait` waits.

use std::io::Write;
use std::os::unix::net::UnixListener;

use crate::harness::*;

/// A FIFO as the kernel file holds `ferry run` in `booting` until the test
/// writes the image into it.
#[test]
fn the_api_answers_while_the_guest_boots() {
    let _s = serial();
    let dir = TempDir::new("ready-boot");
    let (api, fifo, image) = (
        dir.join("vm.sock"),
        dir.join("kernel"),
        dir.join("idle.elf"),
    );
    assert!(
        ferry(&["guest", "export", "idle", image.to_str().unwrap()])
            .status
            .success()
    );
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let serial_log = dir.join("serial");
    let mut vm = Proc::spawn(
        dir.path(),
        "run",
        &[
            "run",
            "--kernel",
            fifo.to_str().unwrap(),
            "--memory",
            "64M",
            "--name",
            "early",
            "--api",
            api.to_str().unwrap(),
            "--serial",
            serial_log.to_str().unwrap(),
        ],
    );
    let status = ctl_json(&api, &["--wait", "30s", "status"]);
    assert_eq!(status["state"], "booting", "{status}");
    assert_eq!(status["id"], "early");
    assert_eq!(ctl_json(&api, &["ping"])["pid"], vm.pid());

    // Feed the kernel: the guest boots and runs.
    let bytes = std::fs::read(&image).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    wait_for("the guest to run", PATIENCE, || {
        (state(&api).as_deref() == Some("running")).then_some(())
    });
    ctl_json(&api, &["shutdown"]);
    assert!(vm.wait(PATIENCE).success(), "{}", vm.stderr_text());
    assert!(!api.exists(), "the socket is removed on exit");
}

#[test]
fn a_socket_in_use_is_refused_before_booting() {
    let _s = serial();
    let dir = TempDir::new("ready-in-use");
    let api = dir.join("vm.sock");
    let mut first = Proc::idle_vm(dir.path(), "first", &api);
    ctl_json(&api, &["--wait", "30s", "ping"]);
    let mut second = Proc::idle_vm(dir.path(), "second", &api);
    let st = second.wait(PATIENCE);
    assert_eq!(st.code(), Some(1));
    assert_one_error_line("second", &second.stderr_text(), &["already listening"]);
    assert!(
        !dir.join("second.serial").exists(),
        "the second VM booted before it looked at its socket"
    );
    // The first is unharmed.
    assert_eq!(ctl_json(&api, &["ping"])["vm"], "first");
    ctl_json(&api, &["shutdown"]);
    assert!(first.wait(PATIENCE).success());
}

#[test]
fn a_stale_socket_is_replaced() {
    let _s = serial();
    let dir = TempDir::new("ready-stale");
    let api = dir.join("vm.sock");
    drop(UnixListener::bind(&api).unwrap());
    assert!(api.exists());
    let mut vm = Proc::idle_vm(dir.path(), "stale", &api);
    assert_eq!(ctl_json(&api, &["--wait", "30s", "ping"])["vm"], "stale");
    ctl_json(&api, &["shutdown"]);
    assert!(vm.wait(PATIENCE).success());
}

#[test]
fn ctl_says_a_file_is_not_a_socket() {
    let (st, out, err) = ctl(std::path::Path::new("/etc/passwd"), &["status"]);
    assert_eq!(st.code(), Some(1));
    assert!(out.is_empty());
    assert_one_error_line("ctl", &err, &["/etc/passwd", "not a socket"]);
    assert!(!err.contains("stale"), "{err}");
}

#[test]
fn ctl_wait_gives_up_with_one_line() {
    let dir = TempDir::new("ready-never");
    let api = dir.join("nobody.sock");
    let (st, _, err) = ctl(&api, &["--wait", "300ms", "ping"]);
    assert_eq!(st.code(), Some(1));
    assert_one_error_line("ctl", &err, &["no such file"]);
    let (st, _, err) = ctl(&api, &["--wait", "soon", "ping"]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("--wait"), "{err}");
}
