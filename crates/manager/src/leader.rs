//! The manager's life: stand in the election; while leading (and only
//! while its lease surely lives), each interval read the orders and the
//! agents' reports, decide, and issue the moves as orders, every write
//! fenced by the leadership so that a deposed leader writes nothing.
//! With the store down it stops deciding, says so, and stands again when
//! the store is back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent::order::{ORDERS_PREFIX, order_key, parse_all};
use agent::{Order, OrderView};
use cluster::{Mode, Move, Plan, Reason};
use serde_json::json;
use store::{Compare, Election, Leadership, LeaseKeeper, Op, Store, Txn};

use crate::config::ManagerConfig;
use crate::log::DecisionLog;
use crate::view::{Monitor, Pool};

/// The election's name in the store.
pub const ELECTION: &str = "/ferry/manager/leader";
/// How often a sleeping loop checks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// A manager process: a candidate, and while elected the leader.
pub struct LiveManager {
    config: ManagerConfig,
    store: Store,
    election: Election,
    log: DecisionLog,
    monitor: Monitor,
    engine: cluster::Manager,
    /// Orders whose end was logged, and unreadable keys already said.
    logged: HashSet<String>,
    started: Instant,
}

impl LiveManager {
    pub fn new(config: ManagerConfig) -> anyhow::Result<LiveManager> {
        let engine = cluster::Manager::new(config.policy.clone(), config.seed)?;
        let store = Store::connect(&config.store)?;
        let election = Election::new(store.clone(), ELECTION)?;
        let log = DecisionLog::open(config.decision_log.as_deref())?;
        Ok(LiveManager {
            config,
            store,
            election,
            log,
            monitor: Monitor::default(),
            engine,
            logged: HashSet::new(),
            started: Instant::now(),
        })
    }

    /// Stands, leads when elected, until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut down = false;
        while !stop.load(Ordering::SeqCst) {
            match self.stand_and_lead(stop) {
                Ok(()) => down = false,
                Err(e) => {
                    if !down {
                        tracing::warn!(manager = %self.config.name, "the store is unavailable; not deciding until it is back: {e:#}");
                        self.log.write(
                            "store-unavailable",
                            json!({ "manager": self.config.name, "error": format!("{e:#}") }),
                        );
                    }
                    down = true;
                    sleep_unless(stop, Instant::now() + self.config.interval);
                }
            }
        }
    }

    fn stand_and_lead(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let lease = self.store.grant_lease(self.config.lease_ttl)?;
        let keeper = LeaseKeeper::start(self.store.clone(), lease)?;
        let me = self.config.name.clone();
        let leadership = loop {
            if stop.load(Ordering::SeqCst) {
                let _ = self.election.withdraw(lease.id);
                return Ok(());
            }
            anyhow::ensure!(keeper.is_alive(), "the candidacy's lease was lost");
            if let Some(l) =
                self.election
                    .campaign(lease.id, me.as_bytes(), self.config.interval)?
            {
                break l;
            }
        };
        self.log.write(
            "leader",
            json!({ "manager": me, "lease_ttl_ms": lease.ttl.as_millis() as u64 }),
        );
        self.take_over()?;
        while !stop.load(Ordering::SeqCst) {
            let next = Instant::now() + self.config.interval;
            if !acting(&keeper, self.config.interval) {
                self.log.write(
                    "leader-lost",
                    json!({ "manager": me, "why": "the lease may lapse before the interval ends" }),
                );
                return Ok(());
            }
            if !self.interval(&leadership)? {
                self.log.write("leader-lost", json!({ "manager": me, "why": "a fenced write was refused: another manager leads" }));
                return Ok(());
            }
            sleep_unless(stop, next);
        }
        let _ = leadership.resign(&self.store);
        let _ = keeper.revoke();
        Ok(())
    }

    /// On election: orders that ended before are not logged again.
    fn take_over(&mut self) -> anyhow::Result<()> {
        let (views, _) = parse_all(&self.store.list(ORDERS_PREFIX)?.kvs);
        for (id, v) in &views {
            if v.outcome().is_some() {
                self.logged.insert(id.clone());
            }
        }
        Ok(())
    }

    /// One interval; false when a fenced write says this manager no
    /// longer leads.
    fn interval(&mut self, leadership: &Leadership) -> anyhow::Result<bool> {
        let now_ms = agent::unix_ms();
        let (views, bad) = parse_all(&self.store.list(ORDERS_PREFIX)?.kvs);
        for line in bad {
            if self.logged.insert(line.clone()) {
                self.log.write("order-unreadable", json!({ "why": line }));
            }
        }
        self.log_ended(&views);
        let running: BTreeMap<String, OrderView> = views
            .iter()
            .filter(|(_, v)| v.order.is_some() && v.outcome().is_none())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let hosts = self.store.list(agent::report::HOSTS_PREFIX)?.kvs;
        let fenced = crate::orders::abandon_lost(
            &self.store,
            leadership,
            &mut self.log,
            &running,
            &hosts,
            now_ms,
        )? && crate::orders::remove_old(
            &self.store,
            leadership,
            &views,
            now_ms,
            self.config.order_retention,
        )?;
        if !fenced {
            return Ok(false);
        }
        let time_s = self.started.elapsed().as_secs_f64();
        let pool = self
            .monitor
            .build(&hosts, &running, &self.config.view, time_s, now_ms);
        if pool.view.hosts.is_empty() {
            self.log
                .write("interval", json!({ "hosts": 0, "skipped": pool.skipped }));
            return Ok(true);
        }
        let plan = match self.engine.decide(&pool.view) {
            Ok(p) => p,
            Err(e) => {
                self.log.write(
                    "no-decision",
                    json!({ "why": e.to_string(), "skipped": pool.skipped }),
                );
                return Ok(true);
            }
        };
        self.log_interval(&pool, &plan, running.len());
        if !crate::power::apply(&self.store, leadership, &mut self.log, &pool, &plan, now_ms)? {
            return Ok(false);
        }
        let cooldown_ms = (self.config.policy.limits.vm_cooldown_s * 1e3) as u64;
        let recent = recent_orders(&views, now_ms, cooldown_ms);
        for m in &plan.migrations {
            let vm = &pool.vms[m.vm];
            // Its destination may be gone from the view (a lost host), so
            // the engine may not see it in flight: one order at a time.
            if let Some(id) = running
                .values()
                .filter_map(|v| v.order.as_ref())
                .find(|o| &o.vm == vm)
                .map(|o| &o.id)
            {
                self.log.write(
                    "move-dropped",
                    json!({ "vm": vm, "why": format!("order {id} still runs") }),
                );
                continue;
            }
            if let Some(id) = recent.get(vm.as_str()) {
                self.log.write(
                    "move-dropped",
                    json!({ "vm": vm, "why": format!("in cooldown since order {id}") }),
                );
                continue;
            }
            if !self.issue(leadership, &pool, &plan, m, now_ms)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes the order for move `m`, fenced; false if no longer leader.
    fn issue(
        &mut self,
        leadership: &Leadership,
        pool: &Pool,
        plan: &Plan,
        m: &Move,
        now_ms: u64,
    ) -> anyhow::Result<bool> {
        let vm = &pool.vms[m.vm];
        let order = Order {
            id: format!("{now_ms}-{vm}"),
            vm: vm.clone(),
            from: pool.hosts[m.from].clone(),
            to: pool.hosts[m.to].clone(),
            reason: reason_name(m.reason).into(),
            issued_unix_ms: now_ms,
            migration: self.config.migration.clone(),
        };
        let key = order_key(&order.id);
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(
            &key,
            serde_json::to_vec(&order)?,
            None,
        ));
        if !leadership.txn(&self.store, txn)?.succeeded {
            return Ok(false);
        }
        let why = why(pool, plan, m, &self.config.policy);
        self.log.write(
            "order",
            json!({ "order": order.id, "vm": vm, "from": order.from, "to": order.to, "reason": order.reason, "why": why }),
        );
        Ok(true)
    }

    /// Logs each order that ended since the last interval, once.
    fn log_ended(&mut self, views: &BTreeMap<String, OrderView>) {
        for (id, v) in views {
            let (Some(order), Some(outcome)) = (&v.order, v.outcome()) else {
                continue;
            };
            if !self.logged.insert(id.clone()) {
                continue;
            }
            let src = v.source.as_ref();
            self.log.write(
                "order-ended",
                json!({
                    "order": id, "vm": order.vm, "from": order.from, "to": order.to,
                    "outcome": outcome,
                    "bytes_sent": src.map(|s| s.bytes_sent),
                    "total_time_ms": src.and_then(|s| s.total_time_ms),
                    "downtime_ms": src.and_then(|s| s.downtime_ms),
                    "error": v.error(),
                }),
            );
        }
    }

    fn log_interval(&mut self, pool: &Pool, plan: &Plan, running: usize) {
        let names = |hs: &[usize]| {
            hs.iter()
                .map(|&h| pool.hosts[h].clone())
                .collect::<Vec<_>>()
        };
        self.log.write(
            "interval",
            json!({
                "mode": mode_name(plan.mode),
                "pattern": self.config.policy.pattern.kind().name(),
                "pool_load": self.engine.pool_load(),
                "hosts": pool.hosts.len(),
                "vms": pool.vms.len(),
                "hotspots": names(&plan.hotspots),
                "moves": plan.migrations.len(),
                "orders_running": running,
                "switch_off": names(&plan.switch_off),
                "skipped": pool.skipped,
            }),
        );
    }
}

/// Whether a leader may act for one more interval: its lease surely lives
/// past it.
fn acting(keeper: &LeaseKeeper, interval: Duration) -> bool {
    keeper
        .valid_until()
        .is_some_and(|until| until > Instant::now() + interval.min(Duration::from_secs(1)))
}

fn sleep_unless(stop: &AtomicBool, until: Instant) {
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(STOP_POLL.min(until.saturating_duration_since(Instant::now())));
    }
}

/// By VM: the latest order issued within the cooldown (by this manager or
/// an earlier leader, whatever its outcome), so no VM is moved again
/// before its cooldown, even across a change of leader.
fn recent_orders(
    views: &BTreeMap<String, OrderView>,
    now_ms: u64,
    cooldown_ms: u64,
) -> HashMap<&str, &str> {
    views
        .values()
        .filter_map(|v| v.order.as_ref())
        .filter(|o| now_ms.saturating_sub(o.issued_unix_ms) < cooldown_ms)
        .map(|o| (o.vm.as_str(), o.id.as_str()))
        .collect()
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Consolidate => "consolidate",
        Mode::Balance => "balance",
    }
}

fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::Hotspot => "hotspot",
        Reason::Coldspot => "coldspot",
    }
}

/// The move's reason in words: which host was hot or cold and how loaded,
/// the pattern, why this VM, why that host.
fn why(pool: &Pool, plan: &Plan, m: &Move, policy: &cluster::Config) -> String {
    let v = &pool.view;
    let load = |h: usize| {
        let used: f64 = v
            .vms
            .iter()
            .filter(|x| x.host == h)
            .map(|x| x.cpu_demand)
            .sum();
        (used + v.hosts[h].cpu_overhead) / v.hosts[h].cpu_capacity
    };
    let vm = &v.vms[m.vm];
    let (from, to) = (&pool.hosts[m.from], &pool.hosts[m.to]);
    let host = match m.reason {
        Reason::Hotspot => format!(
            "host {from} is a hotspot at {:.2} of its capacity ({:?})",
            load(m.from),
            policy.detector
        ),
        Reason::Coldspot => format!(
            "host {from} is a coldspot at {:.2} of its capacity, emptied to be switched off",
            load(m.from)
        ),
    };
    let placement = match plan.mode {
        Mode::Consolidate => "power-aware placement",
        Mode::Balance => "least-loaded placement",
    };
    format!(
        "{host}; {} mode; {} chosen by {} ({:.2} CPUs, {:.0} MB); {to} chosen by {placement}, at {:.2} of its capacity before",
        mode_name(plan.mode),
        pool.vms[m.vm],
        policy.selector.name(),
        vm.cpu_demand,
        vm.ram_mb,
        load(m.to),
    )
}
