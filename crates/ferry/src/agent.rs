//! `ferry agent`: one per host; flags into `agent::AgentConfig`, then the
//! library's loop until SIGTERM/SIGINT (the VMs keep running).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use units::ByteSize;

/// Arguments of `ferry agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// This host's name: its cgroup, its key in the store, its metrics label.
    #[arg(long, value_name = "NAME", value_parser = node::check_name)]
    pub host: String,
    /// Where the VMs' API sockets, serial output and logs live; a restarted
    /// agent adopts the VMs whose sockets answer there.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Declared capacity in CPUs (e.g. 1.5): the host cgroup's CPU quota.
    #[arg(long, value_name = "CPUS", value_parser = parse_capacity)]
    pub capacity: f64,
    /// Declared memory for VMs, e.g. 8G: what the manager places against.
    /// Default: the machine's memory (MemTotal).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<ByteSize>,
    /// How often to measure and publish, e.g. 2s.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Duration,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9100);
    /// https with mutual TLS when --tls-dir is given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// etcd endpoint (repeatable). Default: the embedded store.
    #[arg(long, value_name = "URL")]
    pub etcd: Vec<String>,
    /// The embedded store's socket; served by this agent if nobody serves
    /// it yet. Default: STATE_DIR/store.sock.
    #[arg(long, value_name = "SOCKET", conflicts_with = "etcd")]
    pub store_socket: Option<PathBuf>,
    /// TTL of the lease the host report is published under, e.g. 10s.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_interval)]
    pub lease_ttl: Duration,
    /// A VM to run unless one of that name is adopted (repeatable):
    /// NAME=GUEST[,memory=SIZE][,vcpus=N][,append=ARGS] (append last: it takes the rest).
    #[arg(long, value_name = "SPEC")]
    pub vm: Vec<agent::VmSpec>,
    /// File with the migration secret every agent of the cluster shares;
    /// needed to carry out migration orders.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The address this host's receivers listen on for incoming VMs, which
    /// the other hosts reach.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub migration_ip: IpAddr,
    /// Folder with the cluster CA and this host's certificate and key
    /// (`ferry pki init`): migrations run inside mutual TLS, /metrics is
    /// served over it, and etcd is reached with it.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

fn parse_capacity(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(format!(
            "'{s}' is not a capacity: give a positive number of CPUs"
        )),
    }
}

fn parse_memory(s: &str) -> Result<ByteSize, String> {
    match ByteSize::parse(s) {
        Ok(b) if b.bytes() > 0 => Ok(b),
        Ok(_) => Err("give a memory size above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match units::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("give a duration above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(args: &AgentArgs) -> anyhow::Result<i32> {
    // Absolute: the VM processes read it from their own working directory.
    let secret_file = args
        .secret_file
        .as_deref()
        .map(|p| {
            std::fs::canonicalize(p)
                .with_context(|| format!("cannot find the secret file {}", p.display()))
        })
        .transpose()?;
    let tls_dir = args
        .tls_dir
        .as_deref()
        .map(|d| {
            // Checked now for a clear error; absolute for the VM processes.
            tls::Credentials::load(d)?;
            std::fs::canonicalize(d).with_context(|| format!("cannot find {}", d.display()))
        })
        .transpose()?;
    let (_server, store) = if args.etcd.is_empty() {
        let socket = args
            .store_socket
            .clone()
            .unwrap_or_else(|| args.state_dir.join("store.sock"));
        std::fs::create_dir_all(&args.state_dir)
            .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
        agent::agent::embedded_store(&socket)
    } else {
        let mut etcd = store::EtcdConfig::new(args.etcd.clone());
        if let Some(d) = &tls_dir {
            etcd = etcd.with_tls(crate::pki::etcd_files(d));
        }
        (None, store::StoreConfig::Etcd(etcd))
    };
    let config = agent::AgentConfig {
        host: args.host.clone(),
        state_dir: args.state_dir.clone(),
        capacity_cpus: args.capacity,
        memory_bytes: args.memory.map(|m| m.bytes()),
        interval: args.interval,
        metrics: args.metrics,
        store,
        lease_ttl: args.lease_ttl,
        ferry: std::env::current_exe().context("cannot find the ferry executable")?,
        vms: args.vm.clone(),
        secret_file,
        tls_dir,
        migration_ip: args.migration_ip,
    };
    let agent = agent::Agent::start(config)?;
    if let Some(addr) = agent.metrics_addr() {
        let scheme = if agent.metrics_tls() { "https" } else { "http" };
        tracing::info!(host = %args.host, "metrics on {scheme}://{addr}/metrics");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    agent.run(&stop);
    tracing::info!(host = %args.host, "agent stopped; its VMs keep running");
    Ok(crate::exit::OK)
}
