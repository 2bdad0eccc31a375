//! `idle`: heartbeats and nothing else, so the VM stays almost all zero
//! pages. Its only state is a few pages written once at boot and verified
//! periodically (a lost page still shows). Other vCPUs park; every wait
//! spins, or sleeps in the VMM with `idle=sleep`.

#![no_std]
#![no_main]

#[path = "rt/mod.rs"]
mod rt;

use rt::params::{Params, Program};
use rt::pattern::{self, PAGE_WORDS};

const PROGRAM: Program = Program::Idle;
/// Pages of state.
const PAGES: usize = 16;

static STATE: rt::Global<&mut [[u64; PAGE_WORDS]]> = rt::Global::new(&mut []);

fn setup(_boot: &rt::Boot, _p: &Params) {
    let pages = rt::alloc_slice::<[u64; PAGE_WORDS]>(PAGES, "the idle state");
    for (i, page) in pages.iter_mut().enumerate() {
        pattern::fill(page, i as u64, 1);
    }
    unsafe { *STATE.get() = pages };
}

fn run(cpu: usize) -> ! {
    if cpu != 0 {
        // Nothing to do or verify: report every round as done and park.
        rt::verify_done(cpu, u64::MAX, rt::VerifyResult::EMPTY);
        rt::park();
    }
    let pages = unsafe { STATE.get() };
    loop {
        if rt::poll(0)
            && let Some(round) = rt::verify_due(0)
        {
            let mut r = rt::VerifyResult::EMPTY;
            for (i, page) in pages.iter().enumerate() {
                r.pages += 1;
                r.record("page", i as u64, 1, pattern::check(page, i as u64, 1));
            }
            rt::verify_done(0, round, r);
        }
        rt::rest_until(0, u64::MAX);
    }
}
