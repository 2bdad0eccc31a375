//! Where ring 3 begins: vCPU 0 reads what it was given, starts the APs,
//! sets up the program and prints READY; the APs wait for it, then run.

use core::fmt::{self, Write};
use core::sync::atomic::Ordering::*;

use super::clock::{TSC_KHZ, TSC_SOURCE, nanos, now, tsc_init, tsc_khz};
use super::console::CONSOLE;
use super::exceptions::idt_init;
use super::firmware::{madt_cpus, mp_cpus};
use super::heap::heap_init;
use super::heartbeat::HEART;
use super::multiboot::{BOOT, Boot, MB_BOOT_MAGIC, multiboot_read};
use super::params::{self, Params, Program};
use super::port::{EXIT_BAD_PARAM, exit, park};
use super::status::{PROGRAM_IS_KV, status_init};
use super::vcpus::{GO, await_aps, nthreads, start_aps};
use super::{Global, MAX_CPUS, boot};

/// vCPU 0 in ring 3, straight from the boot code.
#[unsafe(no_mangle)]
pub(super) extern "C" fn rt_bsp_main() -> ! {
    let t_start = unsafe { core::ptr::addr_of!(boot::rt_boot_tsc).read_volatile() };
    idt_init();
    let boot = read_boot();
    let program = crate::PROGRAM;
    PROGRAM_IS_KV.store(program == Program::Kvstore, Relaxed);
    let p = match params::parse(program, boot.cmdline()) {
        Ok(p) => p,
        Err(e) => early_error(format_args!("ERROR bad parameter {e}")),
    };
    unsafe { *PARAMS.get() = p };
    heap_init(boot);
    let expected = mp_cpus().max(madt_cpus()).unwrap_or(1).clamp(1, MAX_CPUS);
    // The APs boot (slowly, ring 0 is emulated) while the TSC is measured.
    if expected > 1 {
        start_aps(expected);
    }
    TSC_KHZ.store(tsc_init(), Relaxed);
    let h = unsafe { HEART.get() };
    h.configure(&p, t_start);
    let n = await_aps(expected);
    crate::setup(boot, &p);
    status_init(program.name(), n as u32);
    GO.store(true, Release);
    let t = now();
    h.start(t, &p);
    ready_line(program, &p, boot, n, nanos(t - t_start) / 1000);
    h.beat(t, true);
    crate::run(0)
}

/// What the Multiboot loader handed over, or the end of the guest.
fn read_boot() -> &'static Boot {
    let boot = unsafe { BOOT.get() };
    let magic = unsafe { core::ptr::addr_of!(boot::rt_boot_magic).read_volatile() };
    let info = unsafe { core::ptr::addr_of!(boot::rt_boot_info).read_volatile() };
    if magic != MB_BOOT_MAGIC {
        early_error(format_args!(
            "ERROR not started by a Multiboot loader (eax={magic:#x})"
        ));
    }
    if let Err(e) = multiboot_read(u64::from(info), boot) {
        early_error(format_args!("ERROR {e}"));
    }
    boot
}

/// Queues the READY line: what runs, on what, and how long booting took.
fn ready_line(program: Program, p: &Params, boot: &Boot, vcpus: usize, boot_us: u64) {
    let c = unsafe { CONSOLE.get() };
    let _ = write!(
        c,
        "READY guest={} vcpus={} mem={} tsc_khz={} tsc_src={} boot_us={} hb_us={}",
        program.name(),
        vcpus,
        boot.ram(),
        tsc_khz(),
        unsafe { *TSC_SOURCE.get() },
        boot_us,
        p.hb_ns / 1000,
    );
    let _ = match program {
        Program::Dirtier => writeln!(c, " ws={} rate={}", p.ws, p.rate),
        Program::Kvstore => writeln!(c, " keys={} vsize={}", p.keys, p.vsize),
        Program::Idle => writeln!(c),
    };
}

/// Parameters of this boot.
static PARAMS: Global<Params> = Global::new(Params::DEFAULT);
/// The parsed parameters.
pub fn params() -> &'static Params {
    unsafe { PARAMS.get() }
}

/// An AP in ring 3, straight from the trampoline.
#[unsafe(no_mangle)]
pub(super) extern "C" fn rt_ap_main(cpu: u64) -> ! {
    while !GO.load(Acquire) {
        core::hint::spin_loop();
    }
    let cpu = cpu as usize;
    if cpu >= nthreads() {
        park();
    }
    crate::run(cpu)
}

/// Reports a problem found before the program started, and exits.
fn early_error(args: fmt::Arguments) -> ! {
    let c = unsafe { CONSOLE.get() };
    let _ = c.write_fmt(args);
    let _ = c.write_str("\n");
    exit(EXIT_BAD_PARAM)
}
