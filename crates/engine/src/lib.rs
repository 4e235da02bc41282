//! The berth engine as a library: the command line (and later the API server) calls it; no
//! business logic lives in the CLI.
//!
//! ```text
//! <root>     (/var/lib/berth)  berth.db, images/ (content store), storage/ (layers, container
//!                              roots), containers/<id>/ (bundle config.json, logs, hosts files)
//! <runroot>  (/run/berth)      runtime/ (berth-runtime state), locks
//! ```

pub mod build;
pub mod commit;
pub mod containers;
pub mod copy;
pub mod db;
pub mod describe;
pub mod events;
pub mod export;
pub mod health;
pub mod images;
pub mod inspect;
pub mod layer;
mod liveness;
pub mod logs;
pub mod monitor;
pub mod names;
pub mod networks;
pub mod options;
pub mod pull;
pub mod resources;
pub mod runtimes;
pub mod seccomp;
pub mod settings;
pub mod spec;
pub mod system;
pub mod userns;
pub mod volumes;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_image::Store;
use berth_storage::Layers;

pub use containers::{ContainerConfig, ContainerRow};

pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_RUNROOT: &str = "/run/berth";

pub struct Engine {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub db: rusqlite::Connection,
    pub store: Store,
    pub layers: Layers,
}

impl Engine {
    /// Opens the engine's state and repairs what crashed processes left behind.
    pub fn open(root: &Path, runroot: &Path) -> Result<Engine> {
        let e = Self::open_unrepaired(root, runroot)?;
        e.repair()?;
        Ok(e)
    }

    /// Opens the engine's state as a monitor does: the command that started it has just
    /// repaired it, and a scan of every container's monitor per start and exit would make each
    /// container cost in proportion to how many run.
    pub(crate) fn open_unrepaired(root: &Path, runroot: &Path) -> Result<Engine> {
        for d in [root.join("containers"), runroot.join("runtime")] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let db = db::open(&root.join("berth.db"))?;
        let store = Store::open(&root.join("images"))?;
        let layers = Layers::open(&root.join("storage"))?;
        Ok(Engine { root: root.to_path_buf(), runroot: runroot.to_path_buf(), db, store, layers })
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.runroot.join("runtime")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// berth-init (for `--init`) written out once into the runroot; it is built into berth.
    pub fn init_binary(&self) -> Result<PathBuf> {
        const INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-init"));
        let path = self.runroot.join("berth-init");
        if fs::metadata(&path).map(|m| m.len() == INIT.len() as u64).unwrap_or(false) {
            return Ok(path);
        }
        let tmp = self.runroot.join(format!("berth-init.{}", std::process::id()));
        fs::write(&tmp, INIT).with_context(|| format!("writing {}", tmp.display()))?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// A lock over the image and layer stores: shared while something adds or uses images,
    /// exclusive while garbage is collected.
    pub fn store_lock(&self, exclusive: bool) -> Result<FileLock> {
        FileLock::take(&self.store_lock_path(), exclusive)
    }

    fn store_lock_path(&self) -> PathBuf {
        self.root.join("store.lock")
    }

    /// The store lock, exclusively, if nobody holds it now.
    pub fn try_store_lock(&self) -> Result<Option<FileLock>> {
        FileLock::try_take(&self.store_lock_path())
    }
}

/// An flock(2) held until dropped.
pub struct FileLock(#[allow(dead_code)] fs::File);

impl FileLock {
    pub fn take(path: &Path, exclusive: bool) -> Result<FileLock> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            // SAFETY: flock on a file we hold open.
            if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
                return Ok(FileLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }

    /// An exclusive lock if nobody holds one now; None if somebody does.
    pub fn try_take(path: &Path) -> Result<Option<FileLock>> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file we hold open.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(FileLock(f)));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        Err(e).with_context(|| format!("locking {}", path.display()))
    }
}

/// An error that carries the exit code Docker would give (125 engine, 126 cannot invoke,
/// 127 not found).
#[derive(Debug)]
pub struct ExitError {
    pub code: i32,
    pub msg: String,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ExitError {}

impl Engine {
    /// The bytes of a container's own changes (its overlay upper dir, or what the copy
    /// driver finds changed).
    pub fn container_changes_size(&self, id: &str) -> u64 {
        let r = berth_storage::RootFs::path(&self.layers, id);
        match r.changes() {
            Ok(c) => tree_size(&c),
            Err(_) => tree_size(&r.upper()),
        }
    }
}

/// The bytes of the tree under `p` (each inode once, not crossing into other file systems);
/// 0 when it cannot be read.
pub fn tree_size(p: &Path) -> u64 {
    berth_storage::tarball::tree_size(p).unwrap_or(0)
}

/// Docker's exit code for a failure to start a container's process.
pub fn start_failure_code(msg: &str) -> i32 {
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        127
    } else if msg.contains("permission denied") || msg.contains("is a directory") || msg.contains("Permission denied") {
        126
    } else {
        125
    }
}
