//! migrate (work in progress).
