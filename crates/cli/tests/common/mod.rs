//! The harness of the `berth` end-to-end tests: an engine with its own root under a leak
//! guard and its own network namespace, with the test kit's busybox image loaded.

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use berth_testkit::leak::Guard;
use berth_testkit::netns::NetNs;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

pub struct Berth {
    pub g: Guard,
    pub ns: NetNs,
}

impl Berth {
    /// A fresh engine with the busybox image loaded as `busybox:latest`.
    pub fn new(tag: &str) -> Berth {
        let b = Berth { g: Guard::new(tag), ns: NetNs::new().expect("a network namespace") };
        let archive = b.g.path("busybox.tar");
        berth_testkit::image::write_oci_archive(&archive, "busybox:latest");
        let o = b.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(o.contains("Loaded image: busybox:latest"), "{o}");
        b
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.ns.command(BERTH);
        c.arg("--root").arg(self.g.path("root")).arg("--runroot").arg(self.g.path("run")).args(args);
        c.stdin(Stdio::null());
        c
    }

    pub fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running berth")
    }

    /// Runs and returns (code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.out(args);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "berth {args:?} failed: {err}{out}");
        out
    }

    pub fn ids(&self) -> Vec<String> {
        self.ok(&["ps", "-aq"]).lines().map(str::to_string).collect()
    }

    pub fn inspect(&self, c: &str, f: &str) -> String {
        self.ok(&["inspect", "-f", f, c]).trim().to_string()
    }
}

impl Berth {
    /// Runs a command in the test's network namespace (the containers' "host").
    pub fn host(&self, program: &str, args: &[&str]) -> (i32, String, String) {
        let o = self.ns.command(program).args(args).stdin(Stdio::null()).output().expect("running a host command");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// kill -9 of a container's monitor (a crash), then a moment for the kernel to take it.
    pub fn kill_monitor(&self, id: &str) {
        let (_, pids, _) = self.host("pgrep", &["-f", &format!("container-monitor {id}")]);
        let monitor: i32 = pids.trim().parse().expect("the monitor's pid");
        // SAFETY: kill(2) of the test's own monitor process.
        unsafe { libc::kill(monitor, libc::SIGKILL) };
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    /// What berth's networking left in the namespace once every container and user network
    /// is gone: links but lo and the default network's bridge berth0 (which stays, as docker0),
    /// firewall rules for anything else, DNS servers.
    pub fn network_leftovers(&self) -> Vec<String> {
        // The kernel removes a stopped container's veth pair with its namespace, in the
        // background: give it a moment.
        let mut found = self.leftovers_now();
        for _ in 0..50 {
            if found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            found = self.leftovers_now();
        }
        found
    }

    fn leftovers_now(&self) -> Vec<String> {
        let mut found = Vec::new();
        let (_, links, _) = self.host("ip", &["-o", "link", "show"]);
        for l in links.lines() {
            let name = l.split(':').nth(1).unwrap_or("").trim().split('@').next().unwrap_or("").to_string();
            if name != "lo" && name != "berth0" {
                found.push(format!("link {name}"));
            }
        }
        let (_, table, _) = self.host("nft", &["list", "table", "ip", "berth"]);
        found.extend(
            table.lines().filter(|l| l.contains("br-") || l.contains("dnat to")).map(|l| format!("nft {}", l.trim())),
        );
        let run = self.g.path("run");
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("network-dns") && cmd.contains(run.to_str().unwrap_or("-")) {
                found.push(format!("process {cmd}"));
            }
        }
        found
    }
}

impl Berth {
    /// Runs `berth ARGS` on a real terminal (script(1)), typing `input`; returns the output.
    pub fn on_terminal(&self, args: &str, input: &[u8]) -> Output {
        self.typed_on_terminal(args, input, false)
    }

    /// As [`Berth::on_terminal`], typing only once berth has put the terminal in raw mode, as
    /// a person does: before that the terminal's own line discipline takes some keys (ctrl-q
    /// is its flow control) and holds the rest until a newline.
    pub fn on_raw_terminal(&self, args: &str, input: &[u8]) -> Output {
        self.typed_on_terminal(args, input, true)
    }

    fn typed_on_terminal(&self, args: &str, input: &[u8], wait_raw: bool) -> Output {
        let cmd = format!(
            "{BERTH} --root {} --runroot {} {args}",
            self.g.path("root").display(),
            self.g.path("run").display()
        );
        let mut child = self
            .ns
            .command("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script(1) from bsdutils");
        if wait_raw {
            // berth is script's child; its stdin is the terminal.
            let raw = (0..400).any(|_| {
                let kids = std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id()));
                let is_raw = kids.unwrap_or_default().split_whitespace().any(|pid| {
                    let Ok(tty) = std::fs::File::open(format!("/proc/{pid}/fd/0")) else { return false };
                    nix::sys::termios::tcgetattr(&tty)
                        .is_ok_and(|t| !t.local_flags.contains(nix::sys::termios::LocalFlags::ICANON))
                });
                if !is_raw {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                is_raw
            });
            assert!(raw, "berth {args} did not put its terminal in raw mode");
        }
        use std::io::Write;
        child.stdin.as_mut().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// Runs `f` on a thread that has joined the network namespace at `path` (a container's
/// `/proc/PID/ns/net`, or the test's own), so sockets it makes live there.
pub fn in_netns<T: Send + 'static>(path: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("opening a network namespace");
        // SAFETY: setns only changes this short-lived thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

impl Drop for Berth {
    fn drop(&mut self) {
        // Remove what the test left, so the guard only reports real leaks.
        if let Ok(o) = self.cmd(&["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
        let _ = self.cmd(&["network", "prune", "-f"]).output();
    }
}
