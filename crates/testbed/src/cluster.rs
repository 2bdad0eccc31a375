//! A running cluster on one machine: [`Cluster::up`] checks and makes
//! everything, [`Cluster::run`] samples it each interval until told to
//! stop, [`Cluster::down`] takes it all down and writes the results.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{ClusterConfig, host_name};
use crate::net::{self, Network};
use crate::observe::{DecisionTail, Observed, load_ratio, pattern_of};
use crate::procs::{Layout, Procs, check_cgroups_free};
use crate::timeline::{HostInfo, Timeline};

/// How often the run loop looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A cluster on one machine. Dropping it stops everything it started
/// (without writing the results: see [`Cluster::down`]).
pub struct Cluster {
    // Dropped in this order: processes, then the network, then the store.
    procs: Procs,
    net: Option<Network>,
    _server: store::EmbeddedServer,
    store: store::Store,
    config: ClusterConfig,
    layout: Layout,
    timeline: Timeline,
    tail: DecisionTail,
    started: Instant,
    /// Processes already said to have ended.
    ended: Vec<String>,
}

/// What [`Cluster::down`] leaves.
#[derive(Debug)]
pub struct Summary {
    pub json: PathBuf,
    pub svg: PathBuf,
    /// Orders issued, and how many completed.
    pub orders: usize,
    pub completed: usize,
    /// What could not be cleaned up, one line each (empty when all went).
    pub left_behind: Vec<String>,
}

impl Cluster {
    /// Checks `config` and this machine, then makes the directory, the
    /// store, the network and the processes. Nothing is left behind when
    /// it fails.
    pub fn up(config: ClusterConfig) -> anyhow::Result<Cluster> {
        config.validate().map_err(anyhow::Error::msg)?;
        if config.netns {
            net::check_tools()?;
        } else {
            net::check_root()?;
        }
        if !std::path::Path::new("/dev/kvm").exists() {
            bail!("no /dev/kvm: the cluster's VMs need KVM");
        }
        let names: Vec<String> = (0..config.hosts).map(host_name).collect();
        check_cgroups_free(&names)?;
        let layout = make_dir(&config.dir)?;
        let server = store::EmbeddedServer::start(layout.store_socket()).with_context(|| {
            format!(
                "cannot serve the store on {} (is a cluster running in {}?)",
                layout.store_socket().display(),
                layout.dir.display()
            )
        })?;
        let store = store::Store::connect(&server.config())?;
        let net = if config.netns {
            Some(Network::create(
                std::process::id(),
                config.hosts,
                config.link,
            )?)
        } else {
            None
        };
        let mut cluster = Cluster {
            procs: Procs::default(),
            net,
            _server: server,
            store,
            timeline: Timeline::default(),
            tail: DecisionTail::new(&layout.decisions()),
            started: Instant::now(),
            ended: Vec::new(),
            config,
            layout,
        };
        cluster.start_processes()?;
        Ok(cluster)
    }

    fn start_processes(&mut self) -> anyhow::Result<()> {
        let config = &self.config;
        for i in 0..config.hosts {
            let host = self.net.as_ref().map(|n| &n.hosts[i]);
            self.timeline.hosts.push(HostInfo {
                name: host_name(i),
                ip: host.map_or("127.0.0.1".to_string(), |h| h.ip.to_string()),
                capacity_cpus: config.capacity,
            });
            self.procs.start_agent(config, &self.layout, i, host)?;
        }
        self.procs.start_manager(config, &self.layout)?;
        self.timeline.started_unix_ms = agent::unix_ms();
        self.timeline.link_bits_per_sec = config.link.bits_per_sec();
        self.timeline.interval_ms = config.interval.as_millis() as u64;
        self.started = Instant::now();
        Ok(())
    }

    /// The cluster's directory (absolute).
    pub fn dir(&self) -> &std::path::Path {
        &self.layout.dir
    }

    /// The network, when hosts have namespaces.
    pub fn network(&self) -> Option<&Network> {
        self.net.as_ref()
    }

    /// Takes one sample and returns the status line for it: each host's
    /// load over capacity and VMs, the pattern, migrations running and
    /// ended; a process that ended on its own is said once.
    pub fn sample(&mut self) -> String {
        let t = self.started.elapsed().as_secs_f64();
        self.tail.poll();
        for what in self.procs.ended() {
            if !self.ended.contains(&what) {
                tracing::warn!("{what}; see {}", self.layout.logs().display());
                self.ended.push(what);
            }
        }
        let seen = match Observed::read(&self.store) {
            Ok(seen) => seen,
            Err(e) => return format!("[{t:>4.0}s] cannot read the store: {e}"),
        };
        self.timeline
            .record(t, &seen, self.tail.last_interval.as_ref());
        let hosts: Vec<String> = self
            .timeline
            .hosts
            .iter()
            .map(|h| match seen.hosts.get(&h.name) {
                None => format!("{} -", h.name),
                Some(r) => {
                    let load = load_ratio(r).map_or("-".into(), |l| format!("{:.0}%", l * 100.0));
                    let off = if r.switched_off { " off" } else { "" };
                    format!("{} {load} {}vm{off}", h.name, r.vms.len())
                }
            })
            .collect();
        let running = seen.running();
        format!(
            "[{t:>4.0}s] {} | {} | migrations {running} running, {} ended",
            pattern_of(self.tail.last_interval.as_ref()),
            hosts.join(" | "),
            self.timeline.orders.len() - running.min(self.timeline.orders.len())
        )
    }

    /// Samples every interval, handing each status line to `progress`,
    /// until the configured duration has passed or `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool, mut progress: impl FnMut(&str)) {
        let end = self.started + self.config.duration;
        let mut next = Instant::now() + self.config.interval;
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            if Instant::now() >= next {
                next += self.config.interval;
                progress(&self.sample());
            }
            std::thread::sleep(STOP_POLL);
        }
    }

    /// Stops the manager, the agents and the VMs, removes the host
    /// cgroups and the network, and writes `cluster.json` and
    /// `timeline.svg` into the cluster's directory.
    pub fn down(mut self) -> anyhow::Result<Summary> {
        self.sample();
        let mut left_behind = self.procs.stop();
        if let Some(mut net) = self.net.take() {
            left_behind.extend(net.remove());
        }
        // Orders the agents finished while stopping.
        if let Ok(seen) = Observed::read(&self.store) {
            self.timeline.merge_orders(&seen);
        }
        let json = self.layout.dir.join("cluster.json");
        let text = serde_json::to_string_pretty(&self.timeline)?;
        std::fs::write(&json, text + "\n")
            .with_context(|| format!("cannot write {}", json.display()))?;
        let svg = self.layout.dir.join("timeline.svg");
        std::fs::write(&svg, self.timeline.svg()?)
            .with_context(|| format!("cannot write {}", svg.display()))?;
        let orders = &self.timeline.orders;
        Ok(Summary {
            json,
            svg,
            orders: orders.len(),
            completed: orders
                .iter()
                .filter(|o| o.outcome.as_deref() == Some("completed"))
                .count(),
            left_behind,
        })
    }
}

/// Makes the cluster's directory (absolute), its logs and host
/// directories, and a fresh migration secret only root reads.
fn make_dir(dir: &std::path::Path) -> anyhow::Result<Layout> {
    for d in [dir.to_path_buf(), dir.join("logs"), dir.join("hosts")] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let layout = Layout {
        dir: std::fs::canonicalize(dir)?,
    };
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("cannot read /dev/urandom for the migration secret")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = layout.secret();
    std::fs::write(&secret, hex + "\n")
        .and_then(|()| std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)))
        .with_context(|| format!("cannot write {}", secret.display()))?;
    Ok(layout)
}
