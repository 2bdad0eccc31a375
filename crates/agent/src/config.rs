//! What an agent is told: its host, its state directory, its capacity,
//! how often to measure, where to publish.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// An agent's configuration (the binary fills it from flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The host's name: its cgroup, its store key, its metrics label.
    pub host: String,
    /// Where the VMs' API sockets, serial output and logs live; what a
    /// restarted agent scans to adopt its VMs.
    pub state_dir: PathBuf,
    /// Declared capacity in CPUs: the host cgroup's quota.
    pub capacity_cpus: f64,
    /// Declared memory for VMs, bytes: what the manager places against.
    /// None: the machine's memory.
    pub memory_bytes: Option<u64>,
    /// How often the host and its VMs are measured and published.
    pub interval: Duration,
    /// Serve Prometheus text on `http://ADDR/metrics`.
    pub metrics: Option<SocketAddr>,
    /// The store the host report goes to.
    pub store: store::StoreConfig,
    /// The TTL of the lease the report is published under: the report
    /// disappears this long after the agent dies.
    pub lease_ttl: Duration,
    /// The `ferry` executable that runs each VM (`ferry run`).
    pub ferry: PathBuf,
    /// VMs to start unless a VM of that name is adopted.
    pub vms: Vec<VmSpec>,
    /// The migration secret shared with the other hosts' agents; without
    /// it, migration orders naming this host fail (and say why).
    pub secret_file: Option<PathBuf>,
    /// The cluster CA and this host's certificate and key (`ferry pki
    /// init`): migrations to and from this host run inside mutual TLS, and
    /// /metrics is served over it.
    pub tls_dir: Option<PathBuf>,
    /// The address this host's receivers listen on, which sources reach.
    pub migration_ip: IpAddr,
}

/// A VM the agent starts: `NAME=GUEST[,memory=SIZE][,vcpus=N][,append=ARGS]`;
/// `append=` comes last and takes the rest, commas included (a dirtier's
/// `phases=idle:2s,busy:10s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    /// A built-in guest program (docs/GUESTS.md).
    pub guest: String,
    /// Guest RAM as `ferry run --memory` takes it (e.g. 64M).
    pub memory: Option<String>,
    pub vcpus: Option<u32>,
    /// The guest's command line.
    pub append: Option<String>,
}

impl FromStr for VmSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<VmSpec, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not a VM: use NAME=GUEST[,memory=SIZE][,vcpus=N]"))?;
        let name = node::check_name(name)?;
        // The guest's command line may hold commas: it is the rest.
        let (rest, append) = match rest.split_once(",append=") {
            Some((head, append)) => (head, Some(append.to_string())),
            None => (rest, None),
        };
        let mut parts = rest.split(',');
        let guest = parts.next().unwrap_or_default().to_string();
        if guest.is_empty() {
            return Err(format!("VM {name}: no guest program given"));
        }
        let mut spec = VmSpec {
            name,
            guest,
            memory: None,
            vcpus: None,
            append,
        };
        for part in parts {
            match part.split_once('=') {
                Some(("memory", v)) => spec.memory = Some(v.to_string()),
                Some(("vcpus", v)) => {
                    let n = v
                        .parse()
                        .map_err(|_| format!("VM {}: vcpus={v} is not a number", spec.name))?;
                    spec.vcpus = Some(n);
                }
                _ => {
                    return Err(format!(
                        "VM {}: unknown setting '{part}' (memory=, vcpus=, append=)",
                        spec.name
                    ));
                }
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_specs_parse_and_bad_ones_say_why() {
        let s: VmSpec = "web=dirtier,memory=64M,vcpus=2".parse().unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.guest, "dirtier");
        assert_eq!(s.memory.as_deref(), Some("64M"));
        assert_eq!(s.vcpus, Some(2));
        let p: VmSpec = "w=dirtier,memory=64M,append=ws=8M phases=idle:1s,busy:2s"
            .parse()
            .unwrap();
        assert_eq!(p.append.as_deref(), Some("ws=8M phases=idle:1s,busy:2s"));
        assert_eq!(p.memory.as_deref(), Some("64M"));
        for (bad, why) in [
            ("web", "is not a VM"),
            ("a b=idle", "not a valid name"),
            ("web=", "no guest"),
            ("web=idle,vcpus=x", "not a number"),
            ("web=idle,colour=red", "unknown setting"),
        ] {
            let e = bad.parse::<VmSpec>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
