//! What the engine needs from a VM on each side. The `ferry` binary adapts
//! its VMM to these traits (`crates/node/src/adapter.rs`); the tests use an
//! in-memory fake ([`crate::fake`]).

use std::sync::Arc;
use std::time::Duration;

use vm_memory::GuestMemoryMmap;
use vmstate::{VmConfig, VmState};

use crate::bitmap::DirtyBitmap;

/// Error of a VM operation, as the VMM reports it.
pub type VmError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The running VM on the source host.
///
/// The engine calls these from one thread, in this order: `config`,
/// `start_dirty_log`, then rounds of `memory` reads and `harvest_dirty`,
/// then `pause`, a last `harvest_dirty`, `stop_dirty_log`, `save_state`;
/// then either `retire` (after Commit) or `resume` (any failure before
/// Commit). After a post-copy switch, `memory` is read while the retired VM
/// stays paused, and `release` follows once the destination holds every page.
pub trait SourceVm {
    /// The machine's configuration (regions, vCPUs), sent to the destination.
    fn config(&self) -> VmConfig;

    /// Guest memory, read by the engine page by page while the VM runs.
    fn memory(&self) -> &GuestMemoryMmap;

    /// Starts dirty-page tracking. Pages written after this call are
    /// reported by the next [`harvest_dirty`](Self::harvest_dirty). The
    /// engine harvests once right after this call and ignores the result
    /// (round 1 sends every page anyway), so reporting every page dirty at
    /// first (KVM_DIRTY_LOG_INITIALLY_SET) costs nothing.
    fn start_dirty_log(&mut self) -> Result<(), VmError>;

    /// ORs into `into` every page written since the previous harvest (or
    /// since `start_dirty_log`), including the VMM's own writes into guest
    /// memory, and re-arms tracking for those pages.
    fn harvest_dirty(&mut self, into: &mut DirtyBitmap) -> Result<(), VmError>;

    /// Stops dirty-page tracking.
    fn stop_dirty_log(&mut self) -> Result<(), VmError>;

    /// Stops every vCPU (and device activity that writes guest memory).
    fn pause(&mut self) -> Result<(), VmError>;

    /// Lets a paused VM run again. Only called before Commit.
    fn resume(&mut self) -> Result<(), VmError>;

    /// Captures vCPU and device state of the paused VM.
    fn save_state(&mut self) -> Result<VmState, VmError>;

    /// The VM now belongs to the destination: it must never run here again
    /// (`resume` must fail from now on). Called once, when the engine starts
    /// writing Commit; the VM is paused. Keep its memory until the caller
    /// knows the outcome: after an in-doubt commit it is the only copy.
    fn retire(&mut self);

    /// The destination holds every page of the retired VM (post-copy
    /// completed): its memory may be freed. Default: nothing to do.
    fn release(&mut self) {}

    /// Whether the vCPUs run now. A VM the user paused before the migration
    /// is not resumed on rollback, and stays paused on the destination.
    fn is_running(&self) -> bool {
        true
    }

    /// Optional hint: marks in `into` every page that may hold non-zero data
    /// (e.g. those `vmstate::resident_pages` finds backed, in RAM or swap).
    /// Pages left clear are taken as zero without being read. Returns false
    /// (the default) if the VM cannot tell.
    fn nonzero_hint(&self, into: &mut DirtyBitmap) -> bool {
        let _ = into;
        false
    }

    /// Runs the retired VM here again from `state` (post-copy whose
    /// destination is certainly fenced: docs/SAFETY.md, "Transactions");
    /// its memory holds what the engine wrote into it. Default: cannot.
    fn take_back(&mut self, state: VmState) -> Result<(), VmError> {
        let _ = state;
        Err("this VM cannot be taken back after its retirement".into())
    }

    /// Optional: slows the vCPUs to run at most `1 - fraction` of the time
    /// (0.0 = full speed). Returns false (the default) if unsupported.
    fn throttle(&mut self, fraction: f64) -> Result<bool, VmError> {
        let _ = fraction;
        Ok(false)
    }
}

/// Creates the VM on the destination host.
pub trait VmFactory {
    type Vm: DestinationVm;

    /// Builds a paused VM for `config` with zero-filled memory, or refuses
    /// (not enough host memory, bad config). Nothing runs until `resume`.
    fn create(&mut self, config: &VmConfig) -> Result<Self::Vm, VmError>;
}

/// The incoming VM on the destination host.
pub trait DestinationVm {
    /// Guest memory the engine writes received pages into.
    fn memory(&self) -> &GuestMemoryMmap;

    /// Loads vCPU and device state; the VM stays paused. Everything that can
    /// fail must fail here, so that `resume` after Commit cannot.
    fn restore_state(&mut self, state: VmState) -> Result<(), VmError>;

    /// Starts the vCPUs. Called only after Commit was received.
    fn resume(&mut self) -> Result<(), VmError>;

    /// Drops the VM: it never ran (any failure before Commit), or it ran in
    /// post-copy and cannot go on (the source's copy is the one kept).
    fn discard(self);

    /// Whether this VM can run before its memory has arrived (post-copy).
    fn supports_postcopy(&self) -> bool {
        false
    }

    /// During pre-copy, the VM paused: the source says the copies of the
    /// pages in `stale` are stale (each is sent again, or fetched in
    /// post-copy). Dropping them now, while the VM still runs on the
    /// source, spares the switch to post-copy from dropping them in the
    /// pause. True if they now read as zero; the default keeps them
    /// (false): `start_postcopy` drops what is missing.
    fn discard_stale(&mut self, stale: &DirtyBitmap) -> Result<bool, VmError> {
        let _ = stale;
        Ok(false)
    }

    /// The switch to post-copy, the VM paused: drops the pages in `missing`
    /// (their content is stale or was never sent) and from now on
    /// intercepts every first touch of a page that is not present.
    fn start_postcopy(
        &mut self,
        missing: &DirtyBitmap,
    ) -> Result<Arc<dyn PostcopyMemory>, VmError> {
        let _ = missing;
        Err("this VM cannot run before its memory has arrived (no post-copy)".into())
    }

    /// A handle that stops the vCPUs from another thread and keeps them
    /// stopped until it lets them go: a post-copy destination whose lease
    /// lapsed fences itself with it. Asked for once the state is restored.
    /// `None` (the default): the VM cannot be fenced, and takes no lease.
    fn fence(&self) -> Option<Arc<dyn Fence>> {
        None
    }

    /// Transaction synchronization in post-copy (docs/PROTOCOL.md,
    /// "Transactions"). `None` (the default): the VMM cannot.
    fn transactions(&self) -> Option<Arc<dyn TxnVm>> {
        None
    }
}

/// A transaction boundary's capture: the state, and how much serial
/// output the VM had produced by then.
pub struct Capture {
    pub state: VmState,
    pub output_mark: u64,
}

/// What a post-copy destination needs to ship transactions to the source:
/// pages the guest dirtied, its state, and output held until acknowledged.
pub trait TxnVm: Send + Sync {
    /// Before the VM first runs here: tracks every page the guest or the
    /// VMM writes from now on, and holds serial output back.
    fn begin(&self) -> Result<(), VmError>;

    /// A boundary: stops the vCPUs for at most `wait`, ORs into `dirty` the
    /// pages written since the previous boundary, calls `at_pause` with the
    /// memory and `dirty` while stopped, captures the state, and lets the
    /// vCPUs go on as they were. `None`: a vCPU did not stop in time
    /// (waiting for a page); nothing was harvested.
    fn capture(
        &self,
        wait: Duration,
        dirty: &mut DirtyBitmap,
        at_pause: &mut dyn FnMut(&GuestMemoryMmap, &DirtyBitmap),
    ) -> Result<Option<Capture>, VmError>;

    /// Writes held output up to `mark` ([`Capture::output_mark`]); `None`:
    /// all of it, and stops holding and tracking (the VM is ours for good).
    fn release_output(&self, mark: Option<u64>);
}

/// Stops a destination VM's vCPUs from any thread while its post-copy
/// lease has lapsed (docs/SAFETY.md, "Leases").
pub trait Fence: Send + Sync {
    /// Stops every vCPU and refuses any other resume until `lift`.
    /// Idempotent. Returns once no vCPU runs guest code (a vCPU waiting
    /// for a missing page runs none).
    fn fence(&self) -> Result<(), VmError>;

    /// Ends the fence; with `run` the vCPUs run again.
    fn lift(&self, run: bool) -> Result<(), VmError>;
}

/// Guest memory whose missing pages arrive while the VM runs (post-copy on
/// the destination). Called from two threads: one waits for faults, the
/// other installs what the source sends.
pub trait PostcopyMemory: Send + Sync {
    /// Waits up to `timeout` for the next touch of a page that is not
    /// present; its guest-physical address (page aligned). The toucher
    /// waits until the page is installed.
    fn wait_fault(&self, timeout: Duration) -> Result<Option<u64>, VmError>;

    /// Installs whole pages of `data` at `gpa` and wakes whoever waits for
    /// them. Pages already present are left as they are.
    fn install(&self, gpa: u64, data: &[u8]) -> Result<(), VmError>;

    /// Installs `pages` zero pages at `gpa`, as `install` does.
    fn install_zero(&self, gpa: u64, pages: u64) -> Result<(), VmError>;

    /// Every page is present: stop intercepting (pages never touched read
    /// as zero from now on).
    fn finish(&self) -> Result<(), VmError>;
}
