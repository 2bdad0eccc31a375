//! Housekeeping of the orders in the store, fenced by the leadership like
//! every other write of the manager: an order whose side's agent was lost
//! before that side ended is abandoned (so the VM is free for the next
//! decision, and nobody waits for it forever), and an order that ended
//! well or failed is removed once it is older than the retention. Orders
//! in doubt or interrupted stay until an operator has dealt with them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use agent::order::{Verdict, order_key, verdict_key};
use agent::report::HOSTS_PREFIX;
use agent::{OrderView, Stage};
use serde_json::json;
use store::{Compare, KeyValue, Leadership, Op, Store, Txn};

use crate::log::DecisionLog;

/// Abandons each running order a side of which runs on a host with no
/// report (its agent's lease lapsed) and has not ended; false when a
/// fenced write says this manager no longer leads.
pub(crate) fn abandon_lost(
    store: &Store,
    leadership: &Leadership,
    log: &mut DecisionLog,
    running: &BTreeMap<String, OrderView>,
    reports: &[KeyValue],
    now_ms: u64,
) -> anyhow::Result<bool> {
    let alive: HashSet<&str> = reports
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(HOSTS_PREFIX))
        .collect();
    for (id, why) in lost(running, &alive) {
        let verdict = Verdict {
            why: why.clone(),
            unix_ms: now_ms,
        };
        let key = verdict_key(id);
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(
            &key,
            serde_json::to_vec(&verdict)?,
            None,
        ));
        if !leadership.txn(store, txn)?.succeeded {
            return Ok(false);
        }
        tracing::warn!(order = %id, "order abandoned: {why}");
        log.write("order-abandoned", json!({ "order": id, "why": why }));
    }
    Ok(true)
}

/// The running orders to abandon, with why: a side not ended whose host's
/// agent has no report.
fn lost<'a>(
    running: &'a BTreeMap<String, OrderView>,
    alive: &HashSet<&str>,
) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for (id, v) in running {
        let Some(o) = &v.order else { continue };
        let ended =
            |side: &Option<agent::SideReport>| side.as_ref().is_some_and(|s| s.stage.is_final());
        let sides = [
            ("source", &o.from, ended(&v.source)),
            ("destination", &o.to, ended(&v.destination)),
        ];
        if let Some((side, host, _)) = sides
            .iter()
            .find(|(_, host, ended)| !ended && !alive.contains(host.as_str()))
        {
            out.push((
                id.as_str(),
                format!("the {side} host {host} is lost (its agent stopped reporting)"),
            ));
        }
    }
    out
}

/// Removes the orders that completed, failed or were abandoned and were
/// issued more than `retention` ago; false when no longer leader.
pub(crate) fn remove_old(
    store: &Store,
    leadership: &Leadership,
    views: &BTreeMap<String, OrderView>,
    now_ms: u64,
    retention: Duration,
) -> anyhow::Result<bool> {
    for id in old(views, now_ms, retention) {
        let key = order_key(id);
        let txn = Txn::new()
            .then(Op::delete(&key))
            .then(Op::delete_prefix(format!("{key}/")));
        if !leadership.txn(store, txn)?.succeeded {
            return Ok(false);
        }
        tracing::debug!(order = %id, "old order removed");
    }
    Ok(true)
}

/// The orders [`remove_old`] removes.
fn old(views: &BTreeMap<String, OrderView>, now_ms: u64, retention: Duration) -> Vec<&str> {
    let keep_ms = retention.as_millis() as u64;
    views
        .iter()
        .filter(|(_, v)| {
            matches!(
                v.outcome(),
                Some(Stage::Completed | Stage::Failed | Stage::Abandoned)
            ) && v
                .order
                .as_ref()
                .is_some_and(|o| now_ms.saturating_sub(o.issued_unix_ms) > keep_ms)
        })
        .map(|(id, _)| id.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::{Order, OrderMigration, SideReport};

    fn view(id: &str, issued: u64, source: Option<Stage>, dest: Option<Stage>) -> OrderView {
        OrderView {
            order: Some(Order {
                id: id.into(),
                vm: "web".into(),
                from: "h1".into(),
                to: "h2".into(),
                reason: "hotspot".into(),
                issued_unix_ms: issued,
                migration: OrderMigration::default(),
            }),
            source: source.map(|s| SideReport::new("h1", s)),
            destination: dest.map(|s| SideReport::new("h2", s)),
            verdict: None,
        }
    }

    #[test]
    fn a_side_not_ended_on_a_host_without_report_is_lost() {
        let running = BTreeMap::from([
            (
                "a".to_string(),
                view("a", 0, Some(Stage::Migrating), Some(Stage::Listening)),
            ),
            ("b".to_string(), view("b", 0, None, Some(Stage::Received))),
        ]);
        let h1: HashSet<&str> = HashSet::from(["h1"]);
        let both: HashSet<&str> = HashSet::from(["h1", "h2"]);
        assert!(lost(&running, &both).is_empty());
        // h2 lost: a waits for its destination, b's destination is done
        // but its source never began.
        let got = lost(&running, &h1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "a");
        assert!(got[0].1.contains("destination host h2 is lost"), "{got:?}");
        let got = lost(&running, &HashSet::from(["h2"]));
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), ["a", "b"]);
        assert!(got[1].1.contains("source host h1"), "{got:?}");
    }

    #[test]
    fn only_ended_orders_older_than_the_retention_go() {
        let mut abandoned = view("c", 0, Some(Stage::Migrating), None);
        abandoned.verdict = Some(Verdict {
            why: "lost".into(),
            unix_ms: 0,
        });
        let views = BTreeMap::from([
            (
                "done".to_string(),
                view("done", 0, Some(Stage::Completed), None),
            ),
            (
                "new".to_string(),
                view("new", 9_500, Some(Stage::Failed), None),
            ),
            (
                "doubt".to_string(),
                view("doubt", 0, Some(Stage::InDoubt), None),
            ),
            (
                "runs".to_string(),
                view("runs", 0, Some(Stage::Migrating), None),
            ),
            ("c".to_string(), abandoned),
        ]);
        let got = old(&views, 10_000, Duration::from_secs(1));
        assert_eq!(got, ["c", "done"]);
    }
}
