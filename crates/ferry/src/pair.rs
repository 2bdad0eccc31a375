//! A source and a destination Ferry process on this machine, ready for a
//! live migration: what `ferry demo` and `ferry bench migrate` run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::Client;
use api::routes;
use api::types::MigrateRequest;
use migrate::MigrationReport;

use crate::downtime::DowntimeProbe;
use crate::serial::now;

/// Kills a child process when dropped, so no VM is ever left behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What to boot on the source.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub guest: String,
    pub memory: units::ByteSize,
    pub vcpus: u32,
    pub append: String,
}

pub struct Pair {
    pub addr: String,
    pub secret: PathBuf,
    pub src_log: PathBuf,
    pub dst_log: PathBuf,
    pub source: Client,
    pub destination: Client,
    src: Proc,
    dst: Proc,
    /// How to start the source again (`ferry run --recover`).
    exe: PathBuf,
    dir: PathBuf,
    src_sock: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `ok` holds, polling every 50 ms.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ok()? {
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Pair {
    /// Starts `ferry receive` and `ferry run` for `guest` in `dir`.
    pub fn start(dir: &Path, guest: &GuestSpec) -> anyhow::Result<Pair> {
        Pair::start_with(dir, guest, &[])
    }

    /// As [`Pair::start`], with `receive_args` added to `ferry receive`'s.
    pub fn start_with(
        dir: &Path,
        guest: &GuestSpec,
        receive_args: &[&str],
    ) -> anyhow::Result<Pair> {
        std::fs::create_dir_all(dir)?;
        let secret = dir.join("secret");
        std::fs::write(&secret, migrate::Secret::generate_hex())?;
        let (src_sock, dst_sock) = (dir.join("source.sock"), dir.join("destination.sock"));
        let (src_log, dst_log) = (dir.join("source.log"), dir.join("destination.log"));
        let exe = std::env::current_exe()?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        // Each process's own log (RUST_LOG applies) beside the guest's.
        let spawn = |args: &[&str], log: &str| -> anyhow::Result<Proc> {
            let log = std::fs::File::create(dir.join(log))?;
            Ok(Proc(
                Command::new(&exe)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("cannot start a ferry process")?,
            ))
        };
        let p = |p: &Path| p.display().to_string();
        let (secret_arg, dst_sock_arg, dst_log_arg) = (p(&secret), p(&dst_sock), p(&dst_log));
        let mut receive = vec![
            "receive",
            "--listen",
            &addr,
            "--secret-file",
            &secret_arg,
            "--api",
            &dst_sock_arg,
            "--serial",
            &dst_log_arg,
            "--timestamps",
        ];
        receive.extend_from_slice(receive_args);
        let dst = spawn(&receive, "destination-ferry.log")?;
        let vcpus = guest.vcpus.to_string();
        let memory = format!("{}B", guest.memory.bytes());
        let src = spawn(
            &[
                "run",
                "--guest",
                &guest.guest,
                "--memory",
                &memory,
                "--vcpus",
                &vcpus,
                "--append",
                &guest.append,
                "--api",
                &p(&src_sock),
                "--serial",
                &p(&src_log),
                "--timestamps",
            ],
            "source-ferry.log",
        )?;
        Ok(Pair {
            addr,
            secret,
            src_log,
            dst_log,
            source: Client::new(&src_sock),
            destination: Client::new(&dst_sock),
            src,
            dst,
            exe,
            dir: dir.to_path_buf(),
            src_sock,
        })
    }

    /// After the source was killed: if it left a post-copy to take up
    /// (its state directory under `ferry run`'s default base, named after
    /// the VM `id`), starts `ferry run --recover` on it, with the same API
    /// socket and serial log. Returns whether it did.
    pub fn recover_source(&mut self, id: &str) -> anyhow::Result<bool> {
        let state = Path::new(node::statedir::DEFAULT_BASE).join(id);
        if !state.join("recovery.json").exists() {
            return Ok(false);
        }
        let log = std::fs::File::create(self.dir.join("source-recovered-ferry.log"))?;
        let p = |p: &Path| p.display().to_string();
        let child = Command::new(&self.exe)
            .args([
                "run",
                "--recover",
                &p(&state),
                "--api",
                &p(&self.src_sock),
                "--serial",
                &p(&self.src_log),
                "--timestamps",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start a ferry process")?;
        self.src = Proc(child);
        Ok(true)
    }

    /// Removes what a source killed in post-copy left of VM `id` (its
    /// state directory), if nothing took it up.
    pub fn forget_source_state(&mut self, id: &str) {
        let state = Path::new(node::statedir::DEFAULT_BASE).join(id);
        if state.exists() && !self.source_alive() {
            let _ = std::fs::remove_dir_all(state);
        }
    }

    /// Kills (SIGKILL) the source process.
    pub fn kill_source(&mut self) {
        let _ = self.src.0.kill();
        let _ = self.src.0.wait();
    }

    /// Kills (SIGKILL) the destination process.
    pub fn kill_destination(&mut self) {
        let _ = self.dst.0.kill();
        let _ = self.dst.0.wait();
    }

    /// Whether the source process still runs.
    pub fn source_alive(&mut self) -> bool {
        matches!(self.src.0.try_wait(), Ok(None))
    }

    /// Whether the destination process still runs.
    pub fn destination_alive(&mut self) -> bool {
        matches!(self.dst.0.try_wait(), Ok(None))
    }

    /// Waits until the source guest's counters satisfy `ready`.
    pub fn wait_source(
        &mut self,
        what: &str,
        ready: impl Fn(&api::types::GuestCounters) -> bool,
    ) -> anyhow::Result<()> {
        let log = self.src_log.clone();
        let (src, client) = (&mut self.src, &self.source);
        wait_for(what, Duration::from_secs(120), || {
            if let Some(status) = src.0.try_wait()? {
                anyhow::bail!(
                    "the source VM ended early ({status}); see {}",
                    log.display()
                );
            }
            Ok(client
                .get_ok(routes::VM)
                .ok()
                .and_then(|v| serde_json::from_value::<api::types::VmStatus>(v).ok())
                .and_then(|s| s.guest)
                .is_some_and(|g| ready(&g)))
        })
    }

    /// Migrates the source VM to the destination as `req` asks (its
    /// destination and secret are the pair's); the report carries the
    /// guest-visible downtime (sampled on both sides) and the largest
    /// heartbeat gap once the guest has printed a heartbeat there.
    pub fn migrate(
        &self,
        mut req: MigrateRequest,
        show: bool,
    ) -> anyhow::Result<(MigrationReport, Option<String>)> {
        req.to = self.addr.clone();
        req.secret_file = Some(self.secret.display().to_string());
        let probe = DowntimeProbe::start(&self.source, self.destination.path())?;
        let started = now();
        let status = crate::live::drive(&self.source, &req, show)?;
        let mut report = status.report.context("the source gave no report")?;
        probe.finish(&mut report);
        if status.error.is_none() {
            let resumed = now();
            // The largest gap ends at the first heartbeat on the destination.
            let _ = self.wait_line_after(&self.dst_log, resumed, "HB ", Duration::from_secs(30));
            report.heartbeat_gap_ms =
                crate::serial::heartbeat_gap_ms(&self.src_log, &self.dst_log, started, now())?;
        }
        Ok((report, status.error))
    }

    /// The first line starting with `prefix` that `log` got at or after `after`.
    pub fn wait_line_after(
        &self,
        log: &Path,
        after: f64,
        prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut found = None;
        wait_for(&format!("{prefix:?} in {}", log.display()), timeout, || {
            if let Ok(lines) = crate::serial::read_stamped_log(log) {
                found = lines
                    .iter()
                    .find(|l| l.time >= after && l.text.starts_with(prefix))
                    .map(|l| l.text.clone());
            }
            Ok(found.is_some())
        })?;
        Ok(found.unwrap_or_default())
    }

    /// Stops the destination VM (the source has exited after a migration).
    pub fn shutdown(self) {
        let _ = self.destination.put(routes::VM_SHUTDOWN, None);
        let _ = self.source.put(routes::VM_SHUTDOWN, None);
    }
}
