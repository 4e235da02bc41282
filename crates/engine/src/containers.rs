//! Containers: create, start (through the monitor), stop, kill, pause, remove, list, wait,
//! exec, and the repair of what a killed berth process left.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_runtime::tty::{RawMode, write_all};
use berth_storage::RootFs;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{Engine, ExitError, db, names};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
    #[serde(default)]
    pub propagation: Option<String>,
    /// A volume's name (the source is then its `_data`); empty at request time for an
    /// anonymous volume.
    #[serde(default)]
    pub volume: Option<String>,
    /// `volume-nocopy`: an empty volume does not get the image's files.
    #[serde(default)]
    pub nocopy: bool,
    /// `volume-opt`s for a volume that `--mount` creates.
    #[serde(default)]
    pub volume_options: BTreeMap<String, String>,
}

/// What a container was created with, after the image's defaults were applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    pub image_ref: String,
    pub args: Vec<String>,
    /// How many of `args` are the entrypoint (the rest is the command); None for containers
    /// made before it was recorded (all of `args` counts as the command).
    pub entrypoint_len: Option<usize>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub tty: bool,
    pub interactive: bool,
    pub auto_remove: bool,
    pub network: String,
    pub privileged: bool,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    /// `--security-opt apparmor=PROFILE` (not `unconfined`).
    pub apparmor_profile: Option<String>,
    /// `--security-opt label=...`, composed into an SELinux process label.
    pub selinux_label: Option<String>,
    /// `--userns auto`: the host ids the container's ids map to (None: the host's own ids).
    pub userns: Option<berth_storage::Shift>,
    /// `--userns` as given, resolved into `userns` at create.
    #[serde(skip)]
    pub userns_mode: String,
    /// `--security-opt seccomp=`: empty for the default profile, `unconfined`, or a file's profile (resolved at create).
    pub seccomp: String,
    pub seccomp_profile: Option<serde_json::Value>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub oom_score_adj: Option<i32>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpuset_mems: Option<String>,
    pub oom_kill_disable: bool,
    pub blkio_weight: Option<u16>,
    pub devices: Vec<crate::resources::DeviceNode>,
    pub device_read_bps: Vec<crate::resources::Throttle>,
    pub device_write_bps: Vec<crate::resources::Throttle>,
    pub device_read_iops: Vec<crate::resources::Throttle>,
    pub device_write_iops: Vec<crate::resources::Throttle>,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<(String, String)>,
    pub stop_signal: String,
    pub stop_timeout: Option<u32>,
    pub log_driver: String,
    pub log_max_size: Option<u64>,
    pub log_max_file: u32,
    pub ulimits: Vec<(String, u64, u64)>,
    pub sysctls: BTreeMap<String, String>,
    pub shm_size: Option<i64>,
    pub add_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub restart: String,
    /// `--network NAME` (several allowed) with their `--ip`, `--mac-address`, `--network-alias`;
    /// `network` then holds the first one's name. Empty for none/host/container:/ns: modes.
    pub networks: Vec<crate::networks::NetRequest>,
    /// `-p`, and with `-P` every exposed port (image EXPOSE and `--expose`) to a free host port.
    pub ports: Vec<crate::networks::PortSpec>,
    /// Exposed ports as `80/tcp`.
    pub exposed: Vec<String>,
    pub publish_all: bool,
    /// `--volumes-from C[:ro|rw]` (resolved into `binds` at create).
    pub volumes_from: Vec<String>,
    /// `--init`: berth-init runs as PID 1 and starts the command.
    pub init: bool,
    /// The image's HEALTHCHECK with the `--health-*` flags over it; `Test: ["NONE"]` for
    /// `--no-healthcheck`.
    pub healthcheck: Option<crate::health::Healthcheck>,
    /// `--detach-keys` (Docker's form, e.g. `ctrl-p,ctrl-q`); empty for the default.
    pub detach_keys: String,
    /// `--runtime`: another OCI runtime binary (name in PATH or path); empty for the built-in one.
    pub runtime: String,
}

impl ContainerConfig {
    /// (entrypoint, command), as Docker shows and commits them.
    pub fn entrypoint_and_cmd(&self) -> (&[String], &[String]) {
        self.args.split_at(self.entrypoint_len.unwrap_or(0).min(self.args.len()))
    }
}

/// What `create` is asked for: the image and the user's overrides of its defaults.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub image: String,
    pub name: Option<String>,
    /// Command after the image name; empty means the image's CMD.
    pub cmd: Vec<String>,
    pub entrypoint: Option<String>,
    pub config: ContainerConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub image: String,
    pub config: ContainerConfig,
    pub created: i64,
    pub state: String,
    pub pid: i32,
    pub monitor_pid: i32,
    pub monitor_start: u64,
    pub exit_code: i32,
    pub started: i64,
    pub finished: i64,
    pub oom_killed: bool,
    pub error: String,
    pub restart_count: i64,
    pub dir: PathBuf,
}

const COLUMNS: &str = "id, name, image, config, created, state, pid, monitor_pid, monitor_start, exit_code, started, finished, oom_killed, error, restart_count";

fn row(r: &rusqlite::Row) -> rusqlite::Result<ContainerRow> {
    let cfg: String = r.get(3)?;
    Ok(ContainerRow {
        id: r.get(0)?,
        name: r.get(1)?,
        image: r.get(2)?,
        config: serde_json::from_str(&cfg).unwrap_or_default(),
        created: r.get(4)?,
        state: r.get(5)?,
        pid: r.get(6)?,
        monitor_pid: r.get(7)?,
        monitor_start: r.get::<_, i64>(8)? as u64,
        exit_code: r.get(9)?,
        started: r.get(10)?,
        finished: r.get(11)?,
        oom_killed: r.get::<_, i64>(12)? != 0,
        error: r.get(13)?,
        restart_count: r.get(14)?,
        dir: PathBuf::new(),
    })
}

impl ContainerRow {
    pub fn is_running(&self) -> bool {
        self.state == "running" || self.state == "paused"
    }

    /// Where the engine keeps this container's files (set when the row is read).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }

    /// Running, paused, restarting, or being started: a monitor owns it.
    pub fn busy(&self) -> bool {
        self.is_running() || (self.monitor_pid != 0 && self.monitor_alive())
    }

    pub fn monitor_alive(&self) -> bool {
        self.monitor_pid > 0 && berth_runtime::state::pid_alive(self.monitor_pid, self.monitor_start)
    }
}

/// How `start` connects the caller to the container.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attach {
    pub stdout: bool,
    pub stdin: bool,
    /// With `stdout`: streams left out (`-a stdout` leaves out stderr), [stdout, stderr].
    pub skip: [bool; 2],
    /// With `stdout`: forward our signals to the container (`--sig-proxy`). The handlers go
    /// in before the monitor starts, so that a signal that comes as soon as the container
    /// runs is forwarded, not taken by us.
    pub sig_proxy: bool,
}

/// A started container; for an attached start, `wait` returns its exit code.
pub struct Started {
    pub pid: i32,
    monitor: i32,
    tty: bool,
    status: BufReader<std::fs::File>,
    signals: Option<SignalPipe>,
}

impl Started {
    /// Waits for the monitor to report the exit. Forwards our signals to the container
    /// meanwhile (`Attach::sig_proxy`), and window size changes to the monitor.
    pub fn wait(mut self) -> Result<i32> {
        let sigs = self.signals.take();
        let _raw = if self.tty { Some(RawMode::enter()) } else { None };
        loop {
            if let Some(s) = &sigs {
                let mut fds = [
                    libc::pollfd { fd: self.status.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 },
                    libc::pollfd { fd: s.read.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                ];
                // SAFETY: poll on two fds we hold.
                unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                if fds[1].revents & libc::POLLIN != 0 {
                    for sig in s.drain() {
                        // SAFETY: kill(2). The monitor re-reads our window size on SIGWINCH.
                        unsafe { libc::kill(if sig == libc::SIGWINCH { self.monitor } else { self.pid }, sig) };
                    }
                }
                if fds[0].revents == 0 && self.status.buffer().is_empty() {
                    continue;
                }
            }
            let mut line = String::new();
            if self.status.read_line(&mut line)? == 0 {
                bail!("the container's monitor died before reporting an exit code");
            }
            if let Some(c) = line.trim().strip_prefix("exit ") {
                return Ok(c.parse().unwrap_or(255));
            }
            if line.trim() == "detached" {
                return Ok(0);
            }
        }
    }
}

/// Signals delivered to the CLI, turned into bytes on a pipe so a poll loop can forward them.
pub(crate) struct SignalPipe {
    pub(crate) read: OwnedFd,
}

static SIGNAL_WRITE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_WRITE_FD.load(std::sync::atomic::Ordering::Relaxed);
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
}

impl SignalPipe {
    pub(crate) fn install(signals: &[i32]) -> Result<SignalPipe> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        SIGNAL_WRITE_FD.store(w.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
        std::mem::forget(w);
        for &s in signals {
            // SAFETY: installing a handler that only writes a byte.
            unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
        }
        Ok(SignalPipe { read: r })
    }

    pub(crate) fn drain(&self) -> Vec<i32> {
        let mut buf = [0u8; 64];
        // SAFETY: read into our buffer from a non-blocking pipe.
        let n = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        buf[..n.max(0) as usize].iter().map(|&b| b as i32).collect()
    }
}

/// The container's end of its pty, found as its init's stdin, for setting the window size:
/// opened only once it is known to be a pty's slave (the container decides what its fd 0 is,
/// and host root must not open, say, a device node it made there).
fn container_pty(pid: i32) -> Option<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let path = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/fd/0"))
        .ok()?;
    let m = path.metadata().ok()?;
    // UNIX98 pty slaves: majors 136-143.
    let major = ((m.rdev() >> 8) & 0xfff) as u32;
    if !m.file_type().is_char_device() || !(136..=143).contains(&major) {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", path.as_raw_fd()))
        .ok()
}

impl Engine {
    /// Creates a container (state "created"): image layers unpacked, row written, dirs made.
    pub fn create_container(&self, req: CreateRequest) -> Result<String> {
        let mut c = req.config;
        if c.auto_remove && !c.restart.is_empty() && c.restart != "no" {
            bail!("Conflicting options: --restart and --rm");
        }
        let name = match &req.name {
            Some(n) => {
                let n = n.trim_start_matches('/');
                if !names::valid_name(n) {
                    bail!("Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
                }
                n.to_string()
            }
            None => names::random_name(),
        };
        let _lock = self.store_lock(false)?;
        let image = self.resolve_image(&req.image)?;
        let icfg = self.config_of(&image)?.config;
        self.prepare_layers(&image)?;
        // The command: --entrypoint replaces the image's (and drops its CMD), args replace CMD.
        let entry: Vec<String> = match &req.entrypoint {
            Some(e) if e.is_empty() => vec![],
            Some(e) => vec![e.clone()],
            None => icfg.entrypoint.clone().unwrap_or_default(),
        };
        let cmd = if !req.cmd.is_empty() {
            req.cmd.clone()
        } else if req.entrypoint.is_some() {
            vec![]
        } else {
            icfg.cmd.clone().unwrap_or_default()
        };
        c.entrypoint_len = Some(entry.len());
        c.args = entry.into_iter().chain(cmd).collect();
        if c.args.is_empty() {
            return Err(ExitError { code: 125, msg: "no command specified".into() }.into());
        }
        // Environment: the image's, then PATH if missing, then the user's (later wins).
        let mut env: Vec<String> = icfg.env.clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        for e in std::mem::take(&mut c.env) {
            let key = e.split('=').next().unwrap_or("").to_string();
            env.retain(|x| x.split('=').next() != Some(key.as_str()));
            env.push(e);
        }
        let id = names::new_id();
        if c.hostname.is_empty() {
            // On the host's network the host's name, as Docker does; else the short id.
            c.hostname = match nix::unistd::gethostname() {
                Ok(h) if c.network == "host" => h.to_string_lossy().into_owned(),
                _ => id[..12].to_string(),
            };
        }
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={}", c.hostname));
        }
        if c.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        c.env = env;
        if c.workdir.is_empty() {
            c.workdir = icfg.working_dir.clone().unwrap_or_default();
        }
        if c.user.is_empty() {
            c.user = icfg.user.clone().unwrap_or_default();
        }
        if c.stop_signal.is_empty() {
            c.stop_signal = icfg.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into());
        }
        for (k, v) in icfg.labels.clone().unwrap_or_default() {
            c.labels.entry(k).or_insert(v);
        }
        if c.log_driver.is_empty() {
            c.log_driver = "json-file".into();
        }
        if !matches!(c.log_driver.as_str(), "json-file" | "k8s-file" | "none") {
            bail!("unknown log driver {:?}: berth supports json-file, k8s-file and none", c.log_driver);
        }
        if !crate::runtimes::is_builtin(&c.runtime) {
            crate::runtimes::resolve(&c.runtime)?;
        }
        self.plan_network(&mut c, icfg.exposed_ports.iter().flatten().map(|(k, _)| k.clone()).collect())?;
        // The image's healthcheck, under the flags given (each flag replaces one field).
        let mut hc: crate::health::Healthcheck =
            icfg.healthcheck.clone().and_then(|h| serde_json::from_value(h).ok()).unwrap_or_default();
        if let Some(f) = c.healthcheck.take() {
            if !f.test.is_empty() {
                hc.test = f.test;
            }
            for (dst, src) in [
                (&mut hc.interval, f.interval),
                (&mut hc.timeout, f.timeout),
                (&mut hc.start_period, f.start_period),
                (&mut hc.start_interval, f.start_interval),
            ] {
                if src > 0 {
                    *dst = src;
                }
            }
            if f.retries > 0 {
                hc.retries = f.retries;
            }
        }
        c.healthcheck = (!hc.test.is_empty()).then_some(hc);
        // Everything that can refuse the request first: nothing is made for a bad one.
        crate::resources::check(&c)?;
        let userns = crate::userns::parse(&c.userns_mode)?;
        if c.privileged && userns != crate::userns::Mode::Host {
            bail!("privileged mode is incompatible with user namespaces: use --userns host with --privileged");
        }
        let image_volumes: Vec<String> = icfg.volumes.iter().flatten().map(|(k, _)| k.clone()).collect();
        // The volumes this create makes (anonymous ones, and named ones that did not exist) and
        // the bind sources it makes go again if it fails.
        let volumes = self.plan_volumes(&mut c, &image_volumes)?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        let dir = self.container_dir(&id);
        let rootfs = RootFs::path(&self.layers, &id);
        let made = (|| -> Result<()> {
            for b in &c.binds {
                if b.volume.is_none() && !b.source.exists() {
                    // The topmost directory that is not there yet is the one to remove.
                    let mut top = b.source.clone();
                    while let Some(p) = top.parent().filter(|p| !p.exists()) {
                        top = p.to_path_buf();
                    }
                    std::fs::create_dir_all(&b.source)
                        .with_context(|| format!("creating the bind source {}", b.source.display()))?;
                    dirs.push(top);
                }
            }
            // Held until the row is in: two creates never pick the same ids.
            let (shift, _userns_lock) = self.allocate_userns(userns)?;
            c.userns = shift;
            std::fs::create_dir_all(&dir)?;
            rootfs.create_with(crate::settings::Settings::copy_driver()?)?;
            let insert = |name: &str| -> Result<usize, rusqlite::Error> {
                self.db.execute(
                    &format!(
                        "INSERT INTO containers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 'created', 0, 0, 0, 0, 0, 0, 0, '', 0)"
                    ),
                    params![id, name, image.id.to_string(), serde_json::to_string(&c).unwrap_or_default(), db::now_nanos()],
                )
            };
            let mut r = insert(&name);
            // A generated name that is taken: draw again, then add digits, as Docker does.
            let mut tries = 0;
            while req.name.is_none()
                && tries < 20
                && matches!(&r, Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation)
            {
                tries += 1;
                let n = if tries < 10 {
                    names::random_name()
                } else {
                    format!("{}{}", names::random_name(), names::random_bytes(1)[0] % 10)
                };
                r = insert(&n);
            }
            match r {
                Ok(_) => Ok::<(), anyhow::Error>(()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    let other: String = self
                        .db
                        .query_row("SELECT id FROM containers WHERE name = ?1", [&name], |r| r.get(0))
                        .unwrap_or_default();
                    Err(ExitError {
                        code: 125,
                        msg: format!(
                            "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                        ),
                    }
                    .into())
                }
                Err(e) => Err(e.into()),
            }?;
            self.add_endpoints(&id, &c.networks)?;
            self.record_volumes(&id, &c)
        })();
        if let Err(e) = made {
            let _ = self.db.execute("DELETE FROM containers WHERE id = ?1", [&id]);
            let _ = self.db.execute("DELETE FROM container_volumes WHERE container = ?1", [&id]);
            for v in &volumes {
                let _ = self.remove_volume(v);
            }
            for d in &dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            let _ = rootfs.remove();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        if let Ok(row) = self.container(&id) {
            self.container_event(&row, "create", &[]);
        }
        Ok(id)
    }

    /// `container prune`: removes the stopped containers; their ids and (with `measure`) what
    /// their writable layers held.
    pub fn prune_containers(&self, measure: bool) -> Result<(Vec<String>, u64)> {
        let mut gone = Vec::new();
        let mut bytes = 0;
        for c in self.containers(true)? {
            if !c.is_running() && !c.monitor_alive() {
                if measure {
                    bytes += self.container_changes_size(&c.id);
                }
                self.remove_container(&c.id, false)?;
                gone.push(c.id);
            }
        }
        self.remove_orphan_dirs()?;
        Ok((gone, bytes))
    }

    /// The directories of containers that have no row: what a create killed between making
    /// them and writing its row leaves. Only while no create runs (they hold the store lock
    /// shared from their first directory to their row).
    fn remove_orphan_dirs(&self) -> Result<()> {
        let _l = self.store_lock(true)?;
        let known: std::collections::HashSet<String> = self.containers(true)?.into_iter().map(|c| c.id).collect();
        let orphan =
            |name: &str| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) && !known.contains(name);
        for parent in [self.root.join("containers"), self.layers.root().join("containers")] {
            for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if orphan(&name) {
                    // The root first (never a recursive removal through a mounted overlay).
                    let _ = RootFs::path(&self.layers, &name).remove();
                    let _ = std::fs::remove_dir_all(self.container_dir(&name));
                }
            }
        }
        Ok(())
    }

    /// Records a container event with Docker's attributes (image, name, labels).
    pub(crate) fn container_event(&self, c: &ContainerRow, action: &str, extra: &[(&str, &str)]) {
        let mut attrs: Vec<(&str, &str)> = vec![("image", &c.config.image_ref), ("name", &c.name)];
        attrs.extend(c.config.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        attrs.extend_from_slice(extra);
        crate::events::emit(&self.runroot, "container", action, &c.id, &attrs);
    }

    /// Settles a new container's network mode, the networks it joins and its ports.
    fn plan_network(&self, c: &mut ContainerConfig, image_exposed: Vec<String>) -> Result<()> {
        use crate::networks::{DEFAULT_NETWORK, NetRequest, PortSpec, uses_endpoints};
        for e in image_exposed.into_iter().chain(std::mem::take(&mut c.exposed)) {
            let e = if e.contains('/') { e.to_ascii_lowercase() } else { format!("{e}/tcp") };
            let (port, proto) = e.split_once('/').unwrap_or_default();
            if port.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp") {
                bail!("invalid exposed port {e:?}: expected PORT[/tcp|udp]");
            }
            if !c.exposed.contains(&e) {
                c.exposed.push(e);
            }
        }
        if c.publish_all {
            for e in c.exposed.clone() {
                let (port, proto) = e.split_once('/').unwrap_or_default();
                let port: u16 = port.parse().unwrap_or(0);
                if port != 0 && !c.ports.iter().any(|p| p.container_port == port && p.proto == proto) {
                    c.ports.push(PortSpec {
                        host_ip: None,
                        host_lo: 0,
                        host_hi: 0,
                        container_port: port,
                        proto: proto.into(),
                    });
                }
            }
        }
        if c.network.is_empty() || c.network == "default" {
            c.network = DEFAULT_NETWORK.into();
        }
        if uses_endpoints(&c.network) {
            if c.networks.is_empty() {
                c.networks = vec![NetRequest { name: c.network.clone(), ..Default::default() }];
            }
            for r in &mut c.networks {
                if r.name == "default" {
                    r.name = DEFAULT_NETWORK.into();
                }
            }
            for (i, r) in c.networks.iter().enumerate() {
                if c.networks[..i].iter().any(|x| x.name == r.name) {
                    bail!("network {} is given twice", r.name);
                }
                if !uses_endpoints(&r.name) {
                    bail!("network mode {} cannot be combined with other networks", r.name);
                }
            }
            return Ok(());
        }
        if c.networks.len() > 1 {
            bail!("network mode {} cannot be combined with other networks", c.network);
        }
        c.networks.clear();
        if !c.ports.is_empty() {
            if c.network == "host" {
                // Docker's behaviour (and words): the container has the host's ports already.
                eprintln!("WARNING: Published ports are discarded when using host network mode");
                c.ports.clear();
            } else {
                bail!("conflicting options: port publishing and network mode {}", c.network);
            }
        }
        if let Some(other) = c.network.strip_prefix("container:") {
            let o = self.container(other)?;
            c.network = format!("container:{}", o.id);
        }
        Ok(())
    }

    /// A container by id, id prefix or name.
    pub fn container(&self, key: &str) -> Result<ContainerRow> {
        let key = key.trim_start_matches('/');
        let q = format!("SELECT {COLUMNS} FROM containers WHERE id = ?1 OR name = ?1");
        if let Some(r) = self.db.query_row(&q, [key], row).optional()? {
            return Ok(self.with_dir(r));
        }
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit()) {
            let q = format!("SELECT {COLUMNS} FROM containers WHERE id LIKE ?1 || '%'");
            let mut st = self.db.prepare(&q)?;
            let found: Vec<ContainerRow> = st.query_map([key], row)?.collect::<rusqlite::Result<_>>()?;
            match found.len() {
                1 => return Ok(found.into_iter().map(|c| self.with_dir(c)).next().unwrap_or_else(|| unreachable!())),
                0 => {}
                _ => bail!("multiple containers match the id prefix {key}"),
            }
        }
        Err(ExitError { code: 1, msg: format!("No such container: {key}") }.into())
    }

    pub fn containers(&self, all: bool) -> Result<Vec<ContainerRow>> {
        let q = format!(
            "SELECT {COLUMNS} FROM containers {} ORDER BY created DESC",
            if all { "" } else { "WHERE state IN ('running', 'paused', 'restarting')" }
        );
        let mut st = self.db.prepare(&q)?;
        let v: Vec<ContainerRow> = st.query_map([], row)?.collect::<rusqlite::Result<_>>()?;
        Ok(v.into_iter().map(|c| self.with_dir(c)).collect())
    }

    fn with_dir(&self, mut c: ContainerRow) -> ContainerRow {
        c.dir = self.container_dir(&c.id);
        c
    }

    /// Hands the container to a new monitor process, which creates and starts it and outlives
    /// us. Returns once the container's process runs (or failed to start).
    pub fn start_container(&self, key: &str, attach: Attach) -> Result<Started> {
        let c = self.container(key)?;
        if c.busy() {
            bail!("container {} is already running", c.name);
        }
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let exe = std::env::current_exe().context("finding the berth binary for the monitor")?;
        let mut cmd = Command::new(exe);
        cmd.arg("--root").arg(&self.root).arg("--runroot").arg(&self.runroot).arg("container-monitor");
        if attach.stdout {
            cmd.arg("--attach");
        }
        if attach.stdin {
            cmd.arg("--stdin");
        }
        cmd.arg(&c.id);
        cmd.stdin(if attach.stdin { Stdio::inherit() } else { Stdio::null() });
        if !attach.stdout {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        // The monitor passes the container's streams to its own: a stream not attached goes
        // to /dev/null (it still reaches the log).
        if attach.skip[0] {
            cmd.stdout(Stdio::null());
        }
        if attach.skip[1] {
            cmd.stderr(Stdio::null());
        }
        let mut signals = vec![];
        if attach.stdout && attach.sig_proxy {
            signals.extend([libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2]);
        }
        if attach.stdout && c.config.tty {
            signals.push(libc::SIGWINCH);
        }
        let signals = if signals.is_empty() { None } else { Some(SignalPipe::install(&signals)?) };
        let wfd = w.as_raw_fd();
        // SAFETY: between fork and exec we only dup2 and setsid (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(wfd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting the container monitor")?;
        let monitor = child.id() as i32;
        drop(w);
        // The monitor is on its own; it is reaped by init once we exit.
        std::mem::forget(child);
        let mut status = BufReader::new(std::fs::File::from(r));
        let mut line = String::new();
        status.read_line(&mut line)?;
        let line = line.trim();
        if let Some(p) = line.strip_prefix("started ") {
            return Ok(Started {
                pid: p.parse().unwrap_or(0),
                monitor,
                tty: c.config.tty && attach.stdout,
                status,
                signals,
            });
        }
        if let Some(rest) = line.strip_prefix("error ") {
            let (code, msg) = rest.split_once(' ').unwrap_or(("125", rest));
            return Err(ExitError { code: code.parse().unwrap_or(125), msg: msg.replace("\\n", "\n") }.into());
        }
        bail!(
            "the container monitor exited without starting the container (see {})",
            self.container_dir(&c.id).join("monitor.log").display()
        )
    }

    /// Sends `sig` to the container's main process.
    pub fn kill_container(&self, key: &str, sig: i32) -> Result<ContainerRow> {
        let c = self.container(key)?;
        if !c.is_running() {
            bail!("cannot kill container: {}: container {} is not running", key, c.id);
        }
        let rt = self.runtime_of(&c)?;
        // SIGKILL or the stop signal is the user stopping it: restart policies leave it
        // stopped, as after Docker's kill (other signals, a reload's SIGHUP, are not).
        let stop_sig = berth_runtime::units::parse_signal(&c.config.stop_signal).unwrap_or(libc::SIGTERM);
        let stopping = sig == libc::SIGKILL || sig == stop_sig;
        if stopping {
            // Before the signal: an exit it causes must find the mark.
            self.db.execute("UPDATE containers SET error = 'stopped' WHERE id = ?1", [&c.id])?;
        }
        if let Err(e) = rt.kill(sig) {
            if stopping && c.error != "stopped" {
                let _ = self.db.execute("UPDATE containers SET error = ?2 WHERE id = ?1", params![c.id, c.error]);
            }
            return Err(e);
        }
        if c.state == "paused" && stopping && rt.pause(false).is_ok() {
            // A frozen process cannot act on the signal: thawed (Docker's stop and kill do).
            self.db.execute("UPDATE containers SET state = 'running' WHERE id = ?1 AND state = 'paused'", [&c.id])?;
        }
        self.container_event(&c, "kill", &[("signal", &sig.to_string())]);
        Ok(c)
    }

    /// Waits until the container is no longer running; false on timeout.
    pub fn wait_stopped(&self, id: &str, timeout: Option<Duration>) -> Result<bool> {
        let start = Instant::now();
        let mut nap = Duration::from_millis(1);
        loop {
            let c = match self.container(id) {
                Ok(c) => c,
                // Removed meanwhile (--rm): stopped for good.
                Err(e) if e.downcast_ref::<ExitError>().is_some() => return Ok(true),
                Err(e) => return Err(e),
            };
            if c.monitor_pid == 0 {
                return Ok(true);
            }
            if !c.monitor_alive() {
                self.repair()?;
                return Ok(true);
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Ok(false);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    /// `berth stop`: the stop signal, then SIGKILL after the timeout (default 10 s).
    pub fn stop_container(&self, key: &str, timeout: Option<u32>) -> Result<()> {
        let c = self.container(key)?;
        if !c.busy() {
            return Ok(());
        }
        self.db.execute("UPDATE containers SET error = 'stopped' WHERE id = ?1", [&c.id])?;
        if !c.is_running() {
            self.wait_stopped(&c.id, None)?;
            return Ok(());
        }
        let t = timeout.or(c.config.stop_timeout).unwrap_or(10);
        let sig = berth_runtime::units::parse_signal(&c.config.stop_signal).unwrap_or(libc::SIGTERM);
        if t > 0
            && self.kill_container(&c.id, sig).is_ok()
            && self.wait_stopped(&c.id, Some(Duration::from_secs(t as u64)))?
        {
            self.container_event(&c, "stop", &[]);
            return Ok(());
        }
        let _ = self.kill_container(&c.id, libc::SIGKILL);
        self.wait_stopped(&c.id, None)?;
        self.container_event(&c, "stop", &[]);
        Ok(())
    }

    /// Before `rm -f` of several containers: kills every running one first, so that their
    /// monitors tear down side by side while `remove_container` waits for each in turn.
    pub fn kill_for_removal(&self, keys: &[String]) {
        for key in keys {
            if let Ok(c) = self.container(key)
                && c.busy()
                && self.db.execute("UPDATE containers SET error = 'stopped' WHERE id = ?1", [&c.id]).is_ok()
            {
                let _ = self.kill_container(&c.id, libc::SIGKILL);
            }
        }
    }

    /// `berth rm`.
    pub fn remove_container(&self, key: &str, force: bool) -> Result<String> {
        let c = self.container(key)?;
        if c.busy() {
            if !force {
                return Err(ExitError {
                    code: 1,
                    msg: format!(
                        "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
                        c.name, c.state
                    ),
                }
                .into());
            }
            self.db.execute("UPDATE containers SET error = 'stopped' WHERE id = ?1", [&c.id])?;
            let _ = self.kill_container(&c.id, libc::SIGKILL);
            self.wait_stopped(&c.id, None)?;
        }
        self.delete_container_files(&c.id)?;
        self.db.execute("DELETE FROM containers WHERE id = ?1", [&c.id])?;
        self.container_event(&c, "destroy", &[]);
        Ok(c.id)
    }

    fn delete_container_files(&self, id: &str) -> Result<()> {
        if let Ok(c) = self.container(id)
            && let Ok(rt) = self.runtime_of(&c)
        {
            rt.delete();
        }
        RootFs::path(&self.layers, id).remove()?;
        let dir = self.container_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn pause_container(&self, key: &str, pause: bool) -> Result<()> {
        let c = self.container(key)?;
        let rt = self.runtime_of(&c).map_err(|_| anyhow::anyhow!("container {} is not running", c.id))?;
        match (pause, c.state.as_str()) {
            (true, "running") => rt.pause(true)?,
            (false, "paused") => rt.pause(false)?,
            (true, "paused") => bail!("container {} is already paused", c.id),
            (false, _) => bail!("container {} is not paused", c.id),
            (true, _) => bail!("container {} is not running", c.id),
        }
        // Only while it still runs: an exit meanwhile (the monitor wrote "exited") stands.
        self.db.execute(
            "UPDATE containers SET state = ?2 WHERE id = ?1 AND state IN ('running', 'paused')",
            params![c.id, if pause { "paused" } else { "running" }],
        )?;
        self.container_event(&c, if pause { "pause" } else { "unpause" }, &[]);
        Ok(())
    }

    /// `berth attach`: the running container's output (and, with a pty, our input) through its
    /// monitor, until it exits (its exit code) or ctrl-p ctrl-q detaches us (0).
    pub fn attach(&self, key: &str, stdin: bool, detach_keys: Option<&str>, sig_proxy: bool) -> Result<i32> {
        let c = self.container(key)?;
        if !c.is_running() {
            return Err(
                ExitError { code: 1, msg: "You cannot attach to a stopped container, start it first".into() }.into()
            );
        }
        let path = crate::monitor::attach_path(&self.runroot, &c.id);
        let sock = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to the monitor of container {}", c.name))?;
        let _raw = if c.config.tty { Some(RawMode::enter()) } else { None };
        // Our terminal's size goes to the container's (now and on each SIGWINCH): through its
        // init's end of the pty, where setting the size also signals its foreground job.
        // SAFETY: isatty(3) of our stdout.
        let pty = if c.config.tty && unsafe { libc::isatty(1) } == 1 { container_pty(c.pid) } else { None };
        // The container's process by a pidfd: a signal never reaches another process that got
        // its pid after it ended.
        // SAFETY: pidfd_open(2); the fd is ours.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, c.pid, 0) } as std::os::fd::RawFd;
        // SAFETY: a fresh fd (or -1, then none).
        let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        // Without a terminal, the signals we get go to the container's process (--sig-proxy,
        // Docker's default; with -t, ctrl-c is a byte on the pty).
        let mut sigs = Vec::new();
        if pty.is_some() {
            sigs.push(libc::SIGWINCH);
        }
        if sig_proxy && !c.config.tty {
            sigs.extend([libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2]);
        }
        let winch = if sigs.is_empty() { None } else { SignalPipe::install(&sigs).ok() };
        if let Some(p) = &pty {
            berth_runtime::tty::copy_winsize(1, p.as_raw_fd());
        }
        // Input goes to a pty, or to the stdin pipe the monitor keeps for a -i container.
        let mut input = stdin && (c.config.tty || c.config.interactive);
        let mut buf = vec![0u8; 64 << 10];
        let mut pending: Vec<u8> = Vec::new();
        // As Docker: run's --detach-keys were for that session; an attach has its own or the
        // default ones.
        let mut keys = DetachKeys::new(detach_keys.unwrap_or(""))?;
        loop {
            let mut fds = [
                libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: if input { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
                libc::pollfd {
                    fd: winch.as_ref().map_or(-1, |w| w.read.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: poll over fds we hold.
            if unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) } < 0 {
                continue;
            }
            if fds[2].revents != 0
                && let Some(w) = &winch
            {
                for sig in w.drain() {
                    match &pty {
                        Some(p) if sig == libc::SIGWINCH => berth_runtime::tty::copy_winsize(1, p.as_raw_fd()),
                        // SAFETY: pidfd_send_signal(2) through our pidfd.
                        _ => unsafe {
                            if let Some(fd) = &pidfd {
                                libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, 0, 0);
                            }
                        },
                    }
                }
            }
            if fds[1].revents != 0 {
                // SAFETY: read into our buffer.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    input = false;
                } else {
                    let data = &buf[..n as usize];
                    // The detach keys are a terminal's (Docker: only with -t).
                    let (data, detach) = if c.config.tty { keys.filter(data) } else { (data.to_vec(), false) };
                    write_all(sock.as_raw_fd(), &data);
                    if detach {
                        return Ok(0);
                    }
                }
            }
            if fds[0].revents != 0 {
                // SAFETY: read into our buffer.
                let n = unsafe { libc::read(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                if c.config.tty {
                    write_all(1, &buf[..n as usize]);
                    continue;
                }
                // Frames: [stream, 0, 0, 0, length (big endian u32)] then the bytes.
                pending.extend_from_slice(&buf[..n as usize]);
                while pending.len() >= 8 {
                    let len = u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
                    if pending.len() < 8 + len {
                        break;
                    }
                    write_all(if pending[0] == 2 { 2 } else { 1 }, &pending[8..8 + len]);
                    pending.drain(..8 + len);
                }
            }
        }
        self.wait_container(&c.id)
    }

    /// `berth wait`: the exit code once the container stopped.
    pub fn wait_container(&self, key: &str) -> Result<i32> {
        let c = self.container(key)?;
        self.wait_stopped(&c.id, None)?;
        Ok(self.container(&c.id).map(|c| c.exit_code).unwrap_or(c.exit_code))
    }

    /// Runs a command in a running container (a child of ours); returns its pid.
    pub fn exec(
        &self,
        key: &str,
        args: &[String],
        env: &[String],
        user: Option<&str>,
        workdir: Option<&str>,
        privileged: bool,
    ) -> Result<i32> {
        self.exec_in(key, args, env, user, workdir, privileged, false).map(|(pid, _)| pid)
    }

    /// `exec` in a container of another runtime (--runtime): that runtime's own `exec`,
    /// attached to our stdio. None when the container has the built-in runtime.
    pub fn exec_external(&self, key: &str, args: &[String], tty: bool, detach: bool) -> Result<Option<i32>> {
        let c = self.container(key)?;
        if crate::runtimes::is_builtin(&c.config.runtime) {
            return Ok(None);
        }
        if c.state != "running" {
            return Err(ExitError { code: 1, msg: format!("container {} is not running", c.id) }.into());
        }
        let bin = crate::runtimes::resolve(&c.config.runtime)?;
        crate::runtimes::external_exec(&bin, &self.external_root(&c.config.runtime), &c.id, tty, detach, args).map(Some)
    }

    /// `exec -t`: the command runs on a new pty; returns its pid and the pty's master, for
    /// [`attach_pty`].
    pub fn exec_tty(
        &self,
        key: &str,
        args: &[String],
        env: &[String],
        user: Option<&str>,
        workdir: Option<&str>,
        privileged: bool,
    ) -> Result<(i32, OwnedFd)> {
        let (pid, master) = self.exec_in(key, args, env, user, workdir, privileged, true)?;
        Ok((pid, master.context("the runtime sent no pty")?))
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_in(
        &self,
        key: &str,
        args: &[String],
        env: &[String],
        user: Option<&str>,
        workdir: Option<&str>,
        privileged: bool,
        tty: bool,
    ) -> Result<(i32, Option<OwnedFd>)> {
        let c = self.container(key)?;
        if c.state != "running" {
            return Err(ExitError { code: 1, msg: format!("container {} is not running", c.id) }.into());
        }
        if !crate::runtimes::is_builtin(&c.config.runtime) {
            bail!(
                "container {} runs under --runtime {}: berth execs in it with that runtime (use `berth exec` without -u/-w/-e/--privileged)",
                c.name,
                c.config.runtime
            );
        }
        let rc = berth_runtime::container::Container::load(&self.runtime_root(), &c.id)?;
        let spec = rc.spec()?;
        let mut p = spec.process().clone().context("the container has no process")?;
        p.set_args(Some(args.to_vec()));
        p.set_terminal(Some(tty));
        let mut e = p.env().clone().unwrap_or_default();
        if tty && !e.iter().any(|x| x.starts_with("TERM=")) {
            e.push("TERM=xterm".into());
        }
        for x in env {
            let key = x.split('=').next().unwrap_or("");
            e.retain(|y| y.split('=').next() != Some(key));
            e.push(x.clone());
        }
        p.set_env(Some(e));
        if let Some(w) = workdir {
            p.set_cwd(w.into());
        }
        if let Some(u) = user {
            let (uid, gid, groups) = crate::spec::resolve_user(&PathBuf::from(format!("/proc/{}/root", c.pid)), u)?;
            let mut usr = p.user().clone();
            usr.set_uid(uid);
            usr.set_gid(gid);
            usr.set_additional_gids(Some(groups));
            p.set_user(usr);
        }
        if privileged {
            let all: Vec<String> = crate::spec::capabilities(&["ALL".into()], &[], true)?;
            let v: serde_json::Value = serde_json::json!({"bounding": all, "effective": all, "permitted": all});
            p.set_capabilities(Some(serde_json::from_value(v)?));
        }
        let cmdline = args.join(" ");
        self.container_event(&c, &format!("exec_create: {cmdline}"), &[]);
        self.container_event(&c, &format!("exec_start: {cmdline}"), &[]);
        let failed = |e: anyhow::Error| -> anyhow::Error {
            let m = format!("{e:#}");
            ExitError { code: crate::start_failure_code(&m), msg: m }.into()
        };
        if !tty {
            return rc.exec(&p, None, 0).map(|pid| (pid, None)).map_err(failed);
        }
        // The runtime sends the pty's master through a console socket (a short path: < 108 bytes).
        let sock = self.runroot.join(format!("tty-exec-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).context("creating the console socket")?;
        let made = rc.exec(&p, Some(&sock), 0);
        let _ = std::fs::remove_file(&sock);
        let pid = made.map_err(failed)?;
        let (conn, _) = listener.accept().context("accepting the console socket")?;
        let master = crate::monitor::recv_fd(conn.as_raw_fd())?;
        Ok((pid, Some(master)))
    }

    /// Finds containers whose monitor died (kill -9, a crash) and cleans up after them: no
    /// container is shown running without a process, no mount or cgroup is left.
    pub fn repair(&self) -> Result<()> {
        // Every command runs this: look at pids only, and decode the rows of the dead.
        let dead: Vec<String> = {
            let mut st =
                self.db.prepare("SELECT id, monitor_pid, monitor_start FROM containers WHERE monitor_pid != 0")?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?, r.get::<_, i64>(2)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let monitors: Vec<(i32, u64)> = rows.iter().map(|(_, pid, start)| (*pid, *start)).collect();
            let alive = crate::liveness::alive(&self.runroot, &monitors);
            rows.into_iter().zip(alive).filter(|(_, alive)| !alive).map(|((id, ..), _)| id).collect()
        };
        let mut stale = Vec::new();
        let mut restart = Vec::new();
        for id in dead {
            let q = format!("SELECT {COLUMNS} FROM containers WHERE id = ?1");
            if let Some(c) = self.db.query_row(&q, [&id], row).optional()? {
                stale.push(c);
            }
        }
        // A sealed copy of berth (exec runs from one) cannot start monitors: containers due a
        // restart are left for the next command.
        if stale.is_empty() {
            // The usual case, on every command: nothing more to read.
            return Ok(());
        }
        let can_start = !berth_runtime::sealed::running_sealed();
        let me = std::process::id() as i32;
        let my_start = berth_runtime::state::proc_start(me).map(|s| s.0).unwrap_or(0);
        for c in stale {
            let was_running = c.is_running() || c.state == "restarting";
            // What Docker's daemon does for the containers it finds dead when it starts again
            // (after a reboot, or its own crash): those whose policy says so start again, now
            // that a command has noticed. A stop by the user (recorded as "stopped") stays.
            // A monitor that died while "restarting" has counted that restart already.
            let counted = c.state == "restarting";
            let count = c.restart_count - counted as i64;
            let again = was_running
                && !c.config.auto_remove
                && c.error != "stopped"
                && crate::monitor::should_restart(&c.config.restart, 255, count);
            if again && !can_start {
                continue;
            }
            // Claimed first, as its monitor for the time of the clean-up: of two commands
            // repairing at once one cleans up (and restarts), and a `start` meanwhile finds the
            // container taken rather than have its new root torn down. Should we die here, our
            // pid is as dead as the monitor's was and the next command repairs again.
            let claimed = self.db.execute(
                "UPDATE containers SET monitor_pid = ?2, monitor_start = ?3 WHERE id = ?1 AND monitor_pid = ?4",
                params![c.id, me, my_start as i64, c.monitor_pid],
            )? == 1;
            if !claimed {
                continue;
            }
            if let Ok(rt) = self.runtime_of(&c) {
                rt.delete();
            }
            let _ = self.network_down(&c);
            let _ = RootFs::path(&self.layers, &c.id).unmount();
            self.volumes_down(&c);
            if c.config.auto_remove {
                let _ = self.delete_container_files(&c.id);
                self.db.execute("DELETE FROM containers WHERE id = ?1", [&c.id])?;
                self.remove_anonymous_volumes(&c);
                continue;
            }
            self.db.execute(
                "UPDATE containers SET state = CASE WHEN ?2 THEN 'exited' ELSE state END, exit_code = CASE WHEN ?2 THEN 255 ELSE exit_code END,
                 finished = CASE WHEN ?2 THEN ?3 ELSE finished END, monitor_pid = 0, pid = 0,
                 restart_count = restart_count + ?5 WHERE id = ?1 AND monitor_pid = ?4",
                params![c.id, was_running, db::now_nanos(), me, (again && !counted) as i64],
            )?;
            if again {
                restart.push(c.id.clone());
            }
        }
        for id in restart {
            if let Err(e) = self.start_container(&id, Attach::default()) {
                eprintln!("berth: restarting container {} after its monitor died: {e:#}", &id[..12]);
            }
        }
        Ok(())
    }
}

pub(crate) fn owned(fd: i32) -> OwnedFd {
    // SAFETY: the caller hands over an fd it owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Connects our terminal to a pty master until process `pid` (our child) exits: raw mode,
/// window size (and its changes), input when `stdin`; returns the exit code.
pub fn attach_pty(master: OwnedFd, pid: i32, stdin: bool) -> Result<i32> {
    berth_runtime::tty::relay(&master, pid, stdin);
    berth_runtime::container::wait_exit_code(pid)
}

/// Watches typed bytes for the detach sequence (`ctrl-p,ctrl-q` unless told otherwise).
pub struct DetachKeys {
    keys: Vec<u8>,
    at: usize,
}

impl DetachKeys {
    /// Docker's syntax: comma-separated `ctrl-<key>` or single characters.
    pub fn new(spec: &str) -> Result<DetachKeys> {
        let spec = if spec.is_empty() { "ctrl-p,ctrl-q" } else { spec };
        let mut keys = Vec::new();
        for k in spec.split(',') {
            let b = match k.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                    x @ b'a'..=b'z' => x - b'a' + 1,
                    b'@' => 0,
                    x @ (b'[' | b'\\' | b']' | b'^' | b'_') => x - b'@',
                    _ => bail!("invalid detach keys {spec:?}: unknown key {k}"),
                },
                None if k.len() == 1 => k.as_bytes()[0],
                _ => bail!("invalid detach keys {spec:?}: use a list such as ctrl-p,ctrl-q"),
            };
            keys.push(b);
        }
        Ok(DetachKeys { keys, at: 0 })
    }

    /// What of `data` goes on to the container, and whether it ended with the sequence. Keys
    /// that may begin the sequence are held back until it completes (they are dropped, with
    /// what follows in `data`) or breaks (they go on after all), as Docker's.
    pub fn filter(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(data.len());
        for &b in data {
            if self.keys.get(self.at) == Some(&b) {
                self.at += 1;
                if self.at == self.keys.len() {
                    self.at = 0;
                    return (out, true);
                }
            } else {
                // The keys held were typed text after all; a first key starts the sequence anew.
                out.extend_from_slice(&self.keys[..self.at]);
                if self.keys.first() == Some(&b) {
                    self.at = 1;
                } else {
                    self.at = 0;
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::DetachKeys;

    #[test]
    fn detach_keys_match_sequences() {
        let mut d = DetachKeys::new("").unwrap();
        assert_eq!(d.filter(b"ls\n\x10\x11more"), (b"ls\n".to_vec(), true), "text before the keys goes on");
        // Held across reads, then given back when the sequence breaks.
        assert_eq!(d.filter(b"a\x10"), (b"a".to_vec(), false));
        assert_eq!(d.filter(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(d.filter(b"\x10"), (vec![], false));
        assert_eq!(d.filter(b"\x11"), (vec![], true));
        // A repeated first key restarts the sequence instead of breaking it.
        assert_eq!(d.filter(b"\x10\x10\x11"), (b"\x10".to_vec(), true));
        let mut d = DetachKeys::new("ctrl-a,x,ctrl-\\").unwrap();
        assert_eq!(d.filter(b"\x01x\x1c"), (vec![], true));
        assert_eq!(d.filter(b"\x01xy"), (b"\x01xy".to_vec(), false));
        for bad in ["ctrl-1", "ctrl-pp", "abc"] {
            assert!(DetachKeys::new(bad).is_err(), "{bad}");
        }
    }
}
