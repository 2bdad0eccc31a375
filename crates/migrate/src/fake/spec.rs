//! What the fake guest looks like and how it writes.

/// Which pages of the working set the fake guest writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WritePattern {
    /// Every page equally likely.
    Uniform,
    /// Page after page, wrapping around.
    Sequential,
    /// `hot_share` of the writes go to the first `hot_fraction` of the working set.
    HotSet { hot_fraction: f64, hot_share: f64 },
}

/// What the fake guest looks like.
#[derive(Clone, Debug)]
pub struct FakeSpec {
    /// RAM regions (start, length).
    pub regions: Vec<(u64, u64)>,
    pub vcpus: u32,
    /// Pages filled with data before the migration starts (spread evenly).
    pub prefill_pages: u64,
    /// The guest writes the first `working_set_pages` pages of memory.
    pub working_set_pages: u64,
    pub pattern: WritePattern,
    /// Page writes per second (0 = idle).
    pub writes_per_sec: u64,
    pub seed: u64,
    /// Whether [`SourceVm::nonzero_hint`](crate::SourceVm::nonzero_hint) is offered.
    pub nonzero_hint: bool,
    /// Report every page dirty right after `start_dirty_log`, as KVM does
    /// with KVM_DIRTY_LOG_INITIALLY_SET.
    pub initially_all_dirty: bool,
}

impl FakeSpec {
    /// `mib` MiB of RAM in one region at 0, a quarter prefilled, idle.
    pub fn new(mib: u64) -> Self {
        let pages = mib * 256;
        FakeSpec {
            regions: vec![(0, mib << 20)],
            vcpus: 1,
            prefill_pages: pages / 4,
            working_set_pages: pages / 8,
            pattern: WritePattern::Uniform,
            writes_per_sec: 0,
            seed: 1,
            nonzero_hint: false,
            initially_all_dirty: false,
        }
    }
}
