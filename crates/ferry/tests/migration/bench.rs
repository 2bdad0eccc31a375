//! `ferry bench faults` end to end, a few trials, so the command cannot rot:
//! the full matrix runs only as the bench (docs/BENCHMARKS.md).

use crate::harness::*;

#[test]
fn bench_faults_runs_trials_and_judges_each() {
    let _g = serial();
    let dir = TempDir::new("bench-faults");
    let out = dir.join("out");
    let mut p = Proc::spawn(
        dir.path(),
        "bench",
        &[
            "bench",
            "faults",
            "--trials",
            "3",
            "--seed",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    let st = p.wait(PATIENCE * 6);
    let err = p.stderr_text();
    assert_no_panic("bench", &err);
    assert!(st.success(), "bench faults exited {st}: {err}");
    let doc: serde_json::Value = serde_json::from_str(&p.stdout_text())
        .unwrap_or_else(|e| panic!("{e}: {}", p.stdout_text()));
    assert_eq!(doc["seed"], 1);
    let trials = doc["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 3, "{doc}");
    // The first two are the matrix's first cells: kills at setup, which
    // always come (the proxy holds the Start frame for them).
    for t in &trials[..2] {
        assert_eq!(t["injected"], true, "{t}");
        assert_eq!(t["split"], false, "{t}");
    }
    // The destination killed at setup: the VM stays on the source, intact.
    let t = &trials[1];
    assert!(
        t["label"].as_str().unwrap().contains("kill -9 destination"),
        "{t}"
    );
    assert_eq!(
        (&t["on_source"], &t["integrity_ok"]),
        (&true.into(), &true.into()),
        "{t}"
    );
    assert!(out.join("faults.json").exists());
    // Trials that went well leave no logs behind.
    assert_eq!(std::fs::read_dir(out.join("trials")).unwrap().count(), 0);
}
