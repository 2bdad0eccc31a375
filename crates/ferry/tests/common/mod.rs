//! Harness for the migration safety tests: real `ferry` processes (source
//! `run`, destination `receive`, client `migrate`) in a temporary directory,
//! a fault-injecting TCP proxy, and the checks behind "exactly one copy of
//! the VM runs and its integrity check passes".

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use api::Client;
use serde_json::Value;

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Guest used by every test: a 32 MiB working set written at 5000 pages/s
/// (about 20 MB/s, close to a 200 Mbit/s link, so pre-copy takes several
/// rounds) and verified every 500 ms.
pub const GUEST_ARGS: &str = "ws=32M rate=5000 verify=500ms";
pub const GUEST_MEMORY: &str = "256M";
/// Pages in the working set of [`GUEST_ARGS`].
pub const WS_PAGES: u64 = (32 << 20) / 4096;
/// Slow link for failure tests: a migration lasts several seconds.
pub const SLOW: &str = "200Mbit";

/// Longest wait for anything that should happen soon (noisy, shared machine).
pub const PATIENCE: Duration = Duration::from_secs(40);

/// Tests that start VMs run one at a time: two cores, and timings of one
/// migration must not be disturbed by another.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    require_kvm();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails (never skips) when KVM is unusable.
pub fn require_kvm() {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("these tests need /dev/kvm (read/write): {e}");
    }
}

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Random bytes, not cryptographic (test secrets and garbage streams).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&random_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ferry-safety-{name}-{}-{:x}",
            std::process::id(),
            random_u64()
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Writes a fresh random 64-hex-digit migration secret, returns its path.
    pub fn secret(&self, name: &str) -> PathBuf {
        let hex: String = random_bytes(32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let p = self.0.join(name);
        fs::write(&p, hex + "\n").unwrap();
        p
    }
}

impl Drop for TempDir {
    /// Kept when the test failed, for its logs.
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) on drop, with stdout/stderr in files.
pub struct Proc {
    pub name: String,
    child: Child,
    status: Option<ExitStatus>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(FERRY)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {FERRY}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            status: None,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if it has exited (reaped).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    pub fn alive(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for the process to exit; panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            if Instant::now() > end {
                panic!(
                    "{} still runs after {limit:?}\nstderr: {}",
                    self.name,
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait(Duration::from_secs(10));
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Asserts the process exited non-zero with an error line containing
    /// every one of `words` (case-insensitive) and did not panic.
    pub fn assert_failed_with(&mut self, limit: Duration, words: &[&str]) {
        let st = self.wait(limit);
        let err = self.stderr_text();
        assert!(
            !st.success(),
            "{} should fail but exited {st}\nstderr: {err}",
            self.name
        );
        assert_no_panic(&self.name, &err);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: expected exactly one error line, stderr:\n{err}",
            self.name
        );
        eprintln!("[{}] {}", self.name, lines[0]);
        let line = lines[0].to_lowercase();
        for w in words {
            assert!(
                line.contains(&w.to_lowercase()),
                "{}: error line should mention '{w}': {}",
                self.name,
                lines[0]
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn assert_no_panic(who: &str, stderr: &str) {
    assert!(!stderr.contains("panicked"), "{who} panicked:\n{stderr}");
}

/// What a serial log says.
#[derive(Debug, Default)]
pub struct Serial {
    pub heartbeats: Vec<u64>,
    /// Guest TSC of each heartbeat (the host's TSC: it is not virtualized).
    pub heartbeat_tsc: Vec<u64>,
    pub verify_ok: usize,
    pub verify_fail: Vec<String>,
}

pub fn read_serial(path: &Path) -> Serial {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut s = Serial::default();
    // The last line may be half written.
    for line in text.lines().filter(|l| !l.is_empty()) {
        let body = line.split_once("] ").map_or(line, |(_, b)| b);
        if let Some(rest) = body.strip_prefix("HB seq=") {
            let mut words = rest.split_whitespace();
            let seq = words.next().and_then(|n| n.parse().ok());
            let tsc = words
                .next()
                .and_then(|w| w.strip_prefix("tsc="))
                .and_then(|n| n.parse().ok());
            if let (Some(seq), Some(tsc)) = (seq, tsc) {
                s.heartbeats.push(seq);
                s.heartbeat_tsc.push(tsc);
            }
        } else if body.starts_with("VERIFY ok") {
            s.verify_ok += 1;
        } else if body.starts_with("VERIFY FAIL") {
            s.verify_fail.push(line.to_string());
        }
    }
    s
}

/// Polls `f` every 20 ms until it returns `Some`; panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /api/v1/vm` as JSON, or None when nothing answers on the socket.
pub fn status(sock: &Path) -> Option<Value> {
    let c = Client::new(sock).with_timeout(Duration::from_secs(10));
    match c.get(api::routes::VM) {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

pub fn state_of(sock: &Path) -> Option<String> {
    status(sock).and_then(|v| v["state"].as_str().map(str::to_string))
}

fn counter(v: &Value, name: &str) -> u64 {
    v["guest"][name].as_u64().unwrap_or(0)
}

/// A VM that runs or could run: the states in which a process holds it live.
pub fn holds_vm(state: &str) -> bool {
    matches!(state, "running" | "paused" | "migrating" | "starting")
}

/// The source: `ferry run` of the dirtier with an API socket.
pub struct Vm {
    pub proc: Proc,
    pub sock: PathBuf,
    pub serial: PathBuf,
    pub client: Client,
}

impl Vm {
    pub fn boot(dir: &Path, name: &str) -> Vm {
        let sock = dir.join(format!("{name}.sock"));
        let serial = dir.join(format!("{name}.log"));
        let proc = Proc::spawn(
            dir,
            name,
            &[
                "run",
                "--guest",
                "dirtier",
                "--append",
                GUEST_ARGS,
                "--memory",
                GUEST_MEMORY,
                "--api",
                sock.to_str().unwrap(),
                "--serial",
                serial.to_str().unwrap(),
                "--timestamps",
            ],
        );
        let mut vm = Vm {
            client: Client::new(&sock).with_timeout(Duration::from_secs(10)),
            proc,
            sock,
            serial,
        };
        // Running, the guest has verified once, and it has written as many
        // pages as its working set holds, so memory is mostly data, not zero.
        wait_for(
            "the source VM to boot and fill its working set",
            PATIENCE,
            || {
                if !vm.proc.alive() {
                    panic!("ferry run exited early: {}", vm.proc.stderr_text());
                }
                let v = status(&vm.sock)?;
                (v["state"] == "running"
                    && counter(&v, "verify_passes") >= 1
                    && counter(&v, "pages_written") >= WS_PAGES)
                    .then_some(())
            },
        );
        vm
    }

    pub fn state(&self) -> Option<String> {
        state_of(&self.sock)
    }

    /// `GET /api/v1/vm.migrate` as JSON.
    pub fn migration(&self) -> Option<Value> {
        match self.client.get(api::routes::VM_MIGRATE) {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    /// Waits until the running migration's progress satisfies `pred`
    /// (phase name, round, bytes sent); panics if it ends first.
    pub fn wait_progress(&self, what: &str, pred: impl Fn(&str, u64, u64) -> bool) -> Value {
        wait_for(what, PATIENCE, || {
            let m = self.migration()?;
            let p = &m["progress"];
            let phase = p["phase"].as_str().unwrap_or("");
            if pred(phase, p["round"].as_u64()?, p["bytes_sent"].as_u64()?) {
                return Some(m);
            }
            assert!(m["done"] != true, "the migration ended before {what}: {m}");
            None
        })
    }

    /// After a failed attempt: the VM runs on the source (not paused), its
    /// heartbeat advances, a new `VERIFY ok` appears in its log, and no
    /// `VERIFY FAIL` anywhere.
    pub fn assert_running_and_healthy(&mut self) {
        let v = wait_for("the source VM to run again", PATIENCE, || {
            assert!(
                self.proc.alive(),
                "the source process died: {}",
                self.proc.stderr_text()
            );
            let v = status(&self.sock)?;
            (v["state"] == "running").then_some(v)
        });
        let hb = counter(&v, "heartbeat_seq");
        let passes = counter(&v, "verify_passes");
        let logged = read_serial(&self.serial).verify_ok;
        wait_for(
            "heartbeats, a verify pass and a logged VERIFY ok on the source",
            PATIENCE,
            || {
                let v = status(&self.sock)?;
                assert_eq!(v["state"], "running", "the source VM stopped running: {v}");
                assert_eq!(
                    counter(&v, "verify_failures"),
                    0,
                    "guest verification failed: {v}"
                );
                let log = read_serial(&self.serial);
                (counter(&v, "heartbeat_seq") > hb
                    && counter(&v, "verify_passes") > passes
                    && log.verify_ok > logged)
                    .then_some(())
            },
        );
        let log = read_serial(&self.serial);
        assert!(
            log.verify_fail.is_empty(),
            "VERIFY FAIL on the source: {:?}",
            log.verify_fail
        );
    }

    /// Starts `ferry migrate --json` in the background.
    pub fn start_migrate(
        &self,
        dir: &Path,
        name: &str,
        to: &str,
        secret: &Path,
        extra: &[&str],
    ) -> Proc {
        let mut args = vec![
            "migrate",
            "--api",
            self.sock.to_str().unwrap(),
            "--to",
            to,
            "--secret-file",
            secret.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(dir, name, &args);
        // The job exists once the API has accepted it (or the client failed).
        wait_for("the migration to start", PATIENCE, || {
            if !p.alive() {
                return Some(());
            }
            self.migration().filter(|m| m["to"] == to).map(|_| ())
        });
        p
    }
}

/// The destination: `ferry receive` on a fresh loopback port.
pub struct Dest {
    pub proc: Proc,
    pub addr: String,
    pub sock: PathBuf,
    pub serial: PathBuf,
}

impl Dest {
    pub fn start(dir: &Path, name: &str, secret: &Path, extra: &[&str]) -> Dest {
        let addr = format!("127.0.0.1:{}", free_port());
        let sock = dir.join(format!("{name}.sock"));
        let serial = dir.join(format!("{name}.log"));
        let mut args = vec![
            "receive",
            "--listen",
            &addr,
            "--secret-file",
            secret.to_str().unwrap(),
            "--api",
            sock.to_str().unwrap(),
            "--serial",
            serial.to_str().unwrap(),
            "--timestamps",
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(dir, name, &args);
        // Probing the port would use up its one connection: read stderr.
        wait_for("ferry receive to listen", PATIENCE, || {
            assert!(proc.alive(), "ferry receive exited: {}", proc.stderr_text());
            proc.stderr_text()
                .contains("waiting for a VM")
                .then_some(())
        });
        Dest {
            proc,
            addr,
            sock,
            serial,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().unwrap()
    }

    pub fn state(&self) -> Option<String> {
        state_of(&self.sock)
    }

    /// The destination gave up: exited non-zero, with one error line naming
    /// `words`, no API socket answering, nothing in its serial log.
    pub fn assert_discarded(&mut self, words: &[&str]) {
        self.proc.assert_failed_with(PATIENCE, words);
        assert!(
            status(&self.sock).is_none(),
            "the failed destination serves an API"
        );
        let log = read_serial(&self.serial);
        assert!(
            log.heartbeats.is_empty() && log.verify_ok == 0,
            "the failed destination ran guest code: {log:?}"
        );
    }
}

/// Exactly one copy of the VM is live among the source and destinations:
/// a live process whose API says it holds the VM.
pub fn assert_exactly_one(src: &mut Vm, dests: &mut [&mut Dest]) {
    let mut holders = Vec::new();
    if src.proc.alive()
        && let Some(s) = src.state().filter(|s| holds_vm(s))
    {
        holders.push(format!("source ({s})"));
    }
    for d in dests.iter_mut() {
        if d.proc.alive()
            && let Some(s) = d.state().filter(|s| holds_vm(s))
        {
            holders.push(format!("{} ({s})", d.proc.name));
        }
    }
    assert_eq!(holders.len(), 1, "copies of the VM: {holders:?}");
}

/// After a failed attempt, a retry to a fresh destination (unlimited
/// bandwidth) completes: the rolled-back VM is fully usable.
pub fn assert_retry_succeeds(dir: &Path, src: &mut Vm, secret: &Path) {
    let mut dest = Dest::start(dir, "retry-dst", secret, &[]);
    let mut m = src.start_migrate(
        dir,
        "retry-migrate",
        &dest.addr,
        secret,
        &["--strategy", "downtime"],
    );
    let st = m.wait(PATIENCE * 2);
    assert!(
        st.success(),
        "retry failed: {}\n{}",
        m.stderr_text(),
        m.stdout_text()
    );
    assert_completed_on(src, &mut dest, &m);
}

/// The migration `m` completed to `dest`: the report says so, the source
/// exits, the destination runs and verifies, heartbeats continue.
pub fn assert_completed_on(src: &mut Vm, dest: &mut Dest, m: &Proc) {
    let report: Value = serde_json::from_str(&m.stdout_text())
        .unwrap_or_else(|e| panic!("migrate --json output: {e}: {}", m.stdout_text()));
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["vm_location"], "destination", "{report}");
    let st = src.proc.wait(PATIENCE);
    assert!(
        st.success(),
        "source exited {st}: {}",
        src.proc.stderr_text()
    );
    assert_no_panic("source", &src.proc.stderr_text());
    assert_eq!(dest.state().as_deref(), Some("running"));
    // Serial output is batched: wait for both kinds of line in the log.
    wait_for(
        "VERIFY ok and heartbeats on the destination",
        PATIENCE,
        || {
            let v = status(&dest.sock)?;
            assert_eq!(counter(&v, "verify_failures"), 0, "{v}");
            let log = read_serial(&dest.serial);
            (log.verify_ok >= 1 && !log.heartbeats.is_empty() && counter(&v, "verify_passes") >= 1)
                .then_some(())
        },
    );
    assert_exactly_one(src, &mut [dest]);
    let s = read_serial(&src.serial);
    let d = read_serial(&dest.serial);
    assert!(
        s.verify_fail.is_empty() && d.verify_fail.is_empty(),
        "{s:?} {d:?}"
    );
    let last = *s.heartbeats.last().expect("source heartbeats");
    let first = *d.heartbeats.first().expect("destination heartbeats");
    assert!(
        first <= last + 1 && first > 0,
        "heartbeat numbering has a gap: source ends at {last}, destination starts at {first}"
    );
    assert_one_after_other(&s, &d);
}

/// The guest never ran in both places at once: every heartbeat on the
/// source precedes every heartbeat on the destination (same host TSC).
pub fn assert_one_after_other(src: &Serial, dst: &Serial) {
    let src_last = src.heartbeat_tsc.iter().max().expect("source heartbeats");
    let dst_first = dst
        .heartbeat_tsc
        .iter()
        .min()
        .expect("destination heartbeats");
    assert!(
        src_last < dst_first,
        "the guest ran on both sides at once: source heartbeat at tsc {src_last}, destination at {dst_first}"
    );
}

// ---------------------------------------------------------------- proxy --

/// What a [`Proxy`] does when its trigger fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close both connections.
    Close,
    /// Stop forwarding in both directions, keep the sockets open.
    Freeze,
    /// Flip one byte in the middle of a frame's payload, keep forwarding.
    Corrupt,
}

/// When a [`Proxy`] acts on the source-to-destination stream: once armed
/// and at least `min_bytes` have passed, in the middle of the next frame of
/// `kind` (any frame: exactly at `min_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct Trigger {
    pub min_bytes: u64,
    pub kind: Option<u8>,
    pub armed: bool,
    /// Act just after that frame instead of inside it (Close, Freeze only).
    pub after_frame: bool,
}

/// vmstate frame kinds (docs/PROTOCOL.md).
pub const PAGES: u8 = 0x03;
pub const STATE: u8 = 0x05;
pub const COMMIT: u8 = 0x4a;

struct Shared {
    action: Action,
    trigger: Mutex<Trigger>,
    armed: AtomicBool,
    fired: AtomicBool,
    stop: AtomicBool,
    forwarded: AtomicU64,
    conns: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn sever(&self) {
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP proxy between source and destination that injects one fault.
pub struct Proxy {
    pub addr: String,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(target: SocketAddr, action: Action, trigger: Trigger) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            action,
            armed: AtomicBool::new(trigger.armed),
            trigger: Mutex::new(trigger),
            fired: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((src, _)) => {
                        src.set_nonblocking(false).unwrap();
                        let dst = match TcpStream::connect(target) {
                            Ok(d) => d,
                            Err(_) => return,
                        };
                        for s in [&src, &dst] {
                            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                            sh.conns.lock().unwrap().push(s.try_clone().unwrap());
                        }
                        let (a, b) = (src.try_clone().unwrap(), dst.try_clone().unwrap());
                        let sh1 = sh.clone();
                        thread::spawn(move || pump_forward(a, b, &sh1));
                        let sh2 = sh.clone();
                        thread::spawn(move || pump_back(dst, src, &sh2));
                        return;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => return,
                }
            }
        });
        Proxy { addr, shared }
    }

    /// Lets the trigger fire from now on.
    pub fn arm(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    pub fn wait_fired(&self) {
        wait_for("the proxy's fault to fire", PATIENCE, || {
            self.fired().then_some(())
        });
    }

    /// Source-to-destination bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Closes both connections now.
    pub fn sever(&self) {
        self.shared.sever();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.sever();
    }
}

/// Frame header: kind u8, flags u8, reserved u16, length u32 (then payload, CRC u32).
const HEADER: usize = 8;

/// Tracks frame boundaries in the source's stream to place the fault.
struct Frames {
    header: Vec<u8>,
    /// Bytes of the current frame's payload + CRC still to come.
    rest: u64,
}

impl Frames {
    /// Feeds `chunk` (starting at absolute offset `at`); returns the absolute
    /// offset where the fault goes, once a matching frame header is seen.
    fn feed(&mut self, chunk: &[u8], at: u64, t: &Trigger) -> Option<u64> {
        let mut i = 0usize;
        while i < chunk.len() {
            if self.rest > 0 {
                let n = (self.rest as usize).min(chunk.len() - i);
                self.rest -= n as u64;
                i += n;
                continue;
            }
            let need = HEADER - self.header.len();
            let n = need.min(chunk.len() - i);
            self.header.extend_from_slice(&chunk[i..i + n]);
            i += n;
            if self.header.len() == HEADER {
                let kind = self.header[0];
                let len = u32::from_le_bytes(self.header[4..8].try_into().unwrap()) as u64;
                let start = at + i as u64 - HEADER as u64;
                self.header.clear();
                self.rest = len + 4;
                if start >= t.min_bytes && t.kind.is_none_or(|k| k == kind) {
                    if t.after_frame {
                        return Some(start + HEADER as u64 + len + 4);
                    }
                    // Middle of the payload (the CRC if there is none).
                    return Some(start + HEADER as u64 + len / 2);
                }
            }
        }
        None
    }
}

fn pump_forward(mut from: TcpStream, mut to: TcpStream, sh: &Shared) {
    let mut frames = Frames {
        header: Vec::new(),
        rest: 0,
    };
    let mut target: Option<u64> = None;
    let mut at = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while !sh.stop.load(Ordering::SeqCst) {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                sh.sever();
                return;
            }
        };
        let chunk = &mut buf[..n];
        let fired = sh.fired.load(Ordering::SeqCst);
        if !fired && target.is_none() && sh.armed.load(Ordering::SeqCst) {
            let t = *sh.trigger.lock().unwrap();
            target = match t.kind {
                None => Some(t.min_bytes.max(at)),
                Some(_) => frames.feed(chunk, at, &t),
            };
        } else if !fired && target.is_none() {
            let t = Trigger {
                min_bytes: u64::MAX,
                ..*sh.trigger.lock().unwrap()
            };
            frames.feed(chunk, at, &t);
        }
        let end = at + n as u64;
        let mut keep = n;
        let mut act = None;
        let due = |x: u64| match sh.action {
            Action::Corrupt => x < end,
            Action::Close | Action::Freeze => x <= end,
        };
        if let Some(x) = target.filter(|&x| !fired && due(x)) {
            let off = (x - at) as usize;
            match sh.action {
                Action::Corrupt => {
                    chunk[off] ^= 0x5a;
                }
                Action::Close | Action::Freeze => keep = off,
            }
            act = Some(sh.action);
        }
        if to.write_all(&chunk[..keep]).is_err() {
            sh.sever();
            return;
        }
        sh.forwarded.fetch_add(keep as u64, Ordering::SeqCst);
        at = end;
        if let Some(a) = act {
            sh.fired.store(true, Ordering::SeqCst);
            match a {
                Action::Corrupt => {}
                Action::Close => {
                    sh.sever();
                    return;
                }
                Action::Freeze => {
                    while !sh.stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
            }
        }
    }
}

fn pump_back(mut from: TcpStream, mut to: TcpStream, sh: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    while !sh.stop.load(Ordering::SeqCst) {
        if sh.action == Action::Freeze && sh.fired.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    sh.sever();
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                sh.sever();
                return;
            }
        }
    }
}

/// A TCP server that answers every connection with random bytes.
pub struct GarbageServer {
    pub addr: String,
    stop: Arc<AtomicBool>,
}

impl GarbageServer {
    pub fn start() -> GarbageServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(&random_bytes(64 * 1024));
                        // Keep it open a while, then drop it.
                        thread::sleep(Duration::from_secs(2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        GarbageServer { addr, stop }
    }
}

impl Drop for GarbageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
