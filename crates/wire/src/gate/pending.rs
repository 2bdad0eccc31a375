//! Connections that have not authenticated yet: a stream bound by a
//! deadline, and the set of them with its per-host counts.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};

use std::time::{Duration, Instant};
use tls::Conn;

/// A connection that has not authenticated: every read and write fails
/// with [`io::ErrorKind::TimedOut`] once its deadline has passed, however
/// slowly the peer trickles its bytes.
#[derive(Debug)]
pub struct Pending {
    stream: Conn,
    peer: SocketAddr,
    deadline: Instant,
}

impl Pending {
    pub(super) fn new(stream: Conn, peer: SocketAddr, deadline: Instant) -> Pending {
        Pending {
            stream,
            peer,
            deadline,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The socket, with no timeouts left on it.
    pub(super) fn into_stream(self) -> io::Result<Conn> {
        self.stream.set_read_timeout(None)?;
        self.stream.set_write_timeout(None)?;
        Ok(self.stream)
    }

    /// Time left, as a socket timeout (never zero: that means "none").
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake deadline passed",
            ))
        } else {
            Ok(left)
        }
    }
}

impl Read for Pending {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        (&self.stream).read(buf)
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        (&self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        (&self.stream).flush()
    }
}

/// Where a connection comes from, for the per-host limit: an IPv4 address,
/// or the /64 prefix of an IPv6 one (one host often holds a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Host(u128);

impl Host {
    pub(super) fn of(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host(u128::from(u32::from(a))),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Host(u128::from(u32::from(v4))),
                None => Host(u128::from(a) >> 64 | 1 << 127),
            },
        }
    }
}

/// Why a connection gets no handshake slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// [`GateLimits::max_pending`](super::GateLimits::max_pending) reached.
    Full(usize),
    /// [`GateLimits::max_pending_per_host`](super::GateLimits::max_pending_per_host) reached.
    HostFull(usize),
}

/// The connections authenticating now: counted per host, and kept so that
/// closing the gate can cut them.
#[derive(Debug, Default)]
pub(super) struct PendingSet {
    next_id: u64,
    conns: HashMap<u64, (Host, TcpStream)>,
    per_host: HashMap<Host, usize>,
}

impl PendingSet {
    /// Takes a slot for a connection from `host`; `stream` is a handle to
    /// cut it with.
    pub(super) fn admit(
        &mut self,
        host: Host,
        stream: TcpStream,
        max: usize,
        max_per_host: usize,
    ) -> Result<u64, Busy> {
        if self.conns.len() >= max {
            return Err(Busy::Full(max));
        }
        let n = self.per_host.entry(host).or_insert(0);
        if *n >= max_per_host {
            return Err(Busy::HostFull(max_per_host));
        }
        *n += 1;
        self.next_id += 1;
        self.conns.insert(self.next_id, (host, stream));
        Ok(self.next_id)
    }

    /// Frees the slot of a connection that finished its handshake.
    pub(super) fn release(&mut self, id: u64) {
        if let Some((host, _)) = self.conns.remove(&id)
            && let Some(n) = self.per_host.get_mut(&host)
        {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(&host);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Cuts every connection still authenticating.
    pub(super) fn cut_all(&mut self) {
        for (_, s) in self.conns.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

    #[test]
    fn hosts_group_ipv6_by_prefix() {
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        assert_eq!(Host::of(a), Host::of(b));
        assert_ne!(Host::of(a), Host::of(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(
            Host::of(mapped),
            Host::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_ne!(
            Host::of(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            Host::of(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn slots_are_bounded_overall_and_per_host() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = || TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (h1, h2, h3) = (
            Host::of([10, 0, 0, 1].into()),
            Host::of([10, 0, 0, 2].into()),
            Host::of([10, 0, 0, 3].into()),
        );
        let mut set = PendingSet::default();
        let a = set.admit(h1, s(), 3, 2).unwrap();
        set.admit(h1, s(), 3, 2).unwrap();
        assert_eq!(set.admit(h1, s(), 3, 2), Err(Busy::HostFull(2)));
        set.admit(h2, s(), 3, 2).unwrap();
        assert_eq!(set.admit(h3, s(), 3, 2), Err(Busy::Full(3)));
        set.release(a);
        assert_eq!(set.len(), 2);
        set.admit(h1, s(), 3, 2).unwrap();
    }
}
