//! A frame-aware TCP proxy that injects one failure into a migration at a
//! chosen frame: cut both connections, stall both directions, or corrupt a
//! payload byte. For tests of the engine (`migrate`'s own) and of whole
//! Ferry processes (`ferry`'s safety suite); docs/SAFETY.md lists them.
//!
//! The proxy follows frame boundaries (`vmstate::frame`) in the faulted
//! direction, so a fault lands before, inside or just after the n-th frame
//! of a kind, optionally only once enough bytes have gone by or once the
//! test has armed it (at a point it judged from the migration's progress).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vmstate::frame::{FRAME_HEADER_LEN, FRAME_TRAILER_LEN};

/// A direction of the migration stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Source -> destination.
    ToDest,
    /// Destination -> source.
    ToSource,
}

/// What the proxy does at the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close both connections.
    Cut,
    /// Stop forwarding in both directions, keep the connections open (until
    /// [`Proxy::sever`] or the proxy is dropped).
    Stall,
    /// Flip one byte in the middle of the frame's payload (its CRC if it has
    /// none) and keep forwarding.
    Corrupt,
}

/// Where in the chosen frame a [`Action::Cut`] or [`Action::Stall`] lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spot {
    /// Before its first byte: the peer gets none of it.
    Before,
    /// Half way through its payload: the peer reads a truncated frame.
    Inside,
    /// Just after its last byte: the peer gets all of it, and nothing more.
    After,
}

/// One fault: the `nth` frame of `kind` going in `dir` that starts at or
/// after `min_bytes` of that direction's stream while the fault is armed.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub dir: Dir,
    /// Frame kind (`vmstate::record::kind` or `wire::kind`).
    pub kind: u8,
    /// 1-based.
    pub nth: u32,
    pub min_bytes: u64,
    /// Only frames whose payload starts with this little-endian u64 count
    /// (e.g. the final LeaseGrant, the one answering request 0).
    pub first_word: Option<u64>,
    /// Where in the frame; [`Action::Corrupt`] needs [`Spot::Inside`].
    pub spot: Spot,
    pub action: Action,
    /// If false, frames count only from [`Proxy::arm`] on.
    pub armed: bool,
}

impl Fault {
    /// `action` inside the first frame of `kind` going in `dir`, armed.
    pub fn new(dir: Dir, kind: u8, action: Action) -> Fault {
        Fault {
            dir,
            kind,
            nth: 1,
            min_bytes: 0,
            first_word: None,
            spot: Spot::Inside,
            action,
            armed: true,
        }
    }

    /// On the `n`-th matching frame (1-based) instead of the first.
    pub fn nth(self, n: u32) -> Fault {
        Fault { nth: n, ..self }
    }

    /// Only frames starting at or after `bytes` of the stream count.
    pub fn after_bytes(self, bytes: u64) -> Fault {
        Fault {
            min_bytes: bytes,
            ..self
        }
    }

    /// Only frames whose payload starts with `word` (little endian).
    pub fn starting_with(self, word: u64) -> Fault {
        Fault {
            first_word: Some(word),
            ..self
        }
    }

    pub fn at(self, spot: Spot) -> Fault {
        Fault { spot, ..self }
    }

    /// Frames count only once [`Proxy::arm`] is called.
    pub fn disarmed(self) -> Fault {
        Fault {
            armed: false,
            ..self
        }
    }
}

/// State shared by the proxy's threads.
struct Shared {
    fault: Option<Fault>,
    armed: AtomicBool,
    fired: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn sever(&self) {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns.iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn stalled(&self) -> bool {
        self.fired.load(Ordering::SeqCst) && self.fault.is_some_and(|f| f.action == Action::Stall)
    }
}

/// A proxy between source and destination, injecting at most one
/// [`Fault`] into the first connection; later connections (a source that
/// reconnects) are forwarded untouched. Dropping it closes them all.
pub struct Proxy {
    /// Where the source should connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// The later connections' state (no fault).
    clean: Arc<Shared>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards the first
    /// connection to `target`, applying `fault` (or none).
    pub fn start(target: SocketAddr, fault: Option<Fault>) -> io::Result<Proxy> {
        if let Some(f) = fault
            && f.action == Action::Corrupt
            && f.spot != Spot::Inside
        {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "a corrupted byte can only be placed inside a frame",
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault,
            armed: AtomicBool::new(fault.is_some_and(|f| f.armed)),
            fired: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let clean = Arc::new(Shared {
            fault: None,
            armed: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let (sh, cl) = (Arc::clone(&shared), Arc::clone(&clean));
        thread::spawn(move || {
            let mut first = true;
            while !sh.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = connect(client, target, if first { &sh } else { &cl });
                        first = false;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Proxy {
            addr,
            shared,
            clean,
        })
    }

    /// Lets a disarmed fault fire from now on.
    pub fn arm(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// Whether the fault was injected (the chosen frame went by).
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` for the fault to be injected; returns whether it was.
    pub fn wait_fired(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while !self.fired() {
            if Instant::now() > end {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Closes both ends of the first connection now (ends a stall).
    pub fn sever(&self) {
        self.shared.sever();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for sh in [&self.shared, &self.clean] {
            sh.stop.store(true, Ordering::SeqCst);
            sh.sever();
        }
    }
}

/// Connects `client` to `target` and starts one pump per direction.
fn connect(client: TcpStream, target: SocketAddr, sh: &Arc<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(target)?;
    for s in [&client, &server] {
        // Pumps wake up to notice a stop or a stall.
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        sh.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.try_clone()?);
    }
    let (c, s) = (client.try_clone()?, server.try_clone()?);
    let up = Arc::clone(sh);
    thread::spawn(move || pump(c, s, Dir::ToDest, &up));
    let down = Arc::clone(sh);
    thread::spawn(move || pump(server, client, Dir::ToSource, &down));
    Ok(())
}

/// Follows frame boundaries in one direction's stream.
#[derive(Default)]
struct Frames {
    /// Bytes of the current frame's payload and CRC not yet scanned.
    rest: u64,
    /// Matching frames seen so far.
    seen: u32,
}

impl Frames {
    /// Scans `data`, the stream from absolute offset `at`. Returns how many
    /// bytes were scanned (a header cut short at the end is left for the next
    /// call) and, once the fault's frame header is read, the absolute offset
    /// where the fault goes.
    fn scan(&mut self, data: &[u8], at: u64, f: &Fault, armed: bool) -> (usize, Option<u64>) {
        let mut i = 0usize;
        loop {
            if self.rest > 0 {
                let n = (data.len() - i).min(usize::try_from(self.rest).unwrap_or(usize::MAX));
                self.rest -= n as u64;
                i += n;
            }
            if data.len() - i < FRAME_HEADER_LEN {
                return (i, None);
            }
            let header = &data[i..i + FRAME_HEADER_LEN];
            let len = u64::from(u32::from_le_bytes([
                header[4], header[5], header[6], header[7],
            ]));
            let start = at + i as u64;
            let mut matches = armed && header[0] == f.kind && start >= f.min_bytes;
            if let (true, Some(word)) = (matches, f.first_word) {
                let payload = &data[i + FRAME_HEADER_LEN..];
                if len >= 8 && payload.len() < 8 {
                    // Its first word is not here yet.
                    return (i, None);
                }
                matches = len >= 8 && payload[..8] == word.to_le_bytes();
            }
            i += FRAME_HEADER_LEN;
            self.rest = len + FRAME_TRAILER_LEN as u64;
            if matches {
                self.seen += 1;
                if self.seen == f.nth {
                    let payload = start + FRAME_HEADER_LEN as u64;
                    let spot = match f.spot {
                        Spot::Before => start,
                        Spot::Inside => payload + len / 2,
                        Spot::After => payload + len + FRAME_TRAILER_LEN as u64,
                    };
                    return (i, Some(spot));
                }
            }
        }
    }
}

/// Forwards `from` to `to` in direction `dir`, injecting the fault if it
/// belongs to this direction.
fn pump(mut from: TcpStream, mut to: TcpStream, dir: Dir, sh: &Shared) {
    let fault = sh.fault.filter(|f| f.dir == dir);
    let mut frames = Frames::default();
    // Bytes read but not yet forwarded, starting at stream offset `at`.
    let mut buf = Vec::new();
    let mut at = 0u64;
    let mut target: Option<u64> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    while !sh.stop.load(Ordering::SeqCst) {
        if sh.stalled() {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let n = match from.read(&mut chunk) {
            Ok(0) => {
                let _ = to.write_all(&buf);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                sh.sever();
                return;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        if sh.stalled() {
            // Read as the stall began: held back like the rest.
            continue;
        }
        let mut ready = buf.len();
        let mut act = None;
        if let Some(f) = fault.filter(|_| !sh.fired.load(Ordering::SeqCst)) {
            if target.is_none() {
                let armed = sh.armed.load(Ordering::SeqCst);
                let (scanned, t) = frames.scan(&buf, at, &f, armed);
                target = t;
                if t.is_none() {
                    ready = scanned;
                }
            }
            let end = at + buf.len() as u64;
            if let Some(x) = target {
                if f.action == Action::Corrupt && x < end {
                    buf[(x - at) as usize] ^= 0x5a;
                    act = Some(f.action);
                } else if f.action != Action::Corrupt && x <= end {
                    ready = (x - at) as usize;
                    act = Some(f.action);
                }
            }
        }
        if to.write_all(&buf[..ready]).is_err() {
            sh.sever();
            return;
        }
        buf.drain(..ready);
        at += ready as u64;
        if let Some(a) = act {
            sh.fired.store(true, Ordering::SeqCst);
            if a == Action::Cut {
                sh.sever();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![kind, 0, 0, 0];
        f.extend_from_slice(&(payload as u32).to_le_bytes());
        f.resize(FRAME_HEADER_LEN + payload + FRAME_TRAILER_LEN, 0xee);
        f
    }

    /// Feeds `stream` to a tracker in chunks of `step`, as the pump does.
    fn place(stream: &[u8], f: &Fault, step: usize) -> Option<u64> {
        let mut frames = Frames::default();
        let (mut buf, mut at, mut fed) = (Vec::new(), 0u64, 0usize);
        while fed < stream.len() {
            let n = step.min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            let (scanned, t) = frames.scan(&buf, at, f, true);
            if t.is_some() {
                return t;
            }
            buf.drain(..scanned);
            at += scanned as u64;
        }
        None
    }

    #[test]
    fn a_frame_is_told_by_its_first_word_whatever_the_chunking() {
        // Kind 7 at 0 (payload starting with 5), at 28 (with 0), and a
        // frame too short to hold a word at 56.
        let mut a = frame(7, 16);
        a[8..16].copy_from_slice(&5u64.to_le_bytes());
        let mut b = frame(7, 16);
        b[8..16].copy_from_slice(&0u64.to_le_bytes());
        let stream = [a, b, frame(7, 4)].concat();
        let f = Fault::new(Dir::ToDest, 7, Action::Cut).at(Spot::Before);
        for step in [1, 3, 8, 9, 15, 64] {
            assert_eq!(place(&stream, &f.starting_with(0), step), Some(28));
            assert_eq!(place(&stream, &f.starting_with(5), step), Some(0));
            assert_eq!(place(&stream, &f.starting_with(9), step), None);
        }
    }

    #[test]
    fn faults_land_where_asked_whatever_the_chunking() {
        // Frames at 0 (kind 3, 100 bytes), 112 (kind 5, 0 bytes), 124 (kind 3, 10 bytes).
        let stream = [frame(3, 100), frame(5, 0), frame(3, 10)].concat();
        let pages = Fault::new(Dir::ToDest, 3, Action::Cut);
        for step in [1, 3, 7, 8, 64, 4096] {
            assert_eq!(place(&stream, &pages, step), Some(8 + 50), "step {step}");
            let second = pages.nth(2);
            assert_eq!(place(&stream, &second, step), Some(124 + 8 + 5));
            assert_eq!(
                place(&stream, &pages.after_bytes(1), step),
                Some(124 + 8 + 5)
            );
            assert_eq!(place(&stream, &second.at(Spot::Before), step), Some(124));
            assert_eq!(place(&stream, &second.at(Spot::After), step), Some(146));
            let state = Fault::new(Dir::ToDest, 5, Action::Corrupt);
            // No payload: the first CRC byte.
            assert_eq!(place(&stream, &state, step), Some(112 + 8));
            assert_eq!(place(&stream, &pages.nth(3), step), None);
        }
    }

    #[test]
    fn a_corrupt_byte_must_be_inside_a_frame() {
        let f = Fault::new(Dir::ToDest, 3, Action::Corrupt).at(Spot::Before);
        let target = "127.0.0.1:9".parse().unwrap();
        assert!(Proxy::start(target, Some(f)).is_err());
    }
}
