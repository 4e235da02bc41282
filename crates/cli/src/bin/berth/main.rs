//! `berth`: a daemonless container engine with Docker's command line.

mod build_cmds;
mod image_cmds;
mod network_cmds;
mod registry_cmds;
mod template;
mod volume_cmds;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_engine::containers::{Attach, ContainerConfig, CreateRequest};
use berth_engine::{ContainerRow, Engine, ExitError};
use berth_runtime::units::{parse_signal, parse_size};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use template::{Template, print_tabbed, print_table};

#[derive(Parser)]
#[command(name = "berth", version, about = "A daemonless container engine with Docker's command line")]
struct Cli {
    /// Where images, containers and the state database live [default: root in
    /// /etc/berth/berth.toml, else /var/lib/berth].
    #[arg(long, global = true, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    /// Where runtime state (gone at reboot) lives [default: runroot in /etc/berth/berth.toml,
    /// else /run/berth].
    #[arg(long, global = true, env = "BERTH_RUNROOT")]
    runroot: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

impl Cli {
    /// --root and --runroot (or their environment variables), else the settings file's, else
    /// the defaults.
    fn dirs(&self) -> Result<(PathBuf, PathBuf)> {
        let s = if self.root.is_some() && self.runroot.is_some() {
            berth_engine::settings::Settings::default()
        } else {
            berth_engine::settings::Settings::load()?
        };
        let root = self.root.clone().or(s.root).unwrap_or_else(|| berth_engine::DEFAULT_ROOT.into());
        let runroot = self.runroot.clone().or(s.runroot).unwrap_or_else(|| berth_engine::DEFAULT_RUNROOT.into());
        Ok((root, runroot))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create and start a container from an image.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Create a container without starting it.
    #[command(disable_help_flag = true)]
    Create(RunArgs),
    /// Start stopped containers.
    Start {
        #[arg(short, long)]
        attach: bool,
        #[arg(short, long)]
        interactive: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers (the stop signal, then SIGKILL after the timeout).
    Stop {
        #[arg(short = 't', long = "time", alias = "timeout")]
        time: Option<u32>,
        #[arg(short, long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart {
        #[arg(short = 't', long = "time")]
        time: Option<u32>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to running containers.
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps(PsArgs),
    /// Fetch a container's logs.
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(short, long)]
        timestamps: bool,
        #[arg(short = 'n', long)]
        tail: Option<String>,
        /// Only entries at or after this time (RFC 3339, unix time, or a duration like 10m).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this time.
        #[arg(long)]
        until: Option<String>,
        container: String,
    },
    /// Attach to a running container's output (and input, with a pty).
    Attach {
        #[arg(long)]
        no_stdin: bool,
        #[arg(long)]
        detach_keys: Option<String>,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        sig_proxy: bool,
        container: String,
    },
    /// Block until containers stop, then print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long)]
        interactive: bool,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long = "env")]
        env: Vec<String>,
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short, long)]
        workdir: Option<String>,
        #[arg(long)]
        privileged: bool,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Pause all processes in containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show details of containers or images.
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List images.
    Images(image_cmds::ImagesArgs),
    /// Show the history of an image.
    History(image_cmds::HistoryArgs),
    /// Save images to a tar archive (docker-archive; --format oci-archive).
    Save(image_cmds::SaveArgs),
    /// Export a container's filesystem as a tar archive.
    Export(image_cmds::ExportArgs),
    /// Disk usage and the image store's integrity check.
    #[command(subcommand)]
    System(image_cmds::SystemCmd),
    /// Load images from a tar archive (oci-archive or `docker save` output).
    Load(LoadArgs),
    /// Import a root filesystem tarball as a one-layer image.
    Import(ImportArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Download an image from a registry.
    Pull(registry_cmds::PullArgs),
    /// Upload an image to a registry.
    Push(registry_cmds::PushArgs),
    /// Log in to a registry.
    Login(registry_cmds::LoginArgs),
    /// Log out from a registry.
    Logout(registry_cmds::LogoutArgs),
    /// Show the processes of a running container.
    Top {
        container: String,
        /// Options for ps(1) (default `-ef`), as Docker passes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Show containers' resource use.
    Stats {
        #[arg(long)]
        no_stream: bool,
        #[arg(long)]
        format: Option<String>,
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename { container: String, name: String },
    /// Change a container's resource limits.
    Update {
        #[arg(short, long)]
        memory: Option<String>,
        /// Swap limit equal to memory plus swap: -1 for unlimited swap.
        #[arg(long, allow_hyphen_values = true)]
        memory_swap: Option<String>,
        #[arg(long)]
        memory_reservation: Option<String>,
        #[arg(long)]
        cpus: Option<f64>,
        #[arg(short = 'c', long)]
        cpu_shares: Option<u64>,
        #[arg(long)]
        cpu_period: Option<u64>,
        #[arg(long, allow_hyphen_values = true)]
        cpu_quota: Option<i64>,
        #[arg(long)]
        cpuset_cpus: Option<String>,
        #[arg(long)]
        cpuset_mems: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        pids_limit: Option<i64>,
        #[arg(long)]
        blkio_weight: Option<u16>,
        /// Restart policy to apply when a container exits.
        #[arg(long)]
        restart: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Make an image from a container's changes.
    Commit {
        #[arg(short, long)]
        author: Option<String>,
        #[arg(short, long)]
        change: Vec<String>,
        #[arg(short, long)]
        message: Option<String>,
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
        pause: bool,
        container: String,
        reference: Option<String>,
    },
    /// Copy files between a container and the host (CONTAINER:PATH on one side).
    Cp {
        /// Keep owners (archive mode).
        #[arg(short, long)]
        archive: bool,
        /// Accepted for Docker compatibility (the source's own symlinks are copied as links).
        #[arg(short = 'L', long)]
        follow_link: bool,
        src: String,
        dst: String,
    },
    /// Show what happens: container, image, network and volume events.
    Events {
        /// Only events at or after this time (RFC 3339, a unix time, or a duration like 10m).
        #[arg(long)]
        since: Option<String>,
        /// Stop at this time instead of following.
        #[arg(long)]
        until: Option<String>,
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        #[arg(long)]
        format: Option<String>,
    },
    /// Show what a container changed in its root filesystem.
    Diff { container: String },
    /// Show the engine's version.
    Version {
        /// A Go template over the version (`{{.Client.Version}}`), or `json`.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Show system-wide information.
    Info {
        /// A Go template over the information (`{{.Containers}}`), or `json`.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Internal: the per-container monitor process.
    #[command(name = "container-monitor", hide = true)]
    Monitor {
        #[arg(long)]
        attach: bool,
        #[arg(long)]
        stdin: bool,
        id: String,
    },
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume_cmds::VolumeCmd),
    /// Manage networks.
    #[command(subcommand)]
    Network(network_cmds::NetworkCmd),
    /// List a container's published ports.
    Port { container: String, private_port: Option<String> },
    /// Internal: a user network's DNS server.
    #[command(name = "network-dns", hide = true)]
    NetworkDns {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Forward nothing: the network is internal.
        #[arg(long)]
        internal: bool,
        dir: PathBuf,
    },
    /// Manage containers (Docker's `container` group).
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage images (Docker's `image` group).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Build an image from a Dockerfile and a context.
    Build(build_cmds::BuildArgs),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(build_cmds::BuilderCmd),
}

#[derive(Subcommand)]
enum ContainerCmd {
    /// Remove all stopped containers.
    Prune {
        #[arg(short, long)]
        force: bool,
    },
    Ls(PsArgs),
    Export(image_cmds::ExportArgs),
}

#[derive(Subcommand)]
enum ImageCmd {
    Pull(registry_cmds::PullArgs),
    Push(registry_cmds::PushArgs),
    Ls(image_cmds::ImagesArgs),
    History(image_cmds::HistoryArgs),
    Inspect(image_cmds::InspectArgs),
    Save(image_cmds::SaveArgs),
    /// Load images from a tar archive.
    Load(LoadArgs),
    /// Import a root filesystem tarball as a one-layer image.
    Import(ImportArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove unused images (dangling only, or all unused with -a).
    Prune {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Args, Clone)]
struct LoadArgs {
    #[arg(short, long)]
    input: Option<PathBuf>,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct ImportArgs {
    #[arg(short, long)]
    message: Option<String>,
    /// A Dockerfile instruction for the image's config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
    #[arg(short, long)]
    change: Vec<String>,
    file: String,
    reference: Option<String>,
}

#[derive(Args, Clone)]
struct RmiArgs {
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Clone)]
struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args, Clone)]
struct PsArgs {
    #[arg(short, long)]
    all: bool,
    #[arg(short, long)]
    quiet: bool,
    #[arg(short = 'n', long)]
    last: Option<usize>,
    #[arg(short = 'l', long)]
    latest: bool,
    #[arg(long)]
    no_trunc: bool,
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
    #[arg(short, long)]
    size: bool,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Print help (`-h` is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[arg(short, long)]
    detach: bool,
    #[arg(short, long)]
    interactive: bool,
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(long)]
    env_file: Vec<PathBuf>,
    #[arg(short, long)]
    workdir: Option<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    #[arg(short, long = "label")]
    label: Vec<String>,
    #[command(flatten)]
    net: network_cmds::NetArgs,
    #[arg(long)]
    privileged: bool,
    #[arg(long)]
    read_only: bool,
    #[arg(long)]
    cap_add: Vec<String>,
    #[arg(long)]
    cap_drop: Vec<String>,
    #[arg(long)]
    security_opt: Vec<String>,
    /// host (the default), or auto[:size=N]: the container's ids map to a block of host ids
    /// of their own, from the `berth` lines of /etc/subuid and /etc/subgid.
    #[arg(long, default_value = "")]
    userns: String,
    #[arg(short, long)]
    memory: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long)]
    memory_reservation: Option<String>,
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(short = 'c', long)]
    cpu_shares: Option<u64>,
    #[arg(long)]
    cpuset_cpus: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    #[arg(long, allow_hyphen_values = true)]
    oom_score_adj: Option<i32>,
    /// CFS period in microseconds (with --cpu-quota; not with --cpus).
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CFS quota in microseconds per period (-1: none).
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    #[arg(long)]
    cpuset_mems: Option<String>,
    #[arg(long)]
    oom_kill_disable: bool,
    /// Block I/O weight, 10 to 1000.
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// A host device: HOST[:CONTAINER[:PERMS]], PERMS a subset of rwm.
    #[arg(long)]
    device: Vec<String>,
    /// PATH:RATE, RATE in bytes per second with Docker's units (1mb).
    #[arg(long)]
    device_read_bps: Vec<String>,
    #[arg(long)]
    device_write_bps: Vec<String>,
    /// PATH:RATE, RATE in operations per second.
    #[arg(long)]
    device_read_iops: Vec<String>,
    #[arg(long)]
    device_write_iops: Vec<String>,
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    #[arg(long)]
    mount: Vec<String>,
    #[arg(long)]
    volumes_from: Vec<String>,
    #[arg(long)]
    tmpfs: Vec<String>,
    #[arg(long)]
    stop_signal: Option<String>,
    #[arg(long)]
    stop_timeout: Option<u32>,
    #[arg(long)]
    log_driver: Option<String>,
    #[arg(long)]
    log_opt: Vec<String>,
    #[arg(long)]
    ulimit: Vec<String>,
    #[arg(long)]
    sysctl: Vec<String>,
    #[arg(long)]
    shm_size: Option<String>,
    #[arg(long)]
    add_host: Vec<String>,
    #[arg(long)]
    dns: Vec<String>,
    #[arg(long)]
    dns_search: Vec<String>,
    #[arg(long, alias = "dns-opt")]
    dns_option: Vec<String>,
    #[arg(long)]
    label_file: Vec<PathBuf>,
    #[arg(long)]
    restart: Option<String>,
    #[arg(long)]
    init: bool,
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long)]
    health_interval: Option<String>,
    #[arg(long)]
    health_timeout: Option<String>,
    #[arg(long)]
    health_start_period: Option<String>,
    #[arg(long)]
    health_start_interval: Option<String>,
    #[arg(long)]
    health_retries: Option<u32>,
    #[arg(long)]
    no_healthcheck: bool,
    #[arg(long, default_value = "missing")]
    pull: String,
    #[arg(long)]
    platform: Option<String>,
    #[arg(long)]
    cidfile: Option<PathBuf>,
    #[arg(long)]
    detach_keys: Option<String>,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    #[arg(short, long)]
    attach: Vec<String>,
    #[arg(long)]
    runtime: Option<String>,
    /// IMAGE [COMMAND] [ARG...]: everything from the image on belongs to the container, as
    /// Docker reads it (`run busybox ls -c` passes -c to ls).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    argv: Vec<String>,
}

impl RunArgs {
    fn image(&self) -> &str {
        &self.argv[0]
    }

    fn command(&self) -> &[String] {
        &self.argv[1..]
    }
}

/// The monitor's command line as the engine writes it (`--root R --runroot R
/// container-monitor [--attach] [--stdin] ID`), read without clap: a monitor lives as long as
/// its container, and clap's parse of berth's whole command tree left its heap fragmented.
fn monitor_args() -> Option<(PathBuf, PathBuf, String, bool, bool)> {
    let a: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if a.len() < 7 || a[1] != "--root" || a[3] != "--runroot" || a[5] != "container-monitor" {
        return None;
    }
    let (mut attach, mut stdin, mut id) = (false, false, None);
    for x in &a[6..] {
        match x.to_str()? {
            "--attach" => attach = true,
            "--stdin" => stdin = true,
            s if !s.starts_with('-') && id.is_none() => id = Some(s.to_string()),
            _ => return None,
        }
    }
    Some((PathBuf::from(&a[2]), PathBuf::from(&a[4]), id?, attach, stdin))
}

fn main() {
    if let Some((root, runroot, id, attach, stdin)) = monitor_args() {
        // No sealed copy here: the monitor stays in the host's pid namespace, where no
        // container process can reach its /proc/PID/exe, and the container's init (a fork of
        // it) execs the user's program before anything else runs in the new pid namespace.
        // A sealed copy would cost each container a private copy of this binary.
        std::process::exit(berth_engine::monitor::run(&root, &runroot, &id, attach, stdin));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => usage_error(e),
    };
    // Flags end at the image: a flag-like word there is an unknown flag, not an image name.
    if let Cmd::Run(a) | Cmd::Create(a) = &cli.cmd
        && a.image().starts_with('-')
    {
        let cmd = if matches!(cli.cmd, Cmd::Run(_)) { "run" } else { "create" };
        eprintln!("unknown flag: {}\nSee 'berth {cmd} --help'.", a.image());
        std::process::exit(125);
    }
    let default_code = if matches!(cli.cmd, Cmd::Run(_) | Cmd::Create(_)) { 125 } else { 1 };
    if let Cmd::Monitor { attach, stdin, id } = &cli.cmd {
        let (root, runroot) = match cli.dirs() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(125);
            }
        };
        std::process::exit(berth_engine::monitor::run(&root, &runroot, id, *attach, *stdin));
    }
    if let Cmd::NetworkDns { listen, internal, dir } = &cli.cmd {
        std::process::exit(berth_engine::networks::serve_dns(*listen, dir, *internal));
    }
    if matches!(cli.cmd, Cmd::Exec { .. }) {
        // exec joins a running container whose processes could open our /proc/PID/exe while
        // we set up (CVE-2019-5736): run from a sealed copy.
        if let Err(e) = berth_runtime::sealed::ensure_sealed() {
            eprintln!("Error: {e:#}");
            std::process::exit(125);
        }
    }
    // Like other command line tools: a closed pipe (`berth ps | head -1`) ends us quietly.
    // SAFETY: restoring the default disposition before anything else runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let code = match run(cli) {
        Ok(c) => c,
        Err(e) => {
            let code = e.downcast_ref::<ExitError>().map(|x| x.code).unwrap_or(default_code);
            eprintln!("Error: {e:#}");
            code
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("berth needs root for now (rootless mode is not implemented yet); run it with sudo");
    }
    let (root, runroot) = cli.dirs()?;
    let e = Engine::open(&root, &runroot)?;
    match cli.cmd {
        Cmd::Run(a) => cmd_run(&e, a, true),
        Cmd::Create(a) => cmd_run(&e, a, false),
        Cmd::Start { attach, interactive, containers } => {
            // -i attaches too (Docker's start -i is -ai): the input would otherwise go to a
            // container whose output nobody reads.
            let attach = attach || interactive;
            let mut code = 0;
            for c in &containers {
                // Already running: nothing to do, as Docker says (by its name).
                if !attach && e.container(c).is_ok_and(|r| r.is_running()) {
                    println!("{c}");
                    continue;
                }
                let s = e.start_container(
                    c,
                    Attach { stdout: attach, stdin: interactive, skip: [false, false], sig_proxy: true },
                )?;
                if attach {
                    code = s.wait()?;
                } else {
                    println!("{c}");
                }
            }
            Ok(code)
        }
        Cmd::Stop { time, signal, containers } => each(&containers, |c| {
            if let Some(s) = &signal {
                let row = e.container(c)?;
                if row.is_running() {
                    e.kill_container(c, parse_signal(s)?)?;
                    e.wait_stopped(&row.id, time.map(|t| std::time::Duration::from_secs(t as u64)))?;
                }
            }
            e.stop_container(c, time)
        }),
        Cmd::Restart { time, containers } => each(&containers, |c| {
            e.stop_container(c, time)?;
            e.start_container(c, Attach::default()).map(|_| ())
        }),
        Cmd::Kill { signal, containers } => {
            let sig = parse_signal(&signal)?;
            each(&containers, |c| e.kill_container(c, sig).map(|_| ()))
        }
        Cmd::Rm { force, volumes, containers } => {
            if force && containers.len() > 1 {
                e.kill_for_removal(&containers);
            }
            each(&containers, |c| {
                let row = e.container(c)?;
                e.remove_container(c, force)?;
                if volumes {
                    e.remove_anonymous_volumes(&row);
                }
                Ok(())
            })
        }
        Cmd::Ps(a) | Cmd::Container(ContainerCmd::Ls(a)) => cmd_ps(&e, &a),
        Cmd::Logs { follow, timestamps, tail, since, until, container } => {
            let since = since.as_deref().map(|s| parse_time(s, "--since")).transpose()?;
            let until = until.as_deref().map(|s| parse_time(s, "--until")).transpose()?;
            cmd_logs(&e, &container, follow, timestamps, tail.as_deref(), (since, until))
        }
        Cmd::Attach { no_stdin, detach_keys, sig_proxy, container } => {
            e.attach(&container, !no_stdin, detach_keys.as_deref(), sig_proxy)
        }
        Cmd::Wait { containers } => {
            for c in &containers {
                println!("{}", e.wait_container(c)?);
            }
            Ok(0)
        }
        Cmd::Exec { detach, interactive, tty, env, user, workdir, privileged, container, command } => {
            // The process inherits our stdio: stdin only with -i, nothing at all with -d (we
            // are gone while it runs), as Docker keeps them.
            if !tty {
                if detach {
                    null_stdio(&[0, 1, 2])?;
                } else if !interactive {
                    null_stdio(&[0])?;
                }
            }
            if env.is_empty()
                && user.is_none()
                && workdir.is_none()
                && !privileged
                && let Some(code) = e.exec_external(&container, &command, tty, detach)?
            {
                return Ok(code);
            }
            if tty {
                let (pid, master) =
                    e.exec_tty(&container, &command, &env, user.as_deref(), workdir.as_deref(), privileged)?;
                if detach {
                    return Ok(0);
                }
                return berth_engine::containers::attach_pty(master, pid, interactive);
            }
            let pid = e.exec(&container, &command, &env, user.as_deref(), workdir.as_deref(), privileged)?;
            if detach {
                return Ok(0);
            }
            Ok(berth_runtime::container::wait_exit_code(pid)?)
        }
        Cmd::Pause { containers } => each(&containers, |c| e.pause_container(c, true)),
        Cmd::Unpause { containers } => each(&containers, |c| e.pause_container(c, false)),
        Cmd::Inspect { format, kind, names } => cmd_inspect(&e, &names, format.as_deref(), kind.as_deref()),
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => image_cmds::images(&e, &a),
        Cmd::History(a) | Cmd::Image(ImageCmd::History(a)) => image_cmds::history(&e, &a),
        Cmd::Image(ImageCmd::Inspect(a)) => image_cmds::inspect(&e, &a),
        Cmd::Save(a) | Cmd::Image(ImageCmd::Save(a)) => image_cmds::save(&e, &a),
        Cmd::Export(a) | Cmd::Container(ContainerCmd::Export(a)) => image_cmds::export(&e, &a),
        Cmd::System(image_cmds::SystemCmd::Prune { all, volumes, force }) => {
            let mut what = vec![
                "all stopped containers",
                "all networks not used by at least one container",
                if volumes { "all anonymous volumes not used by at least one container" } else { "" },
                if all {
                    "all images without at least one container associated to them"
                } else {
                    "all dangling images"
                },
                "unused build cache",
            ];
            what.retain(|w| !w.is_empty());
            let list: String = what.iter().map(|w| format!("\n  - {w}")).collect();
            if !confirmed(force, &format!("WARNING! This will remove:{list}\n")) {
                return Ok(0);
            }
            let mut sections: Vec<(&str, Vec<String>)> =
                vec![("Deleted Containers:", e.prune_containers(false)?.0), ("Deleted Networks:", e.prune_networks()?)];
            if volumes {
                sections.push(("Deleted Volumes:", e.prune_volumes(false)?.0));
            }
            sections.push(("Deleted build cache objects:", e.prune_build_cache()?.images));
            sections.push(("Deleted Images:", e.prune_images(all)?.0));
            for (title, items) in sections.into_iter().filter(|(_, v)| !v.is_empty()) {
                println!("{title}");
                items.iter().for_each(|i| println!("{i}"));
                println!();
            }
            Ok(0)
        }
        Cmd::System(s) => image_cmds::system(&e, s),
        Cmd::Image(ImageCmd::Prune { all, force }) => {
            let what = if all {
                "all images without at least one container associated to them"
            } else {
                "all dangling images"
            };
            if !confirmed(force, &format!("WARNING! This will remove {what}.")) {
                return Ok(0);
            }
            // Docker's report: the removed references and ids, then the space given back.
            let (lines, reclaimed) = e.prune_images(all)?;
            if !lines.is_empty() {
                println!("Deleted Images:");
                for l in &lines {
                    match l.split_once(": ") {
                        Some((what, x)) => println!("{}: {x}", what.to_lowercase()),
                        None => println!("{l}"),
                    }
                }
                println!();
            }
            println!("Total reclaimed space: {}", image_cmds::human_size(reclaimed));
            Ok(0)
        }
        Cmd::Load(LoadArgs { input, quiet }) | Cmd::Image(ImageCmd::Load(LoadArgs { input, quiet })) => {
            let lines = match input {
                Some(p) => e.load(std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?)?,
                None => e.load(std::io::stdin().lock())?,
            };
            if !quiet {
                for l in lines {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        Cmd::Import(ImportArgs { message, change, file, reference })
        | Cmd::Image(ImageCmd::Import(ImportArgs { message, change, file, reference })) => {
            let note = message.unwrap_or_default();
            let id = if file == "-" {
                e.import(std::io::stdin().lock(), reference.as_deref(), &note, &change)?
            } else {
                e.import(
                    std::fs::File::open(&file).with_context(|| format!("opening {file}"))?,
                    reference.as_deref(),
                    &note,
                    &change,
                )?
            };
            println!("{id}");
            Ok(0)
        }
        Cmd::Rmi(RmiArgs { force, images }) | Cmd::Image(ImageCmd::Rm(RmiArgs { force, images })) => {
            let mut code = 0;
            for i in &images {
                match e.remove_image(i, force) {
                    Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                    Err(err) if images.len() == 1 => return Err(err),
                    Err(err) => {
                        eprintln!("Error: {err:#}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Cmd::Tag(TagArgs { source, target }) | Cmd::Image(ImageCmd::Tag(TagArgs { source, target })) => {
            e.tag(&source, &target).map(|_| 0)
        }
        Cmd::Pull(a) | Cmd::Image(ImageCmd::Pull(a)) => registry_cmds::pull(&e, a),
        Cmd::Push(a) | Cmd::Image(ImageCmd::Push(a)) => registry_cmds::push(&e, a),
        Cmd::Login(a) => registry_cmds::login(a),
        Cmd::Logout(a) => registry_cmds::logout(a),
        Cmd::Top { container, ps_args } => {
            // As Docker: the host's ps with the given options, the container's processes kept.
            let pids: Vec<i32> = e.top(&container)?.iter().map(|p| p.pid).collect();
            let (header, lines) = berth_runtime::process::host_ps(&ps_args, &pids)?;
            let heads: Vec<&str> = header.split_whitespace().collect();
            // The last column (CMD/COMMAND) may hold spaces: split the others off.
            let split = |l: &str| -> Vec<String> {
                let mut f: Vec<String> = Vec::new();
                let mut rest = l.trim_start();
                while f.len() + 1 < heads.len() {
                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    f.push(rest[..end].to_string());
                    rest = rest[end..].trim_start();
                }
                f.push(rest.to_string());
                f
            };
            let mut rows = vec![heads.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
            rows.extend(lines.iter().map(|l| split(l)));
            print_table(&rows);
            Ok(0)
        }
        Cmd::Stats { no_stream, format, containers } => cmd_stats(&e, &containers, no_stream, format.as_deref()),
        Cmd::Rename { container, name } => e.rename(&container, &name).map(|_| 0),
        Cmd::Update {
            memory,
            memory_swap,
            memory_reservation,
            cpus,
            cpu_shares,
            cpu_period,
            cpu_quota,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
            blkio_weight,
            restart,
            containers,
        } => {
            let size = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
                v.as_deref()
                    .map(|s| if s == "-1" { Ok(-1) } else { parse_size(s).with_context(|| format!("{flag} {s:?}")) })
                    .transpose()
            };
            let u = berth_engine::inspect::UpdateRequest {
                memory: size("--memory", &memory)?,
                memory_swap: size("--memory-swap", &memory_swap)?,
                memory_reservation: size("--memory-reservation", &memory_reservation)?,
                cpus,
                cpu_shares,
                cpu_period,
                cpu_quota,
                cpuset_cpus,
                cpuset_mems,
                pids_limit,
                blkio_weight,
                restart,
            };
            each(&containers, |c| e.update(c, &u))
        }
        Cmd::Diff { container } => {
            for ch in e.diff(&container)? {
                println!("{} {}", ch.kind, ch.path);
            }
            Ok(0)
        }
        Cmd::Version { format } => {
            let arch = berth_image::Platform::host().architecture;
            let v = json!({"Client": {
                "Version": env!("CARGO_PKG_VERSION"),
                "Os": "linux",
                "Arch": arch,
                "Runtime": "berth-runtime",
            }});
            if let Some(f) = format {
                return print_one(&v, &f);
            }
            // Daemonless: one part, as podman prints it.
            println!(
                "Client:\n Version:           {}\n OS/Arch:           linux/{arch}\n Runtime:           berth-runtime (built in)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(0)
        }
        Cmd::Info { format } => {
            let info = e.info()?;
            if let Some(f) = format {
                return print_one(&info, &f);
            }
            println!(
                "Containers: {}\n Running: {}\n Paused: {}\n Stopped: {}\nImages: {}\nServer Version: {}\nStorage Driver: overlay\nCgroup Version: {}\nDefault Runtime: berth-runtime\nKernel Version: {}\nOperating System: {}\nOSType: linux\nArchitecture: {}\nCPUs: {}\nTotal Memory: {}\nName: {}\nBerth Root Dir: {}\nBerth Run Dir: {}",
                info["Containers"],
                info["ContainersRunning"],
                info["ContainersPaused"],
                info["ContainersStopped"],
                info["Images"],
                env!("CARGO_PKG_VERSION"),
                info["CgroupVersion"].as_str().unwrap_or(""),
                info["KernelVersion"].as_str().unwrap_or(""),
                info["OperatingSystem"].as_str().unwrap_or(""),
                info["Architecture"].as_str().unwrap_or(""),
                info["NCPU"],
                bytes_binary(info["MemTotal"].as_u64().unwrap_or(0)),
                info["Name"].as_str().unwrap_or(""),
                e.root.display(),
                e.runroot.display()
            );
            Ok(0)
        }
        Cmd::Container(ContainerCmd::Prune { force }) => {
            if !confirmed(force, "WARNING! This will remove all stopped containers.") {
                return Ok(0);
            }
            let (gone, bytes) = e.prune_containers(true)?;
            if !gone.is_empty() {
                println!("Deleted Containers:");
                gone.iter().for_each(|id| println!("{id}"));
                println!();
            }
            println!("Total reclaimed space: {}", image_cmds::human_size(bytes));
            Ok(0)
        }
        Cmd::Commit { author, change, message, pause, container, reference } => {
            let id = e.commit(
                &container,
                &berth_engine::commit::CommitOptions {
                    reference,
                    message: message.unwrap_or_default(),
                    author: author.unwrap_or_default(),
                    changes: change,
                    pause,
                },
            )?;
            println!("{id}");
            Ok(0)
        }
        Cmd::Cp { archive, follow_link, src, dst } => {
            use berth_engine::copy::{Location, parse_location};
            // `-` is a tar stream: stdout as the destination, stdin as the source.
            match (src.as_str(), dst.as_str(), parse_location(&src), parse_location(&dst)) {
                (_, "-", Location::Container(c, p), _) => {
                    let out = std::io::stdout().lock();
                    e.copy_to_stream(&c, &p, follow_link, std::io::BufWriter::new(out))?
                }
                ("-", _, _, Location::Container(c, p)) => e.copy_from_stream(std::io::stdin().lock(), &c, &p)?,
                (_, _, s, d) => e.copy_following(&s, &d, archive, follow_link)?,
            }
            Ok(0)
        }
        Cmd::Events { since, until, filter, format } => cmd_events(&e, since, until, &filter, format),
        Cmd::Network(n) => network_cmds::network(&e, n),
        Cmd::Volume(v) => volume_cmds::volume(&e, v),
        Cmd::Port { container, private_port } => network_cmds::port(&e, &container, private_port.as_deref()),
        Cmd::Build(a) => build_cmds::build(&e, a),
        Cmd::Builder(b) => build_cmds::builder(&e, b),
        Cmd::Monitor { .. } | Cmd::NetworkDns { .. } => unreachable!("handled before the engine opens"),
    }
}

fn cmd_events(
    e: &Engine,
    since: Option<String>,
    until: Option<String>,
    filters: &[String],
    format: Option<String>,
) -> Result<i32> {
    let mut q = berth_engine::events::Query {
        since: since.as_deref().map(|s| parse_time(s, "--since")).transpose()?,
        until: until.as_deref().map(|s| parse_time(s, "--until")).transpose()?,
        ..Default::default()
    };
    for f in filters {
        let (k, v) = f.split_once('=').with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
        if !matches!(k, "type" | "event" | "action" | "container" | "image" | "network" | "volume" | "label") {
            bail!("invalid filter '{k}'");
        }
        q.filters.entry(k.to_string()).or_default().push(v.to_string());
    }
    let t = format.as_deref().filter(|f| *f != "json").map(Template::parse);
    let json = format.as_deref() == Some("json");
    let mut out = std::io::stdout();
    berth_engine::events::read(&e.runroot, &q, |ev| {
        let v = serde_json::to_value(ev).unwrap_or_default();
        let line = match (&t, json) {
            (Some(t), _) => t.render(&v),
            (None, true) => v.to_string(),
            (None, false) => berth_engine::events::text(ev),
        };
        writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
    })?;
    Ok(0)
}

/// Docker's times for --since/--until: RFC 3339, unix seconds (with a fraction), or a
/// duration before now (`10m`, `1h30m`). Returns unix nanoseconds.
fn parse_time(s: &str, flag: &str) -> Result<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e9) as i64);
    }
    if let Ok(d) = parse_duration(s) {
        return Ok(berth_engine::db::now_nanos() - d);
    }
    berth_engine::describe::parse_rfc3339(s)
        .with_context(|| format!("invalid value {s:?} for {flag}: use RFC 3339, a unix time or a duration such as 10m"))
}

/// Runs `f` for each name, printing the name on success as Docker does; the exit code is 1 if
/// any failed.
/// A command line that does not parse: Docker's words for an unknown flag, and its exit code
/// (125: the engine was never reached); help and version go to stdout with 0.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        std::process::exit(0);
    }
    // The subcommand, for "See 'berth CMD --help'".
    let words: Vec<String> = std::env::args().skip(1).collect();
    let sub = words.iter().find(|w| !w.starts_with('-')).cloned().unwrap_or_default();
    let see = if sub.is_empty() { "berth --help".to_string() } else { format!("berth {sub} --help") };
    match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) if arg.starts_with('-') => {
            let flag = arg.split('=').next().unwrap_or(arg);
            eprintln!("unknown flag: {flag}\nSee '{see}'.");
        }
        _ => eprint!("{e}"),
    }
    std::process::exit(125);
}

/// Docker's question before a prune: yes with -f, else what the user answers on stdin (an
/// empty answer or none at all is no).
pub(crate) fn confirmed(force: bool, warning: &str) -> bool {
    if force {
        return true;
    }
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

/// Points the given stdio fds of ours at /dev/null.
fn null_stdio(fds: &[i32]) -> Result<()> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    for fd in fds {
        // SAFETY: dup2 of an fd we hold onto one of our stdio numbers.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), *fd) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut code = 0;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                if names.len() == 1 {
                    return Err(e);
                }
                eprintln!("Error: {e:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `-a/--attach` values as (stdin, stdout, stderr); None when not given (all output).
fn attach_streams(names: &[String]) -> Result<Option<(bool, bool, bool)>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut s = (false, false, false);
    for n in names {
        match n.to_ascii_lowercase().as_str() {
            "stdin" => s.0 = true,
            "stdout" => s.1 = true,
            "stderr" => s.2 = true,
            _ => bail!("invalid argument {n:?} for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"),
        }
    }
    Ok(Some(s))
}

fn throttles(flag: &str, specs: &[String]) -> Result<Vec<berth_engine::resources::Throttle>> {
    specs.iter().map(|s| berth_engine::resources::parse_throttle(flag, s)).collect()
}

fn cmd_run(e: &Engine, a: RunArgs, start: bool) -> Result<i32> {
    if !matches!(a.pull.as_str(), "missing" | "never" | "always") {
        bail!("invalid --pull {:?}: use missing, always or never", a.pull);
    }
    if let Some(p) = &a.platform {
        let want = berth_image::Platform::parse(p)?;
        if !berth_image::Platform::host().matches(&want) {
            bail!(
                "--platform {p}: this machine runs {} and berth does not emulate other platforms",
                berth_image::Platform::host()
            );
        }
    }
    if a.detach && !a.attach.is_empty() {
        bail!("Conflicting options: -a and -d");
    }
    attach_streams(&a.attach)?;
    let mut c = ContainerConfig {
        image_ref: a.image().to_string(),
        tty: a.tty,
        interactive: a.interactive,
        auto_remove: a.rm,
        privileged: a.privileged,
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        cpus: a.cpus,
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus.clone(),
        pids_limit: a.pids_limit,
        oom_score_adj: a.oom_score_adj,
        cpu_period: a.cpu_period,
        cpu_quota: a.cpu_quota,
        cpuset_mems: a.cpuset_mems.clone(),
        oom_kill_disable: a.oom_kill_disable,
        blkio_weight: a.blkio_weight,
        devices: a.device.iter().map(|d| berth_engine::resources::parse_device(d)).collect::<Result<_>>()?,
        device_read_bps: throttles("--device-read-bps", &a.device_read_bps)?,
        device_write_bps: throttles("--device-write-bps", &a.device_write_bps)?,
        device_read_iops: throttles("--device-read-iops", &a.device_read_iops)?,
        device_write_iops: throttles("--device-write-iops", &a.device_write_iops)?,
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_timeout: a.stop_timeout,
        log_driver: a.log_driver.clone().unwrap_or_default(),
        add_hosts: a.add_host.clone(),
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_option.clone(),
        restart: a.restart.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(s) = &c.stop_signal.clone().into()
        && !s.is_empty()
    {
        parse_signal(s)?;
    }
    a.net.apply(&mut c)?;
    let size = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| {
                parse_size(s)
                    .map_err(|_| anyhow::anyhow!("invalid argument {s:?} for \"{flag}\" flag: invalid size: '{s}'"))
            })
            .transpose()
    };
    c.memory = size("--memory", &a.memory)?;
    c.memory_swap = size("--memory-swap", &a.memory_swap)?;
    c.memory_reservation = size("--memory-reservation", &a.memory_reservation)?;
    c.shm_size = size("--shm-size", &a.shm_size)?;
    use berth_engine::options;
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("open {}: no such file or directory", f.display()))?;
        c.env.extend(options::file_lines(&text).map(expand_env));
    }
    c.env.extend(a.env.iter().map(|v| expand_env(v)));
    // --label-file: one label per line (comments and blank lines skipped); -l wins.
    for f in &a.label_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("open {}: no such file or directory", f.display()))?;
        c.labels.extend(options::file_lines(&text).map(options::parse_label));
    }
    c.labels.extend(a.label.iter().map(|l| options::parse_label(l)));
    c.sysctls = a.sysctl.iter().map(|s| options::parse_sysctl(s)).collect::<Result<_>>()?;
    c.ulimits = a.ulimit.iter().map(|u| options::parse_ulimit(u)).collect::<Result<_>>()?;
    options::apply_log_opts(&mut c, &a.log_opt)?;
    c.userns_mode = a.userns.clone();
    options::apply_security_opts(&mut c, &a.security_opt)?;
    for t in &a.tmpfs {
        let (p, o) = t.split_once(':').unwrap_or((t, ""));
        c.tmpfs.push((p.into(), o.into()));
    }
    for v in &a.volume {
        c.binds.push(options::parse_volume(v)?);
    }
    for m in &a.mount {
        match options::parse_mount(m)? {
            options::Mount::Bind(b) => c.binds.push(b),
            options::Mount::Tmpfs(d, o) => c.tmpfs.push((d, o)),
        }
    }
    options::check_mount_points(&c)?;
    c.volumes_from = a.volumes_from.clone();
    c.init = a.init;
    c.runtime = a.runtime.clone().unwrap_or_default();
    if let Some(k) = &a.detach_keys {
        berth_engine::containers::DetachKeys::new(k)?;
        c.detach_keys = k.clone();
    }
    c.healthcheck = health_flags(&a)?;
    let req = CreateRequest {
        image: a.image().to_string(),
        name: a.name.clone(),
        cmd: a.command().to_vec(),
        entrypoint: a.entrypoint.clone(),
        config: c,
    };
    // As Docker: an existing (non-empty) cidfile stops the run before anything is created.
    if let Some(f) = &a.cidfile
        && std::fs::metadata(f).is_ok_and(|m| m.len() > 0)
    {
        bail!("Container ID file found, make sure the other container isn't running or delete {}", f.display());
    }
    registry_cmds::ensure_image(e, a.image(), &a.pull, a.platform.as_deref())?;
    let id = e.create_container(req)?;
    if let Some(f) = &a.cidfile
        && let Err(err) = std::fs::write(f, &id)
    {
        let _ = e.remove_container(&id, true);
        return Err(err).with_context(|| format!("writing --cidfile {}", f.display()));
    }
    if !start {
        println!("{id}");
        return Ok(0);
    }
    let attach = !a.detach;
    let streams = attach_streams(&a.attach)?;
    let skip = streams.map_or([false, false], |(_, out, err)| [!out, !err]);
    let stdin = a.interactive || streams.is_some_and(|(i, ..)| i);
    let s = e.start_container(&id, Attach { stdout: attach, stdin, skip, sig_proxy: a.sig_proxy })?;
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    s.wait()
}

/// The `--health-*` flags (each replaces one field of the image's healthcheck).
fn health_flags(a: &RunArgs) -> Result<Option<berth_engine::health::Healthcheck>> {
    let dur = |flag: &str, v: &Option<String>| -> Result<i64> {
        v.as_deref()
            .map(|s| {
                parse_duration(s).map_err(|_| {
                    anyhow::anyhow!("invalid argument {s:?} for \"--{flag}\" flag: time: invalid duration {s:?}")
                })
            })
            .transpose()
            .map(|d| d.unwrap_or(0))
    };
    if a.no_healthcheck {
        if a.health_cmd.is_some() {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(berth_engine::health::Healthcheck { test: vec!["NONE".into()], ..Default::default() }));
    }
    let h = berth_engine::health::Healthcheck {
        test: a
            .health_cmd
            .iter()
            .map(|c| ["CMD-SHELL".to_string(), c.clone()])
            .next()
            .map(Vec::from)
            .unwrap_or_default(),
        interval: dur("health-interval", &a.health_interval)?,
        timeout: dur("health-timeout", &a.health_timeout)?,
        start_period: dur("health-start-period", &a.health_start_period)?,
        start_interval: dur("health-start-interval", &a.health_start_interval)?,
        retries: a.health_retries.unwrap_or(0),
    };
    Ok((h != Default::default()).then_some(h))
}

/// Go's durations: `1m30s`, `500ms`, `2h`, `1.5s` -> nanoseconds.
fn parse_duration(s: &str) -> Result<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => bail!("unknown unit {u:?}"),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(total as i64)
}

/// `-e NAME` takes NAME's value from our environment, as Docker does.
fn expand_env(v: &str) -> String {
    if v.contains('=') { v.to_string() } else { format!("{v}={}", std::env::var(v).unwrap_or_default()) }
}

fn ps_value(e: &Engine, c: &ContainerRow, no_trunc: bool) -> Value {
    let mut cmd = c.config.args.join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = format!("{}…", cmd.chars().take(19).collect::<String>());
    }
    json!({
        "ID": if no_trunc { c.id.clone() } else { c.id[..12].to_string() },
        "Image": c.config.image_ref,
        "Command": format!("\"{cmd}\""),
        "CreatedAt": berth_runtime::state::rfc3339(c.created / 1_000_000_000, (c.created % 1_000_000_000) as u32),
        "RunningFor": berth_engine::describe::ago(c.created),
        "Status": berth_engine::describe::status_text(c),
        "State": c.state,
        "Ports": network_cmds::ports_text(e, c),
        "Names": c.name,
        "Labels": c.config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Size": "",
        "Networks": network_cmds::networks_text(e, c),
    })
}

fn cmd_ps(e: &Engine, a: &PsArgs) -> Result<i32> {
    let filter = berth_engine::describe::ContainerFilter::parse(&a.filter)?;
    let mut list = e.list_containers(a.all || a.last.is_some() || a.latest || !filter.is_empty(), &filter)?;
    if a.latest {
        list.truncate(1);
    }
    if let Some(n) = a.last {
        list.truncate(n);
    }
    if a.quiet {
        for c in &list {
            println!("{}", if a.no_trunc { &c.id[..] } else { &c.id[..12] });
        }
        return Ok(0);
    }
    let header: BTreeMap<&str, &str> = [
        ("ID", "CONTAINER ID"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Status", "STATUS"),
        ("State", "STATE"),
        ("Ports", "PORTS"),
        ("Names", "NAMES"),
        ("Labels", "LABELS"),
        ("Networks", "NETWORKS"),
        ("Size", "SIZE"),
    ]
    .into_iter()
    .collect();
    let default_fmt = if a.size {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
    } else {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    };
    let fmt = a.format.clone().unwrap_or_else(|| default_fmt.into());
    // -s (or a format that asks for .Size): the container's own files, and with its image's.
    let sized = a.size || fmt.contains(".Size");
    let value = |c: &ContainerRow| {
        let mut v = ps_value(e, c, a.no_trunc);
        if sized {
            let own = e.container_changes_size(&c.id);
            let image = e.resolve_image(&c.image).map(|i| i.size).unwrap_or(0).max(0) as u64;
            v["Size"] = json!(format!("{} (virtual {})", human_size(own as i64), human_size((own + image) as i64)));
        }
        v
    };
    if fmt == "json" {
        for c in &list {
            println!("{}", value(c));
        }
        return Ok(0);
    }
    let t = Template::parse(if fmt == "table" { default_fmt } else { &fmt });
    let mut lines = Vec::new();
    if t.table {
        lines.push(t.header(&|f| header.get(f).map(|s| s.to_string()).unwrap_or_else(|| f.to_uppercase())));
    }
    for c in &list {
        lines.push(t.render(&value(c)));
    }
    if t.table {
        print_tabbed(&lines);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(0)
}

fn cmd_stats(e: &Engine, names: &[String], no_stream: bool, format: Option<&str>) -> Result<i32> {
    let all = names.is_empty();
    let t = Template::parse(format.unwrap_or(
        "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}",
    ));
    let header: BTreeMap<&str, &str> = [
        ("ID", "CONTAINER ID"),
        ("Name", "NAME"),
        ("CPUPerc", "CPU %"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("NetIO", "NET I/O"),
        ("BlockIO", "BLOCK I/O"),
        ("PIDs", "PIDS"),
    ]
    .into_iter()
    .collect();
    let list = |e: &Engine| -> Result<Vec<String>> {
        Ok(if all { e.containers(false)?.into_iter().map(|c| c.id).collect() } else { names.to_vec() })
    };
    // CPU % is the share of one sample interval: 200 ms for one table, 1 s when streaming.
    let mut before: BTreeMap<String, u64> =
        list(e)?.iter().filter_map(|n| e.stats(n).ok().map(|(c, s)| (c.id, s.cpu_usage_ns))).collect();
    let mut t0 = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        std::thread::sleep(std::time::Duration::from_millis(if no_stream { 200 } else { 1000 }));
        let mut lines = vec![];
        if t.table {
            lines.push(t.header(&|f| header.get(f).map(|s| s.to_string()).unwrap_or_else(|| f.to_uppercase())));
        }
        let elapsed = t0.elapsed().as_nanos().max(1) as f64;
        t0 = std::time::Instant::now();
        let mut now = BTreeMap::new();
        for n in list(e)? {
            let (c, s) = match e.stats(&n) {
                Ok(x) => x,
                Err(err) if all => {
                    let _ = err;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let cpu = match before.get(&c.id) {
                Some(b) => s.cpu_usage_ns.saturating_sub(*b) as f64 / elapsed * 100.0,
                None => 0.0,
            };
            now.insert(c.id.clone(), s.cpu_usage_ns);
            let (used, limit) = (s.memory_used, s.memory_limit);
            let (rx, tx) = (s.net_rx, s.net_tx);
            let v = json!({
                "ID": &c.id[..12],
                "Container": &c.id[..12],
                "Name": c.name,
                "CPUPerc": format!("{cpu:.2}%"),
                "MemUsage": format!("{} / {}", bytes_binary(used), bytes_binary(limit)),
                "MemPerc": format!("{:.2}%", used as f64 / limit.max(1) as f64 * 100.0),
                "NetIO": format!("{} / {}", human_size(rx as i64), human_size(tx as i64)),
                "BlockIO": format!("{} / {}", human_size(s.io_read_bytes as i64), human_size(s.io_write_bytes as i64)),
                "PIDs": s.pids.to_string(),
            });
            lines.push(t.render(&v));
        }
        before = now;
        let mut out = std::io::stdout().lock();
        if !no_stream && tty {
            // Redraw in place, as Docker does on a terminal.
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        if t.table {
            print_tabbed(&lines);
        } else {
            lines.iter().for_each(|l| println!("{l}"));
        }
        if out.flush().is_err() || no_stream {
            return Ok(0);
        }
    }
}

/// `info -f`/`version -f`: `json`, or a Go template over one value.
fn print_one(v: &Value, format: &str) -> Result<i32> {
    template::print_inspected(std::slice::from_ref(v), Some(if format == "json" { "{{json .}}" } else { format }))
        .map(|_| 0)
}

/// Docker's binary sizes with four significant digits: `344KiB`, `1.512MiB`, `32MiB`.
fn bytes_binary(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    let digits = if v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{}", units[i])
}

fn human_size(b: i64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.3}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.3}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.3}kB", b / 1e3)
    } else {
        format!("{b}B")
    }
    .replace(".000", "")
}

fn cmd_logs(
    e: &Engine,
    key: &str,
    follow: bool,
    timestamps: bool,
    tail: Option<&str>,
    (since, until): (Option<i64>, Option<i64>),
) -> Result<i32> {
    let tail = match tail {
        None | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().with_context(|| format!("invalid --tail {n:?}"))?),
    };
    let window = berth_engine::logs::Window { since, until, tail };
    e.container_logs(key, window, follow, &mut |en| {
        let line = if timestamps { format!("{} {}", en.time, en.log) } else { en.log.clone() };
        if en.stream == "stderr" {
            eprint!("{line}");
            true
        } else {
            let mut out = std::io::stdout().lock();
            // A reader that went away (`logs -f | head`) ends the follow.
            out.write_all(line.as_bytes()).and_then(|_| out.flush()).is_ok()
        }
    })?;
    Ok(0)
}

fn cmd_inspect(e: &Engine, names: &[String], format: Option<&str>, kind: Option<&str>) -> Result<i32> {
    let mut out = Vec::new();
    for n in names {
        let v = if kind != Some("image")
            && let Ok(c) = e.container(n)
        {
            e.inspect_container(&c)
        } else if kind != Some("container")
            && let Ok(img) = e.resolve_image(n)
        {
            e.inspect_image(&img)?
        } else {
            return Err(ExitError { code: 1, msg: format!("No such object: {n}") }.into());
        };
        out.push(v);
    }
    template::print_inspected(&out, format)?;
    Ok(0)
}
