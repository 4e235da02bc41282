//! berth's nftables table with real traffic, all inside throwaway network namespaces:
//!
//! ```text
//!   world 192.0.2.2 --- wan 192.0.2.1 [host] br1 10.77.1.1/24 --- a 10.77.1.2, b 10.77.1.3
//!   (no route back                           br2 10.77.2.1/24 --- c 10.77.2.2
//!    to 10.77.x)
//! ```
//!
//! TCP servers are `busybox httpd` with a CGI that prints who the server saw as the client;
//! busybox nc cannot do UDP, so the UDP server is a thread of this test inside a's namespace.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_network::firewall::{self, NetworkRules, PortRule, Proto};
use berth_testkit::leak::Guard;
use berth_testkit::netns::NetNs;

const BUSYBOX: &str = "/bin/busybox";

/// Runs `f` on a thread that has joined `ns`; what it spawns (nft) runs there too.
fn in_ns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    let path = ns.path();
    std::thread::scope(|s| {
        s.spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn enter(path: &str) {
    let f = File::open(path).unwrap();
    // SAFETY: setns on a namespace fd; it only affects the calling thread.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {path}");
}

fn run(ns: &NetNs, prog: &str, args: &str) {
    let out = ns.command(prog).args(args.split_whitespace()).output().unwrap();
    assert!(out.status.success(), "{prog} {args}: {}", String::from_utf8_lossy(&out.stderr));
}

fn ip(ns: &NetNs, args: &str) {
    run(ns, "ip", args);
}

fn nft_load(ns: &NetNs, script: &str) {
    let mut nft = ns.command("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft -f: {script}");
}

fn sysctl(ns: &NetNs, kv: &str) {
    run(ns, BUSYBOX, &format!("sysctl -w {kv}"));
}

/// A container namespace joined to `bridge` in `host` by a veth pair.
fn container(host: &NetNs, bridge: &str, veth: &str, addr: &str, gw: &str) -> NetNs {
    let ns = NetNs::new().unwrap();
    ip(host, &format!("link add {veth} type veth peer name eth0 netns {}", ns.path()));
    ip(host, &format!("link set {veth} master {bridge} up"));
    ip(&ns, &format!("addr add {addr} dev eth0"));
    ip(&ns, "link set eth0 up");
    ip(&ns, &format!("route add default via {gw}"));
    ns
}

/// Kills the server when the test ends, also on panic.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// httpd in `ns` whose /cgi-bin/who answers "<name> <client address>".
fn httpd(guard: &Guard, ns: &NetNs, name: &str) -> Server {
    let home = guard.path(name);
    std::fs::create_dir_all(home.join("cgi-bin")).unwrap();
    let cgi = home.join("cgi-bin/who");
    std::fs::write(
        &cgi,
        format!("#!{BUSYBOX} sh\necho 'Content-Type: text/plain'\necho\necho \"{name} $REMOTE_ADDR\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let child = ns
        .command(BUSYBOX)
        .args(["httpd", "-f", "-p", "0.0.0.0:80", "-h"])
        .arg(&home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(ns, "127.0.0.1:80", 2).is_none() {
        assert!(Instant::now() < deadline, "httpd in {name} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// GET http://addr/cgi-bin/who from `ns`, killed after `secs`: the body, None when it fails.
fn get(ns: &NetNs, addr: &str, secs: u32) -> Option<String> {
    let url = format!("http://{addr}/cgi-bin/who");
    let out = ns
        .command(BUSYBOX)
        .args(["timeout", "-s", "KILL", &secs.to_string(), BUSYBOX, "wget", "-q", "-O", "-", &url])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn reach(ns: &NetNs, addr: &str) -> String {
    get(ns, addr, 5).unwrap_or_else(|| panic!("{addr} could not be reached"))
}

fn blocked(ns: &NetNs, addr: &str) {
    if let Some(body) = get(ns, addr, 2) {
        panic!("{addr} should not be reachable, but answered {body:?}");
    }
}

/// A UDP server thread in `ns` answering "udp <client address>"; stopped when dropped.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(ns: &NetNs, port: u16) -> UdpEcho {
        let (path, stop) = (ns.path(), Arc::new(AtomicBool::new(false)));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&path);
            let sock = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(format!("udp {}", from.ip()).as_bytes(), from);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("udp server did not start");
        UdpEcho { stop, thread: Some(thread) }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn udp_ask(ns: &NetNs, to: &str) -> Option<String> {
    let to: SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.send_to(b"ping", to).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

fn net(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
    let subnet: berth_network::ipam::Subnet = subnet.parse().unwrap();
    NetworkRules { bridge: bridge.into(), subnet, gateway: subnet.first_host(), internal, masquerade: true }
}

fn port(proto: Proto, host_ip: Option<&str>, host_port: u16, container_ip: &str, container_port: u16) -> PortRule {
    PortRule {
        proto,
        host_ip: host_ip.map(|h| h.parse().unwrap()),
        host_port,
        bridge: "br1".into(),
        container_ip: container_ip.parse().unwrap(),
        container_port,
    }
}

/// The host namespace: forwarding on, two bridges (route_localnet as the engine sets it) and
/// an uplink to `world`.
fn host() -> NetNs {
    let host = NetNs::new().unwrap();
    sysctl(&host, "net.ipv4.ip_forward=1");
    for (br, addr) in [("br1", "10.77.1.1/24"), ("br2", "10.77.2.1/24")] {
        ip(&host, &format!("link add {br} type bridge"));
        ip(&host, &format!("addr add {addr} dev {br}"));
        ip(&host, &format!("link set {br} up"));
        sysctl(&host, &format!("net.ipv4.conf.{br}.route_localnet=1"));
    }
    host
}

#[test]
fn nat_published_ports_and_isolation() {
    if berth_testkit::need_root() {
        return;
    }
    let guard = Guard::new("fw");
    let host = host();
    let world = NetNs::new().unwrap();
    ip(&host, &format!("link add wan type veth peer name eth0 netns {}", world.path()));
    ip(&host, "addr add 192.0.2.1/24 dev wan");
    ip(&host, "link set wan up");
    ip(&world, "addr add 192.0.2.2/24 dev eth0");
    ip(&world, "link set eth0 up");
    let a = container(&host, "br1", "va", "10.77.1.2/24", "10.77.1.1");
    let b = container(&host, "br1", "vb", "10.77.1.3/24", "10.77.1.1");
    let c = container(&host, "br2", "vc", "10.77.2.2/24", "10.77.2.1");
    let _servers = [httpd(&guard, &a, "a"), httpd(&guard, &c, "c"), httpd(&guard, &world, "world")];
    let _udp = UdpEcho::start(&a, 5353);

    // Another table in the same namespace, which berth must leave alone.
    nft_load(&host, "table ip other { chain c { type filter hook input priority 10; policy accept; }\n}\n");

    // Without the table: plain routing between the networks works (the control for isolation
    // below), and nothing reaches the world (it has no route back).
    assert_eq!(in_ns(&host, firewall::current).unwrap(), None);
    assert_eq!(reach(&c, "10.77.1.2:80"), "a 10.77.2.2");
    blocked(&a, "192.0.2.2:80");

    let nets = [net("br1", "10.77.1.0/24", false), net("br2", "10.77.2.0/24", false)];
    let ports = [
        port(Proto::Tcp, None, 8080, "10.77.1.2", 80),
        port(Proto::Tcp, Some("127.0.0.1"), 8081, "10.77.1.2", 80),
        port(Proto::Udp, None, 5300, "10.77.1.2", 5353),
    ];
    in_ns(&host, || firewall::apply(&nets, &ports)).unwrap();
    let listed = in_ns(&host, firewall::current).unwrap().expect("table after apply");
    assert!(listed.contains(r#"comment "br1: *:8080/tcp -> 10.77.1.2:80""#), "{listed}");

    // Outbound NAT: the world sees the host's address.
    assert_eq!(reach(&a, "192.0.2.2:80"), "world 192.0.2.1");
    assert_eq!(reach(&c, "192.0.2.2:80"), "world 192.0.2.1");
    // Published TCP port from the host: through loopback (masqueraded to the gateway), the
    // gateway address and the uplink address.
    assert_eq!(reach(&host, "127.0.0.1:8080"), "a 10.77.1.1");
    assert_eq!(reach(&host, "10.77.1.1:8080"), "a 10.77.1.1");
    assert_eq!(reach(&host, "192.0.2.1:8080"), "a 192.0.2.1");
    // From outside, with the client's address kept.
    assert_eq!(reach(&world, "192.0.2.1:8080"), "a 192.0.2.2");
    // Hairpin: a container of the same network through the gateway.
    assert_eq!(reach(&b, "10.77.1.1:8080"), "a 10.77.1.1");
    // A published port is reachable from another network too (it is public).
    assert_eq!(reach(&c, "10.77.2.1:8080"), "a 10.77.1.1");
    // A port bound to 127.0.0.1 only.
    assert_eq!(reach(&host, "127.0.0.1:8081"), "a 10.77.1.1");
    blocked(&world, "192.0.2.1:8081");
    blocked(&b, "10.77.1.1:8081");
    // UDP.
    assert_eq!(udp_ask(&host, "127.0.0.1:5300").as_deref(), Some("udp 10.77.1.1"));
    assert_eq!(udp_ask(&world, "192.0.2.1:5300").as_deref(), Some("udp 192.0.2.2"));
    assert_eq!(udp_ask(&b, "10.77.1.1:5300").as_deref(), Some("udp 10.77.1.1"));
    // Isolation: the two networks cannot address each other's containers.
    blocked(&c, "10.77.1.2:80");
    blocked(&a, "10.77.2.2:80");
    // Inside one network, nothing changes.
    assert_eq!(reach(&b, "10.77.1.2:80"), "a 10.77.1.3");

    // br2 becomes internal: nothing in or out, not even to published ports or the world.
    let nets = [net("br1", "10.77.1.0/24", false), net("br2", "10.77.2.0/24", true)];
    in_ns(&host, || firewall::apply(&nets, &ports)).unwrap();
    blocked(&c, "192.0.2.2:80");
    blocked(&c, "10.77.2.1:8080");
    blocked(&a, "10.77.2.2:80");
    assert_eq!(reach(&a, "192.0.2.2:80"), "world 192.0.2.1");
    // Routed from outside: into br1 (control) but not into the internal br2.
    ip(&world, "route add 10.77.0.0/16 via 192.0.2.1");
    assert_eq!(reach(&world, "10.77.1.2:80"), "a 192.0.2.2");
    blocked(&world, "10.77.2.2:80");
    ip(&world, "route del 10.77.0.0/16 via 192.0.2.1");
    // The host itself still reaches it (that is not forwarding).
    assert_eq!(reach(&host, "10.77.2.2:80"), "c 10.77.2.1");

    // A state that nft cannot hold is refused before anything changes.
    let bad = [net("br1\" accept", "10.77.1.0/24", false)];
    assert!(in_ns(&host, || firewall::apply(&bad, &[])).is_err());
    assert_eq!(reach(&world, "192.0.2.1:8080"), "a 192.0.2.2");

    // Dropping the ports: the old rules are gone (the table is replaced as a whole).
    in_ns(&host, || firewall::apply(&nets, &[])).unwrap();
    blocked(&world, "192.0.2.1:8080");
    let listed = in_ns(&host, firewall::current).unwrap().expect("table");
    assert!(!listed.contains("dnat") && listed.contains("masquerade"), "{listed}");

    // Empty state: the table goes, twice in a row is fine, the other table stays.
    in_ns(&host, || firewall::apply(&[], &[])).unwrap();
    in_ns(&host, || firewall::apply(&[], &[])).unwrap();
    assert_eq!(in_ns(&host, firewall::current).unwrap(), None);
    blocked(&a, "192.0.2.2:80");
    let out = host.command("nft").args(["list", "tables"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "table ip other");
}

#[test]
fn apply_time_and_repair() {
    if berth_testkit::need_root() {
        return;
    }
    let host = host();
    let nets = [net("br1", "10.77.1.0/24", false)];
    // A table someone edited by hand (or a half-done state): apply puts it right.
    nft_load(&host, "table ip berth { chain junk { type filter hook input priority 0; policy drop; }\n}\n");
    let mut times = in_ns(&host, || {
        (0..20)
            .map(|_| {
                let t = Instant::now();
                firewall::apply(&nets, &[]).unwrap();
                t.elapsed()
            })
            .collect::<Vec<_>>()
    });
    let listed = in_ns(&host, firewall::current).unwrap().expect("table");
    assert!(!listed.contains("junk") && listed.contains("outbound NAT"), "{listed}");
    times.sort();
    eprintln!(
        "firewall::apply with 1 network and 0 ports: median {:?} (min {:?}, max {:?}) over 20",
        times[10], times[0], times[19]
    );
    let t = Instant::now();
    in_ns(&host, || firewall::apply(&[], &[])).unwrap();
    eprintln!("firewall::apply with the empty state: {:?}", t.elapsed());
    assert_eq!(in_ns(&host, firewall::current).unwrap(), None);
}
