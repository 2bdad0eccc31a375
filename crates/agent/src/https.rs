//! `/metrics` behind mutual TLS, for a host with certificates: a scraper
//! must show a certificate of the cluster CA (docs/SECURITY.md). Each
//! connection on a thread of its own, at most [`MAX_CONNECTIONS`] at once
//! and each bounded by a deadline: a peer that stalls holds one slot for a
//! few seconds, never the scrapes of others.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// From accept to the answer written.
const DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 << 10;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 8;
/// How often the accept loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Serves `GET /metrics` over TLS from a thread until dropped.
pub(crate) struct HttpsServer {
    stop: Arc<AtomicBool>,
    pub(crate) addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl HttpsServer {
    pub(crate) fn start(
        listener: TcpListener,
        creds: tls::Credentials,
        metrics: Arc<Metrics>,
    ) -> io::Result<HttpsServer> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let creds = Arc::new(creds);
        let busy = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("metrics-tls".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((tcp, peer)) => {
                            if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                                busy.fetch_sub(1, Ordering::SeqCst);
                                tracing::warn!(%peer, "metrics: {MAX_CONNECTIONS} connections open already, closed");
                                continue;
                            }
                            let (c, m, b) = (creds.clone(), metrics.clone(), busy.clone());
                            let spawned = std::thread::Builder::new()
                                .name("metrics-conn".into())
                                .spawn(move || {
                                    if let Err(e) = serve(tcp, &c, &m) {
                                        tracing::warn!(%peer, "metrics: refused peer: {e}");
                                    }
                                    b.fetch_sub(1, Ordering::SeqCst);
                                });
                            if let Err(e) = spawned {
                                busy.fetch_sub(1, Ordering::SeqCst);
                                tracing::warn!(%peer, "metrics: no thread for the connection: {e}");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                        Err(e) => {
                            tracing::debug!("metrics: accept failed: {e}");
                            std::thread::sleep(POLL);
                        }
                    }
                }
            })?;
        Ok(HttpsServer {
            stop,
            addr,
            thread: Some(thread),
        })
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: TLS, the request head, the answer, close.
fn serve(tcp: TcpStream, creds: &tls::Credentials, metrics: &Metrics) -> io::Result<()> {
    tcp.set_nonblocking(false)?;
    let deadline = Instant::now() + DEADLINE;
    let conn = creds.accept(tcp, deadline)?;
    conn.set_read_timeout(Some(DEADLINE))?;
    conn.set_write_timeout(Some(DEADLINE))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD || Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long or too slow",
            ));
        }
        let n = (&conn).read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = match line {
        b"GET /metrics HTTP/1.1" | b"GET /metrics HTTP/1.0" => ("200 OK", metrics.text()),
        _ => ("404 Not Found", "not found: try GET /metrics\n".to_string()),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    (&conn).write_all(answer.as_bytes())?;
    (&conn).flush()?;
    conn.shutdown(std::net::Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::TempDir;

    fn get(addr: SocketAddr, creds: &tls::Credentials) -> io::Result<String> {
        let tcp = TcpStream::connect(addr)?;
        let conn = creds.connect(tcp, Instant::now() + DEADLINE)?;
        (&conn).write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        (&conn).read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn members_scrape_and_strangers_are_refused() {
        let d = TempDir::new("metrics-tls");
        tls::pki::init(&d.join("ours"), &["a".into(), "scraper".into()]).unwrap();
        tls::pki::init(&d.join("theirs"), &["x".into()]).unwrap();
        let load = |p: &str| tls::Credentials::load(&d.join(p)).unwrap();
        let metrics = Arc::new(Metrics::new("a").unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = HttpsServer::start(listener, load("ours/a"), metrics).unwrap();
        let answer = get(server.addr, &load("ours/scraper")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("ferry_"), "{answer}");
        let e = get(server.addr, &load("theirs/x")).unwrap_err().to_string();
        assert!(e.contains("not valid for this cluster"), "{e}");
        // Plain HTTP gets nothing.
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out);
        assert!(!String::from_utf8_lossy(&out).contains("ferry_"));
        // A peer that connects and says nothing does not hold up others.
        let _silent = TcpStream::connect(server.addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let answer = get(server.addr, &load("ours/scraper")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
}
