//! CVE-2019-5736: a container must never be able to write to the runtime binary on the host
//! (through /proc/PID/exe of a runtime process that joins it). Before any command that enters
//! a container we re-exec from a sealed memfd copy of ourselves; writes to it fail.
//!
//! Why every such command, and why a copy:
//!
//! - The attack needs a process of the container to reach a process whose `/proc/PID/exe` is
//!   the host's binary: a runtime process that joins the container (`exec`'s stage, the
//!   container's init between its clone and its execve), or the runtime binary itself run
//!   inside the container (the user's program is `#!/proc/self/exe`: at the init's execve
//!   `/proc/self/exe` is still the runtime's). `create` and `run` are as exposed as `exec`:
//!   the init is a fork of the runtime until it execs the user's program, so "seal only for
//!   exec" would leave the shebang variant open. The container then holds an `O_PATH` fd of
//!   that exe and reopens it for writing once the process is gone (ETXTBSY no longer applies).
//! - With the sealed copy every one of those paths leads to the memfd: `F_SEAL_WRITE` makes
//!   any write fail (`EPERM`), whoever opens it, and the seals cannot be removed
//!   (`F_SEAL_SEAL`). The host file is never reachable.
//! - Cheaper guards were weighed. A read-only bind mount of the binary (crun's and runc 1.1's
//!   "bindfd") costs a few mount calls instead of a copy, but its protection is a mount flag:
//!   runc dropped it because a container with `CAP_SYS_ADMIN` that reaches the (detached)
//!   mount through /proc can have it made writable again, and it briefly shows in the host's
//!   mount table. A read-only overlayfs of the binary's directory (runc 1.2) is safe, but needs
//!   a second lower layer, a superblock per runtime process and a recent kernel, and
//!   /proc/PID/exe then shows a path rather than a sealed file (the integration test checks
//!   for the memfd). The memfd's safety depends on nothing but the seals, so we keep it and make
//!   it cheap instead:
//! - the cost is the copy (page allocation in the memfd, ~0.45 ms per MB here), the second
//!   exec and the memfd's pages freed at exit: about 0.7 ms per MB of binary in all. The
//!   release profile keeps the binary small for that reason (Cargo.toml: size-optimised, LTO,
//!   2.6 MB instead of 5.8), and `berth-runtime` does the re-exec from an ELF constructor
//!   ([`reexec_sealed_raw`]) before std's start-up and its own argument parsing, which would
//!   otherwise run twice. Splitting the copy between two threads was tried: slower here.
//! - Whether a process already runs from the sealed copy is asked of the kernel (the seals of
//!   /proc/self/exe), never of the environment: an inherited `_BERTH_SEALED` cannot switch
//!   the guard off.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};

const MARK: &str = "_BERTH_SEALED";

/// Re-execs the current process from a sealed copy unless it already runs from one.
/// Returns only when nothing had to be done.
///
/// Whether we run from a sealed copy is asked of the kernel (the seals of /proc/self/exe), not
/// of the environment: `_BERTH_SEALED` only stops a loop of re-execs, and is removed so that the
/// container's processes do not inherit it.
pub fn ensure_sealed() -> Result<()> {
    let exe = std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    if std::env::var_os(MARK).is_some() {
        // SAFETY: single threaded at this point (called first thing in main).
        unsafe { std::env::remove_var(MARK) };
        if !is_sealed(exe.as_raw_fd()) {
            bail!("re-executed, but /proc/self/exe is not a sealed copy");
        }
        return Ok(());
    }
    if is_sealed(exe.as_raw_fd()) {
        return Ok(());
    }
    let mem = memfd("berth-runtime")?;
    let len = exe.metadata()?.len();
    copy(exe.as_raw_fd(), &mem, len)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sealing the memfd");
    }
    let args: Vec<CString> = std::env::args_os().filter_map(|a| CString::new(a.into_encoded_bytes()).ok()).collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| CString::new(format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).ok())
        .collect();
    env.push(CString::new(format!("{MARK}=1"))?);
    let e = nix::unistd::fexecve(&mem, &args, &env).unwrap_err();
    Err(e).context("re-executing from the sealed copy")
}

/// [`ensure_sealed`] for a process that has not started its Rust runtime yet: only libc calls,
/// no allocation but one array, so that a binary can call it from an ELF constructor (before
/// `main`, std's initialisation and the argument parsing, which the re-exec would throw away).
/// Returns only when it did not re-exec: the caller then goes on and `ensure_sealed` in `main`
/// does the work again and reports what failed.
///
/// # Safety
/// `argv` and `envp` must be the process's NULL-terminated argument and environment arrays,
/// and the process single threaded.
pub unsafe fn reexec_sealed_raw(argv: *const *const libc::c_char, envp: *const *const libc::c_char) {
    // SAFETY: the caller passes the process's own arrays; everything else is plain syscalls
    // on fds opened here.
    unsafe {
        let mut n = 0;
        while !(*envp.add(n)).is_null() {
            if libc::strncmp(*envp.add(n), c"_BERTH_SEALED=".as_ptr(), MARK.len() + 1) == 0 {
                return;
            }
            n += 1;
        }
        let exe = libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if exe < 0 {
            return;
        }
        let exe = OwnedFd::from_raw_fd(exe);
        if is_sealed(exe.as_raw_fd()) {
            return;
        }
        let Ok(mem) = memfd("berth-runtime") else { return };
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(exe.as_raw_fd(), &mut st) != 0
            || sendfile_all(mem.as_raw_fd(), exe.as_raw_fd(), 0, st.st_size as u64).is_err()
        {
            return;
        }
        let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        if libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
            return;
        }
        let mut env: Vec<*const libc::c_char> = Vec::with_capacity(n + 2);
        env.extend((0..n).map(|i| *envp.add(i)));
        env.push(c"_BERTH_SEALED=1".as_ptr());
        env.push(std::ptr::null());
        libc::syscall(libc::SYS_execveat, mem.as_raw_fd(), c"".as_ptr(), argv, env.as_ptr(), libc::AT_EMPTY_PATH);
    }
}

/// Whether `fd` is a memfd with the seals we put on the copy (nothing can write it again).
fn is_sealed(fd: RawFd) -> bool {
    let want = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we hold; EINVAL for anything but a memfd.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    seals >= 0 && seals & want == want
}

/// An executable, sealable memfd (MFD_EXEC where the kernel knows it, so that a
/// `vm.memfd_noexec` default does not make it non-executable).
fn memfd(name: &str) -> Result<OwnedFd> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let name = CString::new(name)?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above, for kernels before 6.3.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a new fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies `len` bytes of `src` into the empty memfd `mem`, in one piece (two threads were
/// slower: the page allocation in the memfd does not scale, and the thread's start costs more).
fn copy(src: RawFd, mem: &OwnedFd, len: u64) -> Result<()> {
    sendfile_all(mem.as_raw_fd(), src, 0, len)
}

/// sendfile from `src` at `off` (its own offset untouched) to `dst` at dst's file offset.
fn sendfile_all(dst: RawFd, src: RawFd, off: u64, len: u64) -> Result<()> {
    let mut off = off as libc::off_t;
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: sendfile between two fds we own, with an offset we own.
        let n = unsafe { libc::sendfile(dst, src, &mut off, left) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            if n == 0 {
                bail!("copying the runtime into a memfd: the binary shrank while being copied");
            }
            return Err(std::io::Error::last_os_error()).context("copying the runtime into a memfd");
        }
        left -= n as usize;
    }
    Ok(())
}
