//! Launching and controlling one QEMU process for a Multiboot guest.
//!
//! QEMU connects its serial port to a Unix socket we listen on (so no output
//! is lost before we are ready, and nothing blocks), and offers QMP on a
//! second Unix socket. Both live in a private temporary directory that is
//! removed with the [`Qemu`] value; dropping a [`Qemu`] kills the process.

use std::fs::File;
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::qmp::Qmp;
use crate::serial::{self, SerialLine, SerialLog, StampFn};

/// The CPU model that works on these machines. `-cpu host` and `-cpu max`
/// both abort on kvm-pvm ("failed to set MSR 0x10a"): the nested KVM lists
/// IA32_ARCH_CAPABILITIES but refuses writes to it, so that feature is
/// switched off. Everything else of the host CPU is passed through.
pub const DEFAULT_CPU: &str = "host,-arch-capabilities";

/// Where qboot, the minimal firmware Debian's qemu-system-data ships, lives.
pub const QBOOT_PATH: &str = "/usr/share/qemu/qboot.rom";

/// Builds a fresh [`StampFn`] for each QEMU process's serial log.
pub type StampFnFactory = Arc<dyn Fn() -> StampFn + Send + Sync>;

/// The firmware QEMU runs before the Multiboot kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Firmware {
    /// qboot (`-bios /usr/share/qemu/qboot.rom`): boots to the kernel in
    /// ~0.15 s here. It builds the MP table the guests need, like SeaBIOS.
    Qboot,
    /// QEMU's default SeaBIOS. Its real-mode code is emulated on kvm-pvm at
    /// ~1.5M instructions/s, so it alone takes ~3.5 s here.
    SeaBios,
    /// Any other firmware image (`-bios PATH`).
    Custom(PathBuf),
}

/// How to start QEMU for one guest.
#[derive(Clone)]
pub struct QemuConfig {
    /// The QEMU binary (looked up in PATH when not absolute).
    pub binary: PathBuf,
    /// The Multiboot v1 kernel file.
    pub kernel: PathBuf,
    /// The kernel command line (`-append`).
    pub append: String,
    /// Guest memory in MiB (`-m`).
    pub memory_mib: u64,
    /// Number of vCPUs (`-smp`).
    pub vcpus: u32,
    /// CPU model (`-cpu`).
    pub cpu: String,
    /// Firmware to boot through.
    pub firmware: Firmware,
    /// More arguments appended verbatim.
    pub extra_args: Vec<String>,
    /// Bound on each QMP reply.
    pub qmp_timeout: Duration,
    /// Bound on QEMU's start until serial and QMP are connected.
    pub start_timeout: Duration,
    /// Optional refinement of serial line times (see [`serial::StampFn`]).
    pub stamper: Option<StampFnFactory>,
    /// Give the guest CPUID leaf 0x40000010 (TSC frequency in kHz), as
    /// Ferry's VMM does: adds `+invtsc,tsc-frequency=<host TSC Hz>` to the
    /// CPU model. Without `+invtsc` QEMU 7.2 does not offer that leaf, and
    /// without an explicit `tsc-frequency` `+invtsc` blocks migration. The
    /// host frequency is probed once per process ([`host_tsc_hz`]).
    pub tsc_leaf: bool,
}

impl std::fmt::Debug for QemuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuConfig")
            .field("binary", &self.binary)
            .field("kernel", &self.kernel)
            .field("append", &self.append)
            .field("memory_mib", &self.memory_mib)
            .field("vcpus", &self.vcpus)
            .field("cpu", &self.cpu)
            .field("firmware", &self.firmware)
            .field("extra_args", &self.extra_args)
            .field("stamper", &self.stamper.is_some())
            .field("tsc_leaf", &self.tsc_leaf)
            .finish()
    }
}

impl QemuConfig {
    /// A 256 MiB, 1-vCPU guest booting `kernel` through qboot.
    pub fn new(kernel: impl Into<PathBuf>) -> QemuConfig {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            kernel: kernel.into(),
            append: String::new(),
            memory_mib: 256,
            vcpus: 1,
            cpu: DEFAULT_CPU.to_string(),
            firmware: Firmware::Qboot,
            extra_args: Vec::new(),
            qmp_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(10),
            stamper: None,
            tsc_leaf: true,
        }
    }

    /// The `-cpu` value used: [`QemuConfig::cpu`], plus the TSC options
    /// when [`QemuConfig::tsc_leaf`] is set (this may start QEMU once to
    /// probe the host's TSC frequency).
    pub fn effective_cpu(&self) -> Result<String, Error> {
        if self.tsc_leaf {
            let hz = host_tsc_hz(&self.binary)?;
            Ok(format!("{},+invtsc,tsc-frequency={hz}", self.cpu))
        } else {
            Ok(self.cpu.clone())
        }
    }

    /// The full QEMU argument list, given the `-cpu` value (see
    /// [`QemuConfig::effective_cpu`]), the serial and QMP socket paths and
    /// whether this is a migration destination.
    pub fn args(
        &self,
        cpu: &str,
        serial_sock: &Path,
        qmp_sock: &Path,
        incoming: bool,
    ) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-enable-kvm".into(),
            "-cpu".into(),
            cpu.to_string(),
            "-m".into(),
            format!("{}M", self.memory_mib),
            "-smp".into(),
            self.vcpus.to_string(),
        ];
        match &self.firmware {
            Firmware::Qboot => a.extend(["-bios".into(), QBOOT_PATH.into()]),
            Firmware::SeaBios => {}
            Firmware::Custom(p) => a.extend(["-bios".into(), p.display().to_string()]),
        }
        a.extend([
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-append".into(),
            self.append.clone(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-nodefaults".into(),
            "-device".into(),
            "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
            "-chardev".into(),
            format!("socket,id=ser0,path={}", serial_sock.display()),
            "-serial".into(),
            "chardev:ser0".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp_sock.display()),
        ]);
        if incoming {
            a.extend(["-incoming".into(), "defer".into()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    fn check(&self) -> Result<(), Error> {
        if self.memory_mib == 0 {
            return Err(Error::Config("memory_mib must be at least 1".into()));
        }
        if self.vcpus == 0 {
            return Err(Error::Config("vcpus must be at least 1".into()));
        }
        if !self.kernel.is_file() {
            return Err(Error::MissingFile {
                what: "guest kernel",
                path: self.kernel.clone(),
            });
        }
        let fw = match &self.firmware {
            Firmware::Qboot => Some(PathBuf::from(QBOOT_PATH)),
            Firmware::Custom(p) => Some(p.clone()),
            Firmware::SeaBios => None,
        };
        if let Some(fw) = fw.filter(|p| !p.is_file()) {
            return Err(Error::MissingFile {
                what: "firmware",
                path: fw,
            });
        }
        check_kvm()
    }
}

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/yardstick-<pid>-<n>`.
    pub fn new() -> Result<TempDir, Error> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = (serial::now().fract() * 1e9) as u64;
        let path =
            std::env::temp_dir().join(format!("yardstick-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(Error::io(format!(
            "creating temporary directory {}",
            path.display()
        )))?;
        Ok(TempDir { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Guest image bytes written to a temporary file (QEMU needs a path).
#[derive(Debug)]
pub struct ImageFile {
    dir: TempDir,
    path: PathBuf,
}

impl ImageFile {
    /// Writes `bytes` to `<tempdir>/<name>`.
    pub fn new(name: &str, bytes: &[u8]) -> Result<ImageFile, Error> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::Config(format!("bad image file name {name:?}")));
        }
        let dir = TempDir::new()?;
        let path = dir.path().join(name);
        std::fs::write(&path, bytes)
            .map_err(Error::io(format!("writing guest image {}", path.display())))?;
        Ok(ImageFile { dir, path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A running QEMU process with its QMP session and serial log.
pub struct Qemu {
    child: Child,
    qmp: Qmp,
    serial: SerialLog,
    serial_thread: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    spawned_at: f64,
    incoming: Option<String>,
    exit: Option<ExitStatus>,
    _dir: TempDir,
}

impl std::fmt::Debug for Qemu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qemu")
            .field("pid", &self.child.id())
            .field("spawned_at", &self.spawned_at)
            .field("incoming", &self.incoming)
            .finish()
    }
}

impl Qemu {
    /// Starts QEMU for `config` and returns once its serial port and QMP
    /// are connected (the guest is already running then).
    pub fn spawn(config: &QemuConfig) -> Result<Qemu, Error> {
        Self::start(config, false)
    }

    /// Starts a migration destination for `config`: QEMU with
    /// `-incoming defer`, then QMP `migrate-incoming` on 127.0.0.1 with a
    /// port the kernel picks. [`Qemu::incoming_uri`] tells where to send.
    pub fn spawn_incoming(config: &QemuConfig) -> Result<Qemu, Error> {
        let mut q = Self::start(config, true)?;
        q.qmp
            .execute("migrate-incoming", Some(json!({"uri": "tcp:127.0.0.1:0"})))?;
        let info = q.qmp.execute("query-migrate", None)?;
        let addr = info["socket-address"]
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| Error::Reply {
                command: "query-migrate".into(),
                detail: format!("no socket-address on the destination: {info}"),
            })?;
        let host = addr["host"].as_str().unwrap_or("127.0.0.1");
        let port = match &addr["port"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        q.incoming = Some(format!("tcp:{host}:{port}"));
        Ok(q)
    }

    fn start(config: &QemuConfig, incoming: bool) -> Result<Qemu, Error> {
        config.check()?;
        let cpu = config.effective_cpu()?;
        let dir = TempDir::new()?;
        let serial_sock = dir.path().join("serial.sock");
        let qmp_sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&serial_sock)
            .map_err(Error::io(format!("listening on {}", serial_sock.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("making the serial listener non-blocking"))?;

        let binary = config.binary.display().to_string();
        let spawned_at = serial::now();
        let mut child = Command::new(&config.binary)
            .args(config.args(&cpu, &serial_sock, &qmp_sock, incoming))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::QemuNotFound { binary, source })?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&text);
                }
            });
        }
        // From here on `guard` kills QEMU if starting fails half way.
        let mut guard = KillGuard(Some(child));
        let deadline = Instant::now() + config.start_timeout;

        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io("accepting QEMU's serial connection")(e)),
            }
            guard.check_alive(&stderr, "connecting its serial port")?;
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "QEMU to connect its serial port".into(),
                    after: config.start_timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        stream
            .set_nonblocking(false)
            .map_err(Error::io("configuring the serial socket"))?;
        let stamper = config.stamper.as_ref().map(|f| f());
        let (serial, serial_thread) = SerialLog::capture(stream, stamper);

        let qmp = loop {
            match UnixStream::connect(&qmp_sock) {
                Ok(s) => match Qmp::from_stream(s, config.qmp_timeout) {
                    Ok(q) => break q,
                    Err(e) => {
                        // QEMU exiting right after start (e.g. the kernel is
                        // not Multiboot) shows as a QMP failure: report the
                        // exit and its stderr instead.
                        let waited = Instant::now();
                        while waited.elapsed() < Duration::from_millis(500) {
                            guard.check_alive(&stderr, "starting the guest")?;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        return Err(e.into());
                    }
                },
                Err(_) => {
                    guard.check_alive(&stderr, "opening its QMP socket")?;
                    if Instant::now() > deadline {
                        return Err(Error::Timeout {
                            what: format!("QEMU's QMP socket {}", qmp_sock.display()),
                            after: config.start_timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let child = guard.0.take().expect("guard holds the child");
        Ok(Qemu {
            child,
            qmp,
            serial,
            serial_thread: Some(serial_thread),
            stderr,
            spawned_at,
            incoming: None,
            exit: None,
            _dir: dir,
        })
    }

    /// The QMP session.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// The serial log (lines keep arriving while QEMU runs).
    pub fn serial(&self) -> &SerialLog {
        &self.serial
    }

    /// Host wall time (UNIX seconds) just before QEMU was spawned.
    pub fn spawned_at(&self) -> f64 {
        self.spawned_at
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// For a destination: the URI to pass to `migrate`.
    pub fn incoming_uri(&self) -> Option<&str> {
        self.incoming.as_deref()
    }

    /// What QEMU wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// QMP `query-status`: `running`, `paused`, `inmigrate`, `postmigrate`...
    pub fn run_state(&mut self) -> Result<String, Error> {
        let r = self.qmp.execute("query-status", None)?;
        r["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Reply {
                command: "query-status".into(),
                detail: r.to_string(),
            })
    }

    /// Waits for the first serial line at index `from` or later that
    /// satisfies `pred`; `what` names it in the error. Fails early when QEMU
    /// closes the serial port (it exited).
    pub fn wait_for_line(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&SerialLine) -> bool,
    ) -> Result<(usize, SerialLine), Error> {
        if let Some(found) = self.serial.wait_for(from, timeout, pred) {
            return Ok(found);
        }
        if self.serial.is_closed() {
            let status = self.wait_exit(Duration::from_secs(2)).ok();
            return Err(Error::QemuExited {
                status: status.map_or("(still running)".into(), |s| s.to_string()),
                during: format!("waiting for {what}"),
                stderr: self.stderr(),
            });
        }
        Err(Error::Timeout {
            what: format!("{what} on the guest's serial port"),
            after: timeout,
        })
    }

    /// Waits for the guest's first heartbeat line.
    pub fn wait_for_heartbeat(&mut self, timeout: Duration) -> Result<SerialLine, Error> {
        self.wait_for_line(0, timeout, "the first heartbeat", serial::is_heartbeat)
            .map(|(_, l)| l)
    }

    /// Waits for QEMU to exit on its own (e.g. the guest wrote to the exit
    /// port), then for the serial log to be complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        if let Some(s) = self.exit {
            return Ok(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(Error::io("waiting for QEMU"))?
            {
                self.exit = Some(status);
                if let Some(t) = self.serial_thread.take() {
                    let _ = t.join();
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "QEMU to exit".into(),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks QEMU to quit over QMP and waits for it; kills it if that fails.
    pub fn quit(&mut self) {
        if self.exit.is_none() {
            let _ = self.qmp.execute("quit", None);
            if self.wait_exit(Duration::from_secs(5)).is_err() {
                self.kill();
            }
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
        }
        if let Some(t) = self.serial_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The guest's value written to the isa-debug-exit port, from QEMU's exit
/// status (`(value << 1) | 1`); `None` for other exits (QMP quit, signal).
pub fn guest_exit_value(status: ExitStatus) -> Option<u8> {
    let code = status.code()?;
    (code & 1 == 1).then_some((code >> 1) as u8)
}

/// Kills a half-started QEMU on early return.
struct KillGuard(Option<Child>);

impl KillGuard {
    fn check_alive(&mut self, stderr: &Arc<Mutex<String>>, during: &str) -> Result<(), Error> {
        let Some(child) = self.0.as_mut() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.0 = None;
            // Give the stderr thread a moment to collect the last words.
            std::thread::sleep(Duration::from_millis(20));
            return Err(Error::QemuExited {
                status: status.to_string(),
                during: during.to_string(),
                stderr: stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .trim()
                    .to_string(),
            });
        }
        Ok(())
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Boot time of one QEMU run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootTime {
    /// From spawning QEMU to the arrival of the first serial line, in ms.
    pub first_line_ms: f64,
    /// From spawning QEMU to the first heartbeat line, in ms: when the
    /// guest printed it ([`SerialLine::time`], refined by the config's
    /// stamper), which can precede the first line's arrival.
    pub first_heartbeat_ms: f64,
}

/// Spawns QEMU for `config`, waits for the first heartbeat, stops QEMU, and
/// returns the times from spawn (just before `fork`) to the first line's
/// arrival and to the first heartbeat.
pub fn measure_boot(config: &QemuConfig, timeout: Duration) -> Result<BootTime, Error> {
    let mut q = Qemu::spawn(config)?;
    let hb = q.wait_for_heartbeat(timeout)?;
    let first = q.serial.lines().first().map_or(hb.arrival, |l| l.arrival);
    let t0 = q.spawned_at;
    q.kill();
    Ok(BootTime {
        first_line_ms: (first - t0) * 1e3,
        first_heartbeat_ms: (hb.time - t0) * 1e3,
    })
}

/// The host's TSC frequency in Hz as QEMU/KVM sees it (KVM_GET_TSC_KHZ),
/// read over QMP from a paused QEMU with `+invtsc`. Probed once per process
/// and cached.
pub fn host_tsc_hz(binary: &Path) -> Result<u64, Error> {
    static CACHE: OnceLock<u64> = OnceLock::new();
    if let Some(hz) = CACHE.get() {
        return Ok(*hz);
    }
    check_kvm()?;
    let dir = TempDir::new()?;
    let qmp_sock = dir.path().join("probe.sock");
    let child = Command::new(binary)
        .args([
            "-enable-kvm",
            "-cpu",
            &format!("{DEFAULT_CPU},+invtsc"),
            "-S",
            "-nodefaults",
            "-display",
            "none",
            "-m",
            "16M",
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp_sock.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::QemuNotFound {
            binary: binary.display().to_string(),
            source,
        })?;
    let mut guard = KillGuard(Some(child));
    let stderr = Arc::new(Mutex::new(String::new()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut qmp = loop {
        match UnixStream::connect(&qmp_sock) {
            Ok(s) => break Qmp::from_stream(s, Duration::from_secs(10))?,
            Err(_) => {
                if let Err(e) = guard.check_alive(&stderr, "probing the TSC frequency") {
                    // Collect QEMU's reason for the error message.
                    let mut text = String::new();
                    if let Some(mut c) = guard.0.take()
                        && let Some(mut pipe) = c.stderr.take()
                    {
                        let _ = pipe.read_to_string(&mut text);
                    }
                    return Err(match e {
                        Error::QemuExited { status, during, .. } => Error::QemuExited {
                            status,
                            during,
                            stderr: text.trim().to_string(),
                        },
                        other => other,
                    });
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: "QEMU's QMP socket while probing the TSC frequency".into(),
                        after: Duration::from_secs(10),
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    let cpus = qmp.execute("query-cpus-fast", None)?;
    let path = cpus[0]["qom-path"].as_str().ok_or_else(|| Error::Reply {
        command: "query-cpus-fast".into(),
        detail: cpus.to_string(),
    })?;
    let hz = qmp.execute(
        "qom-get",
        Some(json!({"path": path, "property": "tsc-frequency"})),
    )?;
    let hz = hz.as_u64().filter(|&h| h > 0).ok_or_else(|| Error::Reply {
        command: "qom-get tsc-frequency".into(),
        detail: hz.to_string(),
    })?;
    let _ = qmp.execute("quit", None);
    drop(guard);
    Ok(*CACHE.get_or_init(|| hz))
}

/// Checks that `qemu-system-x86_64` (or `binary`) runs and returns its
/// version line.
pub fn qemu_version(binary: &Path) -> Result<String, Error> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::QemuNotFound {
            binary: binary.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Checks for a usable /dev/kvm without starting anything.
pub fn check_kvm() -> Result<(), Error> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|source| Error::Kvm { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_list() {
        let mut c = QemuConfig::new("/g/dirtier.elf");
        c.append = "ws=64M rate=1000".into();
        c.memory_mib = 512;
        c.vcpus = 2;
        let a = c.args("host", Path::new("/t/s.sock"), Path::new("/t/q.sock"), true);
        let text = a.join(" ");
        for want in [
            "-enable-kvm -cpu host -m 512M -smp 2",
            "-bios /usr/share/qemu/qboot.rom",
            "-kernel /g/dirtier.elf",
            "-display none -no-reboot -nodefaults",
            "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-chardev socket,id=ser0,path=/t/s.sock -serial chardev:ser0",
            "-qmp unix:/t/q.sock,server=on,wait=off",
            "-incoming defer",
        ] {
            assert!(text.contains(want), "{want:?} missing in {text}");
        }
        // The command line stays one argument, spaces and all.
        assert!(a.iter().any(|x| x == "ws=64M rate=1000"));
        c.firmware = Firmware::SeaBios;
        let a = c.args("host", Path::new("s"), Path::new("q"), false);
        assert!(!a.iter().any(|x| x == "-bios" || x == "-incoming"));
    }

    #[test]
    fn config_checks() {
        let mut c = QemuConfig::new("/nonexistent/k.elf");
        c.memory_mib = 0;
        assert!(matches!(Qemu::spawn(&c).unwrap_err(), Error::Config(_)));
        c.memory_mib = 1;
        c.vcpus = 0;
        assert!(matches!(Qemu::spawn(&c).unwrap_err(), Error::Config(_)));
    }
}
