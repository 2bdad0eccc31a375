//! cluster (work in progress).
