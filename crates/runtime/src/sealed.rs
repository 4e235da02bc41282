//! CVE-2019-5736: a container must never be able to write to the runtime binary on the host
//! (through /proc/PID/exe of a runtime process that joins it). Before any command that enters
//! a container we re-exec from a view of our binary that cannot be written.
//!
//! Why every such command, and why a sealed view:
//!
//! - The attack needs a process of the container to reach a process whose `/proc/PID/exe` is
//!   the host's binary: a runtime process that joins the container (`exec`'s stage, the
//!   container's init between its clone and its execve), or the runtime binary itself run
//!   inside the container (the user's program is `#!/proc/self/exe`: at the init's execve
//!   `/proc/self/exe` is still the runtime's). `create` and `run` are as exposed as `exec`:
//!   the init is a fork of the runtime until it execs the user's program, so "seal only for
//!   exec" would leave the shebang variant open. The container then holds an `O_PATH` fd of
//!   that exe and reopens it for writing once the process is gone (ETXTBSY no longer applies).
//! - We re-exec from a view of our binary that nobody can write: the file opened through an
//!   overlayfs made for the purpose, whose layers are the binary's directory and an empty
//!   tmpfs and which has no upper layer, mounted nowhere (runc 1.2's guard). Such an overlay
//!   is read-only in its superblock: a write through /proc/PID/exe fails (`EROFS`), and no
//!   remount or mount attribute changes that; the mount shows in no mount table and goes with
//!   the last process that runs from it. It costs about 0.1 ms ([`overlay_view`]).
//! - Where it cannot be made (kernels before 6.8 lack overlayfs's `lowerdir+`; no right to
//!   mount), we copy the binary into a memfd and seal it: `F_SEAL_WRITE` makes any write fail
//!   (`EPERM`), whoever opens it, and the seals cannot be removed (`F_SEAL_SEAL`). The copy,
//!   its second exec and the freeing of its pages cost about 0.7 ms per MB of binary
//!   (1.5-2 ms for berth-runtime), which is why the view comes first.
//! - A read-only bind mount of the binary (crun's and runc 1.1's "bindfd") was weighed and
//!   left: its protection is a mount flag, which a container with `CAP_SYS_ADMIN` that
//!   reaches the (detached) mount through /proc can clear, and it briefly shows in the host's
//!   mount table.
//! - The re-exec happens in an ELF constructor ([`reexec_sealed_raw`]), before std's start-up
//!   and the argument parsing, which would otherwise run twice; the release profile keeps the
//!   binary small (Cargo.toml: size-optimised, LTO) for the memfd fallback's sake.
//! - Whether a process already runs from a sealed view is asked of the kernel (the seals of
//!   /proc/self/exe, or its read-only overlay mounted nowhere), never of the environment: an
//!   inherited `_BERTH_SEALED` cannot switch the guard off.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};

const MARK: &str = "_BERTH_SEALED";

/// Whether this process runs from a sealed copy or read-only view of its binary (so that
/// /proc/self/exe is no path another process could run).
pub fn running_sealed() -> bool {
    std::fs::File::open("/proc/self/exe").is_ok_and(|f| is_sealed(f.as_raw_fd()))
}

/// Re-execs the current process from a sealed view of its binary unless it already runs from
/// one. Returns only when nothing had to be done.
///
/// Whether we run from a sealed view is asked of the kernel (see [`is_sealed`]), not of the
/// environment: `_BERTH_SEALED` only stops a loop of re-execs, and is removed so that the
/// container's processes do not inherit it.
pub fn ensure_sealed() -> Result<()> {
    let exe = std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    if std::env::var_os(MARK).is_some() {
        // SAFETY: single threaded at this point (called first thing in main).
        unsafe { std::env::remove_var(MARK) };
        if !is_sealed(exe.as_raw_fd()) {
            bail!("re-executed, but /proc/self/exe is neither a sealed copy nor a read-only view");
        }
        return Ok(());
    }
    if is_sealed(exe.as_raw_fd()) {
        return Ok(());
    }
    // SAFETY: plain syscalls on an fd we hold.
    let sealed = unsafe { sealed_exe(exe.as_raw_fd()) }?;
    let args: Vec<CString> = std::env::args_os().filter_map(|a| CString::new(a.into_encoded_bytes()).ok()).collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| CString::new(format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).ok())
        .collect();
    env.push(CString::new(format!("{MARK}=1"))?);
    let e = nix::unistd::fexecve(&sealed, &args, &env).unwrap_err();
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
        let Ok(sealed) = sealed_exe(exe.as_raw_fd()) else { return };
        let mut env: Vec<*const libc::c_char> = Vec::with_capacity(n + 2);
        env.extend((0..n).map(|i| *envp.add(i)));
        env.push(c"_BERTH_SEALED=1".as_ptr());
        env.push(std::ptr::null());
        libc::syscall(libc::SYS_execveat, sealed.as_raw_fd(), c"".as_ptr(), argv, env.as_ptr(), libc::AT_EMPTY_PATH);
    }
}

/// The seals of the memfd copy: nothing can write, grow or shrink it, or take the seals off.
const SEALS: libc::c_int = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// What we re-exec from: the read-only overlay view of our binary `exe`, else a sealed memfd
/// copy of it (copied in one sendfile: two threads were slower, the page allocation in the
/// memfd does not scale and a thread's start costs more). Syscalls only (and the memfd's
/// name), so that the ELF constructor can use it.
///
/// # Safety
/// `exe` is an open fd.
unsafe fn sealed_exe(exe: RawFd) -> Result<OwnedFd> {
    // SAFETY: as the caller promises.
    if let Some(view) = unsafe { overlay_view(exe) } {
        return Ok(view);
    }
    let mem = memfd("berth-runtime")?;
    // SAFETY: fstat into a zeroed struct, fcntl on our memfd.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(exe, &mut st) != 0 {
            return Err(std::io::Error::last_os_error()).context("fstat of our binary");
        }
        sendfile_all(mem.as_raw_fd(), exe, 0, st.st_size as u64)?;
        if libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) != 0 {
            return Err(std::io::Error::last_os_error()).context("sealing the memfd");
        }
    }
    Ok(mem)
}

const OVERLAYFS_SUPER_MAGIC: libc::c_long = 0x794c_7630;

/// A read-only view of our own binary: the file opened through an overlayfs made here whose
/// layers are the binary's directory and an empty tmpfs, with no upper layer, mounted nowhere
/// (runc 1.2's guard). An overlay without an upper layer is read-only in its superblock:
/// no remount, no mount attribute and no open through /proc/PID/exe can write the file, and
/// the detached mount shows in no mount table. About 0.1 ms against 1.5-2 ms for copying
/// the 2.6 MB binary into a memfd and freeing it again; None (the caller copies) where the
/// kernel lacks `lowerdir+` (before 6.8) or we may not mount, or the file opened is not the
/// one we run (replaced meanwhile).
///
/// # Safety
/// Only syscalls and stack buffers (callable from an ELF constructor); `exe` is an open fd.
unsafe fn overlay_view(exe: RawFd) -> Option<OwnedFd> {
    // SAFETY: syscalls on fds opened here and NUL-terminated stack buffers.
    unsafe {
        let mut path = [0u8; 4096];
        let n = libc::readlink(c"/proc/self/exe".as_ptr(), path.as_mut_ptr().cast(), path.len() - 1);
        if n <= 0 || path[0] != b'/' {
            return None;
        }
        let n = n as usize;
        let slash = path[..n].iter().rposition(|&b| b == b'/')?;
        let mut name = [0u8; 256];
        let name_len = n - slash - 1;
        if name_len == 0 || name_len >= name.len() {
            return None;
        }
        name[..name_len].copy_from_slice(&path[slash + 1..n]);
        // The directory: "/" for a binary at the top, else the path up to the last slash.
        path[if slash == 0 { 1 } else { slash }] = 0;
        let fsfd = |fs: &std::ffi::CStr| -> Option<OwnedFd> {
            let fd = libc::syscall(libc::SYS_fsopen, fs.as_ptr(), 1 /* FSOPEN_CLOEXEC */);
            (fd >= 0).then(|| OwnedFd::from_raw_fd(fd as RawFd))
        };
        let set = |fd: &OwnedFd, key: &std::ffi::CStr, value: *const u8| -> bool {
            libc::syscall(libc::SYS_fsconfig, fd.as_raw_fd(), 1 /* SET_STRING */, key.as_ptr(), value, 0) == 0
        };
        let mount = |fd: &OwnedFd| -> Option<OwnedFd> {
            if libc::syscall(libc::SYS_fsconfig, fd.as_raw_fd(), 6 /* CMD_CREATE */, 0, 0, 0) != 0 {
                return None;
            }
            let attrs = 0x1 | 0x2 | 0x4; // MOUNT_ATTR_RDONLY | NOSUID | NODEV
            let m = libc::syscall(libc::SYS_fsmount, fd.as_raw_fd(), 1 /* FSMOUNT_CLOEXEC */, attrs);
            (m >= 0).then(|| OwnedFd::from_raw_fd(m as RawFd))
        };
        // The second layer overlayfs wants when there is no upper one: an empty tmpfs.
        let empty = mount(&fsfd(c"tmpfs")?)?;
        let mut empty_path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0";
        let mut digits = [0u8; 10];
        let (mut v, mut k) = (empty.as_raw_fd() as u32, 0);
        loop {
            digits[k] = b'0' + (v % 10) as u8;
            k += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in 0..k {
            empty_path[14 + i] = digits[k - 1 - i];
        }
        let ovl = fsfd(c"overlay")?;
        if !set(&ovl, c"lowerdir+", path.as_ptr()) || !set(&ovl, c"lowerdir+", empty_path.as_ptr()) {
            return None;
        }
        let mnt = mount(&ovl)?;
        let f = libc::openat(mnt.as_raw_fd(), name.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if f < 0 {
            return None;
        }
        let f = OwnedFd::from_raw_fd(f);
        // The same file as the one running: a binary replaced since we started is not ours.
        let (mut a, mut b): (libc::stat, libc::stat) = (std::mem::zeroed(), std::mem::zeroed());
        if libc::fstat(exe, &mut a) != 0 || libc::fstat(f.as_raw_fd(), &mut b) != 0 {
            return None;
        }
        let same = (a.st_size, a.st_mtime, a.st_mtime_nsec, a.st_ctime, a.st_ctime_nsec, a.st_mode)
            == (b.st_size, b.st_mtime, b.st_mtime_nsec, b.st_ctime, b.st_ctime_nsec, b.st_mode);
        same.then_some(f)
    }
}

/// Whether `fd` (our /proc/self/exe) cannot be written by anyone: a memfd with the seals we put
/// on the copy, or a file on a read-only overlayfs mounted nowhere (see [`overlay_view`]).
fn is_sealed(fd: RawFd) -> bool {
    memfd_sealed(fd) || on_detached_readonly_overlay(fd)
}

fn on_detached_readonly_overlay(fd: RawFd) -> bool {
    // SAFETY: fstatfs and statx on an fd we hold, into zeroed buffers.
    unsafe {
        let (mut sfs, mut vfs): (libc::statfs, libc::statvfs) = (std::mem::zeroed(), std::mem::zeroed());
        if libc::fstatfs(fd, &mut sfs) != 0
            || sfs.f_type as libc::c_long != OVERLAYFS_SUPER_MAGIC
            || libc::fstatvfs(fd, &mut vfs) != 0
            || vfs.f_flag & libc::ST_RDONLY == 0
        {
            return false;
        }
        let mut stx: libc::statx = std::mem::zeroed();
        if libc::statx(fd, c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut stx) != 0
            || stx.stx_mask & libc::STATX_MNT_ID == 0
        {
            return false;
        }
        // Mounted nowhere: a mount made by whoever holds it, not one of the tree (a read-only
        // mount of an overlay with an upper layer could be made writable again).
        let id = stx.stx_mnt_id;
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
        !info.lines().any(|l| l.split(' ').next().and_then(|m| m.parse::<u64>().ok()) == Some(id))
    }
}

/// Whether `fd` is a memfd with the seals we put on the copy (nothing can write it again).
fn memfd_sealed(fd: RawFd) -> bool {
    // SAFETY: fcntl on an fd we hold; EINVAL for anything but a memfd.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn exe() -> std::fs::File {
        std::fs::File::open("/proc/self/exe").unwrap()
    }

    #[test]
    fn the_overlay_view_is_our_binary_read_only_and_mounted_nowhere() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let exe = exe();
        assert!(!is_sealed(exe.as_raw_fd()), "the test binary itself is writable");
        // SAFETY: an open fd.
        let view = unsafe { overlay_view(exe.as_raw_fd()) }.expect("an overlay view (kernel >= 6.8, as root)");
        assert!(is_sealed(view.as_raw_fd()));
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", view.as_raw_fd())).unwrap(),
            std::fs::read("/proc/self/exe").unwrap()
        );
        let w = std::fs::OpenOptions::new().append(true).open(format!("/proc/self/fd/{}", view.as_raw_fd()));
        assert_eq!(w.err().and_then(|e| e.raw_os_error()), Some(libc::EROFS));
    }

    #[test]
    fn the_memfd_copy_is_sealed_against_writes() {
        let exe = exe();
        let mem = memfd("berth-test").unwrap();
        sendfile_all(mem.as_raw_fd(), exe.as_raw_fd(), 0, exe.metadata().unwrap().len()).unwrap();
        assert!(!is_sealed(mem.as_raw_fd()), "not sealed yet");
        // SAFETY: fcntl on our memfd.
        assert_eq!(unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) }, 0);
        assert!(is_sealed(mem.as_raw_fd()));
        let mut w = std::fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", mem.as_raw_fd())).unwrap();
        assert_eq!(w.write(b"x").err().and_then(|e| e.raw_os_error()), Some(libc::EPERM));
    }
}
