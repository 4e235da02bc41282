//! The `berth` command line end to end, as a user drives it: real containers from the test
//! kit's busybox image, each test with its own engine root under a leak guard and its own
//! network namespace (containers join the default bridge network, made inside it).

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::Berth;

#[test]
fn run_attached_returns_output_and_exit_code() {
    let b = Berth::new("eng-run");
    let (code, out, err) = b.run(&["run", "--rm", "busybox", "sh", "-c", "echo hello; echo oops >&2; exit 3"]);
    assert_eq!((code, out.as_str()), (3, "hello\n"), "stderr: {err}");
    assert!(err.contains("oops"), "{err}");
    assert!(b.ids().is_empty(), "--rm left the container");
    // The image's CMD and env, -e, -w, -u, --hostname, labels.
    let out = b.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "--hostname",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u) $(hostname) $PATH",
    ]);
    assert_eq!(out.trim(), "bar /tmp 65534 box /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    // Without --rm the container stays, exited, with its log.
    b.ok(&["run", "--name", "once", "busybox", "echo", "logged"]);
    assert_eq!(b.inspect("once", "{{.State.Status}} {{.State.ExitCode}}"), "exited 0");
    assert_eq!(b.ok(&["logs", "once"]), "logged\n");
    assert!(b.ok(&["ps", "-a"]).contains("Exited (0)"));
    b.ok(&["rm", "once"]);
}

#[test]
fn bad_input_gives_docker_codes_and_leaves_nothing() {
    let b = Berth::new("eng-bad");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["run", "--rm", "nosuchimage", "true"], 125, "Unable to find image 'nosuchimage:latest' locally"),
        (&["run", "--rm", "busybox", "nosuchcmd"], 127, "executable file not found"),
        (&["run", "--rm", "busybox", "/etc/passwd"], 126, "permission denied"),
        (&["run", "--rm", "--memory", "12q", "busybox", "true"], 125, "invalid size"),
        (&["run", "--rm", "--restart", "always", "busybox", "true"], 125, "Conflicting options"),
        (&["run", "--rm", "--name", "bad name!", "busybox", "true"], 125, "Invalid container name"),
        (&["run", "--rm", "--cap-add", "bogus", "busybox", "true"], 125, "invalid capability"),
        (&["run", "--no-such-flag", "busybox"], 125, "unknown flag: --no-such-flag\nSee 'berth run --help'."),
        (&["ps", "--bogus=1"], 125, "unknown flag: --bogus"),
        (&["create", "--ulimit", "bogus=1", "busybox", "true"], 125, "invalid ulimit type: bogus"),
        (&["create", "--ulimit", "nofile=10:5", "busybox", "true"], 125, "soft limit must be less than or equal"),
        (&["create", "--sysctl", "kernel.hostname=x", "busybox", "true"], 125, "only namespaced sysctls"),
        (&["create", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1", "busybox", "true"], 125, "host network"),
        (&["rm", "nosuch"], 1, "No such container: nosuch"),
        (&["stop", "nosuch"], 1, "No such container"),
    ];
    for (args, code, msg) in cases {
        let (c, _, err) = b.run(args);
        assert_eq!(c, *code, "berth {args:?}: {err}");
        assert!(err.contains(msg), "berth {args:?}: expected {msg:?} in {err:?}");
    }
    // A create refused late leaves none of what it made: volumes (anonymous, or named and new),
    // bind sources.
    b.ok(&["create", "--name", "taken", "--network", "none", "busybox", "true"]);
    let bind = b.g.path("made-by-create");
    let bind_arg = format!("{}:/y", bind.join("sub").display());
    for args in [
        vec!["create", "--name", "taken", "-v", "newvol:/x", "-v", "/anon", "-v", &bind_arg, "busybox", "true"],
        vec![
            "run",
            "--rm",
            "-v",
            "newvol:/x",
            "-v",
            "/anon",
            "-v",
            &bind_arg,
            "--blkio-weight",
            "5",
            "busybox",
            "true",
        ],
    ] {
        let (c, _, err) = b.run(&args);
        assert_eq!(c, 125, "{args:?}: {err}");
        assert_eq!(b.ok(&["volume", "ls", "-q"]), "", "{args:?}: {err}");
        assert!(!bind.exists(), "{args:?}: the bind source stayed");
    }
    b.ok(&["rm", "taken"]);
    // A failed start without --rm leaves a created container, as Docker does; nothing mounted.
    let (c, _, _) = b.run(&["run", "--name", "failed", "busybox", "nosuchcmd"]);
    assert_eq!(c, 127);
    assert_eq!(b.inspect("failed", "{{.State.Status}}"), "created");
    b.ok(&["rm", "failed"]);
    assert!(b.ids().is_empty());
    let left: Vec<_> = std::fs::read_dir(b.g.path("root/containers")).unwrap().collect();
    assert!(left.is_empty(), "container dirs left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(b.g.path("root").to_str().unwrap()), "a mount was left");
}

#[test]
fn detached_lifecycle_logs_exec_pause_stop_rm() {
    let b = Berth::new("eng-life");
    let id = b.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 7' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    let ps = b.ok(&["ps"]);
    assert!(ps.contains(&id[..12]) && ps.contains("web") && ps.contains("Up "), "{ps}");
    assert_eq!(b.ok(&["ps", "--format", "{{.Names}}:{{.State}}"]).trim(), "web:running");
    // Wait for the first line of output.
    for _ in 0..100 {
        if b.ok(&["logs", "web"]).contains("up") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.ok(&["logs", "web"]), "up\n");
    assert!(b.ok(&["logs", "-t", "web"]).contains("Z up"));
    // exec: output, exit code, env and a missing command.
    assert_eq!(
        b.ok(&["exec", "-e", "X=1", "web", "sh", "-c", "echo $X $(cat /etc/hostname)"]).trim(),
        format!("1 {}", &id[..12])
    );
    assert_eq!(b.run(&["exec", "web", "sh", "-c", "exit 5"]).0, 5);
    // stdin reaches the process only with -i; -d leaves it nothing of ours to hold.
    let fed = |args: &[&str]| {
        let mut c = b.cmd(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = std::io::Write::write_all(&mut input, b"fed\n");
        drop(input);
        let t0 = std::time::Instant::now();
        let o = child.wait_with_output().unwrap();
        (String::from_utf8_lossy(&o.stdout).into_owned(), t0.elapsed())
    };
    assert_eq!(fed(&["exec", "-i", "web", "cat"]).0, "fed\n");
    assert_eq!(fed(&["exec", "web", "cat"]).0, "");
    let (out, took) = fed(&["exec", "-d", "web", "sh", "-c", "sleep 3; echo late"]);
    assert!(out.is_empty() && took < Duration::from_secs(2), "{out:?} after {took:?}");
    assert_eq!(b.run(&["exec", "web", "nosuchcmd"]).0, 127);
    // rm without -f refuses.
    let (c, _, err) = b.run(&["rm", "web"]);
    assert!(c != 0 && err.contains("stop the container before removing or force remove"), "{err}");
    b.ok(&["pause", "web"]);
    assert_eq!(b.inspect("web", "{{.State.Status}}"), "paused");
    b.ok(&["unpause", "web"]);
    // stop: the trap runs, exit code recorded.
    b.ok(&["stop", "-t", "5", "web"]);
    assert_eq!(b.inspect("web", "{{.State.Status}} {{.State.ExitCode}}"), "exited 7");
    assert!(b.ok(&["logs", "web"]).contains("bye"));
    let (c, _, err) = b.run(&["exec", "web", "true"]);
    assert!(c != 0 && err.contains("is not running"), "{err}");
    // Start again, kill, wait.
    b.ok(&["start", "web"]);
    assert_eq!(b.inspect("web", "{{.State.Status}}"), "running");
    // Starting a running container does nothing, and says its name (as Docker).
    assert_eq!(b.ok(&["start", "web"]), "web\n");
    b.ok(&["kill", "web"]);
    assert_eq!(b.ok(&["wait", "web"]).trim(), "137");
    b.ok(&["rm", "web"]);
    // The name is free again.
    b.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "60"]);
    b.ok(&["rm", "-f", "web"]);
    assert!(b.ids().is_empty());
}

/// A file of the cgroup process `pid` is in, for controller `ctrl` (v1), or of its v2 cgroup.
fn cgroup_file(pid: &str, ctrl: &str, file: &str) -> String {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").exists();
    let path = cg
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            (c.split(',').any(|x| x == ctrl) || (c.is_empty() && !v1)).then(|| path.to_string())
        })
        .unwrap();
    let base = if v1 { format!("/sys/fs/cgroup/{ctrl}") } else { "/sys/fs/cgroup".into() };
    std::fs::read_to_string(format!("{base}{path}/{file}")).unwrap().trim().to_string()
}

/// A whole disk of this machine (throttling takes whole disks only), if it has one.
fn whole_disk() -> Option<String> {
    let mut names: Vec<String> =
        std::fs::read_dir("/sys/block").ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
        .into_iter()
        .find(|n| {
            let size = std::fs::read_to_string(format!("/sys/block/{n}/size")).unwrap_or_default();
            !n.starts_with("loop")
                && size.trim().parse::<u64>().unwrap_or(0) > 0
                && std::path::Path::new(&format!("/dev/{n}")).exists()
        })
        .map(|n| format!("/dev/{n}"))
}

#[test]
fn limits_and_security_defaults() {
    let b = Berth::new("eng-sec");
    // Docker's 14 capabilities, and --cap-drop ALL.
    let caps = b.ok(&["run", "--rm", "busybox", "sh", "-c", "grep CapEff /proc/self/status"]);
    assert_eq!(caps.split_whitespace().nth(1), Some("00000000a80425fb"), "{caps}");
    let caps = b.ok(&["run", "--rm", "--cap-drop", "ALL", "busybox", "sh", "-c", "grep CapEff /proc/self/status"]);
    assert_eq!(caps.split_whitespace().nth(1), Some("0000000000000000"));
    // The default seccomp profile: no new namespaces without CAP_SYS_ADMIN; unconfined lifts it.
    let (code, _, err) = b.run(&["run", "--rm", "busybox", "unshare", "-U", "true"]);
    assert!(code != 0 && err.contains("Operation not permitted"), "{err}");
    b.ok(&["run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "unshare", "-U", "true"]);
    // A profile file in Docker's format.
    let prof = b.g.path("deny-mkdir.json");
    std::fs::write(&prof, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#).unwrap();
    let so = format!("seccomp={}", prof.display());
    let (code, _, err) = b.run(&["run", "--rm", "--security-opt", &so, "busybox", "mkdir", "/x"]);
    assert!(code != 0 && err.contains("Permission denied"), "{err}");
    // Masked and read-only kernel paths.
    let (code, out, _) =
        b.run(&["run", "--rm", "busybox", "sh", "-c", "cat /proc/keys | wc -c; echo 1 > /proc/sys/kernel/panic"]);
    assert_eq!(out.trim(), "0");
    assert_ne!(code, 0, "/proc/sys must be read-only");
    // --privileged: all capabilities, the host's device nodes (loop-control is on every host
    // with loop devices, the test kit uses them), none of them without it.
    let out = b.ok(&["run", "--rm", "--privileged", "busybox", "sh", "-c", "grep CapEff /proc/self/status; ls /dev"]);
    let bounding = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = bounding.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim();
    assert_eq!(out.lines().next().and_then(|l| l.split_whitespace().nth(1)), Some(bounding), "{out}");
    if std::path::Path::new("/dev/loop-control").exists() {
        assert!(out.lines().any(|l| l == "loop-control"), "{out}");
        let out = b.ok(&["run", "--rm", "busybox", "ls", "/dev"]);
        assert!(!out.lines().any(|l| l == "loop-control"), "{out}");
    }
    // --read-only keeps /tmp writable.
    let (code, _, err) = b.run(&["run", "--rm", "--read-only", "busybox", "sh", "-c", "touch /tmp/ok && touch /nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // --network none: no network but loopback, which is up.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "ls /sys/class/net; ip link show lo | grep -c UP",
    ]);
    assert_eq!(out, "lo\n1\n");
    // Cgroup limits land in the host's cgroup files.
    let id = b.ok(&["run", "-d", "--memory", "64m", "--pids-limit", "33", "--cpus", "0.5", "busybox", "sleep", "60"]);
    let pid = b.inspect(id.trim(), "{{.State.Pid}}");
    let read = |ctrl: &str, file: &str| cgroup_file(&pid, ctrl, file);
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(read("memory", "memory.limit_in_bytes"), (64 << 20).to_string());
        assert_eq!(read("pids", "pids.max"), "33");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    } else {
        assert_eq!(read("memory", "memory.max"), (64 << 20).to_string());
        assert_eq!(read("pids", "pids.max"), "33");
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
    }
    b.ok(&["rm", "-f", id.trim()]);
    // Bind mounts, read-write and read-only.
    let host = b.g.path("data");
    std::fs::create_dir_all(&host).unwrap();
    let v = format!("{}:/data", host.display());
    b.ok(&["run", "--rm", "-v", &v, "busybox", "sh", "-c", "echo hi > /data/f"]);
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "hi\n");
    let vro = format!("{v}:ro");
    assert_ne!(b.run(&["run", "--rm", "-v", &vro, "busybox", "sh", "-c", "echo x > /data/g"]).0, 0);
    // The writable layer is the container's own: a file written in one is not in the next.
    b.ok(&["run", "--rm", "busybox", "sh", "-c", "echo x > /etc/written"]);
    assert_ne!(b.run(&["run", "--rm", "busybox", "test", "-e", "/etc/written"]).0, 0);
}

#[test]
fn images_load_tag_rmi_and_garbage() {
    let b = Berth::new("eng-img");
    let images = b.ok(&["images"]);
    assert!(images.starts_with("REPOSITORY") && images.contains("busybox") && images.contains("latest"), "{images}");
    // Loading twice is idempotent (same digests).
    let archive = b.g.path("busybox.tar");
    b.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(b.ok(&["images", "-q"]).lines().count(), 1);
    b.ok(&["tag", "busybox", "127.0.0.1:5000/my/bb:v1"]);
    assert!(b.ok(&["images"]).contains("127.0.0.1:5000/my/bb"));
    assert_eq!(b.ok(&["rmi", "127.0.0.1:5000/my/bb:v1"]).trim(), "Untagged: 127.0.0.1:5000/my/bb:v1");
    // In use: refused without -f.
    b.ok(&["create", "--name", "user", "busybox", "true"]);
    let (c, _, err) = b.run(&["rmi", "busybox"]);
    assert!(c != 0 && err.contains("is using its referenced image"), "{err}");
    b.ok(&["rm", "user"]);
    let out = b.ok(&["rmi", "busybox"]);
    assert!(out.contains("Untagged: busybox:latest") && out.contains("Deleted: sha256:"), "{out}");
    // Nothing of the image remains in the store or the layer storage.
    let blobs = std::fs::read_dir(b.g.path("root/images/blobs/sha256")).unwrap().count();
    let layers = std::fs::read_dir(b.g.path("root/storage/layers")).unwrap().count();
    assert_eq!((blobs, layers), (0, 0));
    // import: a root filesystem tarball becomes an image that runs.
    let tarball = b.g.path("rootfs.tar");
    std::fs::write(&tarball, berth_testkit::image::layer_tar()).unwrap();
    b.ok(&["import", tarball.to_str().unwrap(), "imported:v1"]);
    assert_eq!(b.ok(&["run", "--rm", "imported:v1", "echo", "from import"]), "from import\n");
}

#[test]
fn pseudo_terminals() {
    let b = Berth::new("eng-tty");
    // -t: the process runs on a pty (output with CRLF), the exit code comes back.
    let (code, out, err) =
        b.run(&["run", "--rm", "-t", "busybox", "sh", "-c", "tty; test -t 0 && echo isatty; exit 2"]);
    assert_eq!((code, out.as_str()), (2, "/dev/pts/0\r\nisatty\r\n"), "{err}");
    // -it through a real terminal (script(1) gives us one): input reaches the shell.
    let o = b.on_terminal("run -it --rm busybox sh", b"echo hello-$((40+2))\nexit 4\n");
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello-42"));
    // -dt: the pty's output goes to the log.
    let id = b.ok(&["run", "-dt", "busybox", "sh", "-c", "echo on-a-pty"]);
    assert_eq!(b.ok(&["wait", id.trim()]).trim(), "0");
    assert_eq!(b.ok(&["logs", id.trim()]), "on-a-pty\r\n");
    b.ok(&["rm", id.trim()]);
    // attach gives a -t container the attaching terminal's size.
    // (The container waits for a size, however late the attach comes.)
    // (busybox's stty size prints nothing on stdout for a 0x0 terminal.)
    let wait =
        "i=0; until [ -n \"$(stty size 2>/dev/null)\" ] || [ $i -ge 200 ]; do sleep 0.05; i=$((i+1)); done; stty size";
    let id = b.ok(&["run", "-dt", "--name", "sized", "busybox", "sh", "-c", wait]);
    let attach = format!(
        "stty rows 33 cols 77; {} --root {} --runroot {} attach sized",
        common::BERTH,
        b.g.path("root").display(),
        b.g.path("run").display()
    );
    let o =
        b.ns.command("script")
            .args(["-qec", &attach, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("33 77"), "{}", String::from_utf8_lossy(&o.stdout));
    b.ok(&["rm", "-f", id.trim()]);
}

#[test]
fn detach_keys_leave_the_container_running() {
    let b = Berth::new("eng-detach");
    let running = |name: &str| b.inspect(name, "{{.State.Status}}");
    // Whether the shell saw the line sent before the detach keys (it may read it a little later).
    let saw = |name: &str, file: &str| {
        (0..100).any(|_| {
            let ok = b.run(&["exec", name, "test", "-f", file]).0 == 0;
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            ok
        })
    };
    // Keys of our own on run: the command returns 0 and the container keeps running.
    let o = b.on_raw_terminal("run -it --name dk --detach-keys ctrl-x,x busybox sh", b"touch /one\n\x18x");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(running("dk"), "running");
    assert!(saw("dk", "/one"), "the input before the keys did not reach the shell");
    // Docker's default keys, ctrl-p ctrl-q, on a re-attach.
    let o = b.on_raw_terminal("attach dk", b"touch /two\n\x10\x11");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(running("dk"), "running");
    assert!(saw("dk", "/two"));
    // ctrl-p alone is passed on: the shell gets it and the session goes on to its exit.
    let o = b.on_raw_terminal("attach dk", b"\x10\nexit 3\n");
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(running("dk"), "exited");
    // Keys that are not keys: Docker's words, nothing created.
    let (code, _, err) = b.run(&["run", "-it", "--name", "bad", "--detach-keys", "ctrl-", "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(b.run(&["inspect", "bad"]).0 != 0, "a container was created");
    b.ok(&["rm", "-f", "dk"]);
}

#[test]
fn top_stats_diff_rename_update() {
    let b = Berth::new("eng-look");
    b.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "echo x > /new; rm /etc/group; sleep 60",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    // top: the host's `ps -ef` columns (Docker's), or the ps options given.
    let top = b.ok(&["top", "busy"]);
    let head: Vec<&str> = top.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(head, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "{top}");
    assert!(top.contains("sleep 60") && top.lines().count() == 2, "{top}");
    let top = b.ok(&["top", "busy", "-o", "pid,comm"]);
    assert!(top.starts_with("PID") && top.lines().nth(1).is_some_and(|l| l.ends_with("sleep")), "{top}");
    let stats = b.ok(&["stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", "busy"]);
    assert!(stats.starts_with("busy ") && stats.contains("/ 32MiB 1"), "{stats}");
    // Docker's default table, NET I/O (the container's interfaces but lo) included.
    let table = b.ok(&["stats", "--no-stream", "busy"]);
    let head = table.lines().next().unwrap_or("");
    for col in ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"] {
        assert!(head.contains(col), "{col} missing: {table}");
    }
    let net = b.ok(&["stats", "--no-stream", "--format", "{{.NetIO}}", "busy"]);
    assert!(net.trim().split(" / ").count() == 2 && net.trim().ends_with('B'), "{net}");
    let diff = b.ok(&["diff", "busy"]);
    assert!(diff.contains("A /new") && diff.contains("D /etc/group") && diff.contains("C /etc"), "{diff}");
    b.ok(&["update", "--memory", "48m", "--pids-limit", "40", "busy"]);
    assert_eq!(b.inspect("busy", "{{.HostConfig.Memory}}"), (48 << 20).to_string());
    // Every update flag reaches the cgroup and inspect; what does not fit is refused.
    b.ok(&[
        "update",
        "--memory-swap",
        "96m",
        "--memory-reservation",
        "16m",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "20000",
        "--cpuset-mems",
        "0",
        "--restart",
        "on-failure:3",
        "busy",
    ]);
    let pid = b.inspect("busy", "{{.State.Pid}}");
    let read = |ctrl: &str, file: &str| cgroup_file(&pid, ctrl, file);
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(read("memory", "memory.limit_in_bytes"), (48 << 20).to_string());
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), (96 << 20).to_string());
        assert_eq!(read("memory", "memory.soft_limit_in_bytes"), (16 << 20).to_string());
        assert_eq!(read("pids", "pids.max"), "40");
        assert_eq!(
            (read("cpu", "cpu.cfs_period_us"), read("cpu", "cpu.cfs_quota_us")),
            ("50000".into(), "20000".into())
        );
        assert_eq!(read("cpuset", "cpuset.mems"), "0");
    } else {
        assert_eq!(read("", "memory.max"), (48 << 20).to_string());
        assert_eq!(read("", "pids.max"), "40");
        assert_eq!(read("", "cpu.max"), "20000 50000");
    }
    assert_eq!(
        b.inspect(
            "busy",
            "{{.HostConfig.MemorySwap}} {{.HostConfig.MemoryReservation}} {{.HostConfig.RestartPolicy.Name}}"
        ),
        format!("{} {} on-failure", 96 << 20, 16 << 20)
    );
    let (c, _, err) = b.run(&["update", "--memory", "128m", "busy"]);
    assert!(c != 0 && err.contains("Memory limit should be smaller than already set memoryswap limit"), "{err}");
    let (c, _, err) = b.run(&["update", "--cpus", "1", "busy"]);
    assert!(c != 0 && err.contains("Conflicting options: Nano CPUs and CPU Period"), "{err}");
    let (c, _, err) = b.run(&["update", "--restart", "sometimes", "busy"]);
    assert!(c != 0 && err.contains("invalid restart policy"), "{err}");
    b.ok(&["rename", "busy", "idle"]);
    assert_eq!(b.inspect("idle", "{{.Name}}"), "/idle");
    b.ok(&["run", "-d", "--name", "other", "busybox", "sleep", "60"]);
    let (c, _, err) = b.run(&["rename", "idle", "other"]);
    assert!(c != 0 && err.contains("already in use"), "{err}");
}

#[test]
fn restart_policies() {
    let b = Berth::new("eng-restart");
    b.ok(&["run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3"]);
    assert_eq!(b.ok(&["wait", "flaky"]).trim(), "3");
    assert_eq!(
        b.inspect("flaky", "{{.State.Status}} {{.RestartCount}}"),
        "exited 2",
        "Docker keeps the count at the top level"
    );
    assert_eq!(b.ok(&["logs", "flaky"]), "run\nrun\nrun\n");
    // always: restarts after a clean exit too, until stopped.
    b.ok(&["run", "-d", "--name", "loop", "--restart", "always", "busybox", "sh", "-c", "sleep 0.1"]);
    for _ in 0..200 {
        if b.inspect("loop", "{{.State.RestartCount}}") != "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(b.inspect("loop", "{{.State.RestartCount}}"), "0");
    b.ok(&["stop", "-t", "1", "loop"]);
    assert_eq!(b.inspect("loop", "{{.State.Status}}"), "exited");
    // kill stops it for good too (Docker's); a signal that is not a stop leaves the policy on.
    let hup = "trap 'exit 3' HUP; while :; do sleep 0.1; done";
    b.ok(&["run", "-d", "--name", "killed", "--restart", "always", "busybox", "sh", "-c", hup]);
    std::thread::sleep(Duration::from_millis(200));
    b.ok(&["kill", "-s", "HUP", "killed"]); // the shell exits 3 on SIGHUP; always restarts it
    for _ in 0..200 {
        if b.inspect("killed", "{{.RestartCount}} {{.State.Status}}") == "1 running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.inspect("killed", "{{.RestartCount}} {{.State.Status}}"), "1 running");
    b.ok(&["kill", "killed"]);
    assert_eq!(b.ok(&["wait", "killed"]).trim(), "137");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.inspect("killed", "{{.RestartCount}} {{.State.Status}}"), "1 exited");
    // update --restart applies to the run in progress.
    b.ok(&["run", "-d", "--name", "upd", "busybox", "sh", "-c", "sleep 0.5; exit 1"]);
    b.ok(&["update", "--restart", "on-failure:1", "upd"]);
    for _ in 0..200 {
        if b.inspect("upd", "{{.RestartCount}} {{.State.Status}}") == "1 exited" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.inspect("upd", "{{.RestartCount}} {{.State.Status}}"), "1 exited");
    // stop of a paused container: the stop signal reaches it (thawed), not only the SIGKILL.
    b.ok(&[
        "run",
        "-d",
        "--name",
        "frozen",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    // Paused only once the trap is set (a slow start would leave TERM to PID 1's default).
    for _ in 0..200 {
        if b.ok(&["logs", "frozen"]).contains("ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    b.ok(&["pause", "frozen"]);
    b.ok(&["stop", "-t", "5", "frozen"]);
    assert_eq!(b.inspect("frozen", "{{.State.Status}} {{.State.ExitCode}}"), "exited 7");
    let (c, _, err) = b.run(&["run", "--restart", "sometimes", "busybox", "true"]);
    assert!(c == 125 && err.contains("invalid restart policy"), "{err}");
}

#[test]
fn killed_monitor_is_repaired_by_the_next_command() {
    let b = Berth::new("eng-crash");
    // Kills a container's monitor (the parent of its init) and the init; returns the init's pid.
    let kill_monitor = |id: &str| {
        let pid = b.inspect(id, "{{.State.Pid}}");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: i32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: kill(2) of the container's monitor and init.
        unsafe {
            libc::kill(ppid, libc::SIGKILL);
            libc::kill(pid.parse().unwrap(), libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
        pid
    };
    let id = b.ok(&["run", "-d", "busybox", "sleep", "60"]).trim().to_string();
    kill_monitor(&id);
    assert_eq!(b.inspect(&id, "{{.State.Status}} {{.State.ExitCode}}"), "exited 255");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(b.g.path("root").to_str().unwrap()), "the root is still mounted");
    b.ok(&["rm", &id]);
    // As Docker's daemon does for what it finds dead when it starts again (after a reboot or
    // a crash): a container whose policy says so starts again, now that a command noticed.
    let always = b.ok(&["run", "-d", "--network", "none", "--restart", "always", "busybox", "sleep", "60"]);
    let always = always.trim();
    let old = kill_monitor(always);
    assert_eq!(b.inspect(always, "{{.State.Status}}"), "running");
    let new = b.inspect(always, "{{.State.Pid}}");
    assert_ne!(new, old);
    assert!(std::path::Path::new(&format!("/proc/{new}")).exists());
    // The default policy (no) stays exited.
    let plain = b.ok(&["run", "-d", "--network", "none", "busybox", "sleep", "60"]);
    kill_monitor(plain.trim());
    assert_eq!(b.inspect(plain.trim(), "{{.State.Status}}"), "exited");
    b.ok(&["rm", "-f", always, plain.trim()]);
}

#[test]
fn short_runs_in_a_row_and_one_rm_of_many() {
    let b = Berth::new("eng-many");
    // Each run is a whole monitor life (setup, pump, teardown, removal): every one must report
    // its container's exit code, not "the container's monitor died before reporting".
    for i in 0..25 {
        let code = i % 7;
        let out = b
            .cmd(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", &format!("exit {code}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "run {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // One `rm -f` of several running containers: all killed first, then each removed.
    let ids: Vec<String> = (0..6)
        .map(|_| b.ok(&["run", "-d", "--network", "none", "busybox", "sleep", "60"]).trim().to_string())
        .collect();
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    assert_eq!(b.ok(&args).lines().collect::<Vec<_>>(), ids);
    assert!(b.ids().is_empty());
}

#[test]
fn parallel_runs_and_removes() {
    // The issue's figure: 50 parallel runs give 50 correct containers, never a lock error.
    let b = Berth::new("eng-par");
    let n = 50;
    let children: Vec<_> = (0..n)
        .map(|i| {
            b.cmd(&["run", "-d", "--name", &format!("p{i}"), "busybox", "sleep", "60"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && !err.to_lowercase().contains("lock"), "{err}");
    }
    assert_eq!(b.ok(&["ps", "-q"]).lines().count(), n);
    // Each on the default bridge with an address of its own.
    let ips: std::collections::BTreeSet<String> = (0..n)
        .map(|i| b.inspect(&format!("p{i}"), "{{.State.Status}} {{.NetworkSettings.IPAddress}}"))
        .inspect(|s| assert!(s.starts_with("running 10."), "{s}"))
        .collect();
    assert_eq!(ips.len(), n, "{ips:?}");
    let ids = b.ids();
    let children: Vec<_> = ids
        .iter()
        .map(|id| b.cmd(&["rm", "-f", id]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(b.ids().is_empty());
}

#[test]
fn init_forwards_signals_reaps_zombies_and_passes_the_exit_code() {
    let b = Berth::new("eng-init");
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--init",
        "busybox",
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("/dev/init -- sh -c tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$ "), "{out}");
    assert_ne!(lines.next(), Some("1"), "the command should not be PID 1: {out}");
    let (code, _, _) = b.run(&["run", "--rm", "--network", "none", "--init", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3);
    // An orphan is reparented to PID 1 and reaped: no zombie stays.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--init",
        "busybox",
        "sh",
        "-c",
        "sh -c 'sleep 0.1 & exit 0'; sleep 0.5; ps -o stat | grep -c Z || true",
    ]);
    assert_eq!(out.trim(), "0", "zombies: {out}");
    // SIGTERM reaches the command (a shell as PID 1 would ignore it and be killed after -t).
    let id = b.ok(&["run", "-d", "--network", "none", "--init", "busybox", "sleep", "60"]);
    b.ok(&["stop", "-t", "20", id.trim()]);
    assert_eq!(b.inspect(id.trim(), "{{.State.ExitCode}}"), "143");
    // Nothing was added to the container's files: /dev/init lives on the /dev tmpfs.
    let diff = b.ok(&["diff", id.trim()]);
    assert!(!diff.contains("init"), "{diff}");
    b.ok(&["rm", id.trim()]);
}

#[test]
fn healthchecks_run_on_schedule_and_report() {
    let b = Berth::new("eng-health");
    let ok = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--health-cmd",
        "test -e /tmp/ready && echo fine",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/ready; sleep 60",
    ]);
    let bad = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--health-cmd",
        "echo broken; exit 1",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "60",
    ]);
    let slow = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--health-cmd",
        "sleep 5",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "60",
    ]);
    let (ok, bad, slow) = (ok.trim(), bad.trim(), slow.trim());
    let wait_for = |id: &str, want: &str| {
        for _ in 0..100 {
            if b.inspect(id, "{{.State.Health.Status}}") == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{id} never became {want}: {}", b.ok(&["inspect", id]));
    };
    wait_for(ok, "healthy");
    wait_for(bad, "unhealthy");
    wait_for(slow, "unhealthy");
    let log = b.inspect(ok, "{{json .State.Health.Log}}");
    assert!(log.contains("fine"), "{log}");
    assert!(b.inspect(bad, "{{.State.Health.FailingStreak}}").parse::<u32>().unwrap() >= 2);
    assert!(b.inspect(slow, "{{json .State.Health.Log}}").contains("exceeded timeout"));
    let ps = b.ok(&["ps", "--filter", "health=healthy", "--format", "{{.ID}} {{.Status}}"]);
    assert!(ps.contains(&ok[..12]) && ps.contains("(healthy)") && !ps.contains(&bad[..12]), "{ps}");
    // --no-healthcheck: none at all.
    let none = b.ok(&["run", "-d", "--network", "none", "--no-healthcheck", "busybox", "sleep", "60"]);
    assert_eq!(b.inspect(none.trim(), "{{.State.Health}}"), "<no value>");
    for id in [ok, bad, slow, none.trim()] {
        b.ok(&["rm", "-f", id]);
    }
}

#[test]
fn exec_with_a_pseudo_terminal() {
    let b = Berth::new("eng-exec-t");
    let id = b.ok(&["run", "-d", "--network", "none", "busybox", "sleep", "60"]);
    let id = id.trim();
    // -t: the command runs on its own pty (CRLF output), its exit code comes back.
    let (code, out, err) = b.run(&["exec", "-t", id, "sh", "-c", "tty; test -t 1 && echo isatty; exit 5"]);
    assert_eq!(code, 5, "{err}");
    assert!(out.starts_with("/dev/pts/") && out.ends_with("\r\nisatty\r\n"), "{out:?}");
    assert_eq!(b.ok(&["exec", "-t", id, "sh", "-c", "echo $TERM"]), "xterm\r\n");
    // -it through a real terminal (script(1)): input reaches the command.
    let o = b.on_terminal(&format!("exec -it {id} sh"), b"echo typed-$((6*7))\nexit 6\n");
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stdout).contains("typed-42"));
    b.ok(&["rm", "-f", id]);
}

#[test]
fn events_record_what_happened_and_follow() {
    let b = Berth::new("eng-events");
    // Following: the first matching event arrives while we wait.
    let mut follow = b
        .cmd(&[
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}} {{.Action}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let first = std::thread::spawn(move || {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut l).map(|_| l)
    });
    b.ok(&["run", "-d", "--name", "ev", "--network", "none", "busybox", "sleep", "60"]);
    b.ok(&["pause", "ev"]);
    b.ok(&["unpause", "ev"]);
    b.ok(&["stop", "-t", "1", "ev"]);
    b.ok(&["rename", "ev", "ev2"]);
    b.ok(&["rm", "ev2"]);
    let until =
        format!("{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !first.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(first.join().unwrap().unwrap(), "ev start\n");
    // The record, in order, between two times.
    let out =
        b.ok(&["events", "--since", "0", "--until", &until, "--filter", "type=container", "--format", "{{.Action}}"]);
    let actions: Vec<&str> = out.lines().collect();
    // sleep as PID 1 ignores SIGTERM: stop sends SIGKILL after the timeout, as Docker does.
    assert_eq!(
        actions,
        ["create", "start", "pause", "unpause", "kill", "kill", "die", "stop", "rename", "destroy"],
        "{out}"
    );
    let json = b.ok(&["events", "--since", "0", "--until", &until, "--filter", "event=die", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!((v["Type"].as_str(), v["Actor"]["Attributes"]["exitCode"].as_str()), (Some("container"), Some("137")));
    let (code, _, err) = b.run(&["events", "--until", "1", "--filter", "bogus=1"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid filter"), "{err}");
}

#[test]
fn stats_stream_and_logs_select_a_time_window() {
    let b = Berth::new("eng-stats");
    let id =
        b.ok(&["run", "-d", "--network", "none", "busybox", "sh", "-c", "echo first; sleep 3; echo second; sleep 60"]);
    let id = id.trim();
    let logs_have = |word: &str| {
        for _ in 0..100 {
            if b.ok(&["logs", id]).contains(word) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {word} in the logs");
    };
    logs_have("first");
    std::thread::sleep(Duration::from_millis(1500));
    let mid = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    // Without --no-stream, stats prints a new table every second until stopped.
    let mut stats =
        b.cmd(&["stats", "--format", "{{.Name}} pids={{.PIDs}}", id]).stdout(Stdio::piped()).spawn().unwrap();
    logs_have("second");
    std::thread::sleep(Duration::from_millis(1000));
    let _ = stats.kill();
    let out = stats.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows.len() >= 2, "one table only: {out}");
    // sh and sleep, then sleep alone once the shell execs its last command.
    assert!(rows.iter().all(|r| r.ends_with("pids=2") || r.ends_with("pids=1")), "{out}");
    let mid = format!("{mid:.3}");
    assert_eq!(b.ok(&["logs", "--until", &mid, id]), "first\n");
    assert_eq!(b.ok(&["logs", "--since", &mid, id]), "second\n");
    assert_eq!(b.ok(&["logs", "--since", "10m", id]), "first\nsecond\n");
    b.ok(&["rm", "-f", id]);
}

#[test]
fn attach_follows_a_running_container() {
    let b = Berth::new("eng-attach");
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sleep 1; echo out-line; echo err-line >&2; sleep 1; exit 9",
    ]);
    let (code, out, err) = b.run(&["attach", id.trim()]);
    assert_eq!((code, out.as_str()), (9, "out-line\n"), "{err}");
    assert!(err.contains("err-line"), "{err}");
    let (code, _, err) = b.run(&["attach", id.trim()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot attach to a stopped container"), "{err}");
    b.ok(&["rm", id.trim()]);
    // attach passes the signals it gets on to the container (--sig-proxy, on by default).
    let trap = "trap 'echo got-term; exit 3' TERM; while :; do echo tick; sleep 0.1; done";
    for proxy in ["true", "false"] {
        let id = b.ok(&["run", "-d", "--network", "none", "busybox", "sh", "-c", trap]);
        let id = id.trim();
        let mut c = b.cmd(&["attach", &format!("--sig-proxy={proxy}"), id]);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        // The first line through attach: it is connected, its handlers are in place.
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "tick\n");
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        let o = child.wait_with_output().unwrap();
        if proxy == "true" {
            assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(rest.contains("got-term"), "{rest}");
        } else {
            assert_eq!(b.inspect(id, "{{.State.Status}}"), "running", "the container got the signal");
        }
        b.ok(&["rm", "-f", id]);
    }
    // start -i attaches (Docker's start -i is -ai): input in, output out, its exit code.
    b.ok(&[
        "create",
        "-i",
        "--name",
        "starter",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "read l; echo got-$l; exit 5",
    ]);
    let mut c = b.cmd(&["start", "-i", "starter"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"in\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!((o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()), (Some(5), "got-in\n"));
    b.ok(&["rm", "starter"]);
    // -i keeps a detached container's stdin open (no terminal): attach writes to it.
    let id =
        b.ok(&["run", "-d", "-i", "--network", "none", "busybox", "sh", "-c", "read line; echo got-$line; exit 4"]);
    let mut c = b.cmd(&["attach", id.trim()]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()),
        (Some(4), "got-hello\n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    b.ok(&["rm", id.trim()]);
}

#[test]
fn dns_flags_and_label_files() {
    let b = Berth::new("eng-dns");
    let labels = b.g.path("labels");
    std::fs::write(&labels, "# team labels\nteam=core\n\ntier=db\n").unwrap();
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--label-file",
        labels.to_str().unwrap(),
        "-l",
        "tier=web",
        "--name",
        "dnsy",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(out, "nameserver 192.0.2.53\nsearch corp.example\noptions ndots:2\n");
    let id = b.ok(&[
        "create",
        "--network",
        "none",
        "--label-file",
        labels.to_str().unwrap(),
        "-l",
        "tier=web",
        "busybox",
        "true",
    ]);
    assert_eq!(b.inspect(id.trim(), "{{.Config.Labels.team}} {{.Config.Labels.tier}}"), "core web");
    let (code, _, err) = b.run(&["create", "--label-file", "/nonexistent-labels", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("no such file"), "{err}");
    // --add-host: NAME:IP and NAME=IP, IPv6, host-gateway (the network's gateway); checked at
    // create.
    let hosts = b.ok(&[
        "run",
        "--rm",
        "--add-host",
        "gw:host-gateway",
        "--add-host",
        "six:::1",
        "--add-host",
        "eq=192.0.2.7",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    for want in ["10.77.0.1\tgw\n", "::1\tsix\n", "192.0.2.7\teq\n"] {
        assert!(hosts.contains(want), "{want:?} in {hosts}");
    }
    for bad in ["nocolon", "name:not-an-ip", ":1.2.3.4"] {
        let (code, _, err) = b.run(&["create", "--add-host", bad, "busybox", "true"]);
        assert!(code == 125 && err.contains("--add-host"), "{bad}: {err}");
    }
}

#[test]
fn killing_the_cli_leaves_the_container_in_its_monitors_hands() {
    let b = Berth::new("eng-cli-kill");
    // kill -9 of an attached `run` at two points: right away, and once the container printed.
    for name in ["k0", "k1"] {
        let mut cli = b
            .cmd(&["run", "--name", name, "busybox", "sh", "-c", "echo up; sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        if name == "k1" {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(cli.stdout.take().unwrap()), &mut line).unwrap();
            assert_eq!(line, "up\n");
        }
        cli.kill().unwrap();
        let _ = cli.wait();
    }
    // Whatever the point, the next commands see consistent state: each container either runs
    // (its monitor carries on) or never started, and all can be removed cleanly.
    let mut running = 0;
    for name in ["k0", "k1"] {
        match b.run(&["inspect", "-f", "{{.State.Status}}", name]) {
            (0, s, _) if s.trim() == "running" => running += 1,
            (0, s, _) => assert!(matches!(s.trim(), "created" | "exited"), "{name}: {s}"),
            (_, _, err) => assert!(err.contains("No such"), "{name}: {err}"),
        }
    }
    assert!(running >= 1, "the container started before the kill did not survive it");
    for id in b.ids() {
        b.ok(&["rm", "-f", &id]);
    }
    assert!(b.ids().is_empty());
}

#[test]
fn another_oci_runtime_runs_the_container() {
    if std::process::Command::new("runc").arg("--version").output().is_err() {
        eprintln!("runc is not installed (apt-get install runc): skipped");
        return;
    }
    let b = Berth::new("eng-runc");
    // Attached, with the exit code and output, on the default bridge network.
    let (code, out, err) = b.run(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "busybox",
        "sh",
        "-c",
        "echo from-runc; ip -o -4 addr show eth0 | grep -c 10.77; exit 4",
    ]);
    assert_eq!((code, out.as_str()), (4, "from-runc\n1\n"), "{err}");
    // Detached: exec, pause/unpause, stop (SIGTERM ignored by PID 1: SIGKILL after -t), rm.
    let id = b.ok(&["run", "-d", "--runtime", "runc", "--network", "none", "busybox", "sleep", "60"]);
    let id = id.trim();
    assert_eq!(b.ok(&["exec", id, "cat", "/proc/1/cmdline"]), "sleep\u{0}60\u{0}");
    // top, stats and update find the container's cgroup whichever runtime made it.
    assert!(b.ok(&["top", id]).contains("sleep 60"));
    b.ok(&["update", "--pids-limit", "21", id]);
    let stats = b.ok(&["stats", "--no-stream", "--format", "{{.PIDs}}", id]);
    assert_eq!(stats.trim(), "1", "{stats}");
    let pid = b.inspect(id, "{{.State.Pid}}");
    assert_eq!(
        cgroup_file(&pid, if std::path::Path::new("/sys/fs/cgroup/pids").exists() { "pids" } else { "" }, "pids.max"),
        "21"
    );
    b.ok(&["pause", id]);
    assert_eq!(b.inspect(id, "{{.State.Status}}"), "paused");
    b.ok(&["unpause", id]);
    b.ok(&["stop", "-t", "1", id]);
    assert_eq!(b.inspect(id, "{{.State.ExitCode}}"), "137");
    b.ok(&["rm", id]);
    // Healthchecks go through that runtime's exec too.
    let id = b.ok(&[
        "run",
        "-d",
        "--runtime",
        "runc",
        "--network",
        "none",
        "--health-cmd",
        "echo via-runc",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "60",
    ]);
    let id = id.trim();
    let mut status = String::new();
    for _ in 0..100 {
        status = b.inspect(id, "{{.State.Health.Status}}");
        if status != "starting" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status, "healthy", "{}", b.inspect(id, "{{json .State.Health}}"));
    assert!(b.inspect(id, "{{json .State.Health.Log}}").contains("via-runc"));
    b.ok(&["rm", "-f", id]);
    // The runtime's state is gone with the container.
    let state = b.g.path("run").join("runtimes/runc");
    let left: Vec<_> =
        std::fs::read_dir(&state).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "runc state left: {left:?}");
    let (code, _, err) = b.run(&["run", "--rm", "--runtime", "no-such-runtime", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("unknown or invalid runtime name"), "{err}");
}

#[test]
fn ps_size_counts_the_containers_own_files() {
    let b = Berth::new("eng-size");
    b.ok(&[
        "run",
        "--name",
        "big",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/blob bs=1k count=2048 2>/dev/null",
    ]);
    let out = b.ok(&["ps", "-a", "-s", "--format", "{{.Names}} {{.Size}}"]);
    assert!(out.starts_with("big 2.097MB (virtual "), "{out}");
    let table = b.ok(&["ps", "-a", "-s"]);
    assert!(table.lines().next().unwrap().ends_with("SIZE"), "{table}");
    // Filters: the same key twice is either, different keys are both, labels all hold;
    // -n/-l/--no-trunc and the json format.
    b.ok(&["create", "--name", "fresh", "-l", "a=1", "-l", "b=2", "--network", "none", "busybox", "true"]);
    b.ok(&["run", "-d", "--name", "up", "-l", "a=1", "--network", "none", "busybox", "sleep", "60"]);
    let names = |args: &[&str]| {
        let mut all = vec!["ps", "-a", "--format", "{{.Names}}"];
        all.extend(args);
        let mut v: Vec<String> = b.ok(&all).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["--filter", "status=exited", "--filter", "status=created"]), ["big", "fresh"]);
    assert_eq!(names(&["--filter", "status=created", "--filter", "label=a=1"]), ["fresh"]);
    assert_eq!(names(&["--filter", "label=a=1", "--filter", "label=b"]), ["fresh"]);
    assert_eq!(names(&["--filter", "status=running", "--filter", "name=up"]), ["up"]);
    let (code, _, err) = b.run(&["ps", "--filter", "status=sleepy"]);
    assert!(code != 0 && err.contains("Invalid filter 'status=sleepy'"), "{err}");
    assert_eq!(b.ok(&["ps", "-a", "-n", "2", "--format", "{{.Names}}"]), "up\nfresh\n");
    assert_eq!(b.ok(&["ps", "-l", "--format", "{{.Names}}"]), "up\n");
    assert_eq!(b.ok(&["ps", "-q", "--no-trunc", "--filter", "name=up"]).trim().len(), 64);
    let json = b.ok(&["ps", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!((v["Names"].as_str(), v["State"].as_str()), (Some("up"), Some("running")), "{json}");
    b.ok(&["rm", "-f", "up"]);
}

#[test]
fn everything_after_the_image_belongs_to_the_container() {
    let b = Berth::new("eng-argv");
    // -c after the image is the command's, not --cpu-shares (as Docker reads it).
    let out = b.ok(&["run", "--rm", "--network", "none", "--entrypoint", "sh", "busybox", "-c", "echo passed-$0", "x"]);
    assert_eq!(out, "passed-x\n");
    let (code, _, err) = b.run(&["run", "--rm", "--network", "none"]);
    assert_ne!(code, 0);
    assert!(err.contains("IMAGE"), "{err}");
}

#[test]
fn system_prune_takes_what_nothing_uses() {
    let b = Berth::new("eng-sysprune");
    let keep = b.ok(&["run", "-d", "--network", "none", "busybox", "sleep", "60"]);
    let stopped = b.ok(&["run", "--network", "none", "-v", "/scratch", "busybox", "sh", "-c", "echo x > /new"]);
    let _ = stopped;
    let stopped = b.ok(&["ps", "-aq", "--filter", "status=exited"]);
    let dangling = b.ok(&["commit", stopped.trim()]);
    b.ok(&["network", "create", "unused"]);
    let out = b.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Containers:") && out.contains(stopped.trim()), "{out}");
    assert!(out.contains("Deleted Networks:\nunused"), "{out}");
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert!(out.contains("Deleted Images:") && out.contains(&dangling.trim()[7..19]), "{out}");
    // What is in use stays: the running container, its image, the default network.
    assert_eq!(b.ok(&["ps", "-q"]).trim(), &keep.trim()[..12]);
    assert!(b.ok(&["images", "-q"]).lines().count() == 1);
    assert_eq!(b.ok(&["network", "ls", "--format", "{{.Name}}"]), "bridge\n");
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "");
    b.ok(&["rm", "-f", keep.trim()]);
}

#[test]
fn userns_auto_gives_each_container_its_own_host_ids() {
    let b = Berth::new("eng-userns");
    let (su, sg) = (b.g.path("subuid"), b.g.path("subgid"));
    std::fs::write(&su, "root:100000:65536\nberth:300000:131072\n").unwrap();
    std::fs::write(&sg, "berth:500000:131072\n").unwrap();
    let run = |args: &[&str]| {
        let o = b.cmd(args).env("BERTH_SUBUID_FILE", &su).env("BERTH_SUBGID_FILE", &sg).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Inside: root, owning the image's files; new files and copy-ups are root's too.
    let script = "id -u; cat /proc/self/uid_map /proc/self/gid_map; stat -c %u:%g /bin/busybox /etc/hosts; \
                  echo x > /made && stat -c %u:%g /made; touch /bin/busybox && echo ok";
    let (code, out, err) =
        run(&["run", "--rm", "--network", "none", "--userns", "auto", "busybox", "sh", "-c", script]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        [
            vec!["0"],
            vec!["0", "300000", "65536"],
            vec!["0", "500000", "65536"],
            vec!["0:0"],
            vec!["0:0"],
            vec!["0:0"],
            vec!["ok"]
        ],
        "{out}"
    );
    // A volume is seen through the same mapping: the image's files copied in and what root
    // writes there are root's inside and stored as 0 on disk.
    let (code, out, err) = run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--userns",
        "auto",
        "-v",
        "uvol:/etc",
        "busybox",
        "sh",
        "-c",
        "stat -c %u /etc/passwd; echo y > /etc/new && stat -c %u /etc/new",
    ]);
    assert_eq!((code, out.split_whitespace().collect::<Vec<_>>()), (Some(0), vec!["0", "0"]), "{err}");
    let mp = b.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "uvol"]);
    assert_eq!(std::fs::metadata(std::path::Path::new(mp.trim()).join("new")).unwrap().uid(), 0);
    // Outside: two containers, two disjoint blocks of host ids.
    let (_, a, err) = run(&[
        "run",
        "-d",
        "--network",
        "none",
        "--userns",
        "auto",
        "busybox",
        "sh",
        "-c",
        "echo hi > /made; sleep 60",
    ]);
    let a = a.trim().to_string();
    assert!(!a.is_empty(), "{err}");
    let (_, c, err) = run(&["run", "-d", "--network", "none", "--userns", "auto", "busybox", "sleep", "60"]);
    let c = c.trim().to_string();
    assert!(!c.is_empty(), "{err}");
    let host_ids = |id: &str| {
        let pid = b.inspect(id, "{{.State.Pid}}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field =
            |k: &str| status.lines().find(|l| l.starts_with(k)).unwrap().split_whitespace().nth(1).unwrap().to_string();
        (field("Uid:"), field("Gid:"))
    };
    assert_eq!(host_ids(&a), ("300000".into(), "500000".into()));
    assert_eq!(host_ids(&c), ("365536".into(), "565536".into()));
    assert_eq!(b.inspect(&a, "{{.HostConfig.UsernsMode}}"), "auto");
    // What the container writes is stored with the image's ids, so cp and commit need no
    // translation.
    let upper = b.g.path("root").join("storage/containers").join(&a).join("upper/made");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !upper.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let meta = std::fs::metadata(&upper).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(b.ok(&["exec", &a, "stat", "-c", "%u", "/made"]).trim(), "0");
    // cp into and out of the running container speaks the container's ids, not the host's.
    let host_file = b.g.path("in.txt");
    std::fs::write(&host_file, "in").unwrap();
    b.ok(&["cp", host_file.to_str().unwrap(), &format!("{a}:/in.txt")]);
    assert_eq!(b.ok(&["exec", &a, "stat", "-c", "%u:%g", "/in.txt"]).trim(), "0:0");
    let out_dir = b.g.path("etc-out");
    b.ok(&["cp", "-a", &format!("{a}:/etc"), out_dir.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(out_dir.join("passwd")).unwrap().uid(), 0);
    // The ranges are used up: a clear error, nothing created.
    let (code, _, err) = run(&["run", "-d", "--userns", "auto", "busybox", "true"]);
    assert_eq!(code, Some(125));
    assert!(err.contains("no free block of 65536 ids"), "{err}");
    assert_eq!(b.ids().len(), 2);
    // Bad input.
    let (code, _, err) = run(&["run", "--rm", "--userns", "auto", "--privileged", "busybox", "true"]);
    assert_eq!((code, err.contains("incompatible with user namespaces")), (Some(125), true), "{err}");
    let (code, _, err) = run(&["run", "--rm", "--userns", "keep-id", "busybox", "true"]);
    assert_eq!((code, err.contains("use host or auto[:size=N]")), (Some(125), true), "{err}");
    std::fs::write(&su, "root:100000:65536\n").unwrap();
    let (code, _, err) = run(&["run", "--rm", "--userns", "auto", "busybox", "true"]);
    assert_eq!((code, err.contains("has no range for user berth")), (Some(125), true), "{err}");
    b.ok(&["rm", "-f", &a, &c]);
    b.ok(&["volume", "rm", "uvol"]);
}

#[test]
fn cpu_block_io_oom_and_device_flags() {
    let b = Berth::new("eng-res");
    // Negative values as Docker takes them: unlimited pids and swap.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-m",
        "64m",
        "--memory-swap",
        "-1",
        "--pids-limit",
        "-1",
        "busybox",
        "cat",
        "/sys/fs/cgroup/pids/pids.max",
    ]);
    assert_eq!(out.trim(), "max");
    // --sysctl reaches the container's own namespaces (network, IPC), not the host's.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--sysctl",
        "kernel.shmmni=1234",
        "busybox",
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/kernel/shmmni",
    ]);
    assert_eq!(out, "1\n1234\n");
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap().trim(), "1234", "the host's changed");
    let disk = whole_disk();
    let (bps, iops) = disk.as_ref().map(|d| (format!("{d}:1mb"), format!("{d}:100"))).unwrap_or_default();
    let (wbps, riops) = disk.as_ref().map(|d| (format!("{d}:2mb"), format!("{d}:50"))).unwrap_or_default();
    let mut args = vec![
        "run",
        "-d",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "25000",
        "--cpuset-mems",
        "0",
        "--memory",
        "64m",
        "--oom-kill-disable",
        "--blkio-weight",
        "300",
        "--device",
        "/dev/null:/dev/xnull:rw",
    ];
    if disk.is_some() {
        args.extend(["--device-read-bps", &bps, "--device-write-iops", &iops]);
        args.extend(["--device-write-bps", &wbps, "--device-read-iops", &riops]);
    } else {
        eprintln!("no whole disk on this machine: the throttle flags go untested");
    }
    args.extend(["busybox", "sleep", "60"]);
    let id = b.ok(&args).trim().to_string();
    let pid = b.inspect(&id, "{{.State.Pid}}");
    let dev = disk.as_ref().map(|d| {
        let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(d).unwrap());
        format!("{}:{}", libc::major(rdev), libc::minor(rdev))
    });
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.cfs_period_us"), "50000");
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.cfs_quota_us"), "25000");
        assert_eq!(cgroup_file(&pid, "cpuset", "cpuset.mems"), "0");
        assert!(cgroup_file(&pid, "memory", "memory.oom_control").contains("oom_kill_disable 1"));
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let blkio = cg
            .lines()
            .find(|l| l.split(':').nth(1) == Some("blkio"))
            .unwrap()
            .splitn(3, ':')
            .nth(2)
            .unwrap()
            .to_string();
        let dir = format!("/sys/fs/cgroup/blkio{blkio}");
        let weight = ["blkio.weight", "blkio.bfq.weight"]
            .iter()
            .find_map(|f| std::fs::read_to_string(format!("{dir}/{f}")).ok())
            .unwrap();
        assert!(weight.split_whitespace().any(|w| w == "300"), "{weight}");
        if let Some(dev) = &dev {
            assert_eq!(cgroup_file(&pid, "blkio", "blkio.throttle.read_bps_device"), format!("{dev} 1048576"));
            assert_eq!(cgroup_file(&pid, "blkio", "blkio.throttle.write_iops_device"), format!("{dev} 100"));
            assert_eq!(cgroup_file(&pid, "blkio", "blkio.throttle.write_bps_device"), format!("{dev} 2097152"));
            assert_eq!(cgroup_file(&pid, "blkio", "blkio.throttle.read_iops_device"), format!("{dev} 50"));
        }
    } else {
        assert_eq!(cgroup_file(&pid, "", "cpu.max"), "25000 50000");
        assert_eq!(cgroup_file(&pid, "", "cpuset.mems"), "0");
        if let Some(dev) = &dev {
            let io = cgroup_file(&pid, "", "io.max");
            assert!(io.contains(&format!("{dev} rbps=1048576")) && io.contains("wiops=100"), "{io}");
            assert!(io.contains("wbps=2097152") && io.contains("riops=50"), "{io}");
        }
    }
    // The device is there, with its numbers, usable as asked.
    assert_eq!(b.ok(&["exec", &id, "sh", "-c", "echo x > /dev/xnull && stat -c %t:%T /dev/xnull"]).trim(), "1:3");
    assert_eq!(
        b.inspect(&id, "{{.HostConfig.CpuPeriod}} {{.HostConfig.OomKillDisable}} {{.HostConfig.BlkioWeight}}"),
        "50000 true 300"
    );
    b.ok(&["rm", "-f", &id]);
    // Docker's checks and words; nothing is created.
    for (flags, words) in [
        (vec!["--cpus", "1", "--cpu-period", "50000"], "Nano CPUs and CPU Period cannot both be set"),
        (vec!["--cpu-quota", "10"], "CPU cfs quota can not be less than 1ms"),
        (vec!["--blkio-weight", "5"], "Range of blkio weight is from 10 to 1000"),
        (vec!["--device", "/etc/passwd"], "not a device node"),
        (vec!["--device", "/dev/null:/dev/n:rx"], "invalid device mode"),
        (vec!["--device-read-bps", "/dev/null:1mb"], "not a block device"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(flags.iter().copied());
        args.extend(["busybox", "true"]);
        let (code, _, err) = b.run(&args);
        assert_eq!(code, 125, "{flags:?}: {err}");
        assert!(err.contains(words), "{flags:?}: {err}");
    }
    assert!(b.ids().is_empty());
}

#[test]
fn env_file_shm_tmpfs_hosts_cidfile_logs_stop_signal_and_attach() {
    let b = Berth::new("eng-flags");
    let envf = b.g.path("env");
    std::fs::write(&envf, "# a comment\nA=1\n\nB=two words\n").unwrap();
    let out = b.ok(&[
        "run",
        "--rm",
        "--env-file",
        envf.to_str().unwrap(),
        "--shm-size",
        "8m",
        "--tmpfs",
        "/scratch:size=1m",
        "--add-host",
        "db.local:10.1.2.3",
        "--workdir",
        "/scratch",
        "--memory-reservation",
        "32m",
        "busybox",
        "sh",
        "-c",
        "echo \"$A|$B\"; df -k /dev/shm | tail -1 | awk '{print $2}'; df -k /scratch | tail -1 | awk '{print $2}'; \
         touch f && pwd; grep db.local /etc/hosts",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..4], ["1|two words", "8192", "1024", "/scratch"], "{out}");
    assert_eq!(lines[4].split_whitespace().collect::<Vec<_>>(), ["10.1.2.3", "db.local"], "{out}");
    // --cidfile: the full id; Docker refuses a file that exists.
    let cid = b.g.path("cid");
    let id = b.ok(&[
        "run",
        "-d",
        "--cidfile",
        cid.to_str().unwrap(),
        "--memory-reservation",
        "32m",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id.trim());
    let (code, _, err) = b.run(&["run", "-d", "--cidfile", cid.to_str().unwrap(), "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("Container ID file found"), "{err}");
    assert_eq!(b.ids().len(), 1, "nothing created");
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        let pid = b.inspect(id.trim(), "{{.State.Pid}}");
        assert_eq!(cgroup_file(&pid, "memory", "memory.soft_limit_in_bytes"), (32 << 20).to_string());
    }
    b.ok(&["rm", "-f", id.trim()]);
    // Log rotation: max-size and max-file bound what is kept; logs still show the newest lines.
    let id = b.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done",
    ]);
    let id = id.trim();
    b.ok(&["wait", id]);
    let dir = b.g.path("root").join("containers").join(id);
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{id}-json.log")))
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs.iter().all(|e| e.metadata().unwrap().len() <= 2048));
    assert_eq!(b.ok(&["logs", "--tail", "1", id]), "line 199\n");
    b.ok(&["rm", id]);
    // The k8s-file driver writes podman's format; logs reads it.
    let id = b.ok(&["run", "-d", "--log-driver", "k8s-file", "busybox", "sh", "-c", "echo out; echo err >&2"]);
    let id = id.trim();
    b.ok(&["wait", id]);
    let text = std::fs::read_to_string(dir.parent().unwrap().join(id).join(format!("{id}-json.log"))).unwrap();
    let streams: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').skip(1).collect()).collect();
    assert!(streams.contains(&vec!["stdout", "F", "out"]) && streams.contains(&vec!["stderr", "F", "err"]), "{text}");
    let o = b.out(&["logs", id]);
    assert_eq!(
        (String::from_utf8_lossy(&o.stdout).as_ref(), String::from_utf8_lossy(&o.stderr).as_ref()),
        ("out\n", "err\n")
    );
    b.ok(&["rm", id]);
    // logs -f follows either format until the container ends.
    for driver in ["json-file", "k8s-file"] {
        let id = b.ok(&["run", "-d", "--log-driver", driver, "busybox", "sh", "-c", "echo a; sleep 0.5; echo b"]);
        let out = b.ok(&["logs", "-f", id.trim()]);
        assert_eq!(out, "a\nb\n", "{driver}");
        b.ok(&["rm", id.trim()]);
    }
    // --stop-signal: stop sends it (a shell that traps it exits with its own code).
    let id = b.ok(&[
        "run",
        "-d",
        "--stop-signal",
        "SIGUSR1",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got it; exit 7' USR1; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    std::thread::sleep(Duration::from_millis(300));
    b.ok(&["stop", "-t", "5", id]);
    assert_eq!(b.inspect(id, "{{.State.ExitCode}}"), "7");
    assert_eq!(b.ok(&["logs", id]), "got it\n");
    b.ok(&["rm", id]);
    // -a stdout: only that stream comes back.
    let o = b.out(&["run", "--rm", "-a", "stdout", "busybox", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("err"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = b.out(&["run", "--rm", "-a", "STDERR", "busybox", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(
        (String::from_utf8_lossy(&o.stdout).as_ref(), String::from_utf8_lossy(&o.stderr).as_ref()),
        ("", "err\n")
    );
    for (flags, words) in
        [(vec!["-d", "-a", "stdout"], "Conflicting options: -a and -d"), (vec!["-a", "stdio"], "valid streams are")]
    {
        let mut args = vec!["run", "--rm"];
        args.extend(flags.iter().copied());
        args.extend(["busybox", "true"]);
        let (code, _, err) = b.run(&args);
        assert!(code == 125 && err.contains(words), "{flags:?}: {code} {err}");
    }
    assert!(b.ids().is_empty());
}

#[test]
fn run_forwards_signals_unless_told_not_to() {
    use std::io::{BufRead, BufReader};
    let b = Berth::new("eng-sigproxy");
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 0.1; done";
    let start = |proxy: &str| {
        let mut child = b
            .cmd(&[
                "run",
                "--name",
                &format!("sp-{proxy}"),
                &format!("--sig-proxy={proxy}"),
                "busybox",
                "sh",
                "-c",
                script,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        // SAFETY: kill(2) of our own child, the berth command.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        (child.wait().unwrap(), out)
    };
    // Proxied: the container's shell gets SIGTERM, and run returns its exit code.
    let (status, mut out) = start("true");
    if status.code() != Some(3) {
        // Not forwarded: the container still runs (and its monitor holds our pipe open).
        b.ok(&["rm", "-f", "sp-true"]);
        panic!("berth run ended with {status:?}, not the container's code 3");
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(b.inspect("sp-true", "{{.State.Status}} {{.State.ExitCode}}"), "exited 3");
    // Not proxied: the command ends of the signal; the container runs on.
    let (status, _) = start("false");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
    assert_eq!(b.inspect("sp-false", "{{.State.Status}}"), "running");
    b.ok(&["rm", "-f", "sp-true", "sp-false"]);
}

#[test]
fn apparmor_and_selinux_options_reach_the_runtime() {
    let b = Berth::new("eng-lsm");
    // An AppArmor profile that no host has: refused by the kernel where AppArmor runs, by the
    // runtime where it does not; either way named in the error, and nothing left.
    let (code, _, err) = b.run(&["run", "--rm", "--security-opt", "apparmor=berth-no-such-profile", "busybox", "true"]);
    assert!(code != 0 && err.contains("apparmorProfile \"berth-no-such-profile\""), "{code} {err}");
    // label= parts replace those of Docker's container process label.
    let (code, _, err) = b.run(&["run", "--rm", "--security-opt", "label=type:berth_t", "busybox", "true"]);
    assert!(code != 0 && err.contains("selinuxLabel \"system_u:system_r:berth_t:s0\""), "{code} {err}");
    let (code, _, err) = b.run(&["run", "--rm", "--security-opt", "label=colour:x", "busybox", "true"]);
    assert!(code == 125 && err.contains("label takes"), "{code} {err}");
    // The ways to turn them off stay accepted.
    b.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "apparmor=unconfined",
        "--security-opt",
        "label=disable",
        "busybox",
        "true",
    ]);
    assert!(b.ids().is_empty());
}

#[test]
fn inspect_shows_dockers_host_config_fields() {
    let b = Berth::new("eng-inspect");
    let id = b.ok(&[
        "create",
        "--restart",
        "on-failure:3",
        "-p",
        "127.0.0.1:8080:80",
        "-p",
        "53/udp",
        "--add-host",
        "h:10.0.0.9",
        "--dns",
        "10.0.0.53",
        "--ulimit",
        "nofile=100:200",
        "--stop-timeout",
        "7",
        "--init",
        "--security-opt",
        "no-new-privileges",
        "busybox",
        "true",
    ]);
    let all: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", id.trim()])).unwrap();
    let v = &all[0];
    let hc = &v["HostConfig"];
    assert_eq!(hc["RestartPolicy"], serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 3}));
    assert_eq!(hc["PortBindings"]["80/tcp"], serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}]));
    assert_eq!(hc["PortBindings"]["53/udp"], serde_json::json!([{"HostIp": "", "HostPort": ""}]));
    assert_eq!(hc["ExtraHosts"], serde_json::json!(["h:10.0.0.9"]));
    assert_eq!(hc["Dns"], serde_json::json!(["10.0.0.53"]));
    assert_eq!(hc["Ulimits"], serde_json::json!([{"Name": "nofile", "Soft": 100, "Hard": 200}]));
    assert_eq!(
        (hc["Init"].as_bool(), hc["SecurityOpt"].clone()),
        (Some(true), serde_json::json!(["no-new-privileges"]))
    );
    assert_eq!(v["Config"]["StopTimeout"], 7);
    assert!(v["Config"]["ExposedPorts"].get("80/tcp").is_some(), "{}", v["Config"]);
    assert!(v["HostsPath"].as_str().unwrap().ends_with(&format!("{}/hosts", id.trim())));
    assert_eq!(b.inspect(id.trim(), "{{.HostConfig.RestartPolicy.Name}}"), "on-failure");
    b.ok(&["rm", id.trim()]);
}

#[test]
fn settings_file_info_version_and_container_prune() {
    let b = Berth::new("eng-settings");
    // /etc/berth/berth.toml (here through $BERTH_CONFIG) gives root and runroot when no flag
    // or variable does.
    let conf = b.g.path("berth.toml");
    let (root, run) = (b.g.path("root"), b.g.path("run"));
    std::fs::write(&conf, format!("root = {:?}\nrunroot = {:?}\n", root, run)).unwrap();
    let with_conf = |args: &[&str]| {
        let o =
            b.ns.command(common::BERTH)
                .env("BERTH_CONFIG", &conf)
                .env_remove("BERTH_ROOT")
                .env_remove("BERTH_RUNROOT")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = with_conf(&["info", "--format", "{{.DockerRootDir}} {{.Images}} {{.Driver}}"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{} 1 overlay\n", root.display()));
    std::fs::write(&conf, "rootdir = \"/x\"\n").unwrap();
    let (code, _, err) = with_conf(&["ps"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("berth.toml: not a berth settings file") && err.contains("unknown field `rootdir`"), "{err}");
    // info and version, as text and through a template.
    assert!(b.ok(&["info"]).contains("Storage Driver: overlay"));
    assert_eq!(b.ok(&["version", "--format", "{{.Client.Version}}"]).trim(), env!("CARGO_PKG_VERSION"));
    assert!(b.ok(&["version", "-f", "json"]).contains("\"Os\":\"linux\""));
    // container prune: Docker's sections and the space the writable layers held.
    let id = b.ok(&["run", "--network", "none", "busybox", "sh", "-c", "head -c 5000 /dev/zero > /blob"]);
    let id = id.trim();
    let keep = b.ok(&["run", "-d", "--network", "none", "busybox", "sleep", "60"]);
    // Without -f it asks first, as Docker does; no (or no answer) keeps everything.
    let answer = |args: &[&str], input: &str| {
        let mut c = b.cmd(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (code, out) = answer(&["container", "prune"], "n\n");
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "),
        "{out}"
    );
    assert_eq!(b.ids().len(), 2);
    assert_eq!(answer(&["network", "prune"], "").0, Some(0));
    let (_, out) = answer(&["container", "prune"], "y\n");
    assert!(out.contains(&format!("Deleted Containers:\n{id}")), "{out}");
    b.ok(&["run", "--network", "none", "busybox", "sh", "-c", "head -c 5000 /dev/zero > /blob"]);
    let id = b.ok(&["ps", "-aq", "--no-trunc", "--filter", "status=exited"]);
    let id = id.trim();
    let out = b.ok(&["container", "prune", "-f"]);
    assert!(out.starts_with(&format!("Deleted Containers:\n{id}")), "{out}");
    assert!(out.contains("Total reclaimed space: 5kB"), "{out}");
    assert_eq!(b.ids(), vec![keep.trim()[..12].to_string()]);
    assert_eq!(b.ok(&["container", "prune", "-f"]), "Total reclaimed space: 0B\n");
    // What a create killed before writing its row leaves (its directory and its root's):
    // prune takes it, and leaves the directories of containers that exist.
    let orphan = "ab".repeat(32);
    let dirs =
        [b.g.path("root").join("containers").join(&orphan), b.g.path("root").join("storage/containers").join(&orphan)];
    for d in &dirs {
        std::fs::create_dir_all(d.join("upper")).unwrap();
        std::fs::write(d.join("upper/f"), "x").unwrap();
    }
    b.ok(&["container", "prune", "-f"]);
    assert!(dirs.iter().all(|d| !d.exists()), "an orphan's directory is left");
    let kept = b.ok(&["inspect", "-f", "{{.Id}}", keep.trim()]);
    assert!(b.g.path("root").join("containers").join(kept.trim()).exists());
    b.ok(&["rm", "-f", keep.trim()]);
}

/// The container's process starts with no signal ignored or blocked, whatever the monitor
/// (which ignores SIGPIPE and SIGHUP) had: `yes | head` ends, a shell can trap SIGHUP.
#[test]
fn container_processes_start_with_default_signals() {
    let b = Berth::new("eng-signals");
    let out =
        b.ok(&["run", "--rm", "--network", "none", "busybox", "grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]);
    assert_eq!(out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
    let out = b.ok(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", "yes | head -n 2; echo done"]);
    assert_eq!(out, "y\ny\ndone\n");
}

/// Flags a read-only audit found without a test: exec -u/-w/--privileged, --cap-add,
/// no-new-privileges, --cpuset-cpus, ps filters by exit code, ancestor and id, unless-stopped.
#[test]
fn exec_users_capabilities_cpusets_and_ps_filters() {
    let b = Berth::new("eng-flags");
    let cap_eff = |out: &str| -> u64 {
        let hex = out.split_whitespace().nth(1).unwrap_or("0");
        u64::from_str_radix(hex, 16).unwrap()
    };
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    b.ok(&[
        "run",
        "-d",
        "--name",
        "flags",
        "--network",
        "none",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "no-new-privileges",
        "--cpuset-cpus",
        "0",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(
        b.ok(&["exec", "-u", "1000:1001", "-w", "/tmp", "flags", "sh", "-c", "id -u; id -g; pwd"]),
        "1000\n1001\n/tmp\n"
    );
    let caps = cap_eff(&b.ok(&["exec", "flags", "grep", "CapEff", "/proc/self/status"]));
    assert!(caps & CAP_NET_ADMIN != 0 && caps & CAP_SYS_ADMIN == 0, "{caps:#x}");
    let caps = cap_eff(&b.ok(&["exec", "--privileged", "flags", "grep", "CapEff", "/proc/self/status"]));
    assert!(caps & CAP_SYS_ADMIN != 0, "exec --privileged: {caps:#x}");
    assert_eq!(b.ok(&["exec", "flags", "grep", "NoNewPrivs", "/proc/1/status"]).split_whitespace().nth(1), Some("1"));
    assert_eq!(b.ok(&["exec", "flags", "cat", "/sys/fs/cgroup/cpuset/cpuset.cpus"]).trim(), "0");
    // ps filters.
    assert_eq!(b.run(&["run", "--name", "three", "--network", "none", "busybox", "sh", "-c", "exit 3"]).0, 3);
    assert_eq!(b.ok(&["ps", "-a", "--filter", "exited=3", "--format", "{{.Names}}"]), "three\n");
    let id = b.ok(&["inspect", "-f", "{{.Id}}", "flags"]);
    assert_eq!(b.ok(&["ps", "-a", "--filter", &format!("id={}", &id[..6]), "--format", "{{.Names}}"]), "flags\n");
    let mut by_image: Vec<String> = b
        .ok(&["ps", "-a", "--filter", "ancestor=busybox", "--format", "{{.Names}}"])
        .lines()
        .map(String::from)
        .collect();
    by_image.sort();
    assert_eq!(by_image, ["flags", "three"]);
    // unless-stopped restarts after an exit, and stays stopped after a stop.
    b.ok(&[
        "run",
        "-d",
        "--name",
        "unless",
        "--restart",
        "unless-stopped",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2; exit 1",
    ]);
    for _ in 0..200 {
        if b.inspect("unless", "{{.RestartCount}}") != "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(b.inspect("unless", "{{.RestartCount}}"), "0");
    b.ok(&["stop", "-t", "1", "unless"]);
    let n = b.inspect("unless", "{{.RestartCount}}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.inspect("unless", "{{.RestartCount}} {{.State.Status}}"), format!("{n} exited"));
    // The OOM killer: exit 137 and OOMKilled in inspect.
    let (code, _, _) = b.run(&[
        "run",
        "--name",
        "hungry",
        "--network",
        "none",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(code, 137);
    assert_eq!(b.inspect("hungry", "{{.State.OOMKilled}} {{.State.ExitCode}}"), "true 137");
    b.ok(&["rm", "-f", "flags", "three", "unless", "hungry"]);
}

/// The copy driver (berth.toml `storage-driver = "copy"`, for hosts without overlayfs): roots
/// are copies of the layers, and diff, commit, cp, export, restart and rm work as with overlay.
#[test]
fn the_copy_storage_driver() {
    let b = Berth::new("eng-copy");
    let conf = b.g.path("berth.toml");
    std::fs::write(&conf, "storage-driver = \"copy\"\n").unwrap();
    let run = |args: &[&str]| -> (i32, String, String) {
        let o = b.cmd(args).env("BERTH_CONFIG", &conf).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into(),
            String::from_utf8_lossy(&o.stderr).into(),
        )
    };
    let ok = |args: &[&str]| -> String {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "berth {args:?}: {err}");
        out
    };
    ok(&[
        "run",
        "--name",
        "cc",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo new > /new; rm /etc/group; mkdir /d; echo x > /d/f; chmod 600 /etc/passwd; rm -rf /root; mkdir /root; \
         rm -rf /home; ln -s /tmp /home",
    ]);
    let id = ok(&["inspect", "-f", "{{.Id}}", "cc"]).trim().to_string();
    let dir = b.g.path("root/storage/containers").join(&id);
    assert_eq!(std::fs::read_to_string(dir.join("driver")).unwrap(), "copy");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()), "a copy root is no mount");
    let diff = ok(&["diff", "cc"]);
    for want in ["A /new", "D /etc/group", "A /d", "A /d/f", "C /etc/passwd", "C /home"] {
        assert!(diff.lines().any(|l| l == want), "{want:?} in {diff}");
    }
    // commit: the changes as a layer (a whiteout for what went, /root made anew is opaque).
    ok(&["commit", "cc", "copied:1"]);
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "copied:1",
        "sh",
        "-c",
        "cat /new /d/f; test -e /etc/group || echo gone; stat -c %a /etc/passwd; ls -A /root | wc -l; readlink /home",
    ]);
    assert_eq!(out, "new\nx\ngone\n600\n0\n/tmp\n");
    // cp and export read the copy.
    let host = b.g.path("out");
    std::fs::create_dir_all(&host).unwrap();
    ok(&["cp", "cc:/new", host.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(host.join("new")).unwrap(), "new\n");
    let tar = b.g.path("cc.tar");
    ok(&["export", "-o", tar.to_str().unwrap(), "cc"]);
    assert!(std::fs::metadata(&tar).unwrap().len() > 100_000);
    // A restart keeps the root as it was; a running one takes exec.
    ok(&["run", "-d", "--name", "live", "--network", "none", "busybox", "sleep", "60"]);
    assert_eq!(ok(&["exec", "live", "sh", "-c", "echo hi > /hi; cat /hi"]), "hi\n");
    ok(&["restart", "-t", "0", "live"]);
    assert_eq!(ok(&["exec", "live", "cat", "/hi"]), "hi\n");
    let live = ok(&["inspect", "-f", "{{.Id}}", "live"]).trim().to_string();
    ok(&["rm", "-f", "cc", "live"]);
    assert!(!dir.exists() && !b.g.path("root/storage/containers").join(live).exists(), "a copy root is left");
}
