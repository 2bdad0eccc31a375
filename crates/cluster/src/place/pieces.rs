//! The load pieces of the VMs placed lately, by demand: within one plan a
//! VM's pieces depend on its CPU demand alone, and VMs of equal demand are
//! common (idle VMs, copies of one host emptied one after the other), so
//! they share them (docs/MANAGER.md, "Placement").

use super::indexed::kind_pieces_into;
use crate::allocation::Allocation;
use crate::detect::Detector;
use crate::index::Piece;
use crate::model::PoolView;

/// Slots: a direct-mapped cache of this many demands.
const SLOTS: usize = 64;

/// The pieces of every kind for one VM: (kind, piece).
type KindPieces = Vec<(usize, Piece)>;

#[derive(Debug, Clone, Default)]
pub(crate) struct PieceCache {
    /// Per slot: the demand's bits and its pieces.
    slots: Vec<(Option<u64>, KindPieces)>,
}

impl PieceCache {
    /// Forgets every demand: a new plan (a new view) begins.
    pub fn clear(&mut self) {
        self.slots.resize_with(SLOTS, Default::default);
        for slot in &mut self.slots {
            slot.0 = None;
        }
    }

    /// The pieces of every kind for a VM of `demand` (as `kind_pieces`).
    pub fn get(
        &mut self,
        view: &PoolView,
        alloc: &Allocation,
        demand: f64,
        detector: &Detector,
    ) -> &[(usize, Piece)] {
        if self.slots.len() != SLOTS {
            self.clear();
        }
        let bits = demand.to_bits();
        let i = ((bits ^ (bits >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SLOTS;
        let slot = &mut self.slots[i];
        if slot.0 != Some(bits) {
            kind_pieces_into(view, alloc, demand, detector, &mut slot.1);
            slot.0 = Some(bits);
        }
        &slot.1
    }
}
