//! Test helpers: a destination thread, and a frame-aware TCP proxy that
//! injects failures (cut, stall, corrupt) at a chosen frame.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use migrate::fake::{FakeDestVm, FakeFactory};
use migrate::{DestOptions, MigrateError, Received, Secret};

pub const SECRET: &[u8] = b"test secret: 32 bytes of entropy";

pub fn secret() -> Secret {
    Secret::from_bytes(SECRET).unwrap()
}

pub type DestResult = Result<Received<FakeDestVm>, MigrateError>;

/// Starts a destination that accepts one connection.
pub fn start_dest(factory: FakeFactory, opts: DestOptions) -> (SocketAddr, JoinHandle<DestResult>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut f = factory;
        migrate::accept_one(&listener, &mut f, &opts)
    });
    (addr, h)
}

pub fn dest_opts(max_memory: u64) -> DestOptions {
    let mut o = DestOptions::new(secret(), max_memory);
    o.stall_timeout = Duration::from_secs(2);
    o
}

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

/// A proxy between source and destination; dropping it releases stalled connections.
pub struct Proxy {
    pub addr: SocketAddr,
    done: Arc<AtomicBool>,
    /// Set once the fault was injected.
    pub fired: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

impl Proxy {
    pub fn start(target: SocketAddr, fault: Option<Fault>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
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
            let pair = [client.try_clone().unwrap(), server.try_clone().unwrap()];
            let up = {
                let (from, to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (d, f) = (Arc::clone(&d), Arc::clone(&f));
                let fault = fault.filter(|x| x.dir == Dir::ToDest);
                let pair = [pair[0].try_clone().unwrap(), pair[1].try_clone().unwrap()];
                thread::spawn(move || pump(from, to, fault, pair, d, f))
            };
            let fault = fault.filter(|x| x.dir == Dir::ToSource);
            pump(server, client, fault, pair, d, f);
            let _ = up.join();
        });
        Proxy { addr, done, fired }
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
        let len = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
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

/// A server that accepts one connection and answers with `reply` (or nothing), then waits.
pub fn rogue_server(reply: Option<Vec<u8>>, hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            if let Some(r) = reply {
                let _ = s.write_all(&r);
            }
            thread::sleep(hold);
        }
    });
    addr
}
