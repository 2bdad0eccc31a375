//! `ferry demo`: a live migration between two Ferry processes on this
//! machine, with its report, a plot of its rounds, and the guest's own
//! integrity check on the destination.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::Client;
use api::routes;

/// Arguments of `ferry demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Guest RAM.
    #[arg(long, default_value = "1G")]
    pub memory: String,
    /// Parameters of the dirtier guest.
    #[arg(
        long,
        default_value = "ws=256M pattern=hot hot=0.1 hotshare=0.9 rate=10000 verify=1s"
    )]
    pub workload: String,
    /// Migration strategy: stop-and-copy, xen or downtime.
    #[arg(long, default_value = migrate::DEFAULT_STRATEGY)]
    pub strategy: String,
    /// Bandwidth cap (the literature's links are 1 Gbit/s).
    #[arg(long, default_value = "1Gbit")]
    pub max_bandwidth: String,
    /// Downtime target.
    #[arg(long, default_value = "300ms")]
    pub max_downtime: String,
    /// Keep logs, secret and plot in this directory (default: a new temporary one).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Kills a child process when dropped, so the demo never leaves VMs behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

pub fn run(args: &DemoArgs) -> anyhow::Result<i32> {
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let d = std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            d
        }
    };
    let req_check = crate::live::request(
        "127.0.0.1:1",
        &args.strategy,
        Some(&args.max_bandwidth),
        &args.max_downtime,
        Path::new("/"),
    )?;
    drop(req_check);
    let secret = dir.join("secret");
    std::fs::write(&secret, migrate::Secret::generate_hex())?;
    let (src_sock, dst_sock) = (dir.join("source.sock"), dir.join("destination.sock"));
    let (src_log, dst_log) = (dir.join("source.log"), dir.join("destination.log"));
    let _ = std::fs::remove_file(&src_sock);
    let _ = std::fs::remove_file(&dst_sock);
    let exe = std::env::current_exe()?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let spawn = |args: &[&str]| -> anyhow::Result<Proc> {
        Ok(Proc(
            Command::new(&exe)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start a ferry process")?,
        ))
    };
    let p = |p: &Path| p.display().to_string();
    eprintln!("demo: destination `ferry receive` listens on {addr}");
    let _dst = spawn(&[
        "receive",
        "--listen",
        &addr,
        "--secret-file",
        &p(&secret),
        "--api",
        &p(&dst_sock),
        "--serial",
        &p(&dst_log),
        "--timestamps",
    ])?;
    eprintln!(
        "demo: source `ferry run` boots the dirtier ({}, {})",
        args.memory, args.workload
    );
    let mut src = spawn(&[
        "run",
        "--guest",
        "dirtier",
        "--memory",
        &args.memory,
        "--append",
        &args.workload,
        "--api",
        &p(&src_sock),
        "--serial",
        &p(&src_log),
        "--timestamps",
    ])?;
    let client = Client::new(&src_sock);
    wait_for(
        "the source VM to start writing",
        Duration::from_secs(30),
        || {
            if let Ok(Some(_)) = src.0.try_wait() {
                return true;
            }
            client
                .get_ok(routes::VM)
                .ok()
                .and_then(|v| v.get("guest")?.get("pages_written")?.as_u64())
                .is_some_and(|n| n > 20_000)
        },
    )?;
    if let Some(status) = src.0.try_wait()? {
        anyhow::bail!(
            "the source VM ended early ({status}); see {}",
            src_log.display()
        );
    }
    std::thread::sleep(Duration::from_millis(500));

    let req = crate::live::request(
        &addr,
        &args.strategy,
        Some(&args.max_bandwidth),
        &args.max_downtime,
        &secret,
    )?;
    let started = now();
    eprintln!("demo: migrating with strategy {}", args.strategy);
    let status = crate::live::drive(&client, &req, !args.json)?;
    let mut report = status.report.context("the source gave no report")?;
    if let Some(e) = &status.error {
        crate::live::print_report(Some(&report), args.json)?;
        anyhow::bail!("migration failed: {e}");
    }
    // Wait for the destination's next integrity check, then read both logs.
    let resumed = now();
    let verify = wait_for_verify(&dst_log, resumed, Duration::from_secs(60))?;
    report.guest_downtime_ms =
        crate::serial::guest_downtime_ms(&src_log, &dst_log, started, now())?;
    crate::live::print_report(Some(&report), args.json)?;
    let plot = dir.join("rounds.svg");
    let points: Vec<_> = report
        .per_round
        .iter()
        .map(|r| yardstick::plot::RoundPoint {
            round: r.round,
            pages_sent: r.pages_sent,
            dirty_rate: r.dirty_rate_bps / 8.0 / 4096.0,
        })
        .collect();
    if let Ok(svg) =
        yardstick::plot::rounds_svg("ferry demo: pages sent and dirty rate per round", &points)
    {
        yardstick::plot::save(&plot, &svg)?;
    }
    let dst_client = Client::new(&dst_sock);
    let _ = dst_client.put(routes::VM_SHUTDOWN, None);
    if !args.json {
        println!(
            "guest-visible downtime: {}",
            report
                .guest_downtime_ms
                .map_or("unknown".into(), |d| format!("{d:.1} ms"))
        );
        println!("integrity check on the destination: {verify}");
        println!("logs, secret and round plot: {}", dir.display());
    }
    if verify.starts_with("VERIFY ok") {
        Ok(0)
    } else {
        anyhow::bail!("the guest's integrity check failed on the destination: {verify}")
    }
}

/// The first VERIFY line the destination printed after `after`.
fn wait_for_verify(log: &Path, after: f64, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(lines) = crate::serial::read_stamped_log(log)
            && let Some(l) = lines
                .iter()
                .find(|l| l.time >= after && l.text.starts_with("VERIFY"))
        {
            return Ok(l.text.clone());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the destination printed no integrity check within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
