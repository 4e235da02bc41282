//! `network create|ls|inspect|rm|prune|connect|disconnect`, `port`, the network flags of
//! `run`/`create`, and the network parts of `ps` and `inspect`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use berth_engine::networks::{NetRequest, Network, NetworkCreate, parse_publish, uses_endpoints};
use berth_engine::{ContainerConfig, ContainerRow, Engine};
use berth_network::ipam;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::template::{print_inspected, print_listing};

/// The network flags of `run` and `create`.
#[derive(Args, Clone, Default)]
pub struct NetArgs {
    /// bridge (default), a network's name, none, host, container:NAME or ns:PATH; repeat to
    /// join several networks.
    #[arg(long, alias = "net")]
    network: Vec<String>,
    /// The container's IPv4 address on its (first) user-defined network.
    #[arg(long)]
    ip: Option<String>,
    #[arg(long)]
    mac_address: Option<String>,
    /// IPv6 address: refused clearly (berth's networks are IPv4 only for now).
    #[arg(long, hide = true)]
    ip6: Option<String>,
    /// Link-local addresses: refused clearly, as --ip6.
    #[arg(long, hide = true)]
    link_local_ip: Vec<String>,
    /// Another name the container has on its (first) user-defined network.
    #[arg(long, alias = "net-alias")]
    network_alias: Vec<String>,
    /// Publish a container's port: [ip:][hostPort:]containerPort[/tcp|udp].
    #[arg(short, long)]
    publish: Vec<String>,
    /// Publish every exposed port to a free host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Expose a port (or range) without publishing it.
    #[arg(long)]
    expose: Vec<String>,
}

impl NetArgs {
    pub fn apply(&self, c: &mut ContainerConfig) -> Result<()> {
        if self.ip6.is_some() || !self.link_local_ip.is_empty() {
            bail!("--ip6 and --link-local-ip: IPv6 is not supported yet (berth's networks are IPv4 only)");
        }
        let first = self.network.first().cloned().unwrap_or_else(|| "bridge".into());
        c.network = first.clone();
        if uses_endpoints(&first) {
            let ip = self
                .ip
                .as_deref()
                .map(|i| i.parse().with_context(|| format!("invalid --ip {i:?}: not an IPv4 address")))
                .transpose()?;
            if let Some(m) = &self.mac_address {
                ipam::parse_mac(m)?;
            }
            c.networks = vec![NetRequest {
                name: first,
                ip,
                mac: self.mac_address.clone(),
                aliases: self.network_alias.clone(),
            }];
            c.networks
                .extend(self.network.iter().skip(1).map(|n| NetRequest { name: n.clone(), ..Default::default() }));
        } else {
            if self.ip.is_some() || self.mac_address.is_some() || !self.network_alias.is_empty() {
                bail!("--ip, --mac-address and --network-alias need a bridge network, not network mode {first}");
            }
            if self.network.len() > 1 {
                bail!("network mode {first} cannot be combined with other networks");
            }
        }
        for p in &self.publish {
            c.ports.extend(parse_publish(p)?);
        }
        c.publish_all = self.publish_all;
        for e in &self.expose {
            let (ports, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
            let bad = || anyhow::anyhow!("invalid --expose {e:?}: expected PORT[-END][/tcp|udp]");
            let (lo, hi): (u16, u16) = (lo.parse().map_err(|_| bad())?, hi.parse().map_err(|_| bad())?);
            if lo == 0 || hi < lo {
                return Err(bad());
            }
            c.exposed.extend((lo..=hi).map(|p| format!("{p}/{proto}")));
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        ip_range: Option<String>,
        /// No route out of the network: its containers reach only each other.
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        ipv6: bool,
        #[arg(long = "label")]
        label: Vec<String>,
        /// Driver options: mtu=N.
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        #[arg(long)]
        format: Option<String>,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show networks in detail.
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all networks no container uses.
    Prune {
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network.
    Connect {
        #[arg(long)]
        ip: Option<String>,
        /// Refused clearly: IPv6 is not supported yet.
        #[arg(long, hide = true)]
        ip6: Option<String>,
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

pub fn network(e: &Engine, cmd: NetworkCmd) -> Result<i32> {
    match cmd {
        NetworkCmd::Create { driver, subnet, gateway, ip_range, internal, ipv6, label, opt, name } => {
            let kv = |v: &[String], what: &str| -> Result<BTreeMap<String, String>> {
                v.iter()
                    .map(|s| match s.split_once('=') {
                        Some((k, v)) => Ok((k.to_string(), v.to_string())),
                        None if what == "label" => Ok((s.clone(), String::new())),
                        None => bail!("invalid {what} {s:?}: expected key=value"),
                    })
                    .collect()
            };
            let n = e.create_network(&NetworkCreate {
                name,
                driver: Some(driver),
                subnet,
                gateway,
                ip_range,
                internal,
                ipv6,
                labels: kv(&label, "label")?,
                options: kv(&opt, "option")?,
            })?;
            println!("{}", n.id);
            Ok(0)
        }
        NetworkCmd::Ls { quiet, filter, format, no_trunc } => {
            let rows = e.list_networks(&filter)?;
            if quiet {
                for n in &rows {
                    println!("{}", if no_trunc { &n.id[..] } else { &n.id[..12] });
                }
                return Ok(0);
            }
            let fmt = format.unwrap_or_else(|| "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}".into());
            let value = |n: &Network| {
                json!({
                    "ID": if no_trunc { n.id.clone() } else { n.id[..12].to_string() },
                    "Name": n.name,
                    "Driver": n.driver,
                    "Scope": "local",
                    "Internal": n.internal,
                    "IPv6": false,
                    "Labels": n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    "CreatedAt": berth_engine::describe::rfc3339(n.created),
                })
            };
            let values: Vec<Value> = rows.iter().map(value).collect();
            print_listing(&values, &fmt, &|f| match f {
                "ID" => "NETWORK ID".into(),
                other => other.to_ascii_uppercase(),
            });
            Ok(0)
        }
        NetworkCmd::Inspect { format, networks } => {
            let mut out = Vec::new();
            for n in &networks {
                out.push(e.inspect_network(&e.network(n)?)?);
            }
            print_inspected(&out, format.as_deref())?;
            Ok(0)
        }
        NetworkCmd::Rm { networks } => {
            let mut code = 0;
            for n in &networks {
                match e.remove_network(n) {
                    Ok(_) => println!("{n}"),
                    Err(err) if networks.len() == 1 => return Err(err),
                    Err(err) => {
                        eprintln!("Error: {err:#}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkCmd::Prune { force } => {
            if !crate::confirmed(
                force,
                "WARNING! This will remove all custom networks not used by at least one container.",
            ) {
                return Ok(0);
            }
            let gone = e.prune_networks()?;
            if !gone.is_empty() {
                println!("Deleted Networks:");
                gone.iter().for_each(|n| println!("{n}"));
            }
            Ok(0)
        }
        NetworkCmd::Connect { ip, ip6, alias, network, container } => {
            if ip6.is_some() {
                bail!("--ip6: IPv6 is not supported yet (berth's networks are IPv4 only)");
            }
            let ip = ip.as_deref().map(|i| i.parse().with_context(|| format!("invalid --ip {i:?}"))).transpose()?;
            e.connect(&network, &container, NetRequest { name: network.clone(), ip, mac: None, aliases: alias })?;
            Ok(0)
        }
        NetworkCmd::Disconnect { force: _, network, container } => {
            e.disconnect(&network, &container)?;
            Ok(0)
        }
    }
}

/// The PORTS column of `ps`: `0.0.0.0:8080->80/tcp, 443/tcp`; consecutive ports as Docker
/// shows them, `0.0.0.0:8000-8002->80-82/tcp` and `7000-7001/udp`.
pub fn ports_text(e: &Engine, c: &ContainerRow) -> String {
    let bound = e.published_ports(&c.id).unwrap_or_default();
    let mut pubs: Vec<(String, String, u16, u16)> =
        bound.iter().map(|p| (p.host_ip.to_string(), p.proto.clone(), p.container_port, p.host_port)).collect();
    pubs.sort();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < pubs.len() {
        let (ip, proto, c0, h0) = &pubs[i];
        let mut j = i;
        while j + 1 < pubs.len() {
            let (ip2, proto2, c2, h2) = &pubs[j + 1];
            let (_, _, c1, h1) = &pubs[j];
            if ip2 != ip || proto2 != proto || *c2 != c1 + 1 || *h2 != h1 + 1 {
                break;
            }
            j += 1;
        }
        let (_, _, c1, h1) = &pubs[j];
        parts.push(if j == i {
            format!("{ip}:{h0}->{c0}/{proto}")
        } else {
            format!("{ip}:{h0}-{h1}->{c0}-{c1}/{proto}")
        });
        i = j + 1;
    }
    // Exposed but not published: by protocol, consecutive numbers as ranges.
    let mut exposed: Vec<(String, u16)> = c
        .config
        .exposed
        .iter()
        .filter_map(|x| x.split_once('/').map(|(n, p)| (p.to_string(), n)).or(Some(("tcp".to_string(), x.as_str()))))
        .filter_map(|(p, n)| n.parse().ok().map(|n| (p, n)))
        .filter(|(p, n)| !bound.iter().any(|b| b.container_port == *n && b.proto == *p))
        .collect();
    exposed.sort();
    let mut k = 0;
    while k < exposed.len() {
        let mut l = k;
        while l + 1 < exposed.len() && exposed[l + 1].0 == exposed[k].0 && exposed[l + 1].1 == exposed[l].1 + 1 {
            l += 1;
        }
        let (p, a) = &exposed[k];
        parts.push(if l == k { format!("{a}/{p}") } else { format!("{a}-{}/{p}", exposed[l].1) });
        k = l + 1;
    }
    parts.join(", ")
}

/// The networks a container is on, for `ps`.
pub fn networks_text(e: &Engine, c: &ContainerRow) -> String {
    match e.endpoints_of_container(&c.id) {
        Ok(eps) if !eps.is_empty() => eps.iter().map(|(_, n)| n.name.clone()).collect::<Vec<_>>().join(","),
        _ => c.config.network.clone(),
    }
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub fn port(e: &Engine, container: &str, which: Option<&str>) -> Result<i32> {
    let c = e.container(container)?;
    let want = which.map(|w| if w.contains('/') { w.to_string() } else { format!("{w}/tcp") });
    let mut found = false;
    for p in e.published_ports(&c.id)? {
        let key = format!("{}/{}", p.container_port, p.proto);
        match &want {
            Some(w) if *w == key => println!("{}:{}", p.host_ip, p.host_port),
            Some(_) => continue,
            None => println!("{key} -> {}:{}", p.host_ip, p.host_port),
        }
        found = true;
    }
    if !found && let Some(w) = want {
        return Err(
            berth_engine::ExitError { code: 1, msg: format!("No public port '{w}' published for {}", c.name) }.into()
        );
    }
    Ok(0)
}
