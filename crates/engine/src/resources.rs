//! Resource flags that name host devices (`--device`, `--device-read-bps` and the like) and the
//! checks Docker makes on the CPU and block I/O numbers, resolved when a container is created.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A host device node given to the container (`--device HOST[:CONTAINER[:PERMS]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub host: String,
    pub path: String,
    /// "c" or "b".
    pub kind: String,
    pub major: i64,
    pub minor: i64,
    /// Cgroup permissions: a subset of "rwm".
    pub perms: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A block I/O limit on one device (`--device-read-bps PATH:RATE` and the like).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    pub path: String,
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

fn device_numbers(path: &str, flag: &str) -> Result<(String, i64, i64, std::fs::Metadata)> {
    let m = std::fs::metadata(path).with_context(|| format!("{flag} {path}: error gathering device information"))?;
    let kind = if m.file_type().is_char_device() {
        "c"
    } else if m.file_type().is_block_device() {
        "b"
    } else {
        bail!("{flag} {path}: not a device node");
    };
    let rdev = m.rdev();
    Ok((kind.into(), libc::major(rdev) as i64, libc::minor(rdev) as i64, m))
}

/// The host's device nodes under `dir` (recursively), as `--privileged` gives them to a
/// container (Docker's list: every character and block device but the terminals of
/// /dev/pts, and none of the ones every container gets anyway).
pub fn host_devices(dir: &Path) -> Vec<DeviceNode> {
    const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
    const DEFAULTS: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"];
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = m.file_type();
            if ft.is_dir() {
                if !SKIP_DIRS.contains(&name.as_str()) {
                    stack.push(e.path());
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if d == dir && DEFAULTS.contains(&name.as_str()) {
                continue;
            }
            let path = e.path().to_string_lossy().into_owned();
            out.push(DeviceNode {
                host: path.clone(),
                path,
                kind: kind.into(),
                major: libc::major(m.rdev()) as i64,
                minor: libc::minor(m.rdev()) as i64,
                perms: "rwm".into(),
                mode: m.mode() & 0o777,
                uid: m.uid(),
                gid: m.gid(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// `--device HOST[:CONTAINER[:PERMS]]`, as Docker reads it.
pub fn parse_device(spec: &str) -> Result<DeviceNode> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, path, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if !p.is_empty() && p.chars().all(|c| "rwm".contains(c)) && !p.starts_with('/') => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => bail!("invalid device specification: {spec}"),
    };
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        bail!("invalid device mode: {perms}");
    }
    if !Path::new(path).is_absolute() {
        bail!("{path} is not an absolute path");
    }
    let (kind, major, minor, m) = device_numbers(host, "--device")?;
    Ok(DeviceNode {
        host: host.into(),
        path: path.into(),
        kind,
        major,
        minor,
        perms: perms.into(),
        mode: m.mode() & 0o777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

/// `--device-{read,write}-{bps,iops} PATH:RATE`; bps rates take Docker's size units (`1mb`).
pub fn parse_throttle(flag: &str, spec: &str) -> Result<Throttle> {
    let (path, rate) = spec.rsplit_once(':').with_context(|| format!("invalid {flag} {spec:?}: expected PATH:RATE"))?;
    let rate: u64 = if flag.ends_with("bps") {
        let r = berth_runtime::units::parse_size(rate).with_context(|| format!("invalid {flag} rate {rate:?}"))?;
        u64::try_from(r).ok().with_context(|| format!("invalid {flag} rate {rate:?}"))?
    } else {
        rate.parse().with_context(|| format!("invalid {flag} rate {rate:?}: expected a number of operations"))?
    };
    let (kind, major, minor, _) = device_numbers(path, flag)?;
    if kind != "b" {
        bail!("{flag} {path}: not a block device");
    }
    Ok(Throttle { path: path.into(), major, minor, rate })
}

/// Docker's checks on the CPU and block I/O numbers (its words).
pub fn check(c: &crate::ContainerConfig) -> Result<()> {
    if let (Some(m), Some(s)) = (c.memory, c.memory_swap)
        && s != -1
        && s < m
    {
        bail!("Minimum memoryswap limit should be larger than memory limit, see usage");
    }
    if c.memory_swap.is_some() && c.memory.is_none() {
        bail!("You should always set the Memory limit when using Memoryswap limit, see usage");
    }
    for a in &c.add_hosts {
        parse_add_host(a)?;
    }
    for (name, soft, hard) in &c.ulimits {
        if !ULIMITS.contains(&name.as_str()) {
            bail!("invalid ulimit type: {name}");
        }
        if soft > hard {
            bail!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}");
        }
    }
    for k in c.sysctls.keys() {
        check_sysctl(k, &c.network)?;
    }
    if c.auto_remove && !c.restart.is_empty() && c.restart != "no" {
        bail!("Conflicting options: --restart and --rm");
    }
    match c.restart.split(':').next().unwrap_or("") {
        "" | "no" | "always" | "unless-stopped" => {}
        "on-failure" => {
            if let Some((_, n)) = c.restart.split_once(':') {
                n.parse::<u32>().with_context(|| {
                    format!("invalid restart policy {:?}: the maximum retry count must be a number", c.restart)
                })?;
            }
        }
        other => bail!("invalid restart policy {other:?}: use no, on-failure[:N], always or unless-stopped"),
    }
    if c.cpus.is_some() && c.cpu_period.is_some() {
        bail!("Conflicting options: Nano CPUs and CPU Period cannot both be set");
    }
    if c.cpus.is_some() && c.cpu_quota.is_some() {
        bail!("Conflicting options: Nano CPUs and CPU Quota cannot both be set");
    }
    if let Some(p) = c.cpu_period
        && p != 0
        && !(1000..=1_000_000).contains(&p)
    {
        bail!("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)");
    }
    if let Some(q) = c.cpu_quota
        && q > 0
        && q < 1000
    {
        bail!("CPU cfs quota can not be less than 1ms (i.e. 1000)");
    }
    if let Some(w) = c.blkio_weight
        && w != 0
        && !(10..=1000).contains(&w)
    {
        bail!("Range of blkio weight is from 10 to 1000");
    }
    Ok(())
}

/// The names `--ulimit` takes (Docker's: setrlimit's resources).
const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Docker's rule for `--sysctl`: only the namespaced ones (IPC's kernel keys and fs.mqueue,
/// net.* with a network namespace of the container's own).
fn check_sysctl(k: &str, network: &str) -> Result<()> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&k) || k.starts_with("fs.mqueue.") {
        return Ok(());
    }
    if k.starts_with("net.") {
        if network == "host" {
            bail!("sysctl {k:?} is not allowed in host network namespace");
        }
        return Ok(());
    }
    bail!(
        "sysctl {k:?} is not allowed: only namespaced sysctls (kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, net.*) can be set"
    )
}

/// `--add-host NAME:IP` (Docker also takes `NAME=IP`): the name and the address, None for
/// `host-gateway`.
pub fn parse_add_host(a: &str) -> Result<(&str, Option<std::net::IpAddr>)> {
    // The first ':' or '=' ends the name: an IPv6 address has colons of its own.
    let at = a
        .find([':', '='])
        .ok_or_else(|| anyhow::anyhow!("invalid argument {a:?} for \"--add-host\" flag: expected host:ip"))?;
    let (name, ip) = (&a[..at], a[at + 1..].trim_start_matches('[').trim_end_matches(']'));
    if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
        bail!("invalid argument {a:?} for \"--add-host\" flag: invalid host name {name:?}");
    }
    if ip == "host-gateway" {
        return Ok((name, None));
    }
    let ip = ip
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid argument {a:?} for \"--add-host\" flag: invalid IP address {ip:?}"))?;
    Ok((name, Some(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs() {
        let d = parse_device("/dev/null").unwrap();
        assert_eq!(
            (d.path.as_str(), d.kind.as_str(), d.major, d.minor, d.perms.as_str()),
            ("/dev/null", "c", 1, 3, "rwm")
        );
        let d = parse_device("/dev/null:/dev/nothing").unwrap();
        assert_eq!((d.host.as_str(), d.path.as_str()), ("/dev/null", "/dev/nothing"));
        let d = parse_device("/dev/zero:r").unwrap();
        assert_eq!((d.path.as_str(), d.perms.as_str()), ("/dev/zero", "r"));
        let d = parse_device("/dev/zero:/dev/z:rw").unwrap();
        assert_eq!((d.path.as_str(), d.perms.as_str()), ("/dev/z", "rw"));
        assert!(parse_device("/dev/zero:/dev/z:rx").is_err());
        assert!(parse_device("/dev/zero:dev/z").is_err());
        assert!(parse_device("/etc/passwd").unwrap_err().to_string().contains("not a device node"));
        assert!(parse_device("/dev/nonexistent-berth").is_err());
    }

    #[test]
    fn throttle_specs() {
        assert!(
            parse_throttle("--device-read-bps", "/dev/null:1mb")
                .unwrap_err()
                .to_string()
                .contains("not a block device")
        );
        assert!(parse_throttle("--device-read-bps", "/dev/null").is_err());
        assert!(parse_throttle("--device-read-iops", "/dev/null:many").is_err());
    }

    #[test]
    fn docker_checks() {
        let ok = crate::ContainerConfig { cpu_period: Some(50000), cpu_quota: Some(25000), ..Default::default() };
        check(&ok).unwrap();
        for (bad, words) in [
            (crate::ContainerConfig { cpus: Some(1.0), cpu_period: Some(50000), ..Default::default() }, "CPU Period"),
            (crate::ContainerConfig { cpus: Some(1.0), cpu_quota: Some(50000), ..Default::default() }, "CPU Quota"),
            (crate::ContainerConfig { cpu_period: Some(999), ..Default::default() }, "cfs period"),
            (crate::ContainerConfig { cpu_quota: Some(10), ..Default::default() }, "cfs quota"),
            (crate::ContainerConfig { blkio_weight: Some(5), ..Default::default() }, "blkio weight"),
        ] {
            assert!(check(&bad).unwrap_err().to_string().contains(words), "{words}");
        }
    }
}
