//! Guest image bytes in a temporary file, since QEMU needs a path.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::error::Error;

/// Guest image bytes written to a file in a private temporary directory,
/// removed with this value.
#[derive(Debug)]
pub struct ImageFile {
    dir: TempDir,
    path: PathBuf,
}

impl ImageFile {
    /// Writes `bytes` to `<tempdir>/<name>`.
    pub fn new(name: &str, bytes: &[u8]) -> Result<ImageFile, Error> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::Config(format!("bad image file name {name:?}")));
        }
        let dir = temp_dir()?;
        let path = dir.path().join(name);
        std::fs::write(&path, bytes)
            .map_err(Error::io(format!("writing guest image {}", path.display())))?;
        Ok(ImageFile { dir, path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A private `$TMPDIR/yardstick-*` directory, removed on drop.
pub(crate) fn temp_dir() -> Result<TempDir, Error> {
    tempfile::Builder::new()
        .prefix("yardstick-")
        .tempdir()
        .map_err(Error::io("creating a temporary directory"))
}
