//! The container process: rlimits, cwd, user, capabilities, no_new_privs, seccomp, fds, exec.
//! Shared by the container's init and by `exec`.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{PosixRlimitType, Process};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// The spec's name of a limit (`RLIMIT_NOFILE`), for messages.
fn rlimit_name(t: PosixRlimitType) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_else(|| format!("{t:?}"))
}

pub fn set_rlimits(p: &Process) -> Result<()> {
    for r in p.rlimits().iter().flatten() {
        let res = rlimit_resource(r.typ());
        if r.soft() > r.hard() {
            bail!(
                "process.rlimits: {} soft limit {} is above its hard limit {}",
                rlimit_name(r.typ()),
                r.soft(),
                r.hard()
            );
        }
        let lim = libc::rlimit { rlim_cur: r.soft(), rlim_max: r.hard() };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            let e = std::io::Error::last_os_error();
            let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit into a valid struct.
            unsafe { libc::getrlimit(res, &mut cur) };
            if e.raw_os_error() == Some(libc::EPERM) && r.hard() > cur.rlim_max {
                bail!(
                    "process.rlimits: cannot raise the hard limit of {} to {} (it is {} and the runtime lacks CAP_SYS_RESOURCE); ask for at most {}",
                    rlimit_name(r.typ()),
                    r.hard(),
                    cur.rlim_max,
                    cur.rlim_max
                );
            }
            return Err(e).with_context(|| format!("process.rlimits: setting {}", rlimit_name(r.typ())));
        }
    }
    Ok(())
}

/// The value of `PATH` in an env list, or the default.
pub fn env_path(env: &[String]) -> &str {
    env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH)
}

/// Finds `cmd` as execvp would, and checks that it can be executed. Errors follow the words
/// the engine maps to exit codes 127 (not found) and 126 (cannot invoke).
pub fn find_executable(cmd: &str, env: &[String]) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = if cmd.contains('/') {
        vec![PathBuf::from(cmd)]
    } else {
        env_path(env).split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(cmd)).collect()
    };
    let mut denied = None;
    for c in &candidates {
        let Ok(cs) = CString::new(c.as_os_str().as_bytes()) else { continue };
        // SAFETY: access/stat with a valid path.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(cs.as_ptr(), &mut st) } != 0 {
            continue;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            denied = Some(format!("exec: {cmd:?}: is a directory"));
            continue;
        }
        if unsafe { libc::access(cs.as_ptr(), libc::X_OK) } != 0 {
            denied = Some(format!("exec: {cmd:?}: permission denied"));
            continue;
        }
        return Ok(c.clone());
    }
    if let Some(d) = denied {
        bail!(d);
    }
    if cmd.contains('/') {
        bail!("exec: {cmd:?}: no such file or directory");
    }
    bail!("exec: {cmd:?}: executable file not found in $PATH")
}

/// chdir into the process cwd and check that we are still inside the root (CVE-2024-21626:
/// a leaked fd or a cwd outside the root shows as an unreachable path).
pub fn enter_cwd(p: &Process) -> Result<()> {
    let cwd = p.cwd();
    if !cwd.is_absolute() {
        bail!("process.cwd {:?} must be an absolute path", cwd);
    }
    nix::unistd::chdir(cwd).with_context(|| format!("process.cwd: chdir to {}", cwd.display()))?;
    let now = nix::unistd::getcwd().context("process.cwd: getcwd")?;
    if !now.is_absolute() || now.to_string_lossy().starts_with("(unreachable)") {
        bail!("process.cwd: {} is outside the container root", cwd.display());
    }
    Ok(())
}

/// Switches to the spec's user, keeping the capabilities we set right after.
pub fn set_user(p: &Process, in_userns_setgroups_denied: bool) -> Result<()> {
    let u = p.user();
    if let Some(mask) = u.umask() {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    if !in_userns_setgroups_denied {
        let gids: Vec<libc::gid_t> = u.additional_gids().clone().unwrap_or_default();
        // SAFETY: setgroups with a valid slice.
        if unsafe { libc::setgroups(gids.len(), gids.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("process.user.additionalGids: setgroups");
        }
    } else if u.additional_gids().as_ref().is_some_and(|g| !g.is_empty()) {
        bail!("process.user.additionalGids cannot be set: setgroups is denied in this user namespace");
    }
    // SAFETY: setresgid/setresuid with plain ids.
    if unsafe { libc::setresgid(u.gid(), u.gid(), u.gid()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("process.user.gid: setting gid {}", u.gid()));
    }
    if unsafe { libc::setresuid(u.uid(), u.uid(), u.uid()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("process.user.uid: setting uid {}", u.uid()));
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("process.noNewPrivileges");
    }
    Ok(())
}

/// Marks every fd from `first` on close-on-exec, so nothing of the runtime reaches the
/// container (CVE-2016-9962, CVE-2024-21626).
pub fn cloexec_from(first: u32) -> Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range(2) with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("close_range");
    }
    Ok(())
}

/// AppArmor and SELinux labels for the exec, written through /proc/thread-self/attr.
pub fn set_lsm_labels(p: &Process) -> Result<()> {
    if let Some(profile) = p.apparmor_profile().as_deref().filter(|s| !s.is_empty()) {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y");
        if !enabled {
            bail!("process.apparmorProfile {profile:?}: AppArmor is not enabled on this host");
        }
        write_attr("apparmor/exec", &format!("exec {profile}"))
            .or_else(|_| write_attr("exec", &format!("exec {profile}")))
            .with_context(|| format!("process.apparmorProfile {profile:?}"))?;
    }
    if let Some(label) = p.selinux_label().as_deref().filter(|s| !s.is_empty()) {
        if !Path::new("/sys/fs/selinux/enforce").exists() {
            bail!("process.selinuxLabel {label:?}: SELinux is not enabled on this host");
        }
        write_attr("exec", label).with_context(|| format!("process.selinuxLabel {label:?}"))?;
    }
    Ok(())
}

fn write_attr(name: &str, value: &str) -> Result<()> {
    write_proc(&format!("/proc/thread-self/attr/{name}"), value)
}

/// Writes `value` to a file of /proc, refusing one that is not what its path says: the file
/// must be on procfs and on the same mount as /proc itself, so that nothing mounted over it
/// (a container's bind mount of another procfs file, CVE-2025-52881) takes the write. Opened
/// without following a last symlink.
pub fn write_proc(path: &str, value: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    let st = nix::sys::statfs::fstatfs(&f).with_context(|| format!("statfs of {path}"))?;
    if st.filesystem_type().0 as i64 != PROC_SUPER_MAGIC {
        bail!("{path} is not on procfs: refusing to write to it");
    }
    let proc_root = std::fs::File::open("/proc").context("opening /proc")?;
    match (mount_id(proc_root.as_raw_fd()), mount_id(f.as_raw_fd())) {
        (Some(a), Some(b)) if a != b => bail!("{path} is covered by another mount: refusing to write to it"),
        _ => {}
    }
    (&f).write_all(value.as_bytes()).with_context(|| format!("writing {value:?} to {path}"))
}

/// The mount id of an open file (statx STATX_MNT_ID), where the kernel reports it.
fn mount_id(fd: i32) -> Option<u64> {
    const STATX_MNT_ID: u32 = 0x1000;
    // SAFETY: statx of an fd ("" with AT_EMPTY_PATH) into a zeroed struct.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statx(fd, c"".as_ptr(), libc::AT_EMPTY_PATH, STATX_MNT_ID, &mut sx) };
    (r == 0 && sx.stx_mask & STATX_MNT_ID != 0).then_some(sx.stx_mnt_id)
}

/// The container's process starts as any new program would: no signal blocked and none
/// ignored. What the runtime's caller ignored (a monitor's SIGPIPE and SIGHUP, a shell's
/// SIGINT for a background job) survives execve otherwise, and a shell cannot even trap a
/// signal that was ignored when it started. Handlers need nothing: execve resets them.
pub fn default_signals() {
    // The kernel's struct sigaction (x86_64 and aarch64): glibc's wrapper refuses the two
    // real-time signals it keeps for itself (32, 33), which a caller may still have ignored.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    const NSIG: libc::c_int = 64;
    for sig in 1..=NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
        let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        // SAFETY: rt_sigaction reads the disposition into `old`; only SIG_IGN is replaced,
        // by SIG_DFL (no handler, so no restorer is needed).
        unsafe {
            let null = std::ptr::null::<KernelSigaction>();
            if libc::syscall(libc::SYS_rt_sigaction, sig, null, &mut old as *mut KernelSigaction, 8) == 0
                && old.handler == libc::SIG_IGN
            {
                libc::syscall(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction, null, 8);
            }
        }
    }
    // SAFETY: an empty set, then the mask set to it (through the syscall, for 32 and 33 too).
    unsafe {
        let none: u64 = 0;
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &none as *const u64, std::ptr::null::<u64>(), 8);
    }
}

/// execve with the spec's args and env. Only returns on failure.
pub fn exec(path: &Path, args: &[String], env: &[String]) -> anyhow::Error {
    match Exec::new(path, args, env) {
        Ok(e) => e.run(),
        Err(e) => e,
    }
}

/// An execve prepared in advance, so that the last steps before it (after the seccomp filter
/// is in place) make no allocation and no syscall other than execve itself.
pub struct Exec {
    path: CString,
    // Owners of the strings argv and envp point to.
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Exec {
    pub fn new(path: &Path, args: &[String], env: &[String]) -> Result<Exec> {
        let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
            bail!("exec: path has a NUL byte");
        };
        let to_c = |v: &[String]| v.iter().filter_map(|s| CString::new(s.as_bytes()).ok()).collect::<Vec<_>>();
        let (a, e) = (to_c(args), to_c(env));
        let ptrs = |v: &[CString]| v.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let (argv, envp) = (ptrs(&a), ptrs(&e));
        // The pointers point into the CStrings' own buffers, which moving the Vecs keeps.
        Ok(Exec { path: p, _args: a, _env: e, argv, envp })
    }

    /// Only returns on failure.
    pub fn run(&self) -> anyhow::Error {
        // SAFETY: NUL-terminated arrays of pointers to strings owned by self.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        anyhow::anyhow!("exec {:?}: {}", self.path, nix::errno::Errno::last().desc())
    }
}

/// The host's ps(1) with `args` (`-ef` when none), cut to its header and the lines whose PID
/// column names one of `pids`: runc's `ps` and Docker's `top`.
pub fn host_ps(args: &[String], pids: &[i32]) -> Result<(String, Vec<String>)> {
    let args: Vec<String> = if args.is_empty() { vec!["-ef".into()] } else { args.to_vec() };
    let o = std::process::Command::new("ps")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ps (apt install procps)")?;
    if !o.status.success() {
        bail!("ps {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let Some(col) = header.split_whitespace().position(|c| c == "PID") else {
        bail!("Couldn't find PID field in ps output (ps {})", args.join(" "));
    };
    let mine =
        |l: &&str| l.split_whitespace().nth(col).and_then(|p| p.parse::<i32>().ok()).is_some_and(|p| pids.contains(&p));
    Ok((header, lines.filter(mine).map(str::to_string).collect()))
}
