//! cgroup v2: one unified hierarchy (also the cgroup2 half of a hybrid host).

use std::fs;
use std::path::Path;

use oci_spec::runtime::LinuxResources;

use crate::v1::field;
use crate::{Result, Stats, blkio_to_io_weight, err, invalid, read_file, shares_to_weight, write_file};

/// Creates `root/path`, enabling every available controller in each ancestor's
/// `cgroup.subtree_control` so that the new leaf gets them.
pub(crate) fn create(root: &Path, path: &Path) -> Result<()> {
    let mut dir = root.to_path_buf();
    for comp in path.components() {
        enable_controllers(&dir)?;
        dir.push(comp);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("creating {}", dir.display()), e)),
        }
    }
    Ok(())
}

/// Creates `root/path` and its missing parents, leaving `cgroup.subtree_control` alone (the
/// cgroup2 half of a hybrid host, where the dirs only track processes).
pub(crate) fn create_dirs(root: &Path, path: &Path) -> Result<()> {
    let dir = root.join(path);
    fs::create_dir_all(&dir).map_err(|e| err(format!("creating {}", dir.display()), e))
}

/// Enables every available controller from `root` down to `root/path`'s parent (for limits
/// applied after a [`create_dirs`]).
pub(crate) fn enable_down(root: &Path, path: &Path) -> Result<()> {
    let mut dir = root.to_path_buf();
    for comp in path.components() {
        enable_controllers(&dir)?;
        dir.push(comp);
    }
    Ok(())
}

fn enable_controllers(dir: &Path) -> Result<()> {
    let avail = read_file(dir, "cgroup.controllers").unwrap_or_default();
    let enabled = read_file(dir, "cgroup.subtree_control").unwrap_or_default();
    let missing: Vec<String> = avail
        .split_whitespace()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(dir, "cgroup.subtree_control", &missing.join(" "))
}

fn max_or(v: i64) -> String {
    if v < 0 { "max".to_string() } else { v.to_string() }
}

pub(crate) fn apply(dir: &Path, res: &LinuxResources) -> Result<()> {
    if let Some(m) = res.memory() {
        if let Some(l) = m.limit() {
            write_file(dir, "memory.max", &max_or(l))?;
        }
        if let Some(r) = m.reservation() {
            write_file(dir, "memory.low", &max_or(r))?;
        }
        if let Some(s) = m.swap() {
            // OCI's swap is memory+swap; v2's swap.max is swap alone.
            let v = match (s, m.limit()) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(invalid(format!("memory+swap limit {s} is below the memory limit {l}")));
                    }
                    (s - l).to_string()
                }
                _ => return Err(invalid("linux.resources.memory.swap needs memory.limit on cgroup v2")),
            };
            write_file(dir, "memory.swap.max", &v)?;
        }
        if m.disable_oom_killer() == Some(true) {
            return Err(invalid("linux.resources.memory.disableOOMKiller is not available on cgroup v2"));
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            return Err(invalid("linux.resources.memory.kernel/kernelTCP are not available on cgroup v2"));
        }
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares() {
            write_file(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
        }
        if c.quota().is_some() || c.period().is_some() {
            let quota = c.quota().map(max_or).unwrap_or_else(|| "max".into());
            let period = c.period().unwrap_or(100_000);
            write_file(dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(i) = c.idle() {
            write_file(dir, "cpu.idle", &i.to_string())?;
        }
        if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
            return Err(invalid("linux.resources.cpu.realtimeRuntime/Period are not available on cgroup v2"));
        }
        if let Some(cpus) = c.cpus() {
            write_file(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems() {
            write_file(dir, "cpuset.mems", mems)?;
        }
    }
    if let Some(p) = res.pids() {
        write_file(dir, "pids.max", &if p.limit() > 0 { p.limit().to_string() } else { "max".into() })?;
    }
    if let Some(b) = res.block_io() {
        if let Some(w) = b.weight() {
            write_file(dir, "io.weight", &format!("default {}", blkio_to_io_weight(w)))?;
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight() {
                write_file(dir, "io.weight", &format!("{}:{} {}", d.major(), d.minor(), blkio_to_io_weight(w)))?;
            }
        }
        for (list, key) in [
            (b.throttle_read_bps_device(), "rbps"),
            (b.throttle_write_bps_device(), "wbps"),
            (b.throttle_read_iops_device(), "riops"),
            (b.throttle_write_iops_device(), "wiops"),
        ] {
            for d in list.iter().flatten() {
                write_file(dir, "io.max", &format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()))?;
            }
        }
    }
    apply_hugetlb(dir, res)?;
    // The device rules as an eBPF program on the cgroup. Only on a real cgroup2 directory: the
    // fake trees of the unit tests cannot hold one (the program is unit-tested on its own).
    if let Some(devs) = res.devices()
        && !devs.is_empty()
        && crate::is_cgroup2(dir)
    {
        crate::devfilter::apply(dir, devs)?;
    }
    if let Some(n) = res.network()
        && (n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()))
    {
        return Err(invalid("linux.resources.network needs the v1 net_cls/net_prio controllers"));
    }
    if let Some(u) = res.unified() {
        let mut keys: Vec<_> = u.keys().collect();
        keys.sort();
        for k in keys {
            if k.contains('/') || k.starts_with('.') {
                return Err(invalid(format!("linux.resources.unified: bad key {k:?}")));
            }
            write_file(dir, k, &u[k])?;
        }
    }
    Ok(())
}

pub(crate) fn apply_hugetlb(dir: &Path, res: &LinuxResources) -> Result<()> {
    for l in res.hugepage_limits().iter().flatten() {
        write_file(dir, &format!("hugetlb.{}.max", l.page_size()), &max_or(l.limit()))?;
    }
    Ok(())
}

pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    write_file(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    // cgroup.events says when the freeze has taken effect (absent in a fake tree).
    let want = if frozen { 1 } else { 0 };
    for _ in 0..2000 {
        match fs::read_to_string(dir.join("cgroup.events")) {
            Ok(ev) if field(&ev, "frozen") != want => std::thread::sleep(std::time::Duration::from_micros(100)),
            _ => return Ok(()),
        }
    }
    Err(err(
        format!("{} did not reach frozen={want}", dir.display()),
        std::io::Error::from(std::io::ErrorKind::TimedOut),
    ))
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read_file(dir, file).ok().and_then(|s| s.trim().parse().ok())
}

pub(crate) fn stats(dir: &Path) -> Result<Stats> {
    let mut s = Stats {
        memory_usage: read_u64(dir, "memory.current").unwrap_or(0),
        memory_limit: read_u64(dir, "memory.max"),
        memory_max_usage: read_u64(dir, "memory.peak").unwrap_or(0),
        pids_current: read_u64(dir, "pids.current").unwrap_or(0),
        pids_limit: read_u64(dir, "pids.max"),
        ..Default::default()
    };
    if let Ok(st) = read_file(dir, "memory.stat") {
        s.memory_inactive_file = field(&st, "inactive_file");
    }
    if let Ok(ev) = read_file(dir, "memory.events") {
        s.oom_kills = field(&ev, "oom_kill");
    }
    if let Ok(cpu) = read_file(dir, "cpu.stat") {
        s.cpu_usage_ns = field(&cpu, "usage_usec") * 1000;
    }
    if let Ok(io) = read_file(dir, "io.stat") {
        for l in io.lines() {
            for kv in l.split_whitespace().skip(1) {
                if let Some(v) = kv.strip_prefix("rbytes=") {
                    s.io_read_bytes += v.parse::<u64>().unwrap_or(0);
                } else if let Some(v) = kv.strip_prefix("wbytes=") {
                    s.io_write_bytes += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::{Cgroup, Layout};
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
        LinuxThrottleDeviceBuilder,
    };
    use std::fs;
    use std::path::Path;

    fn fake_root() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids\n").unwrap();
        fs::write(t.path().join("cgroup.subtree_control"), "").unwrap();
        t
    }

    #[test]
    fn writes_v2_files() {
        let t = fake_root();
        let cg = Cgroup::new(Layout::V2 { root: t.path().into() }, Path::new("/berth/c1")).unwrap();
        cg.create().unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("cgroup.subtree_control")).unwrap(),
            "+cpuset +cpu +io +memory +hugetlb +pids"
        );
        let res = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(256 << 20).swap(512 << 20).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .throttle_read_bps_device(vec![
                        LinuxThrottleDeviceBuilder::default().major(8).minor(0).rate(1_048_576u64).build().unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .unified(
                [("memory.high".to_string(), "300000000".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        cg.apply(&res).unwrap();
        let rd = |p: &str| fs::read_to_string(t.path().join("berth/c1").join(p)).unwrap();
        assert_eq!(rd("memory.max"), (256u64 << 20).to_string());
        assert_eq!(rd("memory.swap.max"), (256u64 << 20).to_string());
        assert_eq!(rd("cpu.weight"), "39");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("cpuset.cpus"), "0");
        assert_eq!(rd("pids.max"), "max");
        assert_eq!(rd("io.weight"), "default 4950");
        assert_eq!(rd("io.max"), "8:0 rbps=1048576");
        assert_eq!(rd("memory.high"), "300000000");
        cg.freeze().unwrap();
        assert!(cg.is_frozen());
        cg.thaw().unwrap();
        assert!(!cg.is_frozen());
        fs::write(t.path().join("berth/c1/memory.current"), "4096\n").unwrap();
        fs::write(t.path().join("berth/c1/cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        fs::write(t.path().join("berth/c1/memory.stat"), "active_file 100\ninactive_file 1024\nanon 2048\n").unwrap();
        let s = cg.stats().unwrap();
        assert_eq!((s.memory_usage, s.cpu_usage_ns, s.memory_inactive_file), (4096, 1_500_000, 1024));
        cg.remove().unwrap();
        assert!(!t.path().join("berth/c1").exists());
    }

    #[test]
    fn v1_only_fields_fail_clearly_on_v2() {
        let t = fake_root();
        let cg = Cgroup::new(Layout::V2 { root: t.path().into() }, Path::new("c2")).unwrap();
        cg.create().unwrap();
        let res = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().kernel(1 << 20).build().unwrap())
            .build()
            .unwrap();
        let e = cg.apply(&res).unwrap_err().to_string();
        assert!(e.contains("kernel"), "{e}");
    }
}
