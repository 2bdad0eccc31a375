//! Temporary directories for tests.

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed when
/// dropped, unless the test is failing: then it is kept (and its path
/// printed) so its logs can be read.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates `ferry-NAME-XXXXXX`; panics if it cannot.
    pub fn new(name: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ferry-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `path()` joined with `name`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.path().join(name)
    }
}

/// A `TempDir` stands for its path wherever a `&Path` is expected.
impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!("test files kept in {}", self.0.path().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_on_drop() {
        let dir = TempDir::new("testkit");
        let p = dir.join("f");
        std::fs::write(&p, b"x").unwrap();
        assert!(
            dir.path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ferry-testkit-")
        );
        drop(dir);
        assert!(!p.exists());
    }

    #[test]
    fn kept_when_the_test_fails() {
        let kept = std::sync::Mutex::new(None);
        let r = std::panic::catch_unwind(|| {
            let dir = TempDir::new("testkit-kept");
            *kept.lock().unwrap() = Some(dir.path().to_path_buf());
            panic!("failing on purpose");
        });
        assert!(r.is_err());
        let p = kept.into_inner().unwrap().unwrap();
        assert!(p.is_dir());
        std::fs::remove_dir_all(p).unwrap();
    }
}
