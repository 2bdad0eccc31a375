//! The guest-visible downtime as reports carry it: Ferry's migration
//! report and the QEMU yardstick's flatten the same fields, so both are
//! read one way.

use serde::{Deserialize, Serialize};

use super::GuestDowntime;

/// A sampler's result in a report; every field is absent when nothing was
/// sampled (the migration did not complete, or no sampler ran).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowntimeFields {
    /// The longest time in which the guest made no progress on either
    /// side, sampled from its pass counters (us).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_downtime_us: Option<u64>,
    /// The sampler's widest interval between two samples around the
    /// switchover (us): above [`super::COARSE_US`] the downtime is coarse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_downtime_resolution_us: Option<u64>,
    /// The mark of a coarse measurement (the downtime may be off by the
    /// resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_downtime_coarse: Option<bool>,
    /// The switchover alone, from the source guest's last progress to the
    /// destination's first (us); the downtime is longer when the guest
    /// also stalled elsewhere around it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_switchover_us: Option<u64>,
    /// Where the downtime began, from the source guest's last progress
    /// (us; negative: a stall before the pause, during pre-copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_downtime_at_us: Option<i64>,
    /// The guest's own largest gap between two passes around the
    /// switchover, from its TSC (us; meaningful where the guest's TSC is
    /// the host's, as with Ferry, not across QEMU's TSC restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_tsc_gap_us: Option<u64>,
    /// Whether the sampler ran at real-time priority (false: the host
    /// refused it, and busy vCPUs could delay samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_sampler_realtime: Option<bool>,
}

impl From<&GuestDowntime> for DowntimeFields {
    fn from(d: &GuestDowntime) -> Self {
        DowntimeFields {
            guest_downtime_us: Some(d.downtime_us),
            guest_downtime_resolution_us: Some(d.resolution_us),
            guest_downtime_coarse: Some(d.coarse()),
            guest_switchover_us: Some(d.switchover_us),
            guest_downtime_at_us: Some(d.downtime_at_us),
            guest_tsc_gap_us: d.tsc_gap_us,
            guest_sampler_realtime: Some(d.realtime),
        }
    }
}
