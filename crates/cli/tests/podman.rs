//! A real client of berth-runtime: Debian's podman with `--runtime berth-runtime`. Skipped
//! when podman is not installed. Everything podman keeps lives under the leak guard's dir
//! (`--root`, `--runroot`, `--tmpdir`, a containers.conf of its own); containers have no
//! network (`--network none`: no netavark or CNI work in the machine's namespace) and their
//! cgroups go under a parent named after the test (`--cgroup-parent`), which is removed at the
//! end with the `conmon` cgroup podman makes beside them.
//!
//! The runtime keeps its state in its default root, /run/berth-runtime: podman 4.3 does not
//! hand `--runtime-flag root=...` on to the `container cleanup` that conmon runs when a
//! container exits, so with another root that cleanup's `delete` would look in the wrong place.
//! The test removes that directory again if it made it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_testkit::leak::Guard;

static RT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| berth_testkit::runtime_under_test(env!("CARGO_BIN_EXE_berth-runtime")));
const IMAGE: &str = "berth-test/busybox";

struct Podman {
    g: Guard,
    parent: String,
    /// Whether /run/berth-runtime existed before the test.
    had_state_root: bool,
}

const STATE_ROOT: &str = "/run/berth-runtime";

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        // A hung podman must not hang the suite.
        let mut c = Command::new("timeout");
        c.args(["120", "podman", "--root"])
            .arg(self.g.path("root"))
            .arg("--runroot")
            .arg(self.g.path("runroot"))
            .arg("--tmpdir")
            .arg(self.g.path("tmp"))
            .args(["--events-backend", "none", "--cgroup-manager", "cgroupfs", "--runtime", &*RT])
            .args(args)
            .env("CONTAINERS_CONF", self.g.path("containers.conf"))
            .stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running podman")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(o.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Every cgroup directory under the test's parent, deepest first.
    fn cgroups(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path(), out);
                    }
                }
            }
            out.push(d.to_path_buf());
        }
        let mut out = Vec::new();
        let roots = std::fs::read_dir("/sys/fs/cgroup")
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_else(|_| Vec::new());
        for base in roots.iter().chain([PathBuf::from("/sys/fs/cgroup")].iter()) {
            let d = base.join(&self.parent);
            if d.is_dir() {
                walk(&d, &mut out);
            }
        }
        out
    }
}

impl Drop for Podman {
    /// Containers, the image, then the cgroups podman leaves (its `conmon` cgroup and the
    /// parent), also after a failed assertion.
    fn drop(&mut self) {
        if self.g.path("root").exists() {
            let _ = self.out(&["rm", "-a", "-f", "-t", "0"]);
            let _ = self.out(&["rmi", "-a", "-f"]);
        }
        for d in self.cgroups() {
            for _ in 0..100 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        if !self.had_state_root {
            // Only if empty: never anything of another user of the default root.
            let _ = std::fs::remove_dir(STATE_ROOT);
        }
    }
}

fn have_podman() -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("podman").is_file()))
}

/// `podman --runtime berth-runtime` runs, execs in, pauses, stops and removes containers.
#[test]
fn podman_uses_berth_runtime() {
    if berth_testkit::need_root() {
        return;
    }
    if !have_podman() {
        eprintln!("skipped: podman is not installed (apt-get install podman)");
        return;
    }
    let g = Guard::new("podman");
    let parent = g.id("cg");
    let p = Podman { g, parent, had_state_root: Path::new(STATE_ROOT).exists() };
    // conmon passes `--log FILE --log-format json` to runtimes named here, and podman reads
    // their errors from that file.
    std::fs::write(
        p.g.path("containers.conf"),
        "[engine]\nruntime_supports_json = [\"crun\", \"runc\", \"berth-runtime\"]\n",
    )
    .unwrap();

    // The test kit's busybox rootfs as an image.
    let rootfs = p.g.path("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    berth_testkit::image::write_rootfs(&rootfs);
    let mut tar = Command::new("tar").arg("-C").arg(&rootfs).args(["-c", "."]).stdout(Stdio::piped()).spawn().unwrap();
    let mut import = p.cmd(&["import", "-", IMAGE]);
    import.stdin(tar.stdout.take().unwrap()).stdout(Stdio::null());
    let o = import.output().unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(o.status.success(), "import: {}", String::from_utf8_lossy(&o.stderr));

    let cgroup_parent = format!("/{}", p.parent);
    let mut opts: Vec<String> =
        ["--network", "none", "--cgroup-parent", &cgroup_parent, "--ulimit", "nofile=1024:20000"]
            .map(String::from)
            .to_vec();
    let run = |opts: &[String], tail: &[&str]| {
        let mut a: Vec<&str> = vec!["run"];
        a.extend(opts.iter().map(String::as_str));
        a.extend(tail);
        p.out(&a)
    };

    // The command. Podman (4.3, as root) asks for RLIMIT_NPROC 1048576 after lowering
    // its own to 32768; without CAP_SYS_RESOURCE (this machine) no runtime can give that, and
    // ours says so, with the most it can give, which the rest of the test then asks for.
    let o = run(&opts, &["--rm", IMAGE, "true"]);
    if !o.status.success() {
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(e.contains("cannot raise the hard limit of RLIMIT_NPROC") && e.contains("CAP_SYS_RESOURCE"), "{e}");
        let most = e.split("ask for at most ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next());
        let most = most.unwrap_or_else(|| panic!("no limit in {e}"));
        opts.extend(["--ulimit".to_string(), format!("nproc={most}:{most}")]);
        let o = run(&opts, &["--rm", IMAGE, "true"]);
        assert!(o.status.success(), "run --rm true: {}", String::from_utf8_lossy(&o.stderr));
    }

    // Output, exit codes, the limits asked for.
    let o = run(&opts, &["--rm", IMAGE, "sh", "-c", "echo hello; ulimit -Hn; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n20000\n");

    // Detached, exec (also with a tty), pause/unpause, stop, rm.
    let o = run(&opts, &["-d", IMAGE, "sleep", "1000"]);
    assert!(o.status.success(), "run -d: {}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(p.ok(&["exec", &id, "sh", "-c", "echo in $(hostname); id -u"]), format!("in {}\n0\n", &id[..12]));
    let o = p.out(&["exec", &id, "sh", "-c", "exit 4"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(p.out(&["exec", "-t", &id, "true"]).status.success());
    p.ok(&["pause", &id]);
    assert_eq!(p.ok(&["inspect", "-f", "{{.State.Status}}", &id]), "paused\n");
    p.ok(&["unpause", &id]);
    assert_eq!(p.ok(&["inspect", "-f", "{{.State.Status}}", &id]), "running\n");
    // sleep as pid 1 ignores SIGTERM: stop ends with SIGKILL after the timeout.
    p.ok(&["stop", "-t", "1", &id]);
    assert_eq!(p.ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &id]), "exited 137\n");
    // Started again (a new runtime container under the same id), then removed while it runs.
    p.ok(&["start", &id]);
    assert_eq!(p.ok(&["inspect", "-f", "{{.State.Status}}", &id]), "running\n");
    p.ok(&["rm", "-f", "-t", "0", &id]);
    assert_eq!(p.ok(&["ps", "-a", "-q"]), "");

    // Nothing of the runtime's is left: no state of the container, no container cgroup (only
    // podman's own).
    assert!(!Path::new(STATE_ROOT).join(&id).exists(), "runtime state of {id} left");
    let cgroups: Vec<String> = p
        .cgroups()
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("libpod-"))
        .collect();
    assert!(cgroups.is_empty(), "container cgroups left: {cgroups:?}");
}
