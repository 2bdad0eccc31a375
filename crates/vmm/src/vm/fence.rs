//! Fencing: stopping a VM's vCPUs from any thread and keeping them
//! stopped, as a post-copy destination does when its lease lapses.

use std::sync::Arc;
use std::time::Duration;

use super::Vm;
use crate::Error;
use crate::vcpu::{Shared, Want};

/// Fences a VM from any thread (see [`Vm::fence_handle`]).
#[derive(Clone)]
pub struct FenceHandle {
    shared: Arc<Shared>,
}

impl FenceHandle {
    /// Stops every vCPU and refuses any resume until [`lift`](Self::lift);
    /// waits up to `wait` for them to leave the guest and says whether
    /// they all did (one waiting for a missing page runs no guest code,
    /// and leaves as soon as the page arrives).
    pub fn fence(&self, wait: Duration) -> bool {
        let mut c = self.shared.ctl.lock().unwrap();
        c.fenced = true;
        if c.exit.is_some() {
            return true;
        }
        c.want = Want::Pause;
        self.shared.cv.notify_all();
        drop(c);
        self.shared.kick_all();
        let n = self.shared.threads.lock().unwrap().len();
        let deadline = std::time::Instant::now() + wait;
        let mut c = self.shared.ctl.lock().unwrap();
        while c.parked < n && c.exit.is_none() {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(20));
            c = self.shared.cv.wait_timeout(c, slice).unwrap().0;
            if c.parked < n {
                drop(c);
                self.shared.kick_all();
                c = self.shared.ctl.lock().unwrap();
            }
        }
        true
    }

    /// Ends the fence; with `run`, the vCPUs run again.
    pub fn lift(&self, run: bool) -> Result<(), Error> {
        let mut c = self.shared.ctl.lock().unwrap();
        c.fenced = false;
        if let Some(r) = &c.exit {
            return Err(Error::NotRunning(r.clone()));
        }
        if run {
            c.want = Want::Run;
            self.shared.cv.notify_all();
        }
        Ok(())
    }
}

impl Vm {
    /// A handle that stops the vCPUs from any thread and keeps them stopped
    /// until it lets them go: how a post-copy destination fences itself.
    pub fn fence_handle(&self) -> FenceHandle {
        FenceHandle {
            shared: self.shared.clone(),
        }
    }
}
