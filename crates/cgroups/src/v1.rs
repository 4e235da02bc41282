//! cgroup v1: one hierarchy per controller.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::{Result, Stats, err, invalid, read_file, write_file};

/// Controller hierarchies mounted under `root` (symlinks such as `cpu -> cpu,cpuacct` skipped,
/// and the cgroup2 `unified` mount, which the hybrid code handles).
pub(crate) fn mounted_controllers(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n != "unified")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The directory of `controller` for `path`, if that controller is mounted (also when it is
/// co-mounted, e.g. `cpu,cpuacct`).
fn controller_dir(root: &Path, ctrls: &[String], controller: &str, path: &Path) -> Option<PathBuf> {
    ctrls.iter().find(|m| m.split(',').any(|c| c == controller)).map(|m| root.join(m).join(path))
}

/// `ctrls`: the hierarchies of [`mounted_controllers`].
pub(crate) fn create(root: &Path, ctrls: &[String], path: &Path) -> Result<()> {
    for c in ctrls {
        let dir = root.join(c).join(path);
        fs::create_dir_all(&dir).map_err(|e| err(format!("creating {}", dir.display()), e))?;
        if c.split(',').any(|x| x == "cpuset") {
            init_cpuset(&root.join(c), path)?;
        }
    }
    Ok(())
}

/// A new v1 cpuset has empty cpus/mems and refuses tasks; copy them down from the parents
/// (the value of the nearest level that has one, read once per level).
fn init_cpuset(base: &Path, path: &Path) -> Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mut val = read_file(base, f)?.trim().to_string();
        let mut dir = base.to_path_buf();
        for comp in path.components() {
            dir.push(comp);
            let cur = fs::read_to_string(dir.join(f)).unwrap_or_default();
            if cur.trim().is_empty() {
                write_file(&dir, f, &val)?;
            } else {
                val = cur.trim().to_string();
            }
        }
    }
    Ok(())
}

fn write_opt<T: ToString>(dir: &Path, file: &str, v: Option<T>) -> Result<()> {
    match v {
        Some(v) => write_file(dir, file, &v.to_string()),
        None => Ok(()),
    }
}

/// Dir of a controller the spec needs; a clear error if the host lacks it.
fn need(root: &Path, ctrls: &[String], controller: &str, path: &Path, field: &str) -> Result<PathBuf> {
    controller_dir(root, ctrls, controller, path).ok_or_else(|| {
        err(
            format!("{field} needs the {controller} controller, which is not mounted on this host"),
            io::Error::from(io::ErrorKind::Unsupported),
        )
    })
}

pub(crate) fn apply(root: &Path, ctrls: &[String], path: &Path, res: &LinuxResources, hybrid: bool) -> Result<()> {
    if let Some(m) = res.memory() {
        let dir = need(root, ctrls, "memory", path, "linux.resources.memory")?;
        let limit = m.limit();
        let swap = m.swap();
        if let (Some(l), Some(s)) = (limit, swap)
            && s != -1
            && s < l
        {
            return Err(invalid(format!("memory+swap limit {s} is below the memory limit {l}")));
        }
        // memsw must stay >= limit at every step: raise memsw first when it grows.
        let cur_memsw = read_file(&dir, "memory.memsw.limit_in_bytes").ok();
        let grows = match (swap, cur_memsw.as_deref().and_then(|c| c.trim().parse::<i64>().ok())) {
            (Some(s), Some(c)) => s == -1 || s > c,
            _ => false,
        };
        if grows {
            write_opt(&dir, "memory.memsw.limit_in_bytes", swap)?;
        }
        write_opt(&dir, "memory.limit_in_bytes", limit)?;
        if !grows && cur_memsw.is_some() {
            write_opt(&dir, "memory.memsw.limit_in_bytes", swap)?;
        } else if swap.is_some() && cur_memsw.is_none() {
            return Err(invalid("linux.resources.memory.swap: this kernel has no swap accounting (memory.memsw.*)"));
        }
        write_opt(&dir, "memory.soft_limit_in_bytes", m.reservation())?;
        if m.kernel().is_some() && dir.join("memory.kmem.limit_in_bytes").exists() {
            write_opt(&dir, "memory.kmem.limit_in_bytes", m.kernel())?;
        }
        write_opt(&dir, "memory.kmem.tcp.limit_in_bytes", m.kernel_tcp())?;
        write_opt(&dir, "memory.swappiness", m.swappiness())?;
        if m.disable_oom_killer() == Some(true) {
            write_file(&dir, "memory.oom_control", "1")?;
        }
    }
    if let Some(c) = res.cpu() {
        if c.shares().is_some() || c.quota().is_some() || c.period().is_some() || c.realtime_runtime().is_some() {
            let dir = need(root, ctrls, "cpu", path, "linux.resources.cpu")?;
            write_opt(&dir, "cpu.shares", c.shares())?;
            write_opt(&dir, "cpu.cfs_period_us", c.period())?;
            write_opt(&dir, "cpu.cfs_quota_us", c.quota())?;
            write_opt(&dir, "cpu.rt_period_us", c.realtime_period())?;
            write_opt(&dir, "cpu.rt_runtime_us", c.realtime_runtime())?;
        }
        if c.idle().is_some_and(|i| i != 0) {
            return Err(invalid("linux.resources.cpu.idle needs cgroup v2"));
        }
        if c.cpus().is_some() || c.mems().is_some() {
            let dir = need(root, ctrls, "cpuset", path, "linux.resources.cpu.cpus")?;
            write_opt(&dir, "cpuset.cpus", c.cpus().as_ref())?;
            write_opt(&dir, "cpuset.mems", c.mems().as_ref())?;
        }
    }
    if let Some(p) = res.pids() {
        let dir = need(root, ctrls, "pids", path, "linux.resources.pids")?;
        let v = if p.limit() > 0 { p.limit().to_string() } else { "max".to_string() };
        write_file(&dir, "pids.max", &v)?;
    }
    if let Some(b) = res.block_io() {
        let dir = need(root, ctrls, "blkio", path, "linux.resources.blockIO")?;
        // CFQ's weight files, or, on kernels without CFQ (5.0+), BFQ's (as runc does).
        let weight = if !dir.join("blkio.weight").exists() && dir.join("blkio.bfq.weight").exists() {
            "blkio.bfq.weight"
        } else {
            "blkio.weight"
        };
        write_opt(&dir, weight, b.weight())?;
        write_opt(&dir, "blkio.leaf_weight", b.leaf_weight())?;
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight() {
                write_file(&dir, &format!("{weight}_device"), &format!("{}:{} {}", d.major(), d.minor(), w))?;
            }
            if let Some(w) = d.leaf_weight() {
                write_file(&dir, "blkio.leaf_weight_device", &format!("{}:{} {}", d.major(), d.minor(), w))?;
            }
        }
        for (list, file) in [
            (b.throttle_read_bps_device(), "blkio.throttle.read_bps_device"),
            (b.throttle_write_bps_device(), "blkio.throttle.write_bps_device"),
            (b.throttle_read_iops_device(), "blkio.throttle.read_iops_device"),
            (b.throttle_write_iops_device(), "blkio.throttle.write_iops_device"),
        ] {
            for d in list.iter().flatten() {
                write_file(&dir, file, &format!("{}:{} {}", d.major(), d.minor(), d.rate()))?;
            }
        }
    }
    if let Some(h) = res.hugepage_limits()
        && !h.is_empty()
    {
        // On a hybrid host hugetlb may live on the cgroup2 mount instead (handled by the caller).
        if let Some(dir) = controller_dir(root, ctrls, "hugetlb", path) {
            for l in h {
                write_file(&dir, &format!("hugetlb.{}.limit_in_bytes", l.page_size()), &l.limit().to_string())?;
            }
        } else if !hybrid {
            return Err(invalid("linux.resources.hugepageLimits: no hugetlb controller on this host"));
        }
    }
    if let Some(n) = res.network() {
        if let Some(id) = n.class_id() {
            let dir = need(root, ctrls, "net_cls", path, "linux.resources.network.classID")?;
            write_file(&dir, "net_cls.classid", &id.to_string())?;
        }
        for p in n.priorities().iter().flatten() {
            let dir = need(root, ctrls, "net_prio", path, "linux.resources.network.priorities")?;
            write_file(&dir, "net_prio.ifpriomap", &format!("{} {}", p.name(), p.priority()))?;
        }
    }
    if let Some(devs) = res.devices()
        && let Some(dir) = controller_dir(root, ctrls, "devices", path)
    {
        for d in devs {
            let (file, rule) = device_rule(d);
            write_file(&dir, file, &rule)?;
        }
    }
    if let Some(u) = res.unified()
        && !u.is_empty()
    {
        return Err(invalid("linux.resources.unified needs cgroup v2 (this host runs v1 controllers)"));
    }
    Ok(())
}

/// One OCI device rule as a line for devices.allow / devices.deny.
pub(crate) fn device_rule(d: &LinuxDeviceCgroup) -> (&'static str, String) {
    let typ = match d.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
        Some(LinuxDeviceType::B) => 'b',
        Some(LinuxDeviceType::P) => 'p',
        _ => 'a',
    };
    let num = |n: Option<i64>| n.filter(|n| *n >= 0).map(|n| n.to_string()).unwrap_or_else(|| "*".into());
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    let file = if d.allow() { "devices.allow" } else { "devices.deny" };
    let rule = if typ == 'a' {
        format!("a *:* {access}")
    } else {
        format!("{typ} {}:{} {access}", num(d.major()), num(d.minor()))
    };
    (file, rule)
}

pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    write_file(dir, "freezer.state", want)?;
    // FREEZING is transient; wait until the kernel reports the final state.
    for i in 0..1000u32 {
        let s = read_file(dir, "freezer.state")?;
        if s.trim() == want {
            return Ok(());
        }
        if i % 50 == 49 {
            write_file(dir, "freezer.state", want)?;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    Err(err(format!("freezer at {} did not reach {want}", dir.display()), io::Error::from(io::ErrorKind::TimedOut)))
}

fn read_u64(dir: &Option<PathBuf>, file: &str) -> u64 {
    dir.as_ref().and_then(|d| read_file(d, file).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

pub(crate) fn stats(root: &Path, ctrls: &[String], path: &Path) -> Result<Stats> {
    let mem = controller_dir(root, ctrls, "memory", path);
    let pids = controller_dir(root, ctrls, "pids", path);
    let cpuacct = controller_dir(root, ctrls, "cpuacct", path);
    let blkio = controller_dir(root, ctrls, "blkio", path);
    let mut s = Stats {
        memory_usage: read_u64(&mem, "memory.usage_in_bytes"),
        memory_max_usage: read_u64(&mem, "memory.max_usage_in_bytes"),
        cpu_usage_ns: read_u64(&cpuacct, "cpuacct.usage"),
        pids_current: read_u64(&pids, "pids.current"),
        ..Default::default()
    };
    // The kernel reports "unlimited" as a huge page-aligned number.
    let lim = read_u64(&mem, "memory.limit_in_bytes");
    s.memory_limit = (lim != 0 && lim < (1 << 62)).then_some(lim);
    if let Some(d) = &mem
        && let Ok(oc) = read_file(d, "memory.oom_control")
    {
        s.oom_kills = field(&oc, "oom_kill");
    }
    if let Some(d) = &mem
        && let Ok(st) = read_file(d, "memory.stat")
    {
        s.memory_inactive_file = field(&st, "total_inactive_file");
    }
    if let Some(d) = &pids {
        s.pids_limit = read_file(d, "pids.max").ok().and_then(|v| v.trim().parse().ok());
    }
    if let Some(d) = &blkio
        && let Ok(io) = read_file(d, "blkio.throttle.io_service_bytes")
    {
        for l in io.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 3 {
                let n: u64 = f[2].parse().unwrap_or(0);
                match f[1] {
                    "Read" => s.io_read_bytes += n,
                    "Write" => s.io_write_bytes += n,
                    _ => {}
                }
            }
        }
    }
    Ok(s)
}

/// Value of `key N` in a flat-keyed cgroup file.
pub(crate) fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cgroup, Layout};
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    fn fake_root() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu,cpuacct", "cpuset", "pids", "freezer", "devices", "blkio"] {
            fs::create_dir_all(t.path().join(c)).unwrap();
        }
        fs::write(t.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(t.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        t
    }

    #[test]
    fn writes_v1_files() {
        let t = fake_root();
        let cg = Cgroup::new(Layout::V1 { root: t.path().into(), unified: None }, Path::new("/berth/c1")).unwrap();
        cg.create().unwrap();
        assert_eq!(fs::read_to_string(t.path().join("cpuset/berth/c1/cpuset.cpus")).unwrap(), "0-1");
        let res = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(256 << 20).reservation(128 << 20).build().unwrap())
            .cpu(LinuxCpuBuilder::default().shares(512u64).quota(50_000i64).period(100_000u64).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(64).build().unwrap())
            .devices(vec![
                LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap(),
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(LinuxDeviceType::C)
                    .major(1)
                    .minor(3)
                    .access("rw")
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        cg.apply(&res).unwrap();
        let rd = |p: &str| fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(rd("memory/berth/c1/memory.limit_in_bytes"), (256u64 << 20).to_string());
        assert_eq!(rd("memory/berth/c1/memory.soft_limit_in_bytes"), (128u64 << 20).to_string());
        assert_eq!(rd("cpu,cpuacct/berth/c1/cpu.shares"), "512");
        assert_eq!(rd("cpu,cpuacct/berth/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!(rd("cpu,cpuacct/berth/c1/cpu.cfs_period_us"), "100000");
        assert_eq!(rd("pids/berth/c1/pids.max"), "64");
        // The fake file keeps only the last write: the allow rule.
        assert_eq!(rd("devices/berth/c1/devices.allow"), "c 1:3 rw");
        assert_eq!(rd("devices/berth/c1/devices.deny"), "a *:* rwm");
        cg.remove().unwrap();
        assert!(!t.path().join("memory/berth/c1").exists());
    }

    #[test]
    fn swap_below_limit_is_refused() {
        let t = fake_root();
        let cg = Cgroup::new(Layout::V1 { root: t.path().into(), unified: None }, Path::new("c2")).unwrap();
        cg.create().unwrap();
        let res = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(200).swap(100).build().unwrap())
            .build()
            .unwrap();
        let e = cg.apply(&res).unwrap_err().to_string();
        assert!(e.contains("below the memory limit"), "{e}");
    }

    #[test]
    fn parses_flat_keys() {
        assert_eq!(field("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"), 3);
    }
}
