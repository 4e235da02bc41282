//! Networks: the `networks`, `endpoints` and `ports` tables; network create/ls/rm/prune,
//! connect/disconnect; and what a container's monitor does to bring its interfaces, published
//! ports, firewall rules and name resolution up and down (berth_network does the kernel work).
//!
//! Addresses are leased when a container is created (or connected) and kept until it is
//! removed; an endpoint is `active` while the container's namespace has the interface. A
//! network's bridge is made when its first container starts and stays, with its firewall
//! rules, until the network is removed (as Docker's docker0 and br-*). The nftables table is
//! rebuilt from those networks and the `ports` rows when a bridge is made or removed or ports
//! change. All of that happens under one lock (`<runroot>/network.lock`), so concurrent starts
//! and stops see one another.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use berth_network::firewall::{self, NetworkRules, PortRule, Proto};
use berth_network::ipam::{self, Subnet};
use berth_network::netlink::{self, Attachment};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::containers::ContainerRow;
use crate::{Engine, ExitError, FileLock, db, names};

/// The network containers join when no `--network` is given, as Docker's `bridge`.
pub const DEFAULT_NETWORK: &str = "bridge";
/// Its Linux bridge and subnet (made in migration 4 of the database).
pub const DEFAULT_BRIDGE: &str = "berth0";
pub const DEFAULT_SUBNET: &str = "10.77.0.0/16";

/// One `--network NAME` of a container, with the `--ip`, `--mac-address` and
/// `--network-alias` that go with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NetRequest {
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
    pub aliases: Vec<String>,
}

/// One `-p`: a host port (or a range to choose from; 0 for any free port) for a container port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortSpec {
    pub host_ip: Option<Ipv4Addr>,
    pub host_lo: u16,
    pub host_hi: u16,
    pub container_port: u16,
    pub proto: String,
}

/// A published port as it is bound while the container runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub proto: String,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Subnet>,
    pub internal: bool,
    /// Name resolution between containers (user-defined networks; not the default bridge).
    pub dns: bool,
    pub mtu: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub container: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub aliases: Vec<String>,
    pub ifname: String,
    pub active: bool,
}

/// `berth network create`.
#[derive(Debug, Clone, Default)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub internal: bool,
    pub ipv6: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

const NET_COLUMNS: &str =
    "id, name, driver, bridge, subnet, gateway, ip_range, internal, dns, mtu, labels, options, created";

fn net_row(r: &rusqlite::Row) -> rusqlite::Result<Network> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i: usize, e: anyhow::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into_boxed_dyn_error())
    };
    let range = text(6)?;
    Ok(Network {
        id: text(0)?,
        name: text(1)?,
        driver: text(2)?,
        bridge: text(3)?,
        subnet: text(4)?.parse().map_err(|e| bad(4, e))?,
        gateway: text(5)?.parse().map_err(|e: std::net::AddrParseError| bad(5, e.into()))?,
        ip_range: if range.is_empty() { None } else { Some(range.parse().map_err(|e| bad(6, e))?) },
        internal: r.get::<_, i64>(7)? != 0,
        dns: r.get::<_, i64>(8)? != 0,
        mtu: Some(r.get::<_, i64>(9)? as u32).filter(|m| *m != 0),
        labels: serde_json::from_str(&text(10)?).unwrap_or_default(),
        options: serde_json::from_str(&text(11)?).unwrap_or_default(),
        created: r.get(12)?,
    })
}

const EP_COLUMNS: &str = "container, network, ip, mac, aliases, ifname, active";

fn ep_row(r: &rusqlite::Row) -> rusqlite::Result<Endpoint> {
    let ip: String = r.get(2)?;
    let mac: String = r.get(3)?;
    let aliases: String = r.get(4)?;
    Ok(Endpoint {
        container: r.get(0)?,
        network: r.get(1)?,
        ip: ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        mac: ipam::parse_mac(&mac).unwrap_or_default(),
        aliases: serde_json::from_str(&aliases).unwrap_or_default(),
        ifname: r.get(5)?,
        active: r.get::<_, i64>(6)? != 0,
    })
}

impl Network {
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }
}

/// Whether a container's network mode is made of endpoints on bridge networks (not none,
/// host, another container's or a namespace path).
pub fn uses_endpoints(mode: &str) -> bool {
    !(matches!(mode, "none" | "host" | "") || mode.starts_with("container:") || mode.starts_with("ns:"))
}

/// Parses one `-p` value: `[ip:][hostPort[-end]:]containerPort[-end][/tcp|udp]`.
pub fn parse_publish(s: &str) -> Result<Vec<PortSpec>> {
    let bad = |why: &str| anyhow::anyhow!("invalid publish spec {s:?}: {why}");
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp") {
        return Err(bad("the protocol must be tcp or udp (sctp is not supported)"));
    }
    if rest.starts_with('[') {
        return Err(bad("IPv6 host addresses are not supported yet"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => return Err(bad("expected [ip:][hostPort:]containerPort[/protocol]")),
    };
    let host_ip = match ip {
        "" | "0.0.0.0" => None,
        i => Some(i.parse::<Ipv4Addr>().map_err(|_| bad(&format!("{i:?} is not an IPv4 address")))?),
    };
    let range = |v: &str| -> Result<(u16, u16)> {
        let (a, b) = v.split_once('-').unwrap_or((v, v));
        let p = |x: &str| x.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad(&format!("invalid port {x:?}")));
        let (a, b) = (p(a)?, p(b)?);
        if b < a {
            return Err(bad(&format!("invalid port range {v}")));
        }
        Ok((a, b))
    };
    let (clo, chi) = range(container)?;
    let (hlo, hhi) = if host.is_empty() { (0, 0) } else { range(host)? };
    let mut out = Vec::new();
    if chi > clo {
        // A range of container ports maps one to one onto a host range of the same length.
        if host.is_empty() {
            out.extend((clo..=chi).map(|c| (0, 0, c)));
        } else if hhi - hlo == chi - clo {
            out.extend((clo..=chi).zip(hlo..=hhi).map(|(c, h)| (h, h, c)));
        } else {
            return Err(bad("port range mismatch: the host and container ranges must have the same length"));
        }
    } else {
        out.push((hlo, hhi, clo));
    }
    Ok(out
        .into_iter()
        .map(|(host_lo, host_hi, container_port)| PortSpec {
            host_ip,
            host_lo,
            host_hi,
            container_port,
            proto: proto.clone(),
        })
        .collect())
}

/// The host end of a container's veth on a network (at most 15 bytes).
fn host_veth(container: &str, network: &str) -> String {
    format!("vb{}{}", &container[..9.min(container.len())], &network[..4.min(network.len())])
}

/// Docker's bridge driver options berth takes besides the MTU.
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// Docker's rule for network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, here at most 64 bytes.
fn valid_network_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && n.len() <= 64
}

fn in_use(code: i32, msg: String) -> anyhow::Error {
    ExitError { code, msg }.into()
}

impl Engine {
    fn net_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("networks").join(id)
    }

    fn network_lock(&self) -> Result<FileLock> {
        FileLock::take(&self.runroot.join("network.lock"), true)
    }

    /// A network by name, id or unique id prefix.
    pub fn network(&self, key: &str) -> Result<Network> {
        find_network(&self.db, key)?.ok_or_else(|| in_use(1, format!("network {key} not found")))
    }

    pub fn networks(&self) -> Result<Vec<Network>> {
        let mut st = self.db.prepare(&format!("SELECT {NET_COLUMNS} FROM networks ORDER BY created, name"))?;
        Ok(st.query_map([], net_row)?.collect::<rusqlite::Result<_>>()?)
    }

    /// `berth network create`.
    pub fn create_network(&self, req: &NetworkCreate) -> Result<Network> {
        if !valid_network_name(&req.name) {
            bail!("invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", req.name);
        }
        if matches!(req.name.as_str(), "none" | "host" | "default") || req.name.contains(':') {
            bail!("network name {:?} is reserved for a network mode", req.name);
        }
        match req.driver.as_deref() {
            None | Some("bridge") => {}
            Some(d) => bail!("network driver {d:?} is not supported: berth has the bridge driver"),
        }
        if req.ipv6 {
            bail!("--ipv6: IPv6 networks are not supported yet");
        }
        let mut mtu = 0u32;
        let mut bridge_name = None;
        for (k, v) in &req.options {
            match k.as_str() {
                "mtu" | "com.docker.network.driver.mtu" => {
                    mtu = v
                        .parse()
                        .ok()
                        .filter(|m| (68..=65535).contains(m))
                        .with_context(|| format!("invalid mtu {v:?}: expected a number from 68 to 65535"))?;
                }
                BRIDGE_NAME => {
                    if v.is_empty()
                        || v.len() > 15
                        || !v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                        || v == "."
                        || v == ".."
                    {
                        bail!(
                            "invalid {BRIDGE_NAME} {v:?}: an interface name of 1 to 15 letters, digits, '_', '.' or '-'"
                        );
                    }
                    bridge_name = Some(v.clone());
                }
                MASQUERADE => {
                    if v != "true" && v != "false" {
                        bail!("invalid {MASQUERADE} {v:?}: expected true or false");
                    }
                }
                _ => bail!(
                    "unknown network option {k:?}: berth's bridge driver knows mtu (com.docker.network.driver.mtu), {BRIDGE_NAME} and {MASQUERADE}"
                ),
            }
        }
        let tx = Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate)?;
        if tx.query_row("SELECT 1 FROM networks WHERE name = ?1", [&req.name], |_| Ok(())).optional()?.is_some() {
            return Err(in_use(1, format!("network with name {} already exists", req.name)));
        }
        let existing: Vec<Network> = {
            let mut st = tx.prepare(&format!("SELECT {NET_COLUMNS} FROM networks"))?;
            st.query_map([], net_row)?.collect::<rusqlite::Result<_>>()?
        };
        let subnet = match &req.subnet {
            Some(s) => {
                let s: Subnet = s.parse()?;
                if s.prefix > 30 {
                    bail!("invalid subnet {s}: it leaves no room for containers (use /30 or larger)");
                }
                if let Some(o) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    bail!("invalid subnet {s}: it overlaps with network {} ({})", o.name, o.subnet);
                }
                s
            }
            None => {
                let used: Vec<Subnet> = existing.iter().map(|n| n.subnet).collect();
                ipam::free_subnet(&used).with_context(|| {
                    format!("no free subnet left in berth's pool {}: give one with --subnet", ipam::POOL)
                })?
            }
        };
        let gateway = match &req.gateway {
            Some(g) => {
                let g: Ipv4Addr = g.parse().with_context(|| format!("invalid gateway {g:?}: not an IPv4 address"))?;
                if !subnet.is_host(g) {
                    bail!("invalid gateway {g}: it is not a host address of the subnet {subnet}");
                }
                g
            }
            None => subnet.first_host(),
        };
        let ip_range = match &req.ip_range {
            Some(r) => {
                let r: Subnet = r.parse()?;
                if !subnet.covers(&r) {
                    bail!("invalid ip range {r}: it is not inside the subnet {subnet}");
                }
                Some(r)
            }
            None => None,
        };
        let id = names::new_id();
        let bridge = match bridge_name {
            Some(b) => {
                if let Some(o) = existing.iter().find(|n| n.bridge == b) {
                    bail!("bridge name {b} is already used by network {}", o.name);
                }
                // An interface of someone else's must not become a berth bridge.
                let c = std::ffi::CString::new(b.as_str())?;
                // SAFETY: a lookup by a NUL-terminated name, in our network namespace.
                if unsafe { libc::if_nametoindex(c.as_ptr()) } != 0 {
                    bail!("bridge name {b}: an interface of that name already exists");
                }
                b
            }
            None => format!("br-{}", &id[..12]),
        };
        tx.execute(
            &format!("INSERT INTO networks ({NET_COLUMNS}) VALUES (?1, ?2, 'bridge', ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11)"),
            params![
                id,
                req.name,
                bridge,
                subnet.to_string(),
                gateway.to_string(),
                ip_range.map(|r| r.to_string()).unwrap_or_default(),
                req.internal as i64,
                mtu,
                serde_json::to_string(&req.labels)?,
                serde_json::to_string(&req.options)?,
                db::now_nanos()
            ],
        )?;
        tx.commit()?;
        crate::events::emit(&self.runroot, "network", "create", &id, &[("name", &req.name), ("type", "bridge")]);
        self.network(&id)
    }

    /// `berth network rm`: refused for the default network and for networks with containers.
    pub fn remove_network(&self, key: &str) -> Result<String> {
        let n = self.network(key)?;
        if n.is_default() {
            return Err(in_use(1, format!("{} is a pre-defined network and cannot be removed", n.name)));
        }
        let tx = Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate)?;
        let users: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT c.name FROM endpoints e JOIN containers c ON c.id = e.container WHERE e.network = ?1 ORDER BY c.name",
            )?;
            st.query_map([&n.id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        if !users.is_empty() {
            return Err(in_use(
                1,
                format!(
                    "error while removing network: network {} has containers attached ({}): remove them or disconnect them first",
                    n.name,
                    users.join(", ")
                ),
            ));
        }
        tx.execute("DELETE FROM networks WHERE id = ?1", [&n.id])?;
        tx.commit()?;
        // Its bridge (ports of dead containers' namespaces may still hang on it for a moment:
        // deleting the bridge releases them) and its firewall rules.
        let _lock = self.network_lock()?;
        let _ = netlink::remove_bridge(&n.bridge);
        let had_rules = self.net_dir(&n.id).join("up").exists();
        let _ = fs::remove_dir_all(self.net_dir(&n.id));
        if had_rules {
            self.sync_firewall()?;
        }
        crate::events::emit(&self.runroot, "network", "destroy", &n.id, &[("name", &n.name), ("type", "bridge")]);
        Ok(n.name)
    }

    /// `berth network prune`: removes the user-defined networks no container uses.
    pub fn prune_networks(&self) -> Result<Vec<String>> {
        let mut gone = Vec::new();
        for n in self.networks()? {
            if !n.is_default() && self.endpoints_of_network(&n.id)?.is_empty() && self.remove_network(&n.id).is_ok() {
                gone.push(n.name);
            }
        }
        Ok(gone)
    }

    pub fn endpoints_of_network(&self, network: &str) -> Result<Vec<Endpoint>> {
        let mut st = self.db.prepare(&format!("SELECT {EP_COLUMNS} FROM endpoints WHERE network = ?1 ORDER BY ip"))?;
        Ok(st.query_map([network], ep_row)?.collect::<rusqlite::Result<_>>()?)
    }

    /// A container's endpoints with their networks, eth0 first.
    pub fn endpoints_of_container(&self, container: &str) -> Result<Vec<(Endpoint, Network)>> {
        let mut st = self.db.prepare(&format!("SELECT {EP_COLUMNS} FROM endpoints WHERE container = ?1"))?;
        let eps: Vec<Endpoint> = st.query_map([container], ep_row)?.collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for e in eps {
            let n = self.network(&e.network)?;
            out.push((e, n));
        }
        out.sort_by_key(|(e, _)| e.ifname.trim_start_matches("eth").parse::<u32>().unwrap_or(u32::MAX));
        Ok(out)
    }

    /// The endpoint that carries a container's default route and published ports: its first
    /// one on a network with a way out (a first `--internal` network has none), else its first.
    pub fn primary(eps: &[(Endpoint, Network)]) -> Option<&(Endpoint, Network)> {
        eps.iter().find(|(_, n)| !n.internal).or(eps.first())
    }

    /// The ports a container has bound now.
    pub fn published_ports(&self, container: &str) -> Result<Vec<Published>> {
        let mut st = self.db.prepare(
            "SELECT proto, host_ip, host_port, container_port FROM ports WHERE container = ?1 ORDER BY container_port, proto, host_port",
        )?;
        let rows = st.query_map([container], |r| {
            Ok(Published {
                proto: r.get(0)?,
                host_ip: r.get::<_, String>(1)?.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                host_port: r.get::<_, i64>(2)? as u16,
                container_port: r.get::<_, i64>(3)? as u16,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Leases addresses for a new container (or a `network connect`): one transaction, so
    /// concurrent creates never get the same address.
    pub(crate) fn add_endpoints(&self, container: &str, reqs: &[NetRequest]) -> Result<()> {
        let tx = Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate)?;
        let mut names: BTreeSet<String> = {
            let mut st = tx.prepare("SELECT ifname FROM endpoints WHERE container = ?1")?;
            st.query_map([container], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        for req in reqs {
            // The lowest free ethN: a disconnect can leave a gap.
            let ifname = (0..).map(|i| format!("eth{i}")).find(|n| !names.contains(n)).unwrap_or_default();
            add_endpoint(&tx, container, req, &ifname)?;
            names.insert(ifname);
        }
        tx.commit()?;
        Ok(())
    }

    /// `berth network connect`: a lease, and the interface now if the container runs.
    pub fn connect(&self, network: &str, container: &str, req: NetRequest) -> Result<()> {
        let c = self.container(container)?;
        let n = self.network(network)?;
        if !uses_endpoints(&c.config.network) {
            bail!("container {} uses network mode {}: it cannot be connected to networks", c.name, c.config.network);
        }
        if self.endpoints_of_container(&c.id)?.iter().any(|(_, x)| x.id == n.id) {
            return Err(in_use(1, format!("container {} is already connected to network {}", c.name, n.name)));
        }
        self.add_endpoints(&c.id, &[NetRequest { name: n.id.clone(), ..req }])?;
        if c.state == "running" || c.state == "paused" {
            let up = self.endpoint_up(&c, c.pid, Some(&n.id)).map(|_| ());
            if let Err(e) = up {
                self.drop_endpoint(&c, &n);
                return Err(e);
            }
            crate::monitor::rewrite_etc(self, &c)?;
        }
        crate::events::emit(&self.runroot, "network", "connect", &n.id, &[("container", &c.id), ("name", &n.name)]);
        Ok(())
    }

    /// `berth network disconnect`.
    pub fn disconnect(&self, network: &str, container: &str) -> Result<()> {
        let c = self.container(container)?;
        let n = self.network(network)?;
        if !self.endpoints_of_container(&c.id)?.iter().any(|(_, x)| x.id == n.id) {
            return Err(in_use(1, format!("container {} is not connected to network {}", c.name, n.name)));
        }
        self.drop_endpoint(&c, &n);
        crate::monitor::rewrite_etc(self, &c)?;
        crate::events::emit(&self.runroot, "network", "disconnect", &n.id, &[("container", &c.id), ("name", &n.name)]);
        Ok(())
    }

    fn drop_endpoint(&self, c: &ContainerRow, n: &Network) {
        let _ = self.endpoints_down(c, Some(&n.id));
        let _ = self.db.execute("DELETE FROM endpoints WHERE container = ?1 AND network = ?2", params![c.id, n.id]);
    }

    /// The monitor, after the runtime made the container (its namespaces exist) and before it
    /// starts: interfaces, published ports (the returned sockets hold the host ports), firewall
    /// and name resolution. On error the caller calls [`Engine::network_down`].
    pub(crate) fn network_up(&self, c: &ContainerRow, pid: i32) -> Result<Vec<OwnedFd>> {
        self.endpoint_up(c, pid, None)
    }

    fn endpoint_up(&self, c: &ContainerRow, pid: i32, only: Option<&str>) -> Result<Vec<OwnedFd>> {
        let eps = self.endpoints_of_container(&c.id)?;
        let ns = fs::File::open(format!("/proc/{pid}/ns/net")).context("opening the container's network namespace")?;
        let _lock = self.network_lock()?;
        let mut firewall_changed = false;
        let primary = Self::primary(&eps).map(|(ep, _)| ep.ifname.clone());
        for (ep, net) in &eps {
            if only.is_some_and(|o| o != net.id) || ep.active {
                continue;
            }
            firewall_changed |= self.bridge_up(net, false)?;
            let veth = host_veth(&c.id, &net.id);
            let a = Attachment {
                bridge: &net.bridge,
                gateway: net.gateway,
                prefix: net.subnet.prefix,
                mtu: net.mtu,
                host_veth: &veth,
                ifname: &ep.ifname,
                ip: ep.ip,
                mac: ep.mac,
                default_route: primary.as_deref() == Some(ep.ifname.as_str()) && !net.internal,
            };
            let mut attached = netlink::attach(ns.as_fd(), &a);
            if attached.is_err() {
                // A restart can find its old veth still being destroyed with the old namespace,
                // and someone may have deleted the bridge: clear both and try once more.
                let _ = netlink::detach(&veth);
                firewall_changed |= self.bridge_up(net, true)?;
                attached = netlink::attach(ns.as_fd(), &a);
            }
            attached.with_context(|| format!("connecting to network {}", net.name))?;
            self.db.execute(
                "UPDATE endpoints SET active = 1 WHERE container = ?1 AND network = ?2",
                params![c.id, net.id],
            )?;
        }
        let held = if only.is_none() { self.bind_ports(c, Self::primary(&eps))? } else { Vec::new() };
        if firewall_changed || !held.is_empty() {
            self.sync_firewall()?;
        }
        self.sync_dns_around(eps.iter().map(|(_, n)| n))?;
        Ok(held)
    }

    /// Makes a network's bridge (once per boot: a marker in the runroot remembers it). It and
    /// its firewall rules then stay, as Docker's, until the network is removed, so that a
    /// container's start and stop cost no bridge or firewall work. Returns whether the firewall
    /// needs rebuilding.
    fn bridge_up(&self, net: &Network, again: bool) -> Result<bool> {
        let marker = self.net_dir(&net.id).join("up");
        if !again && marker.exists() {
            return Ok(false);
        }
        netlink::ensure_bridge(&net.bridge, net.gateway, net.subnet.prefix, net.mtu, !net.internal)
            .with_context(|| format!("setting up the bridge {} of network {}", net.bridge, net.name))?;
        fs::create_dir_all(self.net_dir(&net.id))?;
        fs::write(&marker, &net.bridge)?;
        Ok(true)
    }

    /// Undoes [`Engine::network_up`]; safe to call when nothing or part of it was done, and
    /// again (crash repair). The ports' sockets are the caller's to close.
    pub(crate) fn network_down(&self, c: &ContainerRow) -> Result<()> {
        self.endpoints_down(c, None)
    }

    fn endpoints_down(&self, c: &ContainerRow, only: Option<&str>) -> Result<()> {
        let eps = self.endpoints_of_container(&c.id)?;
        let _lock = self.network_lock()?;
        for (ep, net) in &eps {
            if only.is_some_and(|o| o != net.id) {
                continue;
            }
            let veth = host_veth(&c.id, &net.id);
            if only.is_some() && ep.active {
                // A disconnect: the container lives on, so its interface must go now. After
                // an exit the kernel removes the pair with the namespace, without making us
                // wait for it (a deletion waits for an RCU grace period, 10-20 ms here).
                let _ = netlink::detach(&veth);
            }
            // Also for an endpoint never marked active (a start that failed or was killed
            // after its veth joined the bridge). Best effort: a stale entry names an interface
            // that is gone, and frames for it are dropped.
            let _ = berth_network::bypass::leave(&net.bridge, ep.mac, &veth);
            if !ep.active {
                continue;
            }
            self.db.execute(
                "UPDATE endpoints SET active = 0 WHERE container = ?1 AND network = ?2",
                params![c.id, net.id],
            )?;
        }
        if only.is_none() && self.db.execute("DELETE FROM ports WHERE container = ?1", [&c.id])? > 0 {
            self.sync_firewall()?;
        }
        self.sync_dns_around(eps.iter().filter(|(ep, _)| ep.active).map(|(_, n)| n))?;
        Ok(())
    }

    /// Binds every published host port (the sockets reserve them while the container runs)
    /// and records them.
    fn bind_ports(&self, c: &ContainerRow, primary: Option<&(Endpoint, Network)>) -> Result<Vec<OwnedFd>> {
        if c.config.ports.is_empty() {
            return Ok(Vec::new());
        }
        let Some((_, net)) = primary else {
            bail!("published ports need a bridge network; this container has network mode {}", c.config.network)
        };
        if net.internal {
            bail!("network {} is internal: ports of its containers cannot be published", net.name);
        }
        let mut held = Vec::new();
        for p in &c.config.ports {
            let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let candidates: Vec<u16> = if p.host_lo == 0 { vec![0] } else { (p.host_lo..=p.host_hi).collect() };
            let mut bound = None;
            let mut last_err = None;
            for port in candidates {
                let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
                let got: std::io::Result<(OwnedFd, u16)> = if p.proto == "udp" {
                    UdpSocket::bind(addr).and_then(|s| Ok((s.local_addr()?.port(), s))).map(|(n, s)| (s.into(), n))
                } else {
                    TcpListener::bind(addr).and_then(|s| Ok((s.local_addr()?.port(), s))).map(|(n, s)| (s.into(), n))
                };
                match got {
                    Ok(b) => {
                        bound = Some(b);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            let Some((fd, port)) = bound else {
                let want =
                    if p.host_lo == p.host_hi { p.host_lo.to_string() } else { format!("{}-{}", p.host_lo, p.host_hi) };
                if last_err.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::EADDRNOTAVAIL) {
                    return Err(in_use(
                        125,
                        format!(
                            "Bind for {ip}:{want} failed: cannot assign requested address ({ip} is not an address of this host)"
                        ),
                    ));
                }
                return Err(in_use(
                    125,
                    format!(
                        "Bind for {ip}:{want} failed: port is already allocated (another process or container uses it)"
                    ),
                ));
            };
            self.db.execute(
                "INSERT OR REPLACE INTO ports (container, proto, host_ip, host_port, container_port) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![c.id, p.proto, ip.to_string(), port, p.container_port],
            )?;
            held.push(fd);
        }
        Ok(held)
    }

    /// Rebuilds berth's nftables table from the active endpoints and the published ports.
    fn sync_firewall(&self) -> Result<()> {
        // The networks whose bridge was made since boot.
        let nets: Vec<Network> =
            self.networks()?.into_iter().filter(|n| self.net_dir(&n.id).join("up").exists()).collect();
        let rules: Vec<NetworkRules> = nets
            .iter()
            .map(|n| NetworkRules {
                bridge: n.bridge.clone(),
                subnet: n.subnet,
                gateway: n.gateway,
                internal: n.internal,
                masquerade: n.options.get(MASQUERADE).is_none_or(|v| v != "false"),
            })
            .collect();
        let ports: Vec<PortRule> = {
            let mut st = self.db.prepare(
                "SELECT p.proto, p.host_ip, p.host_port, p.container_port, e.ip, n.bridge FROM ports p
                 JOIN endpoints e ON e.container = p.container
                 JOIN networks n ON n.id = e.network
                 WHERE e.network = (
                     SELECT e2.network FROM endpoints e2 JOIN networks n2 ON n2.id = e2.network
                     WHERE e2.container = p.container
                     ORDER BY n2.internal, CAST(substr(e2.ifname, 4) AS INTEGER) LIMIT 1)",
            )?;
            let rows = st.query_map([], |r| {
                let host_ip: String = r.get(1)?;
                let ip: String = r.get(4)?;
                Ok(PortRule {
                    proto: if r.get::<_, String>(0)? == "udp" { Proto::Udp } else { Proto::Tcp },
                    host_ip: host_ip.parse().ok().filter(|a: &Ipv4Addr| !a.is_unspecified()),
                    host_port: r.get::<_, i64>(2)? as u16,
                    bridge: r.get(5)?,
                    container_ip: ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                    container_port: r.get::<_, i64>(3)? as u16,
                })
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        firewall::apply(&rules, &ports).context("updating berth's nftables table")
    }

    /// [`Engine::sync_dns`] of the user networks among `changed` and of those a member of one
    /// of them is on too: a container on several networks sees the names of all of them through
    /// each one's server, so a change on one network changes what those servers answer.
    fn sync_dns_around<'n>(&self, changed: impl Iterator<Item = &'n Network>) -> Result<()> {
        let ids: BTreeSet<String> = changed.filter(|n| n.dns).map(|n| n.id.clone()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut linked = ids.clone();
        let mut st = self.db.prepare(
            "SELECT DISTINCT other.network FROM endpoints mine
             JOIN endpoints other ON other.container = mine.container AND other.active = 1
             WHERE mine.network = ?1 AND mine.active = 1",
        )?;
        for id in &ids {
            for n in st.query_map([id], |r| r.get::<_, String>(0))? {
                linked.insert(n?);
            }
        }
        for net in self.networks()?.iter().filter(|n| n.dns && linked.contains(&n.id)) {
            self.sync_dns(net)?;
        }
        Ok(())
    }

    /// Writes a user network's name records and makes sure its DNS server runs while the
    /// network has active endpoints; stops the server when it has none. Each container on it
    /// also gets the names of its other user networks and its `--dns` servers, under its own
    /// address (see berth_network::dns::Records).
    fn sync_dns(&self, net: &Network) -> Result<()> {
        let dir = self.net_dir(&net.id);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let records = dir.join("records");
        let mut text = String::new();
        let mut st = self.db.prepare(
            "SELECT e.ip, c.name, c.id, e.aliases FROM endpoints e JOIN containers c ON c.id = e.container
             WHERE e.network = ?1 AND e.active = 1 ORDER BY e.ip",
        )?;
        let rows = st.query_map([&net.id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut members: Vec<(String, String)> = Vec::new();
        for row in rows {
            let (ip, name, id, aliases) = row?;
            let aliases: Vec<String> = serde_json::from_str(&aliases).unwrap_or_default();
            text.push_str(&format!("{ip} {name} {} {}\n", &id[..12], aliases.join(" ")));
            members.push((ip, id));
        }
        // What each member sees besides: the names of its other user networks.
        let mut st = self.db.prepare(
            "SELECT me.ip, o.ip, c.name, c.id, o.aliases FROM endpoints me
             JOIN endpoints other ON other.container = me.container AND other.network != me.network AND other.active = 1
             JOIN networks n ON n.id = other.network AND n.dns = 1
             JOIN endpoints o ON o.network = other.network AND o.active = 1
             JOIN containers c ON c.id = o.container
             WHERE me.network = ?1 AND me.active = 1 ORDER BY me.ip, o.ip",
        )?;
        let rows = st.query_map([&net.id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        for row in rows {
            let (me, ip, name, id, aliases) = row?;
            let aliases: Vec<String> = serde_json::from_str(&aliases).unwrap_or_default();
            text.push_str(&format!("@{me} {ip} {name} {} {}\n", &id[..12], aliases.join(" ")));
        }
        // And its --dns servers, which its other names go to; an internal network's server
        // answers its own names only (its containers have no way out, not even by DNS).
        for (ip, id) in members.iter().filter(|_| !net.internal) {
            if let Ok(c) = self.container(id)
                && !c.config.dns.is_empty()
            {
                text.push_str(&format!("@{ip} dns {}\n", c.config.dns.join(" ")));
            }
        }
        if text.is_empty() {
            let _ = fs::remove_file(&records);
            stop_dns(&dir);
            return Ok(());
        }
        let tmp = dir.join("records.tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &records)?;
        if FileLock::try_take(&dir.join("dns.lock"))?.is_some() {
            // Nobody serves this network yet. The server daemonizes; we wait for its parent.
            let exe = std::env::current_exe().context("finding the berth binary for the DNS server")?;
            let mut cmd = Command::new(exe);
            cmd.arg("network-dns").arg("--listen").arg(SocketAddrV4::new(net.gateway, 53).to_string());
            if net.internal {
                cmd.arg("--internal");
            }
            let st = cmd
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .output()
                .context("starting the network's DNS server")?;
            if !st.status.success() {
                bail!(
                    "the DNS server of network {} did not start: {}",
                    net.name,
                    String::from_utf8_lossy(&st.stderr).trim()
                );
            }
        }
        Ok(())
    }
}

/// A network by name, full id or unambiguous id prefix (as Docker takes them everywhere).
fn find_network(db: &rusqlite::Connection, key: &str) -> Result<Option<Network>> {
    let q = format!("SELECT {NET_COLUMNS} FROM networks WHERE name = ?1 OR id = ?1");
    if let Some(n) = db.query_row(&q, [key], net_row).optional()? {
        return Ok(Some(n));
    }
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let q = format!("SELECT {NET_COLUMNS} FROM networks WHERE id LIKE ?1 || '%'");
    let mut st = db.prepare(&q)?;
    let found: Vec<Network> = st.query_map([key], net_row)?.collect::<rusqlite::Result<_>>()?;
    if found.len() > 1 {
        bail!("network {key} is ambiguous ({} matches): give more of its id", found.len());
    }
    Ok(found.into_iter().next())
}

fn add_endpoint(tx: &Transaction, container: &str, req: &NetRequest, ifname: &str) -> Result<()> {
    let n = find_network(tx, &req.name)?.ok_or_else(|| in_use(125, format!("network {} not found", req.name)))?;
    if n.is_default() && (req.ip.is_some() || !req.aliases.is_empty()) {
        bail!("user specified IP address and network aliases are supported on user defined networks only");
    }
    let taken: BTreeSet<Ipv4Addr> = {
        let mut st = tx.prepare("SELECT ip FROM endpoints WHERE network = ?1")?;
        let ips: Vec<String> = st.query_map([&n.id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        ips.iter().filter_map(|i| i.parse().ok()).chain([n.gateway]).collect()
    };
    let ip = match req.ip {
        Some(ip) => {
            if !n.subnet.is_host(ip) {
                bail!("invalid address {ip}: it does not belong to the subnet {} of network {}", n.subnet, n.name);
            }
            if taken.contains(&ip) {
                return Err(in_use(125, format!("address {ip} is already in use on network {}", n.name)));
            }
            ip
        }
        None => ipam::allocate(&n.subnet, n.ip_range.as_ref(), &taken)
            .ok_or_else(|| in_use(125, format!("no available IP addresses on network {} ({})", n.name, n.subnet)))?,
    };
    let mac = match &req.mac {
        Some(m) => ipam::parse_mac(m)?,
        None => ipam::mac_for(ip),
    };
    tx.execute(
        &format!("INSERT INTO endpoints ({EP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)"),
        params![container, n.id, ip.to_string(), ipam::format_mac(&mac), serde_json::to_string(&req.aliases)?, ifname],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            in_use(125, format!("container is already connected to network {}", n.name))
        }
        e => e.into(),
    })?;
    Ok(())
}

/// Stops a network's DNS server (its records are gone) and waits until it has let go.
fn stop_dns(dir: &Path) {
    let lock = dir.join("dns.lock");
    if let Ok(pid) = fs::read_to_string(dir.join("dns.pid"))
        && let Ok(pid) = pid.trim().parse::<i32>()
        && pid > 1
        && FileLock::try_take(&lock).ok().flatten().is_none()
    {
        // SAFETY: kill(2) of the process that holds the network's DNS lock.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..200 {
            if FileLock::try_take(&lock).ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The body of `berth network-dns --listen ADDR [--internal] DIR`: detaches, takes the network's DNS lock
/// (another server has it: nothing to do) and serves the records in DIR until they are removed.
pub fn serve_dns(listen: SocketAddr, dir: &Path, internal: bool) -> i32 {
    // The lock first, so that it is held (by the child, through the shared open file) by the
    // time the caller, who waits for this parent only, goes on.
    let Ok(Some(_lock)) = FileLock::try_take(&dir.join("dns.lock")) else { return 0 };
    // Bound before the fork, so that a port taken or an address missing fails the caller
    // (the child inherits the sockets).
    let upstreams = if internal {
        Vec::new() // names that are not the network's get REFUSED
    } else {
        berth_network::dns::upstreams(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    };
    let server = match berth_network::dns::Server::bind(listen, &dir.join("records"), upstreams) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth network-dns: listening on {listen}: {e}");
            return 1;
        }
    };
    // SAFETY: fork in a single-threaded process; the parent exits at once.
    match unsafe { libc::fork() } {
        0 => {}
        n if n > 0 => return 0,
        _ => return 1,
    }
    // SAFETY: setsid in the new child; its stdio (the caller's pipes) let go, so that the
    // caller's read of them ends with the parent.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            libc::close(null);
        }
    }
    let pid_file = dir.join("dns.pid");
    let _ = fs::write(&pid_file, std::process::id().to_string());
    let served = server.run();
    let _ = fs::remove_file(&pid_file);
    if served.is_ok() { 0 } else { 1 }
}
