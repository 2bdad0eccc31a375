//! The socket writer: paces writes with the token bucket and counts bytes.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tls::Conn;

use crate::limiter::TokenBucket;
use crate::progress::Progress;
use units::Bandwidth;

/// Largest write handed to the socket at once, so rate limiting stays smooth.
pub(super) const WRITE_SLICE: usize = 256 * 1024;

/// The rate-limited, counting writer under the message writer.
pub(super) struct Meter {
    stream: Conn,
    bucket: TokenBucket,
    bytes: u64,
    progress: Arc<Progress>,
    /// The socket's write timeout: one write that took this long and still
    /// left bytes unsent is a stall.
    stall: Duration,
}

impl Meter {
    pub(super) fn new(
        stream: Conn,
        rate: Option<Bandwidth>,
        progress: Arc<Progress>,
        stall: Duration,
    ) -> Self {
        Meter {
            stream,
            bucket: TokenBucket::new(rate),
            bytes: 0,
            progress,
            stall,
        }
    }

    /// Bytes handed to the socket so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes written to the socket that the kernel has not sent yet (0 if
    /// it cannot tell): post-copy keeps this short so that a requested page
    /// never queues behind much background data.
    pub(super) fn queued(&self) -> u64 {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int for a TCP socket we own.
        let r = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 { n.max(0) as u64 } else { 0 }
    }

    /// Changes the rate limit (`None` = unlimited).
    pub(super) fn set_rate(&mut self, rate: Option<Bandwidth>) {
        self.bucket.set_rate(rate);
    }
}

impl Write for Meter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // At low rates, smaller slices keep each sleep short (cancellation
        // and stall detection stay responsive): at most ~20 ms of data.
        let slice = match self.bucket.rate() {
            Some(r) => ((r.bytes_per_sec() / 50) as usize).clamp(4096, WRITE_SLICE),
            None => WRITE_SLICE,
        };
        let n = buf.len().min(slice);
        self.bucket.consume(n as u64);
        let started = Instant::now();
        let w = (&self.stream).write(&buf[..n])?;
        self.bytes += w as u64;
        self.progress.set_sent(self.bytes);
        if w < n && started.elapsed() >= self.stall {
            // The kernel's timeout ran out with part of the slice unsent:
            // the peer stopped reading. Another write would only wait a
            // whole timeout more before saying so.
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(w)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&self.stream).flush()
    }
}

/// The tighter of two optional caps.
pub(super) fn min_bandwidth(a: Option<Bandwidth>, b: Option<Bandwidth>) -> Option<Bandwidth> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
