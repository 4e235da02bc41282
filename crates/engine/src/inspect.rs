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

/// A change in a container's writable layer: `A` added, `C` changed, `D` deleted.
pub struct Change {
    pub kind: char,
    pub path: String,
}

impl Engine {
    fn running(&self, key: &str) -> Result<(crate::ContainerRow, Container)> {
        let c = self.container(key)?;
        if !c.is_running() {
            return Err(ExitError { code: 1, msg: format!("container {} is not running", c.id) }.into());
        }
        let rc = Container::load(&self.runtime_root(), &c.id)?;
        Ok((c, rc))
    }

    pub fn top(&self, key: &str) -> Result<Vec<Proc>> {
        let (_, rc) = self.running(key)?;
        let mut out = Vec::new();
        for pid in rc.pids()? {
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

    pub fn stats(&self, key: &str) -> Result<(crate::ContainerRow, berth_cgroups::Stats)> {
        let (c, rc) = self.running(key)?;
        let cg = rc.cgroup().context("the container has no cgroup")?;
        Ok((c, cg.stats()?))
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

    /// `berth update`: new limits applied to the running container's cgroup and recorded.
    pub fn update(
        &self,
        key: &str,
        memory: Option<i64>,
        cpus: Option<f64>,
        pids: Option<i64>,
        shares: Option<u64>,
        cpuset: Option<String>,
    ) -> Result<()> {
        let mut c = self.container(key)?;
        let mut res = serde_json::json!({});
        if let Some(m) = memory {
            c.config.memory = Some(m);
            let swap = c.config.memory_swap.unwrap_or(m * 2).max(m);
            res["memory"] = serde_json::json!({"limit": m, "swap": swap});
        }
        if cpus.is_some() || shares.is_some() || cpuset.is_some() {
            let mut cpu = serde_json::json!({});
            if let Some(n) = cpus {
                c.config.cpus = Some(n);
                cpu["period"] = 100000.into();
                cpu["quota"] = ((n * 100000.0) as i64).into();
            }
            if let Some(s) = shares {
                c.config.cpu_shares = Some(s);
                cpu["shares"] = s.into();
            }
            if let Some(s) = cpuset {
                cpu["cpus"] = s.clone().into();
                c.config.cpuset_cpus = Some(s);
            }
            res["cpu"] = cpu;
        }
        if let Some(p) = pids {
            c.config.pids_limit = Some(p);
            res["pids"] = serde_json::json!({"limit": p});
        }
        if c.is_running() {
            let rc = Container::load(&self.runtime_root(), &c.id)?;
            rc.update(&serde_json::from_value(res)?)?;
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
        let upper = RootFs::path(&self.layers, &c.id).upper();
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
