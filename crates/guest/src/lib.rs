//! guest (work in progress).
