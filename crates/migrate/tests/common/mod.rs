//! Test helpers: a destination thread and a rogue server.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
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
