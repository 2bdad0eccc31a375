//! What post-copy transactions need from the VM: a brief checkpoint of the
//! running VM, serial output held until a transaction is acknowledged, and,
//! on the source, running a retired VM again from a transaction's state.

use std::time::Duration;

use vmstate::VmState;

use super::Vm;
use crate::vcpu::{self, ExitReason, Want};
use crate::{Error, cpu};

impl Vm {
    /// Stops the vCPUs for at most `wait`, runs `f` on the paused VM, and
    /// puts the vCPUs back as they were (paused stays paused; a fence set
    /// meanwhile keeps them stopped). `None`: some vCPU did not stop in
    /// time (one waiting for a missing page), `f` was not run.
    pub fn checkpoint<R>(
        &self,
        wait: Duration,
        f: impl FnOnce(&Vm) -> R,
    ) -> Result<Option<R>, Error> {
        let n = self.vcpus.lock().unwrap().len();
        let mut c = self.shared.ctl.lock().unwrap();
        if let Some(r) = &c.exit {
            return Err(Error::NotRunning(r.clone()));
        }
        let before = c.want;
        c.want = Want::Pause;
        self.shared.cv.notify_all();
        drop(c);
        self.shared.kick_all();
        let deadline = std::time::Instant::now() + wait;
        let mut c = self.shared.ctl.lock().unwrap();
        while c.parked < n && c.exit.is_none() && std::time::Instant::now() < deadline {
            let slice = deadline
                .saturating_duration_since(std::time::Instant::now())
                .min(Duration::from_millis(5));
            c = self.shared.cv.wait_timeout(c, slice).unwrap().0;
            if c.parked < n {
                drop(c);
                self.shared.kick_all();
                c = self.shared.ctl.lock().unwrap();
            }
        }
        let out = if c.parked >= n && c.exit.is_none() {
            drop(c);
            let r = f(self);
            c = self.shared.ctl.lock().unwrap();
            Some(r)
        } else {
            None
        };
        if let Some(r) = &c.exit {
            return Err(Error::NotRunning(r.clone()));
        }
        if before == Want::Run && !c.fenced {
            c.want = Want::Run;
            self.shared.cv.notify_all();
        }
        Ok(out)
    }

    /// Runs a retired VM here again from `state` (its memory as the caller
    /// left it): a post-copy whose destination is certainly fenced gives
    /// the VM back. The vCPU threads that ended at the retirement start
    /// again; a VM that never had any (memory reopened by a restarted
    /// process) gets them from `state`.
    pub fn take_back(&self, state: &VmState) -> Result<(), Error> {
        if self.shared.ctl.lock().unwrap().exit != Some(ExitReason::Migrated) {
            return Err(Error::NotRetired);
        }
        if state.vcpus.len() != self.config.vcpus as usize {
            return Err(Error::VcpuCountMismatch {
                state: state.vcpus.len(),
                config: self.config.vcpus,
            });
        }
        let mut threads = self.vcpus.lock().unwrap();
        if threads.is_empty() {
            // Memory only (a restarted post-copy source, `for_restore_in`):
            // the vCPUs are created from the state, as a restore does.
            drop(threads);
            {
                let mut c = self.shared.ctl.lock().unwrap();
                c.exit = None;
                c.want = Want::Pause;
                c.fenced = false;
            }
            self.restore_state_inner(state)?;
            return self.resume();
        }
        for t in threads.iter_mut() {
            if let Some(h) = t.handle.take() {
                let _ = h.join();
            }
        }
        self.shared.threads.lock().unwrap().clear();
        self.load_machine_state(state)?;
        for (t, s) in threads.iter().zip(&state.vcpus) {
            cpu::restore_state(&t.fd.lock().unwrap(), s)?;
        }
        {
            let mut c = self.shared.ctl.lock().unwrap();
            c.exit = None;
            c.want = Want::Pause;
            c.fenced = false;
        }
        for (id, t) in threads.iter_mut().enumerate() {
            let id = id as u32;
            *t = vcpu::spawn(id, t.fd.clone(), self.shared.clone(), self.devices.clone())
                .map_err(|source| Error::SpawnVcpu { id, source })?;
        }
        drop(threads);
        self.resume()
    }

    /// Interrupt controllers, timer, clock and devices from `state`.
    pub(super) fn load_machine_state(&self, state: &VmState) -> Result<(), Error> {
        let irq = &state.irqchip;
        for chip in [&irq.pic_master, &irq.pic_slave, &irq.ioapic] {
            self.fd.set_irqchip(chip).map_err(Error::SetIrqchip)?;
        }
        self.fd.set_pit2(&irq.pit).map_err(Error::SetPit)?;
        let mut clock = irq.clock;
        clock.flags = 0;
        self.fd.set_clock(&clock).map_err(Error::SetClock)?;
        self.devices.restore_state(&state.devices);
        Ok(())
    }

    /// Holds serial output back from now on (post-copy transactions).
    pub fn hold_serial(&self) {
        self.devices.hold_serial();
    }

    /// Serial bytes produced since holding began.
    pub fn serial_mark(&self) -> u64 {
        self.devices.serial_mark()
    }

    /// Writes held serial output up to `mark`; `None`: all, and stop holding.
    pub fn release_serial(&self, mark: Option<u64>) {
        self.devices.release_serial(mark);
    }
}
