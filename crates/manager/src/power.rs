//! Switching hosts off and on as the engine plans (agent::power). Each
//! host's power order is written only when it changes, fenced by the
//! leadership: off for the hosts the plan empties, on for any host that
//! is off (or asked to be) and receives a VM. An agent obeys an off order
//! only once it holds no VM, so a dropped move never stops a VM.

use std::collections::{BTreeSet, HashMap};

use agent::power::{POWER_PREFIX, Power, PowerOrder, power_key};
use cluster::Plan;
use serde_json::json;
use store::{Leadership, Op, Store, Txn};

use crate::log::DecisionLog;
use crate::view::Pool;

/// Writes the power orders `plan` needs; false when a fenced write says
/// this manager no longer leads.
pub(crate) fn apply(
    store: &Store,
    leadership: &Leadership,
    log: &mut DecisionLog,
    pool: &Pool,
    plan: &Plan,
    now_ms: u64,
) -> anyhow::Result<bool> {
    let current = current(store)?;
    let mut on: BTreeSet<usize> = plan.migrations.iter().map(|m| m.to).collect();
    on.extend(&plan.switch_on);
    let off = plan.switch_off.iter().filter(|h| !on.contains(h));
    let wanted = on
        .iter()
        .map(|&h| (h, Power::On, "receives a VM"))
        .chain(off.map(|&h| (h, Power::Off, "the plan empties it")));
    for (h, power, why) in wanted {
        let host = &pool.hosts[h];
        let was = current.get(host.as_str()).copied();
        // No order means on: only a change is written.
        if was.unwrap_or(Power::On) == power {
            continue;
        }
        let order = PowerOrder {
            power,
            reason: why.into(),
            issued_unix_ms: now_ms,
        };
        let txn = Txn::new().then(Op::put(power_key(host), serde_json::to_vec(&order)?, None));
        if !leadership.txn(store, txn)?.succeeded {
            return Ok(false);
        }
        let kind = match power {
            Power::On => "switch-on",
            Power::Off => "switch-off",
        };
        log.write(kind, json!({ "host": host, "why": why }));
    }
    Ok(true)
}

/// Every host's power order in the store; unreadable ones count as none.
fn current(store: &Store) -> anyhow::Result<HashMap<String, Power>> {
    Ok(store
        .list(POWER_PREFIX)?
        .kvs
        .iter()
        .filter_map(|kv| {
            let host = kv.key.strip_prefix(POWER_PREFIX)?;
            let order: PowerOrder = serde_json::from_slice(&kv.value).ok()?;
            Some((host.to_string(), order.power))
        })
        .collect())
}
