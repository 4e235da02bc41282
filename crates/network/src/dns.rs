//! The small DNS server each user-defined network gets (what aardvark-dns is for podman).
//!
//! One server runs per network, on the gateway address, port 53, in the host's network
//! namespace. It answers the names of the network's containers from a records file that the
//! engine rewrites as containers come and go, and forwards every other query to the host's
//! nameservers. It stops by itself once the records file is removed.
//!
//! The DNS wire format is our own code: only what a stub resolver's queries need (one question,
//! A/AAAA/PTR answers, errors). Every packet is untrusted: lengths are checked before each read
//! and compression pointers may only point backwards, so a hostile packet ends in FORMERR or is
//! dropped, never in a panic or a loop.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

/// The search domain of container names: `web.dns.berth` is `web`.
pub const DOMAIN: &str = "dns.berth";

/// TTL of local answers: zero, so that a restarted container's new address is seen at once.
const LOCAL_TTL: u32 = 0;
/// How long one upstream gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded UDP queries in flight (one thread each); past this the client gets SERVFAIL.
const MAX_FORWARDS: usize = 64;
/// Open TCP connections (one thread each); past this new ones are closed at once.
const MAX_TCP_CONNS: usize = 64;
/// A TCP connection with no new query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Time allowed to receive the rest of a TCP message once its first byte has arrived.
const TCP_MESSAGE: Duration = Duration::from_secs(5);
/// The main loop and connection threads look at the stop flag / records file this often.
const TICK: Duration = Duration::from_secs(1);
/// Reply size for UDP clients: we do not speak EDNS, so the classic limit holds.
const UDP_LIMIT: usize = 512;
/// Records files larger than this are read only up to here.
const MAX_RECORDS_FILE: u64 = 16 << 20;
/// Longest container name we keep, so that `name.dns.berth` is still a valid DNS name.
const MAX_NAME: usize = 253 - DOMAIN.len() - 1;

// Record types and classes.
const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

// Response codes.
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;
const REFUSED: u8 = 5;

// Header flag bits (second 16-bit word).
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

const HEADER_LEN: usize = 12;

// ---------------------------------------------------------------------------------------------
// Records

/// Names -> IPv4 addresses, read from the records file the engine writes.
///
/// One line per container endpoint: `IP NAME [NAME...]` (the container's name, its aliases, its
/// 12-character short id). `#` starts a comment; blank lines, lines whose first field is not an
/// IPv4 address and names that are not valid DNS names are skipped.
///
/// Lines that begin with `@QUERIER` are for the container at that address only: `@Q IP NAME...`
/// the names of its other networks (a container resolves the names of every network it is on),
/// `@Q dns ADDR...` the servers its other names go to (`--dns`; port 53 unless given).
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Lowercased name -> addresses in file order, without duplicates.
    by_name: HashMap<String, Vec<Ipv4Addr>>,
    /// Address -> the first name given for it (PTR answers).
    by_addr: HashMap<Ipv4Addr, String>,
    /// What one querier sees besides: querier address -> its view.
    views: HashMap<Ipv4Addr, View>,
}

/// A querier's own names and upstream servers.
#[derive(Debug, Clone, Default)]
pub struct View {
    records: Records,
    upstreams: Vec<SocketAddr>,
}

impl Records {
    pub fn parse(text: &str) -> Records {
        let mut records = Records::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next() else { continue };
            if let Some(q) = first.strip_prefix('@') {
                let Ok(q) = q.parse::<Ipv4Addr>() else { continue };
                let view = records.views.entry(q).or_default();
                let mut rest = fields.clone();
                if rest.next() == Some("dns") {
                    view.upstreams.extend(rest.filter_map(|a| {
                        a.parse::<SocketAddr>()
                            .ok()
                            .or_else(|| a.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
                    }));
                } else if let Some(Ok(ip)) = fields.next().map(str::parse::<Ipv4Addr>) {
                    view.records.add(ip, fields);
                }
                continue;
            }
            let Ok(ip) = first.parse::<Ipv4Addr>() else { continue };
            records.add(ip, fields);
        }
        records
    }

    fn add<'a>(&mut self, ip: Ipv4Addr, names: impl Iterator<Item = &'a str>) {
        for name in names {
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            if !valid_name(&name) {
                continue;
            }
            self.by_addr.entry(ip).or_insert_with(|| name.clone());
            let addrs = self.by_name.entry(name).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }

    /// [`Records::lookup`] as the container at `from` sees it: its network's names, then those
    /// of its other networks.
    pub fn lookup_from(&self, name: &str, from: Option<Ipv4Addr>) -> Vec<Ipv4Addr> {
        let own = self.lookup(name);
        match from.and_then(|f| self.views.get(&f)) {
            Some(v) if own.is_empty() => v.records.lookup(name),
            _ => own,
        }
    }

    /// [`Records::reverse`] as the container at `from` sees it.
    pub fn reverse_from(&self, ip: Ipv4Addr, from: Option<Ipv4Addr>) -> Option<&str> {
        self.reverse(ip).or_else(|| from.and_then(|f| self.views.get(&f)).and_then(|v| v.records.reverse(ip)))
    }

    /// The servers the container at `from` asked for (`--dns`), if any.
    pub fn upstreams_for(&self, from: Option<Ipv4Addr>) -> Option<&[SocketAddr]> {
        from.and_then(|f| self.views.get(&f)).map(|v| v.upstreams.as_slice()).filter(|u| !u.is_empty())
    }

    /// The addresses of `name`: case-insensitive, a trailing dot ignored, and `name.dns.berth`
    /// is the same as `name`. Empty when unknown.
    pub fn lookup(&self, name: &str) -> Vec<Ipv4Addr> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if let Some(addrs) = self.by_name.get(&name) {
            return addrs.clone();
        }
        match strip_domain(&name).and_then(|short| self.by_name.get(short)) {
            Some(addrs) => addrs.clone(),
            None => Vec::new(),
        }
    }

    /// The first name given for `ip` (lowercased, without the domain), for PTR answers.
    pub fn reverse(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_addr.get(&ip).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// `web.dns.berth` -> `web`; None for other names and for the domain itself.
fn strip_domain(name: &str) -> Option<&str> {
    name.strip_suffix(DOMAIN)?.strip_suffix('.').filter(|short| !short.is_empty())
}

/// A name we are willing to answer for: dot-separated labels of 1 to 63 letters, digits, `-` or
/// `_`, short enough to take the domain suffix.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The nameservers of a resolv.conf text, as socket addresses on port 53, in file order and
/// without duplicates. IPv6 addresses are kept; a link-local one with a zone (`fe80::1%eth0`)
/// gets the interface's index as scope id, or is skipped if there is no such interface.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in resolv_conf.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        if fields.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = fields.next().and_then(nameserver_addr) else { continue };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

fn nameserver_addr(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    let (ip, zone) = text.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let scope = match zone.parse::<u32>() {
        Ok(index) => index,
        Err(_) => {
            let zone = std::ffi::CString::new(zone).ok()?;
            // SAFETY: a valid NUL-terminated string; returns 0 when there is no such interface.
            let index = unsafe { libc::if_nametoindex(zone.as_ptr()) };
            if index == 0 {
                return None;
            }
            index
        }
    };
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)))
}

// ---------------------------------------------------------------------------------------------
// Wire format

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireError {
    /// Ends before the field being read.
    Truncated,
    /// A label longer than 63, an unknown label type, a name over 255 bytes, or a compression
    /// pointer that does not point backwards.
    BadName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    id: u16,
    flags: u16,
    qdcount: u16,
    ancount: u16,
    nscount: u16,
    arcount: u16,
}

impl Header {
    fn parse(packet: &[u8]) -> Result<Header, WireError> {
        if packet.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let word = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
        Ok(Header {
            id: word(0),
            flags: word(2),
            qdcount: word(4),
            ancount: word(6),
            nscount: word(8),
            arcount: word(10),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        for word in [self.id, self.flags, self.qdcount, self.ancount, self.nscount, self.arcount] {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }

    fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    fn opcode(&self) -> u16 {
        (self.flags >> 11) & 0xf
    }

    fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }

    fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
}

/// A domain name as uncompressed wire bytes (length-prefixed labels and the final zero), in the
/// case the sender used, so that it can be echoed exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// Reads the name at `start`, following compression pointers. Returns the name and the
    /// offset just past it (past the first pointer if there was one).
    fn parse(packet: &[u8], start: usize) -> Result<(Name, usize), WireError> {
        let mut wire = Vec::new();
        let mut pos = start;
        // A pointer must point before the start of the run of labels that contains it, so each
        // jump goes strictly backwards and the walk ends.
        let mut run_start = start;
        let mut end = None;
        loop {
            let len = *packet.get(pos).ok_or(WireError::Truncated)? as usize;
            match len & 0xc0 {
                0x00 => {
                    let label = packet.get(pos + 1..pos + 1 + len).ok_or(WireError::Truncated)?;
                    wire.push(len as u8);
                    wire.extend_from_slice(label);
                    if wire.len() > 255 {
                        return Err(WireError::BadName);
                    }
                    pos += 1 + len;
                    if len == 0 {
                        return Ok((Name { wire }, end.unwrap_or(pos)));
                    }
                }
                0xc0 => {
                    let low = *packet.get(pos + 1).ok_or(WireError::Truncated)? as usize;
                    let target = (len & 0x3f) << 8 | low;
                    if target >= run_start {
                        return Err(WireError::BadName);
                    }
                    end.get_or_insert(pos + 2);
                    run_start = target;
                    pos = target;
                }
                // 0x40 and 0x80: extended and reserved label types (a label length over 63).
                _ => return Err(WireError::BadName),
            }
        }
    }

    /// Encodes a dotted text name (no escapes; trailing dot optional).
    fn from_text(text: &str) -> Option<Name> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let mut wire = Vec::with_capacity(text.len() + 2);
        if !text.is_empty() {
            for label in text.split('.') {
                if label.is_empty() || label.len() > 63 {
                    return None;
                }
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        wire.push(0);
        (wire.len() <= 255).then_some(Name { wire })
    }

    fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.wire[..];
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let len = len as usize;
            if len == 0 || tail.len() < len {
                return None;
            }
            let (label, tail) = tail.split_at(len);
            rest = tail;
            Some(label)
        })
    }

    /// Lowercased dotted text without the final dot (the root is ""), or None when a label
    /// holds a byte that no name in our records can have (a dot, a space, binary...): such a
    /// name is never local.
    fn to_text(&self) -> Option<String> {
        let mut text = String::with_capacity(self.wire.len());
        for label in self.labels() {
            if !label.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            if !text.is_empty() {
                text.push('.');
            }
            text.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
        }
        Some(text)
    }

    fn eq_ignore_case(&self, other: &Name) -> bool {
        // Length octets are at most 63, below every ASCII letter, so lowercasing the whole wire
        // form only touches label bytes.
        self.wire.eq_ignore_ascii_case(&other.wire)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Question {
    name: Name,
    qtype: u16,
    qclass: u16,
}

impl Question {
    fn parse(packet: &[u8], start: usize) -> Result<(Question, usize), WireError> {
        let (name, pos) = Name::parse(packet, start)?;
        let fixed = packet.get(pos..pos + 4).ok_or(WireError::Truncated)?;
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
        Ok((Question { name, qtype, qclass }, pos + 4))
    }
}

/// A query we may answer: the header and its single question.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    header: Header,
    question: Question,
}

/// What to do with an incoming packet, decided from its bytes alone.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Not worth a reply: too short to carry an id, or itself a response.
    Drop,
    /// Reply with this error code and no question (the question could not be read).
    Error(Header, u8),
    Query(Query),
}

fn parse_query(packet: &[u8]) -> Parsed {
    let Ok(header) = Header::parse(packet) else { return Parsed::Drop };
    if header.is_response() {
        // Answering responses would let two servers bounce packets between them forever.
        return Parsed::Drop;
    }
    if header.opcode() != 0 {
        return Parsed::Error(header, NOTIMP);
    }
    if header.qdcount != 1 {
        return Parsed::Error(header, FORMERR);
    }
    match Question::parse(packet, HEADER_LEN) {
        Ok((question, _)) => Parsed::Query(Query { header, question }),
        Err(_) => Parsed::Error(header, FORMERR),
    }
}

/// The answer data of a local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    /// A records of the question's name.
    Addrs(Vec<Ipv4Addr>),
    /// A PTR record pointing at this name.
    Ptr(Name),
    /// The name exists, but has no records of the asked type.
    NoData,
    /// A name under our domain that is no container.
    NxDomain,
}

/// The local answer to `question`, or None when it is not ours and goes upstream.
fn answer_locally(records: &Records, from: Option<Ipv4Addr>, question: &Question) -> Option<Local> {
    let name = question.name.to_text()?;
    let class_in = question.qclass == CLASS_IN || question.qclass == CLASS_ANY;
    let wants = |qtype: u16| class_in && (question.qtype == qtype || question.qtype == TYPE_ANY);

    let addrs = records.lookup_from(&name, from);
    if !addrs.is_empty() {
        // Other types get an empty NOERROR: sending them upstream would leak container names
        // and make clients take an upstream answer for a local name.
        return Some(if wants(TYPE_A) { Local::Addrs(addrs) } else { Local::NoData });
    }
    if name == DOMAIN {
        return Some(Local::NoData);
    }
    if strip_domain(&name).is_some() {
        return Some(Local::NxDomain);
    }
    let target = reverse_ipv4(&name).and_then(|ip| records.reverse_from(ip, from));
    if let Some(target) = target {
        if !wants(TYPE_PTR) {
            return Some(Local::NoData);
        }
        // Valid names are short enough for the suffix (MAX_NAME), so this always encodes.
        return Name::from_text(&format!("{target}.{DOMAIN}")).map(Local::Ptr);
    }
    None
}

/// `4.3.2.1.in-addr.arpa` -> 1.2.3.4.
fn reverse_ipv4(name: &str) -> Option<Ipv4Addr> {
    let digits = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = digits.split('.');
    for octet in octets.iter_mut().rev() {
        let part = parts.next()?;
        // No leading zeros, no sign: the one spelling a reverse name has.
        let digits_only = part.bytes().all(|b| b.is_ascii_digit());
        if !digits_only || part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// Flags of our replies: QR, the query's RD, RA (we recurse by forwarding), and the rcode.
fn reply_flags(query: &Header, authoritative: bool, rcode: u8) -> u16 {
    let mut flags = FLAG_QR | FLAG_RA | (query.flags & FLAG_RD) | u16::from(rcode & 0xf);
    if authoritative {
        flags |= FLAG_AA;
    }
    flags
}

/// A reply with only a header: for queries whose question could not be read.
fn error_reply(query: &Header, rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    // Keep the opcode so that a NOTIMP says which one.
    let flags = reply_flags(query, false, rcode) | (query.flags & 0x7800);
    Header { id: query.id, flags, qdcount: 0, ancount: 0, nscount: 0, arcount: 0 }.write(&mut out);
    out
}

/// A reply that echoes the question, with `local`'s records (if any) as answers. With a size
/// limit, answers that do not fit are left out and TC is set.
fn build_reply(query: &Query, rcode: u8, local: Option<&Local>, limit: usize) -> Vec<u8> {
    let authoritative = local.is_some();
    let rcode = match local {
        Some(Local::NxDomain) => NXDOMAIN,
        _ => rcode,
    };
    let mut out = Vec::with_capacity(UDP_LIMIT);
    let mut header = Header {
        id: query.header.id,
        flags: reply_flags(&query.header, authoritative, rcode),
        qdcount: 1,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    };
    header.write(&mut out);
    let q = &query.question;
    out.extend_from_slice(&q.name.wire);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());

    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    match local {
        Some(Local::Addrs(addrs)) => answers.extend(addrs.iter().map(|ip| (TYPE_A, ip.octets().to_vec()))),
        Some(Local::Ptr(target)) => answers.push((TYPE_PTR, target.wire.clone())),
        _ => {}
    }
    for (rtype, rdata) in answers {
        // Owner name: a pointer to the question's name, which is always at offset 12.
        let size = 2 + 2 + 2 + 4 + 2 + rdata.len();
        if out.len() + size > limit || header.ancount == u16::MAX {
            header.flags |= FLAG_TC;
            break;
        }
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
        header.ancount += 1;
    }
    let mut fixed = Vec::with_capacity(HEADER_LEN);
    header.write(&mut fixed);
    out[..HEADER_LEN].copy_from_slice(&fixed);
    out
}

/// Whether `reply` (from an upstream) answers `sent` (the query as we forwarded it): same id,
/// a response, and the same question when it carries one.
fn reply_matches(reply: &[u8], sent_id: u16, question: &Question) -> bool {
    let Ok(header) = Header::parse(reply) else { return false };
    if header.id != sent_id || !header.is_response() {
        return false;
    }
    match header.qdcount {
        // Some servers leave the question out of error replies.
        0 => header.rcode() != NOERROR,
        1 => match Question::parse(reply, HEADER_LEN) {
            Ok((q, _)) => {
                q.qtype == question.qtype && q.qclass == question.qclass && q.name.eq_ignore_case(&question.name)
            }
            Err(_) => false,
        },
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// The server, bound but not yet serving. [`serve`] is `bind` then `run`; tests bind to port 0
/// and read the port with [`Server::local_addr`].
pub struct Server {
    udp: UdpSocket,
    tcp: TcpListener,
    records_file: PathBuf,
    upstreams: Vec<SocketAddr>,
}

impl Server {
    /// Binds UDP and TCP on `listen`. With port 0, both get the same free port. Fails when the
    /// records file cannot be read.
    pub fn bind(listen: SocketAddr, records_file: &Path, upstreams: Vec<SocketAddr>) -> io::Result<Server> {
        fs::metadata(records_file)?;
        let (udp, tcp) = bind_both(listen)?;
        let local = udp.local_addr()?;
        // Never forward to ourselves: the query would come back to us forever.
        let upstreams = upstreams.into_iter().filter(|u| *u != local).collect();
        Ok(Server { udp, tcp, records_file: records_file.to_path_buf(), upstreams })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Serves until the records file is removed; then waits for queries still being answered
    /// (a few seconds at most) and returns Ok.
    pub fn run(self) -> io::Result<()> {
        self.udp.set_nonblocking(true)?;
        self.tcp.set_nonblocking(true)?;
        let shared = Shared {
            records: Mutex::new(Loaded::default()),
            records_file: self.records_file.clone(),
            upstreams: self.upstreams.clone(),
            stop: AtomicBool::new(false),
            forwards: AtomicUsize::new(0),
            conns: AtomicUsize::new(0),
        };
        shared.refresh();
        if shared.stopped() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the records file is gone"));
        }
        thread::scope(|scope| {
            let result = self.main_loop(scope, &shared);
            shared.stop.store(true, Ordering::SeqCst);
            result
        })
    }

    fn main_loop<'s>(&'s self, scope: &'s Scope<'s, '_>, shared: &'s Shared) -> io::Result<()> {
        let mut last_check = Instant::now();
        let mut buf = vec![0u8; 65535];
        while !shared.stopped() {
            let mut fds = [
                libc::pollfd { fd: self.udp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.tcp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: fds is a valid array of two pollfd for the length given.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, TICK.as_millis() as libc::c_int) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if last_check.elapsed() >= TICK || n == 0 {
                shared.refresh();
                last_check = Instant::now();
            }
            if fds[0].revents != 0 {
                // A bounded batch, so that a flood of UDP cannot starve TCP accepts.
                for _ in 0..64 {
                    match self.udp.recv_from(&mut buf) {
                        Ok((len, from)) => self.on_udp(scope, shared, &buf[..len], from),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors of earlier sends and the like: nothing to do.
                        Err(_) => break,
                    }
                }
            }
            if fds[1].revents != 0 {
                for _ in 0..64 {
                    match self.tcp.accept() {
                        Ok((stream, _)) => self.on_tcp(scope, shared, stream),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // EMFILE, ECONNABORTED...: the connection is lost, the server goes on.
                        Err(_) => break,
                    }
                }
            }
        }
        Ok(())
    }

    fn on_udp<'s>(&'s self, scope: &'s Scope<'s, '_>, shared: &'s Shared, packet: &[u8], from: SocketAddr) {
        let querier = ipv4(from);
        let (query, upstreams) = match shared.decide(packet, UDP_LIMIT, querier) {
            Decision::Reply(reply) => {
                // A full send buffer drops the reply; the client asks again.
                let _ = self.udp.send_to(&reply, from);
                return;
            }
            Decision::Drop => return,
            Decision::Forward(query, upstreams) => (query, upstreams),
        };
        if shared.forwards.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
            shared.forwards.fetch_sub(1, Ordering::SeqCst);
            let _ = self.udp.send_to(&build_reply(&query, SERVFAIL, None, UDP_LIMIT), from);
            return;
        }
        let packet = packet.to_vec();
        // Made now: the query moves into the thread, and a failed spawn still needs an answer.
        let servfail = build_reply(&query, SERVFAIL, None, UDP_LIMIT);
        let spawned =
            thread::Builder::new().name("dns-forward".into()).stack_size(256 << 10).spawn_scoped(scope, move || {
                let reply = shared.forward(&packet, &query, false, &upstreams);
                let _ = self.udp.send_to(&reply, from);
                shared.forwards.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.forwards.fetch_sub(1, Ordering::SeqCst);
            let _ = self.udp.send_to(&servfail, from);
        }
    }

    fn on_tcp<'s>(&'s self, scope: &'s Scope<'s, '_>, shared: &'s Shared, stream: TcpStream) {
        if shared.conns.fetch_add(1, Ordering::SeqCst) >= MAX_TCP_CONNS {
            shared.conns.fetch_sub(1, Ordering::SeqCst);
            return; // dropping the stream closes it
        }
        let spawned =
            thread::Builder::new().name("dns-tcp".into()).stack_size(256 << 10).spawn_scoped(scope, move || {
                // Errors only end this connection.
                let _ = shared.serve_connection(stream);
                shared.conns.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.conns.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The IPv4 address of a client, whose view of the records applies (see [`Records`]).
fn ipv4(from: SocketAddr) -> Option<Ipv4Addr> {
    match from.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// Serves DNS on `listen` (UDP and TCP) for the names in `records_file`, forwarding other names
/// to `upstreams` in order, until the records file is removed (looked at every second) or the
/// process is killed. The file is read again when its inode, size or mtime changes; the engine
/// should replace it with a rename, so that it is never missing or half written.
pub fn serve(listen: SocketAddr, records_file: &Path, upstreams: Vec<SocketAddr>) -> io::Result<()> {
    Server::bind(listen, records_file, upstreams)?.run()
}

/// Binds UDP and TCP to the same address. For port 0 the kernel picks the UDP port and TCP
/// tries to take the same one; if another socket has it, try again with a new port.
fn bind_both(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if listen.port() != 0 {
        return Ok((UdpSocket::bind(listen)?, TcpListener::bind(listen)?));
    }
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// The records and what the file looked like when they were read.
#[derive(Default)]
struct Loaded {
    records: Records,
    stamp: Option<Stamp>,
}

/// What tells us that the records file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// State shared by the main loop and the query threads.
struct Shared {
    records: Mutex<Loaded>,
    records_file: PathBuf,
    upstreams: Vec<SocketAddr>,
    stop: AtomicBool,
    forwards: AtomicUsize,
    conns: AtomicUsize,
}

enum Decision {
    Drop,
    Reply(Vec<u8>),
    /// Ask these servers.
    Forward(Query, Vec<SocketAddr>),
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn loaded(&self) -> MutexGuard<'_, Loaded> {
        // Nothing panics while holding the lock, but a poisoned lock still holds good records.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One stat of the records file: stop if it is gone, read it again if it changed.
    fn refresh(&self) {
        let meta = match fs::metadata(&self.records_file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stop.store(true, Ordering::SeqCst);
                return;
            }
            // Keep serving what we have; the next query looks again.
            Err(_) => return,
        };
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        let mut loaded = self.loaded();
        if loaded.stamp == Some(stamp) {
            return;
        }
        let mut bytes = Vec::new();
        let read =
            fs::File::open(&self.records_file).and_then(|file| file.take(MAX_RECORDS_FILE).read_to_end(&mut bytes));
        if read.is_ok() {
            loaded.records = Records::parse(&String::from_utf8_lossy(&bytes));
            loaded.stamp = Some(stamp);
        }
    }

    /// Answers locally, or says to forward. `limit` is the largest reply the client takes.
    fn decide(&self, packet: &[u8], limit: usize, from: Option<Ipv4Addr>) -> Decision {
        let query = match parse_query(packet) {
            Parsed::Drop => return Decision::Drop,
            Parsed::Error(header, rcode) => return Decision::Reply(error_reply(&header, rcode)),
            Parsed::Query(query) => query,
        };
        self.refresh();
        let (local, upstreams) = {
            let loaded = self.loaded();
            let upstreams = loaded.records.upstreams_for(from).map(<[SocketAddr]>::to_vec);
            (answer_locally(&loaded.records, from, &query.question), upstreams)
        };
        let upstreams = upstreams.unwrap_or_else(|| self.upstreams.clone());
        match local {
            Some(local) => Decision::Reply(build_reply(&query, NOERROR, Some(&local), limit)),
            None if upstreams.is_empty() => Decision::Reply(build_reply(&query, REFUSED, None, limit)),
            None => Decision::Forward(query, upstreams),
        }
    }

    /// Asks the upstreams in order and returns the reply for the client (with its id):
    /// the first good answer, else the last error answer, else SERVFAIL. Over TCP (`tcp`), a
    /// truncated UDP answer is asked again over TCP.
    fn forward(&self, packet: &[u8], query: &Query, tcp: bool, upstreams: &[SocketAddr]) -> Vec<u8> {
        let limit = if tcp { usize::from(u16::MAX) } else { UDP_LIMIT };
        let mut sent = packet.to_vec();
        // A fresh random id (and a fresh socket, so a random port) for each forwarded query
        // makes forged replies hard to slip in.
        let id = random_id();
        sent[..2].copy_from_slice(&id.to_be_bytes());
        let mut fallback = None;
        for upstream in upstreams {
            if self.stopped() {
                break;
            }
            let mut reply = match ask_udp(*upstream, &sent, id, &query.question) {
                Ok(reply) => reply,
                Err(_) => continue,
            };
            if tcp
                && Header::parse(&reply).is_ok_and(|h| h.truncated())
                && let Ok(full) = ask_tcp(*upstream, &sent, id, &query.question)
            {
                reply = full;
            }
            reply[..2].copy_from_slice(&query.header.id.to_be_bytes());
            let rcode = Header::parse(&reply).map(|h| h.rcode()).unwrap_or(SERVFAIL);
            // Like glibc: a server that fails or refuses is no answer, try the next one.
            if matches!(rcode, SERVFAIL | NOTIMP | REFUSED) {
                fallback = Some(reply);
                continue;
            }
            return reply;
        }
        fallback.unwrap_or_else(|| build_reply(query, SERVFAIL, None, limit))
    }

    /// One TCP connection: length-prefixed queries, answered in order, until the client closes,
    /// stays idle too long, sends garbage framing, or the server stops.
    fn serve_connection(&self, mut stream: TcpStream) -> io::Result<()> {
        let querier = ipv4(stream.peer_addr()?);
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(TCP_MESSAGE))?;
        loop {
            let mut len = [0u8; 2];
            if !self.read_full(&mut stream, &mut len, TCP_IDLE)? {
                return Ok(());
            }
            let len = usize::from(u16::from_be_bytes(len));
            let mut packet = vec![0u8; len];
            if !self.read_full(&mut stream, &mut packet, TCP_MESSAGE)? {
                return Ok(());
            }
            let reply = match self.decide(&packet, usize::from(u16::MAX), querier) {
                Decision::Reply(reply) => reply,
                // A packet we do not answer over a stream: the stream is not a DNS client.
                Decision::Drop => return Ok(()),
                Decision::Forward(query, upstreams) => self.forward(&packet, &query, true, &upstreams),
            };
            let Ok(reply_len) = u16::try_from(reply.len()) else { return Ok(()) };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&reply_len.to_be_bytes());
            framed.extend_from_slice(&reply);
            stream.write_all(&framed)?;
        }
    }

    /// Fills `buf`, waiting at most `patience` in total. Ok(false) on a clean end of stream
    /// before the first byte, on timeout, or when the server stops.
    fn read_full(&self, stream: &mut TcpStream, buf: &mut [u8], patience: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + patience;
        let mut filled = 0;
        while filled < buf.len() {
            if self.stopped() || Instant::now() >= deadline {
                return Ok(false);
            }
            match stream.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Sends `query` to `upstream` from a fresh UDP socket and waits for the matching reply.
fn ask_udp(upstream: SocketAddr, query: &[u8], id: u16, question: &Question) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    // Connected: the kernel drops datagrams from anyone else, and reports ICMP errors.
    socket.connect(upstream)?;
    socket.send(query)?;
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        let len = socket.recv(&mut buf)?;
        if reply_matches(&buf[..len], id, question) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// Sends `query` to `upstream` over TCP and reads the matching reply.
fn ask_tcp(upstream: SocketAddr, query: &[u8], id: u16, question: &Question) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stream = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT)?;
    stream.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    stream.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply)?;
    if !reply_matches(&reply, id, question) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "upstream reply does not match the query"));
    }
    Ok(reply)
}

fn random_id() -> u16 {
    let mut bytes = [0u8; 2];
    // SAFETY: writes at most 2 bytes into a 2-byte buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if n == 2 {
        return u16::from_ne_bytes(bytes);
    }
    // No entropy yet (early boot): the random source port still protects the query.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_packet(id: u16, flags: u16, qdcount: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut out = Vec::new();
        Header { id, flags, qdcount, ancount: 0, nscount: 0, arcount: 0 }.write(&mut out);
        out.extend_from_slice(&Name::from_text(name).unwrap().wire);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out
    }

    fn question(name: &str, qtype: u16) -> Question {
        Question { name: Name::from_text(name).unwrap(), qtype, qclass: CLASS_IN }
    }

    const RECORDS: &str = "\
# the engine's records
10.89.0.2 web www abcdef123456
10.89.0.3   DB.   # a comment
not-an-ip web
10.89.0.300 broken
10.89.0.4 web bad..name spa ce
10.89.0.5

10.89.0.4 other
";

    #[test]
    fn a_querier_sees_its_other_networks_and_its_own_upstreams() {
        let r = Records::parse(
            "10.1.0.2 web\n10.1.0.3 both\n@10.1.0.3 10.2.0.5 db data\n@10.1.0.3 dns 192.0.2.53 192.0.2.54:5353\n@bogus 1.2.3.4 x\n",
        );
        let (both, web) = (Some(Ipv4Addr::new(10, 1, 0, 3)), Some(Ipv4Addr::new(10, 1, 0, 2)));
        let db = Ipv4Addr::new(10, 2, 0, 5);
        // Only the container that is on the other network too resolves its names.
        assert_eq!(r.lookup_from("db", both), vec![db]);
        assert_eq!(r.lookup_from("data.dns.berth", both), vec![db]);
        assert!(r.lookup_from("db", web).is_empty() && r.lookup_from("db", None).is_empty());
        assert_eq!(answer_locally(&r, both, &question("db", TYPE_A)), Some(Local::Addrs(vec![db])));
        assert_eq!(answer_locally(&r, web, &question("db.dns.berth", TYPE_A)), Some(Local::NxDomain));
        assert_eq!(r.reverse_from(db, both), Some("db"));
        assert_eq!(r.reverse_from(db, web), None);
        // Own names first, whoever asks.
        assert_eq!(r.lookup_from("web", both), vec![Ipv4Addr::new(10, 1, 0, 2)]);
        let ups: Vec<SocketAddr> = vec!["192.0.2.53:53".parse().unwrap(), "192.0.2.54:5353".parse().unwrap()];
        assert_eq!(r.upstreams_for(both), Some(&ups[..]));
        assert_eq!(r.upstreams_for(web), None);
    }

    #[test]
    fn records_parse_and_lookup() {
        let r = Records::parse(RECORDS);
        let web = vec![Ipv4Addr::new(10, 89, 0, 2), Ipv4Addr::new(10, 89, 0, 4)];
        assert_eq!(r.lookup("web"), web);
        assert_eq!(r.lookup("WEB."), web);
        assert_eq!(r.lookup("web.dns.berth"), web);
        assert_eq!(r.lookup("Web.DNS.Berth."), web);
        assert_eq!(r.lookup("abcdef123456"), vec![Ipv4Addr::new(10, 89, 0, 2)]);
        assert_eq!(r.lookup("db"), vec![Ipv4Addr::new(10, 89, 0, 3)]);
        assert_eq!(r.lookup("spa"), vec![Ipv4Addr::new(10, 89, 0, 4)]);
        for unknown in ["", ".", "dns.berth", ".dns.berth", "broken", "bad..name", "nope", "web.dns", "web.other.berth"]
        {
            assert!(r.lookup(unknown).is_empty(), "{unknown}");
        }
        assert_eq!(r.reverse(Ipv4Addr::new(10, 89, 0, 2)), Some("web"));
        // The first name given for an address wins, even across lines.
        assert_eq!(r.reverse(Ipv4Addr::new(10, 89, 0, 4)), Some("web"));
        assert_eq!(r.reverse(Ipv4Addr::new(10, 89, 0, 5)), None);
        assert!(Records::parse("# nothing\n\n").is_empty());
    }

    #[test]
    fn names_too_long_are_skipped() {
        let long_label = "a".repeat(64);
        let long_name = ["b".repeat(60).as_str(); 5].join(".");
        let r = Records::parse(&format!("10.0.0.1 {long_label} {long_name} ok\n"));
        assert!(r.lookup(&long_label).is_empty());
        assert!(r.lookup(&long_name).is_empty());
        assert_eq!(r.lookup("ok"), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    }

    #[test]
    fn resolv_conf_upstreams() {
        let text = "\
# generated
search example.com
nameserver 192.0.2.53
nameserver 192.0.2.53
  nameserver   2001:db8::53 ; comment
nameserver fe80::1%1
nameserver fe80::2%no-such-interface-x
nameserver bogus
nameserver
options ndots:2
nameserver 127.0.0.53#x
";
        let got = upstreams(text);
        let want: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 1)),
            "127.0.0.53:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
        assert!(upstreams("").is_empty());
    }

    #[test]
    fn header_truncated_is_dropped() {
        for len in 0..HEADER_LEN {
            assert_eq!(parse_query(&vec![0u8; len]), Parsed::Drop);
        }
    }

    #[test]
    fn responses_are_dropped() {
        let packet = query_packet(7, FLAG_QR, 1, "web", TYPE_A);
        assert_eq!(parse_query(&packet), Parsed::Drop);
    }

    #[test]
    fn qdcount_other_than_one_is_formerr() {
        for qdcount in [0, 2, 5, u16::MAX] {
            let packet = query_packet(0x4242, FLAG_RD, qdcount, "web", TYPE_A);
            let Parsed::Error(header, rcode) = parse_query(&packet) else { panic!("qdcount {qdcount}") };
            assert_eq!(rcode, FORMERR);
            let reply = error_reply(&header, rcode);
            let h = Header::parse(&reply).unwrap();
            assert_eq!((h.id, h.rcode(), h.qdcount, h.is_response()), (0x4242, FORMERR, 0, true));
            assert_eq!(h.flags & FLAG_RD, FLAG_RD);
        }
    }

    #[test]
    fn other_opcodes_are_notimp() {
        let packet = query_packet(1, 5 << 11, 1, "web", TYPE_A); // UPDATE
        let Parsed::Error(header, rcode) = parse_query(&packet) else { panic!() };
        assert_eq!(rcode, NOTIMP);
        assert_eq!(Header::parse(&error_reply(&header, rcode)).unwrap().opcode(), 5);
    }

    #[test]
    fn hostile_names() {
        let header =
            |out: &mut Vec<u8>| Header { id: 1, flags: 0, qdcount: 1, ancount: 0, nscount: 0, arcount: 0 }.write(out);
        let formerr = |packet: &[u8]| matches!(parse_query(packet), Parsed::Error(_, FORMERR));

        // A label longer than 63 (length byte 64: the 0x40 label type).
        let mut p = Vec::new();
        header(&mut p);
        p.push(64);
        p.extend_from_slice(&[b'a'; 64]);
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(formerr(&p));

        // A pointer to itself, and a pointer loop through a label.
        let mut p = Vec::new();
        header(&mut p);
        p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(formerr(&p));
        let mut p = Vec::new();
        header(&mut p);
        p.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert!(formerr(&p));
        // A forward pointer.
        let mut p = Vec::new();
        header(&mut p);
        p.extend_from_slice(&[0xc0, 14, 0, 0, 1, 0, 1]);
        assert!(formerr(&p));

        // Truncated in a label, in a pointer, before the type/class.
        for tail in [&[5, b'a', b'b'][..], &[0xc0][..], &[1, b'a', 0, 0, 1][..], &[][..]] {
            let mut p = Vec::new();
            header(&mut p);
            p.extend_from_slice(tail);
            assert!(formerr(&p), "{tail:?}");
        }

        // Over 255 bytes: 5 labels of 63.
        let mut p = Vec::new();
        header(&mut p);
        for _ in 0..5 {
            p.push(63);
            p.extend_from_slice(&[b'x'; 63]);
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(formerr(&p));
    }

    #[test]
    fn pointer_chains_backwards_are_followed() {
        // "a.b" at 12, then "c" + pointer to "b" (offset 14), then the type and class: the name
        // read at the second position is c.b.
        let mut p = Vec::new();
        Header { id: 1, flags: 0, qdcount: 1, ancount: 0, nscount: 0, arcount: 0 }.write(&mut p);
        p.extend_from_slice(&[1, b'a', 1, b'b', 0]);
        let second = p.len();
        p.extend_from_slice(&[1, b'c', 0xc0, 14, 0, 1, 0, 1]);
        let (q, end) = Question::parse(&p, second).unwrap();
        assert_eq!(q.name.to_text().as_deref(), Some("c.b"));
        assert_eq!(end, p.len());
        // A chain of pointers, each earlier than the last.
        let mut p = Vec::new();
        Header { id: 1, flags: 0, qdcount: 1, ancount: 0, nscount: 0, arcount: 0 }.write(&mut p);
        p.extend_from_slice(&[1, b'x', 0]); // 12
        p.extend_from_slice(&[1, b'y', 0xc0, 12]); // 15
        let third = p.len();
        p.extend_from_slice(&[0xc0, 15]);
        let (name, end) = Name::parse(&p, third).unwrap();
        assert_eq!(name.to_text().as_deref(), Some("y.x"));
        assert_eq!(end, third + 2);
    }

    #[test]
    fn every_prefix_and_byte_flip_is_harmless() {
        let records = Records::parse(RECORDS);
        let packet = query_packet(9, FLAG_RD, 1, "web.dns.berth", TYPE_A);
        for len in 0..=packet.len() {
            let _ = parse_query(&packet[..len]);
        }
        for i in 0..packet.len() {
            for value in [0u8, 0x3f, 0x40, 0x80, 0xc0, 0xff] {
                let mut p = packet.clone();
                p[i] = value;
                if let Parsed::Query(q) = parse_query(&p) {
                    let local = answer_locally(&records, None, &q.question);
                    let _ = build_reply(&q, NOERROR, local.as_ref(), UDP_LIMIT);
                }
            }
        }
    }

    #[test]
    fn text_of_odd_names() {
        assert_eq!(Name::from_text(".").unwrap().to_text().as_deref(), Some(""));
        assert_eq!(Name::from_text("A.b.").unwrap().to_text().as_deref(), Some("a.b"));
        // A dot or a space inside a label is never one of our names.
        let weird = Name { wire: vec![3, b'a', b'.', b'b', 0] };
        assert_eq!(weird.to_text(), None);
        assert!(Name::from_text("a..b").is_none());
        assert!(Name::from_text(&"a".repeat(64)).is_none());
    }

    #[test]
    fn local_answers() {
        let r = Records::parse(RECORDS);
        let ip = |d| Ipv4Addr::new(10, 89, 0, d);
        assert_eq!(answer_locally(&r, None, &question("WWW", TYPE_A)), Some(Local::Addrs(vec![ip(2)])));
        assert_eq!(answer_locally(&r, None, &question("www.dns.berth.", TYPE_ANY)), Some(Local::Addrs(vec![ip(2)])));
        assert_eq!(answer_locally(&r, None, &question("www", 28)), Some(Local::NoData));
        assert_eq!(answer_locally(&r, None, &question("www", 15)), Some(Local::NoData));
        assert_eq!(answer_locally(&r, None, &question("nope.dns.berth", TYPE_A)), Some(Local::NxDomain));
        assert_eq!(answer_locally(&r, None, &question("dns.berth", TYPE_A)), Some(Local::NoData));
        assert_eq!(answer_locally(&r, None, &question("nope", TYPE_A)), None);
        assert_eq!(answer_locally(&r, None, &question("example.com", TYPE_A)), None);
        assert_eq!(
            answer_locally(&r, None, &question("3.0.89.10.in-addr.arpa", TYPE_PTR)),
            Some(Local::Ptr(Name::from_text("db.dns.berth").unwrap()))
        );
        assert_eq!(answer_locally(&r, None, &question("3.0.89.10.in-addr.arpa", TYPE_A)), Some(Local::NoData));
        assert_eq!(answer_locally(&r, None, &question("9.0.89.10.in-addr.arpa", TYPE_PTR)), None);
        // Another class is not answered with addresses, but not forwarded either.
        let chaos = Question { qclass: 3, ..question("web", TYPE_A) };
        assert_eq!(answer_locally(&r, None, &chaos), Some(Local::NoData));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_ipv4("4.3.2.1.in-addr.arpa"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(reverse_ipv4("255.0.0.10.in-addr.arpa"), Some(Ipv4Addr::new(10, 0, 0, 255)));
        for bad in [
            "3.2.1.in-addr.arpa",
            "5.4.3.2.1.in-addr.arpa",
            "04.3.2.1.in-addr.arpa",
            "256.3.2.1.in-addr.arpa",
            "+4.3.2.1.in-addr.arpa",
            "4.3.2.1.ip6.arpa",
            ".3.2.1.in-addr.arpa",
        ] {
            assert_eq!(reverse_ipv4(bad), None, "{bad}");
        }
    }

    #[test]
    fn reply_layout() {
        let packet = query_packet(0xbeef, FLAG_RD, 1, "Web", TYPE_A);
        let Parsed::Query(q) = parse_query(&packet) else { panic!() };
        let local = Local::Addrs(vec![Ipv4Addr::new(10, 89, 0, 2)]);
        let reply = build_reply(&q, NOERROR, Some(&local), UDP_LIMIT);
        let mut want = Vec::new();
        Header {
            id: 0xbeef,
            flags: FLAG_QR | FLAG_AA | FLAG_RD | FLAG_RA,
            qdcount: 1,
            ancount: 1,
            nscount: 0,
            arcount: 0,
        }
        .write(&mut want);
        want.extend_from_slice(&[3, b'W', b'e', b'b', 0, 0, 1, 0, 1]); // question, case kept
        want.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 89, 0, 2]);
        assert_eq!(reply, want);

        // NXDOMAIN and SERVFAIL keep the question and have no answers.
        let nx = build_reply(&q, NOERROR, Some(&Local::NxDomain), UDP_LIMIT);
        let h = Header::parse(&nx).unwrap();
        assert_eq!((h.rcode(), h.qdcount, h.ancount, h.flags & FLAG_AA), (NXDOMAIN, 1, 0, FLAG_AA));
        let fail = build_reply(&q, SERVFAIL, None, UDP_LIMIT);
        let h = Header::parse(&fail).unwrap();
        assert_eq!((h.rcode(), h.qdcount, h.ancount, h.flags & FLAG_AA), (SERVFAIL, 1, 0, 0));
        assert_eq!(fail.len(), packet.len());
    }

    #[test]
    fn too_many_answers_for_udp_set_tc() {
        let packet = query_packet(1, 0, 1, "many", TYPE_A);
        let Parsed::Query(q) = parse_query(&packet) else { panic!() };
        let addrs: Vec<_> = (0..100u8).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let reply = build_reply(&q, NOERROR, Some(&Local::Addrs(addrs.clone())), UDP_LIMIT);
        let h = Header::parse(&reply).unwrap();
        assert!(reply.len() <= UDP_LIMIT);
        assert!(h.truncated());
        assert_eq!(usize::from(h.ancount), (reply.len() - packet.len()) / 16);
        let full = build_reply(&q, NOERROR, Some(&Local::Addrs(addrs)), usize::from(u16::MAX));
        let h = Header::parse(&full).unwrap();
        assert!(!h.truncated());
        assert_eq!(h.ancount, 100);
    }

    #[test]
    fn upstream_replies_must_match() {
        let q = question("example.com", TYPE_A);
        let mut reply = query_packet(77, FLAG_QR | FLAG_RD | FLAG_RA, 1, "EXAMPLE.com", TYPE_A);
        assert!(reply_matches(&reply, 77, &q));
        assert!(!reply_matches(&reply, 78, &q));
        assert!(!reply_matches(&reply[..11], 77, &q));
        assert!(!reply_matches(&query_packet(77, 0, 1, "example.com", TYPE_A), 77, &q));
        assert!(!reply_matches(&query_packet(77, FLAG_QR, 1, "example.org", TYPE_A), 77, &q));
        assert!(!reply_matches(&query_packet(77, FLAG_QR, 1, "example.com", 28), 77, &q));
        // An error reply without the question is accepted, a NOERROR one is not.
        reply.truncate(HEADER_LEN);
        reply[5] = 0;
        assert!(!reply_matches(&reply, 77, &q));
        reply[3] |= SERVFAIL;
        assert!(reply_matches(&reply, 77, &q));
    }
}
