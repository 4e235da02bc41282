//! Cgroup managers for the three host layouts berth supports:
//! - **v1**: every controller mounted as its own hierarchy under the cgroup root;
//! - **hybrid**: v1 controllers plus a cgroup2 mount (usually `<root>/unified`) that holds a few
//!   controllers such as hugetlb (crun refuses this layout; we must not);
//! - **v2**: one unified hierarchy.
//!
//! One type, [`Cgroup`], hides the difference: create, join, apply OCI resources, freeze/thaw,
//! list and kill processes, read stats, remove. The cgroup root is a parameter so that every
//! file write can be unit-tested against a fake tree in a temp dir.

pub mod devfilter;
mod v1;
mod v2;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

/// Where the controllers live on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 controllers under `root/<controller>`; `unified` is the cgroup2 mount of a hybrid host.
    V1 { root: PathBuf, unified: Option<PathBuf> },
    /// One unified hierarchy at `root`.
    V2 { root: PathBuf },
}

#[derive(Debug)]
pub struct Error {
    pub context: String,
    pub source: io::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cgroup: {}: {}", self.context, self.source)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn err(context: impl Into<String>, source: io::Error) -> Error {
    Error { context: context.into(), source }
}

pub(crate) fn invalid(context: impl Into<String>) -> Error {
    err(context, io::Error::from(io::ErrorKind::InvalidInput))
}

/// Writes `value` to `dir/file`, naming both in the error.
pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    fs::write(&p, value).map_err(|e| err(format!("writing {value:?} to {}", p.display()), e))
}

pub(crate) fn read_file(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    fs::read_to_string(&p).map_err(|e| err(format!("reading {}", p.display()), e))
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a properly sized out-buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

impl Layout {
    /// Detects the layout under `/sys/fs/cgroup`.
    pub fn detect() -> Layout {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    pub fn detect_at(root: &Path) -> Layout {
        if is_cgroup2(root) {
            return Layout::V2 { root: root.to_path_buf() };
        }
        let unified = root.join("unified");
        let unified = is_cgroup2(&unified).then_some(unified);
        Layout::V1 { root: root.to_path_buf(), unified }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Layout::V2 { .. } => "v2",
            Layout::V1 { unified: Some(_), .. } => "v1 (hybrid)",
            Layout::V1 { .. } => "v1",
        }
    }
}

/// Usage figures for `events --stats` and `berth stats`.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub memory_usage: u64,
    /// `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub memory_max_usage: u64,
    /// File pages not recently used, counted in the usage but reclaimable first (Docker's
    /// `stats` leaves them out of what it shows).
    pub memory_inactive_file: u64,
    pub oom_kills: u64,
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// One container's cgroup. `path` is relative to the root of each hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    layout: Layout,
    path: PathBuf,
    /// v1: the hierarchies mounted under the root, listed once (every operation needs them).
    controllers: std::sync::OnceLock<Vec<String>>,
}

/// Turns an OCI `cgroupsPath` (absolute or relative; both taken from the hierarchy root as runc
/// does) into a relative path with no `..` in it.
pub fn normalize_path(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => return Err(invalid(format!("cgroupsPath {:?} must not contain '..'", p))),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid(format!("cgroupsPath {:?} names the root cgroup", p)));
    }
    Ok(out)
}

impl Cgroup {
    pub fn new(layout: Layout, path: &Path) -> Result<Cgroup> {
        Ok(Cgroup { layout, path: normalize_path(path)?, controllers: std::sync::OnceLock::new() })
    }

    /// The v1 hierarchies under the root (empty on v2).
    fn controllers(&self) -> &[String] {
        self.controllers.get_or_init(|| match &self.layout {
            Layout::V1 { root, .. } => v1::mounted_controllers(root),
            Layout::V2 { .. } => Vec::new(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the cgroup in every hierarchy (enabling controllers on the way for v2).
    ///
    /// On a hybrid host the cgroup2 half only tracks the processes: its controllers (typically
    /// just hugetlb) are enabled by [`Cgroup::apply`] when the resources ask for them, so that a
    /// container without such limits leaves the host's `cgroup.subtree_control` files alone.
    pub fn create(&self) -> Result<()> {
        self.create_v2()?;
        self.create_v1()
    }

    /// The first part of [`Cgroup::create`]: the cgroup2 directory ([`Cgroup::v2_dir`]), so
    /// that a child can be cloned into it while the rest is made.
    pub fn create_v2(&self) -> Result<()> {
        match &self.layout {
            Layout::V1 { unified: Some(u), .. } => retry_vanished(|| v2::create_dirs(u, &self.path)),
            Layout::V1 { unified: None, .. } => Ok(()),
            Layout::V2 { root } => retry_vanished(|| v2::create(root, &self.path)),
        }
    }

    /// The rest of [`Cgroup::create`]: the v1 hierarchies.
    pub fn create_v1(&self) -> Result<()> {
        match &self.layout {
            Layout::V1 { root, .. } => retry_vanished(|| v1::create(root, self.controllers(), &self.path)),
            Layout::V2 { .. } => Ok(()),
        }
    }

    /// Moves `pid` (and so its future children) into this cgroup.
    ///
    /// Moving another process takes the kernel's global threadgroup lock for writing, which
    /// waits for an RCU grace period (several milliseconds) unless another move happened just
    /// before. A process about to be created is better cloned straight into the cgroup2 half
    /// ([`Cgroup::v2_dir`] with `CLONE_INTO_CGROUP`) and moved into the v1 hierarchies by itself
    /// ([`Cgroup::join_self`]), which needs no such lock.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for dir in self.dirs() {
            write_file(&dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// The cgroup2 directory of this cgroup: the whole cgroup on v2, the unified half on a
    /// hybrid host, none on plain v1. A child cloned with `CLONE_INTO_CGROUP` and an fd of this
    /// directory starts inside it.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        match &self.layout {
            Layout::V1 { unified, .. } => unified.as_ref().map(|u| u.join(&self.path)),
            Layout::V2 { root } => Some(root.join(&self.path)),
        }
    }

    /// Moves the calling process into this cgroup. The caller must be single threaded: on v1 it
    /// writes "0" to each hierarchy's `tasks` file, which moves the calling thread (here, the
    /// whole process) without the kernel's global threadgroup lock that a write to
    /// `cgroup.procs` takes. `v2_joined` says the process already sits in the cgroup2 half
    /// (cloned there with `CLONE_INTO_CGROUP`); otherwise it is moved there through
    /// `cgroup.procs` (v2 has no per-thread move for a domain cgroup).
    pub fn join_self(&self, v2_joined: bool) -> Result<()> {
        if let Layout::V1 { root, .. } = &self.layout {
            for c in self.controllers() {
                let dir = root.join(c).join(&self.path);
                match fs::OpenOptions::new().write(true).open(dir.join("tasks")) {
                    Ok(mut f) => {
                        use std::io::Write;
                        f.write_all(b"0").map_err(|e| err(format!("joining {}", dir.display()), e))?;
                    }
                    // A hierarchy mounted after the cgroup was made has no such dir: skip it,
                    // as add_pid does.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err(format!("joining {}", dir.display()), e)),
                }
            }
        }
        if !v2_joined && let Some(dir) = self.v2_dir() {
            write_file(&dir, "cgroup.procs", "0")?;
        }
        Ok(())
    }

    /// Applies OCI resources; used at create and by `update`.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        match &self.layout {
            Layout::V1 { root, unified } => {
                v1::apply(root, self.controllers(), &self.path, res, unified.is_some())?;
                if let Some(u) = unified
                    && res.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
                    && !self.controllers().iter().any(|c| c.split(',').any(|x| x == "hugetlb"))
                {
                    // hugetlb lives on the cgroup2 half of this host: enable it down to us.
                    v2::enable_down(u, &self.path)?;
                    v2::apply_hugetlb(&u.join(&self.path), res)?;
                }
                Ok(())
            }
            Layout::V2 { root } => v2::apply(&root.join(&self.path), res),
        }
    }

    /// Only the device rules of `res` (the v1 devices controller, or the v2 device filter).
    pub fn apply_devices(&self, res: &LinuxResources) -> Result<()> {
        let mut only = LinuxResources::default();
        only.set_devices(res.devices().clone());
        self.apply(&only)
    }

    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        match &self.layout {
            Layout::V1 { root, .. } => v1::set_frozen(&root.join("freezer").join(&self.path), frozen),
            Layout::V2 { root } => v2::set_frozen(&root.join(&self.path), frozen),
        }
    }

    pub fn is_frozen(&self) -> bool {
        match &self.layout {
            Layout::V1 { root, .. } => read_file(&root.join("freezer").join(&self.path), "freezer.state")
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
            Layout::V2 { root } => {
                read_file(&root.join(&self.path), "cgroup.freeze").map(|s| s.trim() == "1").unwrap_or(false)
            }
        }
    }

    /// Every process in the cgroup (and its descendants for v2's `cgroup.procs` of children).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = self.procs_dir();
        let mut pids = Vec::new();
        collect_pids(&dir, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// The directory that freezes the container: v1's freezer hierarchy, the cgroup itself on
    /// v2 (`cgroup.freeze`). What CRIU's `--freeze-cgroup` takes.
    pub fn freezer_dir(&self) -> PathBuf {
        match &self.layout {
            Layout::V1 { root, .. } => root.join("freezer").join(&self.path),
            Layout::V2 { root } => root.join(&self.path),
        }
    }

    /// The directory whose `cgroup.procs` lists every process of the container.
    fn procs_dir(&self) -> PathBuf {
        match &self.layout {
            // pids is present on every v1 host we support; freezer as fallback.
            Layout::V1 { root, .. } => {
                let pids = root.join("pids").join(&self.path);
                if pids.exists() { pids } else { root.join("freezer").join(&self.path) }
            }
            Layout::V2 { root } => root.join(&self.path),
        }
    }

    /// Sends `sig` to every process. Frozen processes are thawed afterwards so that SIGKILL lands.
    pub fn kill_all(&self, sig: i32) -> Result<()> {
        if let Layout::V2 { root } = &self.layout {
            let dir = root.join(&self.path);
            if sig == libc::SIGKILL && dir.join("cgroup.kill").exists() {
                return write_file(&dir, "cgroup.kill", "1");
            }
        }
        let frozen = self.is_frozen();
        if sig == libc::SIGKILL && !frozen {
            // Freeze first so that nothing forks between listing and killing.
            let _ = self.freeze();
        }
        for pid in self.pids()? {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, sig) };
        }
        if sig == libc::SIGKILL || !frozen {
            let _ = self.thaw();
        }
        Ok(())
    }

    /// Removes the cgroup from every hierarchy. Waits briefly for dying processes to leave.
    pub fn remove(&self) -> Result<()> {
        for dir in self.all_dirs() {
            remove_dir_tree(&dir)?;
        }
        Ok(())
    }

    /// Removes the cgroup only if nothing lives in it or below it (for shared parents).
    pub fn remove_if_empty(&self) -> Result<()> {
        for dir in self.all_dirs() {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => {}
                Err(e) => return Err(err(format!("removing {}", dir.display()), e)),
            }
        }
        Ok(())
    }

    /// Removes this cgroup's parent from every hierarchy where it is empty: for a shared parent
    /// such as the runtime's `berth/`, called after [`Cgroup::remove`]. Another container may
    /// still live there or be made there at the same moment: rmdir then fails (EBUSY,
    /// ENOTEMPTY) or finds nothing (ENOENT), which is fine, and a creator that loses the parent
    /// between its mkdirs makes it again ([`Cgroup::create`] retries).
    pub fn remove_parent_if_empty(&self) -> Result<()> {
        let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        let parent =
            Cgroup { layout: self.layout.clone(), path: parent.to_path_buf(), controllers: self.controllers.clone() };
        parent.remove_if_empty()
    }

    pub fn stats(&self) -> Result<Stats> {
        match &self.layout {
            Layout::V1 { root, .. } => v1::stats(root, self.controllers(), &self.path),
            Layout::V2 { root } => v2::stats(&root.join(&self.path)),
        }
    }

    /// Directories a pid is written into: one per hierarchy.
    fn dirs(&self) -> Vec<PathBuf> {
        self.all_dirs().into_iter().filter(|d| d.exists()).collect()
    }

    fn all_dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 { root, unified } => {
                let mut v: Vec<PathBuf> = self.controllers().iter().map(|c| root.join(c).join(&self.path)).collect();
                if let Some(u) = unified {
                    v.push(u.join(&self.path));
                }
                v
            }
            Layout::V2 { root } => vec![root.join(&self.path)],
        }
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let s = match fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(format!("reading {}/cgroup.procs", dir.display()), e)),
    };
    out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_pids(&e.path(), out)?;
            }
        }
    }
    Ok(())
}

/// Runs a cgroup creation again when a directory vanished under it (ENOENT): another runtime
/// process removed a shared parent, found empty, between our mkdirs. A few rounds are plenty;
/// a path that is really missing (no such hierarchy) still fails.
fn retry_vanished(mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let mut left = 8;
    loop {
        match f() {
            Err(e) if e.source.kind() == io::ErrorKind::NotFound && left > 0 => left -= 1,
            r => return r,
        }
    }
}

/// rmdir children first, then the dir; retries on EBUSY while the last processes exit.
fn remove_dir_tree(dir: &Path) -> Result<()> {
    // Usually an empty leaf: one rmdir, no listing.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir_tree(&e.path())?;
            }
        }
    }
    let mut delay = Duration::from_millis(1);
    for _ in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => {
                // A fake tree (tests) holds regular files; a real cgroupfs never does.
                if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) {
                    return fs::remove_dir_all(dir).map_err(|e| err(format!("removing {}", dir.display()), e));
                }
                return Err(err(format!("removing {}", dir.display()), e));
            }
        }
    }
    Err(err(
        format!("removing {}: processes are still inside", dir.display()),
        io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

fn is_cgroupfs(dir: &Path) -> bool {
    const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && (st.f_type as i64 == CGROUP_SUPER_MAGIC || st.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

/// Converts v1 cpu shares (2..262144) to a v2 cpu.weight (1..10000), as runc and crun do.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// Converts a v1 blkio weight (10..1000) to a v2 io.weight (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path(Path::new("/a/b")).unwrap(), PathBuf::from("a/b"));
        assert_eq!(normalize_path(Path::new("a/./b")).unwrap(), PathBuf::from("a/b"));
        assert!(normalize_path(Path::new("/a/../../etc")).is_err());
        assert!(normalize_path(Path::new("/")).is_err());
    }

    #[test]
    fn shared_parent_goes_with_its_last_child() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "unified"] {
            fs::create_dir(t.path().join(c)).unwrap();
        }
        let layout = Layout::V1 { root: t.path().into(), unified: Some(t.path().join("unified")) };
        let a = Cgroup::new(layout.clone(), Path::new("berth/a")).unwrap();
        let b = Cgroup::new(layout, Path::new("berth/b")).unwrap();
        a.create().unwrap();
        b.create().unwrap();
        a.remove().unwrap();
        a.remove_parent_if_empty().unwrap();
        for c in ["memory", "pids", "unified"] {
            assert!(t.path().join(c).join("berth/b").is_dir(), "{c}");
        }
        b.remove().unwrap();
        b.remove_parent_if_empty().unwrap();
        for c in ["memory", "pids", "unified"] {
            assert!(!t.path().join(c).join("berth").exists(), "{c}");
        }
        // Nothing left to remove: still fine.
        b.remove_parent_if_empty().unwrap();
    }

    #[test]
    fn creation_retries_when_a_parent_vanishes() {
        let mut calls = 0;
        retry_vanished(|| {
            calls += 1;
            if calls < 3 { Err(err("x", io::Error::from(io::ErrorKind::NotFound))) } else { Ok(()) }
        })
        .unwrap();
        assert_eq!(calls, 3);
        let mut calls = 0;
        let e = retry_vanished(|| {
            calls += 1;
            Err(err("x", io::Error::from(io::ErrorKind::NotFound)))
        });
        assert!(e.is_err());
        assert_eq!(calls, 9);
        let mut calls = 0;
        let e = retry_vanished(|| {
            calls += 1;
            Err(err("x", io::Error::from(io::ErrorKind::PermissionDenied)))
        });
        assert!(e.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn device_rules_alone() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "devices"] {
            fs::create_dir(t.path().join(c)).unwrap();
        }
        let cg = Cgroup::new(Layout::V1 { root: t.path().into(), unified: None }, Path::new("berth/d")).unwrap();
        cg.create().unwrap();
        use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
        let res = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(1 << 20).build().unwrap())
            .devices(vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap()])
            .build()
            .unwrap();
        cg.apply_devices(&res).unwrap();
        let dir = t.path().join("devices/berth/d");
        assert_eq!(fs::read_to_string(dir.join("devices.deny")).unwrap(), "a *:* rwm");
        assert!(!t.path().join("memory/berth/d/memory.limit_in_bytes").exists());
    }

    #[test]
    fn converts_weights() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }
}
