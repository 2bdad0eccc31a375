//! Rows 5-9 of docs/SAFETY.md: migrations refused by the destination, by
//! peers that are not Ferry, and while one runs; `ferry receive` giving up
//! (hostile peers at `ferry receive` are in hostile.rs).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::harness::*;
use crate::points::assert_rolled_back;

/// docs/SAFETY.md row 5.
#[test]
fn destination_memory_limit_refuses_and_vm_stays_on_source() {
    let _g = serial();
    let dir = TempDir::new("oom");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "oom-dst", &secret, &["--max-memory", "64M"]);
    let mut m = src.start_migrate(dir.path(), "oom-migrate", &dest.addr, &secret, &[]);
    assert_rolled_back(&mut src, &mut m, &mut dest, &["memory", "64 MiB"]);
    dest.assert_discarded(&["memory", "max-memory"]);
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

/// docs/SAFETY.md row 6: the source refuses the destination and rolls
/// back; the destination refuses the source, logs it, and keeps waiting for
/// a source with its secret, to which the VM then migrates.
#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let _g = serial();
    let dir = TempDir::new("secret");
    let secret = dir.secret("secret");
    let other = dir.secret("other-secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "auth-dst", &secret, &[]);
    let mut m = src.start_migrate(dir.path(), "auth-migrate", &dest.addr, &other, &[]);
    m.assert_failed_with(PATIENCE, &["authenticat"]);
    src.assert_running_and_healthy();
    assert_exactly_one(&mut src, &mut [&mut dest]);
    dest.wait_refusal(&["authentication failed", "127.0.0.1:"]);
    // Still waiting: its API answers, and no VM runs there.
    assert!(dest.proc.alive());
    assert_eq!(dest.state().as_deref(), Some("incoming"));
    let mut m = src.start_migrate(dir.path(), "retry", &dest.addr, &secret, &[]);
    assert!(m.wait(PATIENCE * 2).success(), "{}", m.stderr_text());
    assert_completed_on(&mut src, &mut dest, &m);
}

/// docs/SAFETY.md rows 7 and 8.
#[test]
fn unreachable_silent_and_garbage_peers_leave_vm_running() {
    let _g = serial();
    let dir = TempDir::new("peers");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let run = |src: &mut Vm, name: &str, to: &str, words: &[&str]| {
        let mut m = src.start_migrate(dir.path(), name, to, &secret, &[]);
        m.assert_failed_with(PATIENCE, words);
        src.assert_running_and_healthy();
        assert_exactly_one(src, &mut []);
    };

    // Nothing listens there.
    let closed = format!("127.0.0.1:{}", free_port());
    run(&mut src, "refused", &closed, &["cannot connect", "refused"]);

    // A listener that never accepts: the kernel completes the TCP handshake
    // but nobody ever answers Hello.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    run(
        &mut src,
        "silent",
        &silent_addr,
        &["no progress", "authenticating"],
    );
    drop(silent);

    // A peer that answers with random bytes.
    let garbage = RogueServer::start(random_bytes(64 * 1024), Duration::from_secs(2));
    run(&mut src, "garbage", &garbage.addr.to_string(), &[]);

    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

/// `ferry receive --accept-timeout`: peers that never authenticate do not
/// count; when the time is up it exits non-zero with one error line saying
/// how many it refused, never a panic, and runs nothing.
#[test]
fn receive_gives_up_at_its_accept_timeout() {
    require_kvm();
    let dir = TempDir::new("recv-timeout");
    let secret = dir.secret("secret");
    let mut dest = Dest::start(dir.path(), "timeout", &secret, &["--accept-timeout", "2s"]);
    let mut s = TcpStream::connect(&dest.addr).unwrap();
    s.write_all(&random_bytes(64)).unwrap();
    dest.assert_discarded(&[
        "no source authenticated within 2s",
        "peers refused meanwhile: 1",
    ]);
}

/// docs/SAFETY.md row 9.
#[test]
fn second_migration_is_refused_while_one_runs() {
    let _g = serial();
    let dir = TempDir::new("second");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut other = Dest::start(dir.path(), "other-dst", &secret, &[]);
    let mut first = src.start_migrate(
        dir.path(),
        "first",
        &dest.addr,
        &secret,
        &["--strategy", "xen", "--max-bandwidth", SLOW],
    );
    src.wait_progress("round 1 under way", |ph, _, b| {
        ph == "iterative" && b > 1 << 20
    });
    let mut second = Proc::spawn(
        dir.path(),
        "second",
        &[
            "migrate",
            "--api",
            src.sock.to_str().unwrap(),
            "--to",
            &other.addr,
            "--secret-file",
            secret.to_str().unwrap(),
            "--json",
        ],
    );
    second.assert_failed_with(PATIENCE, &["already running", "409"]);
    let st = first.wait(PATIENCE * 2);
    assert_migrate_completed(st, &first);
    assert_completed_on(&mut src, &mut dest, &first);
    // The refused destination never got a connection and still waits.
    assert!(other.proc.alive());
    assert_eq!(other.state().as_deref(), Some("incoming"));
    other.proc.kill();
}

/// An error's cause appears once in `ferry receive`'s error line: a
/// source that authenticates, then sends garbage.
#[test]
fn receive_error_names_its_cause_once() {
    require_kvm();
    let dir = TempDir::new("recv-dup");
    let secret = dir.secret("secret");
    let mut dest = Dest::start(dir.path(), "dup", &secret, &[]);
    let s = TcpStream::connect(&dest.addr).unwrap();
    let key = wire::Secret::from_file(&secret).unwrap();
    let mut r = wire::MessageReader::new(&s);
    let mut w = wire::MessageWriter::new(&s);
    wire::source_handshake(&mut r, &mut w, &key, &wire::Offer::default()).unwrap();
    (&s).write_all(b"not a ferry message").unwrap();
    drop(s);
    dest.proc.wait(PATIENCE);
    let err = dest.proc.stderr_text();
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .expect("an error line");
    let cause = line.rsplit(": ").next().unwrap();
    assert_eq!(line.matches(cause).count(), 1, "cause repeated: {line}");
}
