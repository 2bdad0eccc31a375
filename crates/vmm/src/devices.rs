//! Port I/O devices the VMM emulates: the 16550 UART, the exit port and
//! the idle port.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use vm_superio::serial::{NoEvents, SerialState as SuperioState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;
use vmstate::{DeviceState, SerialState};

/// COM1.
pub const SERIAL_PORT: u16 = 0x3f8;
/// QEMU isa-debug-exit compatible exit port.
pub const EXIT_PORT: u16 = 0xf4;
/// Ferry's idle port: a 32-bit write of N asks for the vCPU to stay out
/// of the guest for N µs, at most [`MAX_IDLE`] (a guest in ring 3 cannot
/// `hlt`). Nothing else claims it on a PC; QEMU ignores it.
pub const IDLE_PORT: u16 = 0xe0;
/// Longest time out of the guest one idle write asks for: a guest that
/// wants more writes again, so it keeps polling its own clock.
pub const MAX_IDLE: Duration = Duration::from_millis(10);

/// Receives the bytes the guest writes to the UART, as it writes them (as
/// QEMU and Firecracker forward them), with the host time they arrived:
/// a prompt without a newline shows at once. Sinks that want whole lines
/// (e.g. to stamp them) keep the partial one themselves. A restored VM
/// first replays the line that was unfinished when its state was saved,
/// so a line cut by a migration arrives whole on the destination.
pub type SerialSink = Box<dyn FnMut(&[u8], SystemTime) + Send>;

/// Most bytes of an unfinished line kept for a replay (the newest ones).
pub const MAX_LINE: usize = 4096;

/// Raises the UART's interrupt line through an irqfd.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The bytes one port write transmits, for the sink, and the output line
/// they belong to so far (already forwarded; saved with the state).
#[derive(Default)]
pub struct TxBuffer {
    bytes: Vec<u8>,
    line: Vec<u8>,
}

impl TxBuffer {
    /// Takes the bytes to forward and follows the unfinished line.
    fn take(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.bytes);
        match out.iter().rposition(|&b| b == b'\n') {
            Some(nl) => {
                self.line.clear();
                self.line.extend_from_slice(&out[nl + 1..]);
            }
            None => self.line.extend_from_slice(&out),
        }
        if self.line.len() > MAX_LINE {
            self.line.drain(..self.line.len() - MAX_LINE);
        }
        out
    }
}

impl io::Write for TxBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Uart = Serial<IrqLine, NoEvents, TxBuffer>;

/// What a port access did, as far as the vCPU loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PioOutcome {
    Handled,
    /// The guest asked to end the VM with this status.
    Exit(i32),
    /// The guest has nothing to do for this long (at most [`MAX_IDLE`]).
    Idle(Duration),
}

/// The VMM's port I/O bus.
pub struct Devices {
    uart: Mutex<Uart>,
    sink: Mutex<SerialSink>,
    /// Output held back while a post-copy destination synchronizes
    /// transactions (`None`: forwarded at once).
    held: Mutex<Option<Held>>,
}

/// Serial output produced but not released yet: chunks with the running
/// byte count at their end and the time they were produced.
#[derive(Default)]
struct Held {
    chunks: std::collections::VecDeque<(u64, SystemTime, Vec<u8>)>,
    total: u64,
}

impl Devices {
    pub fn new(irq: EventFd, sink: SerialSink, state: Option<&DeviceState>) -> Self {
        let d = Devices {
            uart: Mutex::new(Serial::new(IrqLine(irq), TxBuffer::default())),
            sink: Mutex::new(sink),
            held: Mutex::new(None),
        };
        if let Some(s) = state {
            d.restore_state(s);
        }
        d
    }

    /// Handles an `out` of `data` to `port`.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> PioOutcome {
        if (SERIAL_PORT..SERIAL_PORT + 8).contains(&port) {
            let mut uart = self.uart.lock().unwrap();
            let offset = (port - SERIAL_PORT) as u8;
            for &b in data {
                // A failed interrupt write cannot be reported to the guest; the byte is kept.
                let _ = uart.write(offset, b);
            }
            self.forward(&mut uart);
            PioOutcome::Handled
        } else if (EXIT_PORT..EXIT_PORT + 4).contains(&port) && !data.is_empty() {
            let mut v = [0u8; 4];
            let n = data.len().min(4);
            v[..n].copy_from_slice(&data[..n]);
            let value = u32::from_le_bytes(v);
            PioOutcome::Exit(((value << 1) | 1) as i32)
        } else if port == IDLE_PORT && data.len() == 4 {
            let us = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            PioOutcome::Idle(Duration::from_micros(u64::from(us)).min(MAX_IDLE))
        } else {
            PioOutcome::Handled
        }
    }

    /// Handles an `in` from `port`; unclaimed ports read as all ones.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        if (SERIAL_PORT..SERIAL_PORT + 8).contains(&port) {
            let mut uart = self.uart.lock().unwrap();
            let offset = (port - SERIAL_PORT) as u8;
            for b in data.iter_mut() {
                *b = uart.read(offset);
            }
        } else {
            data.fill(0xff);
        }
    }

    /// Hands what the guest transmitted to the sink at once.
    fn forward(&self, uart: &mut Uart) {
        let out = uart.writer_mut().take();
        if out.is_empty() {
            return;
        }
        if let Some(h) = self.held.lock().unwrap().as_mut() {
            h.total += out.len() as u64;
            h.chunks.push_back((h.total, SystemTime::now(), out));
            return;
        }
        (self.sink.lock().unwrap())(&out, SystemTime::now());
    }

    /// From now on serial output is held until [`release_serial`](Self::release_serial).
    pub fn hold_serial(&self) {
        self.held.lock().unwrap().get_or_insert_with(Held::default);
    }

    /// Bytes of serial output produced since holding began.
    pub fn serial_mark(&self) -> u64 {
        self.held.lock().unwrap().as_ref().map_or(0, |h| h.total)
    }

    /// Writes held output up to `mark` (a [`serial_mark`](Self::serial_mark))
    /// to the sink, with the times it was produced; `None`: all of it, and
    /// stop holding.
    pub fn release_serial(&self, mark: Option<u64>) {
        let mut held = self.held.lock().unwrap();
        let Some(h) = held.as_mut() else {
            return;
        };
        let mut sink = self.sink.lock().unwrap();
        while let Some((end, _, _)) = h.chunks.front() {
            if mark.is_some_and(|m| *end > m) {
                break;
            }
            if let Some((_, at, bytes)) = h.chunks.pop_front() {
                sink(&bytes, at);
            }
        }
        if mark.is_none() {
            *held = None;
        }
    }

    /// Replaces device state with a saved one, and replays the line that
    /// was unfinished then (`pending_line`) to the sink. A line this device
    /// had left unfinished (the VM went elsewhere and came back) is ended
    /// first, so the replay does not glue onto it; unless it is that very
    /// line (the VM comes back to where it left: taken back from the state
    /// at the switch), which then simply goes on.
    pub fn restore_state(&self, state: &DeviceState) {
        let mut uart = self.uart.lock().unwrap();
        let irq = uart.interrupt_evt().0.try_clone();
        let st = to_superio(&state.serial);
        let pending = &state.serial.pending_line;
        let out = if !pending.is_empty() && uart.writer().line == *pending {
            TxBuffer {
                bytes: Vec::new(),
                line: pending.clone(),
            }
        } else {
            let mut bytes = Vec::new();
            if !uart.writer().line.is_empty() {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(pending);
            TxBuffer {
                bytes,
                line: Vec::new(),
            }
        };
        if let Ok(irq) = irq
            && let Ok(u) = Serial::from_state(&st, IrqLine(irq), NoEvents, out)
        {
            *uart = u;
        }
        self.forward(&mut uart);
    }

    /// Device state for a snapshot or migration; `pending_line` is the
    /// unfinished line (every byte of it was forwarded already).
    pub fn save_state(&self) -> DeviceState {
        let uart = self.uart.lock().unwrap();
        DeviceState {
            serial: from_superio(&uart.state(), uart.writer().line.clone()),
        }
    }
}

fn from_superio(s: &SuperioState, pending_line: Vec<u8>) -> SerialState {
    SerialState {
        baud_divisor_low: s.baud_divisor_low,
        baud_divisor_high: s.baud_divisor_high,
        interrupt_enable: s.interrupt_enable,
        interrupt_identification: s.interrupt_identification,
        line_control: s.line_control,
        line_status: s.line_status,
        modem_control: s.modem_control,
        modem_status: s.modem_status,
        scratch: s.scratch,
        in_buffer: s.in_buffer.clone(),
        pending_line,
    }
}

fn to_superio(s: &SerialState) -> SuperioState {
    SuperioState {
        baud_divisor_low: s.baud_divisor_low,
        baud_divisor_high: s.baud_divisor_high,
        interrupt_enable: s.interrupt_enable,
        interrupt_identification: s.interrupt_identification,
        line_control: s.line_control,
        line_status: s.line_status,
        modem_control: s.modem_control,
        modem_status: s.modem_status,
        scratch: s.scratch,
        // vm-superio refuses more than its 64-byte FIFO; keep the newest bytes.
        in_buffer: s.in_buffer[s.in_buffer.len().saturating_sub(64)..].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    fn capture() -> (SerialSink, Arc<StdMutex<Vec<u8>>>) {
        let got = Arc::new(StdMutex::new(Vec::new()));
        let g = got.clone();
        (
            Box::new(move |b: &[u8], _| g.lock().unwrap().extend_from_slice(b)),
            got,
        )
    }

    #[test]
    fn every_byte_is_forwarded_as_written() {
        let (sink, got) = capture();
        let d = Devices::new(EventFd::new(0).unwrap(), sink, None);
        // One character at a time, as a guest printing a dot per heartbeat.
        d.pio_write(SERIAL_PORT, b".");
        assert_eq!(&*got.lock().unwrap(), b".");
        d.pio_write(SERIAL_PORT, b"login: ");
        assert_eq!(&*got.lock().unwrap(), b".login: ");
        // The unfinished line is kept for a replay; a newline ends it.
        assert_eq!(d.save_state().serial.pending_line, b".login: ");
        d.pio_write(SERIAL_PORT, b"root\nhel");
        assert_eq!(d.save_state().serial.pending_line, b"hel");
        d.pio_write(SERIAL_PORT, &[b'x'; MAX_LINE + 10]);
        assert_eq!(d.save_state().serial.pending_line.len(), MAX_LINE);
    }

    #[test]
    fn a_line_cut_by_a_migration_arrives_whole_on_the_other_side() {
        let (sink, got) = capture();
        let d = Devices::new(EventFd::new(0).unwrap(), sink, None);
        d.pio_write(SERIAL_PORT, b"hello\nwor");
        assert_eq!(&*got.lock().unwrap(), b"hello\nwor");
        let state = d.save_state();
        let (sink2, got2) = capture();
        let d2 = Devices::new(EventFd::new(0).unwrap(), sink2, Some(&state));
        assert_eq!(&*got2.lock().unwrap(), b"wor");
        d2.pio_write(SERIAL_PORT, b"ld\n");
        assert_eq!(&*got2.lock().unwrap(), b"world\n");
        assert!(d2.save_state().serial.pending_line.is_empty());
    }

    #[test]
    fn a_vm_taken_back_ends_the_line_it_left_before_the_replay() {
        let (sink, got) = capture();
        let d = Devices::new(EventFd::new(0).unwrap(), sink, None);
        d.pio_write(SERIAL_PORT, b"HB 1\nHB 2 ra");
        // It ran elsewhere meanwhile; it comes back cut inside line 7.
        let mut later = d.save_state();
        later.serial.pending_line = b"HB 7 r".to_vec();
        d.restore_state(&later);
        assert_eq!(&*got.lock().unwrap(), b"HB 1\nHB 2 ra\nHB 7 r");
        d.pio_write(SERIAL_PORT, b"ate\n");
        assert!(got.lock().unwrap().ends_with(b"\nHB 7 rate\n"));
    }

    #[test]
    fn a_vm_taken_back_to_where_it_left_goes_on_with_its_line() {
        let (sink, got) = capture();
        let d = Devices::new(EventFd::new(0).unwrap(), sink, None);
        d.pio_write(SERIAL_PORT, b"HB 1\nHB 2 ra");
        d.restore_state(&d.save_state());
        d.pio_write(SERIAL_PORT, b"te\n");
        assert_eq!(&*got.lock().unwrap(), b"HB 1\nHB 2 rate\n");
        assert!(d.save_state().serial.pending_line.is_empty());
    }

    #[test]
    fn exit_port_follows_isa_debug_exit() {
        let (sink, _) = capture();
        let d = Devices::new(EventFd::new(0).unwrap(), sink, None);
        assert_eq!(d.pio_write(EXIT_PORT, &[0, 0, 0, 0]), PioOutcome::Exit(1));
        assert_eq!(d.pio_write(EXIT_PORT, &[3]), PioOutcome::Exit(7));
        let mut b = [0u8; 1];
        d.pio_read(0x80, &mut b);
        assert_eq!(b[0], 0xff);
    }

    #[test]
    fn idle_port_asks_for_a_bounded_rest() {
        let (sink, _) = capture();
        let d = Devices::new(EventFd::new(0).unwrap(), sink, None);
        let idle = |us: u32| d.pio_write(IDLE_PORT, &us.to_le_bytes());
        assert_eq!(idle(1000), PioOutcome::Idle(Duration::from_millis(1)));
        assert_eq!(idle(u32::MAX), PioOutcome::Idle(MAX_IDLE));
        assert_eq!(idle(0), PioOutcome::Idle(Duration::ZERO));
        // Only a 32-bit write is a request.
        assert_eq!(d.pio_write(IDLE_PORT, &[5]), PioOutcome::Handled);
    }
}
