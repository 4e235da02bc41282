//! Looking into running containers: processes (`top`), resource use (`stats`), changes to the
//! root filesystem (`diff`), and changing them (`rename`, `update`).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_image::manifest::chain_ids;
use berth_runtime::container::Container;
use berth_storage::RootFs;
use rusqlite::params;

use crate::containers::ContainerRow;
use crate::{Engine, ExitError, names};

/// One process of a container, as `top` shows it.
pub struct Proc {
    pub pid: i32,
    pub uid: u32,
    pub cmd: String,
}

/// A sample of a container's resource use (`stats`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU time used since the start, nanoseconds (a rate needs two samples).
    pub cpu_usage_ns: u64,
    /// Memory in use, without the inactive page cache (as Docker counts it).
    pub memory_used: u64,
    /// The container's memory limit, or the host's memory when it has none.
    pub memory_limit: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub pids: u64,
    /// Bytes received and sent on the container's interfaces but lo.
    pub net_rx: u64,
    pub net_tx: u64,
}

/// A change in a container's writable layer: `A` added, `C` changed, `D` deleted.
pub struct Change {
    pub kind: char,
    pub path: String,
}

impl Engine {
    /// A running container and its cgroup (from the built-in runtime's state, or for another
    /// runtime from where its init is).
    fn running(&self, key: &str) -> Result<(crate::ContainerRow, berth_cgroups::Cgroup)> {
        let c = self.container(key)?;
        if !c.is_running() {
            return Err(ExitError { code: 1, msg: format!("container {} is not running", c.id) }.into());
        }
        let cg = if crate::runtimes::is_builtin(&c.config.runtime) {
            Container::load(&self.runtime_root(), &c.id)?.cgroup().context("the container has no cgroup")?
        } else {
            cgroup_of(c.pid)?
        };
        Ok((c, cg))
    }

    pub fn top(&self, key: &str) -> Result<Vec<Proc>> {
        let (_, cg) = self.running(key)?;
        let mut out = Vec::new();
        for pid in cg.pids()? {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = cmd
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0);
            out.push(Proc { pid, uid, cmd });
        }
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }

    /// One sample of a running container's resource use, in Docker's terms.
    pub fn stats(&self, key: &str) -> Result<(crate::ContainerRow, Usage)> {
        let (c, cg) = self.running(key)?;
        let s = cg.stats()?;
        let host = host_memory();
        let (net_rx, net_tx) = if c.config.network == "host" { (0, 0) } else { net_io(c.pid) };
        let u = Usage {
            cpu_usage_ns: s.cpu_usage_ns,
            // Docker's figure: the usage without the inactive page cache.
            memory_used: s.memory_usage.saturating_sub(s.memory_inactive_file),
            memory_limit: s.memory_limit.filter(|&l| l < host).unwrap_or(host),
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
            pids: s.pids_current,
            net_rx,
            net_tx,
        };
        Ok((c, u))
    }

    pub fn rename(&self, key: &str, new: &str) -> Result<()> {
        let c = self.container(key)?;
        if !names::valid_name(new) {
            bail!("Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
        }
        match self.db.execute("UPDATE containers SET name = ?2 WHERE id = ?1", params![c.id, new]) {
            Ok(_) => {
                let renamed = ContainerRow { name: new.to_string(), ..c.clone() };
                self.container_event(&renamed, "rename", &[("oldName", &format!("/{}", c.name))]);
                Ok(())
            }
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                bail!("Error when allocating new name: Conflict. The container name \"/{new}\" is already in use")
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `berth update`: new limits (and restart policy) checked as at create, recorded, and
    /// applied to the running container's cgroup through its runtime.
    pub fn update(&self, key: &str, u: &UpdateRequest) -> Result<()> {
        let mut c = self.container(key)?;
        let cfg = &mut c.config;
        if let Some(m) = u.memory
            && u.memory_swap.is_none()
            && cfg.memory_swap.is_some_and(|s| s != -1 && s < m)
        {
            bail!(
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
            );
        }
        let set = |dst: &mut Option<i64>, v: Option<i64>| {
            if v.is_some() {
                *dst = v;
            }
        };
        set(&mut cfg.memory, u.memory);
        set(&mut cfg.memory_swap, u.memory_swap);
        set(&mut cfg.memory_reservation, u.memory_reservation);
        set(&mut cfg.cpu_quota, u.cpu_quota);
        set(&mut cfg.pids_limit, u.pids_limit);
        if u.cpus.is_some() {
            cfg.cpus = u.cpus;
        }
        if u.cpu_shares.is_some() {
            cfg.cpu_shares = u.cpu_shares;
        }
        if u.cpu_period.is_some() {
            cfg.cpu_period = u.cpu_period;
        }
        if u.blkio_weight.is_some() {
            cfg.blkio_weight = u.blkio_weight;
        }
        if let Some(s) = &u.cpuset_cpus {
            cfg.cpuset_cpus = Some(s.clone());
        }
        if let Some(s) = &u.cpuset_mems {
            cfg.cpuset_mems = Some(s.clone());
        }
        if let Some(r) = &u.restart {
            if cfg.auto_remove && r != "no" {
                bail!("Restart policy cannot be updated because AutoRemove is enabled for the container");
            }
            cfg.restart = r.clone();
        }
        crate::resources::check(cfg)?;
        if c.is_running() {
            let mut res = crate::spec::resources(&c.config);
            // The device rules were set at create; update leaves them.
            if let Some(o) = res.as_object_mut() {
                o.remove("devices");
            }
            self.runtime_of(&c)?.update(&res)?;
        }
        self.db.execute(
            "UPDATE containers SET config = ?2 WHERE id = ?1",
            params![c.id, serde_json::to_string(&c.config)?],
        )?;
        Ok(())
    }

    /// `berth diff`: what the container changed compared with its image.
    pub fn diff(&self, key: &str) -> Result<Vec<Change>> {
        let c = self.container(key)?;
        let image = self.resolve_image(&c.image)?;
        let lowers: Vec<PathBuf> =
            chain_ids(&self.config_of(&image)?.rootfs.diff_ids).iter().map(|ch| self.layers.diff_path(ch)).collect();
        let upper = RootFs::path(&self.layers, &c.id).changes()?;
        let lower_fds: Vec<std::fs::File> = lowers.iter().filter_map(|l| std::fs::File::open(l).ok()).collect();
        let mut out = Vec::new();
        walk(&upper, Path::new(""), &lower_fds, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

fn walk(upper: &Path, rel: &Path, lowers: &[std::fs::File], out: &mut Vec<Change>) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = upper.join(rel);
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(()) };
    for e in rd.flatten() {
        let r = rel.join(e.file_name());
        let m = e.path().symlink_metadata()?;
        let shown = format!("/{}", r.display());
        if m.file_type().is_char_device() && m.rdev() == 0 {
            out.push(Change { kind: 'D', path: shown });
            continue;
        }
        // Looked up inside each lower layer, never through a symlink out of it.
        let in_lower = lowers.iter().any(|l| {
            berth_runtime::safepath::openat_in_root(l.as_raw_fd(), &r, libc::O_PATH | libc::O_NOFOLLOW, 0).is_ok()
        });
        out.push(Change { kind: if in_lower { 'C' } else { 'A' }, path: shown });
        if m.is_dir() {
            walk(upper, &r, lowers, out)?;
        }
    }
    Ok(())
}

/// The host's memory in bytes (MemTotal in /proc/meminfo; 0 when unreadable).
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
        * 1024
}

/// Bytes received and sent on a process's network interfaces but lo (its namespace's, as
/// /proc/PID/net/dev shows them).
fn net_io(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .map(|(_, v)| {
            let f: Vec<u64> = v.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (f.first().copied().unwrap_or(0), f.get(8).copied().unwrap_or(0))
        })
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
}

/// The cgroup a process is in, as /proc/PID/cgroup names it (the pids controller's path on
/// v1, the unified one on v2; runtimes give a container the same path in every hierarchy).
fn cgroup_of(pid: i32) -> Result<berth_cgroups::Cgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let path = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctrl, path))
        })
        .find(|(ctrl, _)| ctrl.split(',').any(|c| c == "pids"))
        .or_else(|| text.lines().find_map(|l| l.strip_prefix("0::").map(|p| ("", p))))
        .map(|(_, p)| p.to_string())
        .with_context(|| format!("no cgroup of process {pid}"))?;
    Ok(berth_cgroups::Cgroup::new(berth_cgroups::Layout::detect(), Path::new(&path))?)
}

/// `berth update`'s flags: what is given changes, the rest stays.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub restart: Option<String>,
}
