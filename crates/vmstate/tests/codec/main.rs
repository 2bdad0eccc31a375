//! The encoding end to end: round trips, and every kind of bad input
//! (corruption, truncation, versions, limits, garbage) refused with the
//! right error and never a panic.

// Shared with benches/codec.rs.
#[path = "../common/mod.rs"]
mod common;
mod damage;
mod fixture;
mod frames;
mod refusals;
mod round_trip;
