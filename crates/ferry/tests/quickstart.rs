//! The README's quick start, run as written: every command of its `sh`
//! block in one bash, in order, with three substitutions only: the binary
//! cargo built for this test instead of `cargo build --release`, a fresh
//! directory instead of `/tmp`, a free port instead of 7000. Each command
//! must end with the status the README says it ends with.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{TempDir, free_port, require_qemu};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const README: &str = include_str!("../../../README.md");
/// The whole block takes a few tens of seconds; past this it is stuck.
const LIMIT: Duration = Duration::from_secs(240);

/// The first `sh` block after the "Quick start" heading.
fn quick_start() -> &'static str {
    let section = &README[README
        .find("## Quick start")
        .expect("a Quick start section")..];
    let start = section.find("```sh\n").expect("an sh block") + "```sh\n".len();
    let len = section[start..].find("```").expect("the block ends");
    &section[start..start + len]
}

/// The block's commands (continuation lines joined), comments left out.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmd = String::new();
    for line in block.lines() {
        cmd.push_str(line);
        cmd.push('\n');
        if line.trim_end().ends_with('\\') {
            continue;
        }
        let c = std::mem::take(&mut cmd);
        if !c.trim().is_empty() && !c.trim_start().starts_with('#') {
            out.push(c);
        }
    }
    out
}

/// The statuses a command may end with, as the README says.
fn expected(cmd: &str) -> &'static [i32] {
    if cmd.contains("qemu-system-x86_64") {
        // isa-debug-exit: (0 << 1) | 1, the guest's check passed.
        &[1]
    } else if cmd.contains("$F migrate") {
        // A loaded machine may miss the downtime target; the VM moves anyway.
        &[0, 3]
    } else {
        &[0]
    }
}

/// The bash script: each command, then its status appended to `statuses`
/// (keeping `$?` for the next command); background jobs killed at the end.
fn script(cmds: &[String], dir: &Path, port: u16) -> String {
    let statuses = dir.join("statuses");
    let mut s = String::from("set -u\n");
    for (i, c) in cmds.iter().enumerate() {
        let c = if c.starts_with("cargo build") {
            continue;
        } else if c.starts_with("F=") {
            format!("F={FERRY}\n")
        } else {
            c.replace("/tmp/", &format!("{}/", dir.display()))
                .replace("127.0.0.1:7000", &format!("127.0.0.1:{port}"))
        };
        s.push_str(&c);
        s.push_str(&format!(
            "__s=$?; echo \"{i} $__s\" >> '{}'; (exit $__s)\n",
            statuses.display()
        ));
    }
    s.push_str("kill $(jobs -p) 2>/dev/null; wait\n");
    s
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    require_qemu();
    let dir = TempDir::new("quickstart");
    let cmds = commands(quick_start());
    assert!(cmds.len() > 15, "{cmds:?}");
    let script = script(&cmds, dir.path(), free_port());
    std::fs::write(dir.join("quickstart.sh"), &script).unwrap();
    let out = std::fs::File::create(dir.join("out")).unwrap();
    let mut child = Command::new("bash")
        .arg(dir.join("quickstart.sh"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let pgid = child.id();
    let started = Instant::now();
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if started.elapsed() > LIMIT {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // No VM may outlive the test, whatever happened.
    // SAFETY: signals only the script's own process group (it was made
    // its leader); ESRCH when every member has exited is fine.
    unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
    let output = std::fs::read_to_string(dir.join("out")).unwrap_or_default();
    eprintln!("{output}");
    assert!(finished, "stuck after {LIMIT:?}; output:\n{output}");
    let statuses = std::fs::read_to_string(dir.join("statuses")).unwrap_or_default();
    let mut seen = 0;
    for line in statuses.lines() {
        let (i, st) = line.split_once(' ').unwrap();
        let (i, st): (usize, i32) = (i.parse().unwrap(), st.parse().unwrap());
        assert!(
            expected(&cmds[i]).contains(&st),
            "`{}` ended with {st}; output:\n{output}",
            cmds[i].trim()
        );
        seen += 1;
    }
    // Every command but `cargo build` ran.
    assert_eq!(seen, cmds.len() - 1, "output:\n{output}");
    assert!(!output.contains("panicked"), "{output}");
}
