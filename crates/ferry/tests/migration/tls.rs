//! Migration inside mutual TLS (docs/SECURITY.md): peers without a
//! certificate of the cluster are refused before the secret's handshake,
//! the VM staying where it runs; a member's migration completes with the
//! guest's integrity check passing.

use std::path::Path;

use crate::harness::*;

fn tls_dir(d: &Path) -> [String; 2] {
    ["--tls-dir".into(), d.display().to_string()]
}

fn strs(a: &[String; 2]) -> [&str; 2] {
    [&a[0], &a[1]]
}

#[test]
fn migration_runs_inside_mutual_tls_and_strangers_are_refused() {
    let _g = serial();
    let dir = TempDir::new("tls");
    let secret = dir.secret("secret");
    let (ours, theirs) = (dir.join("pki"), dir.join("other-pki"));
    tls::pki::init(&ours, &["src".into(), "dst".into()]).unwrap();
    tls::pki::init(&theirs, &["src".into()]).unwrap();
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(
        dir.path(),
        "tls-dst",
        &secret,
        &strs(&tls_dir(&ours.join("dst"))),
    );

    // A source whose certificate another CA signed: it refuses the
    // destination's certificate too; nothing is sent, the VM stays.
    let stranger = tls_dir(&theirs.join("src"));
    let mut m = src.start_migrate(
        dir.path(),
        "tls-other",
        &dest.addr,
        &secret,
        &strs(&stranger),
    );
    m.assert_failed_with(PATIENCE, &["TLS", "not valid for this cluster"]);
    src.assert_running_and_healthy();
    dest.wait_refusal(&["TLS", "refused the TLS session"]);

    // A source without TLS: the destination refuses it at once.
    let mut m = src.start_migrate(dir.path(), "tls-none", &dest.addr, &secret, &[]);
    m.wait(PATIENCE);
    src.assert_running_and_healthy();
    assert_exactly_one(&mut src, &mut [&mut dest]);
    dest.wait_refusal(&["TLS"]);
    assert_eq!(dest.state().as_deref(), Some("incoming"));

    // A member expecting another host than the one that answers (a
    // member too): refused before anything is sent, the VM stays.
    let member = tls_dir(&ours.join("src"));
    let named = |host: &'static str| [&member[0][..], &member[1][..], "--tls-name", host];
    let mut m = src.start_migrate(
        dir.path(),
        "tls-wrong-name",
        &dest.addr,
        &secret,
        &named("src"),
    );
    m.assert_failed_with(PATIENCE, &["TLS", "not for the host expected"]);
    src.assert_running_and_healthy();
    dest.wait_refusal(&["TLS"]);

    // A member of the cluster, expecting the destination by name: the VM
    // moves, its memory intact.
    let mut m = src.start_migrate(dir.path(), "tls-member", &dest.addr, &secret, &named("dst"));
    assert!(m.wait(PATIENCE * 2).success(), "{}", m.stderr_text());
    assert_completed_on(&mut src, &mut dest, &m);
}
