//! `berth-runtime`: an OCI runtime with runc's command line.

use berth_runtime::units::{parse_signal, parse_size};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_runtime::{Container, CreateOptions, Status, container, state};
use clap::{Parser, Subcommand};
use oci_spec::runtime::{LinuxResources, Process, Spec};

#[derive(Parser)]
#[command(name = "berth-runtime", version, about = "berth's OCI runtime (runc-compatible command line)")]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = berth_runtime::DEFAULT_ROOT)]
    root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of --log: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility; systemd cgroup management is not supported.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct CreateArgs {
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal to the container's init (or all its processes).
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it had.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create, start and wait for a container; then delete it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        #[arg(long = "keep")]
        keep: bool,
    },
    /// Run a process in a running container.
    Exec {
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(long = "additional-gids", short = 'g')]
        additional_gids: Vec<u32>,
        #[arg(short = 'c', long = "cap")]
        cap: Vec<String>,
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change the resource limits of a running container.
    Update {
        #[arg(short = 'r', long)]
        resources: Option<PathBuf>,
        #[arg(long)]
        memory: Option<String>,
        #[arg(long = "memory-reservation")]
        memory_reservation: Option<String>,
        #[arg(long = "memory-swap")]
        memory_swap: Option<String>,
        #[arg(long = "cpu-quota")]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<u64>,
        #[arg(long = "cpu-shares")]
        cpu_shares: Option<u64>,
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        #[arg(long = "cpuset-mems")]
        cpuset_mems: Option<String>,
        #[arg(long = "pids-limit")]
        pids_limit: Option<i64>,
        id: String,
    },
    /// Print resource usage (once with --stats, else every --interval).
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Print what this runtime supports, as the OCI features JSON.
    Features,
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long = "rootless")]
        rootless: bool,
    },
    /// Checkpoint a running container (needs CRIU).
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Restore a container from a checkpoint (needs CRIU).
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// The CVE-2019-5736 re-exec (berth_runtime::sealed) as the first thing the process does: an
/// ELF constructor, which glibc calls with argc, argv and envp once the libraries are loaded,
/// before std's initialisation and `main`; none of that work is then done twice. `main` still
/// calls `ensure_sealed`, which finds the mark (or, if the early attempt failed, tries again and
/// reports why).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array")]
static SEAL_EARLY: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) = seal_early;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn seal_early(argc: libc::c_int, argv: *const *const libc::c_char, envp: *const *const libc::c_char) {
    // SAFETY: glibc passes the process's own argument and environment arrays; the process is
    // single threaded this early.
    unsafe {
        if argv.is_null() || envp.is_null() {
            return;
        }
        let wants = (1..argc.max(0) as usize).any(|i| {
            let a = std::ffi::CStr::from_ptr(*argv.add(i)).to_bytes();
            matches!(a, b"create" | b"run" | b"exec")
        });
        if wants {
            berth_runtime::sealed::reexec_sealed_raw(argv, envp);
        }
    }
}

fn main() {
    let wants_seal = std::env::args_os().skip(1).any(|a| a == "create" || a == "run" || a == "exec");
    if wants_seal && let Err(e) = berth_runtime::sealed::ensure_sealed() {
        eprintln!("berth-runtime: {e:#}");
        std::process::exit(1);
    }
    let cli = Cli::parse();
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            report(&cli, &e);
            1
        }
    };
    std::process::exit(code);
}

/// Errors go to stderr, and to --log in the format the caller asked for (containerd and
/// conmon read the last JSON line of that file).
fn report(cli: &Cli, e: &anyhow::Error) {
    let msg = format!("{e:#}");
    eprintln!("berth-runtime: {msg}");
    if let Some(p) = &cli.log
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p)
    {
        let line = if cli.log_format == "json" {
            serde_json::json!({"level": "error", "msg": msg, "time": state::now_rfc3339()}).to_string()
        } else {
            format!("time=\"{}\" level=error msg={:?}", state::now_rfc3339(), msg)
        };
        let _ = writeln!(f, "{line}");
    }
}

fn create_opts(cli: &Cli, a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        root: cli.root.clone(),
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        start: false,
    }
}

fn run(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: berth-runtime manages cgroupfs directly (drop the flag)");
    }
    let root = &cli.root;
    match &cli.cmd {
        Cmd::Create(a) => {
            container::create(&create_opts(cli, a))?;
        }
        Cmd::Start { id } => Container::load(root, id)?.start()?,
        Cmd::State { id } => {
            let c = Container::load(root, id)?;
            println!("{}", serde_json::to_string_pretty(&c.state.to_oci_json(c.status()))?);
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal)?;
            Container::load(root, id)?.kill(sig, *all)?;
        }
        Cmd::Delete { force, id } => match Container::load(root, id) {
            Ok(c) => c.delete(*force)?,
            Err(_) if *force && state::validate_id(id).is_ok() => {}
            Err(e) => return Err(e),
        },
        Cmd::Run { create, detach, keep } => return run_container(cli, create, *detach, *keep),
        Cmd::Exec {
            process,
            tty,
            console_socket,
            env,
            cwd,
            user,
            additional_gids,
            cap,
            no_new_privs,
            detach,
            pid_file,
            preserve_fds,
            id,
            args,
        } => {
            let c = Container::load(root, id)?;
            let spec = c.spec()?;
            let p = match process {
                Some(f) => {
                    let data = std::fs::read(f).with_context(|| format!("reading --process {}", f.display()))?;
                    serde_json::from_slice::<Process>(&data)
                        .with_context(|| format!("parsing --process {}", f.display()))?
                }
                None => exec_process(&spec, args, env, cwd, user, additional_gids, cap, *no_new_privs, *tty)?,
            };
            let pid = c.exec(&p, console_socket.as_deref(), *preserve_fds)?;
            if let Some(pf) = pid_file {
                std::fs::write(pf, pid.to_string()).with_context(|| format!("writing --pid-file {}", pf.display()))?;
            }
            if *detach {
                return Ok(0);
            }
            return forward_and_wait(pid);
        }
        Cmd::Ps { format, id } => {
            let c = Container::load(root, id)?;
            let pids = c.pids()?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("{:>8} CMD", "PID");
                for p in pids {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    let cmd: Vec<String> = cmd
                        .split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect();
                    println!("{p:>8} {}", cmd.join(" "));
                }
            }
        }
        Cmd::List { format, quiet } => {
            let all = container::list(root)?;
            if *quiet {
                for c in &all {
                    println!("{}", c.state.id);
                }
            } else if format == "json" {
                let v: Vec<_> = all.iter().map(|c| c.state.to_oci_json(c.status())).collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("{:<20} {:<8} {:<10} {:<40} CREATED", "ID", "PID", "STATUS", "BUNDLE");
                for c in &all {
                    let s = c.status();
                    let pid = if s == Status::Stopped { 0 } else { c.state.pid };
                    println!(
                        "{:<20} {:<8} {:<10} {:<40} {}",
                        c.state.id,
                        pid,
                        s,
                        c.state.bundle.display(),
                        c.state.created
                    );
                }
            }
        }
        Cmd::Pause { id } => Container::load(root, id)?.pause()?,
        Cmd::Resume { id } => Container::load(root, id)?.resume()?,
        Cmd::Update {
            resources,
            memory,
            memory_reservation,
            memory_swap,
            cpu_quota,
            cpu_period,
            cpu_shares,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
            id,
        } => {
            let c = Container::load(root, id)?;
            let res: LinuxResources = match resources {
                Some(f) => {
                    let data = if f.as_os_str() == "-" {
                        let mut v = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                        v
                    } else {
                        std::fs::read(f).with_context(|| format!("reading --resources {}", f.display()))?
                    };
                    serde_json::from_slice(&data).context("parsing --resources")?
                }
                None => {
                    let mut j = serde_json::json!({});
                    let mut mem = serde_json::Map::new();
                    if let Some(m) = memory {
                        mem.insert("limit".into(), parse_size(m)?.into());
                    }
                    if let Some(m) = memory_reservation {
                        mem.insert("reservation".into(), parse_size(m)?.into());
                    }
                    if let Some(m) = memory_swap {
                        mem.insert("swap".into(), parse_size(m)?.into());
                    }
                    if !mem.is_empty() {
                        j["memory"] = mem.into();
                    }
                    let mut cpu = serde_json::Map::new();
                    if let Some(v) = cpu_quota {
                        cpu.insert("quota".into(), (*v).into());
                    }
                    if let Some(v) = cpu_period {
                        cpu.insert("period".into(), (*v).into());
                    }
                    if let Some(v) = cpu_shares {
                        cpu.insert("shares".into(), (*v).into());
                    }
                    if let Some(v) = cpuset_cpus {
                        cpu.insert("cpus".into(), v.clone().into());
                    }
                    if let Some(v) = cpuset_mems {
                        cpu.insert("mems".into(), v.clone().into());
                    }
                    if !cpu.is_empty() {
                        j["cpu"] = cpu.into();
                    }
                    if let Some(p) = pids_limit {
                        j["pids"] = serde_json::json!({ "limit": p });
                    }
                    serde_json::from_value(j)?
                }
            };
            c.update(&res)?;
        }
        Cmd::Events { stats, interval, id } => {
            let c = Container::load(root, id)?;
            let cg = c.cgroup().context("container has no cgroup")?;
            let every = parse_duration(interval)?;
            loop {
                if c.status() == Status::Stopped {
                    bail!("container {id} is not running");
                }
                let s = cg.stats()?;
                println!("{}", serde_json::json!({"type": "stats", "id": id, "data": s}));
                if *stats {
                    break;
                }
                std::thread::sleep(every);
            }
        }
        Cmd::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        Cmd::Spec { bundle, rootless } => {
            let p = bundle.join("config.json");
            if p.exists() {
                bail!("{} already exists; remove it first", p.display());
            }
            let mut spec = if *rootless { default_spec_rootless()? } else { Spec::default() };
            spec.set_hostname(Some("berth".into()));
            std::fs::write(&p, serde_json::to_string_pretty(&spec)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Cmd::Checkpoint { .. } | Cmd::Restore { .. } => {
            if which("criu").is_none() {
                bail!("checkpoint/restore needs CRIU, which is not installed (criu not found in PATH)");
            }
            bail!("checkpoint/restore through CRIU is not implemented in berth-runtime yet");
        }
    }
    Ok(0)
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(cmd)).find(|p| p.is_file()))
}

/// `run`: create and start; unless detached, forward signals, wait, delete, and exit with the
/// container's code.
fn run_container(cli: &Cli, a: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    // Started by create itself (no exec socket round trip) unless poststart hooks need the
    // separate start: then the container is left created and started here.
    let st = container::create(&CreateOptions { start: true, ..create_opts(cli, a) })?;
    let c = Container { root: cli.root.clone(), state: st };
    if c.status() == Status::Created
        && let Err(e) = c.start()
    {
        let _ = c.delete(true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = forward_and_wait(c.state.pid)?;
    if !keep {
        c.delete(true)?;
    }
    Ok(code)
}

/// Forwards the usual signals to `pid` until it exits; returns its exit code.
fn forward_and_wait(pid: i32) -> Result<i32> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set.thread_block()?;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(128 + libc::WTERMSIG(status));
            }
        } else if r < 0 {
            return Err(std::io::Error::last_os_error()).context("waiting for the container");
        }
        let sig = set.wait()?;
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn exec_process(
    spec: &Spec,
    args: &[String],
    env: &[String],
    cwd: &Option<PathBuf>,
    user: &Option<String>,
    gids: &[u32],
    caps: &[String],
    nnp: bool,
    tty: bool,
) -> Result<Process> {
    if args.is_empty() {
        bail!("exec needs a command (or --process FILE)");
    }
    let mut p = spec.process().clone().context("the container's config has no process")?;
    p.set_args(Some(args.to_vec()));
    p.set_terminal(Some(tty));
    let mut e = p.env().clone().unwrap_or_default();
    e.extend(env.iter().cloned());
    p.set_env(Some(e));
    if let Some(c) = cwd {
        p.set_cwd(c.clone());
    }
    if let Some(u) = user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let mut usr = p.user().clone();
        usr.set_uid(uid.parse().context("--user takes uid[:gid] numbers")?);
        usr.set_gid(gid.parse().context("--user takes uid[:gid] numbers")?);
        p.set_user(usr);
    }
    if !gids.is_empty() {
        let mut usr = p.user().clone();
        usr.set_additional_gids(Some(gids.to_vec()));
        p.set_user(usr);
    }
    if !caps.is_empty() {
        let mut c = p.capabilities().clone().unwrap_or_default();
        for name in caps {
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::Value::String(name.to_uppercase()))
                    .with_context(|| format!("unknown capability {name}"))?;
            let mut b = c.bounding().clone().unwrap_or_default();
            b.insert(cap);
            c.set_bounding(Some(b));
            let mut e = c.effective().clone().unwrap_or_default();
            e.insert(cap);
            c.set_effective(Some(e));
            let mut pm = c.permitted().clone().unwrap_or_default();
            pm.insert(cap);
            c.set_permitted(Some(pm));
        }
        p.set_capabilities(Some(c));
    }
    if nnp {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => bail!("invalid duration {s:?}"),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn default_spec_rootless() -> Result<Spec> {
    let mut spec = Spec::default();
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mut j = serde_json::to_value(&spec)?;
    let linux = &mut j["linux"];
    let ns: Vec<serde_json::Value> = linux["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["type"] != "network")
        .chain([serde_json::json!({"type": "user"})])
        .collect();
    linux["namespaces"] = ns.into();
    linux["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    linux["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    linux.as_object_mut().map(|o| o.remove("resources"));
    // Without a network namespace sysfs cannot be mounted; bind the host's read-only.
    if let Some(mounts) = j["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" {
                *m = serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| !o.as_str().is_some_and(|s| s.starts_with("gid=")));
            }
        }
    }
    spec = serde_json::from_value(j)?;
    Ok(spec)
}

fn features() -> serde_json::Value {
    let caps: Vec<&str> = berth_runtime::caps::NAMES.to_vec();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": berth_runtime::mountopts::KNOWN,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": berth_runtime::seccomp::Abi::NATIVE.is_some(),
                "actions": berth_runtime::seccomp::ACTIONS,
                "operators": berth_runtime::seccomp::OPERATORS,
                "archs": berth_runtime::seccomp::Abi::NATIVE.map(|a| a.arch_names()).unwrap_or_default(),
                "knownFlags": berth_runtime::seccomp::FLAGS,
                "supportedFlags": berth_runtime::seccomp::supported_flags()
            },
            "apparmor": {"enabled": std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists()},
            "selinux": {"enabled": std::path::Path::new("/sys/fs/selinux/enforce").exists()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "org.opencontainers.runc.version": "berth-runtime",
            "io.github.berth.runtime.version": env!("CARGO_PKG_VERSION")
        }
    })
}
