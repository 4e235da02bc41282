//! A container's settings -> the OCI config.json the runtime runs, with Docker's defaults:
//! its 14 capabilities, its masked and read-only /proc and /sys paths, private namespaces,
//! /etc/hosts, /etc/hostname and /etc/resolv.conf from the engine.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::containers::ContainerConfig;

pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `--cap-add`/`--cap-drop` applied to Docker's defaults (names with or without `CAP_`, any
/// case, and `ALL`).
pub fn capabilities(add: &[String], drop: &[String], privileged: bool) -> Result<Vec<String>> {
    let norm = |c: &str| -> Result<String> {
        let u = c.to_ascii_uppercase();
        if u == "ALL" {
            return Ok(u);
        }
        let n = if u.starts_with("CAP_") { u } else { format!("CAP_{u}") };
        if berth_runtime::caps::number(&n).is_none() {
            bail!("invalid capability {c:?}: see capabilities(7) for the names");
        }
        Ok(n)
    };
    // ALL and --privileged: every capability we can hand on, the ones in our own bounding set
    // (as Podman: a capability we lack makes the container's capset fail).
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string())))
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(u64::MAX);
    let all: Vec<String> = berth_runtime::caps::NAMES
        .iter()
        .take(berth_runtime::caps::last_cap() as usize + 1)
        .enumerate()
        .filter(|(i, _)| bounding & (1u64 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let mut caps: Vec<String> =
        if privileged { all.clone() } else { DEFAULT_CAPS.iter().map(|s| s.to_string()).collect() };
    let drop: Vec<String> = drop.iter().map(|c| norm(c)).collect::<Result<_>>()?;
    let add: Vec<String> = add.iter().map(|c| norm(c)).collect::<Result<_>>()?;
    if drop.iter().any(|d| d == "ALL") {
        caps.clear();
    } else {
        caps.retain(|c| !drop.contains(c));
    }
    for a in add {
        if a == "ALL" {
            caps = all.clone();
        } else if !caps.contains(&a) {
            caps.push(a);
        }
    }
    Ok(caps)
}

/// The uid, gid and extra groups for `--user` / the image's USER, resolved against the
/// container's /etc/passwd and /etc/group (read safely inside `rootfs`).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    if user.is_empty() {
        return Ok((0, 0, vec![]));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    let group = read_in_root(rootfs, "etc/group");
    let field = |line: &str, i: usize| line.split(':').nth(i).map(str::to_string);
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(n) => {
            let gid = passwd
                .lines()
                .find(|l| field(l, 2).as_deref() == Some(u))
                .and_then(|l| field(l, 3))
                .and_then(|g| g.parse().ok());
            (n, gid.unwrap_or(0))
        }
        Err(_) => {
            let l = passwd
                .lines()
                .find(|l| field(l, 0).as_deref() == Some(u))
                .with_context(|| format!("unable to find user {u}: no matching entries in passwd file"))?;
            (
                field(l, 2).and_then(|x| x.parse().ok()).unwrap_or(0),
                field(l, 3).and_then(|x| x.parse().ok()).unwrap_or(0),
            )
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .find(|l| field(l, 0).as_deref() == Some(g))
                .and_then(|l| field(l, 2))
                .and_then(|x| x.parse().ok())
                .with_context(|| format!("unable to find group {g}: no matching entries in group file"))?,
        };
    }
    // Supplementary groups: the groups that list the user by name.
    let mut extra = Vec::new();
    if u.parse::<u32>().is_err() {
        for l in group.lines() {
            if field(l, 3).is_some_and(|m| m.split(',').any(|x| x == u))
                && let Some(n) = field(l, 2).and_then(|x| x.parse::<u32>().ok())
                && n != gid
            {
                extra.push(n);
            }
        }
    }
    Ok((uid, gid, extra))
}

fn read_in_root(rootfs: &Path, rel: &str) -> String {
    let Ok(root) = std::fs::File::open(rootfs) else { return String::new() };
    use std::os::fd::AsRawFd;
    match berth_runtime::safepath::openat_in_root(root.as_raw_fd(), Path::new(rel), libc::O_RDONLY, 0) {
        Ok(fd) => {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s);
            s
        }
        Err(_) => String::new(),
    }
}

/// Paths of the files the engine bind-mounts over the image's.
pub struct EtcFiles<'a> {
    pub hosts: &'a Path,
    pub hostname: &'a Path,
    pub resolv: &'a Path,
    /// berth-init on the host, for `--init` (mounted at /dev/init, the command under it).
    pub init: Option<&'a Path>,
}

/// The container's linux.resources: its limits and device rules (also what `update` applies).
pub fn resources(c: &ContainerConfig) -> Value {
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if c.privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    let mut memory = serde_json::Map::new();
    if let Some(m) = c.memory {
        memory.insert("limit".into(), json!(m));
        // Docker: no --memory-swap means swap = memory (total twice the limit).
        let swap = match c.memory_swap {
            Some(-1) => -1,
            Some(s) => s,
            None => m * 2,
        };
        memory.insert("swap".into(), json!(swap));
    }
    if let Some(r) = c.memory_reservation {
        memory.insert("reservation".into(), json!(r));
    }
    if c.oom_kill_disable {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if !memory.is_empty() {
        resources["memory"] = Value::Object(memory);
    }
    let mut block = serde_json::Map::new();
    if let Some(w) = c.blkio_weight {
        block.insert("weight".into(), json!(w));
    }
    for (key, list) in [
        ("throttleReadBpsDevice", &c.device_read_bps),
        ("throttleWriteBpsDevice", &c.device_write_bps),
        ("throttleReadIOPSDevice", &c.device_read_iops),
        ("throttleWriteIOPSDevice", &c.device_write_iops),
    ] {
        if !list.is_empty() {
            let v: Vec<Value> =
                list.iter().map(|t| json!({"major": t.major, "minor": t.minor, "rate": t.rate})).collect();
            block.insert(key.into(), json!(v));
        }
    }
    if !block.is_empty() {
        resources["blockIO"] = Value::Object(block);
    }
    if !c.privileged
        && let Some(rules) = resources["devices"].as_array_mut()
    {
        for d in &c.devices {
            rules.push(json!({"allow": true, "type": d.kind, "major": d.major, "minor": d.minor, "access": d.perms}));
        }
    }
    let mut cpu = serde_json::Map::new();
    if let Some(cpus) = c.cpus {
        cpu.insert("period".into(), json!(100000u64));
        cpu.insert("quota".into(), json!((cpus * 100000.0) as i64));
    }
    if let Some(s) = c.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(s) = &c.cpuset_cpus {
        cpu.insert("cpus".into(), json!(s));
    }
    if let Some(p) = c.cpu_period {
        cpu.insert("period".into(), json!(p));
    }
    if let Some(q) = c.cpu_quota {
        cpu.insert("quota".into(), json!(q));
    }
    if let Some(m) = &c.cpuset_mems {
        cpu.insert("mems".into(), json!(m));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(p) = c.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    resources
}

/// The OCI runtime spec for a container.
pub fn build(c: &ContainerConfig, rootfs: &Path, etc: &EtcFiles, cgroup_v2: bool) -> Result<Value> {
    let (uid, gid, groups) = resolve_user(rootfs, &c.user)?;
    let caps = capabilities(&c.cap_add, &c.cap_drop, c.privileged)?;
    // As Podman: open files up to 1048576, or the hard limit we have when that is lower.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, h)| h.min(1048576))
        .unwrap_or(1024);
    let mut rlimits = vec![json!({"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile})];
    for (name, soft, hard) in &c.ulimits {
        let t = format!("RLIMIT_{}", name.to_ascii_uppercase());
        rlimits.retain(|r| r["type"] != t.as_str());
        rlimits.push(json!({"type": t, "soft": soft, "hard": hard}));
    }
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    match c.network.as_str() {
        "host" => {}
        other if other.starts_with("ns:") => namespaces.push(json!({"type": "network", "path": &other[3..]})),
        other if other.starts_with("container:") => {
            bail!("network mode {other}: the monitor resolves it to the other container's namespace first")
        }
        // none, and bridge networks (the monitor adds their interfaces after create).
        _ => namespaces.push(json!({"type": "network"})),
    }
    if cgroup_v2 {
        namespaces.push(json!({"type": "cgroup"}));
    }
    if c.userns.is_some() {
        namespaces.push(json!({"type": "user"}));
    }
    let shm = c.shm_size.unwrap_or(64 << 20);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if c.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if c.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm}")]}),
    ];
    for (src, dst) in [(etc.resolv, "/etc/resolv.conf"), (etc.hostname, "/etc/hostname"), (etc.hosts, "/etc/hosts")] {
        mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}));
    }
    let mut args = c.args.clone();
    if let Some(init) = etc.init {
        // On /dev (a tmpfs of the runtime's): nothing is added to the container's own files.
        mounts.push(json!({"destination": "/dev/init", "type": "bind", "source": init, "options": ["bind", "ro", "nosuid", "nodev"]}));
        args.splice(0..0, ["/dev/init".to_string(), "--".to_string()]);
    }
    if c.read_only {
        for d in ["/tmp", "/run"] {
            if !c.tmpfs.iter().any(|(p, _)| p == d) && !c.binds.iter().any(|b| b.destination == d) {
                mounts.push(json!({"destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
            }
        }
    }
    for (dst, opts) in &c.tmpfs {
        let mut o: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
        o.extend(opts.split(',').filter(|s| !s.is_empty()).map(str::to_string));
        mounts.push(json!({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": o}));
    }
    for b in &c.binds {
        let mut o = vec!["rbind", if b.readonly { "ro" } else { "rw" }];
        o.push(b.propagation.as_deref().unwrap_or("rprivate"));
        if c.userns.is_some() && b.volume.is_some() {
            // A volume is berth's, like the root: seen through the container's id mapping, so
            // its root owns what root owns on disk. Host paths (-v /dir:...) are shown as they
            // are, as Docker does.
            o.push("idmap");
        }
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": o}));
    }
    let resources = resources(c);
    let mut process = json!({
        "terminal": c.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": groups},
        "args": args,
        "env": c.env,
        "cwd": if c.workdir.is_empty() { "/" } else { c.workdir.as_str() },
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits,
        "noNewPrivileges": c.no_new_privileges,
    });
    if let Some(adj) = c.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    if let Some(p) = &c.apparmor_profile {
        process["apparmorProfile"] = json!(p);
    }
    if let Some(l) = &c.selinux_label {
        process["selinuxLabel"] = json!(l);
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "sysctl": c.sysctls.iter().collect::<BTreeMap<_, _>>(),
    });
    // --privileged: the host's device nodes too, as Docker (those --device names first).
    let host = if c.privileged { crate::resources::host_devices(Path::new("/dev")) } else { Vec::new() };
    let devices: Vec<&crate::resources::DeviceNode> =
        c.devices.iter().chain(host.iter().filter(|h| !c.devices.iter().any(|d| d.path == h.path))).collect();
    if !devices.is_empty() {
        linux["devices"] = json!(
            devices
                .iter()
                .map(|d| json!({"path": d.path, "type": d.kind, "major": d.major, "minor": d.minor, "fileMode": d.mode, "uid": d.uid, "gid": d.gid}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(s) = &c.userns {
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": s.uid, "size": s.size}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": s.gid, "size": s.size}]);
    }
    if !c.privileged && c.seccomp != "unconfined" {
        linux["seccomp"] = match &c.seccomp_profile {
            Some(p) => p.clone(),
            None => crate::seccomp::default_profile(&caps),
        };
    }
    if !c.privileged {
        linux["maskedPaths"] = json!(MASKED);
        linux["readonlyPaths"] = json!(READONLY);
    }
    Ok(json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": {"path": rootfs, "readonly": c.read_only},
        "hostname": c.hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_docker() {
        assert_eq!(capabilities(&[], &[], false).unwrap().len(), 14);
        let c = capabilities(&["net_admin".into()], &["ALL".into()], false).unwrap();
        assert_eq!(c, vec!["CAP_NET_ADMIN".to_string()]);
        assert!(capabilities(&["bogus".into()], &[], false).is_err());
    }

    #[test]
    fn users_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/sh\n").unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nwww:x:44:\nextra:x:50:web\n").unwrap();
        assert_eq!(resolve_user(d.path(), "web").unwrap(), (33, 44, vec![50]));
        assert_eq!(resolve_user(d.path(), "33:www").unwrap(), (33, 44, vec![]));
        assert_eq!(resolve_user(d.path(), "1000").unwrap(), (1000, 0, vec![]));
        assert!(resolve_user(d.path(), "nobody").unwrap_err().to_string().contains("unable to find user nobody"));
    }
}
