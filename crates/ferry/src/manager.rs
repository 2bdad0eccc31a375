//! `ferry manager`: flags into `manager::ManagerConfig`, then the
//! library's loop until SIGTERM/SIGINT (running migrations go on).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use cluster::{DetectorKind, MigrationLimits, PatternKind, Selector};
use units::{Bandwidth, ByteSize};

/// Arguments of `ferry manager`.
#[derive(Debug, clap::Args)]
pub struct ManagerArgs {
    /// This manager's name in the election and the logs. Default: manager-PID.
    #[arg(long, value_name = "NAME", value_parser = node::check_name)]
    pub name: Option<String>,
    /// etcd endpoint (repeatable). Default: the embedded store.
    #[arg(long, value_name = "URL")]
    pub etcd: Vec<String>,
    /// Folder with the cluster CA and this host's certificate and key
    /// (`ferry pki init`): etcd is reached over mutual TLS with them.
    #[arg(long, value_name = "DIR", requires = "etcd")]
    pub tls_dir: Option<PathBuf>,
    /// The embedded store's socket (an agent's STATE_DIR/store.sock);
    /// served by this manager if nobody serves it yet.
    #[arg(
        long,
        value_name = "SOCKET",
        conflicts_with = "etcd",
        required_unless_present = "etcd"
    )]
    pub store_socket: Option<PathBuf>,
    /// How often the pool is looked at and decided on, e.g. 5s.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = positive_duration)]
    pub interval: Duration,
    /// TTL of the leadership lease, e.g. 10s: a standby takes over at most
    /// this long after the leader died.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = positive_duration)]
    pub lease_ttl: Duration,
    /// Hotspot detector: thr, iqr, mad, lr, lrr or sp (docs/MANAGER.md).
    #[arg(long, default_value = "thr", value_name = "KIND")]
    pub detector: DetectorKind,
    /// The detector's threshold or safety factor. Default: the paper's.
    #[arg(long, value_name = "X")]
    pub detector_param: Option<f64>,
    /// VM selection: mmt, rs, mc, mu or vsr.
    #[arg(long, default_value = "mmt", value_name = "KIND")]
    pub selector: Selector,
    /// consolidate, balance or auto (chooses from the pool's load).
    #[arg(long, default_value = "auto", value_name = "KIND")]
    pub pattern: PatternKind,
    /// auto: consolidate below this forecast pool load...
    #[arg(long, default_value_t = 0.5, value_name = "LOAD")]
    pub consolidate_below: f64,
    /// ...balance from this one...
    #[arg(long, default_value_t = 0.8, value_name = "LOAD")]
    pub balance_above: f64,
    /// ...for this many intervals in a row.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub dwell: u32,
    /// Most concurrent migrations touching one host.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub per_host: u32,
    /// Most concurrent migrations in the cluster.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub per_cluster: u32,
    /// A VM is not ordered to move again within this long, whatever the
    /// last order's outcome, e.g. 5m.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = units::parse_duration)]
    pub cooldown: Duration,
    /// Orders that completed, failed or were abandoned are removed from the
    /// store this long after they were issued, e.g. 1h (at least --cooldown,
    /// which is read from them).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = units::parse_duration)]
    pub order_retention: Duration,
    /// Append every decision and its reason to FILE as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub decision_log: Option<PathBuf>,
    /// The migrations' strategy (docs/MIGRATION.md). Default: the engine's.
    #[arg(long, value_name = "NAME")]
    pub strategy: Option<String>,
    /// The migrations' bandwidth cap while the guest runs, e.g. 500Mbit.
    #[arg(long, value_name = "RATE", value_parser = Bandwidth::parse)]
    pub max_bandwidth: Option<Bandwidth>,
    /// Memory of a host whose agent does not report it, e.g. 64G.
    #[arg(long, default_value = "64G", value_name = "SIZE", value_parser = ByteSize::parse)]
    pub host_memory: ByteSize,
    /// The links between hosts, for migration-time estimates, e.g. 1Gbit.
    #[arg(long, default_value = "1Gbit", value_name = "RATE", value_parser = Bandwidth::parse)]
    pub link: Bandwidth,
    /// Seed of the engine's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match units::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("give a duration above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(args: &ManagerArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.order_retention >= args.cooldown,
        "--order-retention {} is shorter than --cooldown {}: a VM's last order must outlive its cooldown",
        units::format_duration(args.order_retention),
        units::format_duration(args.cooldown)
    );
    let (_server, store) = match &args.store_socket {
        Some(socket) => agent::agent::embedded_store(socket),
        None => {
            let mut etcd = store::EtcdConfig::new(args.etcd.clone());
            if let Some(d) = &args.tls_dir {
                etcd = etcd.with_tls(crate::pki::etcd_files(d));
            }
            (None, store::StoreConfig::Etcd(etcd))
        }
    };
    let pattern = args
        .pattern
        .pattern(args.consolidate_below, args.balance_above, args.dwell);
    let policy = cluster::Config {
        detector: args.detector.detector(
            args.detector_param
                .unwrap_or(args.detector.default_parameter()),
            manager::config::FALLBACK_THRESHOLD,
            manager::config::SANDPIPER_WINDOW.0,
            manager::config::SANDPIPER_WINDOW.1,
        ),
        selector: args.selector,
        pattern,
        coldspot_below: None,
        limits: MigrationLimits {
            per_host: Some(args.per_host),
            per_cluster: Some(args.per_cluster),
            vm_cooldown_s: args.cooldown.as_secs_f64(),
            vm_cooldown_migrations: 0.0,
        },
        model: cluster::Model::Ferry,
        tie_tolerance_w: 0.0,
    };
    policy.validate().context("the policy")?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("manager-{}", std::process::id()));
    let config = manager::ManagerConfig {
        name: name.clone(),
        store,
        interval: args.interval,
        lease_ttl: args.lease_ttl,
        policy,
        seed: args.seed,
        decision_log: args.decision_log.clone(),
        order_retention: args.order_retention,
        migration: agent::OrderMigration {
            strategy: args.strategy.clone(),
            max_bandwidth_bps: args.max_bandwidth.map(|b| b.bits_per_sec()),
            ..agent::OrderMigration::default()
        },
        view: manager::ViewSettings {
            interval_s: args.interval.as_secs_f64(),
            host_ram_mb: args.host_memory.bytes() as f64 / (1024.0 * 1024.0),
            bandwidth_mbps: args.link.bits_per_sec() as f64 / 1e6,
        },
    };
    let mut live = manager::LiveManager::new(config)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    tracing::info!(manager = %name, "manager started; standing in the election");
    live.run(&stop);
    tracing::info!(manager = %name, "manager stopped");
    Ok(crate::exit::OK)
}
