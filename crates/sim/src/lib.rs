//! Trace-driven data-center simulator (work in progress).

pub mod cli;
