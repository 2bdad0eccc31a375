//! The engine end to end over loopback TCP, with the in-memory fake VM:
//! every strategy converges to an identical copy, and every injected failure
//! leaves exactly the expected copy of the VM running.

mod converge;
mod harness;
mod limits;
mod network;
mod observer;
mod owned;
mod postcopy;
mod reattach;
mod refusals;
mod restart;
mod strategies;
mod window;
