//! Unique temporary directories, removed on drop.

use std::path::{Path, PathBuf};

/// A directory `/tmp/gvtest-<label>-<pid>-<n>` removed (recursively) on drop.
/// Set `GVTEST_KEEP_TMP=1` to keep it for inspection.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

/// A fresh, unique temporary directory under `/tmp`.
pub fn tmp_dir(label: &str) -> TempDir {
    TempDir::new_in(Path::new("/tmp"), label)
}

impl TempDir {
    /// A fresh directory under `base` (for example `/dev/shm` for memory-backed
    /// files). The name stays short: unix socket paths must fit in 108 bytes.
    pub fn new_in(base: &Path, label: &str) -> TempDir {
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(24)
            .collect();
        let path = base.join(format!(
            "gvtest-{label}-{}-{}",
            std::process::id(),
            crate::next_id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("GVTEST_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
