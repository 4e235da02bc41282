//! The nftables table berth owns, `ip berth` (IPv4 only for now). berth never touches another
//! table. The engine keeps the state (networks, published ports) in its database and, under its
//! own lock, passes all of it to [`apply`] whenever it changes; `apply` replaces the whole table
//! in one `nft -f -` transaction, so there is no per-rule bookkeeping and repairing after a
//! crash is just another `apply`.
//!
//! What the table does (Docker's and netavark's semantics):
//! - forward (filter): established/related accepted first; an internal network's bridge talks
//!   only to itself; published ports (DNAT'd flows) are reachable from every other network;
//!   otherwise traffic between two different berth bridges is dropped; the rest is accepted,
//!   so this table never blocks what other tables allow.
//! - postrouting (nat): a non-internal network's traffic leaving its subnet is masqueraded;
//!   DNAT'd traffic from 127.0.0.0/8 leaving through a berth bridge is masqueraded (the engine
//!   sets route_localnet=1 on the bridge), and so is DNAT'd traffic that stays inside one
//!   subnet (hairpin: a container reaching its own network's published port via the gateway).
//! - raw prerouting: packets between two containers of one network (neither end the gateway)
//!   are not tracked; bridged packets only reach IP hooks when br_netfilter is loaded.
//! - prerouting and output (nat): packets to a local address (or to the given host address)
//!   on a published port are DNAT'd to the container, one rule per port.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use crate::ipam::Subnet;

/// The one table berth owns: `table ip berth`.
pub const TABLE: &str = "berth";

/// A network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: Subnet,
    /// The host's address on the bridge.
    pub gateway: Ipv4Addr,
    /// No traffic to or from anything but the network itself, no outbound NAT.
    pub internal: bool,
    /// Outbound traffic leaves with the host's address (Docker's
    /// `com.docker.network.bridge.enable_ip_masquerade`, on by default).
    pub masquerade: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port: host_ip:host_port/proto -> container_ip:container_port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub proto: Proto,
    /// None (or 0.0.0.0) = every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    /// The bridge of the network the container is reached on (must be one of the networks).
    pub bridge: String,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl PortRule {
    fn host_addr(&self) -> Option<Ipv4Addr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }
}

/// The nft script that makes the table hold exactly this state (pure). With no networks and no
/// ports it only deletes the table, if there is one. Refuses what cannot be written safely or
/// would not mean what it says: bad interface names, unknown bridges, ports 0, a container
/// address outside its network, two rules for the same host port.
pub fn script(networks: &[NetworkRules], ports: &[PortRule]) -> Result<String> {
    validate(networks, ports)?;
    // Create-if-missing then delete: the next `table` starts from nothing, in the same
    // transaction, whether or not the table existed.
    let mut s = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n");
    if networks.is_empty() {
        return Ok(s);
    }
    s += &format!("table ip {TABLE} {{\n");

    let bridges: Vec<String> = networks.iter().map(|n| format!("\"{}\"", n.bridge)).collect();
    s += "\tset bridges {\n\t\ttype ifname\n";
    let _ = writeln!(s, "\t\telements = {{ {} }}", bridges.join(", "));
    s += "\t}\n\n";

    // raw prerouting: traffic between two containers of one network is bridged and needs no
    // connection tracking (no NAT, nothing stateful in this table applies to it). The kernel
    // only shows bridged packets to IP hooks when br_netfilter is loaded (Docker, podman and
    // Kubernetes load it, machine-wide); then conntrack cost a tenth of the bridge's
    // throughput. Packets to or from the gateway stay tracked: hairpin NAT and DNS use it.
    let mut raw = Vec::new();
    for n in networks {
        let (b, net, gw) = (&n.bridge, n.subnet, n.gateway);
        raw.push(format!(
            r#"iifname "{b}" ip saddr {net} ip daddr {net} ip saddr != {gw} ip daddr != {gw} notrack comment "{b} ({net}): container to container""#
        ));
    }
    chain(&mut s, "raw", "type filter hook prerouting priority raw; policy accept;", &raw);

    // forward: a filter chain that only ever drops what berth must isolate.
    let mut fwd = vec![r#"ct state established,related accept comment "replies and related packets""#.to_string()];
    for n in networks.iter().filter(|n| n.internal) {
        let (b, net) = (&n.bridge, n.subnet);
        fwd.push(format!(r#"iifname "{b}" oifname != "{b}" drop comment "{b} ({net}): internal, nothing leaves""#));
        fwd.push(format!(r#"oifname "{b}" iifname != "{b}" drop comment "{b} ({net}): internal, nothing enters""#));
    }
    if !ports.is_empty() {
        fwd.push(r#"ct status dnat accept comment "published ports are reachable from every network""#.into());
    }
    for n in networks.iter().filter(|n| !n.internal) {
        let (b, net) = (&n.bridge, n.subnet);
        fwd.push(format!(
            r#"iifname "{b}" oifname != "{b}" oifname @bridges drop comment "{b} ({net}): isolated from other berth networks""#
        ));
    }
    chain(&mut s, "forward", "type filter hook forward priority filter; policy accept;", &fwd);

    // input: a network's DNS server (on its gateway, port 53) answers its own network only;
    // from another network it would hand out the names isolation keeps apart.
    let mut input = Vec::new();
    for n in networks {
        let (b, gw) = (&n.bridge, n.gateway);
        input.push(format!(
            r#"ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 iifname != {{ "{b}", "lo" }} drop comment "{b}: its DNS server answers its own network only""#
        ));
    }
    chain(&mut s, "input", "type filter hook input priority filter; policy accept;", &input);

    let mut post = Vec::new();
    for n in networks.iter().filter(|n| !n.internal && n.masquerade) {
        let (b, net) = (&n.bridge, n.subnet);
        post.push(format!(r#"ip saddr {net} ip daddr != {net} masquerade comment "{b} ({net}): outbound NAT""#));
    }
    if !ports.is_empty() {
        for n in networks {
            let (b, net) = (&n.bridge, n.subnet);
            post.push(format!(
                r#"ct status dnat ip saddr {net} ip daddr {net} masquerade comment "{b} ({net}): hairpin to published ports""#
            ));
        }
        post.push(
            r#"ct status dnat ip saddr 127.0.0.0/8 oifname @bridges masquerade comment "published ports reached from the host's loopback""#
                .into(),
        );
    }
    if !post.is_empty() {
        chain(&mut s, "postrouting", "type nat hook postrouting priority srcnat; policy accept;", &post);
    }

    if !ports.is_empty() {
        // Both hooks jump to one chain, so each port is one rule.
        let jump = r#"fib daddr type local jump published comment "packets to this host""#.to_string();
        chain(
            &mut s,
            "prerouting",
            "type nat hook prerouting priority dstnat; policy accept;",
            std::slice::from_ref(&jump),
        );
        chain(&mut s, "output", "type nat hook output priority -100; policy accept;", &[jump]);
        let rules: Vec<String> = ports
            .iter()
            .map(|p| {
                let (proto, hp, cip, cp, b) = (p.proto, p.host_port, p.container_ip, p.container_port, &p.bridge);
                match p.host_addr() {
                    Some(h) => format!(
                        r#"ip daddr {h} {proto} dport {hp} dnat to {cip}:{cp} comment "{b}: {h}:{hp}/{proto} -> {cip}:{cp}""#
                    ),
                    None => format!(r#"{proto} dport {hp} dnat to {cip}:{cp} comment "{b}: *:{hp}/{proto} -> {cip}:{cp}""#),
                }
            })
            .collect();
        chain(&mut s, "published", "", &rules);
    }
    s.truncate(s.trim_end().len());
    s += "\n}\n";
    Ok(s)
}

fn chain(s: &mut String, name: &str, head: &str, rules: &[String]) {
    let _ = writeln!(s, "\tchain {name} {{");
    if !head.is_empty() {
        let _ = writeln!(s, "\t\t{head}");
    }
    for r in rules {
        let _ = writeln!(s, "\t\t{r}");
    }
    s.push_str("\t}\n\n");
}

fn validate(networks: &[NetworkRules], ports: &[PortRule]) -> Result<()> {
    let mut by_bridge = HashMap::new();
    for n in networks {
        check_ifname(&n.bridge)?;
        if by_bridge.insert(n.bridge.as_str(), n).is_some() {
            bail!("two networks use the bridge {}", n.bridge);
        }
    }
    let mut taken: HashMap<(Proto, u16), Vec<Option<Ipv4Addr>>> = HashMap::new();
    for p in ports {
        let what = format!(
            "published port {}:{}/{}",
            p.host_addr().map_or("*".into(), |h| h.to_string()),
            p.host_port,
            p.proto
        );
        if p.host_port == 0 || p.container_port == 0 {
            bail!("{what} -> {}:{}: port 0 cannot be published", p.container_ip, p.container_port);
        }
        let Some(n) = by_bridge.get(p.bridge.as_str()) else {
            bail!("{what}: its bridge {:?} is not one of berth's networks", p.bridge);
        };
        if !n.subnet.contains(p.container_ip) {
            bail!("{what}: the container address {} is not in {} ({})", p.container_ip, n.subnet, n.bridge);
        }
        let addrs = taken.entry((p.proto, p.host_port)).or_default();
        let h = p.host_addr();
        if addrs.iter().any(|a| a.is_none() || h.is_none() || *a == h) {
            bail!("{what} is published twice (the port is already allocated)");
        }
        addrs.push(h);
    }
    Ok(())
}

/// Linux interface names that are also safe inside an nft string: 1 to 15 of [A-Za-z0-9_.-].
fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("invalid bridge name {name:?}: expected 1 to 15 letters, digits, '_', '.' or '-'");
    }
    Ok(())
}

/// Makes the table hold exactly this state, in one transaction (`nft -f -`). With no networks
/// and no ports the table is deleted if it exists. Works in the caller's network namespace.
pub fn apply(networks: &[NetworkRules], ports: &[PortRule]) -> Result<()> {
    let script = script(networks, ports)?;
    let out = nft(&["-f", "-"], Some(&script))?;
    if !out.status.success() {
        bail!("could not update berth's nftables table (ip {TABLE}): nft -f failed ({}): {}", out.status, stderr(&out));
    }
    Ok(())
}

/// The table as nft lists it now, None when there is none.
pub fn current() -> Result<Option<String>> {
    let out = nft(&["list", "table", "ip", TABLE], None)?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let err = stderr(&out);
    if err.contains("No such file or directory") {
        return Ok(None);
    }
    bail!("could not list berth's nftables table (ip {TABLE}): nft failed ({}): {err}", out.status)
}

/// `nft` from PATH, else /usr/sbin/nft.
fn nft_path() -> Result<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .filter(|d| d.is_absolute())
        .map(|d| d.join("nft"));
    for p in in_path.chain([PathBuf::from("/usr/sbin/nft")]) {
        if is_executable(&p) {
            return Ok(p);
        }
    }
    bail!(
        "nftables is needed for container networking (NAT, published ports, isolation): the `nft` command was not \
         found in PATH or at /usr/sbin/nft; install the nftables package"
    )
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs nft with `input` on its stdin, in the C locale so that its messages can be matched.
fn nft(args: &[&str], input: Option<&str>) -> Result<Output> {
    let path = nft_path()?;
    let mut child = Command::new(&path)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not run {} (nftables is needed for container networking)", path.display()))?;
    // Written from a thread so that a large script cannot deadlock against nft's output.
    let writer = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(text)) => {
            let text = text.to_owned();
            Some(std::thread::spawn(move || stdin.write_all(text.as_bytes())))
        }
        _ => None,
    };
    let out = child.wait_with_output().with_context(|| format!("could not run {}", path.display()))?;
    if let Some(w) = writer {
        // A write error (nft exited early) shows up as nft's own failure below; only report it
        // when nft claims success.
        let res = w.join().unwrap_or_else(|_| Err(std::io::Error::other("stdin writer panicked")));
        if out.status.success() {
            res.context("could not pass the script to nft")?;
        }
    }
    Ok(out)
}

/// nft's stderr, trimmed and cut to a readable length.
fn stderr(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr);
    let s = s.trim();
    match s.char_indices().nth(4000) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_testkit::netns::NetNs;

    fn net(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
        let subnet: Subnet = subnet.parse().unwrap();
        NetworkRules { bridge: bridge.into(), subnet, gateway: subnet.first_host(), internal, masquerade: true }
    }

    fn port(proto: Proto, host_ip: Option<&str>, host_port: u16, bridge: &str, cip: &str, cport: u16) -> PortRule {
        PortRule {
            proto,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port,
            bridge: bridge.into(),
            container_ip: cip.parse().unwrap(),
            container_port: cport,
        }
    }

    /// `nft -c` (check only) in a throwaway namespace: the kernel validates the whole
    /// transaction and then aborts it.
    fn nft_check(ns: &NetNs, script: &str) -> std::result::Result<(), String> {
        let mut c = ns
            .command(nft_path().unwrap())
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    fn ruleset(ns: &NetNs) -> String {
        let out = ns.command(nft_path().unwrap()).args(["list", "ruleset"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn has(s: &str, line: &str) {
        assert!(s.lines().any(|l| l.trim() == line), "missing line\n  {line}\nin\n{s}");
    }

    #[test]
    fn empty_state_only_deletes() {
        assert_eq!(script(&[], &[]).unwrap(), "table ip berth {}\ndelete table ip berth\n");
    }

    #[test]
    fn a_network_without_masquerade_has_no_outbound_nat() {
        let mut n = net("br-x", "10.89.0.0/24", false);
        n.masquerade = false;
        let s = script(&[n, net("berth0", "10.88.0.0/16", false)], &[]).unwrap();
        assert!(!s.contains("br-x (10.89.0.0/24): outbound NAT"), "{s}");
        has(
            &s,
            r#"ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade comment "berth0 (10.88.0.0/16): outbound NAT""#,
        );
    }

    #[test]
    fn one_network_no_ports() {
        let s = script(&[net("berth0", "10.88.0.0/16", false)], &[]).unwrap();
        assert!(s.starts_with("table ip berth {}\ndelete table ip berth\ntable ip berth {\n"), "{s}");
        has(&s, r#"elements = { "berth0" }"#);
        has(&s, "type filter hook forward priority filter; policy accept;");
        has(&s, r#"ct state established,related accept comment "replies and related packets""#);
        has(
            &s,
            r#"iifname "berth0" oifname != "berth0" oifname @bridges drop comment "berth0 (10.88.0.0/16): isolated from other berth networks""#,
        );
        has(&s, "type nat hook postrouting priority srcnat; policy accept;");
        has(
            &s,
            r#"ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade comment "berth0 (10.88.0.0/16): outbound NAT""#,
        );
        has(&s, "type filter hook input priority filter; policy accept;");
        has(
            &s,
            r#"ip daddr 10.88.0.1 meta l4proto { tcp, udp } th dport 53 iifname != { "berth0", "lo" } drop comment "berth0: its DNS server answers its own network only""#,
        );
        has(&s, "type filter hook prerouting priority raw; policy accept;");
        has(
            &s,
            r#"iifname "berth0" ip saddr 10.88.0.0/16 ip daddr 10.88.0.0/16 ip saddr != 10.88.0.1 ip daddr != 10.88.0.1 notrack comment "berth0 (10.88.0.0/16): container to container""#,
        );
        // No ports: no DNAT hooks at all, nothing about hairpin or loopback.
        for absent in ["nat hook prerouting", "nat hook output", "published", "ct status dnat", "127.0.0.0/8"] {
            assert!(!s.contains(absent), "{absent} in\n{s}");
        }
        assert!(s.ends_with("\t}\n}\n"), "{s:?}");
    }

    #[test]
    fn ports_and_internal_networks() {
        let nets = [net("br-a", "10.89.0.0/24", false), net("br-i", "10.89.1.0/24", true)];
        let ports = [
            port(Proto::Tcp, None, 8080, "br-a", "10.89.0.2", 80),
            port(Proto::Udp, Some("127.0.0.1"), 5353, "br-a", "10.89.0.2", 53),
            port(Proto::Tcp, Some("0.0.0.0"), 9000, "br-a", "10.89.0.3", 9000),
        ];
        let s = script(&nets, &ports).unwrap();
        has(&s, r#"elements = { "br-a", "br-i" }"#);
        has(&s, r#"iifname "br-i" oifname != "br-i" drop comment "br-i (10.89.1.0/24): internal, nothing leaves""#);
        has(&s, r#"oifname "br-i" iifname != "br-i" drop comment "br-i (10.89.1.0/24): internal, nothing enters""#);
        has(&s, r#"ct status dnat accept comment "published ports are reachable from every network""#);
        // The internal network gets no outbound NAT and no bridge-to-bridge rule of its own.
        assert!(!s.contains("ip saddr 10.89.1.0/24 ip daddr != 10.89.1.0/24"), "{s}");
        assert!(!s.contains(r#"iifname "br-i" oifname != "br-i" oifname @bridges"#), "{s}");
        has(
            &s,
            r#"ct status dnat ip saddr 10.89.0.0/24 ip daddr 10.89.0.0/24 masquerade comment "br-a (10.89.0.0/24): hairpin to published ports""#,
        );
        has(
            &s,
            r#"ct status dnat ip saddr 127.0.0.0/8 oifname @bridges masquerade comment "published ports reached from the host's loopback""#,
        );
        has(&s, "type nat hook prerouting priority dstnat; policy accept;");
        has(&s, "type nat hook output priority -100; policy accept;");
        has(&s, r#"fib daddr type local jump published comment "packets to this host""#);
        has(&s, r#"tcp dport 8080 dnat to 10.89.0.2:80 comment "br-a: *:8080/tcp -> 10.89.0.2:80""#);
        has(
            &s,
            r#"ip daddr 127.0.0.1 udp dport 5353 dnat to 10.89.0.2:53 comment "br-a: 127.0.0.1:5353/udp -> 10.89.0.2:53""#,
        );
        has(&s, r#"tcp dport 9000 dnat to 10.89.0.3:9000 comment "br-a: *:9000/tcp -> 10.89.0.3:9000""#);
        // Established traffic is accepted before any drop; published ports before bridge isolation.
        let at = |needle: &str| s.find(needle).unwrap();
        assert!(at("ct state established") < at("internal, nothing leaves"));
        assert!(at("ct status dnat accept") < at("oifname @bridges drop"));
        assert!(at("internal, nothing enters") < at("ct status dnat accept"));
    }

    #[test]
    fn size_is_linear_in_ports() {
        let nets = [net("berth0", "10.88.0.0/16", false)];
        let ports = |n: u16| -> Vec<PortRule> {
            (0..n).map(|i| port(Proto::Tcp, None, 10000 + i, "berth0", "10.88.0.2", 80)).collect()
        };
        let (small, big) = (script(&nets, &ports(100)).unwrap(), script(&nets, &ports(1000)).unwrap());
        assert_eq!(big.lines().count() - small.lines().count(), 900);
    }

    #[test]
    fn refuses_bad_states() {
        let nets = [net("berth0", "10.88.0.0/16", false)];
        let ok = port(Proto::Tcp, None, 8080, "berth0", "10.88.0.2", 80);
        let bad_names = ["", "a\"b", "br 0", "sixteen-chars-xx", "a}b", "a;b", "..", "b\nc", "brü"];
        for name in bad_names {
            let e = script(&[net(name, "10.1.0.0/24", false)], &[]).unwrap_err().to_string();
            assert!(e.contains("invalid bridge name"), "{name:?}: {e}");
        }
        let cases: Vec<(Vec<NetworkRules>, Vec<PortRule>, &str)> = vec![
            (vec![nets[0].clone(), net("berth0", "10.1.0.0/24", false)], vec![], "two networks use the bridge"),
            (nets.to_vec(), vec![port(Proto::Tcp, None, 0, "berth0", "10.88.0.2", 80)], "port 0"),
            (nets.to_vec(), vec![port(Proto::Tcp, None, 80, "berth0", "10.88.0.2", 0)], "port 0"),
            (nets.to_vec(), vec![port(Proto::Tcp, None, 80, "other", "10.88.0.2", 80)], "not one of berth's networks"),
            (nets.to_vec(), vec![port(Proto::Tcp, None, 80, "berth0", "10.1.0.2", 80)], "is not in 10.88.0.0/16"),
            (vec![], vec![ok.clone()], "not one of berth's networks"),
            (nets.to_vec(), vec![ok.clone(), ok.clone()], "published twice"),
            (
                nets.to_vec(),
                vec![ok.clone(), port(Proto::Tcp, Some("127.0.0.1"), 8080, "berth0", "10.88.0.3", 80)],
                "published twice",
            ),
            (
                nets.to_vec(),
                vec![
                    port(Proto::Tcp, Some("127.0.0.1"), 8080, "berth0", "10.88.0.3", 80),
                    port(Proto::Tcp, Some("0.0.0.0"), 8080, "berth0", "10.88.0.3", 80),
                ],
                "published twice",
            ),
        ];
        for (n, p, want) in cases {
            let e = script(&n, &p).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Same port on different protocols or different host addresses is fine.
        let fine = [
            ok.clone(),
            port(Proto::Udp, None, 8080, "berth0", "10.88.0.2", 80),
            port(Proto::Tcp, Some("127.0.0.1"), 9090, "berth0", "10.88.0.2", 80),
            port(Proto::Tcp, Some("127.0.0.2"), 9090, "berth0", "10.88.0.3", 80),
        ];
        script(&nets, &fine).unwrap();
    }

    /// Every shape of script is accepted by nft and the kernel. Check mode leaves nothing
    /// behind (asserted); it runs in a throwaway namespace all the same.
    #[test]
    fn nft_accepts_the_scripts() {
        if berth_testkit::need_root() {
            return;
        }
        let ns = NetNs::new().unwrap();
        let nets = [
            net("berth0", "10.88.0.0/16", false),
            net("br-x.1", "10.89.3.0/24", true),
            net("br_y-2", "192.168.7.128/25", false),
            net("b", "10.90.0.4/32", false),
        ];
        let ports = [
            port(Proto::Tcp, None, 8080, "berth0", "10.88.0.2", 80),
            port(Proto::Udp, None, 8080, "berth0", "10.88.0.2", 80),
            port(Proto::Tcp, Some("127.0.0.1"), 1, "br_y-2", "192.168.7.129", 65535),
            port(Proto::Udp, Some("192.0.2.7"), 65535, "br-x.1", "10.89.3.254", 1),
        ];
        let many: Vec<PortRule> =
            (1..=2000).map(|i| port(Proto::Tcp, None, 20000 + i, "berth0", "10.88.0.2", i)).collect();
        let states: Vec<(&[NetworkRules], &[PortRule])> = vec![
            (&[], &[]),
            (&nets[..1], &[]),
            (&nets[1..2], &[]),
            (&nets, &[]),
            (&nets, &ports),
            (&nets[1..2], &ports[3..]),
            (&nets[..1], &many),
        ];
        for (n, p) in states {
            let s = script(n, p).unwrap();
            if let Err(e) = nft_check(&ns, &s) {
                panic!("nft -c refused\n{s}\n{e}");
            }
        }
        assert_eq!(ruleset(&ns).trim(), "", "nft -c left something behind");
        // A script that is wrong for the kernel is reported, not applied.
        assert!(nft_check(&ns, "table ip berth { chain c { ip saddr 10.0.0.0/33 drop } }").is_err());
    }
}
