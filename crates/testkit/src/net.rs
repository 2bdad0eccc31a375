//! Loopback peers for network tests.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// A loopback port nobody listens on right now (another process may take
/// it later: use it at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
        .port()
}

/// Connects to `to` from the local address `from` (e.g. 127.0.0.2: the
/// whole of 127.0.0.0/8 is loopback), so a test can play several hosts.
pub fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

/// A TCP server on loopback that is no migration peer: it answers every
/// connection with `reply` (nothing if empty), holds it open for `hold`,
/// then closes it. It serves until dropped.
pub struct RogueServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl RogueServer {
    pub fn start(reply: Vec<u8>, hold: Duration) -> RogueServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(&reply);
                        thread::sleep(hold);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        RogueServer { addr, stop }
    }
}

impl Drop for RogueServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    #[test]
    fn rogue_server_answers_and_closes() {
        let server = RogueServer::start(b"no".to_vec(), Duration::from_millis(10));
        let mut s = TcpStream::connect(server.addr).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"no");
        assert_ne!(free_port(), 0);
    }

    #[test]
    fn connects_from_another_loopback_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = connect_from([127, 0, 0, 2].into(), l.local_addr().unwrap()).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 2]));
    }
}
