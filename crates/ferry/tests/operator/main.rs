//! Ferry as an operator meets it, with real `ferry` processes: readiness of
//! the API socket, signals, the `ferry ctl` verbs and the event stream,
//! logs, completions, man pages and help.

mod cli;
mod harness;
mod migration;
mod readiness;
mod signals;
mod verbs;
