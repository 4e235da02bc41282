//! The child side of create and exec. Everything here runs in forked copies of the (single
//! threaded) runtime process and ends in execve or `_exit`.
//!
//! create, the usual case: runtime --clone3(CLONE_NEWPID)--> init ([`direct`], [`init_direct`]).
//! create with namespaces to join by path, or a new user or time namespace:
//! runtime --fork--> stage --clone(CLONE_PARENT)--> init
//!  - stage joins namespaces by path, creates the user namespace (the runtime writes the id
//!    maps), unshares the rest, then clones init so that init is pid 1 of a new pid namespace
//!    and still a child of the runtime (so `run` can wait for it);
//!  - init sets up the root, reports "ready", blocks on the exec socket until `start` (or, for
//!    `run`, goes straight on), then becomes the user's process.
//!
//! Either child puts itself into the container's cgroup (see [`fork_into`]).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result, bail};
use berth_cgroups::Cgroup;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::{caps, hooks, ns, procattr, process, rootfs, seccomp};

/// Messages on the SEQPACKET socket between the runtime and its children.
pub fn send(fd: RawFd, msg: &[u8]) {
    // SAFETY: send on a socket fd with a valid buffer; errors surface as EOF on the other end.
    unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
}

pub fn recv(fd: RawFd) -> Result<Vec<u8>> {
    recv_with_fd(fd).map(|(m, _)| m)
}

/// [`recv`], and the fd that came with the message (SCM_RIGHTS), close-on-exec.
pub fn recv_with_fd(fd: RawFd) -> Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut resets = 0;
    loop {
        let mut control = [0u64; 4];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: recvmsg into a buffer and a control buffer we own (room for one fd).
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(fd, &mut mh, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // The peer closed with a message of ours unread (e.g. a child that failed before
            // reading "res"). The kernel reports that once, ahead of what the peer sent before
            // it closed (its "error:..."): read on, up to the end of the stream.
            if e.raw_os_error() == Some(libc::ECONNRESET) && resets < 4 {
                resets += 1;
                continue;
            }
            return Err(e).context("reading from the container's setup channel");
        }
        buf.truncate(n as usize);
        let mut passed = None;
        // SAFETY: walking the control messages the kernel filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    passed = Some(OwnedFd::from_raw_fd(fd));
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        return Ok((buf, passed));
    }
}

pub fn expect_go(fd: RawFd) -> Result<Vec<u8>> {
    let m = recv(fd)?;
    match m.strip_prefix(b"go") {
        Some(rest) => Ok(rest.to_vec()),
        None => bail!("the runtime went away during setup"),
    }
}

/// A fork/clone without a new stack: returns 0 in the child. `CLONE_PARENT` makes the new
/// process a sibling of the caller.
pub fn raw_clone(flags: libc::c_int) -> Result<libc::pid_t> {
    // SAFETY: clone(2) with no stack behaves as fork; the caller is single threaded.
    let pid = unsafe {
        libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("clone");
    }
    Ok(pid as libc::pid_t)
}

/// clone3 of a fork-like child with `flags` (e.g. CLONE_NEWPID), into the cgroup2 directory
/// `cgroup` (an fd of it) when given, so that nobody has to move it there afterwards. Fails on
/// kernels before 5.7 and where the directory refuses processes; [`fork_into_with`] then falls
/// back to [`raw_clone`].
fn clone3(flags: libc::c_int, cgroup: Option<RawFd>) -> std::io::Result<libc::pid_t> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags as u32 as u64 | if cgroup.is_some() { CLONE_INTO_CGROUP } else { 0 },
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.unwrap_or(0) as u64,
        ..Default::default()
    };
    // SAFETY: clone3(2) without a stack behaves as fork; the caller is single threaded.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

/// Forks a child that is to live in `cg`: cloned straight into the cgroup2 half where the
/// kernel can. Returns the pid (0 in the child) and whether the child already sits in the
/// cgroup2 half; the child then calls `cg.join_self(that)` for the rest (see
/// [`Cgroup::join_self`]: neither step waits for the kernel's global threadgroup lock the way
/// moving a process from outside does).
pub fn fork_into(cg: Option<&Cgroup>) -> Result<(libc::pid_t, bool)> {
    fork_into_with(0, cg)
}

/// [`fork_into`] with clone `flags` (only CLONE_NEWPID is used).
pub fn fork_into_with(flags: libc::c_int, cg: Option<&Cgroup>) -> Result<(libc::pid_t, bool)> {
    if let Some(dir) = cg.and_then(|c| c.v2_dir())
        && let Ok(fd) = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        && let Ok(pid) = clone3(flags, Some(fd.as_raw_fd()))
    {
        return Ok((pid, true));
    }
    Ok((raw_clone(flags)?, false))
}

fn die_with_parent(on: bool) {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, if on { libc::SIGKILL } else { 0 } as libc::c_ulong, 0, 0, 0) };
}

pub struct InitArgs<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a ns::Plan,
    pub sync: RawFd,
    /// The exec socket `start` connects to; -1 when create also starts (`run`).
    pub exec_listener: RawFd,
    pub console: Option<RawFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    pub cgroup: Option<&'a Cgroup>,
    /// True when the runtime must stop for prestart/createRuntime/createContainer hooks.
    pub hook_stop: bool,
    /// linux.seccomp, compiled before the fork.
    pub seccomp: Option<&'a seccomp::Filter>,
    /// The runtime's pid: the stage checks it still has that parent once it asked to die with it.
    pub parent: libc::pid_t,
    /// ioPriority, scheduler, personality, memoryPolicy, checked before the fork.
    pub attrs: &'a procattr::Attrs,
    /// Idmapped mounts made by the runtime (see [`rootfs::idmapped_mounts`]), by the index of
    /// their entry in `mounts`.
    pub idmapped: &'a [(usize, OwnedFd)],
}

/// Entry of the stage child (forked by [`fork_into`] with `a.cgroup`; `v2_joined` is what
/// that returned). Never returns.
pub fn stage(a: &InitArgs, v2_joined: bool) -> ! {
    if let Err(e) = stage_inner(a, v2_joined) {
        send(a.sync, format!("error:{e:#}").as_bytes());
    }
    // SAFETY: leave without running the runtime's destructors or atexit handlers.
    unsafe { libc::_exit(1) }
}

fn stage_inner(a: &InitArgs, v2_joined: bool) -> Result<()> {
    die_with_parent(true);
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != a.parent {
        bail!("the runtime went away during setup");
    }
    // Into the container's cgroup before anything else, so that every process of the
    // container starts in it (from the host's mount namespace, where the paths resolve).
    if let Some(cg) = a.cgroup {
        cg.join_self(v2_joined).context("joining the container's cgroup")?;
    }
    for (t, fd) in &a.plan.join {
        ns::setns(fd, *t)?;
    }
    if a.plan.has_new(LinuxNamespaceType::User) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).context("creating the user namespace")?;
        send(a.sync, b"maps");
        expect_go(a.sync)?;
    }
    if a.plan.has(LinuxNamespaceType::User) {
        become_root()?;
    }
    let rest = a.plan.new_flags & !libc::CLONE_NEWUSER;
    if rest != 0 {
        // SAFETY: unshare(2) with namespace flags.
        if unsafe { libc::unshare(rest) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating namespaces");
        }
    }
    if a.plan.has_new(LinuxNamespaceType::Time) {
        write_time_offsets(a.spec)?;
    }
    let pid = raw_clone(libc::CLONE_PARENT)?;
    if pid == 0 {
        container_init(a, false);
    }
    send(a.sync, format!("pid:{pid}").as_bytes());
    // SAFETY: as in stage().
    unsafe { libc::_exit(0) }
}

/// Whether `create` can clone the init itself, without the stage: nothing to join by path and
/// no new user namespace (its id maps and the cgroup join need the stage's order) or time
/// namespace (its offsets must be written before a process enters it).
pub fn direct(plan: &ns::Plan) -> bool {
    plan.join.is_empty() && !plan.has_new(LinuxNamespaceType::User) && !plan.has_new(LinuxNamespaceType::Time)
}

/// Flags of the clone that starts a [`direct`] init.
pub fn direct_clone_flags(plan: &ns::Plan) -> libc::c_int {
    plan.new_flags & libc::CLONE_NEWPID
}

/// Entry of the init when `create` cloned it directly ([`direct`]; already in its new pid
/// namespace and, when `v2_joined`, in the cgroup2 half of its cgroup). It creates the other
/// namespaces while the runtime makes the v1 cgroups ("cg"), then joins those and, after
/// that, unshares the cgroup namespace (whose root is the cgroup at that moment). The runtime
/// applies the limits meanwhile ("res", awaited before hooks or the user's program). Never
/// returns.
pub fn init_direct(a: &InitArgs, v2_joined: bool) -> ! {
    let r = (|| -> Result<()> {
        die_with_parent(true);
        // EOF here: the runtime died before the death signal was armed.
        expect_go(a.sync)?;
        let rest = a.plan.new_flags & !(libc::CLONE_NEWPID | libc::CLONE_NEWCGROUP);
        if rest != 0 {
            // SAFETY: unshare(2) with namespace flags.
            if unsafe { libc::unshare(rest) } != 0 {
                return Err(std::io::Error::last_os_error()).context("creating namespaces");
            }
        }
        if recv(a.sync)? != b"cg" {
            bail!("the runtime went away during setup");
        }
        if let Some(cg) = a.cgroup {
            cg.join_self(v2_joined).context("joining the container's cgroup")?;
        }
        if a.plan.has_new(LinuxNamespaceType::Cgroup) {
            // SAFETY: unshare(2) with a namespace flag.
            if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
                return Err(std::io::Error::last_os_error()).context("creating the cgroup namespace");
            }
        }
        Ok(())
    })();
    if let Err(e) = r {
        send(a.sync, format!("error:{e:#}").as_bytes());
        // SAFETY: as in stage().
        unsafe { libc::_exit(1) }
    }
    container_init(a, true)
}

fn become_root() -> Result<()> {
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 || unsafe { libc::setresuid(0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("becoming root in the user namespace (is uid/gid 0 mapped in linux.uidMappings/gidMappings?)");
    }
    Ok(())
}

fn write_time_offsets(spec: &Spec) -> Result<()> {
    let offs = spec.linux().as_ref().and_then(|l| l.time_offsets().as_ref());
    let mut text = String::new();
    for (clock, o) in offs.into_iter().flatten() {
        if clock != "monotonic" && clock != "boottime" {
            bail!("linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)");
        }
        text.push_str(&format!("{clock} {} {}\n", o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0)));
    }
    if !text.is_empty() {
        process::write_proc("/proc/self/timens_offsets", &text).context("linux.timeOffsets")?;
    }
    Ok(())
}

/// `wait_limits`: the runtime applies linux.resources while this runs (direct path) and says
/// "res" when done; the init waits for it before anything of the user's runs (hooks, its
/// program).
fn container_init(a: &InitArgs, wait_limits: bool) -> ! {
    let Err(e) = init_inner(a, wait_limits);
    if AFTER_READY.load(std::sync::atomic::Ordering::Relaxed) {
        // Nobody reads the setup channel any more: the container's stderr is where the caller
        // of `start` (or `run`) sees it, as runc's late errors.
        let msg = format!("berth-runtime: {e:#}\n");
        // SAFETY: write(2) of a buffer we own to fd 2.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
    send(a.sync, format!("error:{e:#}").as_bytes());
    // SAFETY: as in stage().
    unsafe { libc::_exit(1) }
}

/// Set once the init told the runtime it is ready (and closed the setup channel).
static AFTER_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn expect_limits(sync: RawFd) -> Result<()> {
    if recv(sync)? != b"res" {
        bail!("the runtime went away during setup");
    }
    Ok(())
}

fn init_inner(a: &InitArgs, wait_limits: bool) -> Result<std::convert::Infallible> {
    die_with_parent(true);
    let spec = a.spec;
    let proc_ = spec.process().as_ref().context("process is required")?;
    if a.plan.has(LinuxNamespaceType::User) {
        become_root()?;
    }
    if !a.plan.has_new(LinuxNamespaceType::Mount) {
        bail!("linux.namespaces: berth-runtime needs a new mount namespace");
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !a.plan.own(LinuxNamespaceType::Uts) {
            bail!("hostname needs a uts namespace of the container's own");
        }
        nix::unistd::sethostname(h).context("setting the hostname")?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        if !a.plan.own(LinuxNamespaceType::Uts) {
            bail!("domainname needs a uts namespace of the container's own");
        }
        let c = CString::new(d)?;
        // SAFETY: setdomainname with a valid buffer.
        if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setting the domainname");
        }
    }
    if !a.no_new_keyring {
        join_session_keyring(a.id);
    }
    let mut hook_state = Vec::new();
    if a.hook_stop {
        if wait_limits {
            expect_limits(a.sync)?;
        }
        // prestart and createRuntime run in the runtime; wait for them.
        send(a.sync, b"hooks");
        hook_state = expect_go(a.sync)?;
    }
    // A filter with NOTIFY rules: its agent is reached now, while the host's mount namespace
    // (the socket's path) and procfs (our pid there) are still what we see.
    let agent = match a.seccomp.and_then(|f| f.listener()) {
        Some(l) => {
            let pid: i32 = std::fs::read_link("/proc/self")
                .ok()
                .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
                .context("reading our pid from /proc/self")?;
            let state = serde_json::json!({
                "ociVersion": spec.version(),
                "id": a.id,
                "status": "creating",
                "pid": pid,
                "bundle": a.bundle,
                "annotations": spec.annotations().clone().unwrap_or_default(),
            });
            Some(seccomp::Agent::connect(l, pid, state)?)
        }
        None => None,
    };
    let ctx = rootfs::RootfsCtx {
        spec,
        rootfs: a.rootfs,
        bundle: a.bundle,
        cgroup: a.cgroup,
        in_userns: a.plan.has(LinuxNamespaceType::User),
        new_cgroupns: a.plan.has_new(LinuxNamespaceType::Cgroup),
        idmapped: a.idmapped,
    };
    // createContainer hooks: in the container's namespaces, its mounts made, before pivot_root
    // (their paths resolve in the runtime's file system, as the spec says).
    let create_container = || -> Result<()> {
        if a.hook_stop {
            hooks::run_all(
                "createContainer",
                spec.hooks().as_ref().and_then(|h| h.create_container().as_ref()),
                &hook_state,
            )?;
        }
        Ok(())
    };
    rootfs::prepare(&ctx, a.no_pivot, &create_container)?;
    write_sysctls(spec, a.plan)?;
    rootfs::finalize(spec)?;
    let console = match a.console {
        Some(sock) => Some(setup_console(sock, proc_, true)?),
        None => {
            // A session of its own, as runc's init: no session leader outside the container
            // (what CRIU needs to dump it) and no terminal of the caller's to signal it.
            nix::unistd::setsid().ok();
            None
        }
    };
    prepare_process(proc_)?;
    let args = proc_.args().clone().unwrap_or_default();
    let env = proc_.env().clone().unwrap_or_default();
    let exe = process::find_executable(args.first().context("process.args is empty")?, &env)?;

    if wait_limits && !a.hook_stop {
        expect_limits(a.sync)?;
    }
    // The scheduler and the rest now, in the cgroup with its limits (a realtime policy needs the
    // cgroup's realtime time), so that a refusal fails `create` with its message. With
    // startContainer hooks to fork first, just before the user's program instead.
    let start_hooks = spec.hooks().as_ref().and_then(|h| h.start_container().as_ref()).is_some_and(|h| !h.is_empty());
    if !start_hooks {
        a.attrs.apply()?;
    }
    die_with_parent(false);
    AFTER_READY.store(true, std::sync::atomic::Ordering::Relaxed);
    send(a.sync, b"ready");
    // SAFETY: the fd numbers are ours and stay open until exec.
    unsafe { libc::close(a.sync) };
    if a.exec_listener >= 0 {
        wait_for_start(a.exec_listener)?;
    }
    if let Some(h) = spec.hooks().as_ref().and_then(|h| h.start_container().as_ref()) {
        hooks::run_all("startContainer", Some(h), &hook_state)?;
    }
    drop(console);
    finish_and_exec(proc_, &exe, a.preserve_fds, a.seccomp, start_hooks.then_some(a.attrs), agent.as_ref())
}

fn join_session_keyring(id: &str) {
    let name = CString::new(format!("_ses.{id}")).unwrap_or_default();
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_ulong = 1;
    // SAFETY: keyctl with a valid string; failure (e.g. ENOSYS under some sandboxes) is harmless.
    unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
}

/// rlimits and cwd: done before "ready" so that a bad value fails `create`.
pub fn prepare_process(p: &Process) -> Result<()> {
    process::set_rlimits(p)?;
    process::enter_cwd(p)?;
    Ok(())
}

/// Blocks until `start` connects to the exec socket, then acknowledges.
fn wait_for_start(listener: RawFd) -> Result<()> {
    loop {
        // SAFETY: accept on our listening socket.
        let c = unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if c < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for start");
        }
        // SAFETY: write one byte to the connected socket and close both ends.
        unsafe {
            libc::write(c, b"0".as_ptr().cast(), 1);
            libc::close(c);
            libc::close(listener);
        }
        return Ok(());
    }
}

/// The last steps, in the order the kernel needs: CPU affinity, I/O priority, scheduler, memory
/// policy and personality (`attrs`, unless already applied; while every privilege is still
/// there), LSM labels, bounding set
/// (needs CAP_SETPCAP), user, the other capability sets, no_new_privs, fds, seccomp, exec.
///
/// The seccomp filter (compiled by the runtime before it forked) goes in as late as possible,
/// so that it applies to as little of our own work as possible: right before execve, with
/// the argv and env already prepared. Without no_new_privs installing a filter needs
/// CAP_SYS_ADMIN, so then it goes in first, before the capabilities are dropped (as runc).
pub fn finish_and_exec(
    p: &Process,
    exe: &Path,
    preserve_fds: u32,
    seccomp: Option<&seccomp::Filter>,
    attrs: Option<&procattr::Attrs>,
    agent: Option<&seccomp::Agent>,
) -> Result<std::convert::Infallible> {
    let no_new_privs = p.no_new_privileges() == Some(true);
    process::default_signals();
    if let Some(a) = attrs {
        a.apply()?;
    }
    process::set_lsm_labels(p)?;
    // The listener of a filter with NOTIFY rules goes to the agent at once (its syscalls may
    // be waiting for it), then our copy is closed.
    let install = |f: &seccomp::Filter| -> Result<()> {
        if let Some(l) = f.install()? {
            agent
                .context("linux.seccomp: a listener fd but no agent to hand it to")?
                .send(l.as_raw_fd())
                .context("linux.seccomp: handing the listener fd to the agent")?;
        }
        Ok(())
    };
    if let Some(f) = seccomp.filter(|_| !no_new_privs) {
        install(f)?;
    }
    if let Some(c) = p.capabilities() {
        caps::drop_bounding(c)?;
    }
    let setgroups_denied = std::fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() == "deny").unwrap_or(false);
    process::set_user(p, setgroups_denied)?;
    match p.capabilities() {
        Some(c) => caps::apply_sets(c)?,
        None => caps::apply_sets(&Default::default())?,
    }
    if no_new_privs {
        process::set_no_new_privs()?;
    }
    process::cloexec_from(3 + preserve_fds)?;
    let args = p.args().clone().unwrap_or_default();
    let env = p.env().clone().unwrap_or_default();
    let exec = process::Exec::new(exe, &args, &env)?;
    if let Some(f) = seccomp.filter(|_| no_new_privs) {
        install(f)?;
    }
    Err(exec.run())
}

/// linux.sysctl: namespaced keys only, each in a namespace of the container's own (runc's
/// rules: net.* needs a network namespace, the IPC keys an ipc one, the UTS ones a uts one;
/// otherwise the write would change the host's value).
fn write_sysctls(spec: &Spec, plan: &ns::Plan) -> Result<()> {
    let Some(s) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else { return Ok(()) };
    let mut keys: Vec<_> = s.keys().collect();
    keys.sort();
    for k in keys {
        let needs = if k.starts_with("net.") {
            Some(LinuxNamespaceType::Network)
        } else if k.starts_with("fs.mqueue.")
            || matches!(
                k.as_str(),
                "kernel.msgmax"
                    | "kernel.msgmnb"
                    | "kernel.msgmni"
                    | "kernel.sem"
                    | "kernel.shmall"
                    | "kernel.shmmax"
                    | "kernel.shmmni"
                    | "kernel.shm_rmid_forced"
            )
        {
            Some(LinuxNamespaceType::Ipc)
        } else if matches!(k.as_str(), "kernel.hostname" | "kernel.domainname") {
            Some(LinuxNamespaceType::Uts)
        } else {
            None
        };
        let Some(ns) = needs else {
            bail!("linux.sysctl: {k} is not namespaced and cannot be set for a container");
        };
        if !plan.own(ns) {
            bail!("linux.sysctl: {k} needs a {} namespace of the container's own (linux.namespaces)", ns_name(ns));
        }
        if k.split(['.', '/']).any(|p| p.is_empty() || p == "..") {
            bail!("linux.sysctl: bad key {k}");
        }
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        process::write_proc(&path, &s[k]).with_context(|| format!("linux.sysctl {k}"))?;
    }
    Ok(())
}

fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        _ => "matching",
    }
}

/// Opens a pty inside the container, sends its master through the console socket, and makes
/// the slave our controlling terminal and stdio. For init it is also bound onto /dev/console.
pub fn setup_console(sock: RawFd, p: &Process, is_init: bool) -> Result<OwnedFd> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("opening /dev/ptmx in the container (is devpts mounted?)")?;
    let mut unlock: libc::c_int = 0;
    // SAFETY: ioctls on the pty master we just opened.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) };
    // TIOCGPTPEER opens the slave from the master: no path lookup that could be redirected.
    let slave =
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if slave < 0 {
        return Err(std::io::Error::last_os_error()).context("opening the pty slave");
    }
    // SAFETY: a new fd from the kernel.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some(sz) = p.console_size() {
        let ws = libc::winsize { ws_row: sz.height() as u16, ws_col: sz.width() as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ with a valid struct.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let name = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap_or_default();
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(name.as_os_str().as_encoded_bytes())];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(sock, &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
        .context("sending the pty master to the console socket")?;
    drop(master);
    if is_init {
        let root = crate::safepath::open_root(Path::new("/"))?;
        if let Ok(t) =
            crate::safepath::mkdir_all_in_root(root.as_raw_fd(), Path::new("/dev/console"), crate::safepath::Kind::File)
        {
            let st = nix::sys::stat::fstat(&t)?;
            // Only a plain file or the char device we expect may be covered (no redirection).
            if st.st_mode & libc::S_IFMT == libc::S_IFREG || st.st_mode & libc::S_IFMT == libc::S_IFCHR {
                nix::mount::mount(
                    Some(&crate::safepath::fd_path(&slave)),
                    &crate::safepath::fd_path(&t),
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .context("binding the pty onto /dev/console")?;
            }
        }
    }
    nix::unistd::setsid().ok();
    // SAFETY: make the slave our controlling terminal, then our stdio.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) != 0 {
            return Err(std::io::Error::last_os_error()).context("TIOCSCTTY");
        }
        for fd in 0..3 {
            libc::dup2(slave.as_raw_fd(), fd);
        }
    }
    // SAFETY: the console socket is not needed after the send.
    unsafe { libc::close(sock) };
    Ok(slave)
}
