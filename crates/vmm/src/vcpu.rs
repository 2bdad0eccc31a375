//! vCPU threads: the run loop, exits, the pause handshake, the guest's
//! rests (the idle port), and the throttle's time out of the guest
//! (`throttle`).

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::devices::{Devices, PioOutcome};
use crate::throttle::{Throttle, VcpuThrottle};

/// Why the VM stopped running for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote to the exit port; this is the process exit status.
    Guest(i32),
    /// The guest crashed or KVM could not run it.
    Crashed(String),
    /// The VMM stopped it (shutdown).
    Stopped,
    /// The VM moved to another host and must never run here again.
    Migrated,
}

/// What the VMM wants the vCPUs to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Run,
    Pause,
    Stop,
}

/// State shared by the VMM and its vCPU threads.
pub struct Control {
    pub want: Want,
    /// vCPUs currently parked (paused, with their pending I/O completed).
    pub parked: usize,
    pub exit: Option<ExitReason>,
    /// Fenced (its post-copy lease lapsed): nothing but the fence's
    /// holder may let it run again.
    pub fenced: bool,
}

pub struct Shared {
    pub ctl: Mutex<Control>,
    pub cv: Condvar,
    /// Threads to kick when the VM must stop.
    pub threads: Mutex<Vec<libc::pthread_t>>,
    /// Share of time the vCPUs are kept out of the guest.
    pub throttle: Throttle,
}

impl Shared {
    pub fn new(want: Want) -> Self {
        Shared {
            ctl: Mutex::new(Control {
                want,
                parked: 0,
                exit: None,
                fenced: false,
            }),
            cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            throttle: Throttle::default(),
        }
    }

    /// Kicks every vCPU thread out of KVM_RUN.
    pub fn kick_all(&self) {
        for &t in self.threads.lock().unwrap().iter() {
            // SAFETY: the threads are joined only after the VM stops, so each handle is live.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
    }

    /// Records the end of the VM (the first reason wins) and stops every vCPU.
    pub fn finish(&self, reason: ExitReason) {
        let mut c = self.ctl.lock().unwrap();
        if c.exit.is_none() {
            c.exit = Some(reason);
        }
        c.want = Want::Stop;
        self.cv.notify_all();
        drop(c);
        self.kick_all();
    }
}

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let p = KVM_RUN.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer is this thread's mapped kvm_run; setting
        // immediate_exit makes a KVM_RUN about to start return at once.
        unsafe { (*p).immediate_exit = 1 };
    }
}

/// Signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static ONCE: std::sync::OnceLock<Result<(), vmm_sys_util::errno::Error>> =
        std::sync::OnceLock::new();
    *ONCE.get_or_init(|| register_signal_handler(kick_signal(), kick_handler))
}

/// A running vCPU thread.
pub struct VcpuThread {
    pub fd: Arc<Mutex<VcpuFd>>,
    pub handle: Option<JoinHandle<()>>,
}

/// Spawns the thread for vCPU `id`.
pub fn spawn(
    id: u32,
    fd: Arc<Mutex<VcpuFd>>,
    shared: Arc<Shared>,
    devices: Arc<Devices>,
) -> std::io::Result<VcpuThread> {
    let f = fd.clone();
    let handle = std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn({
            let shared = shared.clone();
            move || run_loop(id, &f, &shared, &devices)
        })?;
    shared.threads.lock().unwrap().push(handle.pthread_handle());
    Ok(VcpuThread {
        fd,
        handle: Some(handle),
    })
}

fn run_loop(id: u32, fd: &Mutex<VcpuFd>, shared: &Shared, devices: &Devices) {
    let mut vcpu = fd.lock().unwrap();
    KVM_RUN.with(|c| c.set(vcpu.get_kvm_run() as *mut kvm_run));
    let mut throttle = VcpuThrottle::new(&shared.throttle);
    loop {
        let want = shared.ctl.lock().unwrap().want;
        if want != Want::Run {
            if let Err(reason) = complete_io(&mut vcpu, devices) {
                shared.finish(reason);
            }
            drop(vcpu);
            let mut c = shared.ctl.lock().unwrap();
            c.parked += 1;
            shared.cv.notify_all();
            while c.want == Want::Pause {
                c = shared.cv.wait(c).unwrap();
            }
            c.parked -= 1;
            shared.cv.notify_all();
            if c.want == Want::Stop {
                KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
                return;
            }
            drop(c);
            vcpu = fd.lock().unwrap();
            KVM_RUN.with(|c| c.set(vcpu.get_kvm_run() as *mut kvm_run));
            continue;
        }
        let next = handle_exit(id, vcpu.run(), devices);
        vcpu.set_kvm_immediate_exit(0);
        match next {
            Next::Run => {}
            Next::Rest(d) => rest(shared, d),
            Next::End(reason) => shared.finish(reason),
        }
        throttle.stay_out(shared);
    }
}

/// Runs KVM_RUN with immediate_exit set until KVM has finished any
/// half-done I/O, so the saved state is at an instruction boundary.
fn complete_io(vcpu: &mut VcpuFd, devices: &Devices) -> Result<(), ExitReason> {
    for _ in 0..64 {
        vcpu.set_kvm_immediate_exit(1);
        let r = vcpu.run();
        let done = matches!(&r, Err(e) if e.errno() == libc::EINTR);
        let next = handle_exit(u32::MAX, r, devices);
        vcpu.set_kvm_immediate_exit(0);
        // A rest asked for now is dropped: the VM is pausing.
        if let Next::End(reason) = next {
            return Err(reason);
        }
        if done {
            return Ok(());
        }
    }
    Err(ExitReason::Crashed(
        "vCPU kept exiting while being paused".into(),
    ))
}

/// What a vCPU thread does after one return of KVM_RUN.
enum Next {
    /// Enter the guest again.
    Run,
    /// Stay out of the guest this long first (the idle port).
    Rest(Duration),
    /// The VM ends.
    End(ExitReason),
}

/// Handles one return of KVM_RUN.
fn handle_exit(id: u32, r: Result<VcpuExit<'_>, kvm_ioctls::Error>, devices: &Devices) -> Next {
    let exit = match r {
        Ok(exit) => exit,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return Next::Run,
        Err(e) => {
            return Next::End(ExitReason::Crashed(format!(
                "KVM_RUN failed on vCPU {id}: {e}"
            )));
        }
    };
    let crashed = |why: String| Next::End(ExitReason::Crashed(why));
    match exit {
        VcpuExit::IoOut(port, data) => match devices.pio_write(port, data) {
            PioOutcome::Handled => Next::Run,
            PioOutcome::Idle(d) => Next::Rest(d),
            PioOutcome::Exit(code) => Next::End(ExitReason::Guest(code)),
        },
        VcpuExit::IoIn(port, data) => {
            devices.pio_read(port, data);
            Next::Run
        }
        VcpuExit::MmioRead(_, data) => {
            data.fill(0xff);
            Next::Run
        }
        VcpuExit::MmioWrite(..) | VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen => {
            Next::Run
        }
        VcpuExit::Shutdown => crashed(format!(
            "guest crashed: vCPU {id} triple-faulted (shutdown exit)"
        )),
        VcpuExit::FailEntry(reason, cpu) => crashed(format!(
            "vCPU {id} could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
        )),
        VcpuExit::InternalError => crashed(format!(
            "guest crashed: KVM internal error on vCPU {id} (emulation failure)"
        )),
        VcpuExit::SystemEvent(kind, _) => crashed(format!(
            "guest crashed: system event {kind} on vCPU {id} (reset or shutdown request)"
        )),
        other => crashed(format!("unexpected exit on vCPU {id}: {other:?}")),
    }
}

/// Keeps this vCPU out of the guest for `d`, its host thread asleep (the
/// guest's `hlt` with a timer), unless the VMM wants something else of it
/// first: a pause or a stop (every kick that asks for one also wakes the
/// VM's condition variable) ends the rest at once, so the pause handshake
/// is as prompt as for a running vCPU. A throttle period does not: the
/// vCPU is already out of the guest.
fn rest(shared: &Shared, d: Duration) {
    let deadline = Instant::now() + d;
    let mut c = shared.ctl.lock().unwrap();
    while c.want == Want::Run {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        c = shared.cv.wait_timeout(c, deadline - now).unwrap().0;
    }
}
