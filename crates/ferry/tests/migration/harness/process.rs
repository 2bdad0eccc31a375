//! `ferry` child processes and what they print (shared by the migration
//! and operator suites).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::FERRY;

/// A child process killed (SIGKILL) on drop, with stdout/stderr in files.
pub struct Proc {
    pub name: String,
    child: Child,
    status: Option<ExitStatus>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(FERRY)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {FERRY}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            status: None,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if it has exited (reaped).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has
        // not reaped, so the pid cannot have been reused.
        let r = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(r, 0, "kill {}", self.name);
    }

    /// The JSON lines printed so far on stdout (`ferry ctl events`).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    pub fn alive(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for the process to exit; panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            if Instant::now() > end {
                panic!(
                    "{} still runs after {limit:?}\nstderr: {}",
                    self.name,
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait(Duration::from_secs(10));
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    /// What `ferry migrate --json` printed, parsed.
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout_text())
            .unwrap_or_else(|e| panic!("migrate --json: {e}: {}", self.stderr_text()))
    }

    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Asserts the process exited non-zero with an error line containing
    /// every one of `words` (case-insensitive) and did not panic.
    pub fn assert_failed_with(&mut self, limit: Duration, words: &[&str]) {
        let st = self.wait(limit);
        let err = self.stderr_text();
        assert!(
            !st.success(),
            "{} should fail but exited {st}\nstderr: {err}",
            self.name
        );
        assert_no_panic(&self.name, &err);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: expected exactly one error line, stderr:\n{err}",
            self.name
        );
        eprintln!("[{}] {}", self.name, lines[0]);
        let line = lines[0].to_lowercase();
        for w in words {
            assert!(
                line.contains(&w.to_lowercase()),
                "{}: error line should mention '{w}': {}",
                self.name,
                lines[0]
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn assert_no_panic(who: &str, stderr: &str) {
    assert!(!stderr.contains("panicked"), "{who} panicked:\n{stderr}");
}
