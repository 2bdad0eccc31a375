//! What the engine sees each interval: hosts, VMs, power models.

use crate::ClusterError;

/// Length of the utilization history the detectors and selectors use
/// (CloudSim's `PowerVm.HISTORY_LEN`).
pub const HISTORY_LEN: usize = 30;

/// Host power as a function of CPU utilization, from measured points at
/// equally spaced utilizations (SPECpower: 0 %, 10 %, ..., 100 %), linearly
/// interpolated between points.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerModel {
    watts: Vec<f64>,
}

impl PowerModel {
    /// Builds a model from at least two points; each must be a finite,
    /// non-negative number of watts and the points must not decrease.
    pub fn new(watts: Vec<f64>) -> Result<Self, ClusterError> {
        if watts.len() < 2 {
            return Err(ClusterError::InvalidPowerModel(format!(
                "needs at least 2 points (idle and full), got {}",
                watts.len()
            )));
        }
        if let Some(w) = watts.iter().find(|w| !w.is_finite() || **w < 0.0) {
            return Err(ClusterError::InvalidPowerModel(format!(
                "point {w} is not a non-negative number of watts"
            )));
        }
        if watts.windows(2).any(|p| p[1] < p[0]) {
            return Err(ClusterError::InvalidPowerModel(
                "points must not decrease with utilization".into(),
            ));
        }
        Ok(Self { watts })
    }

    /// HP ProLiant ML110 G4 (Xeon 3040), SPECpower_ssj2008 points used by
    /// Beloglazov & Buyya 2012.
    pub fn hp_ml110_g4() -> Self {
        Self {
            watts: vec![
                86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0,
            ],
        }
    }

    /// HP ProLiant ML110 G5 (Xeon 3075), SPECpower_ssj2008 points.
    pub fn hp_ml110_g5() -> Self {
        Self {
            watts: vec![
                93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0,
            ],
        }
    }

    /// Power in watts at `utilization` (clamped to 0..=1).
    pub fn power(&self, utilization: f64) -> f64 {
        let u = if utilization.is_nan() {
            0.0
        } else {
            utilization.clamp(0.0, 1.0)
        };
        let steps = (self.watts.len() - 1) as f64;
        let pos = u * steps;
        let i = (pos as usize).min(self.watts.len() - 2);
        let frac = pos - i as f64;
        self.watts[i] + (self.watts[i + 1] - self.watts[i]) * frac
    }

    /// Power when idle (utilization 0), host on.
    pub fn idle(&self) -> f64 {
        self.watts[0]
    }

    /// Power at full utilization.
    pub fn max(&self) -> f64 {
        self.watts[self.watts.len() - 1]
    }

    /// The points the model was built from.
    pub fn points(&self) -> &[f64] {
        &self.watts
    }
}

/// One physical host as the monitor sees it.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Stable identifier (for logs and for the caller's own mapping).
    pub id: u64,
    /// Total CPU capacity (MIPS, or any unit shared with the VMs' demand).
    pub cpu_capacity: f64,
    /// Capacity of one core in the same unit: one VM core never gets more.
    pub core_capacity: f64,
    /// Memory, MB.
    pub ram_mb: f64,
    /// Network bandwidth, Mbit/s; 0 if unknown (then network is not checked
    /// and migrations use `PoolView::default_bandwidth_mbps`).
    pub net_mbps: f64,
    /// CPU the host itself uses beyond its VMs' demand (hypervisor, I/O,
    /// migration threads), as measured; 0 when unknown. Counts towards its
    /// utilization for detection and placement.
    pub cpu_overhead: f64,
    /// Index into `PoolView::power_models`.
    pub power_model: usize,
    /// Whether the host is powered on.
    pub on: bool,
}

/// One VM as the monitor sees it.
#[derive(Debug, Clone)]
pub struct VmInfo {
    /// Stable identifier: cooldowns are remembered by it across intervals.
    pub id: u64,
    /// Index of the host it runs on (its source while it migrates).
    pub host: usize,
    /// Its CPU size (the most it may ask for), same unit as host capacity.
    pub cpu_size: f64,
    /// Number of virtual cores.
    pub cores: u32,
    /// Current CPU demand, same unit (may be above what it is given).
    pub cpu_demand: f64,
    /// Memory size, MB (what a migration must copy).
    pub ram_mb: f64,
    /// Network demand, Mbit/s; 0 if unknown.
    pub net_mbps: f64,
    /// Recent CPU utilization as fractions of `cpu_size`, oldest first, the
    /// last being the current interval. Detectors use at most the last
    /// [`HISTORY_LEN`].
    pub history: Vec<f64>,
    /// Destination host index when a migration of this VM is in flight.
    pub migrating_to: Option<usize>,
    /// Measured page-dirtying rate, MB/s, when the pre-copy engine reports one.
    pub dirty_rate_mb_s: Option<f64>,
}

/// One interval's view of the pool: everything the engine needs to decide.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    /// Current time, seconds (any origin; used for cooldowns).
    pub time_s: f64,
    /// Length of the scheduling interval, seconds.
    pub interval_s: f64,
    /// Share of a host's bandwidth available to migrations (CloudSim: 0.5).
    pub migration_bw_share: f64,
    /// Bandwidth assumed for hosts that report none, Mbit/s.
    pub default_bandwidth_mbps: f64,
    pub power_models: Vec<PowerModel>,
    pub hosts: Vec<HostInfo>,
    pub vms: Vec<VmInfo>,
}

impl PoolView {
    /// Checks indices and numbers; the engine calls it before deciding.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if !(self.interval_s > 0.0) {
            return Err(ClusterError::InvalidPoolView(
                "interval_s must be positive".into(),
            ));
        }
        if !(self.migration_bw_share > 0.0 && self.migration_bw_share <= 1.0) {
            return Err(ClusterError::InvalidPoolView(
                "migration_bw_share must be in (0, 1]".into(),
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if h.power_model >= self.power_models.len() {
                return Err(ClusterError::InvalidPoolView(format!(
                    "host {} (index {i}) names power model {} of {}",
                    h.id,
                    h.power_model,
                    self.power_models.len()
                )));
            }
            if !(h.cpu_capacity > 0.0
                && h.core_capacity > 0.0
                && h.ram_mb >= 0.0
                && h.cpu_overhead >= 0.0)
            {
                return Err(ClusterError::InvalidPoolView(format!(
                    "host {} has a non-positive capacity",
                    h.id
                )));
            }
        }
        for v in &self.vms {
            if v.host >= self.hosts.len() {
                return Err(ClusterError::InvalidPoolView(format!(
                    "VM {} is on host index {} but there are {} hosts",
                    v.id,
                    v.host,
                    self.hosts.len()
                )));
            }
            if matches!(v.migrating_to, Some(d) if d >= self.hosts.len()) {
                return Err(ClusterError::InvalidPoolView(format!(
                    "VM {} migrates to an unknown host index",
                    v.id
                )));
            }
            if !(v.cpu_demand >= 0.0 && v.cpu_size > 0.0 && v.ram_mb >= 0.0) {
                return Err(ClusterError::InvalidPoolView(format!(
                    "VM {} has a negative or non-numeric size or demand",
                    v.id
                )));
            }
        }
        Ok(())
    }

    /// Bandwidth a migration between two hosts gets, MB/s.
    pub fn migration_bandwidth_mb_s(&self, from: usize, to: usize) -> f64 {
        let bw = |h: &HostInfo| {
            if h.net_mbps > 0.0 {
                h.net_mbps
            } else {
                self.default_bandwidth_mbps
            }
        };
        let mbps = bw(&self.hosts[from]).min(bw(&self.hosts[to]));
        mbps * self.migration_bw_share / 8.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_interpolates_between_spec_points() {
        let g4 = PowerModel::hp_ml110_g4();
        assert_eq!(g4.power(0.0), 86.0);
        assert_eq!(g4.power(1.0), 117.0);
        assert!((g4.power(0.55) - 104.0).abs() < 1e-9);
        assert_eq!(g4.power(1.7), 117.0);
        assert!(PowerModel::new(vec![10.0]).is_err());
        assert!(PowerModel::new(vec![10.0, 5.0]).is_err());
    }
}
