//! Switching hosts off and on (docs/CLUSTER.md, "Power"). The manager is
//! the only writer of `/ferry/power/HOST`; the agent of HOST obeys at its
//! next interval. Switched off, a host holds no VM, accepts none and says
//! so in its report, so the engine sees it as off. Asked to switch off
//! while it still holds a VM (a move the plan counted on was dropped), it
//! stays on: a VM is never stopped to save power.

use serde::{Deserialize, Serialize};

/// The prefix of every power key.
pub const POWER_PREFIX: &str = "/ferry/power/";

/// The store key of `host`'s power order.
pub fn power_key(host: &str) -> String {
    format!("{POWER_PREFIX}{host}")
}

/// Whether a host should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    On,
    Off,
}

/// What the manager asks of a host's power, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerOrder {
    pub power: Power,
    /// Why, in words (the decision log has the details).
    pub reason: String,
    /// When it was issued (UNIX ms, the manager's clock).
    pub issued_unix_ms: u64,
}

/// A host's power after an order, given how many VMs it holds: off only
/// when asked and empty.
pub fn obey(order: Option<Power>, vms: usize) -> bool {
    order == Some(Power::Off) && vms == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_switches_off_only_when_asked_and_empty() {
        assert!(obey(Some(Power::Off), 0));
        assert!(!obey(Some(Power::Off), 1));
        assert!(!obey(Some(Power::On), 0));
        assert!(!obey(None, 0));
        let o = PowerOrder {
            power: Power::Off,
            reason: "coldspot".into(),
            issued_unix_ms: 1,
        };
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("\"power\":\"off\""), "{text}");
        assert_eq!(serde_json::from_str::<PowerOrder>(&text).unwrap(), o);
    }
}
