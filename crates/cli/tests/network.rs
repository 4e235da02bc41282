//! Networking end to end: bridge networks, names, published ports, isolation, connect and
//! disconnect, concurrency and teardown. Each test runs the engine inside its own network
//! namespace (the containers' "host"); traffic goes only to that namespace's loopback and to
//! the test's containers.

use std::net::UdpSocket;
use std::time::Duration;

mod common;

use common::{Berth, in_netns};

/// A shell loop that retries `cmd` for a few seconds (servers need a moment to listen).
fn retry(cmd: &str) -> String {
    format!("(for i in $(seq 50); do {cmd} && exit 0; sleep 0.1; done; exit 1)")
}

/// An HTTP GET of `/` through busybox nc (busybox-static's wget crashes): prints the body's
/// last line, fails when there is none.
fn get(host: &str, port: &str) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {host} {port} | tail -n 1 | grep .")
}

/// A UDP server inside a container's namespace that answers each datagram with `reply`.
fn udp_server(pid: &str, port: u16, reply: &'static str) -> std::thread::JoinHandle<()> {
    let path = format!("/proc/{pid}/ns/net");
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        in_netns(path, move || {
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("binding the UDP server");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            // Two clients: the host's loopback and another container.
            for _ in 0..2 {
                let Ok((_, from)) = s.recv_from(&mut buf) else { return };
                let _ = s.send_to(reply.as_bytes(), from);
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the UDP server is listening");
    h
}

/// Sends one datagram to `to` from inside the namespace at `ns`, returns the answer.
fn udp_ask(ns: String, to: String) -> String {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            s.send_to(b"ping", &to).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        String::new()
    })
}

const WEB: &str = "mkdir -p /w && echo hi-from-$HOSTNAME > /w/index.html && exec httpd -f -p 80 -h /w";

#[test]
fn user_networks_resolve_names_and_aliases_and_are_isolated() {
    let b = Berth::new("net-dns");
    b.ok(&["network", "create", "--subnet", "10.123.0.0/24", "front"]);
    b.ok(&["network", "create", "back"]);
    b.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-h",
        "web",
        "--network",
        "front",
        "--network-alias",
        "www",
        "busybox",
        "sh",
        "-c",
        WEB,
    ]);
    let ip = b.inspect("web", "{{.NetworkSettings.Networks.front.IPAddress}}");
    assert!(ip.starts_with("10.123.0."), "{ip}");
    // By name and by alias, from a container on the same network; names resolve to the address.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        &format!("{} && {} && nslookup web | grep -c {ip}", retry(&get("web", "80")), get("www", "80")),
    ]);
    assert_eq!(out, "hi-from-web\nhi-from-web\n1\n");
    // The resolver is the network's gateway, with berth's search domain.
    let resolv = b.ok(&["run", "--rm", "--network", "front", "busybox", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.123.0.1"), "{resolv}");
    // Another network can neither resolve the name nor reach the address.
    let (code, _, _) = b.run(&["run", "--rm", "--network", "back", "busybox", "nslookup", "web"]);
    assert_ne!(code, 0, "a container on another network resolved web");
    // Not even by asking front's DNS server itself.
    let (code, out, _) =
        b.run(&["run", "--rm", "--network", "back", "busybox", "timeout", "2", "nslookup", "web", "10.123.0.1"]);
    assert_ne!(code, 0, "front's DNS server answered a container on back: {out}");
    // The same query from front works (the server is there).
    let out = b.ok(&["run", "--rm", "--network", "front", "busybox", "nslookup", "web", "10.123.0.1"]);
    assert!(out.contains(&ip), "{out}");
    let (code, out, _) = b.run(&["run", "--rm", "--network", "back", "busybox", "sh", "-c", &get(&ip, "80")]);
    assert_ne!(code, 0, "a container on another network reached web: {out}");
    // The default bridge has no names, as Docker's.
    let (code, _, _) = b.run(&["run", "--rm", "busybox", "nslookup", "web"]);
    assert_ne!(code, 0);
    b.ok(&["rm", "-f", "web"]);
    let (code, _, err) = b.run(&["network", "rm", "front", "back"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

#[test]
fn published_ports_answer_from_loopback_and_other_containers() {
    let b = Berth::new("net-ports");
    let id = b.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "-h",
        "srv",
        "-p",
        "18080:80",
        "-p",
        "127.0.0.1:18082:80",
        "-p",
        "18081:81/udp",
        "busybox",
        "sh",
        "-c",
        WEB,
    ]);
    let id = id.trim();
    let pid = b.inspect(id, "{{.State.Pid}}");
    let udp = udp_server(&pid, 81, "udp-ok");
    // TCP from the host's loopback, on both bindings.
    for port in ["18080", "18082"] {
        let (code, out, err) = b.host("sh", &["-c", &retry(&get("127.0.0.1", port))]);
        assert_eq!((code, out.as_str()), (0, "hi-from-srv\n"), "port {port}: {err}");
    }
    // And from another container, through the host's address on the bridge (hairpin NAT).
    let gw = b.inspect(id, "{{.NetworkSettings.Gateway}}");
    let out = b.ok(&["run", "--rm", "busybox", "sh", "-c", &retry(&get(&gw, "18080"))]);
    assert_eq!(out, "hi-from-srv\n");
    // UDP from the host's loopback and from another container's namespace.
    assert_eq!(udp_ask(b.ns.path(), "127.0.0.1:18081".into()), "udp-ok");
    let other = b.ok(&["run", "-d", "busybox", "sleep", "60"]);
    let other_pid = b.inspect(other.trim(), "{{.State.Pid}}");
    assert_eq!(udp_ask(format!("/proc/{other_pid}/ns/net"), format!("{gw}:18081")), "udp-ok");
    udp.join().unwrap();
    // port, ps and inspect show the bindings.
    let port = b.ok(&["port", id]);
    assert!(port.contains("80/tcp -> 0.0.0.0:18080") && port.contains("81/udp -> 0.0.0.0:18081"), "{port}");
    assert!(port.contains("80/tcp -> 127.0.0.1:18082"), "{port}");
    assert_eq!(b.ok(&["port", id, "81/udp"]), "0.0.0.0:18081\n");
    let ps = b.ok(&["ps", "--format", "{{.Ports}}", "-f", "name=srv"]);
    assert!(ps.contains("0.0.0.0:18080->80/tcp"), "{ps}");
    // A port that is taken: a clear error, and the container is not left running.
    let (code, _, err) = b.run(&["run", "-d", "--name", "dup", "-p", "18080:80", "busybox", "sleep", "60"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("port is already allocated"), "{err}");
    assert_eq!(b.inspect("dup", "{{.State.Status}}"), "created");
    // -P: every exposed port to a free host port.
    let p = b.ok(&["run", "-d", "--expose", "80", "-P", "-h", "auto", "busybox", "sh", "-c", WEB]);
    let hp = b.ok(&["port", p.trim(), "80"]);
    let hp = hp.trim().rsplit(':').next().unwrap().to_string();
    assert!(hp.parse::<u16>().unwrap() > 1024, "{hp}");
    let (code, out, _) = b.host("sh", &["-c", &retry(&get("127.0.0.1", &hp))]);
    assert_eq!((code, out.as_str()), (0, "hi-from-auto\n"));
    // A range shows as one, as Docker's ps; so do exposed ports left unpublished.
    let r = b.ok(&[
        "run",
        "-d",
        "--name",
        "ranged",
        "-p",
        "18090-18092:90-92",
        "--expose",
        "7000-7001/udp",
        "busybox",
        "sleep",
        "60",
    ]);
    let ps = b.ok(&["ps", "--format", "{{.Ports}}", "-f", "name=ranged"]);
    assert_eq!(ps.trim(), "0.0.0.0:18090-18092->90-92/tcp, 7000-7001/udp");
    for c in [id, other.trim(), p.trim(), "dup", r.trim()] {
        b.ok(&["rm", "-f", c]);
    }
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

#[test]
fn internal_networks_and_connect_disconnect() {
    let b = Berth::new("net-conn");
    b.ok(&["network", "create", "--internal", "--subnet", "10.124.0.0/24", "inner"]);
    b.ok(&["run", "-d", "--name", "outside", "-h", "outside", "busybox", "sh", "-c", WEB]);
    let outside = b.inspect("outside", "{{.NetworkSettings.IPAddress}}");
    // An internal network has no route out: no default route, the bridge network is unreachable.
    let out = b.ok(&["run", "--rm", "--network", "inner", "busybox", "ip", "route"]);
    assert!(!out.contains("default"), "{out}");
    let (code, _, _) = b.run(&["run", "--rm", "--network", "inner", "busybox", "sh", "-c", &get(&outside, "80")]);
    assert_ne!(code, 0, "an internal container got out");
    // Not even by DNS: its server answers its own names and refuses the rest (no forwarding).
    b.ok(&["run", "-d", "--name", "inmate", "--network", "inner", "busybox", "sleep", "60"]);
    let (code, out, _) =
        b.run(&["run", "--rm", "--network", "inner", "busybox", "nslookup", "registry.example.com", "10.124.0.1"]);
    assert!(code != 0 && out.contains("REFUSED"), "{out}");
    let out = b.ok(&["run", "--rm", "--network", "inner", "busybox", "nslookup", "inmate", "10.124.0.1"]);
    assert!(out.contains("10.124.0."), "{out}");
    // A container whose first network is internal gets out through its second, and publishes
    // its ports there (by a short id of that network, as Docker takes it).
    let id = b.ok(&["network", "inspect", "-f", "{{.Id}}", "bridge"]);
    b.ok(&[
        "run",
        "-d",
        "--name",
        "twofold",
        "-h",
        "twofold",
        "--network",
        "inner",
        "--network",
        &id.trim()[..6],
        "-p",
        "18097:80",
        "busybox",
        "sh",
        "-c",
        WEB,
    ]);
    let route = b.ok(&["exec", "twofold", "ip", "route"]);
    assert!(route.contains("default via 10.77.0.1 dev eth1"), "{route}");
    let (code, out, err) = b.host("sh", &["-c", &retry(&get("127.0.0.1", "18097"))]);
    assert_eq!((code, out.as_str()), (0, "hi-from-twofold\n"), "{err}");
    b.ok(&["rm", "-f", "inmate", "twofold"]);
    // Docker's bridge options: the bridge's name, no outbound NAT, the MTU.
    b.ok(&[
        "network",
        "create",
        "--subnet",
        "10.127.0.0/24",
        "-o",
        "com.docker.network.bridge.name=brtest0",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "plain",
    ]);
    let mtu = b.ok(&["run", "--rm", "--network", "plain", "busybox", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1400");
    let (code, out, err) = b.host("ip", &["-o", "link", "show", "brtest0"]);
    assert!(code == 0 && out.contains("brtest0"), "{out}{err}");
    let (_, nft, _) = b.host("nft", &["list", "table", "ip", "berth"]);
    assert!(nft.contains("brtest0") && !nft.contains("brtest0 (10.127.0.0/24): outbound NAT"), "{nft}");
    assert!(nft.contains("outbound NAT"), "the default network still masquerades: {nft}");
    let (_, link, _) = b.host("ip", &["-d", "link", "show", "brtest0"]);
    assert!(link.contains("alias berth"), "berth marks its bridges: {link}");
    b.ok(&["network", "rm", "plain"]);
    let (code, _, _) = b.host("ip", &["link", "show", "brtest0"]);
    assert_ne!(code, 0, "brtest0 is left");
    // A bridge of that name made by someone else after `network create` is neither used nor
    // removed by berth.
    b.ok(&["network", "create", "-o", "com.docker.network.bridge.name=brlater", "later"]);
    let (code, _, err) = b.host("ip", &["link", "add", "brlater", "type", "bridge"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = b.run(&["run", "--rm", "--network", "later", "busybox", "true"]);
    assert!(code != 0 && err.contains("is not berth's"), "{err}");
    b.ok(&["network", "rm", "later"]);
    let (code, _, _) = b.host("ip", &["link", "show", "brlater"]);
    assert_eq!(code, 0, "someone else's bridge was removed");
    b.host("ip", &["link", "del", "brlater"]);
    // Connect a running container to a second network, then disconnect it.
    b.ok(&["network", "create", "extra"]);
    b.ok(&["run", "-d", "--name", "hub", "busybox", "sleep", "60"]);
    b.ok(&["network", "connect", "--alias", "hubby", "extra", "hub"]);
    let ip2 = b.inspect("hub", "{{.NetworkSettings.Networks.extra.IPAddress}}");
    let addrs = b.ok(&["exec", "hub", "ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(addrs.contains(&ip2), "{addrs} / {ip2}");
    let out = b.ok(&["run", "--rm", "--network", "extra", "busybox", "sh", "-c", &retry("nslookup hubby >/dev/null")]);
    assert_eq!(out, "");
    // The connected container now resolves through the user network's server too.
    let resolv = b.ok(&["exec", "hub", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("search dns.berth"), "{resolv}");
    b.ok(&["run", "-d", "--name", "peer", "--network", "extra", "busybox", "sleep", "60"]);
    let out = b.ok(&["exec", "hub", "sh", "-c", &retry("nslookup peer >/dev/null")]);
    assert_eq!(out, "");
    let (code, _, err) = b.run(&["network", "connect", "extra", "hub"]);
    assert_ne!(code, 0);
    assert!(err.contains("already connected"), "{err}");
    b.ok(&["network", "disconnect", "extra", "hub"]);
    let (code, _, _) = b.run(&["exec", "hub", "ip", "link", "show", "eth1"]);
    assert_ne!(code, 0, "eth1 is still there after disconnect");
    let resolv = b.ok(&["exec", "hub", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("dns.berth"), "{resolv}");
    b.ok(&["rm", "-f", "peer"]);
    // A network with containers cannot be removed; names them.
    b.ok(&["network", "connect", "extra", "hub"]);
    let (code, _, err) = b.run(&["network", "rm", "extra"]);
    assert_eq!(code, 1);
    assert!(err.contains("hub"), "{err}");
    for c in ["outside", "hub"] {
        b.ok(&["rm", "-f", c]);
    }
    b.ok(&["network", "rm", "extra", "inner"]);
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

#[test]
fn concurrent_runs_get_distinct_addresses_and_teardown_survives_kill() {
    let b = std::sync::Arc::new(Berth::new("net-conc"));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.ok(&["run", "-d", "busybox", "sleep", "60"]).trim().to_string())
        })
        .collect();
    let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ips: Vec<String> = ids.iter().map(|id| b.inspect(id, "{{.NetworkSettings.IPAddress}}")).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "{ips:?}");
    // Containers on the default bridge reach each other by address.
    let out = b.ok(&["exec", &ids[0], "ping", "-c", "1", "-W", "3", &ips[5]]);
    assert!(out.contains("1 packets received"), "{out}");
    // kill -9 of a monitor: the next command repairs, ports and interfaces go.
    let id = b.ok(&["run", "-d", "-p", "18090:80", "busybox", "sleep", "60"]);
    let id = id.trim();
    b.kill_monitor(id);
    assert_eq!(b.inspect(id, "{{.State.Status}}"), "exited");
    assert_eq!(b.ok(&["port", id]), "");
    let (_, table, _) = b.host("nft", &["list", "table", "ip", "berth"]);
    assert!(!table.contains("18090"), "{table}");
    for id in ids.iter().map(String::as_str).chain([id]) {
        b.ok(&["rm", "-f", id]);
    }
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
    let leases: serde_json::Value = serde_json::from_str(&b.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(leases[0]["Containers"], serde_json::json!({}), "leases left");
}

#[test]
fn bad_network_input_fails_clearly() {
    let b = Berth::new("net-bad");
    b.ok(&["network", "create", "--subnet", "10.125.0.0/16", "a"]);
    let cases: &[(&[&str], &str)] = &[
        (&["network", "create", "--subnet", "10.125.3.0/24", "b"], "overlaps with network a"),
        (&["network", "create", "--subnet", "10.77.1.0/24", "b"], "overlaps with network bridge"),
        (&["network", "create", "--subnet", "10.126.0.0/33", "b"], "prefix length"),
        (&["network", "create", "--subnet", "banana", "b"], "invalid subnet"),
        (&["network", "create", "--subnet", "10.126.0.1/24", "b"], "it should be 10.126.0.0/24"),
        (&["network", "create", "a"], "already exists"),
        (&["network", "create", "--ipv6", "b"], "IPv6"),
        (&["run", "--rm", "--ip6", "fd00::5", "busybox", "true"], "IPv6 is not supported yet"),
        (&["network", "connect", "--ip6", "fd00::5", "a", "x"], "IPv6 is not supported yet"),
        (&["network", "rm", "bridge"], "pre-defined"),
        (&["network", "rm", "nope"], "network nope not found"),
        (&["run", "--rm", "--network", "nope", "busybox", "true"], "network nope not found"),
        (&["run", "--rm", "-p", "8000-8001:80-82", "busybox", "true"], "port range mismatch"),
        (&["run", "--rm", "-p", "99999:80", "busybox", "true"], "invalid port"),
        (&["run", "--rm", "--network", "none", "-p", "80:80", "busybox", "true"], "conflicting options"),
        (&["run", "--rm", "--network", "a", "--ip", "10.99.0.5", "busybox", "true"], "does not belong"),
        (&["run", "--rm", "--ip", "10.77.0.9", "busybox", "true"], "user defined networks only"),
        (&["run", "--rm", "--network", "a", "--ip", "10.125.255.255", "busybox", "true"], "does not belong"),
        (&["network", "create", "--subnet", "10.126.0.0/24", "--gateway", "10.126.0.255", "b"], "invalid gateway"),
        (&["run", "--rm", "-p", "192.0.2.7:80:80", "busybox", "true"], "192.0.2.7 is not an address of this host"),
        (&["network", "create", "-o", "com.docker.network.bridge.name=abcdefghijklmnop", "b"], "1 to 15 letters"),
        (
            &["network", "create", "-o", "com.docker.network.bridge.name=lo", "b"],
            "interface of that name already exists",
        ),
        (&["network", "create", "-o", "com.docker.network.bridge.enable_ip_masquerade=maybe", "b"], "true or false"),
        (&["network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "b"], "unknown network option"),
    ];
    for (args, want) in cases {
        let (code, _, err) = b.run(args);
        assert_ne!(code, 0, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Nothing half-made: only `a` exists (and the default), no container was left.
    let nets = b.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(nets, "bridge\na\n");
    assert!(b.ids().is_empty(), "{:?}", b.ids());
    b.ok(&["network", "rm", "a"]);
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

#[test]
fn network_modes_container_host_and_namespace_path() {
    let b = Berth::new("net-modes");
    b.ok(&["run", "-d", "--name", "web", "-h", "web", "busybox", "sh", "-c", WEB]);
    let ip = b.inspect("web", "{{.NetworkSettings.IPAddress}}");
    // container:NAME shares web's interfaces: its server is on localhost.
    let out =
        b.ok(&["run", "--rm", "--network", "container:web", "busybox", "sh", "-c", &retry(&get("127.0.0.1", "80"))]);
    assert_eq!(out, "hi-from-web\n");
    // ns:PATH joins a namespace by path: here web's again.
    let pid = b.inspect("web", "{{.State.Pid}}");
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        &format!("ns:/proc/{pid}/ns/net"),
        "busybox",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains(&format!("{ip}/16")), "{out}");
    // host: the host's interfaces, among them the default network's bridge with its gateway.
    // On the host's network: the host's name, and -p is dropped with Docker's warning.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(b.ok(&["run", "--rm", "--network", "host", "busybox", "hostname"]), host_name);
    let (code, _, err) = b.run(&["run", "--rm", "--network", "host", "-p", "80:80", "busybox", "true"]);
    assert!(code == 0 && err.contains("WARNING: Published ports are discarded when using host network mode"), "{err}");
    let out = b.ok(&["run", "--rm", "--network", "host", "busybox", "ip", "-o", "-4", "addr", "show", "berth0"]);
    assert!(out.contains("10.77.0.1/16"), "{out}");
    // Publishing needs a bridge network.
    let (code, _, err) = b.run(&["run", "--rm", "--network", "container:web", "-p", "80:80", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("conflicting options"), "{err}");
    b.ok(&["rm", "-f", "web"]);
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

#[test]
fn names_of_every_network_a_container_is_on_and_its_dns_servers() {
    let b = Berth::new("net-multi");
    b.ok(&["network", "create", "--subnet", "10.125.0.0/24", "na"]);
    b.ok(&["network", "create", "--subnet", "10.126.0.0/24", "nb"]);
    b.ok(&["run", "-d", "--name", "onlyb", "--network", "nb", "busybox", "sleep", "60"]);
    let onlyb = b.inspect("onlyb", "{{.NetworkSettings.Networks.nb.IPAddress}}");
    // A container on na and nb resolves names of both (here through na's server, the first
    // in its resolv.conf); one on na only does not see nb's.
    b.ok(&["run", "-d", "--name", "both", "--network", "na", "busybox", "sleep", "60"]);
    b.ok(&["network", "connect", "nb", "both"]);
    let out = b.ok(&["exec", "both", "sh", "-c", &retry("nslookup onlyb 10.125.0.1 >/tmp/o")]);
    assert_eq!(out, "");
    let out = b.ok(&["exec", "both", "cat", "/tmp/o"]);
    assert!(out.contains(&onlyb), "{out}");
    let (code, out, _) = b.run(&["run", "--rm", "--network", "na", "busybox", "nslookup", "onlyb"]);
    assert_ne!(code, 0, "a container on na only resolved onlyb: {out}");
    // --dns on a user network: names stay resolved by the network's server, which sends the
    // others to the given server (here berth's own DNS server on the test's loopback).
    let upstream = b.g.path("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    std::fs::write(upstream.join("records"), "10.9.9.9 upstream.example\n").unwrap();
    let st =
        b.ns.command(common::BERTH).args(["network-dns", "--listen", "127.0.0.2:53"]).arg(&upstream).status().unwrap();
    assert!(st.success());
    let resolv = b.ok(&["run", "--rm", "--network", "na", "--dns", "127.0.0.2", "busybox", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.125.0.1") && !resolv.contains("127.0.0.2"), "{resolv}");
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "na",
        "--dns",
        "127.0.0.2",
        "busybox",
        "sh",
        "-c",
        "nslookup upstream.example; nslookup both",
    ]);
    assert!(out.contains("10.9.9.9") && out.contains("10.125.0."), "{out}");
    // Without --dns the same name goes to the host's resolvers, which do not know it.
    let (code, out, _) =
        b.run(&["run", "--rm", "--network", "na", "busybox", "timeout", "3", "nslookup", "upstream.example"]);
    assert!(code != 0 || !out.contains("10.9.9.9"), "{out}");
    std::fs::remove_file(upstream.join("records")).unwrap();
    b.ok(&["rm", "-f", "both", "onlyb"]);
    b.ok(&["network", "rm", "na", "nb"]);
    // The upstream server goes once its records are gone.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!upstream.join("dns.pid").exists(), "the upstream DNS server is still there");
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

#[test]
fn a_dns_server_that_cannot_listen_fails_the_start_clearly() {
    let b = Berth::new("net-dns-busy");
    b.ok(&["network", "create", "--subnet", "10.127.0.0/24", "busy53"]);
    // Something else holds port 53 on every address of the (test's) host.
    let squatter = common::in_netns(b.ns.path(), || std::net::UdpSocket::bind("0.0.0.0:53").unwrap());
    let (code, _, err) = b.run(&["run", "--rm", "--network", "busy53", "busybox", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("the DNS server of network busy53 did not start") && err.contains("10.127.0.1:53"), "{err}");
    drop(squatter);
    // Once the port is free the network works, and nothing of the failed start is left.
    assert!(b.ids().is_empty(), "{:?}", b.ids());
    b.ok(&["run", "--rm", "--network", "busy53", "busybox", "true"]);
    b.ok(&["network", "rm", "busy53"]);
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

/// Packets the host-side end of a container's veth sent on (towards the container): the link
/// whose index the container's eth0 names as its peer.
fn port_tx_packets(b: &Berth, container: &str) -> u64 {
    let peer: u64 = b.ok(&["exec", container, "cat", "/sys/class/net/eth0/iflink"]).trim().parse().unwrap();
    let (_, out, _) = b.host("ip", &["-j", "-s", "link", "show"]);
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    let port = links.as_array().unwrap().iter().find(|l| l["ifindex"] == peer).expect("the container's port");
    port["stats64"]["tx"]["packets"].as_u64().unwrap()
}

#[test]
fn frames_between_containers_of_a_network_skip_the_bridge() {
    let b = Berth::new("net-bypass");
    b.ok(&["network", "create", "--subnet", "10.124.0.0/24", "fast"]);
    b.ok(&["run", "-d", "--name", "srv", "--network", "fast", "busybox", "sleep", "60"]);
    b.ok(&["run", "-d", "--name", "cli", "--network", "fast", "busybox", "sleep", "60"]);
    let net = b.ok(&["network", "inspect", "-f", "{{.Id}}", "fast"]);
    let bridge = format!("br-{}", &net.trim()[..12]);
    let (_, anchor, _) = b.host("tc", &["filter", "show", "dev", &bridge, "ingress"]);
    assert!(anchor.contains("berth-anchor"), "{anchor}");
    let sip = b.inspect("srv", "{{.NetworkSettings.Networks.fast.IPAddress}}");
    // The template Docker users write for it.
    assert_eq!(b.inspect("srv", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"), sip);
    let smac = b.inspect("srv", "{{.NetworkSettings.Networks.fast.MacAddress}}");
    let mac: Vec<u8> = smac.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let mac: [u8; 6] = mac.try_into().unwrap();
    let peer: u32 = b.ok(&["exec", "srv", "cat", "/sys/class/net/eth0/iflink"]).trim().parse().unwrap();
    let (br, ns) = (bridge.clone(), b.ns.path());
    let entry = in_netns(ns.clone(), move || berth_network::bypass::entry(&br, mac).unwrap());
    assert_eq!(entry, Some(peer), "srv's MAC leads to its host-side veth");

    // 40 pings from cli to srv: the replies go back through cli's port (the bridge would send the
    // requests out through srv's port as well; the bypass hands them to srv's eth0 directly).
    b.ok(&["exec", "cli", "ping", "-c", "1", "-W", "3", &sip]); // ARP is resolved (by broadcast, via the bridge)
    let before = port_tx_packets(&b, "srv");
    let out = b.ok(&["exec", "cli", "ping", "-c", "40", "-i", "0.01", "-W", "3", &sip]);
    assert!(out.contains("40 packets received"), "{out}");
    let sent = port_tx_packets(&b, "srv") - before;
    assert!(sent < 10, "{sent} of the 40 requests went out through srv's port: the bridge forwarded them");
    // The gateway is not a container: the bridge still carries that.
    b.ok(&["exec", "cli", "ping", "-c", "2", "-W", "3", "10.124.0.1"]);

    // The bridge knows srv's MAC for good (it no longer sees srv's frames to its neighbours).
    let (_, fdb, _) = b.host("bridge", &["fdb", "show", "br", &bridge]);
    assert!(fdb.lines().any(|l| l.starts_with(&smac) && l.contains("static")), "{fdb}");
    // A container given srv's MAC neither takes srv's entry nor removes it when it goes.
    b.ok(&["run", "-d", "--name", "dup", "--network", "fast", "--mac-address", &smac, "busybox", "sleep", "60"]);
    let (br, n) = (bridge.clone(), ns.clone());
    assert_eq!(in_netns(n, move || berth_network::bypass::entry(&br, mac).unwrap()), Some(peer));
    b.ok(&["rm", "-f", "dup"]);
    let (br, n) = (bridge.clone(), ns.clone());
    assert_eq!(in_netns(n, move || berth_network::bypass::entry(&br, mac).unwrap()), Some(peer));

    // A stopped container leaves the map.
    b.ok(&["stop", "-t", "0", "srv"]);
    let br = bridge.clone();
    assert_eq!(in_netns(ns, move || berth_network::bypass::entry(&br, mac).unwrap()), None);
    b.ok(&["rm", "-f", "srv", "cli"]);
    b.ok(&["network", "rm", "fast"]);
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}

#[test]
fn network_create_options_ls_filters_prune_and_dns_after_a_killed_monitor() {
    let b = Berth::new("net-opts");
    let lab = b.ok(&[
        "network",
        "create",
        "--subnet",
        "10.125.0.0/24",
        "--gateway",
        "10.125.0.254",
        "--ip-range",
        "10.125.0.128/25",
        "--label",
        "team=a",
        "lab",
    ]);
    b.ok(&["network", "create", "--label", "team=b", "other"]);
    let listed = b.ok(&["network", "ls", "-q", "--no-trunc", "--filter", "label=team=a"]);
    assert_eq!(listed.trim(), lab.trim());
    assert_eq!(b.ok(&["network", "ls", "--filter", "name=oth", "--format", "{{.Name}}"]).trim(), "other");
    // Addresses come from the --ip-range, the route goes through the --gateway.
    let out = b.ok(&["run", "--rm", "--network", "lab", "busybox", "sh", "-c", "ip -o -4 addr show eth0; ip route"]);
    let ip: std::net::Ipv4Addr =
        out.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    assert!(ip.octets()[..3] == [10, 125, 0] && ip.octets()[3] >= 128, "{out}");
    assert!(out.contains("default via 10.125.0.254"), "{out}");
    // --ip and --mac-address are what the container gets.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "lab",
        "--ip",
        "10.125.0.200",
        "--mac-address",
        "02:42:aa:bb:cc:dd",
        "busybox",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; cat /sys/class/net/eth0/address",
    ]);
    assert!(out.contains("inet 10.125.0.200/24") && out.contains("02:42:aa:bb:cc:dd"), "{out}");
    // -P publishes what the image EXPOSEs.
    b.ok(&["run", "--name", "base", "busybox", "true"]);
    b.ok(&["commit", "-c", "EXPOSE 8080/tcp", "base", "exposed"]);
    b.ok(&["run", "-d", "-P", "--name", "pub", "exposed", "sleep", "60"]);
    let port = b.ok(&["port", "pub"]);
    assert!(port.starts_with("8080/tcp -> 0.0.0.0:"), "{port}");
    // kill -9 of a monitor on a user network: the next command repairs, and its name goes
    // from the network's DNS server (which another container keeps running).
    b.ok(&["run", "-d", "--name", "keeper", "--network", "lab", "busybox", "sleep", "60"]);
    let victim = b.ok(&["run", "-d", "--name", "victim", "--network", "lab", "busybox", "sleep", "60"]);
    b.ok(&["exec", "keeper", "nslookup", "victim", "10.125.0.254"]);
    b.kill_monitor(victim.trim());
    assert_eq!(b.inspect("victim", "{{.State.Status}}"), "exited");
    let (code, out, _) = b.run(&["exec", "keeper", "nslookup", "victim", "10.125.0.254"]);
    assert_ne!(code, 0, "victim still resolves: {out}");
    // prune removes the networks no container uses, and only them.
    for c in ["base", "pub", "keeper", "victim"] {
        b.ok(&["rm", "-f", c]);
    }
    b.ok(&["run", "-d", "--name", "stays", "--network", "other", "busybox", "sleep", "60"]);
    let pruned = b.ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("lab") && !pruned.contains("other"), "{pruned}");
    let names = b.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!names.lines().any(|n| n == "lab") && names.lines().any(|n| n == "other"), "{names}");
    b.ok(&["rm", "-f", "stays"]);
    b.ok(&["network", "rm", "other"]);
    assert_eq!(b.network_leftovers(), Vec::<String>::new());
}
