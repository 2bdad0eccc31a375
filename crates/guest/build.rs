//! Compiles the guest programs in `programs/` with the host rustc into
//! freestanding Multiboot v1 ELF images, placed in OUT_DIR for `src/lib.rs`
//! to embed. No extra target is needed: the host target with `#![no_std]`,
//! a linker script and `-nostdlib -static`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest programs; each is `programs/<name>.rs`.
const PROGRAMS: &[&str] = &["dirtier", "idle", "kvstore"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let programs = manifest.join("programs");
    println!("cargo:rerun-if-changed={}", programs.display());
    println!("cargo:rerun-if-changed=build.rs");
    for entry in walk(&programs) {
        println!("cargo:rerun-if-changed={}", entry.display());
    }
    let script = programs.join("link.ld");
    for name in PROGRAMS {
        let src = programs.join(format!("{name}.rs"));
        let elf = out.join(format!("{name}.elf"));
        let output = Command::new(&rustc)
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .args([
                "--edition",
                "2024",
                "--crate-type",
                "bin",
                "--crate-name",
                name,
            ])
            .args(["--target", "x86_64-unknown-linux-gnu"])
            .args(["-C", "panic=abort"])
            .args(["-C", "opt-level=2"])
            .args(["-C", "codegen-units=1"])
            .args(["-C", "relocation-model=static"])
            .args(["-C", "target-feature=+crt-static"])
            .args(["-C", "target-cpu=x86-64"])
            .args(["-C", "debuginfo=0"])
            .args(["-C", "strip=debuginfo"])
            .args(["-C", "link-arg=-nostdlib"])
            .args(["-C", "link-arg=-nostartfiles"])
            .args(["-C", "link-arg=-static"])
            .args(["-C", "link-arg=-no-pie"])
            .args(["-C", "link-arg=-Wl,--build-id=none"])
            .args(["-C", "link-arg=-Wl,-z,max-page-size=0x1000"])
            .arg("-C")
            .arg(format!("link-arg=-Wl,-T,{}", script.display()))
            .arg("-o")
            .arg(&elf)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run rustc ({rustc:?}) for guest {name}: {e}"));
        if !output.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&output.stdout));
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
            eprintln!("building guest program {name} failed ({})", output.status);
            std::process::exit(1);
        }
        // Surface the guest's compiler warnings (cargo hides build-script output).
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            if line.starts_with("warning") && !line.contains(" emitted") {
                println!("cargo:warning=guest {name}: {line}");
            }
        }
    }
}

/// Every file under `dir`, so an edit to any of them rebuilds the guests.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files.extend(walk(&p));
            } else {
                files.push(p);
            }
        }
    }
    files
}
