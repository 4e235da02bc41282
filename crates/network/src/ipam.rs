//! Address management: IPv4 subnets, the lowest free address in a range, MAC addresses derived
//! from IPs (Docker's 02:42 prefix), and free subnets for networks made without `--subnet`.
//! The leases themselves live in the engine's database; this is the arithmetic.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// An IPv4 network in CIDR form, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix }
    }

    fn bits(&self) -> (u32, u32) {
        let base = u32::from(self.addr);
        (base, base | !mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.addr) & mask(p) == u32::from(other.addr) & mask(p)
    }

    /// Whether all of `other` lies inside this subnet.
    pub fn covers(&self, other: &Subnet) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// The first usable host address, Docker's default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        let (lo, hi) = self.bits();
        Ipv4Addr::from(if hi - lo >= 2 { lo + 1 } else { lo })
    }

    /// Whether `ip` is a host address of the subnet (not its network or broadcast address,
    /// except in a /31 or /32).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && self.hosts().contains(&u32::from(ip))
    }

    /// Host addresses in order: without the network and broadcast addresses (except /31, /32).
    fn hosts(&self) -> std::ops::RangeInclusive<u32> {
        let (lo, hi) = self.bits();
        if hi - lo >= 2 { lo + 1..=hi - 1 } else { lo..=hi }
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = anyhow::Error;

    /// `10.1.2.0/24`. A subnet with host bits set is refused, as Docker does, naming the right one.
    fn from_str(s: &str) -> Result<Subnet> {
        let (ip, prefix) = s
            .split_once('/')
            .with_context(|| format!("invalid subnet {s:?}: expected CIDR form such as 10.1.2.0/24"))?;
        if ip.contains(':') {
            bail!("invalid subnet {s:?}: IPv6 networks are not supported yet");
        }
        let ip: Ipv4Addr =
            ip.parse().with_context(|| format!("invalid subnet {s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .with_context(|| format!("invalid subnet {s:?}: the prefix length must be 0 to 32"))?;
        let net = Subnet::new(ip, prefix);
        if net.addr != ip {
            bail!("invalid subnet {s}: it should be {net}");
        }
        Ok(net)
    }
}

/// The lowest host address of `range` (or of `subnet` when there is none) that is not in
/// `taken`. `taken` holds the gateway and every address leased so far.
pub fn allocate(subnet: &Subnet, range: Option<&Subnet>, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let sub = subnet.hosts();
    // A range's every address counts (Docker's --ip-range), within the subnet's hosts.
    let (lo, hi) = range.map(|r| r.bits()).unwrap_or((*sub.start(), *sub.end()));
    (lo..=hi).filter(|a| sub.contains(a)).map(Ipv4Addr::from).find(|a| !taken.contains(a))
}

/// Docker's MAC for an address: 02:42 followed by the four bytes of the IP (locally administered).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || anyhow::anyhow!("invalid MAC address {s:?}: expected six hex bytes such as 02:42:ac:11:00:02");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 == 1 {
        bail!("invalid MAC address {s}: it is a multicast address");
    }
    Ok(m)
}

/// The pool that networks made without `--subnet` take /24s from (the default `bridge` network
/// has 10.77.0.0/16, outside it). Both keep clear of Docker's (172.17.0.0/16 and up) and
/// podman's (10.88.0.0/16, 10.89.x.0/24) defaults, so the engines can share a host.
pub const POOL: &str = "10.78.0.0/16";

/// The first /24 of the pool that overlaps none of `used`.
pub fn free_subnet(used: &[Subnet]) -> Option<Subnet> {
    let pool: Subnet = POOL.parse().expect("pool");
    let (lo, hi) = pool.bits();
    (lo..=hi).step_by(256).map(|a| Subnet::new(Ipv4Addr::from(a), 24)).find(|s| !used.iter().any(|u| u.overlaps(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses_subnets() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!((s.addr, s.prefix, s.to_string()), (ip("10.88.0.0"), 16, "10.88.0.0/16".into()));
        let e = "10.88.0.1/16".parse::<Subnet>().unwrap_err().to_string();
        assert!(e.contains("it should be 10.88.0.0/16"), "{e}");
        for bad in ["10.88.0.0", "10.88.0.0/33", "10.88.0/16", "banana/8", "fd00::/64"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        assert!("fd00::/64".parse::<Subnet>().unwrap_err().to_string().contains("IPv6"));
    }

    #[test]
    fn overlap_and_containment() {
        let a: Subnet = "10.88.0.0/16".parse().unwrap();
        let b: Subnet = "10.88.5.0/24".parse().unwrap();
        let c: Subnet = "10.89.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        assert!(a.covers(&b) && !b.covers(&a));
        assert!(a.contains(ip("10.88.255.255")) && !a.contains(ip("10.89.0.1")));
        assert_eq!(a.first_host(), ip("10.88.0.1"));
    }

    #[test]
    fn allocates_lowest_free_skipping_taken_and_edges() {
        let s: Subnet = "10.0.0.0/29".parse().unwrap();
        let mut taken = BTreeSet::from([ip("10.0.0.1")]);
        let mut got = Vec::new();
        while let Some(a) = allocate(&s, None, &taken) {
            taken.insert(a);
            got.push(a.to_string());
        }
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        let range: Subnet = "10.0.0.4/30".parse().unwrap();
        let mut taken = BTreeSet::from([ip("10.0.0.1"), ip("10.0.0.5")]);
        let mut got = Vec::new();
        while let Some(a) = allocate(&s, Some(&range), &taken) {
            taken.insert(a);
            got.push(a.to_string());
        }
        // The range's every address, but not the subnet's broadcast (.7).
        assert_eq!(got, ["10.0.0.4", "10.0.0.6"]);
    }

    #[test]
    fn macs() {
        let m = mac_for(ip("172.17.0.2"));
        assert_eq!(format_mac(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:AC:11:00:02").unwrap(), m);
        assert!(parse_mac("01:00:5e:00:00:01").unwrap_err().to_string().contains("multicast"));
        assert!(parse_mac("02:42:ac:11:00").is_err() && parse_mac("zz:42:ac:11:00:02").is_err());
    }

    #[test]
    fn free_subnets_avoid_used_ones() {
        let used: Vec<Subnet> = vec!["10.78.0.0/24".parse().unwrap(), "10.78.1.0/25".parse().unwrap()];
        assert_eq!(free_subnet(&used).unwrap().to_string(), "10.78.2.0/24");
        let all: Vec<Subnet> = vec!["10.78.0.0/16".parse().unwrap()];
        assert_eq!(free_subnet(&all), None);
    }
}
