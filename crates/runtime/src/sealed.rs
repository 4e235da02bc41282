//! CVE-2019-5736: a container must never be able to write to the runtime binary on the host
//! (through /proc/PID/exe of a runtime process that joins it). Before any command that enters
//! a container we re-exec from a sealed memfd copy of ourselves; writes to it fail.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

const MARK: &str = "_BERTH_SEALED";

/// Re-execs the current process from a sealed copy unless it already runs from one.
/// Returns only when nothing had to be done.
pub fn ensure_sealed() -> Result<()> {
    if std::env::var_os(MARK).is_some() {
        // Do not pass the mark to the container's processes.
        // SAFETY: single threaded at this point (called first thing in main).
        unsafe { std::env::remove_var(MARK) };
        return Ok(());
    }
    let exe = std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    let name = CString::new("berth-runtime")?;
    // SAFETY: memfd_create with a valid name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a new fd from the kernel.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = exe.metadata()?.len() as usize;
    let mut left = len;
    while left > 0 {
        // SAFETY: sendfile between two fds we own.
        let n = unsafe { libc::sendfile(mem.as_raw_fd(), exe.as_raw_fd(), std::ptr::null_mut(), left) };
        if n <= 0 {
            return Err(std::io::Error::last_os_error()).context("copying the runtime into a memfd");
        }
        left -= n as usize;
    }
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
