//! What the engine says about its objects, in Docker's shapes: `inspect`'s JSON for containers,
//! networks and volumes, a container's status line, and the `--filter`s of the listings. The
//! command line prints these; an API server returns the same values.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use berth_network::ipam;
use serde_json::{Value, json};

use crate::containers::ContainerRow;
use crate::networks::Network;
use crate::volumes::Volume;
use crate::{Engine, db};

/// A time in Docker's JSON: RFC 3339 with nanoseconds.
pub fn rfc3339(nanos: i64) -> String {
    berth_runtime::state::rfc3339(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
}

/// As [`rfc3339`], with Go's zero time for a time that never came (a container not yet started).
fn rfc3339_or_zero(nanos: i64) -> String {
    if nanos == 0 { "0001-01-01T00:00:00Z".to_string() } else { rfc3339(nanos) }
}

/// `2006-01-02T15:04:05[.999999999](Z|+07:00)`, or a date alone, as unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (time, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "Z"),
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let nanos: i64 = match frac {
        "" => 0,
        f if f.bytes().all(|c| c.is_ascii_digit()) => format!("{f:0<9}")[..9].parse().ok()?,
        _ => return None,
    };
    let off = match offset {
        "Z" | "z" => 0,
        o if o.starts_with(['+', '-']) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let digits = o[1..].replace(':', "");
            if !matches!(digits.len(), 2 | 4) || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (oh, om) = digits.split_at(2);
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().unwrap_or(0) * 60)
        }
        _ => return None,
    };
    // Days from the civil date in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    // Outside 1678-2262 (Go's zero time in an image's config, say) nanoseconds overflow: None.
    (days * 86400 + hh * 3600 + mm * 60 + ss - off).checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Docker's `units.HumanDuration`: "Less than a second", "About a minute", "3 weeks".
pub fn human_duration(secs: i64) -> String {
    let (m, h) = (secs / 60, secs / 3600);
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    }
}

/// How long ago a time (nanoseconds since the epoch) was: "5 minutes ago".
pub fn ago(nanos: i64) -> String {
    let secs = (db::now_nanos() - nanos).max(0) / 1_000_000_000;
    format!("{} ago", human_duration(secs))
}

/// A container's status line, as Docker's `Status`: "Up 5 minutes (healthy)", "Exited (0) 2
/// hours ago", "Created".
pub fn status_text(c: &ContainerRow) -> String {
    let up = || format!("Up {}", human_duration((db::now_nanos() - c.started) / 1_000_000_000));
    match c.state.as_str() {
        "running" => match crate::health::read(&c.dir) {
            Some(h) if c.config.healthcheck.as_ref().is_some_and(|x| x.enabled()) => {
                let h = if h.status == "starting" { "health: starting".into() } else { h.status };
                format!("{} ({h})", up())
            }
            _ => up(),
        },
        "paused" => format!("{} (Paused)", up()),
        "exited" => format!("Exited ({}) {}", c.exit_code, ago(c.finished)),
        "restarting" => format!("Restarting ({}) {}", c.exit_code, ago(c.finished)),
        "created" => "Created".into(),
        other => other.into(),
    }
}

/// A `label=KEY` or `label=KEY=VALUE` filter against a set of labels.
fn label_matches(labels: &BTreeMap<String, String>, v: &str) -> bool {
    match v.split_once('=') {
        Some((k, want)) => labels.get(k).is_some_and(|x| x == want),
        None => labels.contains_key(v),
    }
}

/// `KEY=VALUE` of a filter, or Docker's complaint.
fn filter_parts(f: &str) -> Result<(&str, &str)> {
    f.split_once('=').with_context(|| format!("bad format of filter (expected name=value): {f}"))
}

/// The `--filter`s of `ps`, checked: filters with the same key are alternatives (label ones all
/// have to hold), filters with different keys all have to hold, as Docker's.
#[derive(Default)]
pub struct ContainerFilter {
    groups: Vec<(String, Vec<String>)>,
}

impl ContainerFilter {
    pub fn parse(filters: &[String]) -> Result<ContainerFilter> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for f in filters {
            let (key, v) = filter_parts(f)?;
            match key {
                "status"
                    if !["created", "restarting", "running", "removing", "paused", "exited", "dead"].contains(&v) =>
                {
                    bail!("Invalid filter 'status={v}'")
                }
                "status" | "name" | "id" | "label" | "ancestor" | "exited" | "health" => {}
                other => bail!("invalid filter '{other}'"),
            }
            match groups.iter_mut().find(|(k, _)| k == key && key != "label") {
                Some((_, g)) => g.push(v.to_string()),
                None => groups.push((key.to_string(), vec![v.to_string()])),
            }
        }
        Ok(ContainerFilter { groups })
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn matches(&self, c: &ContainerRow) -> bool {
        self.groups.iter().all(|(key, values)| values.iter().any(|v| container_matches(c, key, v)))
    }
}

fn container_matches(c: &ContainerRow, key: &str, v: &str) -> bool {
    match key {
        "status" => c.state == v,
        "name" => c.name.contains(v),
        "id" => c.id.starts_with(v),
        "label" => label_matches(&c.config.labels, v),
        "ancestor" => c.config.image_ref == v || c.image.contains(v),
        "exited" => c.state == "exited" && c.exit_code.to_string() == v,
        "health" => {
            let enabled = c.config.healthcheck.as_ref().is_some_and(|h| h.enabled());
            let now = crate::health::read(&c.dir).map(|h| h.status);
            match v {
                "none" => !enabled,
                other => enabled && c.is_running() && now.as_deref() == Some(other),
            }
        }
        _ => false,
    }
}

/// The items for which every filter holds.
fn all_hold<T>(items: Vec<T>, filters: &[String], holds: impl Fn(&T, &str) -> Result<bool>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for it in items {
        let mut keep = true;
        for f in filters {
            keep &= holds(&it, f)?;
        }
        if keep {
            out.push(it);
        }
    }
    Ok(out)
}

/// A list as Docker's JSON has it: null when empty.
fn nullable(v: &[String]) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

fn rates(list: &[crate::resources::Throttle]) -> Vec<Value> {
    list.iter().map(|t| json!({"Path": t.path, "Rate": t.rate})).collect()
}

impl Engine {
    /// The containers `ps` lists: running ones, or all with `all`, newest first, through
    /// `filter`.
    pub fn list_containers(&self, all: bool, filter: &ContainerFilter) -> Result<Vec<ContainerRow>> {
        let mut list = self.containers(all)?;
        list.retain(|c| filter.matches(c));
        Ok(list)
    }

    /// The networks `network ls` lists through its `--filter`s (all have to hold).
    pub fn list_networks(&self, filters: &[String]) -> Result<Vec<Network>> {
        all_hold(self.networks()?, filters, network_matches)
    }

    /// The volumes `volume ls` lists through its `--filter`s (all have to hold).
    pub fn list_volumes(&self, filters: &[String]) -> Result<Vec<Volume>> {
        all_hold(self.volumes()?, filters, |v, f| self.volume_matches(v, f))
    }

    fn volume_matches(&self, v: &Volume, f: &str) -> Result<bool> {
        let (k, val) = filter_parts(f)?;
        Ok(match k {
            "name" => v.name.contains(val),
            "driver" => v.driver == val,
            "dangling" => (self.volume_users(&v.name)?.is_empty()) == matches!(val, "true" | "1"),
            "label" => label_matches(&v.labels, val),
            other => bail!("invalid filter '{other}'"),
        })
    }

    /// `inspect` of a volume, in Docker's shape.
    pub fn inspect_volume(&self, v: &Volume) -> Value {
        json!({
            "CreatedAt": rfc3339(v.created),
            "Driver": v.driver,
            "Labels": v.labels,
            "Mountpoint": self.volume_data(&v.name),
            "Name": v.name,
            "Options": v.options,
            "Scope": "local",
            "Anonymous": v.anonymous,
        })
    }

    /// `inspect` of a network, in Docker's shape.
    pub fn inspect_network(&self, n: &Network) -> Result<Value> {
        let mut containers = serde_json::Map::new();
        for ep in self.endpoints_of_network(&n.id)? {
            let name = self.container(&ep.container).map(|c| c.name).unwrap_or_default();
            containers.insert(
                ep.container.clone(),
                json!({
                    "Name": name,
                    "MacAddress": ipam::format_mac(&ep.mac),
                    "IPv4Address": format!("{}/{}", ep.ip, n.subnet.prefix),
                    "IPv6Address": "",
                    "Aliases": ep.aliases,
                    "Active": ep.active,
                }),
            );
        }
        let mut options: BTreeMap<String, String> = n.options.clone();
        options.insert("com.docker.network.bridge.name".into(), n.bridge.clone());
        Ok(json!({
            "Name": n.name,
            "Id": n.id,
            "Created": rfc3339(n.created),
            "Scope": "local",
            "Driver": n.driver,
            "EnableIPv6": false,
            "IPAM": {
                "Driver": "default",
                "Config": [{
                    "Subnet": n.subnet.to_string(),
                    "Gateway": n.gateway.to_string(),
                    "IPRange": n.ip_range.map(|r| r.to_string()).unwrap_or_default(),
                }],
            },
            "Internal": n.internal,
            "DNSEnabled": n.dns,
            "Containers": containers,
            "Options": options,
            "Labels": n.labels,
        }))
    }

    /// `NetworkSettings` of a container's `inspect`, in Docker's shape.
    pub fn network_settings(&self, c: &ContainerRow) -> Value {
        let eps = self.endpoints_of_container(&c.id).unwrap_or_default();
        let mut networks = serde_json::Map::new();
        for (ep, n) in &eps {
            networks.insert(
                n.name.clone(),
                json!({
                    "NetworkID": n.id,
                    "EndpointID": if ep.active { format!("{}{}", &c.id[..32], &n.id[..32]) } else { String::new() },
                    "Gateway": n.gateway.to_string(),
                    "IPAddress": ep.ip.to_string(),
                    "IPPrefixLen": n.subnet.prefix,
                    "MacAddress": ipam::format_mac(&ep.mac),
                    "Aliases": ep.aliases,
                }),
            );
        }
        let mut ports = serde_json::Map::new();
        for x in &c.config.exposed {
            ports.insert(x.clone(), Value::Null);
        }
        for p in self.published_ports(&c.id).unwrap_or_default() {
            let key = format!("{}/{}", p.container_port, p.proto);
            let entry = json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()});
            match ports.get_mut(&key) {
                Some(Value::Array(a)) => a.push(entry),
                _ => {
                    ports.insert(key, json!([entry]));
                }
            }
        }
        let primary = Engine::primary(&eps);
        json!({
            "IPAddress": primary.map(|(ep, _)| ep.ip.to_string()).unwrap_or_default(),
            "IPPrefixLen": primary.map(|(_, n)| n.subnet.prefix).unwrap_or(0),
            "Gateway": primary.map(|(_, n)| n.gateway.to_string()).unwrap_or_default(),
            "MacAddress": primary.map(|(ep, _)| ipam::format_mac(&ep.mac)).unwrap_or_default(),
            "Ports": ports,
            "Networks": networks,
        })
    }

    /// `inspect` of a container, in Docker's shape.
    pub fn inspect_container(&self, c: &ContainerRow) -> Value {
        let t = rfc3339_or_zero;
        let mut v = json!({
            "Id": c.id,
            "Created": t(c.created),
            "Path": c.config.args.first(),
            "Args": c.config.args.get(1..).unwrap_or_default(),
            "State": {
                "Status": c.state,
                "Running": c.state == "running" || c.state == "paused",
                "Paused": c.state == "paused",
                "Restarting": c.state == "restarting",
                "OOMKilled": c.oom_killed,
                "Dead": false,
                "Pid": c.pid,
                "ExitCode": c.exit_code,
                "Error": if c.error == "stopped" { "" } else { c.error.as_str() },
                "RestartCount": c.restart_count,
                "Health": crate::health::read(&c.dir).filter(|_| c.config.healthcheck.as_ref().is_some_and(|h| h.enabled())),
                "StartedAt": t(c.started),
                "FinishedAt": t(c.finished),
            },
            "Image": c.image,
            "RestartCount": c.restart_count,
            "Name": format!("/{}", c.name),
            "LogPath": c.log_path(),
            "Driver": "overlay",
            "Config": {
                "Hostname": c.config.hostname,
                "User": c.config.user,
                "Tty": c.config.tty,
                "OpenStdin": c.config.interactive,
                "Env": c.config.env,
                "Cmd": nullable(c.config.entrypoint_and_cmd().1),
                "Entrypoint": nullable(c.config.entrypoint_and_cmd().0),
                "Image": c.config.image_ref,
                "WorkingDir": c.config.workdir,
                "Labels": c.config.labels,
                "StopSignal": c.config.stop_signal,
                "Healthcheck": c.config.healthcheck,
            },
            "HostConfig": {
                "NetworkMode": c.config.network,
                "Privileged": c.config.privileged,
                "ReadonlyRootfs": c.config.read_only,
                "AutoRemove": c.config.auto_remove,
                "UsernsMode": if c.config.userns.is_some() { "auto" } else { "" },
                "CapAdd": c.config.cap_add,
                "CapDrop": c.config.cap_drop,
                "Memory": c.config.memory.unwrap_or(0),
                "MemorySwap": c.config.memory_swap.unwrap_or(0),
                "NanoCpus": c.config.cpus.map(|x| (x * 1e9) as i64).unwrap_or(0),
                "CpuShares": c.config.cpu_shares.unwrap_or(0),
                "PidsLimit": c.config.pids_limit,
                "CpuPeriod": c.config.cpu_period.unwrap_or(0),
                "CpuQuota": c.config.cpu_quota.unwrap_or(0),
                "CpusetCpus": c.config.cpuset_cpus.clone().unwrap_or_default(),
                "CpusetMems": c.config.cpuset_mems.clone().unwrap_or_default(),
                "OomKillDisable": c.config.oom_kill_disable,
                "BlkioWeight": c.config.blkio_weight.unwrap_or(0),
                "Devices": c.config.devices.iter().map(|d| json!({"PathOnHost": d.host, "PathInContainer": d.path, "CgroupPermissions": d.perms})).collect::<Vec<_>>(),
                "BlkioDeviceReadBps": rates(&c.config.device_read_bps),
                "BlkioDeviceWriteBps": rates(&c.config.device_write_bps),
                "BlkioDeviceReadIOps": rates(&c.config.device_read_iops),
                "BlkioDeviceWriteIOps": rates(&c.config.device_write_iops),
                "Binds": c.config.binds.iter().map(|b| format!("{}:{}{}", b.source.display(), b.destination, if b.readonly { ":ro" } else { "" })).collect::<Vec<_>>(),
                "LogConfig": {"Type": c.config.log_driver},
                "PublishAllPorts": c.config.publish_all,
            },
            "NetworkSettings": self.network_settings(c),
            "Mounts": mounts_json(c),
        });
        more_inspect_fields(c, &mut v);
        v
    }
}

/// The rest of Docker's container fields that scripts read (`{{.HostConfig.RestartPolicy.Name}}`,
/// `{{.HostsPath}}`...), set apart from the big literal above.
fn more_inspect_fields(c: &ContainerRow, v: &mut Value) {
    let cfg = &c.config;
    let (policy, retries) = match cfg.restart.split_once(':') {
        Some((p, n)) => (p.to_string(), n.parse::<u32>().unwrap_or(0)),
        None if cfg.restart.is_empty() => ("no".to_string(), 0),
        None => (cfg.restart.clone(), 0),
    };
    let mut bindings = serde_json::Map::new();
    for p in &cfg.ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let host_port = match (p.host_lo, p.host_hi) {
            (0, _) => String::new(),
            (lo, hi) if hi > lo => format!("{lo}-{hi}"),
            (lo, _) => lo.to_string(),
        };
        let ip = p.host_ip.map(|i| i.to_string()).unwrap_or_default();
        let list = bindings.entry(key).or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut() {
            a.push(json!({"HostIp": ip, "HostPort": host_port}));
        }
    }
    let mut security = Vec::new();
    if cfg.no_new_privileges {
        security.push("no-new-privileges".to_string());
    }
    if !cfg.seccomp.is_empty() {
        security.push(format!("seccomp={}", cfg.seccomp));
    }
    if let Some(p) = &cfg.apparmor_profile {
        security.push(format!("apparmor={p}"));
    }
    let hc = &mut v["HostConfig"];
    hc["RestartPolicy"] = json!({"Name": policy, "MaximumRetryCount": retries});
    hc["PortBindings"] = Value::Object(bindings);
    hc["Dns"] = json!(cfg.dns);
    hc["DnsSearch"] = json!(cfg.dns_search);
    hc["DnsOptions"] = json!(cfg.dns_options);
    hc["ExtraHosts"] = json!(cfg.add_hosts);
    hc["ShmSize"] = json!(cfg.shm_size.unwrap_or(64 << 20));
    hc["Tmpfs"] = json!(cfg.tmpfs.iter().cloned().collect::<BTreeMap<_, _>>());
    hc["Ulimits"] =
        json!(cfg.ulimits.iter().map(|(n, s, h)| json!({"Name": n, "Soft": s, "Hard": h})).collect::<Vec<_>>());
    hc["Sysctls"] = json!(cfg.sysctls);
    hc["MemoryReservation"] = json!(cfg.memory_reservation.unwrap_or(0));
    hc["OomScoreAdj"] = json!(cfg.oom_score_adj.unwrap_or(0));
    hc["Init"] = json!(cfg.init);
    hc["Runtime"] = json!(if cfg.runtime.is_empty() { "berth-runtime" } else { cfg.runtime.as_str() });
    hc["VolumesFrom"] = json!(cfg.volumes_from);
    hc["SecurityOpt"] = json!(security);
    // Published ports are exposed too, as Docker shows them.
    let exposed: serde_json::Map<String, Value> = cfg
        .exposed
        .iter()
        .cloned()
        .chain(cfg.ports.iter().map(|p| format!("{}/{}", p.container_port, p.proto)))
        .map(|p| (p, json!({})))
        .collect();
    v["Config"]["ExposedPorts"] = Value::Object(exposed);
    if let Some(t) = cfg.stop_timeout {
        v["Config"]["StopTimeout"] = json!(t);
    }
    v["Platform"] = json!("linux");
    v["HostsPath"] = json!(c.dir.join("hosts"));
    v["HostnamePath"] = json!(c.dir.join("hostname"));
    v["ResolvConfPath"] = json!(c.dir.join("resolv.conf"));
    v["AppArmorProfile"] = json!(cfg.apparmor_profile.clone().unwrap_or_default());
    v["ProcessLabel"] = json!(cfg.selinux_label.clone().unwrap_or_default());
}

/// The `Mounts` of a container's `inspect`, in Docker's shape.
fn mounts_json(c: &ContainerRow) -> Value {
    let mut out: Vec<Value> = c
        .config
        .binds
        .iter()
        .map(|b| {
            json!({
                "Type": if b.volume.is_some() { "volume" } else { "bind" },
                "Name": b.volume.clone().unwrap_or_default(),
                "Source": b.source,
                "Destination": b.destination,
                "Driver": if b.volume.is_some() { "local" } else { "" },
                "Mode": if b.readonly { "ro" } else { "" },
                "RW": !b.readonly,
                "Propagation": b.propagation.clone().unwrap_or_else(|| "rprivate".into()),
            })
        })
        .collect();
    out.extend(c.config.tmpfs.iter().map(
        |(d, _)| json!({"Type": "tmpfs", "Source": "", "Destination": d, "Mode": "", "RW": true, "Propagation": ""}),
    ));
    Value::Array(out)
}

/// A `network ls --filter`.
fn network_matches(n: &Network, f: &str) -> Result<bool> {
    let (k, v) = filter_parts(f)?;
    Ok(match k {
        "name" => n.name.contains(v),
        "id" => n.id.starts_with(v),
        "driver" => n.driver == v,
        "label" => label_matches(&n.labels, v),
        "type" => match v {
            "builtin" => n.is_default(),
            "custom" => !n.is_default(),
            _ => bail!("invalid filter: 'type'='{v}': use builtin or custom"),
        },
        other => bail!("invalid filter '{other}'"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(100 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
        let secs = |s: &str| parse_rfc3339(s).map(|n| n.div_euclid(1_000_000_000));
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(secs("2024-02-29T12:00:00.123456789Z"), Some(1_709_208_000));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00.123456789Z").map(|n| n % 1_000_000_000), Some(123_456_789));
        assert_eq!(secs("2024-02-29T14:00:00+02:00"), Some(1_709_208_000));
        assert_eq!(secs("2024-02-29"), Some(1_709_164_800));
        assert_eq!(secs("yesterday"), None);
        assert_eq!(secs("2024-13-01T00:00:00Z"), None);
        assert_eq!(secs("2024-02-29T17:30:00+0530"), Some(1_709_208_000));
        assert_eq!(secs("2024-02-29T12:00:00+530"), None);
        assert_eq!(secs("2024-02-29T12:00:00Z12"), None);
        assert_eq!(secs("99999-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None, "out of nanoseconds' range");
    }

    #[test]
    fn container_filters() {
        assert!(ContainerFilter::parse(&["status=sleeping".into()]).is_err());
        assert!(ContainerFilter::parse(&["colour=red".into()]).is_err());
        assert!(ContainerFilter::parse(&["name".into()]).is_err());
        let mut c =
            ContainerRow { id: "abc123".into(), name: "web".into(), state: "exited".into(), ..Default::default() };
        c.config.labels.insert("tier".into(), "front".into());
        let f = |v: &[&str]| ContainerFilter::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        assert!(f(&[]).matches(&c));
        // Same key: alternatives; different keys: all.
        assert!(f(&["status=running", "status=exited"]).matches(&c));
        assert!(!f(&["status=exited", "name=db"]).matches(&c));
        assert!(f(&["label=tier", "id=abc"]).matches(&c));
        assert!(!f(&["label=tier=back"]).matches(&c));
        assert!(!f(&["label=tier", "label=other"]).matches(&c), "label filters all hold");
        assert!(f(&["exited=0"]).matches(&c));
    }
}
