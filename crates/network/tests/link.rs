//! The link layer against the real kernel, always inside throwaway namespaces: one plays the
//! host (the bridge lives there), others play containers.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use berth_network::ipam::{format_mac, mac_for};
use berth_network::netlink::{self, Attachment, Netlink};
use berth_testkit::netns::NetNs;

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn ns_file(ns: &NetNs) -> File {
    File::open(ns.path()).expect("open the namespace")
}

/// Runs `f` on a thread that has joined `ns`, so the library works there and never in the
/// machine's own namespace.
fn inside<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    let file = ns_file(ns);
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns(2) for this thread only.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// `ip` (or another command) inside `ns`: its stdout, or None when it failed.
fn run(ns: &NetNs, prog: &str, args: &[&str]) -> Option<String> {
    let out = ns.command(prog).args(args).output().expect("run a command in the namespace");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(ns: &NetNs, args: &[&str]) -> String {
    run(ns, "ip", args).unwrap_or_else(|| panic!("ip {args:?} failed"))
}

/// The flags of `ip -o link show` output, e.g. ["BROADCAST", "UP", "LOWER_UP"].
fn link_flags(line: &str) -> Vec<String> {
    let inner = line.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(f, _)| f).unwrap_or("");
    inner.split(',').map(str::to_string).collect()
}

fn attachment<'a>(host_veth: &'a str, ip: Ipv4Addr, default_route: bool) -> Attachment<'a> {
    Attachment {
        bridge: "br-test",
        gateway: GW,
        prefix: 24,
        mtu: Some(1400),
        host_veth,
        ifname: "eth0",
        ip,
        mac: mac_for(ip),
        default_route,
    }
}

fn ping(from: &NetNs, to: Ipv4Addr) -> bool {
    let to = to.to_string();
    (0..5).any(|_| run(from, "busybox", &["ping", "-c1", "-W1", &to]).is_some())
}

#[test]
fn bridge_attach_ping_detach() {
    let host = NetNs::new().unwrap();
    let (c1, c2) = (NetNs::new().unwrap(), NetNs::new().unwrap());
    let (ip1, ip2) = (Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3));

    // Twice in parallel (two engines racing), then once more: all succeed, one bridge, one address.
    std::thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| inside(&host, || netlink::ensure_bridge("br-test", GW, 24, Some(1400), true))))
            .collect();
        for r in racers {
            r.join().unwrap().unwrap();
        }
    });
    inside(&host, || netlink::ensure_bridge("br-test", GW, 24, Some(1400), true)).unwrap();
    let addrs = ip(&host, &["-o", "-4", "addr", "show", "dev", "br-test"]);
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    assert!(addrs.contains("inet 10.77.0.1/24"), "{addrs}");
    let link = ip(&host, &["-o", "link", "show", "br-test"]);
    assert!(link_flags(&link).contains(&"UP".to_string()), "{link}");
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(ip(&host, &["-o", "-d", "link", "show", "br-test"]).contains("bridge"));
    assert_eq!(run(&host, "cat", &["/proc/sys/net/ipv4/conf/br-test/route_localnet"]).unwrap().trim(), "1");
    assert_eq!(run(&host, "cat", &["/proc/sys/net/ipv4/ip_forward"]).unwrap().trim(), "1");

    let (f1, f2) = (ns_file(&c1), ns_file(&c2));
    inside(&host, || netlink::attach(f1.as_fd(), &attachment("vb-c1", ip1, true))).unwrap();
    inside(&host, || netlink::attach(f2.as_fd(), &attachment("vb-c2", ip2, false))).unwrap();
    // The same host name again is refused, and the first pair survives that.
    let again = inside(&host, || netlink::attach(f2.as_fd(), &attachment("vb-c1", ip2, false))).unwrap_err();
    assert!(again.to_string().contains("vb-c1"), "{again}");

    for (ns, ip_, default) in [(&c1, ip1, true), (&c2, ip2, false)] {
        let a = ip(ns, &["-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(a.contains(&format!("inet {ip_}/24")), "{a}");
        let l = ip(ns, &["-o", "link", "show", "eth0"]);
        assert!(link_flags(&l).contains(&"UP".to_string()), "{l}");
        assert!(l.contains("mtu 1400") && l.contains(&format!("link/ether {}", format_mac(&mac_for(ip_)))), "{l}");
        assert!(link_flags(&ip(ns, &["-o", "link", "show", "lo"])).contains(&"UP".to_string()));
        let routes = ip(ns, &["route", "show", "default"]);
        assert_eq!(routes.contains("default via 10.77.0.1 dev eth0"), default, "{routes}");
    }
    let mut ports = inside(&host, || {
        let mut nl = Netlink::open()?;
        let bridge = nl.link_index("br-test")?.expect("bridge");
        nl.ports_of(bridge)
    })
    .unwrap();
    ports.sort();
    assert_eq!(ports, ["vb-c1", "vb-c2"]);
    let host_ports = ip(&host, &["-o", "link", "show", "master", "br-test"]);
    assert!(host_ports.contains("vb-c1") && host_ports.contains("vb-c2"), "{host_ports}");

    assert!(ping(&c1, ip2), "c1 cannot reach c2 through the bridge");
    assert!(ping(&c2, GW), "c2 cannot reach the gateway");

    inside(&host, || netlink::detach("vb-c1")).unwrap();
    assert!(run(&host, "ip", &["link", "show", "vb-c1"]).is_none());
    assert!(run(&c1, "ip", &["link", "show", "eth0"]).is_none(), "the peer went with the host end");
    assert!(!inside(&host, || netlink::remove_bridge_if_unused("br-test")).unwrap(), "vb-c2 is still a port");
    inside(&host, || netlink::detach("vb-c2")).unwrap();
    inside(&host, || netlink::detach("vb-c2")).unwrap(); // already gone: fine
    assert!(inside(&host, || netlink::remove_bridge_if_unused("br-test")).unwrap());
    assert!(!inside(&host, || netlink::remove_bridge_if_unused("br-test")).unwrap());
    assert!(run(&host, "ip", &["link", "show", "br-test"]).is_none());
}

#[test]
fn errors_are_clear_and_leave_nothing_behind() {
    let host = NetNs::new().unwrap();
    let c = NetNs::new().unwrap();
    let f = ns_file(&c);
    let long = "abcdefghijklmnop"; // 16 bytes
    let e = inside(&host, || netlink::ensure_bridge(long, GW, 24, None, false)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains(long) && e.to_string().contains("16 bytes"), "{e}");
    let e = inside(&host, || netlink::attach(f.as_fd(), &attachment(long, GW, false))).unwrap_err();
    assert!(e.to_string().contains(long), "{e}");
    assert!(inside(&host, || Netlink::open()?.delete_link(long)).is_err());

    // No bridge yet.
    let e = inside(&host, || netlink::attach(f.as_fd(), &attachment("vb-x", Ipv4Addr::new(10, 77, 0, 5), true)))
        .unwrap_err();
    assert!(e.to_string().contains("br-test"), "{e}");

    // A failure inside the container (a gateway outside its subnet) removes the pair again.
    inside(&host, || netlink::ensure_bridge("br-test", GW, 24, None, false)).unwrap();
    let mut a = attachment("vb-x", Ipv4Addr::new(10, 77, 0, 5), true);
    a.gateway = Ipv4Addr::new(10, 99, 0, 1);
    let e = inside(&host, || netlink::attach(f.as_fd(), &a)).unwrap_err();
    assert!(e.to_string().contains("default route via 10.99.0.1"), "{e}");
    eprintln!("as reported: {e}");
    assert!(run(&host, "ip", &["link", "show", "vb-x"]).is_none(), "host veth left behind");
    assert!(run(&c, "ip", &["link", "show", "eth0"]).is_none(), "container veth left behind");
    // A bridge name taken by another kind of link.
    inside(&host, || netlink::ensure_bridge("lo", GW, 24, None, false)).unwrap_err();

    // in_netns brings back the error's text and kind, and a panic as an error.
    let e = netlink::in_netns(f.as_fd(), || Err(io::Error::new(io::ErrorKind::NotFound, "no such thing here")))
        .unwrap_err();
    assert_eq!((e.kind(), e.to_string().as_str()), (io::ErrorKind::NotFound, "no such thing here"));
    let e = netlink::in_netns(f.as_fd(), || panic!("boom")).unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");
    // And it really runs in the namespace: the container has no br-test, the host has.
    netlink::in_netns(f.as_fd(), || {
        assert_eq!(Netlink::open()?.link_index("br-test")?, None);
        Ok(())
    })
    .unwrap();
    netlink::in_netns(ns_file(&host).as_fd(), || match Netlink::open()?.link_index("br-test")? {
        Some(_) => Ok(()),
        None => Err(io::Error::other("br-test not found in the host namespace")),
    })
    .unwrap();
    inside(&c, netlink::loopback_up).unwrap();
}

#[test]
fn attach_timing() {
    let host = NetNs::new().unwrap();
    let c = NetNs::new().unwrap();
    let f = ns_file(&c);
    inside(&host, || netlink::ensure_bridge("br-test", GW, 24, None, true)).unwrap();
    let mut times: Vec<Duration> = inside(&host, || {
        (0..20)
            .map(|i| {
                let a = attachment("vb-t", Ipv4Addr::new(10, 77, 0, 10 + i), true);
                let t = Instant::now();
                netlink::attach(f.as_fd(), &a).unwrap();
                let took = t.elapsed();
                netlink::detach("vb-t").unwrap();
                took
            })
            .collect()
    });
    times.sort();
    eprintln!("attach: median {:?} over 20 (min {:?}, max {:?})", times[10], times[0], times[19]);
}
