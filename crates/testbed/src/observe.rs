//! The cluster as its store and its manager's decision log show it: each
//! host's last report, every order with where it stands, and the
//! manager's latest interval (pattern and mode). Read by the timeline
//! while `ferry cluster up` runs and by `ferry cluster status`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use agent::{HostReport, OrderView};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One look at the cluster.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every host that reports, by name.
    pub hosts: BTreeMap<String, HostReport>,
    /// Every order, by id.
    pub orders: BTreeMap<String, OrderState>,
    /// Keys that could not be read (one line each).
    pub unreadable: Vec<String>,
}

/// An order and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    pub id: String,
    pub vm: String,
    pub from: String,
    pub to: String,
    /// Why the manager ordered it (`hotspot` or `coldspot`).
    pub reason: String,
    pub issued_unix_ms: u64,
    /// The outcome once it ended (`completed`, `failed`...), else None.
    pub outcome: Option<String>,
    /// The source's stage, or the destination's before the source began.
    pub stage: Option<String>,
    pub bytes_sent: u64,
    pub total_time_ms: Option<f64>,
    pub downtime_ms: Option<f64>,
    pub error: Option<String>,
}

impl OrderState {
    fn of(view: &OrderView) -> Option<OrderState> {
        let order = view.order.as_ref()?;
        let src = view.source.as_ref();
        let stage = src.or(view.destination.as_ref()).map(|s| s.stage.name());
        Some(OrderState {
            id: order.id.clone(),
            vm: order.vm.clone(),
            from: order.from.clone(),
            to: order.to.clone(),
            reason: order.reason.clone(),
            issued_unix_ms: order.issued_unix_ms,
            outcome: view.outcome().map(|s| s.name().to_string()),
            stage: stage.map(str::to_string),
            bytes_sent: src.map_or(0, |s| s.bytes_sent),
            total_time_ms: src.and_then(|s| s.total_time_ms),
            downtime_ms: src.and_then(|s| s.downtime_ms),
            error: view.error(),
        })
    }
}

impl Observed {
    /// Reads the hosts' reports and the orders.
    pub fn read(store: &store::Store) -> Result<Observed, store::StoreError> {
        let mut seen = Observed::default();
        for kv in store.list(agent::report::HOSTS_PREFIX)?.kvs {
            match serde_json::from_slice::<HostReport>(&kv.value) {
                Ok(r) => {
                    seen.hosts.insert(r.host.clone(), r);
                }
                Err(e) => seen.unreadable.push(format!("{}: {e}", kv.key)),
            }
        }
        let orders = store.list(agent::order::ORDERS_PREFIX)?;
        let (views, bad) = agent::order::parse_all(&orders.kvs);
        seen.unreadable.extend(bad);
        seen.orders = views
            .values()
            .filter_map(OrderState::of)
            .map(|o| (o.id.clone(), o))
            .collect();
        Ok(seen)
    }

    /// Orders not ended yet.
    pub fn running(&self) -> usize {
        self.orders.values().filter(|o| o.outcome.is_none()).count()
    }
}

/// A host's load over its capacity, if it reported one.
pub fn load_ratio(r: &HostReport) -> Option<f64> {
    let load = r.load_cpus?;
    (r.capacity_cpus > 0.0).then(|| load / r.capacity_cpus)
}

/// The manager's decision log, read as it grows.
#[derive(Debug)]
pub struct DecisionTail {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// The latest `interval` event.
    pub last_interval: Option<Value>,
}

impl DecisionTail {
    pub fn new(path: &Path) -> DecisionTail {
        DecisionTail {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
            last_interval: None,
        }
    }

    /// The events written since the last call (none if the file is not
    /// there yet); a line that is not JSON is skipped.
    pub fn poll(&mut self) -> Vec<Value> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut text = String::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.partial.drain(..=end).collect();
        let events: Vec<Value> = complete
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(last) = events.iter().rev().find(|e| e["event"] == "interval") {
            self.last_interval = Some(last.clone());
        }
        events
    }
}

/// `auto/balance`: the manager's pattern and the mode it plans in.
pub fn pattern_of(interval: Option<&Value>) -> String {
    let Some(i) = interval else {
        return "no decision yet".into();
    };
    let s = |k: &str| i[k].as_str().unwrap_or("?").to_string();
    format!("{}/{}", s("pattern"), s("mode"))
}

/// `ferry cluster status`: hosts (load/capacity, VMs, on/off, or no
/// report from `expected` hosts), pattern, orders running and the latest
/// outcomes.
pub fn status_text(seen: &Observed, expected: &[String], interval: Option<&Value>) -> String {
    let mut out = String::new();
    let mut names: Vec<&String> = seen.hosts.keys().collect();
    names.extend(expected.iter().filter(|n| !seen.hosts.contains_key(*n)));
    names.sort_by_key(|n| (n.len(), n.to_string()));
    out.push_str(&format!("pattern   {}", pattern_of(interval)));
    if let Some(load) = interval.and_then(|i| i["pool_load"].as_f64()) {
        out.push_str(&format!(" (pool load {:.0}%)", load * 100.0));
    }
    out.push_str("\nhost  state   load/capacity  VMs\n");
    for name in names {
        let Some(r) = seen.hosts.get(name) else {
            out.push_str(&format!("{name:<5} lost    -              (no report)\n"));
            continue;
        };
        let state = if r.switched_off { "off" } else { "on" };
        let load = r.load_cpus.map_or("-".to_string(), |l| format!("{l:.2}"));
        let vms: Vec<&str> = r.vms.iter().map(|v| v.name.as_str()).collect();
        out.push_str(&format!(
            "{name:<5} {state:<7} {:<14} {}\n",
            format!("{load}/{:.2}", r.capacity_cpus),
            if vms.is_empty() {
                "-".to_string()
            } else {
                vms.join(" ")
            }
        ));
    }
    let mut orders: Vec<&OrderState> = seen.orders.values().collect();
    orders.sort_by_key(|o| o.issued_unix_ms);
    let running: Vec<_> = orders.iter().filter(|o| o.outcome.is_none()).collect();
    out.push_str(&format!("migrations running: {}\n", running.len()));
    for o in running {
        out.push_str(&format!(
            "  {} {} -> {} ({}, {}, {} sent)\n",
            o.vm,
            o.from,
            o.to,
            o.reason,
            o.stage.as_deref().unwrap_or("ordered"),
            units::format_bytes(o.bytes_sent)
        ));
    }
    let ended: Vec<_> = orders.iter().filter(|o| o.outcome.is_some()).collect();
    out.push_str(&format!(
        "migrations ended: {} (latest last)\n",
        ended.len()
    ));
    for o in ended.iter().rev().take(5).rev() {
        let downtime = o
            .downtime_ms
            .map_or(String::new(), |d| format!(", downtime {d:.1} ms"));
        let error = o
            .error
            .as_deref()
            .map_or(String::new(), |e| format!(": {e}"));
        out.push_str(&format!(
            "  {} {} -> {} ({}): {}, {} sent{downtime}{error}\n",
            o.vm,
            o.from,
            o.to,
            o.reason,
            o.outcome.as_deref().unwrap_or("?"),
            units::format_bytes(o.bytes_sent)
        ));
    }
    out
}
