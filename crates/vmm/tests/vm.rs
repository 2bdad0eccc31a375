//! Boots the real guest programs on /dev/kvm, and round-trips them through
//! snapshots. These tests need KVM and fail (never skip) without it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest::output::{Line, parse_line};
use testkit::{require_kvm, wait_for};
use vmm::{BootSpec, ExitReason, Vm};

type Output = Arc<Mutex<Vec<u8>>>;

fn capture() -> (vmm::SerialSink, Output) {
    let out: Output = Arc::default();
    let o = out.clone();
    (
        Box::new(move |b: &[u8], _| o.lock().unwrap().extend_from_slice(b)),
        out,
    )
}

fn lines(out: &Output) -> Vec<Line> {
    let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    text.lines().map(parse_line).collect()
}

fn heartbeats(lines: &[Line]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Heartbeat { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn verifies(lines: &[Line]) -> (usize, usize) {
    let ok = lines
        .iter()
        .filter(|l| matches!(l, Line::Verify { ok: true, .. }))
        .count();
    let bad = lines
        .iter()
        .filter(|l| matches!(l, Line::Verify { ok: false, .. }))
        .count();
    (ok, bad)
}

fn boot(name: &str, cmdline: &str, memory: u64, vcpus: u32) -> (Vm, Output) {
    require_kvm();
    let (sink, out) = capture();
    let vm = Vm::boot(
        &BootSpec {
            kernel: guest::image(name).expect("built-in guest"),
            kernel_name: name.into(),
            cmdline: cmdline.into(),
            memory_bytes: memory,
            vcpus,
        },
        sink,
    )
    .unwrap_or_else(|e| panic!("booting {name}: {e}"));
    (vm, out)
}

fn assert_consecutive(seqs: &[u64]) {
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "heartbeat sequence has a gap: {seqs:?}");
    }
}

fn run_to_end(name: &str, cmdline: &str, vcpus: u32) {
    let (vm, out) = boot(name, cmdline, 256 << 20, vcpus);
    let exit = vm.wait(Some(Duration::from_secs(60)));
    let l = lines(&out);
    assert_eq!(
        exit,
        Some(ExitReason::Guest(1)),
        "{name}: {:?}",
        &l[l.len().saturating_sub(5)..]
    );
    assert!(
        matches!(l.first(), Some(Line::Ready { .. })),
        "{name} printed no READY line"
    );
    let hb = heartbeats(&l);
    assert!(hb.len() > 10, "{name}: only {} heartbeats", hb.len());
    assert_eq!(hb[0], 0);
    assert_consecutive(&hb);
    let (ok, bad) = verifies(&l);
    assert!(
        ok >= 1 && bad == 0,
        "{name}: {ok} verifications passed, {bad} failed"
    );
}

#[test]
fn idle_boots_and_exits() {
    run_to_end("idle", "run=1", 1);
}

#[test]
fn dirtier_runs_on_two_vcpus() {
    run_to_end("dirtier", "ws=16M rate=20000 run=1 verify=500ms", 2);
}

#[test]
fn kvstore_serves_and_verifies() {
    run_to_end("kvstore", "keys=20000 run=1 verify=500ms", 1);
}

/// Snapshot a running dirtier, stop it, restore into a new VM: the guest
/// must continue its heartbeat numbering and pass its integrity check.
fn snapshot_round_trip(vcpus: u32) {
    let (vm, out) = boot(
        "dirtier",
        "ws=32M rate=20000 verify=300ms run=2",
        256 << 20,
        vcpus,
    );
    // Snapshot a guest that is well under way: it has printed heartbeats and
    // passed a verification.
    wait_for(
        "a heartbeat and a passed verification",
        Duration::from_secs(30),
        || {
            let l = lines(&out);
            (!heartbeats(&l).is_empty() && verifies(&l).0 >= 1).then_some(())
        },
    );
    vm.pause().unwrap();
    let mut snap = Vec::new();
    let stats = vmm::snapshot::write_paused(&vm, &mut snap).unwrap();
    assert!(stats.pages > 0);
    vm.stop(ExitReason::Stopped);
    drop(vm);
    let before = heartbeats(&lines(&out));
    assert!(!before.is_empty());

    let (sink, out2) = capture();
    let (vm2, _) =
        vmm::snapshot::restore(&snap[..], sink, &vmstate::ReadLimits::default()).unwrap();
    vm2.resume().unwrap();
    let exit = vm2.wait(Some(Duration::from_secs(60)));
    let after_lines = lines(&out2);
    assert_eq!(
        exit,
        Some(ExitReason::Guest(1)),
        "{:?}",
        &after_lines[after_lines.len().saturating_sub(5)..]
    );
    let after = heartbeats(&after_lines);
    assert!(!after.is_empty(), "the restored guest printed no heartbeat");
    let last_before = *before.last().unwrap();
    assert!(
        after[0] <= last_before + 1,
        "heartbeats jumped from {last_before} to {} across the restore",
        after[0]
    );
    assert_consecutive(&after);
    let (ok, bad) = verifies(&after_lines);
    assert!(
        ok >= 1 && bad == 0,
        "after restore: {ok} verifications passed, {bad} failed"
    );
}

#[test]
fn snapshot_restore_one_vcpu() {
    snapshot_round_trip(1);
}

#[test]
fn snapshot_restore_two_vcpus() {
    snapshot_round_trip(2);
}

#[test]
fn damaged_snapshots_are_refused_and_leave_nothing_running() {
    let (vm, _out) = boot("idle", "", 64 << 20, 1);
    std::thread::sleep(Duration::from_millis(100));
    let mut snap = Vec::new();
    vmm::snapshot::save(&vm, &mut snap).unwrap();
    drop(vm);
    let limits = vmstate::ReadLimits::default();
    let truncated = &snap[..snap.len() - 100];
    let e = vmm::snapshot::restore(truncated, capture().0, &limits)
        .err()
        .expect("truncated snapshot restored");
    assert!(e.to_string().contains("truncated"), "{e}");
    let mut corrupt = snap.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x40;
    let e = vmm::snapshot::restore(&corrupt[..], capture().0, &limits)
        .err()
        .expect("corrupt snapshot restored");
    assert!(e.to_string().contains("checksum"), "{e}");
    let small = vmstate::ReadLimits {
        max_memory_bytes: 1 << 20,
    };
    let e = vmm::snapshot::restore(&snap[..], capture().0, &small)
        .err()
        .expect("oversized snapshot restored");
    assert!(e.to_string().contains("memory"), "{e}");
}

#[test]
fn a_guest_that_crashes_is_reported() {
    require_kvm();
    // A Multiboot kernel whose first instruction is ud2, with no IDT: the
    // exception cannot be delivered and the vCPU triple-faults.
    let img = raw_kernel(&[0x0f, 0x0b]);
    let vm = Vm::boot(
        &BootSpec {
            kernel: &img,
            kernel_name: "crasher".into(),
            cmdline: String::new(),
            memory_bytes: 16 << 20,
            vcpus: 1,
        },
        capture().0,
    )
    .unwrap();
    match vm.wait(Some(Duration::from_secs(30))) {
        Some(ExitReason::Crashed(msg)) => assert!(msg.contains("crash"), "{msg}"),
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[test]
fn bad_boot_input_is_refused() {
    require_kvm();
    let spec = |kernel: &'static [u8], memory: u64, vcpus: u32| BootSpec {
        kernel,
        kernel_name: "x".into(),
        cmdline: String::new(),
        memory_bytes: memory,
        vcpus,
    };
    let e = Vm::boot(&spec(b"\x7fELF not really", 64 << 20, 1), capture().0)
        .err()
        .unwrap();
    assert!(e.to_string().contains("Multiboot"), "{e}");
    let e = Vm::boot(
        &spec(guest::image("idle").unwrap(), 1 << 50, 1),
        capture().0,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("available"), "{e}");
    let e = Vm::boot(
        &spec(guest::image("idle").unwrap(), 64 << 20, 0),
        capture().0,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("vCPUs"), "{e}");
    let e = Vm::boot(
        &spec(guest::image("idle").unwrap(), 1 << 20, 1),
        capture().0,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("RAM only up to"), "{e}");
}

/// A Multiboot kernel running `code` at its entry (32-bit protected mode).
fn raw_kernel(code: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; 32];
    let (magic, flags) = (0x1BAD_B002u32, 1u32 << 16);
    let end = 0x10_0020 + code.len() as u32;
    let words = [
        magic,
        flags,
        0u32.wrapping_sub(magic.wrapping_add(flags)),
        0x10_0000,
        0x10_0000,
        end,
        0,
        0x10_0020,
    ];
    for (i, w) in words.iter().enumerate() {
        img[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    img.extend_from_slice(code);
    img
}

#[test]
fn the_tsc_leaf_reaches_the_guest() {
    require_kvm();
    // mov eax,0x40000000; cpuid; cmp eax,0x40000010; je ok; mov al,2; out 0xf4,al; jmp $
    // ok: mov eax,0x40000010; cpuid; test eax,eax; jz bad; xor eax,eax; out 0xf4,al; bad: mov al,3; out 0xf4,al; jmp $
    let code = [
        0xB8, 0x00, 0x00, 0x00, 0x40, 0x0F, 0xA2, 0x3D, 0x10, 0x00, 0x00, 0x40, 0x74, 0x06, 0xB0,
        0x02, 0xE6, 0xF4, 0xEB, 0xFE, 0xB8, 0x10, 0x00, 0x00, 0x40, 0x0F, 0xA2, 0x85, 0xC0, 0x74,
        0x04, 0x31, 0xC0, 0xE6, 0xF4, 0xB0, 0x03, 0xE6, 0xF4, 0xEB, 0xFE,
    ];
    let img = raw_kernel(&code);
    let vm = Vm::boot(
        &BootSpec {
            kernel: &img,
            kernel_name: "cpuid".into(),
            cmdline: String::new(),
            memory_bytes: 16 << 20,
            vcpus: 1,
        },
        capture().0,
    )
    .unwrap();
    assert_eq!(
        vm.wait(Some(Duration::from_secs(30))),
        Some(ExitReason::Guest(1)),
        "2: max leaf too low, 3: no TSC kHz"
    );
}

#[test]
fn a_prompt_without_newline_reaches_the_host_at_once() {
    require_kvm();
    // mov dx,0x3f8; then `mov al,c; out dx,al` for each byte; jmp $
    let mut code = vec![0x66, 0xBA, 0xF8, 0x03];
    for &c in b"login: " {
        code.extend([0xB0, c, 0xEE]);
    }
    code.extend([0xEB, 0xFE]);
    let img = raw_kernel(&code);
    let (sink, out) = capture();
    let vm = Vm::boot(
        &BootSpec {
            kernel: &img,
            kernel_name: "prompt".into(),
            cmdline: String::new(),
            memory_bytes: 16 << 20,
            vcpus: 1,
        },
        sink,
    )
    .unwrap();
    // The guest never prints a newline; every byte still arrives.
    wait_for("the prompt", Duration::from_secs(30), || {
        (out.lock().unwrap().as_slice() == b"login: ").then_some(())
    });
    vm.stop(ExitReason::Stopped);
}

/// The dirtier's own rate counter (pages/s, from its status page).
fn guest_rate(vm: &Vm) -> Option<u64> {
    let mut page = vec![0u8; guest::status::LEN];
    vm.read_memory(guest::status::GPA, &mut page).ok()?;
    guest::status::decode(&page).ok().map(|s| s.write_rate)
}

/// The median of a few readings of the guest's rate, a rate window apart.
fn settled_rate(vm: &Vm) -> u64 {
    let mut r: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(250));
            guest_rate(vm).unwrap_or(0)
        })
        .collect();
    r.sort_unstable();
    r[2]
}

#[test]
fn a_throttle_shows_in_the_guests_rate_and_its_release_restores_it() {
    // Writing as fast as it can, the guest's rate measures its time in the guest.
    let (vm, _out) = boot("dirtier", "ws=8M rate=0", 64 << 20, 2);
    let patience = Duration::from_secs(60);
    wait_for("the guest to publish its rate", patience, || {
        guest_rate(&vm).filter(|&r| r > 0)
    });
    let free = settled_rate(&vm);
    vm.set_throttle(0.9).unwrap();
    assert_eq!(vm.throttle(), 0.9);
    // 10 % of the time in the guest: the rate falls well below a third.
    let slow = wait_for("the throttled guest to slow down", patience, || {
        Some(settled_rate(&vm)).filter(|&r| r < free / 3)
    });
    // Pausing does not wait for the vCPUs' time out of the guest to end.
    vm.set_throttle(0.99).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    vm.pause().unwrap();
    vm.resume().unwrap();
    vm.set_throttle(0.0).unwrap();
    let again = wait_for("the released guest to speed up again", patience, || {
        Some(settled_rate(&vm)).filter(|&r| r > free / 2)
    });
    eprintln!("guest pages/s: free {free}, throttled 90 % {slow}, released {again}");
    for bad in [1.0, 0.995, -0.1, f64::NAN] {
        let e = vm.set_throttle(bad).unwrap_err().to_string();
        assert!(e.contains("0.99"), "{e}");
    }
    assert_eq!(vm.throttle(), 0.0);
}

/// Pages set in a harvest's bitmaps (one region here).
fn count(bits: &[Vec<u64>]) -> u64 {
    bits.iter()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum()
}

#[test]
fn the_dirty_log_reports_only_what_was_written_since_the_last_harvest() {
    // 8 MiB written over and over in a 64 MiB guest.
    let (vm, _out) = boot("dirtier", "ws=8M rate=0 pattern=seq", 64 << 20, 1);
    wait_for(
        "the guest to publish its rate",
        Duration::from_secs(60),
        || guest_rate(&vm).filter(|&r| r > 0),
    );
    let mut bits = vec![Vec::new(); 1];
    assert!(vm.harvest_dirty(&mut bits).is_err(), "logging is off");
    vm.start_dirty_log().unwrap();
    // The first harvest may report every page (KVM_DIRTY_LOG_INITIALLY_SET);
    // from then on only writes count.
    vm.harvest_dirty(&mut bits).unwrap();
    vm.pause().unwrap();
    let mut bits = vec![Vec::new(); 1];
    vm.harvest_dirty(&mut bits).unwrap();
    let before_pause = count(&bits);
    assert!(before_pause < (8 << 20) / 4096 + 64, "{before_pause} pages");
    // Paused: only what the VMM writes, exactly.
    vm.write_memory(60 << 20, &[1u8; 8]).unwrap();
    let mut bits = vec![Vec::new(); 1];
    vm.harvest_dirty(&mut bits).unwrap();
    assert_eq!(count(&bits), 1);
    assert_eq!(
        bits[0][((60 << 20) / 4096) / 64],
        1 << ((60 << 20) / 4096 % 64)
    );
    // Running again: the guest's writes are reported, inside its working set.
    vm.resume().unwrap();
    let mut bits = vec![Vec::new(); 1];
    wait_for("the guest to dirty pages", Duration::from_secs(60), || {
        vm.harvest_dirty(&mut bits).unwrap();
        Some(count(&bits)).filter(|&n| n > 100)
    });
    assert!(count(&bits) < (8 << 20) / 4096 + 64);
    vm.stop_dirty_log().unwrap();
}
