//! The hosts' network: one namespace per host, each joined to a bridge in
//! the root namespace by a veth pair, with `tc` token-bucket filters on
//! both ends of the pair capping the link each way. Built with `ip` and
//! `tc`; everything made is taken down when the [`Network`] is dropped.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use units::Bandwidth;

/// The first two octets of the hosts' /24 (the third is chosen free).
const PREFIX: [u8; 2] = [10, 213];

/// A network of `n` hosts; see the module's documentation.
#[derive(Debug)]
pub struct Network {
    /// The bridge in the root namespace (it holds `.254`).
    pub bridge: String,
    /// Each host's namespace, veth end in the root namespace, end in the
    /// namespace, and address.
    pub hosts: Vec<HostNet>,
    made_bridge: bool,
}

/// One host's place on the network.
#[derive(Debug, Clone)]
pub struct HostNet {
    pub namespace: String,
    pub outer: String,
    pub inner: String,
    pub ip: Ipv4Addr,
    made: bool,
}

/// Says in one line that this process is not root, if it is not: host
/// cgroups need root, with or without namespaces.
pub fn check_root() -> anyhow::Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "a cluster on one machine needs root (host cgroups, network namespaces): run it as root"
        );
    }
    Ok(())
}

/// Says in one line why a network cannot be made here, if it cannot.
pub fn check_tools() -> anyhow::Result<()> {
    check_root()?;
    for tool in ["ip", "tc"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!(
                "`{tool}` (iproute2) is not installed: install it, or pass --no-netns to run every host on loopback"
            );
        }
    }
    Ok(())
}

impl Network {
    /// Makes the bridge and `n` hosts for the process `tag` (its pid keeps
    /// names unique), links capped at `link`. What was made before a
    /// failure is taken down again.
    pub fn create(tag: u32, n: usize, link: Bandwidth) -> anyhow::Result<Network> {
        let third = free_subnet(tag)?;
        let mut net = Network {
            bridge: format!("fbr{tag}"),
            hosts: Vec::new(),
            made_bridge: false,
        };
        let gateway = format!("{}.{}.{third}.254/24", PREFIX[0], PREFIX[1]);
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        net.made_bridge = true;
        ip(&["addr", "add", &gateway, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for i in 0..n {
            let host = HostNet {
                namespace: format!("ferry-{tag}-h{}", i + 1),
                outer: format!("fv{tag}-{}", i + 1),
                inner: format!("fp{tag}-{}", i + 1),
                ip: Ipv4Addr::new(PREFIX[0], PREFIX[1], third, i as u8 + 1),
                made: false,
            };
            net.hosts.push(host);
            net.add_host(i, link)
                .with_context(|| format!("cannot set up host h{}'s network", i + 1))?;
        }
        Ok(net)
    }

    fn add_host(&mut self, i: usize, link: Bandwidth) -> anyhow::Result<()> {
        let bridge = self.bridge.clone();
        let h = &mut self.hosts[i];
        ip(&["netns", "add", &h.namespace])?;
        h.made = true;
        ip(&[
            "link", "add", &h.outer, "type", "veth", "peer", "name", &h.inner,
        ])?;
        ip(&["link", "set", &h.inner, "netns", &h.namespace])?;
        ip(&["link", "set", &h.outer, "master", &bridge])?;
        ip(&["link", "set", &h.outer, "up"])?;
        let addr = format!("{}/24", h.ip);
        let ns = h.namespace.as_str();
        ip(&["-n", ns, "addr", "add", &addr, "dev", &h.inner])?;
        ip(&["-n", ns, "link", "set", &h.inner, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        // Both ends: the outer one caps what reaches the host, the inner
        // one what leaves it.
        run("tc", &tbf(None, &h.outer, link))?;
        run("ip", &tbf(Some(ns), &h.inner, link))?;
        Ok(())
    }

    /// Takes everything down (also done on drop); says what it could not.
    pub fn remove(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for h in self.hosts.drain(..).rev() {
            if !h.made {
                continue;
            }
            // Deleting the namespace deletes its end of the pair, and so
            // the pair; the outer end is deleted too in case it was never
            // moved.
            let _ = ip_quiet(&["link", "del", &h.outer]);
            if let Err(e) = ip(&["netns", "del", &h.namespace]) {
                left.push(format!("namespace {}: {e:#}", h.namespace));
            }
        }
        if std::mem::take(&mut self.made_bridge)
            && let Err(e) = ip(&["link", "del", &self.bridge])
        {
            left.push(format!("bridge {}: {e:#}", self.bridge));
        }
        left
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for what in self.remove() {
            tracing::warn!("cannot remove {what}");
        }
    }
}

/// `tc qdisc add dev DEV root tbf` at `link`, in namespace `ns` if given
/// (then as `ip netns exec NS tc ...`).
fn tbf(ns: Option<&str>, dev: &str, link: Bandwidth) -> Vec<String> {
    let bits = link.bits_per_sec();
    // A bucket of 10 ms at the rate, at least 64 KiB (a timer tick's worth
    // at 1 Gbit/s needs more than the minimum).
    let burst = (bits / 8 / 100).max(64 * 1024);
    let mut args: Vec<String> = match ns {
        Some(ns) => ["netns", "exec", ns, "tc"].map(String::from).to_vec(),
        None => Vec::new(),
    };
    args.extend(
        [
            "qdisc",
            "add",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{bits}bit"),
            "burst",
            &burst.to_string(),
            "latency",
            "50ms",
        ]
        .map(String::from),
    );
    args
}

/// The third octet of a /24 under [`PREFIX`] that no address of the root
/// namespace is in, starting from one derived from `tag`.
fn free_subnet(tag: u32) -> anyhow::Result<u8> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .context("cannot run `ip addr show`")?;
    let taken = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..250u32)
        .map(|k| ((tag + k) % 250) as u8)
        .find(|third| !taken.contains(&format!(" {}.{}.{third}.", PREFIX[0], PREFIX[1])))
        .ok_or_else(|| anyhow::anyhow!("no free /24 under 10.213.0.0/16"))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn ip_quiet(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run<S: AsRef<std::ffi::OsStr>>(tool: &str, args: &[S]) -> anyhow::Result<()> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{tool}`"))?;
    if !out.status.success() {
        let line: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        bail!(
            "`{tool} {}` failed: {}",
            line.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_capped_with_a_bucket_of_10ms() {
        let gbit = Bandwidth::parse("1Gbit").unwrap();
        let t = tbf(Some("ns1"), "fp1-1", gbit).join(" ");
        assert_eq!(
            t,
            "netns exec ns1 tc qdisc add dev fp1-1 root tbf rate 1000000000bit burst 1250000 latency 50ms"
        );
        let slow = tbf(None, "fv1-1", Bandwidth::parse("10Mbit").unwrap()).join(" ");
        assert!(
            slow.ends_with("rate 10000000bit burst 65536 latency 50ms"),
            "{slow}"
        );
    }
}
