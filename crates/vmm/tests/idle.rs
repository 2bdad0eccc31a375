//! The idle port: a guest with `idle=sleep` in an idle phase leaves its
//! vCPU thread asleep in the VMM, so it uses far less host CPU than the
//! same guest spinning, while its heartbeats go on and a pause is not held
//! up. One test in its own binary: the only vCPU threads of this process
//! are the ones measured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::{require_kvm, wait_for};
use vmm::{BootSpec, Vm};

/// Host CPU time (ns) used so far by this process's vCPU threads.
fn vcpu_cpu_ns() -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if !comm.starts_with("vcpu") {
                return None;
            }
            let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Boots the dirtier in an idle phase for good (`extra` appended) and
/// returns the vCPU CPU time it used over one second once it runs, and
/// the heartbeats it printed in that second.
fn idle_phase_cost(extra: &str) -> (u64, usize) {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o = out.clone();
    let vm = Vm::boot(
        &BootSpec {
            kernel: guest::image("dirtier").expect("built-in guest"),
            kernel_name: "dirtier".into(),
            cmdline: format!("ws=4M phases=idle:1s {extra}"),
            memory_bytes: 64 << 20,
            vcpus: 1,
        },
        Box::new(move |b: &[u8], _| o.lock().unwrap().extend_from_slice(b)),
    )
    .unwrap_or_else(|e| panic!("booting the dirtier with {extra}: {e}"));
    let beats = || {
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        text.lines()
            .map(guest::output::parse_line)
            .filter(|l| matches!(l, guest::output::Line::Heartbeat { .. }))
            .count()
    };
    wait_for(
        "the guest's first heartbeats",
        Duration::from_secs(60),
        || (beats() > 0).then_some(()),
    );
    let (cpu0, beats0) = (vcpu_cpu_ns(), beats());
    std::thread::sleep(Duration::from_secs(1));
    let used = vcpu_cpu_ns() - cpu0;
    // A sleeping vCPU is woken for a pause and resumes.
    vm.pause().unwrap();
    vm.resume().unwrap();
    let beats = beats() - beats0;
    vm.stop(vmm::ExitReason::Stopped);
    vm.wait(Some(Duration::from_secs(30)));
    (used, beats)
}

#[test]
fn a_sleeping_guest_uses_far_less_host_cpu_than_a_spinning_one() {
    require_kvm();
    let (spin, spin_beats) = idle_phase_cost("idle=spin");
    let (sleep, sleep_beats) = idle_phase_cost("idle=sleep");
    eprintln!(
        "vCPU time in 1 s idle: spin {} ms ({spin_beats} heartbeats), sleep {} ms ({sleep_beats} heartbeats)",
        spin / 1_000_000,
        sleep / 1_000_000
    );
    assert!(spin > 0, "the spinning vCPU used no CPU");
    assert!(
        (sleep as f64) < 0.5 * spin as f64,
        "sleeping used {sleep} ns of vCPU time, spinning {spin} ns"
    );
    assert!(sleep_beats > 0, "no heartbeats while sleeping");
}
