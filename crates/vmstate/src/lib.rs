//! Plain-data VM state and its versioned, checksummed encoding.

mod state;
pub use state::*;
