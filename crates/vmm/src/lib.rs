//! vmm (work in progress).
