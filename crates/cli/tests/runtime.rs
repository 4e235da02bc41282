//! berth-runtime end to end: real containers from the test kit's busybox bundle, as root.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_testkit::bundle::{Bundle, Config};
use berth_testkit::leak::Guard;
use serde_json::json;

static RT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| berth_testkit::runtime_under_test(env!("CARGO_BIN_EXE_berth-runtime")));

fn rt(g: &Guard) -> Command {
    let mut c = Command::new(&*RT);
    c.arg("--root").arg(g.path("state"));
    c
}

fn out(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("running berth-runtime")
}

/// For `create` and `run -d`: the container keeps the stdio it inherits, so capture stderr in a
/// file instead of a pipe whose end would never come.
fn out_detached(g: &Guard, mut c: Command) -> Output {
    let f = g.path(&format!("stderr-{}", berth_testkit::unique("d")));
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&f).unwrap();
    let status = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).status().expect("running berth-runtime");
    Output { status, stdout: Vec::new(), stderr: std::fs::read(&f).unwrap() }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `run` a busybox bundle with this config; returns (exit code, stdout, stderr).
fn run(g: &Guard, cfg: Config) -> (i32, String, String) {
    let b = Bundle::busybox(&cfg);
    let mut c = rt(g);
    c.args(["run", "-b"]).arg(b.path()).arg(g.id("run"));
    let o = out(c);
    (o.status.code().unwrap_or(-1), text(&o), err(&o))
}

fn state(g: &Guard, id: &str) -> serde_json::Value {
    let mut c = rt(g);
    c.args(["state", id]);
    let o = out(c);
    assert!(o.status.success(), "state failed: {}", err(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Waits (up to 2 s) for the container to be stopped.
fn wait_stopped(g: &Guard, id: &str) {
    for _ in 0..200 {
        if state(g, id)["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(state(g, id)["status"], "stopped");
}

fn no_state_left(g: &Guard) {
    let root = g.path("state");
    let left: Vec<_> =
        std::fs::read_dir(&root).map(|rd| rd.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "state left behind: {left:?}");
}

#[test]
fn run_prints_and_returns_the_exit_code() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-run");
    let (code, o, e) = run(&g, Config::default().sh("echo hello; echo $$; hostname; exit 3"));
    assert_eq!(code, 3, "stderr: {e}");
    assert_eq!(o, "hello\n1\nberth-test\n", "pid 1 in its own pid namespace, own hostname");
    no_state_left(&g);
}

#[test]
fn lifecycle_create_start_pause_resume_kill_delete() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-life");
    let b = Bundle::busybox(&Config::default().args(&["sleep", "1000"]));
    let id = g.id("c");
    let pidfile = g.path("pid");
    let mut c = rt(&g);
    c.args(["create", &id, "--bundle"]).arg(b.path()).arg("--pid-file").arg(&pidfile);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "create: {}", err(&o));
    let s = state(&g, &id);
    assert_eq!(s["status"], "created");
    let pid = s["pid"].as_i64().unwrap();
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), pid.to_string());
    // The init waits before the user's program: it is still a copy of the runtime.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");

    // Starting twice: the second is refused.
    let mut c = rt(&g);
    c.args(["start", &id]);
    assert!(out(c).status.success());
    assert_eq!(state(&g, &id)["status"], "running");
    let mut c = rt(&g);
    c.args(["start", &id]);
    let o = out(c);
    assert!(!o.status.success());
    assert!(err(&o).contains("cannot start a container that is running"), "{}", err(&o));

    for (cmd, want) in [("pause", "paused"), ("resume", "running")] {
        let mut c = rt(&g);
        c.args([cmd, &id]);
        let o = out(c);
        assert!(o.status.success(), "{cmd}: {}", err(&o));
        assert_eq!(state(&g, &id)["status"], want);
    }

    // ps lists the sleep; list shows the container.
    let mut c = rt(&g);
    c.args(["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_slice(&out(c).stdout).unwrap();
    assert_eq!(pids, vec![pid]);
    let mut c = rt(&g);
    c.args(["ps", &id]);
    let table = text(&out(c));
    assert!(table.starts_with("UID") && table.contains("sleep 1000"), "{table}");
    let mut c = rt(&g);
    c.args(["list", "--format", "json"]);
    let l: serde_json::Value = serde_json::from_slice(&out(c).stdout).unwrap();
    assert_eq!(l[0]["id"], id.as_str());

    // events --stats: one event in runc's shape.
    let mut c = rt(&g);
    c.args(["events", "--stats", &id]);
    let ev: serde_json::Value = serde_json::from_slice(&out(c).stdout).unwrap();
    assert_eq!((ev["type"].as_str(), ev["id"].as_str()), (Some("stats"), Some(id.as_str())), "{ev}");
    assert_eq!(ev["data"]["pids"]["current"], 1, "{ev}");
    assert!(ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{ev}");
    assert!(ev["data"]["cpu"]["usage"]["total"].as_u64().is_some(), "{ev}");
    // update with runc's flags reaches the cgroup.
    let mut c = rt(&g);
    c.args(["update", "--cpu-quota", "20000", "--cpu-period", "100000", "--cpu-shares", "512", &id]);
    let o = out(c);
    assert!(o.status.success(), "update: {}", err(&o));
    let cg = format!("/proc/{pid}/cgroup");
    let line = std::fs::read_to_string(&cg).unwrap();
    if let Some(p) = line
        .lines()
        .find_map(|l| l.split(':').nth(1).filter(|c| c.split(',').any(|c| c == "cpu")).and(l.rsplit(':').next()))
    {
        let dir = std::fs::read_dir("/sys/fs/cgroup").ok().and_then(|_| {
            ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"]
                .iter()
                .map(|r| format!("{r}{p}"))
                .find(|d| std::path::Path::new(d).exists())
        });
        if let Some(d) = dir {
            assert_eq!(std::fs::read_to_string(format!("{d}/cpu.cfs_quota_us")).unwrap().trim(), "20000");
            assert_eq!(std::fs::read_to_string(format!("{d}/cpu.shares")).unwrap().trim(), "512");
        }
    }

    // delete of a running container needs --force.
    let mut c = rt(&g);
    c.args(["delete", &id]);
    let o = out(c);
    assert!(!o.status.success());
    assert!(err(&o).contains("not stopped"), "{}", err(&o));

    let mut c = rt(&g);
    c.args(["kill", &id, "KILL"]);
    assert!(out(c).status.success());
    wait_stopped(&g, &id);
    let mut c = rt(&g);
    c.args(["delete", &id]);
    let o = out(c);
    assert!(o.status.success(), "delete: {}", err(&o));
    let mut c = rt(&g);
    c.args(["state", &id]);
    let o = out(c);
    assert!(!o.status.success());
    assert!(err(&o).contains("does not exist"));
    no_state_left(&g);
}

/// runc's command line as callers write it: global options after the command, options
/// before or after the id, `--opt=value`, short options, and usage errors with status 2.
#[test]
fn options_stand_before_or_after_the_id() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-cli");
    let b = Bundle::busybox(&Config::default().args(&["sleep", "1000"]));
    let id = g.id("c");
    let root = g.path("state");
    let pidfile = g.path("pid");
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&*RT);
        c.args(args);
        c
    };
    let r = root.to_str().unwrap();
    let mut c = cmd(&["create", &id, "--root", r]);
    c.arg(format!("--bundle={}", b.path().display())).arg("--pid-file").arg(&pidfile);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "create: {}", err(&o));
    assert_eq!(state(&g, &id)["status"], "created");
    let o = out(cmd(&["start", &id, &format!("--root={r}")]));
    assert!(o.status.success(), "start: {}", err(&o));
    let o =
        out(cmd(&["exec", "--root", r, &id, "-e", "A=1", "--env=B=2", "--cwd", "/tmp", "sh", "-c", "echo $A$B; pwd"]));
    assert!(o.status.success(), "exec: {}", err(&o));
    assert_eq!(text(&o), "12\n/tmp\n");
    let o = out(cmd(&["update", &id, "--pids-limit", "10", "--root", r]));
    assert!(o.status.success(), "update: {}", err(&o));
    let show = "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max";
    let o = out(cmd(&["--root", r, "exec", &id, "sh", "-c", show]));
    assert_eq!(text(&o), "10\n", "{}", err(&o));
    let o = out(cmd(&["kill", &id, "--all", "KILL", "--root", r]));
    assert!(o.status.success(), "kill: {}", err(&o));
    wait_stopped(&g, &id);
    let o = out(cmd(&["delete", &id, "-f", "--root", r]));
    assert!(o.status.success(), "delete: {}", err(&o));
    no_state_left(&g);

    let o = out(cmd(&["delete", "--nope", &id]));
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--nope"), "{}", err(&o));
    let o = out(cmd(&["create", "--root", r]));
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("<ID>"), "{}", err(&o));
    let o = out(cmd(&["--version"]));
    assert!(o.status.success() && text(&o).starts_with("berth-runtime "), "{}", text(&o));
    let o = out(cmd(&["create", "--help"]));
    assert!(o.status.success() && text(&o).contains("--console-socket"), "{}", text(&o));
}

/// Without a cgroupsPath a container's cgroup is `/<id>` in each hierarchy, as runc's. The
/// engine's cgroups live in a shared `berth` parent, which goes with its last container
/// (after a delete and after a failed create alike). Other containers (other tests, the
/// engine's) may hold it meanwhile, so only a `berth` that stays childless counts as a leak.
#[test]
fn the_shared_parent_cgroup_goes_when_empty() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-parent");
    // Seen from the host by a createRuntime hook: the init's cgroup in the pids hierarchy.
    let report = g.path("cgroup-report");
    let script = g.path("cgroup-hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\npid=$(sed 's/.*\"pid\": *\\([0-9]*\\).*/\\1/')\ngrep -E '^[0-9]+:pids:' /proc/$pid/cgroup > {}\n",
            report.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, _, e) =
        run(&g, Config::default().args(&["true"]).set("/hooks/createRuntime", json!([{"path": script}])));
    assert_eq!(code, 0, "{e}");
    let seen = std::fs::read_to_string(&report).unwrap();
    assert!(seen.trim_end().ends_with(&format!(":pids:/{}", g.id("run"))), "{seen}");
    let shared = |args: &[&str]| {
        Config::default().args(args).set("/linux/cgroupsPath", json!(format!("/berth/{}", g.id("run"))))
    };
    let (code, _, e) = run(&g, shared(&["true"]));
    assert_eq!(code, 0, "{e}");
    let (code, _, e) = run(&g, shared(&["no-such-program"]));
    assert_ne!(code, 0, "{e}");
    let childless = || -> Vec<std::path::PathBuf> {
        let mut v = Vec::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = h.path().join("berth");
            let Ok(rd) = std::fs::read_dir(&p) else { continue };
            if !rd.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                v.push(p);
            }
        }
        v
    };
    let mut left = childless();
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        left = childless();
    }
    assert!(left.is_empty(), "empty berth parents left: {left:?}");
}

/// `run` starts the init straight away unless poststart hooks need the separate start; either
/// way process.oomScoreAdj is set before the user's program runs and the hooks run in order.
#[test]
fn run_with_and_without_poststart_hooks() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-hooks");
    let cfg = Config::default().sh("cat /proc/self/oom_score_adj").set("/process/oomScoreAdj", json!(500));
    let (code, o, e) = run(&g, cfg.clone());
    assert_eq!((code, o.as_str()), (0, "500\n"), "{e}");
    let log = g.path("hooks.log");
    let script = g.path("hook.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1 $(grep -o '\"status\":\"[a-z]*\"')\" >> {}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hook = |name: &str| json!([{"path": script, "args": ["hook", name]}]);
    let cfg = cfg
        .set("/hooks/prestart", hook("prestart"))
        .set("/hooks/poststart", hook("poststart"))
        .set("/hooks/poststop", hook("poststop"));
    let (code, o, e) = run(&g, cfg.clone());
    assert_eq!((code, o.as_str()), (0, "500\n"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "prestart \"status\":\"creating\"\npoststart \"status\":\"running\"\npoststop \"status\":\"stopped\"\n"
    );
    no_state_left(&g);
    // createContainer runs before pivot_root: its path (a file of the host's) resolves. A
    // failed poststart hook is a warning and the next one still runs.
    std::fs::remove_file(&log).unwrap();
    let failing = json!({"path": "/bin/false"});
    let cfg = cfg
        .set("/hooks/createContainer", hook("createContainer"))
        .set("/hooks/poststart", json!([failing, {"path": script, "args": ["hook", "poststart"]}]));
    let (code, o, e) = run(&g, cfg.clone());
    assert_eq!((code, o.as_str()), (0, "500\n"), "{e}");
    assert!(e.contains("warning: hooks.poststart[0]"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "prestart \"status\":\"creating\"\ncreateContainer \"status\":\"creating\"\npoststart \"status\":\"running\"\npoststop \"status\":\"stopped\"\n"
    );
    // A failed prestart hook fails the create, and the poststop hooks still run.
    std::fs::remove_file(&log).unwrap();
    let (code, _, e) = run(&g, cfg.set("/hooks/prestart", json!([failing])));
    assert_ne!(code, 0);
    assert!(e.contains("hooks.prestart[0]"), "{e}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "poststop \"status\":\"stopped\"\n");
    no_state_left(&g);
}

/// Without a pid namespace of its own, a container's processes outlive its init: `kill --all`
/// still reaches them and `delete` of the stopped container kills them (as runc).
#[test]
fn processes_left_by_a_stopped_init_go_with_delete() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-left");
    let cfg = Config::default()
        .set("/linux/namespaces", json!([{"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]))
        .sh("sleep 1000 </dev/null >/dev/null 2>&1 & exit 0");
    let b = Bundle::busybox(&cfg);
    let id = g.id("c");
    let mut c = rt(&g);
    c.args(["run", "-d", "-b"]).arg(b.path()).arg(&id);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "{}", err(&o));
    wait_stopped(&g, &id);
    let mut c = rt(&g);
    c.args(["kill", "--all", &id, "SIGCONT"]);
    let o = out(c);
    assert!(o.status.success(), "kill --all of a stopped container with processes: {}", err(&o));
    let mut c = rt(&g);
    c.args(["delete", &id]);
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    no_state_left(&g);
}

/// `run` of a terminal process without --console-socket, in the foreground: the runtime makes
/// the pty its own and copies it to its stdout (as runc does); detached, the socket is needed.
#[test]
fn run_with_a_terminal_and_no_console_socket() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-tty");
    let b = Bundle::busybox(&Config::default().sh("tty; stty size; exit 3").set("/process/terminal", json!(true)));
    let id = g.id("c");
    let mut c = rt(&g);
    c.args(["run", "-b"]).arg(b.path()).arg(&id);
    let o = out(c);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let t = text(&o);
    assert!(t.starts_with("/dev/") && t.contains('\r'), "a terminal's output: {t:?}");
    let mut c = rt(&g);
    c.args(["run", "-d", "-b"]).arg(b.path()).arg(&id);
    let o = out(c);
    assert!(!o.status.success() && err(&o).contains("--console-socket is required"), "{}", err(&o));
    no_state_left(&g);
}

#[test]
fn exec_runs_inside_the_container() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-exec");
    let b = Bundle::busybox(&Config::default().args(&["sleep", "1000"]));
    let id = g.id("c");
    let mut c = rt(&g);
    c.args(["run", "-d", "-b"]).arg(b.path()).arg(&id);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "run -d: {}", err(&o));
    let mut c = rt(&g);
    c.args(["exec", &id, "sh", "-c", "hostname; tr '\\0' ' ' < /proc/1/cmdline; exit 7"]);
    let o = out(c);
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    assert_eq!(text(&o), "berth-test\nsleep 1000 ");
    // -e replaces a variable of the container's (PATH here) or adds one.
    let mut c = rt(&g);
    c.args([
        "exec",
        "-e",
        "PATH=/bin:/nowhere",
        "-e",
        "NEW=1",
        &id,
        "sh",
        "-c",
        "echo $PATH $NEW; env | grep -c ^PATH=",
    ]);
    let o = out(c);
    assert_eq!(text(&o), "/bin:/nowhere 1\n1\n", "{}", err(&o));
    let mut c = rt(&g);
    c.args(["exec", &id, "nonexistent-cmd"]);
    let o = out(c);
    assert!(!o.status.success());
    assert!(err(&o).contains("executable file not found"), "{}", err(&o));
    let mut c = rt(&g);
    c.args(["delete", "--force", &id]);
    assert!(out(c).status.success());
    no_state_left(&g);
}

#[test]
fn readonly_root_masked_paths_and_capabilities() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-sec");
    let (code, o, e) = run(
        &g,
        Config::default().sh("touch /x 2>/dev/null && echo root-writable; \
             wc -c < /proc/keys; \
             echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable; \
             grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status"),
    );
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "0\nCapEff:\t0000000020000420\nNoNewPrivs:\t1\n");
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_uid() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-userns");
    let cfg = Config::default()
        .sh("id -u; cat /proc/self/uid_map | tr -s ' '")
        .push("/linux/namespaces", json!({"type": "user"}))
        .set("/linux/uidMappings", json!([{"containerID": 0, "hostID": 200000, "size": 65536}]))
        .set("/linux/gidMappings", json!([{"containerID": 0, "hostID": 200000, "size": 65536}]));
    let b = Bundle::busybox(&cfg);
    // The rootfs must belong to the mapped root.
    Command::new("chown").args(["-R", "200000:200000"]).arg(b.rootfs()).status().unwrap();
    let mut c = rt(&g);
    c.args(["run", "-b"]).arg(b.path()).arg(g.id("c"));
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(text(&o), "0\n 0 200000 65536\n");
}

#[test]
fn cgroup_limits_are_applied() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-cg");
    let cfg = Config::default()
        .sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max")
        .set("/linux/resources/memory", json!({"limit": 67108864}))
        .set("/linux/resources/pids", json!({"limit": 42}));
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "67108864\n42\n");
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-bad");
    let cases: Vec<(Config, &str)> = vec![
        (Config::default().set("/ociVersion", json!("2.0.0")), "ociVersion"),
        (Config::default().set("/root/path", json!("missing")), "root.path"),
        (Config::default().args(&["no-such-program"]), "executable file not found"),
        (Config::default().set("/process/cwd", json!("/no/such/dir")), "process.cwd"),
        (
            Config::default()
                .set("/process/rlimits", json!([{"type": "RLIMIT_NOFILE", "hard": 10000000, "soft": 1024}])),
            "cannot raise the hard limit",
        ),
        (
            Config::default().push("/mounts", json!({"destination": "/x", "type": "bind", "source": "/no/such"})),
            "/no/such",
        ),
        (Config::default().set("/linux/sysctl", json!({"kernel.panic": "1"})), "not namespaced"),
        // A namespaced key of a namespace the container shares with the host would change the
        // host's value; so would a domainname without a uts namespace.
        (
            Config::default()
                .set("/linux/namespaces", json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]))
                .set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"})),
            "needs a network namespace",
        ),
        (
            Config::default()
                .set(
                    "/linux/namespaces",
                    json!([{"type": "pid"}, {"type": "network"}, {"type": "uts"}, {"type": "mount"}]),
                )
                .set("/linux/sysctl", json!({"kernel.shmmni": "100"})),
            "needs a ipc namespace",
        ),
        (
            Config::default()
                .set("/linux/namespaces", json!([{"type": "pid"}, {"type": "network"}, {"type": "mount"}]))
                .set("/hostname", json!(""))
                .set("/domainname", json!("example.org")),
            "domainname needs a uts namespace",
        ),
    ];
    for (cfg, want) in cases {
        let (code, _, e) = run(&g, cfg);
        assert_ne!(code, 0);
        assert!(e.contains(want), "expected {want:?} in {e:?}");
        no_state_left(&g);
    }
    // Malformed JSON names the file.
    let b = Bundle::busybox(&Config::default());
    std::fs::write(b.path().join("config.json"), "{ not json").unwrap();
    let mut c = rt(&g);
    c.args(["create", "-b"]).arg(b.path()).arg(g.id("bad"));
    let o = out_detached(&g, c);
    assert!(!o.status.success());
    assert!(err(&o).contains("config.json"), "{}", err(&o));
    // An id that already exists.
    let b = Bundle::busybox(&Config::default().args(&["sleep", "100"]));
    let id = g.id("dup");
    for i in 0..2 {
        let mut c = rt(&g);
        c.args(["create", "-b"]).arg(b.path()).arg(&id);
        let o = out_detached(&g, c);
        assert_eq!(o.status.success(), i == 0, "{}", err(&o));
        if i == 1 {
            assert!(err(&o).contains("already exists"));
        }
    }
    let mut c = rt(&g);
    c.args(["kill", &id, "SIGNOPE"]);
    let o = out(c);
    assert!(err(&o).contains("unknown signal"), "{}", err(&o));
    // A real-time signal by number and by name is sent (it ends the waiting init).
    let mut c = rt(&g);
    c.args(["kill", &id, "SIGRTMIN+1"]);
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    let mut c = rt(&g);
    c.args(["delete", &id]);
    assert!(out(c).status.success(), "a created container can be deleted");
    no_state_left(&g);
}

/// CVE-2021-30465 family: a symlink in the image must not redirect a mount to the host.
#[test]
fn mount_destination_symlinks_stay_inside_the_root() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-symlink");
    let host_dir = g.path("host-target");
    std::fs::create_dir_all(&host_dir).unwrap();
    let cfg = Config::default()
        .set("/root/readonly", json!(false))
        .push("/mounts", json!({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"}))
        .sh("grep -c 'host-target/sub ' /proc/self/mountinfo");
    let b = Bundle::busybox(&cfg);
    std::os::unix::fs::symlink(&host_dir, b.rootfs().join("evil")).unwrap();
    let mut c = rt(&g);
    c.args(["run", "-b"]).arg(b.path()).arg(g.id("c"));
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(text(&o), "1\n", "the tmpfs landed inside the root");
    assert!(!host_dir.join("sub").exists(), "nothing was created on the host");
    assert!(b.rootfs().join(host_dir.strip_prefix("/").unwrap()).join("sub").is_dir());
}

/// CVE-2016-9962 / CVE-2024-21626: no fd of the runtime or its caller reaches the container.
#[test]
fn no_file_descriptors_leak_into_the_container() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-fds");
    let b = Bundle::busybox(&Config::default().sh("ls /proc/self/fd | sort -n | tr '\\n' ' '"));
    let host = std::fs::File::open("/").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&host);
    let mut c = rt(&g);
    c.args(["run", "-b"]).arg(b.path()).arg(g.id("c"));
    // SAFETY: dup2 in the child before exec: fd 7 is an inherited handle on the host's root.
    unsafe {
        c.pre_exec(move || {
            libc::dup2(raw, 7);
            Ok(())
        });
    }
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(text(&o), "0 1 2 3 ", "only stdio (and ls's own dir fd)");
}

/// CVE-2019-5736: the runtime that enters a container runs from a sealed view of its binary,
/// so the container cannot overwrite the host binary through /proc/PID/exe.
#[test]
fn runtime_binary_cannot_be_overwritten_from_a_hook() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-exe");
    let report = g.path("report");
    let script = g.path("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexe=$(readlink /proc/$PPID/exe)\nfs=$(stat -f -c %T /proc/$PPID/exe)\n\
             mount -o remount,rw /proc/$PPID/exe 2>/dev/null\n\
             if (echo x >> /proc/$PPID/exe) 2>/dev/null; then w=writable; else w=refused; fi\n\
             echo \"$exe $fs $w\" > {}\n",
            report.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = Config::default().args(&["true"]).set("/hooks/createRuntime", json!([{"path": script}]));
    let before = std::fs::read(&*RT).unwrap();
    let (code, _, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    // A read-only view of the binary on an overlay mounted nowhere (or, where the kernel
    // cannot make one, a sealed memfd copy): neither a write nor a remount gets through.
    let r = std::fs::read_to_string(&report).unwrap();
    assert!(
        r.starts_with("/berth-runtime overlayfs ") || r.starts_with("/memfd:berth-runtime"),
        "runtime ran from {r}"
    );
    assert!(r.trim_end().ends_with("refused"), "{r}");
    assert_eq!(std::fs::read(&*RT).unwrap(), before, "binary unchanged");
}

#[test]
fn features_and_spec_commands() {
    let g = Guard::new("rt-feat");
    let mut c = rt(&g);
    c.arg("features");
    let o = out(c);
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n == "time"));
    let dir = g.path("spec");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = rt(&g);
    c.args(["spec", "--bundle"]).arg(&dir);
    assert!(out(c).status.success());
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(s["root"]["path"], "rootfs");
    let mut c = rt(&g);
    c.args(["spec", "--bundle"]).arg(&dir);
    assert!(!out(c).status.success(), "refuses to overwrite");
    // checkpoint/restore: without criu, an error that names it; with it, bad input refused
    // before criu runs (checkpoints themselves are tested in tests/vm: Debian 12's criu cannot
    // run on this host's kernel).
    let mut c = rt(&g);
    c.args(["checkpoint", "x"]).env("PATH", "/nonexistent");
    let o = out(c);
    assert!(err(&o).contains("CRIU") && err(&o).contains("apt install criu"), "{}", err(&o));
    let mut c = rt(&g);
    c.args(["checkpoint", "--pre-dump", "x"]);
    let o = out(c);
    assert!(err(&o).contains("--pre-dump is not supported"), "{}", err(&o));
    if Command::new("criu").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let mut c = rt(&g);
        c.args(["checkpoint", "x"]);
        let o = out(c);
        assert!(!o.status.success() && err(&o).contains("x"), "{}", err(&o));
        let mut c = rt(&g);
        c.args(["restore", "--image-path"]).arg(&dir).args(["-b"]).arg(&dir).arg("x");
        let o = out(c);
        assert!(err(&o).contains("holds no checkpoint"), "{}", err(&o));
        assert!(!g.path("state").join("x").exists());
    }
    assert!(Path::new(&*RT).exists());
}

/// The x86 family as a seccomp profile lists it (Docker's and containers' default profiles).
fn seccomp_profile(default: &str, syscalls: serde_json::Value) -> serde_json::Value {
    json!({
        "defaultAction": default,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls
    })
}

#[test]
fn seccomp_errno_rules_deny_mkdir_and_chmod() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-errno");
    let profile = seccomp_profile(
        "SCMP_ACT_ALLOW",
        json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
        ]),
    );
    // Without no_new_privs the filter goes in before the capabilities are dropped.
    for nnp in [true, false] {
        let cfg = Config::default()
            .set("/process/noNewPrivileges", json!(nnp))
            .set("/linux/seccomp", profile.clone())
            .sh("touch /dev/shm/f && echo touched; mkdir /dev/shm/d 2>&1; chmod 600 /dev/shm/f 2>&1; \
                 rm /dev/shm/f && echo removed; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status");
        let (code, o, e) = run(&g, cfg);
        assert_eq!(code, 0, "nnp {nnp}: {e}");
        assert_eq!(
            o,
            format!(
                "touched\nmkdir: can't create directory '/dev/shm/d': Operation not permitted\n\
                 chmod: /dev/shm/f: Permission denied\nremoved\nNoNewPrivs:\t{}\nSeccomp:\t2\n",
                nnp as u8
            ),
            "nnp {nnp}"
        );
        no_state_left(&g);
    }
}

#[test]
fn seccomp_filter_applies_to_exec() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-exec");
    let cfg = Config::default().args(&["sleep", "1000"]).set(
        "/linux/seccomp",
        seccomp_profile("SCMP_ACT_ALLOW", json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}])),
    );
    let b = Bundle::busybox(&cfg);
    let id = g.id("c");
    let mut c = rt(&g);
    c.args(["run", "-d", "-b"]).arg(b.path()).arg(&id);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "run -d: {}", err(&o));
    let mut c = rt(&g);
    c.args(["exec", &id, "sh", "-c", "mkdir /dev/shm/x 2>&1; grep -c ^Seccomp:.2 /proc/self/status /proc/1/status"]);
    let o = out(c);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        text(&o),
        "mkdir: can't create directory '/dev/shm/x': Operation not permitted\n/proc/self/status:1\n/proc/1/status:1\n"
    );
    let mut c = rt(&g);
    c.args(["delete", "--force", &id]);
    assert!(out(c).status.success());
    no_state_left(&g);
}

#[test]
fn seccomp_argument_filters() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-args");
    let suid =
        |index: usize| json!([{"index": index, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]);
    let cfg = Config::default()
        .set(
            "/linux/seccomp",
            seccomp_profile(
                "SCMP_ACT_ALLOW",
                json!([
                    // kill(1, SIGTERM) only: both conditions must hold.
                    {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]},
                    // No setuid bit through chmod.
                    {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "args": suid(1)},
                    {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "args": suid(2)},
                    // Reads of more than 100 bytes at a time from stdin (fd 0) fail with EINVAL.
                    {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                        "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 100, "op": "SCMP_CMP_GT"}]}
                ]),
            ),
        )
        .sh("kill -0 1 && echo sig0-ok; kill -TERM 1 2>&1 || echo term-denied; \
             sleep 100 & kill -TERM $! && echo other-pid-ok; wait; \
             touch /dev/shm/f; chmod 755 /dev/shm/f && echo 755-ok; chmod 4755 /dev/shm/f 2>&1 || echo suid-denied; \
             stat -c %a /dev/shm/f; echo hi | dd bs=100 count=1 2>/dev/null; echo hi | dd bs=101 count=1 2>/dev/null || echo read-denied");
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(
        o,
        "sig0-ok\nsh: can't kill pid 1: Operation not permitted\nterm-denied\nother-pid-ok\n755-ok\n\
         chmod: /dev/shm/f: Operation not permitted\nsuid-denied\n755\nhi\nread-denied\n"
    );
    no_state_left(&g);
}

#[test]
fn seccomp_default_errno_with_an_allowlist() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-allow");
    // What busybox sh, cat, grep and mkdir need (mkdir itself is left out).
    let allowed = [
        "access",
        "arch_prctl",
        "brk",
        "chdir",
        "clone",
        "clone3",
        "close",
        "dup",
        "dup2",
        "dup3",
        "execve",
        "exit",
        "exit_group",
        "faccessat",
        "faccessat2",
        "fcntl",
        "fstat",
        "futex",
        "getcwd",
        "getdents64",
        "getegid",
        "geteuid",
        "getgid",
        "getgroups",
        "getpgrp",
        "getpid",
        "getppid",
        "getrandom",
        "gettid",
        "getuid",
        "ioctl",
        "lseek",
        "lstat",
        "madvise",
        "mmap",
        "mprotect",
        "munmap",
        "newfstatat",
        "open",
        "openat",
        "pipe",
        "pipe2",
        "prctl",
        "pread64",
        "prlimit64",
        "read",
        "readlink",
        "readv",
        "rseq",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "rt_sigsuspend",
        "sendfile",
        "set_robust_list",
        "set_tid_address",
        "setpgid",
        "sigaltstack",
        "stat",
        "statx",
        "uname",
        "vfork",
        "wait4",
        "write",
        "writev",
    ];
    let cfg = Config::default()
        .set(
            "/linux/seccomp",
            json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": allowed.as_slice(), "action": "SCMP_ACT_ALLOW"}]
            }),
        )
        .sh("echo hello; grep -c '^Seccomp:.2' /proc/self/status; mkdir /dev/shm/d 2>&1; echo done");
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "hello\n1\nmkdir: can't create directory '/dev/shm/d': Function not implemented\ndone\n");
    no_state_left(&g);
}

#[test]
fn seccomp_unknown_syscall_names_are_skipped() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-unknown");
    let cfg = Config::default()
        .set(
            "/linux/seccomp",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                // socketcall exists on i386 only, pciconfig_read on other architectures.
                "syscalls": [{"names": ["no_such_syscall", "socketcall", "pciconfig_read", "mkdir"], "action": "SCMP_ACT_ERRNO"}]
            }),
        )
        .sh("mkdir /dev/shm/d 2>&1; echo ran");
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "mkdir: can't create directory '/dev/shm/d': Operation not permitted\nran\n");
    no_state_left(&g);
}

#[test]
fn seccomp_kill_trace_and_log_actions() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-kill");
    let cfg = Config::default()
        .push("/process/rlimits", json!({"type": "RLIMIT_CORE", "hard": 0, "soft": 0}))
        .set(
            "/linux/seccomp",
            seccomp_profile(
                "SCMP_ACT_ALLOW",
                json!([
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"},
                    {"names": ["symlink", "symlinkat"], "action": "SCMP_ACT_KILL"},
                    // With no tracer attached the syscall fails with ENOSYS.
                    {"names": ["rmdir"], "action": "SCMP_ACT_TRACE"},
                    {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_LOG"}
                ]),
            ),
        )
        .sh("sh -c 'mkdir /dev/shm/a'; echo mkdir $?; sh -c 'ln -s x /dev/shm/l'; echo ln $?; \
             rmdir /dev/shm 2>&1; touch /dev/shm/f; chmod 600 /dev/shm/f && stat -c %a /dev/shm/f");
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "mkdir 159\nln 159\nrmdir: '/dev/shm': Function not implemented\n600\n", "SIGSYS is 31");
    no_state_left(&g);
}

#[test]
fn seccomp_bad_profiles_fail_clearly_and_leave_nothing() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-bad");
    let rule = |action: &str, op: &str, index: usize| {
        json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": action, "args": [{"index": index, "value": 1, "op": op}]}]})
    };
    let cases = [
        (
            rule("SCMP_ACT_BOGUS", "SCMP_CMP_EQ", 0),
            "linux.seccomp.syscalls[0].action: unknown seccomp action \"SCMP_ACT_BOGUS\"",
        ),
        (rule("SCMP_ACT_ERRNO", "SCMP_CMP_ABOUT", 0), "linux.seccomp.syscalls[0].args[0].op: unknown seccomp operator"),
        (rule("SCMP_ACT_ERRNO", "SCMP_CMP_EQ", 6), "linux.seccomp.syscalls[0].args[0].index: 6 is out of range"),
        (rule("SCMP_ACT_NOTIFY", "SCMP_CMP_EQ", 0), "linux.seccomp.listenerPath is required with SCMP_ACT_NOTIFY"),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.listenerPath: connecting to the agent at /nonexistent/agent.sock",
        ),
        (json!({"defaultAction": "SCMP_ACT_NONE"}), "linux.seccomp.defaultAction: unknown seccomp action"),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}),
            "linux.seccomp.architectures[0]: unknown seccomp architecture",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}),
            "linux.seccomp.flags[0]: unknown seccomp flag",
        ),
    ];
    for (profile, want) in cases {
        let (code, _, e) = run(&g, Config::default().args(&["true"]).set("/linux/seccomp", profile));
        assert_ne!(code, 0);
        assert!(e.contains(want), "expected {want:?} in {e:?}");
        no_state_left(&g);
    }
}

#[test]
fn features_list_seccomp() {
    let g = Guard::new("rt-scmp-feat");
    let mut c = rt(&g);
    c.arg("features");
    let f: serde_json::Value = serde_json::from_slice(&out(c).stdout).unwrap();
    let s = &f["linux"]["seccomp"];
    assert_eq!(s["enabled"], true);
    let has = |k: &str, v: &str| s[k].as_array().unwrap().iter().any(|x| x == v);
    assert!(
        has("actions", "SCMP_ACT_ERRNO")
            && has("actions", "SCMP_ACT_KILL_PROCESS")
            && has("actions", "SCMP_ACT_NOTIFY")
    );
    assert!(has("supportedFlags", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"), "{s}");
    assert_eq!(s["operators"].as_array().unwrap().len(), 7);
    assert!(has("archs", "SCMP_ARCH_X86_64") && has("archs", "SCMP_ARCH_X32"));
    assert!(has("knownFlags", "SECCOMP_FILTER_FLAG_LOG") && has("supportedFlags", "SECCOMP_FILTER_FLAG_TSYNC"));
}

/// process.ioPriority, process.scheduler (a fair policy), linux.personality and
/// linux.memoryPolicy reach the container's program and its children.
#[test]
fn io_priority_scheduler_personality_and_memory_policy() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-attrs");
    let cfg = Config::default()
        .sh("ionice; cut -d' ' -f19,41 /proc/self/stat; uname -m; cat /proc/self/personality; \
             head -1 /proc/self/numa_maps | grep -o 'bind=static:0'")
        .set("/process/ioPriority", json!({"class": "IOPRIO_CLASS_BE", "priority": 6}))
        .set("/process/scheduler", json!({"policy": "SCHED_BATCH", "nice": 5}))
        .set("/linux/personality", json!({"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}))
        .set("/linux/memoryPolicy", json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}));
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "best-effort: prio 6\n5 3\ni686\n00040008\nbind=static:0\n");
    no_state_left(&g);
}

/// exec gets them too (the container's personality and memory policy, its own scheduler).
#[test]
fn exec_gets_the_process_attributes() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-attrs-exec");
    let cfg = Config::default()
        .args(&["sleep", "1000"])
        .set("/linux/personality", json!({"domain": "LINUX32"}))
        .set("/process/ioPriority", json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0}));
    let b = Bundle::busybox(&cfg);
    let id = g.id("c");
    let mut c = rt(&g);
    c.args(["run", "-d", "-b"]).arg(b.path()).arg(&id);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "{}", err(&o));
    let mut p = cfg.0["process"].clone();
    p["args"] = json!(["sh", "-c", "ionice; uname -m; cut -d' ' -f19,41 /proc/self/stat"]);
    p["scheduler"] = json!({"policy": "SCHED_IDLE", "nice": 0});
    p["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 1});
    let pf = g.path("process.json");
    std::fs::write(&pf, p.to_string()).unwrap();
    let mut c = rt(&g);
    c.args(["exec", "--process"]).arg(&pf).arg(&id);
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(text(&o), "best-effort: prio 1\ni686\n0 5\n");
    let mut c = rt(&g);
    c.args(["exec", &id, "ionice"]);
    assert_eq!(text(&out(c)), "idle\n", "a plain exec gets the spec's process");
    let mut c = rt(&g);
    c.args(["delete", "-f", &id]);
    assert!(out(c).status.success());
    no_state_left(&g);
}

/// A realtime policy needs realtime CPU time in the container's cpu cgroup on this kernel
/// (CONFIG_RT_GROUP_SCHED): with it, SCHED_FIFO works; without, the error says so.
/// SCHED_DEADLINE with the spec's flag names.
#[test]
fn realtime_and_deadline_schedulers() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-sched");
    let fifo = json!({"policy": "SCHED_FIFO", "priority": 10});
    let rt_group = Path::new("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists();
    let mut cfg = Config::default().sh("cut -d' ' -f18,40,41 /proc/self/stat").set("/process/scheduler", fifo.clone());
    if rt_group {
        let (code, _, e) = run(&g, cfg.clone());
        assert_ne!(code, 0);
        assert!(e.contains("process.scheduler") && e.contains("realtimeRuntime"), "{e}");
        no_state_left(&g);
        // A cgroup right under the root, which has realtime time to give.
        cfg = cfg
            .set("/linux/cgroupsPath", json!(format!("/{}", g.id("rt"))))
            .set("/linux/resources/cpu", json!({"realtimeRuntime": 10000, "realtimePeriod": 1000000}));
    }
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "-11 10 1\n", "priority -1-10, rt_priority 10, SCHED_FIFO");

    let cfg =
        Config::default().sh("grep -E '^policy' /proc/1/sched | tr -s ' '; cut -d' ' -f41 /proc/self/stat; true").set(
            "/process/scheduler",
            json!({"policy": "SCHED_DEADLINE", "runtime": 1000000, "deadline": 10000000, "period": 10000000,
               "flags": ["SCHED_FLAG_RESET_ON_FORK"]}),
        );
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "policy : 6\n0\n", "pid 1 runs SCHED_DEADLINE, its children reset on fork");
    no_state_left(&g);
}

/// execCPUAffinity: `final` is where an exec'd process runs; `initial` is applied (a CPU that
/// is not online fails); the init is left alone, as the spec says.
#[test]
fn exec_cpu_affinity() {
    if berth_testkit::need_root() {
        return;
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if online.trim() == "0" {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let g = Guard::new("rt-affinity");
    let cfg = Config::default()
        .args(&["sleep", "1000"])
        .set("/process/execCPUAffinity", json!({"initial": "0", "final": "1"}));
    let b = Bundle::busybox(&cfg);
    let id = g.id("c");
    let mut c = rt(&g);
    c.args(["run", "-d", "-b"]).arg(b.path()).arg(&id);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "{}", err(&o));
    let pid = state(&g, &id)["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let init_cpus = status.lines().find(|l| l.starts_with("Cpus_allowed_list")).unwrap().to_string();
    assert!(init_cpus.ends_with(online.trim()), "the init keeps every CPU: {init_cpus}");
    let mut c = rt(&g);
    c.args(["exec", &id, "sh", "-c", "grep Cpus_allowed_list /proc/self/status"]);
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(text(&o), "Cpus_allowed_list:\t1\n");
    for (aff, want) in [
        (json!({"initial": "64"}), "process.execCPUAffinity.initial"),
        (json!({"final": "64"}), "process.execCPUAffinity.final"),
        (json!({"final": "1-0"}), "execCPUAffinity"),
    ] {
        let mut p = cfg.0["process"].clone();
        p["args"] = json!(["true"]);
        p["execCPUAffinity"] = aff;
        let pf = g.path("process.json");
        std::fs::write(&pf, p.to_string()).unwrap();
        let mut c = rt(&g);
        c.args(["exec", "--process"]).arg(&pf).arg(&id);
        let o = out(c);
        assert!(!o.status.success());
        assert!(err(&o).contains(want), "expected {want:?} in {}", err(&o));
    }
    let mut c = rt(&g);
    c.args(["delete", "-f", &id]);
    assert!(out(c).status.success());
    no_state_left(&g);
}

#[test]
fn process_attribute_errors_name_the_field() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-attrs-bad");
    let cases: Vec<(Config, &str)> = vec![
        (
            Config::default().set("/process/ioPriority", json!({"class": "IOPRIO_CLASS_BE", "priority": 9})),
            "process.ioPriority.priority 9",
        ),
        (Config::default().set("/process/scheduler", json!({"policy": "SCHED_RR"})), "process.scheduler.priority"),
        (
            Config::default().set("/process/scheduler", json!({"policy": "SCHED_OTHER", "nice": -30})),
            "process.scheduler.nice",
        ),
        (
            Config::default().set("/linux/personality", json!({"domain": "LINUX", "flags": ["NOPE"]})),
            "linux.personality.flags",
        ),
        (Config::default().set("/linux/memoryPolicy", json!({"mode": "MPOL_BIND"})), "linux.memoryPolicy"),
        (
            Config::default().set("/linux/memoryPolicy", json!({"mode": "MPOL_BIND", "nodes": "63"})),
            "linux.memoryPolicy MPOL_BIND \"63\": set_mempolicy",
        ),
        (
            Config::default().set("/process/execCPUAffinity", json!({"initial": "2-1"})),
            "process.execCPUAffinity.initial",
        ),
    ];
    for (cfg, want) in cases {
        let (code, _, e) = run(&g, cfg.args(&["true"]));
        assert_ne!(code, 0);
        assert!(e.contains(want), "expected {want:?} in {e:?}");
        no_state_left(&g);
    }
}

/// A bind mount with its own uid/gid mappings shows the files' owners shifted; `idmap` alone
/// takes the container's user namespace mappings; what the kernel cannot idmap fails clearly.
#[test]
fn idmapped_bind_mounts() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-idmap");
    let dir = g.path("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), "x").unwrap();
    std::os::unix::fs::chown(dir.join("f"), Some(0), Some(0)).unwrap();
    let mount =
        |opts: serde_json::Value| json!({"destination": "/mnt", "type": "bind", "source": dir, "options": opts});
    // No user namespace: host ids as the mount maps them.
    let mut m = mount(json!(["bind", "idmap", "ro"]));
    m["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 10}]);
    m["gidMappings"] = json!([{"containerID": 0, "hostID": 2000, "size": 10}]);
    let cfg =
        Config::default().push("/mounts", m).sh("stat -c '%u:%g' /mnt/f; touch /mnt/g 2>/dev/null || echo read-only");
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "1000:2000\nread-only\n");
    assert_eq!(std::fs::metadata(dir.join("f")).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap(), 0);

    // In a user namespace (root = 200000): `idmap` alone maps the host's root-owned file to
    // the container's root, where a plain bind shows it unmapped (nobody).
    let cfg = Config::default()
        .push("/mounts", mount(json!(["bind", "idmap"])))
        .push("/mounts", json!({"destination": "/plain", "type": "bind", "source": dir, "options": ["bind"]}))
        .sh("stat -c '%u' /mnt/f /plain/f")
        .push("/linux/namespaces", json!({"type": "user"}))
        .set("/linux/uidMappings", json!([{"containerID": 0, "hostID": 200000, "size": 65536}]))
        .set("/linux/gidMappings", json!([{"containerID": 0, "hostID": 200000, "size": 65536}]));
    let b = Bundle::busybox(&cfg);
    Command::new("chown").args(["-R", "200000:200000"]).arg(b.rootfs()).status().unwrap();
    let mut c = rt(&g);
    c.args(["run", "-b"]).arg(b.path()).arg(g.id("userns"));
    let o = out(c);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(text(&o), "0\n65534\n");

    let maps = |mut m: serde_json::Value| {
        m["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        m["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        m
    };
    let cases = vec![
        (
            Config::default().push(
                "/mounts",
                maps(json!({"destination": "/mnt", "type": "bind", "source": "/proc/self", "options": ["bind"]})),
            ),
            "does not support idmapped mounts",
        ),
        (
            Config::default().push("/mounts", maps(json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs"}))),
            "bind mounts only",
        ),
        (Config::default().push("/mounts", mount(json!(["bind", "idmap"]))), "needs uidMappings and gidMappings"),
    ];
    for (cfg, want) in cases {
        let (code, _, e) = run(&g, cfg.args(&["true"]));
        assert_ne!(code, 0);
        assert!(e.contains(want) && e.contains("mounts[7] (/mnt)"), "expected {want:?} in {e:?}");
        no_state_left(&g);
    }
}

/// The cgroup v2 device filter, for real: this hybrid host's cgroup2 mount holds no devices
/// controller, but a device program attached to a cgroup2 directory applies to its processes
/// all the same. A throwaway cgroup there gets the filter of a container's device list, a
/// shell in it tries the nodes; an update replaces the program.
#[test]
fn cgroup_v2_device_filter() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-devbpf");
    let layout = berth_cgroups::Layout::detect();
    let root = match &layout {
        berth_cgroups::Layout::V2 { root } => root.clone(),
        berth_cgroups::Layout::V1 { unified: Some(u), .. } => u.clone(),
        berth_cgroups::Layout::V1 { unified: None, .. } => {
            eprintln!("skipped: no cgroup2 mount on this host");
            return;
        }
    };
    let name = g.id("cg");
    let dir = root.join(&name);
    // Only the directory: the host's cgroup.subtree_control files stay as they are.
    std::fs::create_dir(&dir).unwrap();
    let cg = berth_cgroups::Cgroup::new(berth_cgroups::Layout::V2 { root: root.clone() }, Path::new(&name)).unwrap();
    let res = |rules: serde_json::Value| -> oci_spec::runtime::LinuxResources {
        serde_json::from_value(json!({"devices": rules})).unwrap()
    };
    let deny_all = json!({"allow": false, "access": "rwm"});
    let r = cg.apply(&res(json!([
        deny_all,
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"}
    ])));
    let try_nodes = || {
        let script = format!(
            "echo 0 > {}/cgroup.procs || exit 9; \
             head -c1 /dev/zero > /dev/zero && echo zero-rw; \
             cat /dev/null && echo null-r; \
             (echo x > /dev/null) 2>/dev/null && echo null-w; \
             (head -c1 /dev/urandom > /dev/zero) 2>/dev/null && echo urandom-r; true",
            dir.display()
        );
        let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let outcome = r.map(|()| {
        let first = try_nodes();
        assert_eq!(berth_cgroups::devfilter::attached(&dir).unwrap(), 1);
        cg.apply(&res(json!([deny_all, {"allow": true, "type": "c", "major": 1, "access": "rw"}]))).unwrap();
        let second = try_nodes();
        assert_eq!(berth_cgroups::devfilter::attached(&dir).unwrap(), 1, "the old program was detached");
        (first, second)
    });
    // The shells have exited: the cgroup goes, and its programs with it.
    std::fs::remove_dir(&dir).unwrap();
    let (first, second) = outcome.unwrap();
    assert_eq!(first, "zero-rw\nnull-r\n");
    assert_eq!(second, "zero-rw\nnull-r\nnull-w\nurandom-r\n");
}

#[test]
fn features_list_the_process_and_mount_extensions() {
    let g = Guard::new("rt-feat2");
    let mut c = rt(&g);
    c.arg("features");
    let f: serde_json::Value = serde_json::from_slice(&out(c).stdout).unwrap();
    let l = &f["linux"];
    assert_eq!(l["mountExtensions"]["idmap"]["enabled"], true);
    assert!(l["memoryPolicy"]["modes"].as_array().unwrap().iter().any(|m| m == "MPOL_BIND"));
    assert!(l["memoryPolicy"]["flags"].as_array().unwrap().iter().any(|m| m == "MPOL_F_STATIC_NODES"));
    assert!(f["mountOptions"].as_array().unwrap().iter().any(|m| m == "ridmap"));
    let a = &f["annotations"];
    assert_eq!(a["io.github.berth.runtime.process"], "ioPriority,scheduler,execCPUAffinity");
    assert!(a["io.github.berth.runtime.personality"].as_str().unwrap().contains("LINUX32"));
}

/// A seccomp agent for the notify test: takes one connection on `listener`, reads the
/// container process state and the listener fd, and answers the notifications that come:
/// the first with EACCES, the next ones by letting the syscall run. Returns the state and the
/// number of notifications, once the filter has no process left (or after 20 s).
fn seccomp_agent(listener: std::os::unix::net::UnixListener) -> std::thread::JoinHandle<(serde_json::Value, usize)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    #[repr(C)]
    struct Notif {
        id: u64,
        pid: u32,
        flags: u32,
        nr: i32,
        arch: u32,
        ip: u64,
        args: [u64; 6],
    }
    #[repr(C)]
    struct Resp {
        id: u64,
        val: i64,
        error: i32,
        flags: u32,
    }
    const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
    const NOTIF_SEND: libc::c_ulong = 0xc018_2101;
    const CONTINUE: u32 = 1;
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 8192];
        let mut control = [0u64; 4];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: recvmsg into buffers we own; the fd is read from the control message.
        let (n, fd) = unsafe {
            let mut mh: libc::msghdr = std::mem::zeroed();
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = control.as_mut_ptr().cast();
            mh.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(conn.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC);
            assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
            let c = libc::CMSG_FIRSTHDR(&mh);
            assert!(!c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS, "no fd with the state");
            (n as usize, OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>())))
        };
        let state: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        let mut handled = 0;
        loop {
            let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on our listener fd.
            if unsafe { libc::poll(&mut p, 1, 20_000) } <= 0 || p.revents & libc::POLLIN == 0 {
                break;
            }
            // SAFETY: the kernel wants a zeroed seccomp_notif; both structs match the uapi layout.
            let mut req: Notif = unsafe { std::mem::zeroed() };
            if unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_RECV, &mut req) } != 0 {
                break;
            }
            let resp = if handled == 0 {
                Resp { id: req.id, val: 0, error: -libc::EACCES, flags: 0 }
            } else {
                Resp { id: req.id, val: 0, error: 0, flags: CONTINUE }
            };
            handled += 1;
            // SAFETY: as above.
            unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_SEND, &resp) };
        }
        (state, handled)
    })
}

/// SCMP_ACT_NOTIFY: the listener fd goes to the agent at listenerPath with the container
/// process state (for the init and for an exec'd process), and the agent's answers decide.
#[test]
fn seccomp_notify_hands_the_listener_to_the_agent() {
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-scmp-notify");
    let sock = g.path("agent.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let profile = |meta: &str| {
        let mut p =
            seccomp_profile("SCMP_ACT_ALLOW", json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]));
        p["listenerPath"] = json!(sock);
        p["listenerMetadata"] = json!(meta);
        p
    };
    // The init: its mkdirs wait for the agent.
    let agent = seccomp_agent(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let cfg = Config::default()
        .sh("mkdir /dev/shm/a 2>&1; mkdir /dev/shm/b && echo made-b; ls /dev/shm")
        .set("/linux/seccomp", profile("meta-run"));
    let (code, o, e) = run(&g, cfg);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "mkdir: can't create directory '/dev/shm/a': Permission denied\nmade-b\nb\n");
    let (state, handled) = agent.join().unwrap();
    assert_eq!(handled, 2, "{state}");
    assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
    assert_eq!(state["metadata"], "meta-run", "{state}");
    assert_eq!(state["state"]["id"], g.id("run"), "{state}");
    assert_eq!(state["state"]["status"], "creating", "{state}");
    assert!(state["pid"].as_i64().is_some_and(|p| p > 1) && state["pid"] == state["state"]["pid"], "{state}");
    no_state_left(&g);

    // An exec'd process has a filter and a listener of its own, forwarded by the runtime.
    std::fs::remove_file(&sock).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let init_agent = seccomp_agent(listener.try_clone().unwrap());
    let b = Bundle::busybox(&Config::default().args(&["sleep", "1000"]).set("/linux/seccomp", profile("meta-exec")));
    let id = g.id("c");
    let mut c = rt(&g);
    c.args(["run", "-d", "-b"]).arg(b.path()).arg(&id);
    let o = out_detached(&g, c);
    assert!(o.status.success(), "run -d: {}", err(&o));
    let exec_agent = seccomp_agent(listener);
    let mut c = rt(&g);
    c.args(["exec", &id, "sh", "-c", "mkdir /dev/shm/c 2>&1; mkdir /dev/shm/d && echo made-d"]);
    let o = out(c);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(text(&o), "mkdir: can't create directory '/dev/shm/c': Permission denied\nmade-d\n");
    let (state, handled) = exec_agent.join().unwrap();
    assert_eq!((handled, &state["metadata"], &state["state"]["status"]), (2, &json!("meta-exec"), &json!("running")));
    assert_ne!(state["pid"], state["state"]["pid"], "the exec'd process, not the init: {state}");
    let mut c = rt(&g);
    c.args(["delete", "--force", &id]);
    assert!(out(c).status.success());
    let (state, handled) = init_agent.join().unwrap();
    assert_eq!((handled, &state["state"]["id"]), (0, &json!(id)));
    no_state_left(&g);
}

/// Rootless: an unprivileged user (nobody) runs a container from `spec --rootless`: root
/// inside through its own one-id mapping, no cgroup (none is delegated to nobody), state under
/// its $XDG_RUNTIME_DIR. Limits without a delegated cgroup are refused clearly.
#[test]
fn rootless_container_of_an_unprivileged_user() {
    use std::os::unix::fs::{PermissionsExt, chown};
    use std::os::unix::process::CommandExt;
    if berth_testkit::need_root() {
        return;
    }
    let g = Guard::new("rt-rootless");
    let (uid, gid) = (65534u32, 65534u32);
    let b = Bundle::busybox(&Config::default());
    for d in [b.path(), g.dir.path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    chown(b.path(), Some(uid), Some(gid)).unwrap();
    std::fs::remove_file(b.path().join("config.json")).unwrap();
    let xdg = g.path("xdg");
    std::fs::create_dir(&xdg).unwrap();
    chown(&xdg, Some(uid), Some(gid)).unwrap();
    // A copy nobody can reach whatever the checkout's directories allow.
    let bin = g.path("berth-runtime");
    std::fs::copy(&*RT, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.args(args).current_dir(b.path()).env("XDG_RUNTIME_DIR", &xdg).uid(uid).gid(gid);
        out(c)
    };
    let o = user(&["spec", "--rootless"]);
    assert!(o.status.success(), "spec --rootless: {}", err(&o));
    let p = b.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(["sh", "-c", "id -u; cat /proc/self/uid_map"]);
    std::fs::write(&p, cfg.to_string()).unwrap();
    let id = g.id("c");
    let o = user(&["run", "-b", ".", &id]);
    assert!(o.status.success(), "rootless run: {}", err(&o));
    let t = text(&o);
    let mut lines = t.lines();
    assert_eq!(lines.next(), Some("0"), "{t}");
    assert_eq!(lines.next().map(|l| l.split_whitespace().collect::<Vec<_>>()), Some(vec!["0", "65534", "1"]), "{t}");
    assert!(xdg.join("berth-runtime").is_dir(), "state under $XDG_RUNTIME_DIR");
    assert!(!xdg.join("berth-runtime").join(&id).exists(), "run removed its state");
    cfg["linux"]["resources"] = json!({"pids": {"limit": 10}});
    std::fs::write(&p, cfg.to_string()).unwrap();
    let o = user(&["run", "-b", ".", &id]);
    assert!(!o.status.success() && err(&o).contains("delegated"), "{}", err(&o));
    assert!(!xdg.join("berth-runtime").join(&id).exists());
}
