//! Everything a sampler saw during one migration, and the guest-visible
//! downtime it measures.

use super::timeline::Timeline;

/// Which side of a migration a status page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source = 0,
    Destination = 1,
}

/// What one side contributed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideRecord {
    /// When the sampler began to read this side (ns, CLOCK_MONOTONIC).
    pub attached_at: Option<u64>,
    /// The first and the last sample that saw progress on this side.
    pub first_progress: Option<u64>,
    pub last_progress: Option<u64>,
    /// The side could no longer be read (its process ended) from then on.
    pub lost_at: Option<u64>,
}

/// A sampler's whole record (times in ns of CLOCK_MONOTONIC).
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub timeline: Timeline,
    pub sides: [SideRecord; 2],
    /// Long gaps between two passes the guest recorded, when the sampler
    /// first saw each: (sample time, gap in TSC ticks).
    pub long_gaps: Vec<(u64, u64)>,
    /// The guest's TSC frequency (from its status page).
    pub tsc_khz: u64,
    /// The sampler ran at real-time priority (SCHED_FIFO); without it,
    /// busy vCPUs may have delayed samples (see the resolution).
    pub realtime: bool,
    pub samples: u64,
}

/// The guest-visible downtime of one migration, as a sampler measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestDowntime {
    /// The longest time in the window in which no vCPU of the guest made
    /// progress on either side, in microseconds.
    pub downtime_us: u64,
    /// The widest interval between two samples in the window (a late
    /// look at the destination counts too), in microseconds.
    pub resolution_us: u64,
    /// The switchover alone: from the source's last progress to the
    /// destination's first, in microseconds. `downtime_us` is longer when
    /// the guest also stalled elsewhere in the window (e.g. descheduled
    /// on a busy host, or held up by the migration's work).
    pub switchover_us: u64,
    /// Where the downtime began, from the source's last progress (us;
    /// negative: before the pause, e.g. a stall during pre-copy).
    pub downtime_at_us: i64,
    /// The guest's own largest gap between two passes in the window, from
    /// its TSC (meaningful where the guest's TSC is the host's, as with
    /// Ferry), in microseconds.
    pub tsc_gap_us: Option<u64>,
    /// The sampler ran at real-time priority.
    pub realtime: bool,
    /// The window: from `margin` before the source's last progress to
    /// `margin` after the destination's first (ns, CLOCK_MONOTONIC).
    pub window: (u64, u64),
}

/// A measurement whose resolution is worse than this is marked as coarse.
pub const COARSE_US: u64 = 1_000;

impl GuestDowntime {
    /// The sampler missed more than [`COARSE_US`] somewhere in the window.
    pub fn coarse(&self) -> bool {
        self.resolution_us > COARSE_US
    }
}

/// Why a recording gives no downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoDowntime {
    #[error("the sampler never saw the guest make progress on the source")]
    SourceNeverRan,
    #[error("the sampler never saw the guest make progress on the destination")]
    DestinationNeverRan,
}

impl Recording {
    /// The guest-visible downtime: the longest time without progress in
    /// the window from `margin_ns` before the source's last progress (its
    /// pause, as the guest saw it) to `margin_ns` after the destination's
    /// first (its resume).
    pub fn guest_downtime(&self, margin_ns: u64) -> Result<GuestDowntime, NoDowntime> {
        let src = &self.sides[Side::Source as usize];
        let dst = &self.sides[Side::Destination as usize];
        let paused = src.last_progress.ok_or(NoDowntime::SourceNeverRan)?;
        let resumed = dst.first_progress.ok_or(NoDowntime::DestinationNeverRan)?;
        let from = paused.min(resumed).saturating_sub(margin_ns);
        let until = paused.max(resumed).saturating_add(margin_ns);
        let mut resolution = self.timeline.widest_interval(from, until);
        // A destination first read after the source stopped may have run
        // unseen since any time from then on.
        if let Some(attached) = dst.attached_at {
            resolution = resolution.max(attached.saturating_sub(paused));
        }
        let khz = self.tsc_khz;
        let tsc_gap_us = self
            .long_gaps
            .iter()
            .filter(|&&(t, _)| t >= from && t <= until)
            .map(|&(_, ticks)| ticks)
            .max()
            .filter(|_| khz > 0)
            .map(|ticks| (u128::from(ticks) * 1000 / u128::from(khz)) as u64);
        let (quiet_from, quiet) = self.timeline.longest_quiet_at(from, until);
        Ok(GuestDowntime {
            downtime_us: quiet / 1000,
            downtime_at_us: (quiet_from as i64 - paused as i64) / 1000,
            resolution_us: resolution.div_ceil(1000),
            switchover_us: resumed.saturating_sub(paused) / 1000,
            tsc_gap_us,
            realtime: self.realtime,
            window: (from, until),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Source progress to 1 s, destination from 1.02 s, a sample every 50 us.
    fn switchover(dst_attached: u64) -> Recording {
        let mut r = Recording {
            tsc_khz: 1_000_000,
            ..Recording::default()
        };
        let mut t = 0;
        while t < 2000 * MS {
            let progress = !(1000 * MS..1020 * MS).contains(&t);
            r.timeline.push(t, progress);
            t += 50_000;
        }
        r.sides[0] = SideRecord {
            attached_at: Some(0),
            first_progress: Some(0),
            last_progress: Some(1000 * MS - 50_000),
            lost_at: None,
        };
        r.sides[1] = SideRecord {
            attached_at: Some(dst_attached),
            first_progress: Some(1020 * MS),
            last_progress: Some(2000 * MS - 50_000),
            lost_at: None,
        };
        // The guest's own view: 20 ms (1 GHz TSC), and an older 5 ms gap.
        r.long_gaps = vec![(200 * MS, 5 * MS), (1020 * MS, 20 * MS)];
        r
    }

    #[test]
    fn downtime_resolution_and_the_guests_own_gap() {
        let d = switchover(10 * MS).guest_downtime(1000 * MS).unwrap();
        assert_eq!(d.downtime_us, 20_050);
        assert_eq!(d.switchover_us, 20_050);
        assert_eq!(d.downtime_at_us, 0);
        assert_eq!(d.resolution_us, 50);
        assert!(!d.coarse());
        assert_eq!(d.tsc_gap_us, Some(20_000));
        assert_eq!(d.window, (0, 2020 * MS));
        // A narrower window leaves the older gap out, not the switchover.
        let d = switchover(10 * MS).guest_downtime(100 * MS).unwrap();
        assert_eq!(d.tsc_gap_us, Some(20_000));
        assert_eq!(d.downtime_us, 20_050);
    }

    #[test]
    fn a_destination_read_too_late_makes_the_measurement_coarse() {
        let d = switchover(1010 * MS).guest_downtime(1000 * MS).unwrap();
        assert_eq!(d.resolution_us, 10_050);
        assert!(d.coarse());
    }

    #[test]
    fn no_progress_on_a_side_gives_no_downtime() {
        let mut r = switchover(0);
        r.sides[1].first_progress = None;
        assert_eq!(r.guest_downtime(MS), Err(NoDowntime::DestinationNeverRan));
        r.sides[0].last_progress = None;
        assert_eq!(r.guest_downtime(MS), Err(NoDowntime::SourceNeverRan));
    }
}
