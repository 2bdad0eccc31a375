//! A VM's state directory: its guest memory in a shared file, and during a
//! post-copy what a restarted `ferry run --recover DIR` needs to serve the
//! rest (docs/SAFETY.md, "Source process killed").
//!
//! Guest memory is an unnamed tmpfs file (O_TMPFILE) under the base
//! directory, so a process killed outside post-copy leaves nothing behind.
//! At the post-copy switch it gets a name, `BASE/NAME/memory`, and the
//! directory gains `recovery.json` (the migration: id, request, VM
//! configuration, post-copy set) and `state` (the latest transaction
//! applied: its number and the VM state, framed and checksummed). Every
//! file is written whole and renamed into place; `applying` marks a
//! transaction half-written into memory. When the post-copy ends (or rolls
//! back, or the VM is taken back) the record goes; the memory keeps its
//! name while the VM lives. A clean exit removes the directory; a killed
//! process leaves it for recovery. Directories are
//! owner-only (0700), files 0600; no secret is written, only the path of
//! the secret file and of the TLS directory the migration used.

use std::ffi::CString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use api::types::MigrateRequest;
use migrate::{Journal, PostcopyResume, Switched, VmError};
use vmstate::{FrameReader, FrameWriter, Kinds, Record, VmConfig, VmState};

/// Default base of state directories (`ferry run --state-dir`).
pub const DEFAULT_BASE: &str = "/dev/shm/ferry";
/// Version of `recovery.json`.
const FORMAT: u32 = 1;
const MEMORY: &str = "memory";
const RECORD: &str = "recovery.json";
const STATE: &str = "state";
const APPLYING: &str = "applying";

/// One VM's state directory.
pub struct StateDir {
    /// `BASE/NAME`: exists from the switch (or the recovery) on.
    dir: PathBuf,
    memory: Arc<File>,
    /// The directory exists and names the memory file.
    named: Mutex<bool>,
}

/// What `recovery.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct RecordFile {
    format: u32,
    /// The VM's name (`--name`).
    name: String,
    migration_id: String,
    request: MigrateRequest,
    config: VmConfig,
    transactions: bool,
    set: Vec<u64>,
}

/// A post-copy recorded by a process that died.
pub struct Recovery {
    pub name: String,
    /// The request of the migration (destination, secret file, TLS, lease, ...).
    pub request: MigrateRequest,
    pub config: VmConfig,
    pub resume: PostcopyResume,
}

impl StateDir {
    /// Guest memory for VM `name`, unnamed under `base` (created owner-only
    /// if missing) until a post-copy switch names it.
    pub fn create(base: &Path, name: &str) -> anyhow::Result<Arc<StateDir>> {
        let what = || format!("state directory {}", base.display());
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .with_context(what)?;
        check_owned(base).with_context(what)?;
        let memory = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(base)
            .with_context(|| format!("cannot create guest memory in {}", base.display()))?;
        lock(&memory).with_context(what)?;
        Ok(Arc::new(StateDir {
            dir: base.join(name),
            memory: Arc::new(memory),
            named: Mutex::new(false),
        }))
    }

    /// The state directory `dir` a killed process left: its memory file
    /// and the post-copy it recorded. One error line if it is missing,
    /// not ours, or holds no complete record.
    pub fn open(dir: &Path) -> anyhow::Result<(Arc<StateDir>, Recovery)> {
        let what = || format!("cannot recover from {}", dir.display());
        check_owned(dir).with_context(what)?;
        let text = std::fs::read_to_string(dir.join(RECORD))
            .map_err(|e| anyhow::anyhow!("no post-copy recorded ({RECORD}: {e})"))
            .with_context(what)?;
        let rec: RecordFile = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{RECORD} is damaged: {e}"))
            .with_context(what)?;
        if rec.format != FORMAT {
            return Err(anyhow::anyhow!(
                "{RECORD} has format {}, this ferry reads {FORMAT}",
                rec.format
            ))
            .with_context(what);
        }
        let migration_id = u64::from_str_radix(&rec.migration_id, 16)
            .map_err(|_| anyhow::anyhow!("{RECORD} names no migration id"))
            .with_context(what)?;
        let (synced, state) = read_state(dir).with_context(what)?;
        let memory = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(MEMORY))
            .map_err(|e| anyhow::anyhow!("{MEMORY}: {e}"))
            .with_context(what)?;
        // Two processes serving one post-copy could both give the VM a home.
        lock(&memory).with_context(what)?;
        let sd = Arc::new(StateDir {
            dir: dir.to_path_buf(),
            memory: Arc::new(memory),
            named: Mutex::new(true),
        });
        let recovery = Recovery {
            name: rec.name,
            request: rec.request,
            config: rec.config,
            resume: PostcopyResume {
                migration_id,
                set: rec.set,
                transactions: rec.transactions,
                synced,
                state,
            },
        };
        Ok((sd, recovery))
    }

    /// The file guest memory lives in.
    pub fn memory_file(&self) -> Arc<File> {
        Arc::clone(&self.memory)
    }

    /// `BASE/NAME`, the directory a restarted process recovers from.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A journal for a migration of the VM `name` (`config`) asked for by `req`.
    pub fn journal(
        self: &Arc<Self>,
        name: &str,
        req: &MigrateRequest,
        config: &VmConfig,
    ) -> Box<dyn Journal> {
        let mut request = req.clone();
        request.secret_file = request.secret_file.map(absolute);
        request.tls_dir = request.tls_dir.map(absolute);
        Box::new(DirJournal {
            dir: Arc::clone(self),
            name: name.to_string(),
            request,
            config: config.clone(),
        })
    }

    /// Nothing to recover any more: removes the directory (the memory
    /// stays mapped while the VM lives, as an unnamed file).
    pub fn remove(&self) {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if *named {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!("cannot remove state directory {}: {e}", self.dir.display());
            }
            *named = false;
        }
    }

    /// Names the memory file: `BASE/NAME/memory`.
    fn name_memory(&self) -> std::io::Result<()> {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if *named {
            return Ok(());
        }
        DirBuilder::new().mode(0o700).create(&self.dir)?;
        let from = CString::new(format!("/proc/self/fd/{}", self.memory.as_raw_fd()))?;
        let to = CString::new(self.dir.join(MEMORY).into_os_string().into_encoded_bytes())?;
        // SAFETY: both paths are NUL-terminated strings that live across
        // the call; linkat only reads them.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&self.dir);
            return Err(e);
        }
        *named = true;
        Ok(())
    }

    /// Writes `name` whole: a temporary file renamed into place.
    fn put(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(name))
    }
}

/// Holds `memory` for this process (flock, released when it dies); fails
/// if a live process holds it.
fn lock(memory: &File) -> anyhow::Result<()> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(memory.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!("its guest memory is in use by a running ferry process");
        }
        bail!("cannot lock its guest memory: {e}");
    }
    Ok(())
}

/// A relative path as this process reads it, made absolute for another.
fn absolute(p: String) -> String {
    match std::path::absolute(&p) {
        Ok(a) => a.display().to_string(),
        Err(_) => p,
    }
}

/// Refuses a directory another user owns or others may enter.
fn check_owned(dir: &Path) -> anyhow::Result<()> {
    let m = std::fs::metadata(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    if !m.is_dir() {
        bail!("not a directory");
    }
    if m.uid() != me {
        bail!("owned by user {}, not by this user ({me})", m.uid());
    }
    if m.permissions().mode() & 0o077 != 0 {
        bail!(
            "others may access it (mode {:o}; it must be 700)",
            m.permissions().mode() & 0o777
        );
    }
    Ok(())
}

/// The latest transaction recorded: its number and state (`None` if a
/// transaction was being written into memory, or none is recorded).
fn read_state(dir: &Path) -> anyhow::Result<(u64, Option<Box<VmState>>)> {
    let applying = match std::fs::read(dir.join(APPLYING)) {
        Ok(b) => Some(seq_of(&b).ok_or_else(|| anyhow::anyhow!("{APPLYING} is damaged"))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("{APPLYING}: {e}"),
    };
    let mut bytes = Vec::new();
    match File::open(dir.join(STATE)) {
        Ok(mut f) => f.read_to_end(&mut bytes).map(drop)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No transactions: the destination alone can go on.
            return Ok((applying.map_or(0, |s| s.saturating_sub(1)), None));
        }
        Err(e) => bail!("{STATE}: {e}"),
    }
    let seq = seq_of(&bytes).ok_or_else(|| anyhow::anyhow!("{STATE} is damaged"))?;
    let mut r = FrameReader::new(&bytes[8..], Kinds::state_records());
    let state = match r.next_frame() {
        Ok(Some(frame)) => match Record::parse(&frame) {
            Ok(Record::State(s)) => *s,
            _ => bail!("{STATE} is damaged: no VM state"),
        },
        Ok(None) => bail!("{STATE} is damaged: empty"),
        Err(e) => bail!("{STATE} is damaged: {e}"),
    };
    match applying {
        // Memory holds part of transaction `a`: no state matches it.
        Some(a) if a > seq => Ok((seq, None)),
        _ => Ok((seq, Some(Box::new(state)))),
    }
}

fn seq_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

/// The journal a migration keeps in a state directory.
struct DirJournal {
    dir: Arc<StateDir>,
    name: String,
    request: MigrateRequest,
    config: VmConfig,
}

impl DirJournal {
    fn write_state(&self, seq: u64, state: &VmState) -> std::io::Result<()> {
        let mut bytes = seq.to_le_bytes().to_vec();
        vmstate::record::write_state(&mut FrameWriter::new(&mut bytes), state)
            .map_err(std::io::Error::other)?;
        self.dir.put(STATE, &bytes)
    }

    /// Removes `files`, in order; one that cannot go is logged (a later
    /// `ferry run --recover` would find it).
    fn remove(&self, files: &[&str]) {
        for f in files {
            match std::fs::remove_file(self.dir.dir.join(f)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::error!(
                    "cannot remove {f} from {}: {e}; remove the directory before any ferry run --recover on it",
                    self.dir.dir.display()
                ),
            }
        }
    }

    /// A write failed: no state may be resumed from any more.
    fn spoiled(&self, what: &str, e: std::io::Error) {
        tracing::error!(
            "cannot record {what} in {}: {e}; a restarted source could only serve the destination, never resume the VM itself",
            self.dir.dir.display()
        );
        let _ = std::fs::remove_file(self.dir.dir.join(STATE));
    }
}

impl Journal for DirJournal {
    fn switched(&mut self, rec: &Switched<'_>) -> Result<(), VmError> {
        self.dir.name_memory().map_err(|e| {
            format!(
                "cannot name the guest memory file in {}: {e}",
                self.dir.dir.display()
            )
        })?;
        let record = RecordFile {
            format: FORMAT,
            name: self.name.clone(),
            migration_id: format!("{:016x}", rec.migration_id),
            request: self.request.clone(),
            config: self.config.clone(),
            transactions: rec.transactions,
            set: rec.set.to_vec(),
        };
        let json = serde_json::to_vec(&record)?;
        let dir = self.dir.dir.display().to_string();
        let _ = std::fs::remove_file(self.dir.dir.join(APPLYING));
        let _ = std::fs::remove_file(self.dir.dir.join(STATE));
        if let Some(state) = rec.state {
            self.write_state(0, state)
                .map_err(|e| format!("cannot write {STATE} in {dir}: {e}"))?;
        }
        self.dir
            .put(RECORD, &json)
            .map_err(|e| format!("cannot write {RECORD} in {dir}: {e}"))?;
        Ok(())
    }

    fn applying(&mut self, seq: u64) {
        if let Err(e) = self.dir.put(APPLYING, &seq.to_le_bytes()) {
            self.spoiled("a transaction's start", e);
        }
    }

    fn applied(&mut self, seq: u64, state: &VmState) {
        match self.write_state(seq, state) {
            Ok(()) => {
                let _ = std::fs::remove_file(self.dir.dir.join(APPLYING));
            }
            Err(e) => self.spoiled("a transaction", e),
        }
    }

    /// Without a state nothing is resumed from; the record stays, so a
    /// restarted source still serves and hears the destination owns it.
    fn given_up(&mut self) {
        self.remove(&[STATE, APPLYING]);
    }

    /// Voids the record (`recovery.json` first: without it nothing is
    /// recovered). The memory keeps its name while the VM lives (an
    /// unnamed-then-named file cannot be named again, and a later
    /// post-copy needs it named); the directory goes at the exit.
    fn ended(&mut self) {
        self.remove(&[RECORD, STATE, APPLYING]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            memory_bytes: 1 << 20,
            vcpus: 1,
            regions: vec![(0, 1 << 20)],
            cmdline: String::new(),
            kernel: "test".into(),
            tsc_khz: 0,
        }
    }

    /// Lets the memory go, as a process that died would.
    fn unlock(sd: &StateDir) {
        // SAFETY: flock on a descriptor the StateDir owns.
        assert_eq!(
            unsafe { libc::flock(sd.memory.as_raw_fd(), libc::LOCK_UN) },
            0
        );
    }

    /// Nothing is named before the switch; the switch names memory and
    /// records the migration; transactions replace the state; a half
    /// applied one leaves no state to resume from; `ended` removes all.
    #[test]
    fn a_recorded_post_copy_is_recovered_as_recorded() {
        let tmp = testkit::TempDir::new("statedir");
        let base = tmp.path().join("base");
        let sd = StateDir::create(&base, "vm1").unwrap();
        sd.memory_file().set_len(1 << 20).unwrap();
        assert!(!sd.path().exists());
        let e = StateDir::open(sd.path()).err().unwrap();
        assert!(format!("{e:#}").contains("cannot recover from"), "{e:#}");
        let req = MigrateRequest {
            to: "127.0.0.1:9".into(),
            secret_file: Some("rel/secret".into()),
            ..MigrateRequest::default()
        };
        let mut j = sd.journal("vm1", &req, &config());
        let state = migrate::fake::fake_state(&config(), Vec::new());
        j.switched(&Switched {
            migration_id: 0xabc,
            set: &[5, 0, 0, 0],
            transactions: true,
            state: Some(&state),
        })
        .unwrap();
        let mode = std::fs::metadata(sd.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // The live process holds the memory: no second one takes it up.
        let e = StateDir::open(sd.path()).err().unwrap();
        assert!(format!("{e:#}").contains("in use by a running"), "{e:#}");
        unlock(&sd);
        let (held, rec) = StateDir::open(sd.path()).unwrap();
        assert!(StateDir::open(sd.path()).is_err());
        drop(held);
        assert_eq!(rec.name, "vm1");
        assert_eq!(rec.resume.migration_id, 0xabc);
        assert_eq!(rec.resume.set, vec![5, 0, 0, 0]);
        assert_eq!(rec.resume.synced, 0);
        assert!(rec.resume.state.is_some());
        assert!(rec.request.secret_file.unwrap().starts_with('/'));
        j.applying(1);
        j.applied(1, &state);
        let (_, rec) = StateDir::open(sd.path()).unwrap();
        assert_eq!((rec.resume.synced, rec.resume.state.is_some()), (1, true));
        j.applying(2);
        let (_, rec) = StateDir::open(sd.path()).unwrap();
        assert_eq!((rec.resume.synced, rec.resume.state.is_some()), (1, false));
        // Given up: the record stays (to serve and hear Owned), no state.
        j.applied(2, &state);
        j.given_up();
        let (_, rec) = StateDir::open(sd.path()).unwrap();
        assert_eq!(rec.resume.migration_id, 0xabc);
        assert!(rec.resume.state.is_none());
        // A damaged record: one error, nothing recovered.
        std::fs::write(sd.path().join(RECORD), b"{").unwrap();
        let e = StateDir::open(sd.path()).err().unwrap();
        assert!(format!("{e:#}").contains("damaged"), "{e:#}");
        // Ended: nothing to recover; the named memory goes with the process.
        j.ended();
        let e = StateDir::open(sd.path()).err().unwrap();
        assert!(format!("{e:#}").contains("no post-copy recorded"), "{e:#}");
        sd.remove();
        assert!(!sd.path().exists());
        assert!(std::fs::read_dir(&base).unwrap().next().is_none());
    }

    #[test]
    fn a_directory_others_may_enter_is_refused() {
        let tmp = testkit::TempDir::new("statedir-mode");
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = StateDir::open(&dir).err().unwrap();
        assert!(format!("{e:#}").contains("must be 700"), "{e:#}");
        assert!(StateDir::create(&dir, "x").is_err());
    }
}
