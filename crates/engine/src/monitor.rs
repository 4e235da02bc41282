//! The monitor: one small process per running container that outlives the command which
//! started it. It mounts the container's root, writes the OCI config, creates and starts the
//! container through the runtime library (so the container's init is its child), copies the
//! container's output into the log (and to the caller's terminal when attached), waits for the
//! exit, records it, and tears everything down. It reports to the starting command over fd 3:
//! `started PID`, `error CODE MESSAGE`, `exit CODE`.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result};
use berth_image::manifest::chain_ids;
use berth_runtime::container::{Container, CreateOptions, create};
use berth_runtime::tty::{copy_winsize, write_all};
use berth_storage::RootFs;
use rusqlite::params;

use crate::containers::{ContainerRow, owned};
use crate::logs;
use crate::networks::{Endpoint, Network, uses_endpoints};
use crate::spec::{self, EtcFiles};
use crate::{Engine, db};

const STATUS_FD: RawFd = 3;

/// The body of `berth container-monitor ID`. Returns the process exit code.
pub fn run(root: &Path, runroot: &Path, id: &str, attach: bool, stdin: bool) -> i32 {
    // SAFETY: plain signal dispositions; we are single threaded.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        // Setup's big temporaries (the database's pages, JSON, the seccomp program) get their
        // own mappings, gone when freed, instead of fragmenting the heap the monitor keeps.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 10);
        // An external runtime's init is orphaned when the runtime exits: it comes to us.
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    crate::liveness::hold(runroot);
    let mut status = fs::File::from(owned(STATUS_FD));
    // Everything up to the running container happens in a forked child (see setup_forked):
    // the monitor's own memory stays what the pump needs.
    let (c, started) = match setup_forked(root, runroot, id, Some(&mut status)) {
        Ok(x) => x,
        // The child has said what went wrong on the status pipe and cleaned up.
        Err(_) => return 1,
    };
    let mut engine: Engine;
    // `berth attach` connects here while the container runs: bound before the command that
    // started us returns, so that an attach right after `run -d` finds it.
    let attach_sock = AttachSocket::bind(&attach_path(runroot, &c.id));
    // The runtime health checks exec through, looked up once (not at each restart) and only
    // for a container that has checks.
    let health_runtime = match &c.config.healthcheck {
        Some(h) if h.enabled() => crate::runtimes::external_of(runroot, &c.config.runtime).ok().flatten(),
        _ => None,
    };
    let _ = writeln!(status, "started {}", started.pid);
    let mut status = Some(status);
    let mut started = started;
    let mut failures = 0u32;
    loop {
        // Nothing to do with the database until the exit: its memory goes back to the system
        // (a monitor per container must stay small).
        // SAFETY: malloc_trim only returns free heap pages.
        unsafe { libc::malloc_trim(0) };
        release_unused_stack();
        let began = std::time::Instant::now();
        let mut health = crate::health::Checker::new(
            c.config.healthcheck.as_ref().unwrap_or(&Default::default()),
            &runroot.join("runtime"),
            &c.id,
            &c.dir,
            health_runtime.clone(),
        );
        let code = pump(&c, &started, attach, stdin, &mut status, &mut health, attach_sock.as_ref());
        // The published ports go with the run: a restart binds them again.
        started.held.clear();
        let Ok(e) = Engine::open_unrepaired(root, runroot) else { return 1 };
        engine = e;
        let oom = teardown_run(&engine, &c);
        let row = engine.container(&c.id).ok();
        let count = row.as_ref().map(|r| r.restart_count).unwrap_or(0);
        let stopped = row.as_ref().is_none_or(|r| r.error == "stopped");
        // The policy as it is now: `update --restart` may have changed it since the start.
        let policy = row.as_ref().map_or(c.config.restart.as_str(), |r| r.config.restart.as_str());
        if stopped || !should_restart(policy, code, count) {
            return finish(&engine, &c, code, oom, status.take());
        }
        // Restart with Docker's backoff: 100 ms doubling to a minute, reset after 10 s of running.
        failures = if began.elapsed() > std::time::Duration::from_secs(10) { 0 } else { failures + 1 };
        let _ = engine.db.execute(
            "UPDATE containers SET state = 'restarting', exit_code = ?2, finished = ?3, pid = 0, oom_killed = ?4, restart_count = restart_count + 1 WHERE id = ?1",
            params![c.id, code, db::now_nanos(), oom as i64],
        );
        engine.container_event(&c, "die", &[("exitCode", &code.to_string())]);
        if let Some(mut s) = status.take() {
            let _ = writeln!(s, "exit {code}");
        }
        let delay =
            std::time::Duration::from_millis(100u64 << failures.min(10)).min(std::time::Duration::from_secs(60));
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if engine.container(&c.id).map(|r| r.error == "stopped").unwrap_or(true) {
                return finish(&engine, &c, code, oom, None);
            }
        }
        drop(engine);
        started = match setup_forked(root, runroot, &c.id, None) {
            Ok((_, s)) => s,
            Err(_) => {
                let Ok(e) = Engine::open_unrepaired(root, runroot) else { return 1 };
                teardown_run(&e, &c);
                return finish(&e, &c, 127, false, None);
            }
        };
    }
}

/// Whether `policy` (`no`, `always`, `unless-stopped`, `on-failure[:N]`) restarts after `code`.
pub fn should_restart(policy: &str, code: i32, restarts: i64) -> bool {
    match policy.split_once(':').unwrap_or((policy, "")) {
        ("always" | "unless-stopped", _) => true,
        ("on-failure", max) => code != 0 && max.parse::<i64>().map(|m| restarts < m).unwrap_or(true),
        _ => false,
    }
}

struct Running {
    pid: i32,
    /// stdout, or the pty master with -t.
    out: OwnedFd,
    err: Option<OwnedFd>,
    /// The write end of a `-i` container's stdin pipe when no caller's input is on it (run -di,
    /// start without -i): `berth attach` writes there.
    input: Option<OwnedFd>,
    saved: Option<(OwnedFd, OwnedFd)>,
    tty: bool,
    /// Sockets that hold the published host ports while the container runs.
    held: Vec<OwnedFd>,
}

/// Runs [`setup_and_start`] in a forked child, so that what setup allocates (the database, the
/// spec's JSON, the runtime's work) never lands in the monitor's own memory, which it keeps for
/// as long as the container runs. The child hands back the container's row, its output fds and
/// the sockets that hold its ports, and exits; the container's init, the child's child, is then
/// orphaned to the monitor (a child subreaper), as if the monitor had made it. For the first
/// start (`status` given) the child also claims the container for the monitor and, if setup
/// fails, cleans up and reports on the status pipe itself.
fn setup_forked(
    root: &Path,
    runroot: &Path,
    id: &str,
    status: Option<&mut fs::File>,
) -> Result<(ContainerRow, Running)> {
    use nix::sys::socket::{AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair};
    let (parent_end, child_end) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).context("socketpair")?;
    // SAFETY: the monitor is single threaded; the child runs setup and _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if child == 0 {
        drop(parent_end);
        let word = match child_setup(root, runroot, id, status) {
            Some((c, r)) => {
                let mut fds = vec![r.out.as_raw_fd()];
                fds.extend(r.err.as_ref().map(|e| e.as_raw_fd()));
                fds.extend(r.input.as_ref().map(|e| e.as_raw_fd()));
                fds.extend(r.held.iter().map(|h| h.as_raw_fd()));
                let row = serde_json::to_string(&c).unwrap_or_default();
                let msg = format!(
                    "ok {} {} {} {} {row}",
                    r.pid,
                    r.err.is_some() as u8,
                    r.input.is_some() as u8,
                    r.held.len()
                );
                let iov = [std::io::IoSlice::new(msg.as_bytes())];
                let sent = sendmsg::<()>(
                    child_end.as_raw_fd(),
                    &iov,
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                );
                i32::from(sent.is_err())
            }
            None => {
                let _ = nix::unistd::write(&child_end, b"failed");
                0
            }
        };
        // SAFETY: leave without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(word) };
    }
    drop(child_end);
    let mut buf = vec![0u8; 256 << 10];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 256]);
    let got =
        nix::sys::socket::recvmsg::<()>(parent_end.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC);
    let mut fds: Vec<OwnedFd> = Vec::new();
    let len = match &got {
        Ok(m) => {
            for cm in m.cmsgs().into_iter().flatten() {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(v) = cm {
                    fds.extend(v.into_iter().map(owned));
                }
            }
            m.bytes
        }
        Err(_) => 0,
    };
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    drop(buf);
    // SAFETY: reap the setup child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    let rest = text.strip_prefix("ok ").context("the container's setup failed")?;
    let mut parts = rest.splitn(5, ' ');
    let mut num = || parts.next().and_then(|x| x.parse::<i64>().ok()).context("a garbled word from the setup");
    let (pid, has_err, has_in, held) = (num()? as i32, num()? == 1, num()? == 1, num()? as usize);
    let c: ContainerRow =
        serde_json::from_str(parts.next().unwrap_or("")).context("the container's row from the setup")?;
    let want = 1 + has_err as usize + has_in as usize + held;
    if fds.len() != want {
        anyhow::bail!("the container's setup handed over {} files, not {want}", fds.len());
    }
    let mut fds = fds.into_iter();
    let out = fds.next().context("no output fd")?;
    let err = if has_err { fds.next() } else { None };
    let input = if has_in { fds.next() } else { None };
    let saved = Some((dup_cloexec(1)?, dup_cloexec(2)?));
    let tty = c.config.tty;
    Ok((c, Running { pid, out, err, input, saved, tty, held: fds.collect() }))
}

/// The setup child's work: open the engine, (first start) claim the container for our parent,
/// set up and start it. None when it failed; then the first start's failure is cleaned up and
/// reported here.
fn child_setup(
    root: &Path,
    runroot: &Path,
    id: &str,
    status: Option<&mut fs::File>,
) -> Option<(ContainerRow, Running)> {
    let fail = |status: Option<&mut fs::File>, msg: String| {
        if let Some(s) = status {
            let _ = writeln!(s, "{}", one_line(&msg));
        }
        None
    };
    let engine = match Engine::open_unrepaired(root, runroot) {
        Ok(e) => e,
        Err(e) => return fail(status, format!("error 125 {e:#}")),
    };
    let c = match engine.container(id) {
        Ok(c) => c,
        Err(e) => return fail(status, format!("error 125 {e:#}")),
    };
    let first = status.is_some();
    if first {
        // SAFETY: getppid.
        let monitor = unsafe { libc::getppid() };
        let start = berth_runtime::state::proc_start(monitor).map(|s| s.0).unwrap_or(0);
        // Claim the container; a concurrent start of the same container loses here.
        let claimed = engine
            .db
            .execute(
                "UPDATE containers SET monitor_pid = ?2, monitor_start = ?3, error = '' WHERE id = ?1 AND state NOT IN ('running', 'paused') AND (monitor_pid = 0 OR monitor_pid = ?2)",
                params![c.id, monitor, start as i64],
            )
            .unwrap_or(0);
        if claimed != 1 {
            return fail(status, format!("error 125 container {} is already being started or running", c.name));
        }
    }
    let rootfs = RootFs::path(&engine.layers, &c.id);
    match setup_and_start(&engine, &c, &rootfs) {
        Ok(r) => {
            engine.container_event(&c, "start", &[]);
            Some((c, r))
        }
        Err(e) if first => {
            let msg = format!("{e:#}");
            let code = crate::start_failure_code(&msg);
            if let Ok(rt) = engine.runtime_of(&c) {
                rt.delete();
            }
            let _ = engine.network_down(&c);
            let _ = rootfs.unmount();
            let _ = engine.db.execute(
                "UPDATE containers SET monitor_pid = 0, exit_code = ?2, error = ?3 WHERE id = ?1",
                params![c.id, code, msg],
            );
            engine.volumes_down(&c);
            if c.config.auto_remove {
                let _ = engine.remove_container(&c.id, true);
                engine.remove_anonymous_volumes(&c);
            }
            fail(status, format!("error {code} failed to start container {}: {msg}", &c.id[..12]))
        }
        Err(_) => None,
    }
}

fn setup_and_start(engine: &Engine, c: &ContainerRow, rootfs: &RootFs) -> Result<Running> {
    let image = engine.resolve_image(&c.image)?;
    let cfg = engine.config_of(&image)?;
    let chains = chain_ids(&cfg.rootfs.diff_ids);
    match &c.config.userns {
        Some(shift) => rootfs.mount_shifted(&engine.layers, &chains, shift)?,
        None => rootfs.mount(&engine.layers, &chains)?,
    }
    engine.volumes_up(c, &rootfs.merged())?;
    let dir = engine.container_dir(&c.id);
    let (hosts, hostname, resolv) = (dir.join("hosts"), dir.join("hostname"), dir.join("resolv.conf"));
    let bridged = uses_endpoints(&c.config.network);
    let eps = if bridged { engine.endpoints_of_container(&c.id)? } else { Vec::new() };
    let mut config = c.config.clone();
    if let Some(other) = c.config.network.strip_prefix("container:") {
        // Another container's network namespace, hosts and resolv.conf.
        let o = engine.container(other).with_context(|| format!("joining the network of container {other}"))?;
        if o.state != "running" || o.pid <= 0 {
            anyhow::bail!("cannot join the network of container {}: it is not running", o.name);
        }
        config.network = format!("ns:/proc/{}/ns/net", o.pid);
        let odir = engine.container_dir(&o.id);
        fs::copy(odir.join("hosts"), &hosts).context("copying the other container's hosts file")?;
        fs::copy(odir.join("resolv.conf"), &resolv).context("copying the other container's resolv.conf")?;
        fs::write(&hostname, format!("{}\n", c.config.hostname))?;
    } else {
        write_etc(c, &eps, &hosts, &hostname, &resolv)?;
    }
    if let Some(shift) = &c.config.userns {
        // The container's root owns its own /etc files, as without a user namespace.
        for f in [&hosts, &hostname, &resolv] {
            std::os::unix::fs::chown(f, Some(shift.uid), Some(shift.gid))
                .with_context(|| format!("handing {} to the container's root", f.display()))?;
        }
    }
    let init = if c.config.init { Some(engine.init_binary()?) } else { None };
    let etc = EtcFiles { hosts: &hosts, hostname: &hostname, resolv: &resolv, init: init.as_deref() };
    let v2 = matches!(berth_cgroups::Layout::detect(), berth_cgroups::Layout::V2 { .. });
    // The built-in runtime, or another binary with runc's command line (--runtime).
    let external = crate::runtimes::external_of(&engine.runroot, &c.config.runtime)?;
    let mut spec = spec::build(&config, &rootfs.merged(), &etc, v2)?;
    if external.is_none() {
        // Ours under one parent (the built-in runtime removes it once empty); another runtime
        // keeps its own default.
        let parent = berth_runtime::container::ENGINE_CGROUP_PARENT;
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{parent}/{}", c.id));
    }
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
    let saved = (dup_cloexec(1)?, dup_cloexec(2)?);
    let mut opts =
        CreateOptions { root: engine.runtime_root(), id: c.id.clone(), bundle: dir.clone(), ..Default::default() };
    let create = |opts: &CreateOptions| -> Result<i32> {
        match &external {
            None => create(opts).map(|s| s.pid),
            Some((bin, root)) => {
                crate::runtimes::external_create(bin, root, &opts.bundle, &opts.id, opts.console_socket.as_deref())
            }
        }
    };
    let mut input = None;
    let (out, err, pid) = if c.config.tty {
        // With -t the runtime sends us the pty master through a console socket. The init
        // connects and sends during create; the kernel queues both until we accept after.
        // In the runroot: a unix socket path must stay under 108 bytes.
        let sock = engine.runroot.join(format!("tty-{}.sock", &c.id[..16]));
        let _ = fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).context("creating the console socket")?;
        opts.console_socket = Some(sock.clone());
        let made = create(&opts);
        let _ = fs::remove_file(&sock);
        let pid = made?;
        let (conn, _) = listener.accept().context("accepting the console socket")?;
        let master = recv_fd(conn.as_raw_fd())?;
        copy_winsize(saved.0.as_raw_fd(), master.as_raw_fd());
        (master, None, pid)
    } else {
        // The container's stdout and stderr are pipes to us. With -i and no caller's input on
        // our stdin (run -di, a start without -i: it is /dev/null), its stdin is a pipe from
        // us too, which `berth attach` writes to, as Docker keeps a -i container's stdin open.
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let stdin_pipe = if c.config.interactive && is_dev_null(0) {
            Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
        } else {
            None
        };
        let saved_in = match &stdin_pipe {
            Some((r, _)) => {
                let s = dup_cloexec(0)?;
                dup2(r.as_raw_fd(), 0)?;
                Some(s)
            }
            None => None,
        };
        dup2(out_w.as_raw_fd(), 1)?;
        dup2(err_w.as_raw_fd(), 2)?;
        let made = create(&opts);
        dup2(saved.0.as_raw_fd(), 1)?;
        dup2(saved.1.as_raw_fd(), 2)?;
        if let Some(s) = &saved_in {
            dup2(s.as_raw_fd(), 0)?;
        }
        drop((out_w, err_w));
        input = stdin_pipe.map(|(_, w)| w);
        (out_r, Some(err_r), made?)
    };
    let held = if bridged {
        engine.network_up(c, pid)?
    } else {
        if matches!(c.config.network.as_str(), "none" | "") {
            loopback_up(pid)?;
        }
        Vec::new()
    };
    match &external {
        None => Container::load(&engine.runtime_root(), &c.id)?.start()?,
        Some((bin, root)) => crate::runtimes::external_start(bin, root, &c.id)?,
    }
    engine.db.execute(
        "UPDATE containers SET state = 'running', pid = ?2, started = ?3, exit_code = 0, oom_killed = 0 WHERE id = ?1",
        params![c.id, pid, db::now_nanos()],
    )?;
    Ok(Running { pid, out, err, input, saved: Some(saved), tty: c.config.tty, held })
}

/// Copies the container's output to the log (and the caller's terminal) until its init exits.
/// With a pty and `stdin`, also copies the caller's input to the container, watching for the
/// detach keys (ctrl-p ctrl-q).
fn pump(
    c: &ContainerRow,
    r: &Running,
    attach: bool,
    stdin: bool,
    status: &mut Option<fs::File>,
    health: &mut Option<crate::health::Checker>,
    attach_sock: Option<&AttachSocket>,
) -> i32 {
    let mut clients: Vec<std::os::unix::net::UnixStream> = Vec::new();
    let mut log = if c.config.log_driver == "none" {
        None
    } else {
        let k8s = c.config.log_driver == "k8s-file";
        logs::Writer::open(&c.log_path(), c.config.log_max_size, c.config.log_max_file.max(1), k8s).ok()
    };
    let mut term = if attach { r.saved.as_ref().map(|(o, e)| (o.as_raw_fd(), e.as_raw_fd())) } else { None };
    let winch = if r.tty && attach { crate::containers::SignalPipe::install(&[libc::SIGWINCH]).ok() } else { None };
    let mut input = r.tty && attach && stdin;
    // SAFETY: pidfd_open of our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, r.pid, 0) } as RawFd;
    let streams = [Some(r.out.as_raw_fd()), r.err.as_ref().map(|e| e.as_raw_fd())];
    let mut open = [true, streams[1].is_some()];
    let mut exited = false;
    // Small: it is ours for as long as the container runs (a pipe read rarely brings more).
    let mut buf = vec![0u8; 16 << 10];
    let mut drain_deadline: Option<std::time::Instant> = None;
    let mut keys = crate::containers::DetachKeys::new(&c.config.detach_keys)
        .unwrap_or_else(|_| crate::containers::DetachKeys::new("").expect("the default detach keys"));
    while open[0] || open[1] {
        let fd_or = |on: bool, fd: Option<RawFd>| if on { fd.unwrap_or(-1) } else { -1 };
        let mut fds = vec![
            libc::pollfd { fd: fd_or(open[0], streams[0]), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: fd_or(open[1], streams[1]), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if exited || pidfd < 0 { -1 } else { pidfd }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if input { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd {
                fd: winch.as_ref().map(|w| w.read.as_raw_fd()).unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let checks = if exited { None } else { health.as_ref() };
        let (probe, probe_out) = checks.map(|h| h.fds()).unwrap_or((-1, -1));
        fds.push(libc::pollfd { fd: probe, events: libc::POLLIN, revents: 0 });
        fds.push(libc::pollfd { fd: probe_out, events: libc::POLLIN, revents: 0 });
        let listen_fd = if exited { -1 } else { attach_sock.map(|a| a.listener.as_raw_fd()).unwrap_or(-1) };
        fds.push(libc::pollfd { fd: listen_fd, events: libc::POLLIN, revents: 0 });
        let first_client = fds.len();
        for cl in &clients {
            fds.push(libc::pollfd { fd: cl.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let timeout = if exited { 100 } else { checks.map(|h| h.timeout_ms()).unwrap_or(-1) };
        // SAFETY: poll over fds we hold.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, timeout) };
        if n < 0 {
            continue;
        }
        if !exited && let Some(h) = health.as_mut() {
            h.tick();
        }
        let polled = clients.len();
        if fds[first_client - 1].revents != 0
            && let Some(a) = attach_sock
            && let Ok((cl, _)) = a.listener.accept()
        {
            let _ = cl.set_nonblocking(true);
            clients.push(cl);
        }
        // Input from attached clients goes to the pty (a container without one has no stdin to
        // give them); a client that hangs up is dropped.
        let mut gone = Vec::new();
        for (i, cl) in clients.iter().enumerate().take(polled) {
            let re = fds[first_client + i].revents;
            if re == 0 {
                continue;
            }
            // SAFETY: read into our buffer.
            let k = unsafe { libc::read(cl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if k <= 0 {
                gone.push(i);
            } else if r.tty {
                write_all(r.out.as_raw_fd(), &buf[..k as usize]);
            } else if let Some(w) = &r.input {
                write_all(w.as_raw_fd(), &buf[..k as usize]);
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        if fds[2].revents != 0 {
            if let Some(h) = health.as_mut() {
                h.abort();
            }
            exited = true;
            drain_deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
        }
        if fds[4].revents != 0
            && let Some(w) = &winch
        {
            w.drain();
            if let Some((o, _)) = term {
                copy_winsize(o, r.out.as_raw_fd());
            }
        }
        if fds[3].revents != 0 {
            // SAFETY: read from our stdin into our buffer.
            let k = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if k <= 0 {
                input = false;
            } else {
                let (data, detach) = keys.filter(&buf[..k as usize]);
                write_all(r.out.as_raw_fd(), &data);
                if detach {
                    // The container goes on; the caller leaves.
                    input = false;
                    term = None;
                    if let Some(mut s) = status.take() {
                        let _ = writeln!(s, "detached");
                    }
                }
            }
        }
        for s in 0..2 {
            if fds[s].revents == 0 {
                continue;
            }
            let fd = streams[s].unwrap_or(-1);
            // SAFETY: read into our buffer.
            let k = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if k <= 0 {
                // A pty master reads EIO once the last slave is closed: that is its end.
                open[s] = false;
                continue;
            }
            let data = &buf[..k as usize];
            if let Some(l) = log.as_mut() {
                let _ = l.write(s, data);
            }
            if let Some((o, e)) = term {
                write_all(if s == 0 { o } else { e }, data);
            }
            // Attached clients: raw bytes with a pty, else Docker's frames (stream, length).
            // A client that cannot keep up loses output rather than stall the container.
            clients.retain(|cl| {
                let mut frame = Vec::with_capacity(data.len() + 8);
                if !r.tty {
                    frame.extend_from_slice(&[s as u8 + 1, 0, 0, 0]);
                    frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
                }
                frame.extend_from_slice(data);
                // SAFETY: a non-blocking write from our buffer.
                let n = unsafe { libc::write(cl.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
                n >= 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
            });
        }
        // Background processes that escaped the pid namespace could hold the pipes forever.
        if exited && n == 0 && drain_deadline.is_some_and(|d| std::time::Instant::now() > d) {
            break;
        }
    }
    if let Some(l) = log.as_mut() {
        let _ = l.flush();
    }
    if let Some(h) = health.as_mut() {
        h.abort();
    }
    berth_runtime::container::wait_exit_code(r.pid).unwrap_or(255)
}

/// Gives back the stack pages that setup dirtied deep below where the monitor now runs: the
/// monitor then waits for days with a shallow stack, and those pages would stay its own.
#[inline(never)]
fn release_unused_stack() {
    // The stack pointer itself: the address of a local says little, as the compiler may place
    // it anywhere in a frame that reaches far below it.
    let sp: usize;
    // SAFETY: reads a register.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: reads a register.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return;
    let Ok(maps) = fs::read_to_string("/proc/self/maps") else { return };
    let Some(line) = maps.lines().find(|l| l.ends_with("[stack]")) else { return };
    let Some((lo, _)) = line.split_whitespace().next().and_then(|r| r.split_once('-')) else { return };
    let Ok(lo) = usize::from_str_radix(lo, 16) else { return };
    // Keep two pages below the stack pointer for this function's own calls (read, madvise);
    // what the pump touches deeper later comes back zeroed on first use, so the monitor ends up
    // holding just the stack its loop needs.
    let keep_from = (sp.saturating_sub(8 << 10)) & !4095;
    if keep_from > lo {
        // SAFETY: the range lies below the stack pointer (minus the margin) of our only thread:
        // no live frame uses it; pages come back zeroed if ever touched again.
        unsafe { libc::madvise(lo as *mut libc::c_void, keep_from - lo, libc::MADV_DONTNEED) };
    }
}

/// Where `berth attach` finds a container's monitor (a short path: < 108 bytes).
pub(crate) fn attach_path(runroot: &Path, id: &str) -> std::path::PathBuf {
    runroot.join(format!("attach-{}.sock", &id[..16.min(id.len())]))
}

/// The monitor's attach socket; the file goes when the monitor ends.
pub(crate) struct AttachSocket {
    listener: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
}

impl AttachSocket {
    fn bind(path: &Path) -> Option<AttachSocket> {
        let _ = fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).ok()?;
        listener.set_nonblocking(true).ok()?;
        Some(AttachSocket { listener, path: path.to_path_buf() })
    }
}

impl Drop for AttachSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Receives one fd sent with SCM_RIGHTS.
pub(crate) fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(RawFd);
    let msg =
        nix::sys::socket::recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC)
            .context("receiving the pty master")?;
    for c in msg.cmsgs().context("reading the console message")? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            return Ok(owned(fd));
        }
    }
    anyhow::bail!("the runtime sent no pty master on the console socket")
}

/// Removes the runtime's state and cgroup of the run that ended; returns whether the OOM killer struck.
fn teardown_run(engine: &Engine, c: &ContainerRow) -> bool {
    let rt = engine.runtime_of(c).ok();
    let oom = match &rt {
        Some(crate::runtimes::Runtime::Builtin(rc)) => {
            rc.cgroup().and_then(|cg| cg.stats().ok()).is_some_and(|s| s.oom_kills > 0)
        }
        _ => false,
    };
    if let Some(rt) = rt {
        rt.delete();
    }
    let _ = engine.network_down(c);
    engine.volumes_down(c);
    oom
}

/// Records the exit and removes what the container had; reports `exit CODE`.
fn finish(engine: &Engine, c: &ContainerRow, code: i32, oom: bool, status: Option<fs::File>) -> i32 {
    if oom {
        engine.container_event(c, "oom", &[]);
    }
    engine.container_event(c, "die", &[("exitCode", &code.to_string())]);
    let _ = RootFs::path(&engine.layers, &c.id).unmount();
    let _ = engine.db.execute(
        "UPDATE containers SET state = 'exited', exit_code = ?2, finished = ?3, pid = 0, monitor_pid = 0, oom_killed = ?4 WHERE id = ?1",
        params![c.id, code, db::now_nanos(), oom as i64],
    );
    if c.config.auto_remove {
        let _ = engine.remove_container(&c.id, true);
        engine.remove_anonymous_volumes(c);
    }
    if let Some(mut s) = status {
        let _ = writeln!(s, "exit {code}");
    }
    0
}

/// A running container's /etc/hosts and resolv.conf again, after a connect or disconnect: the
/// networks it resolves names on changed. Written in place (they are bind-mounted).
pub(crate) fn rewrite_etc(engine: &Engine, c: &ContainerRow) -> Result<()> {
    if !matches!(c.state.as_str(), "running" | "paused") || c.config.network.starts_with("container:") {
        return Ok(());
    }
    let dir = engine.container_dir(&c.id);
    let eps = engine.endpoints_of_container(&c.id)?;
    write_etc(c, &eps, &dir.join("hosts"), &dir.join("hostname"), &dir.join("resolv.conf"))
}

/// systemd-resolved's list of the upstream servers it uses (Docker reads it too).
const RESOLVED_CONF: &str = "/run/systemd/resolve/resolv.conf";

fn loopback_nameserver(l: &str) -> bool {
    let mut w = l.split_whitespace();
    w.next() == Some("nameserver") && w.next().is_some_and(|a| a.starts_with("127.") || a == "::1")
}

/// What a container on a bridge network takes its resolvers from: the host's resolv.conf, or
/// systemd-resolved's file when every nameserver of the host's is on loopback (the stub).
fn container_resolv_source<'a>(host: &'a str, resolved: Option<&'a str>) -> &'a str {
    match resolved {
        Some(r)
            if only_loopback_servers(host)
                && r.lines()
                    .any(|l| l.trim_start().starts_with("nameserver") && !loopback_nameserver(l.trim_start())) =>
        {
            r
        }
        _ => host,
    }
}

/// Whether every nameserver of `conf` (at least one) is on loopback.
fn only_loopback_servers(conf: &str) -> bool {
    let mut servers = conf.lines().map(str::trim_start).filter(|l| l.starts_with("nameserver")).peekable();
    servers.peek().is_some() && servers.all(loopback_nameserver)
}

fn write_etc(
    c: &ContainerRow,
    eps: &[(Endpoint, Network)],
    hosts: &Path,
    hostname: &Path,
    resolv: &Path,
) -> Result<()> {
    let mut h = if c.config.network == "host" {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string()
    };
    // The container's own address under its hostname, as Docker writes it.
    if let Some((ep, _)) = eps.first() {
        h.push_str(&format!("{}\t{}\n", ep.ip, c.config.hostname));
    }
    for a in &c.config.add_hosts {
        let (name, ip) = crate::resources::parse_add_host(a)?;
        let ip = match ip {
            // Docker's special word: the host, as the container reaches it (its network's
            // gateway; the host's loopback with --network host).
            None => match Engine::primary(eps) {
                Some((_, n)) => n.gateway.to_string(),
                None => "127.0.0.1".to_string(),
            },
            Some(ip) => ip.to_string(),
        };
        h.push_str(&format!("{ip}\t{name}\n"));
    }
    fs::write(hosts, h)?;
    fs::write(hostname, format!("{}\n", c.config.hostname))?;
    let host_conf = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let named: Vec<&Network> = eps.iter().map(|(_, n)| n).filter(|n| n.dns).collect();
    let r = if !named.is_empty() {
        // User networks: their DNS servers (on the gateways) answer the names of every network
        // the container is on and forward the rest to its --dns servers, else the host's
        // resolvers (as Docker's embedded server does); the host's search list and options
        // follow ours.
        let host_search: Vec<&str> = host_conf
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("search "))
            .flat_map(str::split_whitespace)
            .collect();
        let mut r = format!(
            "search {}\n",
            std::iter::once(berth_network::dns::DOMAIN).chain(host_search).collect::<Vec<_>>().join(" ")
        );
        for n in named {
            r.push_str(&format!("nameserver {}\n", n.gateway));
        }
        for l in host_conf.lines().filter(|l| l.trim_start().starts_with("options ")) {
            r.push_str(l.trim_start());
            r.push('\n');
        }
        r
    } else if !c.config.dns.is_empty() {
        c.config.dns.iter().map(|d| format!("nameserver {d}\n")).collect()
    } else if c.config.network == "host" {
        host_conf
    } else {
        // The host's resolvers, but not loopback ones, which mean nothing in the container's
        // namespace (Docker's rule, with its fallback). A host whose only resolver is
        // systemd-resolved's stub (127.0.0.53) has the real ones in resolved's own file.
        // Read only when it could be used: a start should not pay for a file it ignores.
        let resolved = if only_loopback_servers(&host_conf) { fs::read_to_string(RESOLVED_CONF).ok() } else { None };
        let host_conf = container_resolv_source(&host_conf, resolved.as_deref());
        let mut r = String::new();
        for l in host_conf.lines() {
            if !loopback_nameserver(l.trim_start()) {
                r.push_str(l);
                r.push('\n');
            }
        }
        if !r.lines().any(|l| l.trim_start().starts_with("nameserver")) && !eps.is_empty() {
            r.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
        r
    };
    // --dns-search and --dns-option replace the search list and options of whatever came first.
    let mut r: String = r;
    if !c.config.dns_search.is_empty() {
        r = r
            .lines()
            .filter(|l| !l.starts_with("search ") && !l.starts_with("domain "))
            .map(|l| format!("{l}\n"))
            .collect();
        r.push_str(&format!("search {}\n", c.config.dns_search.join(" ")));
    }
    if !c.config.dns_options.is_empty() {
        r = r.lines().filter(|l| !l.starts_with("options ")).map(|l| format!("{l}\n")).collect();
        r.push_str(&format!("options {}\n", c.config.dns_options.join(" ")));
    }
    fs::write(resolv, r)?;
    Ok(())
}

/// Brings `lo` up in the network namespace of `pid` (Docker's containers always have it).
fn loopback_up(pid: i32) -> Result<()> {
    let ns = fs::File::open(format!("/proc/{pid}/ns/net")).context("opening the container's network namespace")?;
    // A short-lived child joins the namespace, so the monitor itself never changes namespaces.
    // SAFETY: the child only makes syscalls and _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                libc::_exit(1);
            }
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            let mut req: libc::ifreq = std::mem::zeroed();
            req.ifr_name[0] = b'l' as libc::c_char;
            req.ifr_name[1] = b'o' as libc::c_char;
            if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) != 0 {
                libc::_exit(2);
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::_exit(if libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == 0 { 0 } else { 3 });
        }
    }
    if child < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    let code = berth_runtime::container::wait_exit_code(child)?;
    if code != 0 {
        anyhow::bail!("bringing up the loopback interface failed (step {code})");
    }
    Ok(())
}

/// Whether our `fd` is /dev/null (the character device 1:3).
fn is_dev_null(fd: RawFd) -> bool {
    // SAFETY: fstat of a number into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    ok && st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
}

fn dup_cloexec(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC of a standard fd.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("dup");
    }
    Ok(owned(n))
}

fn dup2(from: RawFd, to: RawFd) -> Result<()> {
    // SAFETY: dup2 between fds we hold.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(std::io::Error::last_os_error()).context("dup2");
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_resolved_stub_is_replaced_by_its_upstreams() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n";
        let resolved = "nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example\n";
        assert_eq!(container_resolv_source(stub, Some(resolved)), resolved);
        // No resolved file, or one without a usable server: the host's file (then the
        // fallback servers).
        assert_eq!(container_resolv_source(stub, None), stub);
        assert_eq!(container_resolv_source(stub, Some("nameserver 127.0.0.1\n")), stub);
        // A host with a real resolver keeps it, even next to a loopback one.
        let mixed = "nameserver 127.0.0.1\nnameserver 192.168.1.1\n";
        assert_eq!(container_resolv_source(mixed, Some(resolved)), mixed);
        assert!(loopback_nameserver("nameserver ::1") && !loopback_nameserver("nameserver 1.1.1.1"));
    }
}
