//! A frame-aware TCP proxy that injects failures into a migration at a
//! chosen frame: cut both connections, stall one direction, or corrupt a
//! payload byte. For tests of the engine and of whole Ferry processes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Source -> destination.
    ToDest,
    /// Destination -> source.
    ToSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close both connections instead of forwarding the frame.
    Cut,
    /// Stop forwarding in this direction (connections stay open).
    Stall,
    /// Flip one payload byte and forward.
    Corrupt,
}

#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub dir: Dir,
    /// Frame kind to act on.
    pub kind: u8,
    /// Act on the n-th frame of that kind (1-based).
    pub nth: u32,
    pub action: Action,
}

/// A proxy between source and destination; dropping it releases stalled
/// connections (they are then closed).
pub struct Proxy {
    pub addr: SocketAddr,
    done: Arc<AtomicBool>,
    /// Set once the fault was injected.
    fired: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

impl Proxy {
    /// Whether the fault was injected (the chosen frame went by).
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Listens on an ephemeral loopback port and forwards the first
    /// connection to `target`, applying `fault` (or none).
    pub fn start(target: SocketAddr, fault: Option<Fault>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let done = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (d, f) = (Arc::clone(&done), Arc::clone(&fired));
        thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let Ok(server) = TcpStream::connect(target) else {
                return;
            };
            let clones = || -> std::io::Result<_> {
                Ok((
                    [client.try_clone()?, server.try_clone()?],
                    [client.try_clone()?, server.try_clone()?],
                    client.try_clone()?,
                    server.try_clone()?,
                ))
            };
            let Ok((pair_up, pair_down, from, to)) = clones() else {
                return;
            };
            let up = {
                let (d, f) = (Arc::clone(&d), Arc::clone(&f));
                let fault = fault.filter(|x| x.dir == Dir::ToDest);
                thread::spawn(move || pump(from, to, fault, pair_up, d, f))
            };
            let fault = fault.filter(|x| x.dir == Dir::ToSource);
            pump(server, client, fault, pair_down, d, f);
            let _ = up.join();
        });
        Ok(Proxy { addr, done, fired })
    }
}

fn read_exact(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    s.read_exact(buf).is_ok()
}

/// Forwards frames from `from` to `to`, acting on the chosen frame.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: Option<Fault>,
    pair: [TcpStream; 2],
    done: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
) {
    let mut seen = 0u32;
    loop {
        let mut header = [0u8; 8];
        if !read_exact(&mut from, &mut header) {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut rest = vec![0u8; len.min(32 << 20) + 4];
        if !read_exact(&mut from, &mut rest) {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        if let Some(f) = fault
            && header[0] == f.kind
        {
            seen += 1;
            if seen == f.nth {
                fired.store(true, Ordering::SeqCst);
                match f.action {
                    Action::Cut => {
                        for s in &pair {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                    Action::Stall => {
                        while !done.load(Ordering::SeqCst) {
                            thread::sleep(Duration::from_millis(20));
                        }
                        for s in &pair {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                    Action::Corrupt => {
                        let i = rest.len() / 2;
                        rest[i] ^= 0x40;
                    }
                }
            }
        }
        if to.write_all(&header).is_err() || to.write_all(&rest).is_err() {
            return;
        }
    }
}
