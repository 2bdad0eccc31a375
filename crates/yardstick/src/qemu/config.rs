//! What QEMU to start for one guest, and the exact command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::probe::{check_kvm, host_tsc_hz};
use crate::error::Error;
use crate::serial::StampFn;

/// The CPU model that works on these machines. `-cpu host` and `-cpu max`
/// both abort on kvm-pvm ("failed to set MSR 0x10a"): the nested KVM lists
/// IA32_ARCH_CAPABILITIES but refuses writes to it, so that feature is
/// switched off. Everything else of the host CPU is passed through.
pub const DEFAULT_CPU: &str = "host,-arch-capabilities";

/// Where qboot, the minimal firmware Debian's qemu-system-data ships, lives.
pub const QBOOT_PATH: &str = "/usr/share/qemu/qboot.rom";

/// Builds a fresh [`StampFn`] for each QEMU process's serial log.
pub type StampFnFactory = Arc<dyn Fn() -> StampFn + Send + Sync>;

/// The firmware QEMU runs before the Multiboot kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Firmware {
    /// qboot (`-bios /usr/share/qemu/qboot.rom`): boots to the kernel in
    /// ~0.15 s here. It builds the MP table the guests need, like SeaBIOS.
    Qboot,
    /// QEMU's default SeaBIOS. Its real-mode code is emulated on kvm-pvm at
    /// ~1.5M instructions/s, so it alone takes ~3.5 s here.
    SeaBios,
    /// Any other firmware image (`-bios PATH`).
    Custom(PathBuf),
}

/// How to start QEMU for one guest.
#[derive(Clone)]
pub struct QemuConfig {
    /// The QEMU binary (looked up in PATH when not absolute).
    pub binary: PathBuf,
    /// The Multiboot v1 kernel file.
    pub kernel: PathBuf,
    /// The kernel command line (`-append`).
    pub append: String,
    /// Guest memory in MiB (`-m`).
    pub memory_mib: u64,
    /// Number of vCPUs (`-smp`).
    pub vcpus: u32,
    /// CPU model (`-cpu`).
    pub cpu: String,
    /// Firmware to boot through.
    pub firmware: Firmware,
    /// More arguments appended verbatim.
    pub extra_args: Vec<String>,
    /// Bound on each QMP reply.
    pub qmp_timeout: Duration,
    /// Bound on QEMU's start until serial and QMP are connected.
    pub start_timeout: Duration,
    /// Optional refinement of serial line times (see [`serial::StampFn`]).
    pub stamper: Option<StampFnFactory>,
    /// Give the guest CPUID leaf 0x40000010 (TSC frequency in kHz), as
    /// Ferry's VMM does: adds `+invtsc,tsc-frequency=<host TSC Hz>` to the
    /// CPU model. Without `+invtsc` QEMU 7.2 does not offer that leaf, and
    /// without an explicit `tsc-frequency` `+invtsc` blocks migration. The
    /// host frequency is probed once per process ([`host_tsc_hz`]).
    pub tsc_leaf: bool,
    /// Back the guest's RAM with a file in /dev/shm
    /// (`-object memory-backend-file,share=on`) that host tools can map
    /// ([`crate::Qemu::ram_file`]). Off by default: reading a page the
    /// guest never wrote allocates it in a shared tmpfs mapping, so QEMU's
    /// zero-page scan of a migration runs ~4x slower and fills the file.
    pub shared_ram: bool,
}

impl std::fmt::Debug for QemuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuConfig")
            .field("binary", &self.binary)
            .field("kernel", &self.kernel)
            .field("append", &self.append)
            .field("memory_mib", &self.memory_mib)
            .field("vcpus", &self.vcpus)
            .field("cpu", &self.cpu)
            .field("firmware", &self.firmware)
            .field("extra_args", &self.extra_args)
            .field("stamper", &self.stamper.is_some())
            .field("tsc_leaf", &self.tsc_leaf)
            .field("shared_ram", &self.shared_ram)
            .finish()
    }
}

impl QemuConfig {
    /// A 256 MiB, 1-vCPU guest booting `kernel` through qboot.
    pub fn new(kernel: impl Into<PathBuf>) -> QemuConfig {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            kernel: kernel.into(),
            append: String::new(),
            memory_mib: 256,
            vcpus: 1,
            cpu: DEFAULT_CPU.to_string(),
            firmware: Firmware::Qboot,
            extra_args: Vec::new(),
            qmp_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(10),
            stamper: None,
            tsc_leaf: true,
            shared_ram: false,
        }
    }

    /// The `-cpu` value used: [`QemuConfig::cpu`], plus the TSC options
    /// when [`QemuConfig::tsc_leaf`] is set (this may start QEMU once to
    /// probe the host's TSC frequency).
    pub fn effective_cpu(&self) -> Result<String, Error> {
        if self.tsc_leaf {
            let hz = host_tsc_hz(&self.binary)?;
            Ok(format!("{},+invtsc,tsc-frequency={hz}", self.cpu))
        } else {
            Ok(self.cpu.clone())
        }
    }

    /// The full QEMU argument list, given the `-cpu` value (see
    /// [`QemuConfig::effective_cpu`]), the serial and QMP socket paths,
    /// whether this is a migration destination, and the file backing the
    /// guest's RAM (with [`QemuConfig::shared_ram`]).
    pub fn args(
        &self,
        cpu: &str,
        serial_sock: &Path,
        qmp_sock: &Path,
        incoming: bool,
        ram_file: Option<&Path>,
    ) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-enable-kvm".into(),
            "-cpu".into(),
            cpu.to_string(),
            "-m".into(),
            format!("{}M", self.memory_mib),
            "-smp".into(),
            self.vcpus.to_string(),
        ];
        if let Some(f) = ram_file {
            a.extend([
                "-object".into(),
                format!(
                    "memory-backend-file,id=ram0,size={}M,mem-path={},share=on",
                    self.memory_mib,
                    f.display()
                ),
                "-machine".into(),
                "memory-backend=ram0".into(),
            ]);
        }
        match &self.firmware {
            Firmware::Qboot => a.extend(["-bios".into(), QBOOT_PATH.into()]),
            Firmware::SeaBios => {}
            Firmware::Custom(p) => a.extend(["-bios".into(), p.display().to_string()]),
        }
        a.extend([
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-append".into(),
            self.append.clone(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-nodefaults".into(),
            "-device".into(),
            "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
            "-chardev".into(),
            format!("socket,id=ser0,path={}", serial_sock.display()),
            "-serial".into(),
            "chardev:ser0".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp_sock.display()),
        ]);
        if incoming {
            a.extend(["-incoming".into(), "defer".into()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    pub(super) fn check(&self) -> Result<(), Error> {
        if self.memory_mib == 0 {
            return Err(Error::Config("memory_mib must be at least 1".into()));
        }
        if self.vcpus == 0 {
            return Err(Error::Config("vcpus must be at least 1".into()));
        }
        if !self.kernel.is_file() {
            return Err(Error::MissingFile {
                what: "guest kernel",
                path: self.kernel.clone(),
            });
        }
        let fw = match &self.firmware {
            Firmware::Qboot => Some(PathBuf::from(QBOOT_PATH)),
            Firmware::Custom(p) => Some(p.clone()),
            Firmware::SeaBios => None,
        };
        if let Some(fw) = fw.filter(|p| !p.is_file()) {
            return Err(Error::MissingFile {
                what: "firmware",
                path: fw,
            });
        }
        check_kvm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_list() {
        let mut c = QemuConfig::new("/g/dirtier.elf");
        c.append = "ws=64M rate=1000".into();
        c.memory_mib = 512;
        c.vcpus = 2;
        let ram = Path::new("/dev/shm/x/ram");
        let a = c.args(
            "host",
            Path::new("/t/s.sock"),
            Path::new("/t/q.sock"),
            true,
            Some(ram),
        );
        let text = a.join(" ");
        for want in [
            "-enable-kvm -cpu host -m 512M -smp 2",
            "-bios /usr/share/qemu/qboot.rom",
            "-kernel /g/dirtier.elf",
            "-display none -no-reboot -nodefaults",
            "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-chardev socket,id=ser0,path=/t/s.sock -serial chardev:ser0",
            "-qmp unix:/t/q.sock,server=on,wait=off",
            "-incoming defer",
            "-object memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/x/ram,share=on -machine memory-backend=ram0",
        ] {
            assert!(text.contains(want), "{want:?} missing in {text}");
        }
        // The command line stays one argument, spaces and all.
        assert!(a.iter().any(|x| x == "ws=64M rate=1000"));
        c.firmware = Firmware::SeaBios;
        let a = c.args("host", Path::new("s"), Path::new("q"), false, None);
        assert!(
            !a.iter()
                .any(|x| x == "-bios" || x == "-incoming" || x == "-object")
        );
    }
}
