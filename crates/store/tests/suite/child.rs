//! A leader in another process, to kill: the test binary runs itself with
//! [`CHILD_ENV`] naming the store, and this campaigns, says "leading" on
//! stdout, and keeps its lease alive until it is killed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use store::{Election, EtcdConfig, LeaseKeeper, Store, StoreConfig};

use super::{DEADLINE, LIMIT, bounded};

pub const CHILD_ENV: &str = "STORE_TEST_LEADER";
pub const ELECTION: &str = "/e/killed";

/// How a child reaches the store: `etcd:HOST:PORT` or `embedded:PATH`.
pub fn describe(config: &StoreConfig) -> String {
    match config {
        StoreConfig::Etcd(c) => format!("etcd:{}", c.endpoints[0]),
        StoreConfig::Embedded { socket, .. } => format!("embedded:{}", socket.display()),
    }
}

fn parse(text: &str) -> StoreConfig {
    match text.split_once(':') {
        Some(("etcd", ep)) => {
            StoreConfig::Etcd(EtcdConfig::new(vec![ep.into()]).with_deadline(DEADLINE))
        }
        Some(("embedded", path)) => StoreConfig::Embedded {
            socket: path.into(),
            deadline: DEADLINE,
        },
        _ => panic!("{CHILD_ENV}={text:?}"),
    }
}

/// The child's side; does nothing unless [`CHILD_ENV`] is set.
pub fn lead_until_killed() {
    let Some(config) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::connect(&parse(config.to_str().unwrap())).unwrap();
    let lease = store.grant_lease(Duration::from_secs(1)).unwrap();
    let _keeper = LeaseKeeper::start(store.clone(), lease).unwrap();
    let election = Election::new(store, ELECTION).unwrap();
    election
        .campaign(lease.id, b"child", LIMIT)
        .unwrap()
        .expect("the child leads");
    let mut out = std::io::stdout();
    writeln!(out, "leading").unwrap();
    out.flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// The leader process; killed when dropped, so a failing test leaves none.
pub struct Leader(Child);

impl Leader {
    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the child (the test `child_test` of this binary) and waits until
/// it leads.
pub fn spawn_leader(config: &StoreConfig, child_test: &str) -> Leader {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, describe(config))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Leader(child);
    let said = bounded("the child to lead", move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("leading"))
    });
    assert!(said, "the child never led");
    child
}
