//! The agent's loop: adopt or start the host's VMs, keep them in the host
//! cgroup, and each interval measure, publish to the store (under a lease)
//! and update the metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hostmon::{CpuHierarchy, HostCgroup};
use store::{LeaseKeeper, Store, StoreConfig};

use crate::config::AgentConfig;
use crate::execute::OrderMemory;
use crate::metrics::{Metrics, MetricsServer};
use crate::power::{self, PowerOrder, power_key};
use crate::report::{HostReport, host_key};
use crate::sample::Sampler;
use crate::vms::{self, VmProcess};

/// How often a sleeping loop checks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// One host's agent.
pub struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) cgroup: HostCgroup,
    pub(crate) vms: Mutex<Vec<VmProcess>>,
    sampler: Mutex<Sampler>,
    pub(crate) store: Store,
    pub(crate) orders: Mutex<OrderMemory>,
    keeper: Mutex<Option<LeaseKeeper>>,
    pub(crate) metrics: Arc<Metrics>,
    metrics_server: Option<MetricsServer>,
    /// Switched off by the manager (crate::power).
    pub(crate) switched_off: AtomicBool,
    /// The last thing said about the power order, not said again.
    power_said: Mutex<String>,
}

impl Agent {
    /// Creates (or takes over) the host cgroup, adopts the VMs whose sockets
    /// answer in the state directory, starts the configured VMs not among
    /// them, and serves the metrics.
    pub fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("cannot create {}", config.state_dir.display()))?;
        let memory_bytes = match config.memory_bytes {
            Some(m) => m,
            None => hostmon::mem_total().context("cannot read the machine's memory")?,
        };
        let cgroup = CpuHierarchy::detect()?
            .create(&config.host, config.capacity_cpus)
            .with_context(|| format!("cannot set up the cgroup of host {}", config.host))?;
        let mut owned = vms::adopt(&config.state_dir);
        for spec in &config.vms {
            if !owned.iter().any(|v| v.name == spec.name) {
                owned.push(vms::start(&config.ferry, &config.state_dir, spec)?);
            }
        }
        for vm in &owned {
            cgroup
                .add_process(vm.pid)
                .with_context(|| format!("cannot put VM {} in the host cgroup", vm.name))?;
        }
        let store = Store::connect(&config.store)?;
        let metrics = Arc::new(Metrics::new(&config.host)?);
        let creds = config
            .tls_dir
            .as_deref()
            .map(tls::Credentials::load)
            .transpose()?;
        let metrics_server = config
            .metrics
            .map(|addr| match &creds {
                Some(c) => MetricsServer::start_tls(addr, metrics.clone(), c.clone()),
                None => MetricsServer::start(addr, metrics.clone()),
            })
            .transpose()?;
        tracing::info!(
            host = %config.host,
            capacity_cpus = config.capacity_cpus,
            memory_bytes,
            vms = owned.len(),
            cgroup = %cgroup.path().display(),
            "agent started"
        );
        Ok(Agent {
            sampler: Mutex::new(Sampler::new(
                &config.host,
                config.capacity_cpus,
                memory_bytes,
            )),
            config,
            cgroup,
            vms: Mutex::new(owned),
            store,
            orders: Mutex::new(OrderMemory::default()),
            keeper: Mutex::new(None),
            metrics,
            metrics_server,
            switched_off: AtomicBool::new(false),
            power_said: Mutex::new(String::new()),
        })
    }

    /// Whether `/metrics` is served over mutual TLS.
    pub fn metrics_tls(&self) -> bool {
        self.metrics_server
            .as_ref()
            .is_some_and(MetricsServer::is_tls)
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::addr)
    }

    /// The VMs this agent owns.
    pub fn vms(&self) -> Vec<VmProcess> {
        self.vms.lock().unwrap().clone()
    }

    /// The Prometheus text of the latest figures.
    pub fn metrics_text(&self) -> String {
        self.metrics.text()
    }

    /// Measures, publishes and updates the metrics once, then takes this
    /// host's migration orders a step further. VMs whose process has ended
    /// are forgotten.
    pub fn tick(&self) -> anyhow::Result<HostReport> {
        let vms = self.vms();
        let mut report = self.sampler.lock().unwrap().sample(&self.cgroup, &vms)?;
        report.switched_off = self.obey_power(report.vms.len());
        self.vms.lock().unwrap().retain(|vm| {
            let alive = report.vms.iter().any(|r| r.name == vm.name)
                || std::path::Path::new(&format!("/proc/{}", vm.pid)).exists();
            if !alive {
                tracing::info!(vm = %vm.name, pid = vm.pid, "VM process ended; forgotten");
            }
            alive
        });
        self.metrics.update(&report);
        let published = self.publish(&report);
        if let Err(e) = &published {
            tracing::warn!(host = %self.config.host, "host report not published: {e:#}");
        }
        self.metrics.published(published.is_ok());
        if let Err(e) = self.run_orders() {
            tracing::warn!(host = %self.config.host, "cannot read the migration orders: {e:#}");
        }
        Ok(report)
    }

    /// Reads this host's power order and obeys it: off only when asked and
    /// holding no VM. A store error or an unreadable order keeps the state.
    fn obey_power(&self, vms: usize) -> bool {
        let was = self.switched_off.load(Ordering::SeqCst);
        let asked = match self.store.get(&power_key(&self.config.host)) {
            Ok(None) => None,
            Ok(Some(kv)) => match serde_json::from_slice::<PowerOrder>(&kv.value) {
                Ok(o) => Some(o.power),
                Err(e) => {
                    self.say_power(format!("power order ignored: {e}"));
                    return was;
                }
            },
            Err(e) => {
                self.say_power(format!("cannot read the power order: {e:#}"));
                return was;
            }
        };
        let off = power::obey(asked, vms);
        if off != was {
            self.say_power(if off { "switched off" } else { "switched on" }.into());
        } else if asked == Some(power::Power::Off) && !off {
            self.say_power(format!(
                "asked to switch off but holds {vms} VM(s): stays on"
            ));
        }
        self.switched_off.store(off, Ordering::SeqCst);
        off
    }

    /// Logs a line about power once, until something else is said.
    fn say_power(&self, line: String) {
        let mut said = self.power_said.lock().unwrap();
        if *said != line {
            tracing::info!(host = %self.config.host, "{line}");
            *said = line;
        }
    }

    /// Puts `report` under the agent's lease, granting a new lease when
    /// there is none or it was lost.
    fn publish(&self, report: &HostReport) -> anyhow::Result<()> {
        let mut keeper = self.keeper.lock().unwrap();
        if !keeper.as_ref().is_some_and(LeaseKeeper::is_alive) {
            let lease = self.store.grant_lease(self.config.lease_ttl)?;
            *keeper = Some(LeaseKeeper::start(self.store.clone(), lease)?);
        }
        let lease = keeper.as_ref().map(|k| k.lease().id);
        let value = serde_json::to_vec(report)?;
        self.store
            .put(&host_key(&self.config.host), &value, lease)?;
        Ok(())
    }

    /// Ticks every interval until `stop` is set; a failed measurement is
    /// logged and the loop goes on.
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            let next = Instant::now() + self.config.interval;
            if let Err(e) = self.tick() {
                tracing::warn!(host = %self.config.host, "cannot measure the host: {e:#}");
            }
            while !stop.load(Ordering::SeqCst) && Instant::now() < next {
                std::thread::sleep(STOP_POLL.min(next.saturating_duration_since(Instant::now())));
            }
        }
    }
}

/// The store at `socket`: served by this process if nobody serves it yet
/// (then it lives as long as the returned server), else reached as a client.
pub fn embedded_store(socket: &std::path::Path) -> (Option<store::EmbeddedServer>, StoreConfig) {
    match store::EmbeddedServer::start(socket) {
        Ok(server) => {
            tracing::info!(socket = %socket.display(), "serving the embedded store");
            let config = server.config();
            (Some(server), config)
        }
        Err(e) => {
            tracing::info!(socket = %socket.display(), "using the embedded store served there ({e})");
            (
                None,
                StoreConfig::Embedded {
                    socket: socket.to_path_buf(),
                    deadline: store::DEFAULT_DEADLINE,
                },
            )
        }
    }
}
