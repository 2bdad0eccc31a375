//! The decision engine: one `Manager` per cluster, called once per interval.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::ClusterError;
use crate::config::Config;
use crate::limits::Cooldowns;
use crate::model::PoolView;
use crate::pattern::{Mode, ModeSwitch};
use crate::planner::{Plan, PlanBuffers, Planner};

/// The decision engine. Keeps the state that spans intervals: the mode and
/// its hysteresis counter, per-VM cooldowns, the seeded RNG.
#[derive(Debug, Clone)]
pub struct Manager {
    config: Config,
    rng: ChaCha8Rng,
    mode: ModeSwitch,
    cooldowns: Cooldowns,
    bufs: PlanBuffers,
}

impl Manager {
    /// A manager with a validated configuration and a seed for the random selector.
    pub fn new(config: Config, seed: u64) -> Result<Self, ClusterError> {
        config.validate()?;
        Ok(Self {
            mode: ModeSwitch::new(&config.pattern),
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cooldowns: Cooldowns::default(),
            bufs: PlanBuffers::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Current mode (the one the last plan used).
    pub fn mode(&self) -> Mode {
        self.mode.mode()
    }

    /// Times the mode has changed so far.
    pub fn switches(&self) -> u64 {
        self.mode.switches()
    }

    /// The pool's load (all demand over all capacity) in the last view.
    pub fn pool_load(&self) -> f64 {
        self.mode.load()
    }

    /// Decides the migrations for this interval.
    pub fn decide(&mut self, view: &PoolView) -> Result<Plan, ClusterError> {
        view.validate()?;
        let mut planner = Planner::new(view, &self.config, &mut self.bufs);
        let hotspots = planner.hotspots();
        let mode = self.mode.update(&self.config.pattern, view);
        let movable = self
            .cooldowns
            .movable(view, self.config.limits.vm_cooldown_s);
        let plan = planner.plan(mode, hotspots, &movable, &mut self.rng);
        let limits = &self.config.limits;
        // Without any cooldown (both fixed for the manager's life), what
        // moved when is never read.
        if !(limits.vm_cooldown_s <= 0.0 && limits.vm_cooldown_migrations <= 0.0) {
            (self.cooldowns).record(view, &plan.migrations, limits.vm_cooldown_migrations);
        }
        Ok(plan)
    }
}
