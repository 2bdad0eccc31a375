//! The embedded store: etcd's semantics in one process's memory
//! ([`core`]), served on a Unix socket ([`server`]) to clients in other
//! processes ([`client`]) over a small framed protocol ([`proto`]).

pub(crate) mod client;
pub(crate) mod core;
pub(crate) mod proto;
pub(crate) mod server;
