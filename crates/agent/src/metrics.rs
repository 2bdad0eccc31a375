//! The agent's figures as Prometheus text on `GET /metrics`: one registry
//! set from each [`HostReport`], served by a small HTTP server thread.
//! Names follow Prometheus conventions: `ferry_` prefix, base units in the
//! name (`_seconds`, `_bytes`, `_cpus`), `_total` on counters.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, Opts, Registry,
    TextEncoder,
};

use crate::https::HttpsServer;
use crate::order::{Side, SideReport};
use crate::report::HostReport;

/// Every series the agent exports, labelled by `host` (and `vm`).
pub struct Metrics {
    registry: Registry,
    capacity: Gauge,
    host_cpu: Counter,
    host_load: Gauge,
    host_load_ratio: Gauge,
    throttled: Counter,
    vms: Gauge,
    migrations_running: Gauge,
    reports: Counter,
    store_errors: Counter,
    vm_cpu: CounterVec,
    vm_load: GaugeVec,
    vm_vcpus: GaugeVec,
    vm_memory: GaugeVec,
    vm_resident: GaugeVec,
    vm_guest_ops: CounterVec,
    vm_guest_pages: CounterVec,
    vm_dirty_rate: GaugeVec,
    orders: CounterVec,
    migration_bytes: Counter,
    migration_downtime: Histogram,
    /// The VMs of the last report, to drop the series of those gone.
    known: std::sync::Mutex<Vec<String>>,
}

impl Metrics {
    /// An empty registry for `host`.
    pub fn new(host: &str) -> anyhow::Result<Metrics> {
        let registry = Registry::new_custom(
            Some("ferry".into()),
            Some([("host".to_string(), host.to_string())].into()),
        )?;
        let gauge = |name: &str, help: &str| -> anyhow::Result<Gauge> {
            let g = Gauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> anyhow::Result<Counter> {
            let c = Counter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge_vm = |name: &str, help: &str| -> anyhow::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), &["vm"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter_vm = |name: &str, help: &str| -> anyhow::Result<CounterVec> {
            let c = CounterVec::new(Opts::new(name, help), &["vm"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Metrics {
            capacity: gauge(
                "host_capacity_cpus",
                "Declared capacity (the cgroup's CPU quota)",
            )?,
            host_cpu: counter(
                "host_cpu_seconds_total",
                "CPU time used by the host's cgroup",
            )?,
            host_load: gauge("host_load_cpus", "CPUs' worth used over the last interval")?,
            host_load_ratio: gauge(
                "host_load_ratio",
                "Load over the last interval divided by the capacity",
            )?,
            throttled: counter(
                "host_cpu_throttled_periods_total",
                "Quota periods in which the host's cgroup was throttled",
            )?,
            vms: gauge("host_vms", "VMs the agent owns")?,
            migrations_running: gauge(
                "host_migrations_running",
                "Migrations out of this host running",
            )?,
            reports: counter(
                "agent_reports_published_total",
                "Host reports written to the store",
            )?,
            store_errors: counter(
                "agent_store_errors_total",
                "Host reports the store did not take",
            )?,
            vm_cpu: counter_vm("vm_cpu_seconds_total", "CPU time of the VM's vCPU threads")?,
            vm_load: gauge_vm(
                "vm_load_cpus",
                "CPUs' worth the VM's vCPUs used over the last interval",
            )?,
            vm_vcpus: gauge_vm("vm_vcpus", "vCPUs of the VM")?,
            vm_memory: gauge_vm("vm_memory_bytes", "Guest RAM")?,
            vm_resident: gauge_vm("vm_resident_memory_bytes", "RAM the VM's process holds")?,
            vm_guest_ops: counter_vm(
                "vm_guest_ops_total",
                "Operations the guest counted (kvstore)",
            )?,
            vm_guest_pages: counter_vm(
                "vm_guest_pages_written_total",
                "Page writes the guest counted (dirtier)",
            )?,
            vm_dirty_rate: gauge_vm(
                "vm_dirty_rate_bytes_per_second",
                "Dirty rate the running migration measures",
            )?,
            orders: {
                let c = CounterVec::new(
                    Opts::new(
                        "agent_orders_total",
                        "Migration orders this agent ended, by its side and the outcome",
                    ),
                    &["side", "outcome"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            migration_bytes: counter(
                "agent_migration_bytes_sent_total",
                "Bytes sent by the migrations out of this host that ended",
            )?,
            migration_downtime: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "agent_migration_downtime_seconds",
                        "Downtime of the migrations out of this host that completed",
                    )
                    .buckets(vec![0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            known: Default::default(),
            registry,
        })
    }

    /// Sets every series from `report`; VMs no longer there lose theirs.
    pub fn update(&self, report: &HostReport) {
        self.capacity.set(report.capacity_cpus);
        advance(&self.host_cpu, report.cpu_seconds);
        advance(&self.throttled, report.throttled_periods as f64);
        if let Some(l) = report.load_cpus {
            self.host_load.set(l);
            self.host_load_ratio.set(l / report.capacity_cpus);
        }
        self.vms.set(report.vms.len() as f64);
        let migrating = report
            .vms
            .iter()
            .filter(|v| v.state == api::types::vm_state::MIGRATING)
            .count();
        self.migrations_running.set(migrating as f64);
        let mut known = self.known.lock().unwrap();
        for gone in known
            .iter()
            .filter(|n| !report.vms.iter().any(|v| &v.name == *n))
        {
            self.forget(gone);
        }
        *known = report.vms.iter().map(|v| v.name.clone()).collect();
        for vm in &report.vms {
            let l = [vm.name.as_str()];
            advance(&self.vm_cpu.with_label_values(&l), vm.cpu_seconds);
            if let Some(load) = vm.load_cpus {
                self.vm_load.with_label_values(&l).set(load);
            }
            self.vm_vcpus.with_label_values(&l).set(f64::from(vm.vcpus));
            self.vm_memory
                .with_label_values(&l)
                .set(vm.memory_bytes as f64);
            self.vm_resident
                .with_label_values(&l)
                .set(vm.resident_bytes as f64);
            if let Some(g) = &vm.guest {
                advance(&self.vm_guest_ops.with_label_values(&l), g.ops_total as f64);
                advance(
                    &self.vm_guest_pages.with_label_values(&l),
                    g.pages_written as f64,
                );
            }
            match vm.dirty_rate_bytes_per_second {
                Some(r) => self.vm_dirty_rate.with_label_values(&l).set(r as f64),
                None => {
                    let _ = self.vm_dirty_rate.remove_label_values(&l);
                }
            }
        }
    }

    fn forget(&self, vm: &str) {
        let l = [vm];
        let _ = self.vm_cpu.remove_label_values(&l);
        let _ = self.vm_load.remove_label_values(&l);
        let _ = self.vm_vcpus.remove_label_values(&l);
        let _ = self.vm_memory.remove_label_values(&l);
        let _ = self.vm_resident.remove_label_values(&l);
        let _ = self.vm_guest_ops.remove_label_values(&l);
        let _ = self.vm_guest_pages.remove_label_values(&l);
        let _ = self.vm_dirty_rate.remove_label_values(&l);
    }

    /// This agent's side of an order ended as `report` says.
    pub fn order_ended(&self, side: Side, report: &SideReport) {
        self.orders
            .with_label_values(&[side.name(), report.stage.name()])
            .inc();
        if side == Side::Source {
            self.migration_bytes.inc_by(report.bytes_sent as f64);
            if let Some(ms) = report.downtime_ms {
                self.migration_downtime.observe(ms / 1e3);
            }
        }
    }

    /// A report reached the store, or did not.
    pub fn published(&self, ok: bool) {
        if ok {
            self.reports.inc();
        } else {
            self.store_errors.inc();
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Moves a counter up to `value`, a total read elsewhere (a counter never
/// goes down; a smaller total, from a restarted source, is ignored).
fn advance(counter: &Counter, value: f64) {
    let by = value - counter.get();
    if by > 0.0 {
        counter.inc_by(by);
    }
}

/// Serves `GET /metrics` on `addr` from a thread until dropped: plain
/// HTTP, or HTTPS with mutual TLS when the host has certificates.
pub struct MetricsServer {
    server: Option<Arc<tiny_http::Server>>,
    https: Option<HttpsServer>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<MetricsServer> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .context("the metrics server has no IP address")?;
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let resp = if req.url() == "/metrics" {
                        let header = tiny_http::Header::from_bytes(
                            "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                        .expect("a valid header");
                        tiny_http::Response::from_string(metrics.text()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })?;
        Ok(MetricsServer {
            server: Some(server),
            https: None,
            addr,
            thread: Some(thread),
        })
    }

    /// Serves over mutual TLS: scrapers must show a certificate of the
    /// cluster CA.
    pub fn start_tls(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        creds: tls::Credentials,
    ) -> anyhow::Result<MetricsServer> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let https = HttpsServer::start(listener, creds, metrics)?;
        Ok(MetricsServer {
            server: None,
            addr: https.addr,
            https: Some(https),
            thread: None,
        })
    }

    /// Whether it serves HTTPS (mutual TLS).
    pub fn is_tls(&self) -> bool {
        self.https.is_some()
    }

    /// The address it listens on (the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.unblock();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
