//! Carrying out the manager's migration orders (docs/CLUSTER.md,
//! "Migration orders"). Each interval the agent reads every order and acts
//! on those naming its host: as destination it starts a `ferry receive`
//! process for the VM and says where it listens; as source, once the
//! destination listens, it asks its VM's process to migrate there, reports
//! the progress, and the outcome when the job ends. Both sides derive what
//! to do from the store and the VM processes, so a restarted agent picks
//! its orders up where they were.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::time::Duration;

use api::routes;
use api::types::{MigrateRequest, vm_state};
use migrate::VmLocation;

use crate::agent::Agent;
use crate::order::{Order, OrderView, Side, SideReport, Stage, parse_all, side_key};
use crate::vms::{self, Receiver, VmProcess};

/// How long a receiver waits for its source to authenticate.
const RECEIVER_WAIT: Duration = Duration::from_secs(120);
/// Largest guest memory a receiver accepts (as `ferry receive`'s default).
const RECEIVER_MAX_MEMORY: &str = "16G";

/// What the agent remembers between intervals about orders: the keys it
/// already said were unreadable (said once, not every interval), and
/// final reports the store did not take yet (written again before
/// anything else is done for their order).
#[derive(Default)]
pub struct OrderMemory {
    reported_bad: HashSet<String>,
    unsent: HashMap<String, (Side, SideReport)>,
}

impl Agent {
    /// Reads the orders and takes each of this host's one step further.
    pub(crate) fn run_orders(&self) -> anyhow::Result<()> {
        let listing = self.store.list(crate::order::ORDERS_PREFIX)?;
        let (views, bad) = parse_all(&listing.kvs);
        {
            let mut memory = self.orders.lock().unwrap();
            for line in bad {
                if memory.reported_bad.insert(line.clone()) {
                    tracing::warn!(host = %self.config.host, "order ignored: {line}");
                }
            }
        }
        let unsent: Vec<(String, (Side, SideReport))> =
            self.orders.lock().unwrap().unsent.drain().collect();
        let mut retried = HashSet::new();
        for (id, (side, report)) in unsent {
            if let Some(order) = views.get(&id).and_then(|v| v.order.as_ref()) {
                self.report_side(order, side, &report);
                retried.insert(id);
            }
        }
        for (id, view) in &views {
            let Some(order) = &view.order else { continue };
            if retried.contains(id) {
                continue;
            }
            let host = &self.config.host;
            let mine = if &order.to == host {
                &view.destination
            } else {
                &view.source
            };
            // The manager gave up on it: a side not begun never begins.
            if view.verdict.is_some() && mine.is_none() {
                continue;
            }
            let step = if &order.to == host {
                self.destination_step(order, view)
            } else if &order.from == host {
                self.source_step(order, view)
            } else {
                None
            };
            if let Some((side, report)) = step {
                if report.stage.is_final() {
                    self.metrics.order_ended(side, &report);
                }
                self.report_side(order, side, &report);
            }
        }
        Ok(())
    }

    fn report_side(&self, order: &Order, side: Side, report: &SideReport) {
        if report.stage.is_final() {
            let how = report.error.as_deref().unwrap_or("");
            tracing::info!(order = %order.id, vm = %order.vm, side = side.name(), stage = ?report.stage, "order {}: {how}", order.id);
        }
        let put = serde_json::to_vec(report)
            .map_err(anyhow::Error::from)
            .and_then(|v| Ok(self.store.put(&side_key(&order.id, side), &v, None)?));
        if let Err(e) = put {
            tracing::warn!(order = %order.id, "cannot report on the order: {e:#}");
            if report.stage.is_final() {
                // What happened cannot be seen again: keep it until sent.
                let mut memory = self.orders.lock().unwrap();
                memory
                    .unsent
                    .insert(order.id.clone(), (side, report.clone()));
            }
        }
    }

    fn owned(&self, name: &str) -> Option<VmProcess> {
        self.vms().into_iter().find(|v| v.name == name)
    }

    /// The destination's next report on `order`, if it has something new.
    fn destination_step(&self, order: &Order, view: &OrderView) -> Option<(Side, SideReport)> {
        use Side::Destination as D;
        let host = &self.config.host;
        let Some(mine) = &view.destination else {
            if let Some(s) = view.source.as_ref().filter(|s| s.stage.is_final()) {
                // The source gave up before this side began: nothing to receive.
                let why = s.error.as_deref().unwrap_or("no reason given");
                return Some((
                    D,
                    SideReport::failed(host, format!("the source failed: {why}")),
                ));
            }
            if self.switched_off.load(std::sync::atomic::Ordering::SeqCst) {
                return Some((
                    D,
                    SideReport::failed(host, format!("host {host} is switched off")),
                ));
            }
            return Some((D, self.start_receiver(order)));
        };
        if mine.stage != Stage::Listening {
            return None;
        }
        let gone = || {
            SideReport::failed(
                host,
                format!(
                    "the receiver ended before the VM arrived (see vms/{}.log)",
                    order.vm
                ),
            )
        };
        let Some(vm) = self.owned(&order.vm) else {
            return Some((D, gone()));
        };
        let Some(status) = vm.status() else {
            return (!alive(vm.pid)).then(|| (D, gone()));
        };
        match status.state.as_str() {
            vm_state::INCOMING => match &view.source {
                Some(s) if s.stage == Stage::Failed => {
                    // Nothing arrived: stopping the receiver loses nothing.
                    let _ = vm.put(routes::VM_SHUTDOWN, None);
                    let why = s.error.as_deref().unwrap_or("no reason given");
                    Some((
                        D,
                        SideReport::failed(host, format!("the source failed: {why}")),
                    ))
                }
                _ => None,
            },
            vm_state::EXITED => Some((D, gone())),
            _ => Some((D, SideReport::new(host, Stage::Received))),
        }
    }

    /// Starts the receiver of `order`'s VM; Listening, or why not.
    fn start_receiver(&self, order: &Order) -> SideReport {
        let host = &self.config.host;
        if let Some(vm) = self.owned(&order.vm) {
            return SideReport::failed(
                host,
                format!("a VM {} already runs here (pid {})", vm.name, vm.pid),
            );
        }
        let Some(secret_file) = &self.config.secret_file else {
            return SideReport::failed(host, "this agent has no migration secret (--secret-file)");
        };
        let started = free_addr(self.config.migration_ip).and_then(|addr| {
            let receiver = Receiver {
                name: &order.vm,
                listen: &addr,
                secret_file,
                tls_dir: self.config.tls_dir.as_deref(),
                max_memory: RECEIVER_MAX_MEMORY,
                accept_timeout: RECEIVER_WAIT,
            };
            let vm = vms::start_receiver(&self.config.ferry, &self.config.state_dir, &receiver)?;
            Ok((addr, vm))
        });
        match started {
            Ok((addr, vm)) => {
                if let Err(e) = self.cgroup.add_process(vm.pid) {
                    tracing::warn!(vm = %vm.name, "receiver not in the host cgroup: {e}");
                }
                self.vms.lock().unwrap().push(vm);
                SideReport {
                    addr: Some(addr),
                    ..SideReport::new(host, Stage::Listening)
                }
            }
            Err(e) => SideReport::failed(host, format!("cannot start a receiver: {e:#}")),
        }
    }

    /// The source's next report on `order`, if it has something new.
    fn source_step(&self, order: &Order, view: &OrderView) -> Option<(Side, SideReport)> {
        use Side::Source as S;
        let host = &self.config.host;
        let migrating = match &view.source {
            None => false,
            Some(r) if r.stage == Stage::Migrating => true,
            Some(_) => return None,
        };
        let Some(vm) = self.owned(&order.vm) else {
            let why = format!("no VM named {} on host {host}", order.vm);
            return Some((S, SideReport::failed(host, why)));
        };
        if migrating {
            return self.follow(order, &vm).map(|r| (S, r));
        }
        let dest = view.destination.as_ref()?;
        match (dest.stage, &dest.addr) {
            (Stage::Listening, Some(addr)) => Some((S, self.start_migration(order, &vm, addr))),
            (Stage::Failed, _) => {
                let why = dest.error.as_deref().unwrap_or("no reason given");
                Some((
                    S,
                    SideReport::failed(host, format!("the destination failed: {why}")),
                ))
            }
            _ => None,
        }
    }

    /// Asks `vm`'s process to migrate to `addr`; Migrating, or why not.
    fn start_migration(&self, order: &Order, vm: &VmProcess, addr: &str) -> SideReport {
        let host = &self.config.host;
        let Some(secret_file) = &self.config.secret_file else {
            return SideReport::failed(host, "this agent has no migration secret (--secret-file)");
        };
        let m = &order.migration;
        let req = MigrateRequest {
            to: addr.to_string(),
            strategy: m.strategy.clone(),
            max_bandwidth_bps: m.max_bandwidth_bps,
            max_downtime_ms: m.max_downtime_ms,
            timeout_ms: m.timeout_ms,
            secret_file: Some(secret_file.display().to_string()),
            tls_dir: self
                .config
                .tls_dir
                .as_ref()
                .map(|d| d.display().to_string()),
            // The destination must prove it is the host the order names.
            tls_name: self.config.tls_dir.as_ref().map(|_| order.to.clone()),
            ..MigrateRequest::default()
        };
        let body = match serde_json::to_value(&req) {
            Ok(b) => b,
            Err(e) => return SideReport::failed(host, e.to_string()),
        };
        match vm.put(routes::VM_MIGRATE, Some(&body)) {
            Ok(()) => {
                tracing::info!(order = %order.id, vm = %vm.name, to = %order.to, addr, "migration started");
                SideReport::new(host, Stage::Migrating)
            }
            Err(e) => SideReport::failed(host, format!("the VM refused the migration: {e:#}")),
        }
    }

    /// Progress of the running migration, or its outcome once it ended.
    fn follow(&self, order: &Order, vm: &VmProcess) -> Option<SideReport> {
        let host = &self.config.host;
        let Some(status) = vm.last_migration() else {
            // An answer missed now and then is not an end; a dead process is.
            return (!alive(vm.pid))
                .then(|| SideReport::failed(host, "the VM's process ended during the migration"));
        };
        let p = &status.progress;
        let mut report = SideReport {
            bytes_sent: p.bytes_sent,
            remaining_bytes: p.remaining_bytes,
            ..SideReport::new(host, Stage::Migrating)
        };
        if !status.done {
            return Some(report);
        }
        let Some(r) = status.report else {
            report.stage = Stage::Failed;
            report.error = Some(status.error.unwrap_or_else(|| "no report".into()));
            return Some(report);
        };
        report.bytes_sent = r.bytes_sent;
        report.remaining_bytes = 0;
        report.total_time_ms = Some(r.total_time_ms);
        report.downtime_ms = r.downtime_ms;
        report.stage = match r.vm_location {
            VmLocation::Destination => Stage::Completed,
            VmLocation::Source => Stage::Failed,
            VmLocation::Unknown => Stage::InDoubt,
            VmLocation::Nowhere => Stage::Interrupted,
        };
        if report.stage != Stage::Completed {
            report.error = Some(status.error.unwrap_or_else(|| r.outcome.to_string()));
            return Some(report);
        }
        // The VM runs on the destination: its old process here may go.
        if let Err(e) = vm.put(routes::VM_SHUTDOWN, None) {
            tracing::warn!(vm = %vm.name, "the migrated VM's old process did not take the shutdown: {e:#}");
        }
        self.vms.lock().unwrap().retain(|v| v.pid != vm.pid);
        tracing::info!(order = %order.id, vm = %vm.name, to = %order.to, "VM migrated away");
        Some(report)
    }
}

/// Whether process `pid` still exists.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A free TCP address on `ip` for a receiver (the port is free when asked;
/// a receiver that loses it to someone else fails to start, and says so).
fn free_addr(ip: std::net::IpAddr) -> anyhow::Result<String> {
    let l = TcpListener::bind((ip, 0))
        .map_err(|e| anyhow::anyhow!("cannot find a free port on {ip}: {e}"))?;
    Ok(l.local_addr()?.to_string())
}
