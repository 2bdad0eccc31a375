//! Migration orders in the store: what the manager asks (one VM from one
//! host to another) and what each side's agent reports back. Each key has
//! one writer: the manager writes `/ferry/orders/ID` and, when it gives up
//! on the order, `/ferry/orders/ID/manager`; the source agent
//! `/ferry/orders/ID/source` and the destination agent
//! `/ferry/orders/ID/destination` (docs/CLUSTER.md, "Migration orders").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The prefix of every order key and of the sides' reports.
pub const ORDERS_PREFIX: &str = "/ferry/orders/";

/// The store key of order `id`.
pub fn order_key(id: &str) -> String {
    format!("{ORDERS_PREFIX}{id}")
}

/// The store key of `side`'s report on order `id`.
pub fn side_key(id: &str, side: Side) -> String {
    format!("{ORDERS_PREFIX}{id}/{}", side.name())
}

/// The store key of the manager's verdict on order `id`.
pub fn verdict_key(id: &str) -> String {
    format!("{ORDERS_PREFIX}{id}/manager")
}

/// Checks an order id: 1 to 128 letters, digits, '.', '_' or '-'.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{id}' is not an order id (1 to 128 letters, digits, '.', '_', '-')"
        ))
    }
}

/// One VM move the manager decided: the source agent migrates `vm` to the
/// receiver the destination agent starts for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub vm: String,
    /// The source host (its agent's `--host`).
    pub from: String,
    /// The destination host.
    pub to: String,
    /// Why, in words (the decision log has the details).
    pub reason: String,
    /// When it was issued (UNIX ms, the manager's clock).
    pub issued_unix_ms: u64,
    /// How to migrate; unset fields take the engine's defaults.
    #[serde(default)]
    pub migration: OrderMigration,
}

/// The migration's settings an order carries (as `ferry migrate`'s flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderMigration {
    /// A strategy name (docs/MIGRATION.md).
    pub strategy: Option<String>,
    /// Cap while the guest runs, bits/s.
    pub max_bandwidth_bps: Option<u64>,
    /// Downtime target, ms.
    pub max_downtime_ms: Option<f64>,
    /// Pre-copy time at most, ms.
    pub timeout_ms: Option<u64>,
}

impl Order {
    /// Checks what an agent relies on: a valid id, VM and host names, two
    /// different hosts.
    pub fn check(&self) -> Result<(), String> {
        check_id(&self.id)?;
        node::check_name(&self.vm)?;
        node::check_name(&self.from)?;
        node::check_name(&self.to)?;
        if self.from == self.to {
            return Err(format!(
                "order {}: source and destination are both {}",
                self.id, self.to
            ));
        }
        Ok(())
    }
}

/// The two agents an order involves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// Where one side of an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Destination: its receiver waits for the VM at `addr`.
    Listening,
    /// Destination: the VM arrived and runs here.
    Received,
    /// Source: the migration runs.
    Migrating,
    /// Source: the VM runs on the destination.
    Completed,
    /// Either side: the order failed; the VM runs on the source.
    Failed,
    /// Source: the commit is in doubt; the VM is kept paused on the source
    /// until an operator decides (docs/PROTOCOL.md).
    InDoubt,
    /// Source: post-copy was interrupted; the VM runs nowhere and its
    /// stopped copy is kept on the source (docs/PROTOCOL.md).
    Interrupted,
    /// The order as a whole, never a side: the manager gave up on it
    /// because the agent of a side that had not ended was lost. Where the
    /// VM runs is then up to the migration's own safety rules, and the
    /// hosts' next reports show it.
    Abandoned,
}

impl Stage {
    /// Its name, as in the store.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Listening => "listening",
            Stage::Received => "received",
            Stage::Migrating => "migrating",
            Stage::Completed => "completed",
            Stage::Failed => "failed",
            Stage::InDoubt => "in-doubt",
            Stage::Interrupted => "interrupted",
            Stage::Abandoned => "abandoned",
        }
    }

    /// True when this side has nothing more to do.
    pub fn is_final(self) -> bool {
        !matches!(self, Stage::Listening | Stage::Migrating)
    }
}

/// One side's report on an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideReport {
    pub host: String,
    pub stage: Stage,
    /// When it was written (UNIX ms, the agent's clock).
    pub unix_ms: u64,
    /// Destination: where its receiver listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Source: bytes sent so far (the final count once done).
    #[serde(default)]
    pub bytes_sent: u64,
    /// Source: bytes still to send, as the engine last estimated.
    #[serde(default)]
    pub remaining_bytes: u64,
    /// Source, once done: connect to end, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time_ms: Option<f64>,
    /// Source, once done: pause to resume, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    /// Why it failed, in doubt or was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SideReport {
    /// A report of `stage` by `host`, now.
    pub fn new(host: &str, stage: Stage) -> SideReport {
        SideReport {
            host: host.to_string(),
            stage,
            unix_ms: crate::sample::unix_ms(),
            addr: None,
            bytes_sent: 0,
            remaining_bytes: 0,
            total_time_ms: None,
            downtime_ms: None,
            error: None,
        }
    }

    /// A failure of `host`'s side, with why.
    pub fn failed(host: &str, error: impl Into<String>) -> SideReport {
        SideReport {
            error: Some(error.into()),
            ..SideReport::new(host, Stage::Failed)
        }
    }
}

/// The manager's word that it gave up on an order, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub why: String,
    /// When it was written (UNIX ms, the manager's clock).
    pub unix_ms: u64,
}

/// An order with both sides' reports, as read from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderView {
    pub order: Option<Order>,
    pub source: Option<SideReport>,
    pub destination: Option<SideReport>,
    pub verdict: Option<Verdict>,
}

impl OrderView {
    /// The outcome once the order has ended: the source's final stage, or
    /// the destination's failure when the source never started, or
    /// [`Stage::Abandoned`] once the manager gave up on it.
    pub fn outcome(&self) -> Option<Stage> {
        match (&self.source, &self.destination) {
            (Some(s), _) if s.stage.is_final() => Some(s.stage),
            (None, Some(d)) if d.stage == Stage::Failed => Some(Stage::Failed),
            _ => self.verdict.as_ref().map(|_| Stage::Abandoned),
        }
    }

    /// Why the order went wrong, if it did: the source's error, else the
    /// destination's, else the manager's verdict.
    pub fn error(&self) -> Option<String> {
        [&self.source, &self.destination]
            .into_iter()
            .flatten()
            .find_map(|s| s.error.clone())
            .or_else(|| self.verdict.as_ref().map(|v| v.why.clone()))
    }
}

/// Every order under [`ORDERS_PREFIX`] by id, with the keys that could not
/// be read and why (one line each; they are skipped, never acted on).
pub fn parse_all(kvs: &[store::KeyValue]) -> (BTreeMap<String, OrderView>, Vec<String>) {
    let mut views: BTreeMap<String, OrderView> = BTreeMap::new();
    let mut bad = Vec::new();
    for kv in kvs {
        if let Err(e) = parse_one(kv, &mut views) {
            bad.push(format!("{}: {e}", kv.key));
        }
    }
    (views, bad)
}

fn parse_one(kv: &store::KeyValue, views: &mut BTreeMap<String, OrderView>) -> Result<(), String> {
    let rest = kv
        .key
        .strip_prefix(ORDERS_PREFIX)
        .ok_or("not an order key")?;
    let (id, side) = match rest.split_once('/') {
        Some((id, side)) => (id, Some(side)),
        None => (rest, None),
    };
    check_id(id)?;
    let json = |e: serde_json::Error| format!("malformed: {e}");
    let view = views.entry(id.to_string()).or_default();
    match side {
        None => {
            let order: Order = serde_json::from_slice(&kv.value).map_err(json)?;
            if order.id != id {
                return Err(format!("the order says its id is '{}'", order.id));
            }
            order.check()?;
            view.order = Some(order);
        }
        Some("source") => view.source = Some(serde_json::from_slice(&kv.value).map_err(json)?),
        Some("destination") => {
            view.destination = Some(serde_json::from_slice(&kv.value).map_err(json)?)
        }
        Some("manager") => view.verdict = Some(serde_json::from_slice(&kv.value).map_err(json)?),
        Some(other) => return Err(format!("unknown side '{other}'")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> store::KeyValue {
        store::KeyValue {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        }
    }

    fn order(id: &str, from: &str, to: &str) -> String {
        serde_json::to_string(&Order {
            id: id.into(),
            vm: "web".into(),
            from: from.into(),
            to: to.into(),
            reason: "test".into(),
            issued_unix_ms: 1,
            migration: OrderMigration::default(),
        })
        .unwrap()
    }

    #[test]
    fn orders_and_reports_are_grouped_and_bad_keys_say_why() {
        let src = serde_json::to_string(&SideReport::new("h1", Stage::Completed)).unwrap();
        let (views, bad) = parse_all(&[
            kv("/ferry/orders/o1", &order("o1", "h1", "h2")),
            kv("/ferry/orders/o1/source", &src),
            kv("/ferry/orders/o2", "{not json"),
            kv("/ferry/orders/o3", &order("o3", "h1", "h1")),
            kv("/ferry/orders/o4", &order("other", "h1", "h2")),
            kv("/ferry/orders/o5/elsewhere", "{}"),
            kv("/ferry/orders/a b", "{}"),
        ]);
        let o1 = &views["o1"];
        assert_eq!(o1.order.as_ref().unwrap().to, "h2");
        assert_eq!(o1.outcome(), Some(Stage::Completed));
        let whys: Vec<&str> = bad.iter().map(String::as_str).collect();
        for (i, why) in [
            "malformed",
            "both h1",
            "says its id",
            "unknown side",
            "not an order id",
        ]
        .iter()
        .enumerate()
        {
            assert!(whys[i].contains(why), "{why}: {whys:?}");
        }
    }

    #[test]
    fn an_order_ends_with_its_source_or_a_failed_destination() {
        let mut v = OrderView::default();
        assert_eq!(v.outcome(), None);
        v.destination = Some(SideReport::new("h2", Stage::Listening));
        v.source = Some(SideReport::new("h1", Stage::Migrating));
        assert_eq!(v.outcome(), None);
        v.source = None;
        v.destination = Some(SideReport::failed("h2", "no room"));
        assert_eq!(v.outcome(), Some(Stage::Failed));
        v.source = Some(SideReport::new("h1", Stage::InDoubt));
        assert_eq!(v.outcome(), Some(Stage::InDoubt));
        // The manager's verdict ends an order no side ended, and only that.
        v.verdict = Some(Verdict {
            why: "host h2 lost".into(),
            unix_ms: 1,
        });
        assert_eq!(v.outcome(), Some(Stage::InDoubt));
        v.source = Some(SideReport::new("h1", Stage::Migrating));
        assert_eq!(v.outcome(), Some(Stage::Abandoned));
    }
}
