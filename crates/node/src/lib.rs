//! Hosting one VM and serving its control API: the service behind
//! `ferry run`, `restore` and `receive`, and what a host agent starts one
//! process of per VM. Binaries only parse flags into these plain configs
//! and turn [`Ended`] into an exit status (as Firecracker's
//! `rpc_interface` in its `vmm` library serves its `api_server_adapter`).
//!
//! Inside (A -> B: A uses B): [`hosting`] (the process hosting its VM: API
//! socket bound before the VM exists, signals, the wait for the end) and
//! [`incoming`] (waiting for a VM to arrive by live migration) ->
//! [`control`] (API routes to HTTP answers) -> [`instance`] (the hosted VM:
//! id, state, pause, snapshot, guest counters, its migration slot) ->
//! [`migration`] (one outgoing job: options, thread, status, the engine's
//! observer) -> [`adapter`] (`migrate`'s traits over `vmm`); all of them
//! publish to [`events`] (the VM's event hub, each event logged once by
//! [`logging`]). [`serial`] says where the guest's serial output goes;
//! [`statedir`] keeps guest memory in a shared file and, during a
//! post-copy, what a restarted source needs to go on.

pub mod adapter;
pub mod control;
pub mod events;
pub mod hosting;
pub mod incoming;
pub mod instance;
pub mod logging;
pub mod migration;
pub mod serial;
pub mod statedir;

pub use hosting::{Ended, HostConfig, Hosting, check_name};
pub use incoming::{IncomingConfig, receive};
pub use instance::Instance;
pub use serial::SerialConfig;
