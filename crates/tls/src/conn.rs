//! A connection between hosts: plain TCP, or TLS over it.
//!
//! Ferry reads a connection on one thread while writing it on another, so
//! [`Conn`] behaves like a `TcpStream`: clones share the connection, reads
//! and writes may run at once, timeouts and shutdown act on the socket.
//! With TLS the session state sits behind a lock held only to encrypt or
//! decrypt, never across a blocking socket call; each direction keeps its
//! own ciphertext buffer, held by the one thread reading (or writing).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Ciphertext read from the socket at once.
const RX_BUF: usize = 64 << 10;
/// Plaintext the session encrypts per write.
const TX_LIMIT: usize = 256 << 10;

/// A connection to another host, plain or TLS.
pub struct Conn {
    tcp: TcpStream,
    tls: Option<Arc<Tls>>,
}

struct Tls {
    session: Mutex<rustls::Connection>,
    rx: Mutex<Rx>,
    /// Ciphertext not yet on the socket: goes first on the next write.
    tx: Mutex<Vec<u8>>,
}

/// Ciphertext read but not yet given to the session.
struct Rx {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TLS failure as the I/O error the rest of Ferry sees, one line.
pub(crate) fn tls_io(e: rustls::Error) -> io::Error {
    use rustls::Error as E;
    let msg = match &e {
        E::NoCertificatesPresented => "the peer presented no certificate".to_string(),
        E::InvalidCertificate(rustls::CertificateError::NotValidForName)
        | E::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. }) => {
            "the peer's certificate is not for the host expected (another member answered)"
                .to_string()
        }
        E::InvalidCertificate(c) => {
            format!("the peer's certificate is not valid for this cluster ({c:?})")
        }
        E::AlertReceived(a) => format!("the peer refused the TLS session (alert {a:?})"),
        other => other.to_string(),
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {msg}"))
}

impl From<TcpStream> for Conn {
    /// A plain connection.
    fn from(tcp: TcpStream) -> Conn {
        Conn { tcp, tls: None }
    }
}

fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the TLS handshake did not finish in time",
        ))
    } else {
        Ok(left)
    }
}

impl Conn {
    /// Completes a TLS handshake on `tcp` by `deadline`; the connection
    /// comes out with no socket timeouts.
    pub(crate) fn handshake(
        tcp: TcpStream,
        mut s: rustls::Connection,
        deadline: Instant,
    ) -> io::Result<Conn> {
        while s.is_handshaking() || s.wants_write() {
            if s.wants_write() {
                tcp.set_write_timeout(Some(left(deadline)?))?;
                s.write_tls(&mut &tcp)?;
                continue;
            }
            tcp.set_read_timeout(Some(left(deadline)?))?;
            if s.read_tls(&mut &tcp)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            if let Err(e) = s.process_new_packets() {
                // Tell the peer why (an alert), best effort.
                while s.wants_write() && s.write_tls(&mut &tcp).is_ok() {}
                return Err(tls_io(e));
            }
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        s.set_buffer_limit(Some(TX_LIMIT));
        let rx = Rx {
            buf: vec![0; RX_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        };
        Ok(Conn {
            tcp,
            tls: Some(Arc::new(Tls {
                session: Mutex::new(s),
                rx: Mutex::new(rx),
                tx: Mutex::new(Vec::new()),
            })),
        })
    }

    /// Whether the connection runs TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Another handle to the same connection (as `TcpStream::try_clone`).
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(Conn {
            tcp: self.tcp.try_clone()?,
            tls: self.tls.clone(),
        })
    }

    /// Shuts the socket down. Shutting down writing first sends TLS's
    /// close_notify when no write is under way (a write blocked on the
    /// socket is exactly what a shutdown may be cutting).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let (Some(t), Shutdown::Write) = (&self.tls, how)
            && let Ok(mut tx) = t.tx.try_lock()
        {
            lock(&t.session).send_close_notify();
            let _ = t.send(&self.tcp, &mut tx);
        }
        self.tcp.shutdown(how)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(t)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nodelay(on)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl Tls {
    fn read(&self, tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut rx = lock(&self.rx);
        let rx = &mut *rx;
        loop {
            let wants_write = {
                let mut s = lock(&self.session);
                loop {
                    match s.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // Closed without close_notify: an end of stream as
                        // with TCP; the framing above finds a cut message.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                        Err(e) => return Err(e),
                    }
                    if rx.start == rx.end {
                        break;
                    }
                    rx.start += s.read_tls(&mut &rx.buf[rx.start..rx.end])?;
                    if let Err(e) = s.process_new_packets() {
                        drop(s);
                        self.try_send(tcp);
                        return Err(tls_io(e));
                    }
                }
                s.wants_write()
            };
            if wants_write {
                self.try_send(tcp);
            }
            let n = (&*tcp).read(&mut rx.buf)?;
            (rx.start, rx.end) = (0, n);
            if n == 0 {
                return Ok(0);
            }
        }
    }

    /// Sends what the session has to say outside writes (an alert, a key
    /// update) unless a writer is at it: it then goes with the next write.
    fn try_send(&self, tcp: &TcpStream) {
        if let Ok(mut tx) = self.tx.try_lock() {
            let _ = self.send(tcp, &mut tx);
        }
    }

    fn write(&self, tcp: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        let mut tx = lock(&self.tx);
        self.send(tcp, &mut tx)?;
        let n = lock(&self.session).writer().write(buf)?;
        // Accepted: if the socket fails now, the rest stays queued and the
        // next write or flush reports the error.
        let _ = self.send(tcp, &mut tx);
        Ok(n)
    }

    fn flush(&self, tcp: &TcpStream) -> io::Result<()> {
        let mut tx = lock(&self.tx);
        self.send(tcp, &mut tx)
    }

    /// Writes the queued ciphertext and whatever the session has pending.
    fn send(&self, tcp: &TcpStream, tx: &mut Vec<u8>) -> io::Result<()> {
        {
            let mut s = lock(&self.session);
            while s.wants_write() {
                s.write_tls(tx)?;
            }
        }
        let mut done = 0;
        let result = loop {
            if done == tx.len() {
                break Ok(());
            }
            match (&*tcp).write(&tx[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        tx.drain(..done);
        result
    }
}

impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.tcp).read(buf),
            Some(t) => t.read(&self.tcp, buf),
        }
    }
}

impl Write for &Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.tcp).write(buf),
            Some(t) => t.write(&self.tcp, buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.tls {
            None => Ok(()),
            Some(t) => t.flush(&self.tcp),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("tcp", &self.tcp)
            .field("tls", &self.is_tls())
            .finish()
    }
}
