//! The link layer: a small rtnetlink client of our own on a raw NETLINK_ROUTE socket (bridges,
//! veth pairs, addresses, the default route), [`in_netns`] to do such work inside a container's
//! namespace from a forked child, and the two steps the engine takes per container network:
//! [`ensure_bridge`] and [`attach`].
//!
//! Every request but a dump carries NLM_F_ACK and its reply is read to the end (the ack, or NLMSG_DONE for
//! a dump), so a refusal is always seen and reported with the errno and the kernel's own text.

use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// From linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h and veth.h.
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_CAPPED: u16 = 0x100; // in an error: only the request's header is echoed
const NLM_F_ACK_TLVS: u16 = 0x200; // in an error: extended-ack attributes follow
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNEIGH: u16 = 28;
const NLM_F_REPLACE: u16 = 0x100;
const NDA_LLADDR: u16 = 2;
const NUD_NOARP: u16 = 0x40;
const NTF_MASTER: u8 = 0x04;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 1;
// Traffic control (include/uapi/linux/rtnetlink.h, pkt_sched.h, pkt_cls.h).
const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_CLSACT_INGRESS: u32 = 0xffff_fff2; // TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
const ETH_P_ALL: u16 = 0x0003;
const BPF_FILTER_PRIO: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff; // without NLA_F_NESTED and NLA_F_NET_BYTEORDER

const HDR: usize = 16; // struct nlmsghdr
const IFINFO: usize = 16; // struct ifinfomsg
const IFNAMSIZ: usize = 16;
const RECV_BUF: usize = 64 * 1024; // more than the kernel puts in one dump datagram
const REPORT_MAX: usize = 4096; // what an in_netns child may say

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The kernel's refusal of a request (errno and extended-ack text), or a failure of the socket.
#[derive(Debug)]
enum NlError {
    Kernel(i32, Option<String>),
    Io(io::Error),
}

impl From<io::Error> for NlError {
    fn from(e: io::Error) -> NlError {
        NlError::Io(e)
    }
}

impl NlError {
    fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel(errno, _) => Some(*errno),
            NlError::Io(e) => e.raw_os_error(),
        }
    }

    fn context(self, what: &str) -> io::Error {
        match self {
            NlError::Kernel(errno, ext) => {
                let e = io::Error::from_raw_os_error(errno);
                let text = match ext {
                    Some(x) => format!("{what}: {e} ({x})"),
                    None => format!("{what}: {e}"),
                };
                io::Error::new(e.kind(), text)
            }
            NlError::Io(e) => ctx(e, what),
        }
    }
}

/// The kernel's rules for an interface name (dev_valid_name), checked here for a clear message.
fn check_name(name: &str) -> io::Result<()> {
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() >= IFNAMSIZ {
        format!("it is {} bytes long, at most {} are allowed", name.len(), IFNAMSIZ - 1)
    } else if name == "." || name == ".." || name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b <= b' ') {
        "it holds '/', ':', a space or a control character, or is '.' or '..'".to_string()
    } else {
        return Ok(());
    };
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {name:?}: {why}")))
}

fn cstring(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_ne_bytes)
}

/// struct ifinfomsg (AF_UNSPEC).
fn ifinfo(index: u32, flags: u32, change: u32) -> [u8; IFINFO] {
    let mut h = [0; IFINFO];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// struct tcmsg: family, padding, ifindex, handle, parent, info.
fn tcmsg(index: u32, handle: u32, parent: u32, info: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&handle.to_ne_bytes());
    h[12..16].copy_from_slice(&parent.to_ne_bytes());
    h[16..20].copy_from_slice(&info.to_ne_bytes());
    h
}

/// A request being built: header, fixed part, attributes; nests are closed by [`Msg::end`].
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut m = Msg { buf: vec![0; HDR], nests: Vec::new() };
        m.buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        m.buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        m.put(fixed);
        m
    }

    /// Raw bytes, padded to the 4-byte alignment.
    fn put(&mut self, b: &[u8]) -> &mut Msg {
        self.buf.extend_from_slice(b);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Attribute payloads here are names, addresses and numbers, far below the u16 limit.
    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Msg {
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.put(data)
    }

    fn begin(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.attr(ty, &[])
    }

    fn end(&mut self) -> &mut Msg {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// The attributes in `b` as (type, payload), stopping at the first malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes(bytes(b, 0)?) as usize;
        let ty = u16::from_ne_bytes(bytes(b, 2)?) & NLA_TYPE_MASK;
        let data = b.get(4..len)?;
        b = b.get(align(len)..).unwrap_or(&[]);
        Some((ty, data))
    })
}

fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|a| a.0 == ty).map(|a| a.1)
}

/// The messages in a datagram as (type, flags, seq, payload), stopping at the first malformed one.
fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        let len = u32_at(b, 0)? as usize;
        let ty = u16::from_ne_bytes(bytes(b, 4)?);
        let flags = u16::from_ne_bytes(bytes(b, 6)?);
        let seq = u32_at(b, 8)?;
        let payload = b.get(HDR..len)?;
        b = b.get(align(len)..).unwrap_or(&[]);
        Some((ty, flags, seq, payload))
    })
}

/// An NLMSG_ERROR payload: 0 is the ack; otherwise the errno and the kernel's message if any.
fn parse_ack(flags: u16, p: &[u8]) -> Result<(), NlError> {
    let code = bytes(p, 0).map(i32::from_ne_bytes).ok_or_else(|| io::Error::other("short netlink error message"))?;
    if code == 0 {
        return Ok(());
    }
    // After the code comes the request's header (and its body unless capped), then the TLVs.
    let mut ext = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if flags & NLM_F_CAPPED != 0 { HDR } else { u32_at(p, 4).unwrap_or(0) as usize };
        if let Some(tlvs) = p.get(4usize.saturating_add(align(echoed.min(RECV_BUF)))..) {
            ext = find(tlvs, NLMSGERR_ATTR_MSG).map(cstr).filter(|s| !s.is_empty());
        }
    }
    Err(NlError::Kernel(code.saturating_abs(), ext))
}

/// What we read back about a link.
#[derive(Debug, PartialEq)]
struct Link {
    index: u32,
    name: String,
    master: Option<u32>,
    kind: Option<String>,
    alias: Option<String>,
    address: Option<[u8; 6]>,
}

/// The alias berth gives the bridges it makes: a bridge of someone else's, even with the name
/// a network asks for, is never used or removed.
const BRIDGE_ALIAS: &str = "berth";

/// A bridge berth may use and remove: marked as its own, or (made before the mark existed)
/// named the way berth names its bridges (`berth0`, `br-` and 12 hex digits).
fn bridge_is_ours(l: &Link) -> bool {
    l.alias.as_deref() == Some(BRIDGE_ALIAS)
        || (l.alias.is_none()
            && (l.name == "berth0"
                || l.name
                    .strip_prefix("br-")
                    .is_some_and(|h| h.len() == 12 && h.chars().all(|c| c.is_ascii_hexdigit()))))
}

/// An RTM_NEWLINK payload: struct ifinfomsg then attributes.
fn parse_link(p: &[u8]) -> Option<Link> {
    let index = u32_at(p, 4)?;
    let a = p.get(IFINFO..)?;
    Some(Link {
        index,
        name: find(a, IFLA_IFNAME).map(cstr)?,
        master: find(a, IFLA_MASTER).and_then(|m| u32_at(m, 0)),
        kind: find(a, IFLA_LINKINFO).and_then(|li| find(li, IFLA_INFO_KIND)).map(cstr),
        alias: find(a, IFLA_IFALIAS).map(cstr).filter(|s| !s.is_empty()),
        address: find(a, IFLA_ADDRESS).and_then(|m| bytes(m, 0)),
    })
}

/// What [`Netlink::link_by_index`] tells about a link.
pub struct LinkInfo {
    /// The index of its bridge, for a bridge's port.
    pub master: Option<u32>,
    pub address: Option<[u8; 6]>,
}

/// A NETLINK_ROUTE socket of the network namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(ctx(io::Error::last_os_error(), "open a NETLINK_ROUTE socket"));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // Short acks and the kernel's own words on errors; older kernels lack them, which is fine.
        for opt in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            // SAFETY: setsockopt with a pointer to a c_int and its size.
            unsafe { libc::setsockopt(raw, libc::SOL_NETLINK, opt, (&one as *const libc::c_int).cast(), 4) };
        }
        // A reply that never comes must not hang the engine.
        let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
        let size = size_of::<libc::timeval>() as libc::socklen_t;
        // SAFETY: setsockopt with a pointer to a timeval and its size.
        if unsafe {
            libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), size)
        } != 0
        {
            return Err(ctx(io::Error::last_os_error(), "set the netlink socket's receive timeout"));
        }
        Ok(Netlink { fd, seq: 0, buf: vec![0; RECV_BUF] })
    }

    /// Sends one request and reads its replies: data messages go to `each`; the ack (or the
    /// refusal) ends a request, NLMSG_DONE ends a dump.
    fn exchange(&mut self, msg: Msg, mut each: impl FnMut(&[u8])) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = msg.finish(seq);
        let fd = self.fd.as_raw_fd();
        // SAFETY: send(2) of an owned buffer; an unconnected netlink socket sends to the kernel.
        let n = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if n as usize != req.len() {
            return Err(io::Error::other("short netlink send").into());
        }
        let mut interrupted = false;
        loop {
            // SAFETY: an all-zero sockaddr_nl is valid.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: recvfrom into our buffer with its length; MSG_TRUNC makes it return the real
            // size so that a truncated datagram is noticed.
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink reply").into());
                    }
                    _ => return Err(e.into()),
                }
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(io::Error::other("netlink reply larger than the receive buffer").into());
            }
            if from.nl_pid != 0 {
                continue; // only the kernel speaks to us
            }
            for (ty, flags, mseq, payload) in messages(&self.buf[..n]) {
                if mseq != seq {
                    continue; // a late reply to an earlier request that failed
                }
                match ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => return parse_ack(flags, payload),
                    NLMSG_DONE => {
                        let code = bytes(payload, 0).map(i32::from_ne_bytes).unwrap_or(0);
                        if code != 0 {
                            return Err(NlError::Kernel(code.saturating_abs(), None));
                        }
                        if interrupted {
                            return Err(NlError::Kernel(libc::EINTR, Some("dump interrupted by a change".into())));
                        }
                        return Ok(());
                    }
                    NLMSG_OVERRUN => return Err(io::Error::other("netlink overrun").into()),
                    _ => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        each(payload);
                    }
                }
            }
        }
    }

    fn run(&mut self, msg: Msg) -> Result<(), NlError> {
        self.exchange(msg, |_| {})
    }

    fn get_link(&mut self, name: &str) -> io::Result<Option<Link>> {
        check_name(name)?;
        let mut m = Msg::new(RTM_GETLINK, NLM_F_ACK, &ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &cstring(name));
        let mut link = None;
        match self.exchange(m, |p| link = link.take().or_else(|| parse_link(p))) {
            Ok(()) => Ok(link),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e.context(&format!("look up link {name}"))),
        }
    }

    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.get_link(name)?.map(|l| l.index))
    }

    /// The link with this index, if it exists.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<LinkInfo>> {
        let m = Msg::new(RTM_GETLINK, NLM_F_ACK, &ifinfo(index, 0, 0));
        let mut link = None;
        match self.exchange(m, |p| link = link.take().or_else(|| parse_link(p))) {
            Ok(()) => Ok(link.map(|l| LinkInfo { master: l.master, address: l.address })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e.context(&format!("look up link #{index}"))),
        }
    }

    /// A static entry in the bridge's forwarding table: `mac` is behind port `index` (`bridge
    /// fdb replace MAC dev PORT master static`); it goes with the port.
    pub fn add_static_fdb(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        // struct ndmsg: family, padding, ifindex, state, flags, type.
        let mut h = [0u8; 12];
        h[0] = libc::AF_BRIDGE as u8;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..10].copy_from_slice(&NUD_NOARP.to_ne_bytes());
        h[10] = NTF_MASTER;
        let mut m = Msg::new(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, &h);
        m.attr(NDA_LLADDR, &mac);
        self.run(m).map_err(|e| e.context(&format!("add a static forwarding entry on port #{index}")))
    }

    /// Creates a bridge (idempotent: EEXIST returns the existing one's index).
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> io::Result<u32> {
        check_name(name)?;
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &cstring(name));
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        // A MAC of its own: otherwise the bridge takes its lowest port's, which changes as
        // containers come and go and leaves stale ARP entries behind in the others.
        m.attr(IFLA_ADDRESS, &random_mac()?);
        m.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"bridge").end();
        let made = match self.run(m) {
            Err(e) if e.errno() != Some(libc::EEXIST) => return Err(e.context(&format!("create bridge {name}"))),
            r => r.is_ok(),
        };
        let mut link = self.get_link(name)?;
        // Another berth made it a moment ago and is about to mark it: give it that moment.
        for _ in 0..50 {
            match &link {
                Some(l) if !made && l.kind.as_deref() == Some("bridge") && l.alias.is_none() && !bridge_is_ours(l) => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    link = self.get_link(name)?;
                }
                _ => break,
            }
        }
        match link {
            Some(l) if l.kind.as_deref() == Some("bridge") && made => {
                // Marked as ours (the alias is set on a link that exists, not at creation).
                let mut m = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfo(l.index, 0, 0));
                m.attr(IFLA_IFALIAS, BRIDGE_ALIAS.as_bytes());
                self.run(m).map_err(|e| e.context(&format!("mark bridge {name} as berth's")))?;
                Ok(l.index)
            }
            Some(l) if l.kind.as_deref() == Some("bridge") && bridge_is_ours(&l) => Ok(l.index),
            Some(_) if made => Err(io::Error::other(format!("create bridge {name}: it changed right after creation"))),
            Some(l) if l.kind.as_deref() == Some("bridge") => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "create bridge {name}: a bridge of that name exists and is not berth's (no alias {BRIDGE_ALIAS:?}); rename or remove it"
                ),
            )),
            Some(l) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "create bridge {name}: a link of that name exists and is a {}",
                    l.kind.as_deref().unwrap_or("device")
                ),
            )),
            None => {
                Err(io::Error::new(io::ErrorKind::NotFound, format!("create bridge {name}: gone right after creation")))
            }
        }
    }

    /// A veth pair: `host` here, its peer created directly inside the namespace `peer_netns`
    /// under the name `peer` (IFLA_NET_NS_FD in the peer info), with the given MAC and MTU.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: BorrowedFd,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        check_name(host)?;
        check_name(peer)?;
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &cstring(host));
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        m.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth").begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        // The peer info is a struct ifinfomsg followed by the peer's own attributes.
        m.put(&ifinfo(0, 0, 0)).attr(IFLA_IFNAME, &cstring(peer));
        m.attr(IFLA_NET_NS_FD, &(peer_netns.as_raw_fd() as u32).to_ne_bytes());
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(mac) = peer_mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        m.end().end().end();
        self.run(m)
            .map_err(|e| e.context(&format!("create veth pair {host} (peer {peer} in the container's namespace)")))
    }

    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfo(index, 0, 0));
        m.attr(IFLA_MASTER, &master.to_ne_bytes());
        self.run(m).map_err(|e| e.context(&format!("enslave link #{index} to bridge #{master}")))
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let m = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfo(index, IFF_UP, IFF_UP));
        self.run(m).map_err(|e| e.context(&format!("set link #{index} up")))
    }

    /// EEXIST is success.
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let what = || format!("add address {ip}/{prefix} to link #{index}");
        if prefix > 32 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: bad prefix length", what())));
        }
        // struct ifaddrmsg: family, prefix length, flags, scope (universe), index.
        let mut h = [0u8; 8];
        h[0] = libc::AF_INET as u8;
        h[1] = prefix;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &h);
        m.attr(IFA_LOCAL, &ip.octets()).attr(IFA_ADDRESS, &ip.octets());
        match self.run(m) {
            Err(e) if e.errno() != Some(libc::EEXIST) => Err(e.context(&what())),
            _ => Ok(()),
        }
    }

    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        // struct rtmsg: family, dst/src length 0, tos, table, protocol, scope (universe), type, flags.
        let mut h = [0u8; 12];
        h[0] = libc::AF_INET as u8;
        h[4] = RT_TABLE_MAIN;
        h[5] = RTPROT_BOOT;
        h[7] = RTN_UNICAST;
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &h);
        m.attr(RTA_GATEWAY, &gateway.octets());
        self.run(m).map_err(|e| e.context(&format!("add default route via {gateway}")))
    }

    /// false when there was no such link.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        check_name(name)?;
        let mut m = Msg::new(RTM_DELLINK, NLM_F_ACK, &ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &cstring(name));
        match self.run(m) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e.context(&format!("delete link {name}"))),
        }
    }

    /// Gives the link a clsact qdisc (the hook for tc programs on its ingress); one already
    /// there is fine.
    pub fn add_clsact(&mut self, index: u32) -> io::Result<()> {
        let mut m =
            Msg::new(RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &tcmsg(index, 0xffff_0000, TC_H_CLSACT, 0));
        m.attr(TCA_KIND, b"clsact\0");
        match self.run(m) {
            Err(e) if e.errno() != Some(libc::EEXIST) => {
                Err(e.context(&format!("add a clsact qdisc to link #{index}")))
            }
            _ => Ok(()),
        }
    }

    /// Attaches the tc program `prog` (direct action, all protocols) to the link's ingress as
    /// filter `name`, at berth's priority and handle 1. One already there is an error of kind
    /// AlreadyExists: the caller asks [`Netlink::ingress_programs`] whose it is.
    pub fn add_ingress_program(&mut self, index: u32, prog: BorrowedFd, name: &str) -> io::Result<()> {
        let info = (BPF_FILTER_PRIO << 16) | u32::from(ETH_P_ALL.to_be());
        let mut m = Msg::new(
            RTM_NEWTFILTER,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &tcmsg(index, 1, TC_H_CLSACT_INGRESS, info),
        );
        m.attr(TCA_KIND, b"bpf\0");
        m.begin(TCA_OPTIONS);
        m.attr(TCA_BPF_FD, &(prog.as_raw_fd() as u32).to_ne_bytes());
        m.attr(TCA_BPF_NAME, &cstring(name));
        m.attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
        m.end();
        self.run(m).map_err(|e| e.context(&format!("attach tc program {name} to the ingress of link #{index}")))
    }

    /// (filter name, program id) of the tc programs on the link's ingress.
    pub fn ingress_programs(&mut self, index: u32) -> io::Result<Vec<(String, u32)>> {
        let m = Msg::new(RTM_GETTFILTER, NLM_F_DUMP, &tcmsg(index, 0, TC_H_CLSACT_INGRESS, 0));
        let mut found = Vec::new();
        let r = self.exchange(m, |p| {
            let Some(a) = p.get(20..) else { return };
            if find(a, TCA_KIND).map(cstr).as_deref() != Some("bpf") {
                return;
            }
            let Some(opts) = find(a, TCA_OPTIONS) else { return };
            if let (Some(name), Some(id)) =
                (find(opts, TCA_BPF_NAME).map(cstr), find(opts, TCA_BPF_ID).and_then(|b| u32_at(b, 0)))
            {
                found.push((name, id));
            }
        });
        match r {
            Ok(()) => Ok(found),
            // No clsact qdisc: no programs.
            Err(e) if matches!(e.errno(), Some(libc::EINVAL | libc::ENOENT)) => Ok(found),
            Err(e) => Err(e.context(&format!("list the tc programs on the ingress of link #{index}"))),
        }
    }

    /// Names of the links whose master is `bridge_index` (a dump of RTM_GETLINK).
    pub fn ports_of(&mut self, bridge_index: u32) -> io::Result<Vec<String>> {
        let mut tries = 0;
        loop {
            let mut m = Msg::new(RTM_GETLINK, NLM_F_DUMP, &ifinfo(0, 0, 0));
            // The kernel filters on the master itself; the check below is for kernels that don't.
            m.attr(IFLA_MASTER, &bridge_index.to_ne_bytes());
            let mut names = Vec::new();
            let r = self.exchange(m, |p| {
                if let Some(l) = parse_link(p)
                    && l.master == Some(bridge_index)
                {
                    names.push(l.name);
                }
            });
            match r {
                Ok(()) => return Ok(names),
                // The links changed during the dump: read them again.
                Err(e) if e.errno() == Some(libc::EINTR) && tries < 5 => tries += 1,
                Err(e) => return Err(e.context(&format!("list the ports of bridge #{bridge_index}"))),
            }
        }
    }
}

fn random_mac() -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom(2) into a 6-byte buffer.
    if unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) } != 6 {
        return Err(ctx(io::Error::last_os_error(), "random MAC address for a bridge"));
    }
    mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
    Ok(mac)
}

/// An errno that keeps an error's kind across the pipe of [`in_netns`].
fn errno_of(e: &io::Error) -> i32 {
    use io::ErrorKind::*;
    e.raw_os_error().unwrap_or(match e.kind() {
        NotFound => libc::ENOENT,
        AlreadyExists => libc::EEXIST,
        PermissionDenied => libc::EPERM,
        InvalidInput => libc::EINVAL,
        TimedOut => libc::ETIMEDOUT,
        _ => 0,
    })
}

/// Runs `f` in a forked child that has joined `netns` with setns, returns its result (the error
/// text travels back through a pipe). The caller never changes namespace. Meant for
/// single-threaded callers (the engine's per-container monitor): the child runs ordinary Rust
/// and then _exits, never returning into the caller's code.
pub fn in_netns(netns: BorrowedFd, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) into a two-element array; both fds are owned right away.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ctx(io::Error::last_os_error(), "in_netns: pipe"));
    }
    // SAFETY: fresh fds from pipe2.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs `f` and then _exits (see above).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ctx(io::Error::last_os_error(), "in_netns: fork"));
    }
    if pid == 0 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: setns(2) with a borrowed namespace fd, in this child only.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(ctx(io::Error::last_os_error(), "join the network namespace"));
            }
            f()
        }));
        // The report: 0 for success, or 1, the errno (0 if none) and the message.
        let mut report = Vec::new();
        match result {
            Ok(Ok(())) => report.push(0),
            Ok(Err(e)) => {
                report.push(1);
                report.extend_from_slice(&errno_of(&e).to_ne_bytes());
                report.extend_from_slice(e.to_string().as_bytes());
            }
            Err(_) => {
                report.push(1);
                report.extend_from_slice(&0i32.to_ne_bytes());
                report.extend_from_slice(b"panicked inside the network namespace");
            }
        }
        report.truncate(REPORT_MAX);
        let mut at = 0;
        while at < report.len() {
            // SAFETY: write(2) from our buffer to our pipe.
            let n = unsafe { libc::write(wr.as_raw_fd(), report[at..].as_ptr().cast(), report.len() - at) };
            if n <= 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
            at += n.max(0) as usize;
        }
        // SAFETY: leave without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(0) };
    }
    drop(wr);
    let mut report = Vec::new();
    let read = std::fs::File::from(rd).take(REPORT_MAX as u64).read_to_end(&mut report);
    let mut status = 0;
    // If someone else reaps children (ECHILD), the report alone tells the outcome.
    // SAFETY: waitpid(2) on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    read.map_err(|e| ctx(e, "in_netns: read the child's report"))?;
    match report.split_first() {
        Some((0, _)) => Ok(()),
        Some((_, rest)) => {
            let errno = bytes(rest, 0).map(i32::from_ne_bytes).unwrap_or(0);
            let text = String::from_utf8_lossy(rest.get(4..).unwrap_or_default());
            let kind = if errno > 0 { io::Error::from_raw_os_error(errno).kind() } else { io::ErrorKind::Other };
            Err(io::Error::new(kind, text.into_owned()))
        }
        None => Err(io::Error::other(format!("in_netns: the child ended without a report (wait status {status:#x})"))),
    }
}

/// What the engine asks for to connect one container to one bridge network.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// e.g. "berth0"
    pub bridge: &'a str,
    /// The bridge's own address.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    pub mtu: Option<u32>,
    /// The host-side name (at most 15 bytes, chosen by the engine).
    pub host_veth: &'a str,
    /// The name inside the container: "eth0", "eth1", ...
    pub ifname: &'a str,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// false for --internal networks and for a container's second and later networks.
    pub default_route: bool,
}

fn write_one(path: &str) -> io::Result<()> {
    std::fs::write(path, "1").map_err(|e| ctx(e, &format!("write 1 to {path}")))
}

/// Makes sure the bridge exists, has `gateway/prefix` and is up; sets route_localnet on it (so
/// that DNAT from 127.0.0.1 to containers works) and, when `forward`, ip_forward. Idempotent and
/// safe when two processes race to do it.
pub fn ensure_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8, mtu: Option<u32>, forward: bool) -> io::Result<()> {
    let mut nl = Netlink::open()?;
    let index = nl.create_bridge(bridge, mtu)?;
    nl.add_address(index, gateway, prefix).map_err(|e| ctx(e, bridge))?;
    nl.set_up(index).map_err(|e| ctx(e, bridge))?;
    // The name passed check_name in create_bridge: no '/' or "..".
    write_one(&format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))?;
    if forward {
        write_one("/proc/sys/net/ipv4/ip_forward")?;
    }
    Ok(())
}

/// The veth pair (peer named `ifname` created inside `netns`), host end enslaved to the bridge
/// and up; then inside the namespace: lo up, the address, the interface up, and the default
/// route via the gateway when asked. On any error, removes the host veth it made.
pub fn attach(netns: BorrowedFd, a: &Attachment) -> io::Result<()> {
    let mut nl = Netlink::open()?;
    let what = format!("connect {} ({} in the container) to bridge {}", a.host_veth, a.ifname, a.bridge);
    let missing = |name: &str| io::Error::new(io::ErrorKind::NotFound, format!("{what}: no link {name}"));
    let bridge_link = nl.get_link(a.bridge)?.ok_or_else(|| missing(a.bridge))?;
    let bridge = bridge_link.index;
    nl.create_veth(a.host_veth, a.ifname, netns, a.mtu, Some(a.mac))?;
    let done = (|| {
        let host = nl.link_index(a.host_veth)?.ok_or_else(|| missing(a.host_veth))?;
        nl.set_master(host, bridge)?;
        nl.set_up(host)?;
        // Best effort: without it, frames take the bridge (see the bypass module).
        let _ = crate::bypass::join(&mut nl, bridge, bridge_link.address, host, a.mac);
        in_netns(netns, || {
            let mut nl = Netlink::open()?;
            let lo = nl.link_index("lo")?.ok_or_else(|| missing("lo"))?;
            nl.set_up(lo)?;
            let index = nl.link_index(a.ifname)?.ok_or_else(|| missing(a.ifname))?;
            nl.add_address(index, a.ip, a.prefix)?;
            nl.set_up(index)?;
            if a.default_route {
                nl.add_default_route(a.gateway)?;
            }
            Ok(())
        })
    })();
    if let Err(e) = done {
        // Deleting the host end takes the peer with it.
        let _ = nl.delete_link(a.host_veth);
        let _ = crate::bypass::forget(&mut nl, bridge, a.mac, None);
        return Err(ctx(e, &what));
    }
    Ok(())
}

/// Deletes the host end of a container's veth if it is still there (the kernel removes the pair
/// itself when the container's namespace dies; this is for disconnect and for crash repair).
pub fn detach(host_veth: &str) -> io::Result<()> {
    Netlink::open()?.delete_link(host_veth).map(|_| ())
}

/// Deletes the bridge when no link is enslaved to it any more; returns whether it did.
pub fn remove_bridge_if_unused(bridge: &str) -> io::Result<bool> {
    let mut nl = Netlink::open()?;
    let Some(link) = nl.get_link(bridge)? else { return Ok(false) };
    if link.kind.as_deref() != Some("bridge") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("remove bridge {bridge}: that link is not a bridge"),
        ));
    }
    if !bridge_is_ours(&link) {
        // Someone else's bridge of the same name: left alone.
        return Ok(false);
    }
    if !nl.ports_of(link.index)?.is_empty() {
        return Ok(false);
    }
    nl.delete_link(bridge)
}

/// Deletes the bridge of a network being removed, ports and all, if it is berth's (see
/// [`bridge_is_ours`]); returns whether it did.
pub fn remove_bridge(bridge: &str) -> io::Result<bool> {
    let mut nl = Netlink::open()?;
    match nl.get_link(bridge)? {
        Some(l) if l.kind.as_deref() == Some("bridge") && bridge_is_ours(&l) => nl.delete_link(bridge),
        _ => Ok(false),
    }
}

/// Brings `lo` up (used for --network none containers, inside in_netns).
pub fn loopback_up() -> io::Result<()> {
    let mut nl = Netlink::open()?;
    let lo = nl.link_index("lo")?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no loopback link"))?;
    nl.set_up(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_aligned_and_sized() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfo(7, 0, 0));
        m.attr(IFLA_IFNAME, &cstring("ab")); // 4 + 3 bytes, padded to 8
        m.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth").begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        m.put(&ifinfo(0, 0, 0)).attr(IFLA_IFNAME, &cstring("eth0"));
        m.end().end().end();
        let b = m.finish(42);
        assert_eq!(b.len() % 4, 0);
        let (ty, flags, seq, payload) = messages(&b).next().unwrap();
        assert_eq!((ty, flags, seq), (RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 42));
        assert_eq!(u32_at(payload, 4), Some(7));
        let a: Vec<_> = attrs(&payload[IFINFO..]).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (IFLA_IFNAME, &b"ab\0"[..]));
        let info = a[1].1;
        assert_eq!(find(info, IFLA_INFO_KIND), Some(&b"veth"[..]));
        let peer = find(find(info, IFLA_INFO_DATA).unwrap(), VETH_INFO_PEER).unwrap();
        assert_eq!(peer.len(), IFINFO + 12);
        assert_eq!(find(&peer[IFINFO..], IFLA_IFNAME), Some(&b"eth0\0"[..]));
    }

    #[test]
    fn links_and_acks_parse() {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfo(9, 0, 0));
        m.attr(IFLA_IFNAME, &cstring("vb1")).attr(IFLA_MASTER, &3u32.to_ne_bytes());
        m.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth").end();
        let b = m.finish(1);
        let link = parse_link(&b[HDR..]).unwrap();
        assert_eq!(
            link,
            Link {
                index: 9,
                name: "vb1".into(),
                master: Some(3),
                kind: Some("veth".into()),
                alias: None,
                address: None
            }
        );

        // An error with the capped echo and an extended-ack message.
        let mut p = (-libc::EEXIST).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; HDR]);
        let mut tlv = Msg { buf: Vec::new(), nests: Vec::new() };
        tlv.attr(NLMSGERR_ATTR_MSG, b"already there\0");
        p.extend_from_slice(&tlv.buf);
        match parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p) {
            Err(NlError::Kernel(e, Some(t))) => assert_eq!((e, t.as_str()), (libc::EEXIST, "already there")),
            other => panic!("{other:?}"),
        }
        assert!(parse_ack(0, &0i32.to_ne_bytes()).is_ok());
        assert!(parse_ack(0, &[1, 2]).is_err());
    }

    #[test]
    fn malformed_input_does_not_panic() {
        let cases: [&[u8]; 6] = [&[], &[3, 0], &[2, 0, 1, 0], &[255, 255, 1, 0, 1], &[8, 0, 1, 0, 1, 2], &[0; 40]];
        for c in cases {
            let _ = attrs(c).count();
            let _ = messages(c).count();
            let _ = parse_link(c);
            let _ = parse_ack(NLM_F_ACK_TLVS, c);
            let _ = parse_ack(NLM_F_ACK_TLVS | NLM_F_CAPPED, c);
        }
        // An error whose echoed length points far past the end.
        let mut p = (-1i32).to_ne_bytes().to_vec();
        p.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(parse_ack(NLM_F_ACK_TLVS, &p), Err(NlError::Kernel(1, None))));
    }

    #[test]
    fn interface_names_are_checked() {
        for ok in ["eth0", "berth0", "abcdefghijklmno"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "abcdefghijklmnop", "a/b", "a b", "a:1", ".", "..", "a\0"] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(check_name("abcdefghijklmnop").unwrap_err().to_string().contains("16 bytes"));
    }
}
