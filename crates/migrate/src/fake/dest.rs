//! The fake destination: VMs that record what the engine did to them.

use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmstate::{VmConfig, VmState};

use super::fake_err;
use crate::vm::{DestinationVm, VmError, VmFactory};

/// What happened to destination VMs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestLog {
    pub created: u32,
    pub restored: u32,
    pub resumed: u32,
    pub discarded: u32,
    /// Set if `resume` was ever called before `restore_state`.
    pub resumed_before_restore: bool,
    /// The token found in the restored state.
    pub state_token: Option<Vec<u8>>,
}

/// Creates [`FakeDestVm`]s and logs what happens to them.
#[derive(Clone, Default)]
pub struct FakeFactory {
    pub log: Arc<Mutex<DestLog>>,
    pub fail_create: bool,
    pub fail_restore: bool,
}

impl FakeFactory {
    pub fn log(&self) -> DestLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The fake destination VM: memory plus a log.
pub struct FakeDestVm {
    memory: GuestMemoryMmap,
    log: Arc<Mutex<DestLog>>,
    restored: bool,
    fail_restore: bool,
}

impl VmFactory for FakeFactory {
    type Vm = FakeDestVm;

    fn create(&mut self, config: &VmConfig) -> Result<FakeDestVm, VmError> {
        if self.fail_create {
            return Err(fake_err("injected: cannot allocate guest memory"));
        }
        let ranges: Vec<_> = config
            .regions
            .iter()
            .map(|&(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let memory = GuestMemoryMmap::from_ranges(&ranges)?;
        self.log.lock().unwrap_or_else(|p| p.into_inner()).created += 1;
        Ok(FakeDestVm {
            memory,
            log: Arc::clone(&self.log),
            restored: false,
            fail_restore: self.fail_restore,
        })
    }
}

impl DestinationVm for FakeDestVm {
    fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn restore_state(&mut self, state: VmState) -> Result<(), VmError> {
        if self.fail_restore {
            return Err(fake_err("injected: KVM refused the vCPU state"));
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.restored += 1;
        log.state_token = Some(state.devices.serial.pending_line);
        self.restored = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if !self.restored {
            log.resumed_before_restore = true;
        }
        log.resumed += 1;
        Ok(())
    }

    fn discard(self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).discarded += 1;
    }
}
