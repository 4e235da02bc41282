//! The runtime's operations on containers: create, start, state, kill, delete, pause, resume,
//! update, ps, exec. The CLI (`berth-runtime`) and the engine both call these.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_cgroups::{Cgroup, Layout};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};

use crate::init::{self, InitArgs, recv, send};
use crate::state::{self, EXEC_SOCK, State, Status};
use crate::{hooks, ns, procattr, rootfs, seccomp, spec};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// Start the container as part of create (`run`): the init execs the user's program as soon
    /// as it is ready, with no exec socket to wait on. Ignored when the spec has poststart
    /// hooks, which must run after the start point: the container is then left created.
    pub start: bool,
}

pub const DEFAULT_ROOT: &str = "/run/berth-runtime";
pub(crate) const SPEC_COPY: &str = "config.json";

/// Undoes a half-made create when dropped without `disarm`.
pub(crate) struct Undo {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) pids: Vec<i32>,
    /// Once the create hooks began, a failure still runs the poststop hooks (the spec), after
    /// the processes are gone: the hooks and the state they get.
    pub(crate) poststop: Option<(Vec<oci_spec::runtime::Hook>, Vec<u8>)>,
}

impl Undo {
    pub(crate) fn new(dir: PathBuf) -> Undo {
        Undo { dir: Some(dir), cgroup: None, pids: Vec::new(), poststop: None }
    }

    pub(crate) fn disarm(mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pids.clear();
        self.poststop = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        for &p in &self.pids {
            // SAFETY: kill and reap our own children.
            unsafe {
                libc::kill(p, libc::SIGKILL);
                libc::waitpid(p, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(libc::SIGKILL);
            if cg.remove().is_ok() {
                remove_default_parent(cg);
            }
        }
        if let Some((hooks, json)) = &self.poststop {
            hooks::run_all_warn("poststop", Some(hooks), json);
        }
        if let Some(d) = &self.dir {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// The parent the engine gives its containers' cgroups (`berth/<id>` under each hierarchy),
/// removed by the runtime once empty.
pub const ENGINE_CGROUP_PARENT: &str = "berth";

/// The cgroup a spec asks for: its cgroupsPath, or `/<id>` as runc does (no shared parent to
/// make and remove in each hierarchy).
pub(crate) fn cgroup_for(spec: &Spec, id: &str) -> Result<Cgroup> {
    let p =
        spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).unwrap_or_else(|| PathBuf::from(format!("/{id}")));
    if p.to_string_lossy().contains(':') {
        bail!(
            "linux.cgroupsPath {:?} looks like a systemd slice:prefix:name path; berth-runtime drives cgroupfs directly (drop --systemd-cgroup)",
            p
        );
    }
    Ok(Cgroup::new(Layout::detect(), &p)?)
}

/// The new container's state dir (refused if the id is taken) with the spec's bytes as read
/// (they parsed to the spec: no serialization on the way), and what undoes it.
pub(crate) fn new_state_dir(root: &Path, id: &str, spec_bytes: &[u8]) -> Result<(PathBuf, Undo)> {
    fs::create_dir_all(root).with_context(|| format!("creating the state root {}", root.display()))?;
    let dir = state::dir(root, id);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!("container with id {id} already exists"),
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let undo = Undo::new(dir.clone());
    fs::write(dir.join(SPEC_COPY), spec_bytes).context("saving the spec")?;
    Ok((dir, undo))
}

/// Root of a user namespace other than the initial one (rootless Podman, `unshare -r`): its
/// cgroups are no more ours to make than an unprivileged user's. Asked only once making one
/// was refused, so the usual create reads nothing for it.
fn in_user_namespace() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// Making a cgroup was refused for want of rights (not some other failure).
fn denied(e: &berth_cgroups::Error) -> bool {
    matches!(e.source.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS))
}

/// A cgroup that already holds processes belongs to another container (two specs with one
/// linux.cgroupsPath): refused, as runc does, before anything could kill them.
pub(crate) fn refuse_busy(cg: &Cgroup) -> Result<()> {
    if cg.pids().is_ok_and(|p| !p.is_empty()) {
        bail!("linux.cgroupsPath {}: the cgroup already has processes (another container's?)", cg.path().display());
    }
    Ok(())
}

/// Rootless: the cgroup is made now if the user may (a cgroup delegated to it);
/// otherwise the container runs without one, as runc's rootless containers do, unless the spec
/// asks for limits, which only a cgroup gives.
fn rootless_cgroup(cg: Cgroup, spec: &Spec) -> Result<Option<Cgroup>> {
    match cg.create() {
        Ok(()) => Ok(Some(cg)),
        Err(e) if denied(&e) => {
            let _ = cg.remove();
            let r = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
            let limits = r.is_some_and(|r| {
                r.memory().is_some()
                    || r.cpu().is_some()
                    || r.pids().is_some()
                    || r.block_io().is_some()
                    || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
            });
            if limits {
                bail!("linux.resources: {e}: a rootless container gets limits only in a cgroup delegated to its user");
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The engine's shared parent `berth/` goes once empty (after its container's cgroup),
/// race-safely (see [`Cgroup::remove_parent_if_empty`]). The parents of any other cgroupsPath
/// belong to whoever chose it and are left alone.
fn remove_default_parent(cg: &Cgroup) {
    if cg.path().parent() == Some(Path::new(ENGINE_CGROUP_PARENT)) {
        let _ = cg.remove_parent_if_empty();
    }
}

/// Creates the container and leaves its init waiting for `start`. Returns its state.
pub fn create(o: &CreateOptions) -> Result<State> {
    state::validate_id(&o.id)?;
    let bundle = fs::canonicalize(&o.bundle).with_context(|| format!("bundle {}", o.bundle.display()))?;
    let (spec, spec_bytes) = spec::load_bytes(&bundle)?;
    let rootfs = spec::rootfs_path(&spec, &bundle)?;
    let proc_ = spec.process().as_ref().context("config.json: process is required to create a container")?;
    let terminal = proc_.terminal() == Some(true);
    if terminal && o.console_socket.is_none() {
        bail!("process.terminal is true: --console-socket is required");
    }
    let plan = ns::plan(spec.linux().as_ref().and_then(|l| l.namespaces().as_deref()).unwrap_or(&[]))?;
    // Compiled here so that the child only installs it.
    let seccomp = seccomp::for_spec(&spec)?;
    let attrs = procattr::Attrs::new(spec.linux().as_ref(), proc_, false)?;

    let (dir, mut undo) = new_state_dir(&o.root, &o.id, &spec_bytes)?;
    drop(spec_bytes);

    let cg = cgroup_for(&spec, &o.id)?;
    let resources = effective_resources(&spec)?;
    // The direct path (init::direct) clones the init as soon as the cgroup2 directory exists
    // and makes the rest of the cgroup while the init creates its namespaces.
    let direct = init::direct(&plan);
    // SAFETY: geteuid cannot fail.
    let mut cg = if unsafe { libc::geteuid() } != 0 { rootless_cgroup(cg, &spec)? } else { Some(cg) };
    if let Some(c) = &cg {
        refuse_busy(c)?;
    }
    undo.cgroup = cg.clone();
    if let Some(c) = cg.clone()
        && let Err(e) = c.create_v2()
    {
        if !denied(&e) || !in_user_namespace() {
            return Err(e.into());
        }
        cg = rootless_cgroup(c, &spec)?;
        undo.cgroup = cg.clone();
    }
    let limits = |r: Option<&LinuxResources>| -> Result<()> {
        if let (Some(r), Some(cg)) = (r, &cg) {
            cg.apply(r).context("linux.resources")?;
        }
        Ok(())
    };
    if !direct {
        if let Some(cg) = &cg {
            cg.create_v1()?;
        }
        limits(resources.as_ref())?;
    }

    let start_now = o.start && spec.hooks().as_ref().and_then(|h| h.poststart().as_ref()).is_none_or(|v| v.is_empty());
    let listener = if start_now { None } else { Some(bind_exec_socket(&dir)?) };
    let console = match &o.console_socket {
        Some(p) => {
            Some(UnixStream::connect(p).with_context(|| format!("connecting to --console-socket {}", p.display()))?)
        }
        None => None,
    };
    let (parent_sock, child_sock) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    // Made here, in the host's namespaces with the runtime's privileges; the init moves them
    // into place.
    let idmapped = rootfs::idmapped_mounts(&spec, &bundle)?;

    let hooks = spec.hooks().as_ref();
    let hook_stop = hooks.is_some_and(|h| {
        h.prestart().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_container().as_ref().is_some_and(|v| !v.is_empty())
    });
    let args = InitArgs {
        id: &o.id,
        spec: &spec,
        bundle: &bundle,
        rootfs: &rootfs,
        plan: &plan,
        sync: child_sock.as_raw_fd(),
        exec_listener: listener.as_ref().map_or(-1, |l| l.as_raw_fd()),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        no_pivot: o.no_pivot,
        no_new_keyring: o.no_new_keyring,
        preserve_fds: o.preserve_fds,
        cgroup: cg.as_ref(),
        hook_stop,
        seccomp: seccomp.as_ref(),
        parent: std::process::id() as libc::pid_t,
        attrs: &attrs,
        idmapped: &idmapped,
    };
    // The child puts itself into the cgroup (see init::fork_into): moving it from here would
    // wait for an RCU grace period, often the largest part of `create`.
    let (stage, v2_joined) = if direct {
        init::fork_into_with(init::direct_clone_flags(&plan), cg.as_ref())?
    } else {
        init::fork_into(cg.as_ref())?
    };
    if stage == 0 {
        drop(parent_sock);
        if direct {
            init::init_direct(&args, v2_joined);
        }
        init::stage(&args, v2_joined);
    }
    undo.pids.push(stage);
    drop(child_sock);
    drop(listener);
    drop(console);
    drop(idmapped);
    let sock = parent_sock.as_raw_fd();

    // Written as soon as the init's pid is known: before anything of the user's runs, and
    // while the process surely exists (with `start` it may have run and exited by "ready").
    let oom_score_adj = |pid: i32| -> Result<()> {
        if let Some(adj) = proc_.oom_score_adj() {
            fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()).context("process.oomScoreAdj")?;
        }
        Ok(())
    };
    let mut init_pid = 0;
    if direct {
        oom_score_adj(stage)?;
        // The child is the init: it creates its namespaces while we finish the cgroup, and
        // mounts the container's root while we apply the limits.
        send(sock, b"go");
        if let Some(cg) = &cg {
            cg.create_v1()?;
        }
        // The device rules go in before the init joins: it makes device nodes as soon as it is
        // in, and on v1 the deny-all that starts the list would refuse them until the allow
        // rules after it are written.
        let rest = match &resources {
            Some(r) if r.devices().as_ref().is_some_and(|d| !d.is_empty()) => {
                if let Some(cg) = &cg {
                    cg.apply_devices(r).context("linux.resources.devices")?;
                }
                let mut rest = r.clone();
                rest.set_devices(None);
                Some(rest)
            }
            other => other.clone(),
        };
        send(sock, b"cg");
        limits(rest.as_ref())?;
        send(sock, b"res");
        init_pid = stage;
    }
    let mut st = State {
        oci_version: spec.version().clone(),
        id: o.id.clone(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: state::now_rfc3339(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup_path: cg.as_ref().map(|c| c.path().to_path_buf()),
        owner: String::new(),
    };
    if direct {
        st.pid = init_pid;
        st.pid_start = state::proc_start(init_pid).map(|s| s.0).unwrap_or(0);
    }
    loop {
        let m = recv(sock)?;
        if m.is_empty() {
            bail!("the container's init exited during setup");
        } else if m == b"maps" {
            write_id_maps(stage, &spec)?;
            send(sock, b"go");
        } else if let Some(p) = m.strip_prefix(b"pid:") {
            init_pid = std::str::from_utf8(p)?.parse()?;
            undo.pids.push(init_pid);
            // SAFETY: reap the stage child, which exits right after sending the pid.
            unsafe { libc::waitpid(stage, std::ptr::null_mut(), 0) };
            undo.pids.retain(|p| *p != stage);
            st.pid = init_pid;
            st.pid_start = state::proc_start(init_pid).map(|s| s.0).unwrap_or(0);
            oom_score_adj(init_pid)?;
        } else if m == b"hooks" {
            let json = serde_json::to_vec(&st.to_oci_json(Status::Creating))?;
            if let Some(h) = hooks.and_then(|h| h.poststop().as_ref()) {
                let stopped = serde_json::to_vec(&st.to_oci_json(Status::Stopped))?;
                undo.poststop = Some((h.clone(), stopped));
            }
            hooks::run_all("prestart", hooks.and_then(|h| h.prestart().as_ref()), &json)?;
            hooks::run_all("createRuntime", hooks.and_then(|h| h.create_runtime().as_ref()), &json)?;
            let mut go = b"go".to_vec();
            go.extend_from_slice(&json);
            send(sock, &go);
        } else if m == b"ready" {
            break;
        } else if let Some(e) = m.strip_prefix(b"error:") {
            // A failure after the hooks began (a createContainer hook...) still runs the
            // poststop hooks: Undo does, once the processes are gone.
            bail!("{}", String::from_utf8_lossy(e));
        } else {
            bail!("unexpected message from the container's init: {:?}", String::from_utf8_lossy(&m));
        }
    }
    if init_pid == 0 {
        bail!("the container's init did not report its pid");
    }
    st.save(&o.root)?;
    if let Some(pf) = &o.pid_file {
        write_pid_file(pf, init_pid)?;
    }
    undo.disarm();
    Ok(st)
}

/// The spec's resources plus, as runc does, device cgroup rules that let the container use
/// its default devices and the ones listed in linux.devices (after the spec's own rules).
pub(crate) fn effective_resources(spec: &Spec) -> Result<Option<LinuxResources>> {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};
    let Some(linux) = spec.linux().as_ref() else { return Ok(None) };
    let Some(mut res) = linux.resources().clone() else { return Ok(None) };
    let Some(mut rules) = res.devices().clone() else { return Ok(Some(res)) };
    let rule = |t: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(true).typ(t).access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build()
    };
    let c = LinuxDeviceType::C;
    rules.push(rule(c, None, None, "m")?);
    rules.push(rule(LinuxDeviceType::B, None, None, "m")?);
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
    ] {
        rules.push(rule(c, Some(major), minor, "rwm")?);
    }
    for d in linux.devices().iter().flatten() {
        rules.push(rule(d.typ(), Some(d.major()), Some(d.minor()), "rwm")?);
    }
    res.set_devices(Some(rules));
    Ok(Some(res))
}

/// The exec socket lives in the state dir; binding through /proc/self/fd keeps the address
/// short whatever the length of --root.
fn bind_exec_socket(dir: &Path) -> Result<OwnedFd> {
    let dfd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let path = format!("/proc/self/fd/{}/{EXEC_SOCK}", dfd.as_raw_fd());
    let l = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}/{EXEC_SOCK}", dir.display()))?;
    Ok(OwnedFd::from(l))
}

fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref().context("linux section missing")?;
    let fmt = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.iter().flatten().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect::<String>()
    };
    let (u, g) = (fmt(linux.uid_mappings()), fmt(linux.gid_mappings()));
    if u.is_empty() || g.is_empty() {
        bail!("linux.uidMappings and linux.gidMappings are required with a new user namespace");
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        // An unprivileged user may map only itself, and only after denying setgroups.
        let _ = fs::write(format!("/proc/{pid}/setgroups"), "deny");
    }
    for (file, text, helper) in [("uid_map", &u, "newuidmap"), ("gid_map", &g, "newgidmap")] {
        let p = format!("/proc/{pid}/{file}");
        if let Err(e) = fs::write(&p, text) {
            if root {
                return Err(e).with_context(|| format!("writing {p}"));
            }
            // Several ranges as a user need the setuid helpers from uidmap.
            let mut cmd = std::process::Command::new(helper);
            cmd.arg(pid.to_string());
            for l in text.lines() {
                cmd.args(l.split_whitespace());
            }
            let st = cmd.status().with_context(|| format!("running {helper} (apt install uidmap)"))?;
            if !st.success() {
                bail!("{helper} failed for linux.{}", if file == "uid_map" { "uidMappings" } else { "gidMappings" });
            }
        }
    }
    Ok(())
}

pub(crate) fn write_pid_file(p: &Path, pid: i32) -> Result<()> {
    let tmp = p.with_extension("tmp-berth");
    fs::write(&tmp, pid.to_string()).with_context(|| format!("writing --pid-file {}", p.display()))?;
    fs::rename(&tmp, p).with_context(|| format!("writing --pid-file {}", p.display()))
}

pub struct Container {
    pub root: PathBuf,
    pub state: State,
}

impl Container {
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        Ok(Container { root: root.to_path_buf(), state: State::load(root, id)? })
    }

    pub fn cgroup(&self) -> Option<Cgroup> {
        self.state.cgroup_path.as_ref().and_then(|p| Cgroup::new(Layout::detect(), p).ok())
    }

    pub fn status(&self) -> Status {
        self.state.status(&self.root, || self.cgroup().is_some_and(|c| c.is_frozen()))
    }

    pub fn spec(&self) -> Result<Spec> {
        let p = state::dir(&self.root, &self.state.id).join(SPEC_COPY);
        Ok(crate::spec::parse(&fs::read(&p).with_context(|| format!("reading {}", p.display()))?)?)
    }

    /// The spec, parsed only if its text mentions `key` (a hook list): `start` and `delete`
    /// need it for their hooks alone, and most specs have none.
    fn spec_with(&self, key: &str) -> Result<Option<Spec>> {
        let p = state::dir(&self.root, &self.state.id).join(SPEC_COPY);
        let data = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let has = |pat: &[u8]| data.windows(pat.len()).any(|w| w == pat);
        // A key spelled with \u escapes parses to the same name: parse whenever one appears.
        if !has(format!("\"{key}\"").as_bytes()) && !has(b"\\u") {
            return Ok(None);
        }
        Ok(Some(crate::spec::parse(&data)?))
    }

    fn dir(&self) -> PathBuf {
        state::dir(&self.root, &self.state.id)
    }

    /// Releases the init (it execs the user's process) and runs poststart hooks.
    pub fn start(&self) -> Result<()> {
        let s = self.status();
        if s != Status::Created {
            bail!("cannot start a container that is {s} (only a created container can be started)");
        }
        let dfd = nix::fcntl::open(
            &self.dir(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let path = format!("/proc/self/fd/{}/{EXEC_SOCK}", dfd.as_raw_fd());
        let mut c = UnixStream::connect(&path).context("the container's init is gone")?;
        let mut b = [0u8; 1];
        use std::io::Read;
        let n = c.read(&mut b).context("waiting for the init to start")?;
        let _ = fs::remove_file(self.dir().join(EXEC_SOCK));
        if n != 1 {
            bail!("the container's init died before it could start");
        }
        if let Some(spec) = self.spec_with("poststart")?
            && let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststart().as_ref())
        {
            let json = serde_json::to_vec(&self.state.to_oci_json(Status::Running))?;
            // A failed poststart hook is reported but the container keeps running (spec).
            hooks::run_all_warn("poststart", Some(h), &json);
        }
        Ok(())
    }

    pub fn kill(&self, sig: i32, all: bool) -> Result<()> {
        let s = self.status();
        let cg = self.cgroup();
        if all && let Some(cg) = &cg {
            // A stopped container's init is gone, but without a pid namespace of its own its
            // other processes may live on: --all reaches them (as runc's).
            if s == Status::Stopped && cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
                bail!("container {} is not running", self.state.id);
            }
            return Ok(cg.kill_all(sig)?);
        }
        if s == Status::Stopped {
            bail!("container {} is not running", self.state.id);
        }
        // libc's kill: real-time signals (SIGRTMIN..) have no nix::Signal.
        // SAFETY: kill(2) of the init, checked alive with its start time by status().
        if unsafe { libc::kill(self.state.pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending signal {sig} to {}", self.state.pid));
        }
        Ok(())
    }

    /// Removes a stopped (or created, or with `force` any) container and everything it had.
    pub fn delete(&self, force: bool) -> Result<()> {
        let s = self.status();
        match s {
            // Processes the init left behind (no pid namespace of its own) go with it, as runc.
            Status::Stopped => self.kill_leftovers()?,
            Status::Created => self.kill_and_wait()?,
            _ if force => self.kill_and_wait()?,
            _ => bail!("cannot delete container {} that is not stopped: {s} (use --force)", self.state.id),
        }
        if let Some(cg) = self.cgroup() {
            cg.remove()?;
            remove_default_parent(&cg);
        }
        if let Ok(Some(spec)) = self.spec_with("poststop")
            && let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststop().as_ref())
        {
            let json = serde_json::to_vec(&self.state.to_oci_json(Status::Stopped))?;
            hooks::run_all_warn("poststop", Some(h), &json);
        }
        fs::remove_dir_all(self.dir()).with_context(|| format!("removing {}", self.dir().display()))
    }

    fn kill_leftovers(&self) -> Result<()> {
        let Some(cg) = self.cgroup() else { return Ok(()) };
        if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
            return Ok(());
        }
        cg.kill_all(libc::SIGKILL)?;
        for _ in 0..2000 {
            if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        bail!("the processes left in container {}'s cgroup did not die after SIGKILL", self.state.id)
    }

    fn kill_and_wait(&self) -> Result<()> {
        if let Some(cg) = self.cgroup() {
            cg.kill_all(libc::SIGKILL)?;
        }
        // SAFETY: kill(2); the pid was checked alive with its start time just before.
        unsafe { libc::kill(self.state.pid, libc::SIGKILL) };
        for _ in 0..2000 {
            if !state::pid_alive(self.state.pid, self.state.pid_start) {
                // Reap it if it is our child (run); otherwise its parent does.
                // SAFETY: waitpid with WNOHANG.
                unsafe { libc::waitpid(self.state.pid, std::ptr::null_mut(), libc::WNOHANG) };
                return Ok(());
            }
            // SAFETY: as above.
            unsafe { libc::waitpid(self.state.pid, std::ptr::null_mut(), libc::WNOHANG) };
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        bail!("container {} did not die after SIGKILL", self.state.id)
    }

    pub fn pause(&self) -> Result<()> {
        let s = self.status();
        if s != Status::Running {
            bail!("cannot pause a container that is {s}");
        }
        Ok(self.cgroup().context("container has no cgroup")?.freeze()?)
    }

    pub fn resume(&self) -> Result<()> {
        let s = self.status();
        if s != Status::Paused {
            bail!("cannot resume a container that is {s}");
        }
        Ok(self.cgroup().context("container has no cgroup")?.thaw()?)
    }

    pub fn update(&self, res: &LinuxResources) -> Result<()> {
        if self.status() == Status::Stopped {
            bail!("cannot update a stopped container");
        }
        Ok(self.cgroup().context("container has no cgroup")?.apply(res)?)
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        match self.cgroup() {
            Some(cg) => Ok(cg.pids()?),
            None => Ok(vec![self.state.pid]),
        }
    }

    /// Runs `p` inside the running container. Returns the new process's pid (a child of the
    /// caller, so it can be waited for).
    pub fn exec(&self, p: &Process, console_socket: Option<&Path>, preserve_fds: u32) -> Result<i32> {
        let s = self.status();
        if s != Status::Running && s != Status::Created {
            bail!("cannot exec in a container that is {s}");
        }
        let spec = self.spec()?;
        // The container's filter applies to every process in it; compiled before the fork.
        let seccomp = seccomp::for_spec(&spec)?;
        let attrs = procattr::Attrs::new(spec.linux().as_ref(), p, true)?;
        let initial = procattr::initial_affinity(p)?;
        let (lst, sock) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let console = match console_socket {
            Some(c) => Some(
                UnixStream::connect(c).with_context(|| format!("connecting to --console-socket {}", c.display()))?,
            ),
            None => None,
        };
        if p.terminal() == Some(true) && console.is_none() {
            bail!("process.terminal is true: --console-socket is required");
        }
        // Namespaces of the init that differ from ours, user first.
        let mut join: Vec<(LinuxNamespaceType, OwnedFd)> = Vec::new();
        for t in [
            LinuxNamespaceType::User,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Time,
            LinuxNamespaceType::Mount,
        ] {
            let name = ns::proc_name(t);
            let theirs = format!("/proc/{}/ns/{name}", self.state.pid);
            let mine = format!("/proc/self/ns/{name}");
            if fs::read_link(&theirs).ok() == fs::read_link(&mine).ok() {
                continue;
            }
            let fd = nix::fcntl::open(
                theirs.as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .with_context(|| format!("opening {theirs}"))?;
            join.push((t, fd));
        }
        if !state::pid_alive(self.state.pid, self.state.pid_start) {
            bail!("container {} stopped", self.state.id);
        }
        let cg = self.cgroup();
        let child_sock = sock.as_raw_fd();
        let console_fd = console.as_ref().map(|c| c.as_raw_fd());
        let (stage, v2_joined) = match &initial {
            None => init::fork_into(cg.as_ref())?,
            // execCPUAffinity.initial: the stage runs on those CPUs until it joins the cgroup,
            // so it is forked outside the cgroup (not cloned into it) with that affinity, which
            // the runtime takes for the fork and gives back right after.
            Some(m) => {
                let mine = procattr::get_affinity().context("sched_getaffinity")?;
                procattr::set_affinity(m).map_err(|e| {
                    anyhow::anyhow!("process.execCPUAffinity.initial: {}", procattr::affinity_error(&e))
                })?;
                let r = init::fork_into(None);
                if !matches!(r, Ok((0, _))) {
                    let _ = procattr::set_affinity(&mine);
                }
                r?
            }
        };
        if stage == 0 {
            let a = StageArgs { p, join: &join, sock: child_sock, console: console_fd, preserve: preserve_fds };
            exec_stage(&a, seccomp.as_ref(), &attrs, cg.as_ref(), v2_joined);
        }
        drop(sock);
        drop(console);
        let undo = Undo { dir: None, cgroup: None, pids: vec![stage], poststop: None };
        send(lst.as_raw_fd(), b"go");
        let mut pid = 0;
        let mut listener = None;
        loop {
            let (m, fd) = init::recv_with_fd(lst.as_raw_fd())?;
            if m == b"seccomp" {
                listener = fd;
            }
            if pid > 0
                && let (Some(l), Some(f)) = (listener.take(), seccomp.as_ref().and_then(|f| f.listener()))
            {
                // The agent gets the listener with the process's (host) pid and our state.
                let state = self.state.to_oci_json(Status::Running);
                seccomp::Agent::connect(f, pid, state)?.send(l.as_raw_fd())?;
            }
            if m.is_empty() {
                if pid > 0 {
                    break;
                }
                bail!("exec: the process exited during setup");
            } else if let Some(p) = m.strip_prefix(b"pid:") {
                pid = std::str::from_utf8(p)?.parse()?;
                // SAFETY: reap the stage.
                unsafe { libc::waitpid(stage, std::ptr::null_mut(), 0) };
            } else if let Some(e) = m.strip_prefix(b"error:") {
                if pid > 0 {
                    // SAFETY: reap the failed exec child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                }
                bail!("exec: {}", String::from_utf8_lossy(e));
            }
        }
        undo.disarm();
        Ok(pid)
    }
}

struct StageArgs<'a> {
    p: &'a Process,
    join: &'a [(LinuxNamespaceType, OwnedFd)],
    sock: RawFd,
    console: Option<RawFd>,
    preserve: u32,
}

/// The child of `exec`: join the container (its cgroup first, see init::fork_into), then fork
/// the process (pid namespaces apply to children), which sets itself up and execs. Never
/// returns.
fn exec_stage(
    a: &StageArgs,
    seccomp: Option<&seccomp::Filter>,
    attrs: &procattr::Attrs,
    cg: Option<&Cgroup>,
    v2_joined: bool,
) -> ! {
    let StageArgs { p, join, sock, console, preserve } = *a;
    let r = (|| -> Result<()> {
        init::expect_go(sock)?;
        if let Some(cg) = cg {
            cg.join_self(v2_joined).context("joining the container's cgroup")?;
        }
        for (t, fd) in join {
            ns::setns(fd, *t)?;
        }
        let pid = init::raw_clone(libc::CLONE_PARENT)?;
        if pid == 0 {
            let Err(e) = (|| -> Result<std::convert::Infallible> {
                if let Some(c) = console {
                    init::setup_console(c, p, false)?;
                }
                init::prepare_process(p)?;
                let args = p.args().clone().unwrap_or_default();
                let env = p.env().clone().unwrap_or_default();
                let exe = crate::process::find_executable(args.first().context("process.args is empty")?, &env)?;
                // A filter with NOTIFY rules: its listener goes to the runtime, which forwards it.
                let agent = match seccomp.and_then(|f| f.listener()) {
                    Some(_) => {
                        // SAFETY: fcntl on our end of the channel; a new fd from the kernel.
                        let d = unsafe { libc::fcntl(sock, libc::F_DUPFD_CLOEXEC, 3) };
                        if d < 0 {
                            return Err(std::io::Error::last_os_error()).context("dup");
                        }
                        // SAFETY: as above.
                        let s = unsafe { std::os::fd::FromRawFd::from_raw_fd(d) };
                        Some(seccomp::Agent::via(s, b"seccomp"))
                    }
                    None => None,
                };
                init::finish_and_exec(p, &exe, preserve, seccomp, Some(attrs), agent.as_ref())
            })();
            send(sock, format!("error:{e:#}").as_bytes());
            // SAFETY: leave the failed child without running destructors.
            unsafe { libc::_exit(127) }
        }
        send(sock, format!("pid:{pid}").as_bytes());
        Ok(())
    })();
    if let Err(e) = r {
        send(sock, format!("error:{e:#}").as_bytes());
        // SAFETY: as above.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// Every container under `root`.
pub fn list(root: &Path) -> Result<Vec<Container>> {
    let mut v = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(c) = Container::load(root, &name) {
            v.push(c);
        }
    }
    v.sort_by(|a, b| a.state.created.cmp(&b.state.created));
    Ok(v)
}

/// Waits for `pid` (a child of ours) and returns its exit code the way a shell reports it.
pub fn wait_exit_code(pid: i32) -> Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for the container");
        }
        if libc::WIFEXITED(status) {
            return Ok(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(128 + libc::WTERMSIG(status));
        }
    }
}
