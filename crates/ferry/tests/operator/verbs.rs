//! Every route but starting a migration has a `ferry ctl` verb, and the
//! event stream tells each state change.

use crate::harness::*;

#[test]
fn ctl_verbs_answer_and_events_tell_each_change() {
    let _s = serial();
    let dir = TempDir::new("verbs");
    let api = dir.join("vm.sock");
    let mut vm = Proc::idle_vm(dir.path(), "verbs-1", &api);
    let ping = ctl_json(&api, &["--wait", "30s", "ping"]);
    assert_eq!(ping["pid"], vm.pid());
    assert_eq!(ping["vm"], "verbs-1");
    let version = ctl_json(&api, &["version"]);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["api"], "v1");

    let events = follow_events(dir.path(), "events", &api);
    wait_for("the VM to run", PATIENCE, || {
        (state(&api).as_deref() == Some("running")).then_some(())
    });
    ctl_json(&api, &["pause"]);
    assert_eq!(state(&api).as_deref(), Some("paused"));
    ctl_json(&api, &["resume"]);
    let resumed = wait_event(&events, "vm-resumed");
    assert_eq!(resumed["cause"], "operator");
    assert_eq!(resumed["vm"], "verbs-1");
    let paused = wait_event(&events, "vm-paused");
    assert!(paused["seq"].as_u64() < resumed["seq"].as_u64());

    // No migration: the migration verbs say so in one line.
    let (st, _, err) = ctl(&api, &["migrate-status", "--once"]);
    assert_eq!(st.code(), Some(1));
    assert_one_error_line("migrate-status", &err, &["no migration", "404"]);
    let (st, _, err) = ctl(&api, &["migrate-status"]);
    assert_eq!(st.code(), Some(1));
    assert_one_error_line("migrate-status", &err, &["no migration"]);
    let (st, _, err) = ctl(&api, &["migrate-cancel"]);
    assert_eq!(st.code(), Some(1));
    assert_one_error_line("migrate-cancel", &err, &["no migration is running", "409"]);

    ctl_json(&api, &["shutdown"]);
    assert!(vm.wait(PATIENCE).success());
    // The follower read the last event and its stream ended with the process.
    let mut events = events;
    assert!(events.wait(PATIENCE).success(), "{}", events.stderr_text());
    let all = events.json_lines();
    assert_eq!(types(&all).last().map(String::as_str), Some("vm-stopped"));
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}
