//! Port I/O devices the VMM emulates: the 16550 UART and the exit port.

use std::io;
use std::sync::Mutex;
use std::time::SystemTime;

use vm_superio::serial::{NoEvents, SerialState as SuperioState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;
use vmstate::{DeviceState, SerialState};

/// COM1.
pub const SERIAL_PORT: u16 = 0x3f8;
/// QEMU isa-debug-exit compatible exit port.
pub const EXIT_PORT: u16 = 0xf4;

/// Receives complete serial lines (each ending in `\n`) with the host time
/// at which the batch that completed them arrived.
pub type SerialSink = Box<dyn FnMut(&[u8], SystemTime) + Send>;

/// Raises the UART's interrupt line through an irqfd.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Collects transmitted bytes until the guest's batch ends.
#[derive(Default)]
pub struct LineBuffer {
    bytes: Vec<u8>,
}

impl io::Write for LineBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Uart = Serial<IrqLine, NoEvents, LineBuffer>;

/// What a port access did, as far as the vCPU loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PioOutcome {
    Handled,
    /// The guest asked to end the VM with this status.
    Exit(i32),
}

/// The VMM's port I/O bus.
pub struct Devices {
    uart: Mutex<Uart>,
    sink: Mutex<SerialSink>,
}

impl Devices {
    pub fn new(irq: EventFd, sink: SerialSink, state: Option<&DeviceState>) -> Self {
        let d = Devices {
            uart: Mutex::new(Serial::new(IrqLine(irq), LineBuffer::default())),
            sink: Mutex::new(sink),
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
            self.flush_lines(&mut uart);
            PioOutcome::Handled
        } else if (EXIT_PORT..EXIT_PORT + 4).contains(&port) && !data.is_empty() {
            let mut v = [0u8; 4];
            let n = data.len().min(4);
            v[..n].copy_from_slice(&data[..n]);
            let value = u32::from_le_bytes(v);
            PioOutcome::Exit(((value << 1) | 1) as i32)
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

    fn flush_lines(&self, uart: &mut Uart) {
        let buf = &mut uart.writer_mut().bytes;
        if let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') {
            let now = SystemTime::now();
            (self.sink.lock().unwrap())(&buf[..=last_nl], now);
            buf.drain(..=last_nl);
        }
    }

    /// Replaces device state with a saved one.
    pub fn restore_state(&self, state: &DeviceState) {
        let mut uart = self.uart.lock().unwrap();
        let irq = uart.interrupt_evt().0.try_clone();
        let st = to_superio(&state.serial);
        let out = LineBuffer {
            bytes: state.serial.pending_line.clone(),
        };
        if let Ok(irq) = irq
            && let Ok(u) = Serial::from_state(&st, IrqLine(irq), NoEvents, out)
        {
            *uart = u;
        }
    }

    /// Device state for a snapshot or migration.
    pub fn save_state(&self) -> DeviceState {
        let uart = self.uart.lock().unwrap();
        DeviceState {
            serial: from_superio(&uart.state(), uart.writer().bytes.clone()),
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
    fn lines_are_delivered_whole_and_partial_lines_survive_save() {
        let (sink, got) = capture();
        let d = Devices::new(EventFd::new(0).unwrap(), sink, None);
        d.pio_write(SERIAL_PORT, b"hello\nwor");
        assert_eq!(&*got.lock().unwrap(), b"hello\n");
        let state = d.save_state();
        assert_eq!(state.serial.pending_line, b"wor");
        let (sink2, got2) = capture();
        let d2 = Devices::new(EventFd::new(0).unwrap(), sink2, Some(&state));
        d2.pio_write(SERIAL_PORT, b"ld\n");
        assert_eq!(&*got2.lock().unwrap(), b"world\n");
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
}
