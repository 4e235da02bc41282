//! The per-network DNS server against real loopback sockets: a server in a background thread
//! on 127.0.0.1 (random port), asked over UDP and TCP by hand-made queries, by a fake upstream
//! for forwarding, and by busybox's nslookup. No network namespace: loopback traffic only.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use berth_network::dns::{self, DOMAIN, Server};

const A: u16 = 1;
const PTR: u16 = 12;
const AAAA: u16 = 28;
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const REFUSED: u8 = 5;

/// A server running in a thread. Dropping it removes the records file, which must make the
/// server return, and joins it (so a failing test leaves no thread behind either).
struct Running {
    _dir: tempfile::TempDir,
    records: PathBuf,
    addr: SocketAddr,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn start(records: &str, upstreams: Vec<SocketAddr>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records");
        std::fs::write(&path, records).unwrap();
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), &path, upstreams).unwrap();
        let addr = server.local_addr().unwrap();
        let thread = thread::spawn(move || server.run());
        Running { _dir: dir, records: path, addr, thread: Some(thread) }
    }

    /// Replaces the records file the way the engine does: write aside, rename over.
    fn rewrite(&self, text: &str) {
        let tmp = self.records.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.records).unwrap();
    }

    /// Removes the records file and waits for the server; returns how long it took.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let _ = std::fs::remove_file(&self.records);
        if let Some(thread) = self.thread.take() {
            let result = thread.join().expect("server thread panicked");
            result.expect("serve returned an error");
        }
        started.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = std::fs::remove_file(&self.records);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

#[derive(Debug)]
struct Reply {
    id: u16,
    flags: u16,
    rcode: u8,
    question: Option<(String, u16)>,
    /// (type, rdata) of each answer.
    answers: Vec<(u16, Vec<u8>)>,
}

impl Reply {
    fn addrs(&self) -> Vec<Ipv4Addr> {
        self.answers
            .iter()
            .filter(|(t, d)| *t == A && d.len() == 4)
            .map(|(_, d)| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
            .collect()
    }
    fn authoritative(&self) -> bool {
        self.flags & 0x0400 != 0
    }
}

/// Reads a possibly compressed name at `pos`; returns its text and the offset after it.
fn read_name(p: &[u8], mut pos: usize) -> (String, usize) {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = p[pos] as usize;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(pos + 2);
            pos = (len & 0x3f) << 8 | p[pos + 1] as usize;
            continue;
        }
        if len == 0 {
            return (labels.join("."), end.unwrap_or(pos + 1));
        }
        labels.push(String::from_utf8_lossy(&p[pos + 1..pos + 1 + len]).into_owned());
        pos += 1 + len;
    }
    panic!("name loops");
}

fn parse(p: &[u8]) -> Reply {
    assert!(p.len() >= 12, "short reply {p:?}");
    let word = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let (qd, an) = (word(4), word(6));
    let mut pos = 12;
    let mut question = None;
    for _ in 0..qd {
        let (name, next) = read_name(p, pos);
        question = Some((name, word(next)));
        pos = next + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (_, next) = read_name(p, pos);
        let rtype = word(next);
        let rdlen = word(next + 8) as usize;
        let start = next + 10;
        answers.push((rtype, p[start..start + rdlen].to_vec()));
        pos = start + rdlen;
    }
    Reply { id: word(0), flags: word(2), rcode: (word(2) & 0xf) as u8, question, answers }
}

fn udp_raw(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match socket.recv_from(&mut buf) {
        Ok((len, _)) => Some(buf[..len].to_vec()),
        Err(_) => None,
    }
}

fn udp(server: SocketAddr, id: u16, name: &str, qtype: u16) -> Reply {
    let raw = udp_raw(server, &query(id, name, qtype)).unwrap_or_else(|| panic!("no UDP reply for {name}"));
    let reply = parse(&raw);
    assert_eq!(reply.id, id);
    assert_ne!(reply.flags & 0x8000, 0, "QR");
    reply
}

/// Sends all queries on one TCP connection, then reads one reply per query.
fn tcp(server: SocketAddr, queries: &[Vec<u8>]) -> Vec<Reply> {
    let mut stream = TcpStream::connect(server).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    for q in queries {
        stream.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        stream.write_all(q).unwrap();
    }
    queries
        .iter()
        .map(|_| {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut body).unwrap();
            parse(&body)
        })
        .collect()
}

const RECORDS: &str = "\
# berth records
10.89.0.2 web www 0123456789ab
10.89.0.3 db

garbage line
10.89.0.4 web
";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 89, 0, last)
}

#[test]
fn a_records_over_udp() {
    let mut s = Running::start(RECORDS, vec![]);
    let r = udp(s.addr, 0x1111, "web", A);
    assert_eq!((r.rcode, r.addrs()), (NOERROR, vec![ip(2), ip(4)]));
    assert!(r.authoritative());
    assert_eq!(r.question, Some(("web".to_string(), A)));
    for name in ["WeB", "web.", "web.dns.berth", "WEB.DNS.BERTH.", "www", "0123456789AB"] {
        let r = udp(s.addr, 7, name, A);
        assert_eq!(r.rcode, NOERROR, "{name}");
        assert_eq!(r.addrs()[0], ip(2), "{name}");
    }
    // The question comes back in the case it was asked (0x20 randomisation).
    assert_eq!(udp(s.addr, 8, "dB", A).question, Some(("dB".to_string(), A)));
    assert_eq!(udp(s.addr, 9, "db", A).addrs(), vec![ip(3)]);
    // Unknown names in our domain are ours to deny; other unknown names have nowhere to go.
    assert_eq!(udp(s.addr, 10, &format!("nope.{DOMAIN}"), A).rcode, NXDOMAIN);
    assert_eq!(udp(s.addr, 11, "nope", A).rcode, REFUSED);
    assert!(s.stop() < Duration::from_secs(3));
}

#[test]
fn a_records_over_tcp() {
    let s = Running::start(RECORDS, vec![]);
    let replies = tcp(s.addr, &[query(1, "web", A), query(2, "db.dns.berth", A), query(3, "www", AAAA)]);
    assert_eq!(replies.len(), 3);
    assert_eq!((replies[0].id, replies[0].addrs()), (1, vec![ip(2), ip(4)]));
    assert_eq!((replies[1].id, replies[1].addrs()), (2, vec![ip(3)]));
    assert_eq!((replies[2].id, replies[2].rcode, replies[2].answers.len()), (3, NOERROR, 0));
    // A second connection, while the first is closed.
    let again = tcp(s.addr, &[query(4, "DB", A)]);
    assert_eq!(again[0].addrs(), vec![ip(3)]);
}

#[test]
fn aaaa_and_other_types_of_known_names_are_empty() {
    let s = Running::start(RECORDS, vec![]);
    for qtype in [AAAA, 15 /* MX */, 16 /* TXT */] {
        let r = udp(s.addr, 5, "web", qtype);
        assert_eq!((r.rcode, r.answers.len()), (NOERROR, 0), "type {qtype}");
    }
}

#[test]
fn ptr_of_container_addresses() {
    let s = Running::start(RECORDS, vec![]);
    let r = udp(s.addr, 6, "2.0.89.10.in-addr.arpa", PTR);
    assert_eq!(r.rcode, NOERROR);
    assert_eq!(r.answers.len(), 1);
    let (rtype, rdata) = &r.answers[0];
    assert_eq!(*rtype, PTR);
    assert_eq!(read_name(rdata, 0).0, "web.dns.berth");
}

#[test]
fn reload_after_rewrite() {
    let s = Running::start(RECORDS, vec![]);
    assert_eq!(udp(s.addr, 1, "db", A).addrs(), vec![ip(3)]);
    s.rewrite("10.89.0.9 db\n10.89.0.10 cache\n");
    assert_eq!(udp(s.addr, 2, "db", A).addrs(), vec![ip(9)]);
    assert_eq!(udp(s.addr, 3, "cache", A).addrs(), vec![ip(10)]);
    assert_eq!(udp(s.addr, 4, "web.dns.berth", A).rcode, NXDOMAIN);
    // Written in place, same size: the mtime tells (after a clock tick or two).
    thread::sleep(Duration::from_millis(50));
    std::fs::write(&s.records, "10.89.0.8 db\n10.89.0.10 cache\n").unwrap();
    assert_eq!(tcp(s.addr, &[query(5, "db", A)])[0].addrs(), vec![ip(8)]);
}

/// A fake upstream: answers every A query with 192.0.2.1 and reports what it saw.
struct Upstream {
    addr: SocketAddr,
    seen: mpsc::Receiver<(u16, String)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, seen) = mpsc::channel();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::SeqCst) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
                let q = &buf[..len];
                let (name, end) = read_name(q, 12);
                let _ = tx.send((u16::from_be_bytes([q[0], q[1]]), name));
                let mut reply = q[..end + 4].to_vec();
                reply[2] = 0x81; // QR, RD
                reply[3] = 0x80; // RA, NOERROR
                reply[4..12].copy_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
                let _ = socket.send_to(&reply, from);
            }
        });
        Upstream { addr, seen, stop, thread: Some(thread) }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn unknown_names_are_forwarded() {
    let upstream = Upstream::start();
    let s = Running::start(RECORDS, vec![upstream.addr]);

    let r = udp(s.addr, 0xabcd, "example.test", A);
    assert_eq!((r.rcode, r.addrs()), (NOERROR, vec![Ipv4Addr::new(192, 0, 2, 1)]));
    assert!(!r.authoritative());
    let (_, name) = upstream.seen.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(name, "example.test");

    // Over TCP too (forwarded over UDP, relayed on the stream with the client's id).
    let replies = tcp(s.addr, &[query(0x0102, "Other.Example", A), query(0x0304, "web", A)]);
    assert_eq!((replies[0].id, replies[0].addrs()), (0x0102, vec![Ipv4Addr::new(192, 0, 2, 1)]));
    assert_eq!((replies[1].id, replies[1].addrs()), (0x0304, vec![ip(2), ip(4)]));
    assert_eq!(upstream.seen.recv_timeout(Duration::from_secs(1)).unwrap().1, "Other.Example");

    // Local names and our own domain never reach the upstream.
    udp(s.addr, 1, "web", A);
    udp(s.addr, 2, "web", AAAA);
    udp(s.addr, 3, "nope.dns.berth", A);
    assert!(upstream.seen.recv_timeout(Duration::from_millis(300)).is_err());
}

/// An upstream whose UDP answers are truncated (TC, no records) and whose TCP answer on the
/// same port is whole: TCP clients must get the whole answer, UDP clients the truncated one.
#[test]
fn truncated_upstream_answers_are_asked_again_over_tcp_for_tcp_clients() {
    let udp_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp_socket.local_addr().unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    udp_socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = |q: &[u8], truncated: bool| {
        let (_, end) = read_name(q, 12);
        let mut reply = q[..end + 4].to_vec();
        reply[2] = if truncated { 0x83 } else { 0x81 };
        reply[3] = 0x80;
        reply[4..12].copy_from_slice(&[0, 1, 0, u8::from(!truncated), 0, 0, 0, 0]);
        if !truncated {
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 7]);
        }
        reply
    };
    let fake = thread::spawn(move || {
        // UDP for the TCP client, TCP again, then UDP for the UDP client.
        let mut buf = [0u8; 4096];
        let (len, from) = udp_socket.recv_from(&mut buf).unwrap();
        udp_socket.send_to(&answer(&buf[..len], true), from).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut q).unwrap();
        let reply = answer(&q, false);
        stream.write_all(&(reply.len() as u16).to_be_bytes()).unwrap();
        stream.write_all(&reply).unwrap();
        let (len, from) = udp_socket.recv_from(&mut buf).unwrap();
        udp_socket.send_to(&answer(&buf[..len], true), from).unwrap();
    });
    let s = Running::start(RECORDS, vec![addr]);
    let r = &tcp(s.addr, &[query(0x2222, "big.example", A)])[0];
    assert_eq!((r.id, r.flags & 0x0200, r.addrs()), (0x2222, 0, vec![Ipv4Addr::new(198, 51, 100, 7)]));
    let r = udp(s.addr, 0x3333, "big.example", A);
    assert_eq!((r.flags & 0x0200, r.answers.len()), (0x0200, 0));
    fake.join().unwrap();
}

#[test]
fn servfail_when_upstreams_are_dead() {
    // A port nobody listens on (bound, then closed): the kernel answers port unreachable.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s = Running::start(RECORDS, vec![dead]);
    let r = udp(s.addr, 0x5151, "example.test", A);
    assert_eq!(r.rcode, SERVFAIL);
    assert_eq!(r.question, Some(("example.test".to_string(), A)));
    // Local names still work.
    assert_eq!(udp(s.addr, 2, "db", A).addrs(), vec![ip(3)]);

    // A dead upstream first, then a live one: the live one answers.
    let upstream = Upstream::start();
    let s2 = Running::start(RECORDS, vec![dead, upstream.addr]);
    assert_eq!(udp(s2.addr, 3, "example.test", A).addrs(), vec![Ipv4Addr::new(192, 0, 2, 1)]);
}

#[test]
fn local_names_are_answered_while_forwards_hang() {
    // An upstream that never answers: forwarded queries wait out their timeout in their threads.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = Running::start(RECORDS, vec![silent.local_addr().unwrap()]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // More than the 64 forwards allowed in flight.
    for id in 0..70u16 {
        client.send_to(&query(id, "slow.example", A), s.addr).unwrap();
    }
    let started = Instant::now();
    assert_eq!(udp(s.addr, 1000, "web", A).addrs(), vec![ip(2), ip(4)]);
    assert!(started.elapsed() < Duration::from_millis(500));
    // The 6 over the limit get SERVFAIL at once, the others after the upstream timeout.
    client.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut buf = [0u8; 512];
    let mut ids = Vec::new();
    while ids.len() < 70 {
        let (len, _) = client.recv_from(&mut buf).unwrap();
        let reply = parse(&buf[..len]);
        assert_eq!(reply.rcode, SERVFAIL);
        ids.push((reply.id, started.elapsed()));
    }
    let quick = ids.iter().filter(|(_, t)| *t < Duration::from_millis(1500)).count();
    assert_eq!(quick, 6, "{ids:?}");
    ids.sort();
    assert!(ids.iter().map(|(id, _)| *id).eq(0..70));
}

#[test]
fn hostile_packets_do_not_hurt() {
    let s = Running::start(RECORDS, vec![]);
    // Too short: dropped (no reply).
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(&[1, 2, 3], s.addr).unwrap();
    // A response: dropped.
    let mut response = query(1, "web", A);
    response[2] |= 0x80;
    socket.send_to(&response, s.addr).unwrap();

    let mut header = vec![0x77, 0x77, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let formerr = |packet: &[u8]| parse(&udp_raw(s.addr, packet).expect("no reply")).rcode;
    // Pointer loop.
    let mut p = header.clone();
    p.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(formerr(&p), FORMERR);
    // Label over 63.
    let mut p = header.clone();
    p.push(70);
    p.extend_from_slice(&[b'a'; 70]);
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(formerr(&p), FORMERR);
    // qdcount 0 and 5.
    header[5] = 0;
    assert_eq!(formerr(&header), FORMERR);
    let mut p = query(0x7777, "web", A);
    p[5] = 5;
    assert_eq!(formerr(&p), FORMERR);

    // Over TCP: a zero-length message and a truncated header close the connection, nothing else.
    for junk in [&[0u8, 0][..], &[0, 3, 1, 2, 3][..], &[0xff, 0xff, 1][..]] {
        let mut stream = TcpStream::connect(s.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
        stream.write_all(junk).unwrap();
        if junk.len() == 3 {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }

    // Still serving.
    assert_eq!(udp(s.addr, 1, "web", A).addrs(), vec![ip(2), ip(4)]);
}

#[test]
fn stops_when_the_records_file_goes_even_with_idle_connections() {
    let mut s = Running::start(RECORDS, vec![]);
    let idle = TcpStream::connect(s.addr).unwrap();
    udp(s.addr, 1, "web", A);
    let took = s.stop();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    drop(idle);
}

#[test]
fn missing_records_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = dns::serve("127.0.0.1:0".parse().unwrap(), &dir.path().join("none"), vec![]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn upstreams_from_resolv_conf() {
    let got = dns::upstreams("nameserver 10.0.0.1\nnameserver ::1\n# nameserver 10.0.0.2\n");
    assert_eq!(got, vec!["10.0.0.1:53".parse::<SocketAddr>().unwrap(), "[::1]:53".parse().unwrap()]);
}

fn busybox() -> Option<&'static Path> {
    let path = Path::new("/usr/bin/busybox");
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: no /usr/bin/busybox");
        None
    }
}

#[test]
fn busybox_nslookup() {
    let Some(busybox) = busybox() else { return };
    let upstream = Upstream::start();
    let s = Running::start(RECORDS, vec![upstream.addr]);
    let port = format!("-port={}", s.addr.port());
    let run = |args: &[&str]| {
        let out = Command::new(busybox).arg("nslookup").args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };

    let (ok, text) = run(&[&port, "web", "127.0.0.1"]);
    assert!(ok, "{text}");
    assert!(text.contains("10.89.0.2") && text.contains("10.89.0.4"), "{text}");
    let (ok, text) = run(&[&port, "db.dns.berth", "127.0.0.1"]);
    assert!(ok && text.contains("10.89.0.3"), "{text}");
    let (ok, text) = run(&[&port, "example.test", "127.0.0.1"]);
    assert!(ok && text.contains("192.0.2.1"), "{text}");
    let (ok, text) = run(&[&port, "10.89.0.3", "127.0.0.1"]);
    assert!(ok && text.contains("db.dns.berth"), "{text}");
    let (ok, text) = run(&[&port, "nope.dns.berth", "127.0.0.1"]);
    assert!(!ok && text.contains("NXDOMAIN"), "{text}");
}
