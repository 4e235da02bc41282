//! Paths inside a container root, resolved so that nothing (a symlink in the image, `..`, a
//! symlink swapped in during setup) can lead outside it. Everything goes through
//! openat2(RESOLVE_IN_ROOT), and mounts target `/proc/self/fd/N` of the fd we resolved, so the
//! mount lands exactly on what we checked (CVE-2021-30465 and its family).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(dirfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
pub fn openat_in_root(root: RawFd, path: &Path, flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: openat2(2) with a valid path and a properly sized open_how.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, root, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new fd that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

/// The components of `p` relative to the root; `..` is kept and resolved by the kernel within root.
pub fn relative(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            _ => {}
        }
    }
    out
}

/// What to create at the end of the path when it is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Opens `path` inside `root` as an O_PATH fd, creating missing directories (and the final
/// file when `kind` is File) on the way, each one resolved within root.
pub fn mkdir_all_in_root(root: RawFd, path: &Path, kind: Kind) -> Result<OwnedFd> {
    mkdir_all_depth(root, &relative(path), kind, 0)
}

fn mkdir_all_depth(root: RawFd, rel: &Path, kind: Kind, depth: u32) -> Result<OwnedFd> {
    if depth > 40 {
        bail!("too many levels of symbolic links resolving {} in the container root", rel.display());
    }
    if let Ok(fd) = openat_in_root(root, rel, libc::O_PATH, 0) {
        return Ok(fd);
    }
    let comps: Vec<_> = rel.components().collect();
    let mut cur = openat_in_root(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let mut sofar = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        sofar.push(c);
        let last = i + 1 == comps.len();
        match openat_in_root(root, &sofar, libc::O_PATH, 0) {
            Ok(fd) => {
                cur = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("resolving {} in the container root", sofar.display())),
        }
        let name = CString::new(c.as_os_str().as_encoded_bytes())?;
        // A dangling symlink: create what it points to, still inside the root.
        let mut buf = [0u8; 4096];
        // SAFETY: readlinkat into a buffer we own, relative to a dir fd we hold.
        let n = unsafe { libc::readlinkat(cur.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let target = Path::new(std::ffi::OsStr::from_bytes(&buf[..n as usize]));
            let mut next = if target.is_absolute() {
                relative(target)
            } else {
                sofar.parent().unwrap_or(Path::new("")).join(target)
            };
            for rest in &comps[i + 1..] {
                next.push(rest);
            }
            return mkdir_all_depth(root, &next, kind, depth + 1);
        }
        // SAFETY: *at calls relative to a directory fd we hold.
        let rc = if last && kind == Kind::File {
            let fd = unsafe {
                libc::openat(
                    cur.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            fd.min(0)
        } else {
            unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) }
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e).with_context(|| format!("creating {} in the container root", sofar.display()));
            }
        }
        cur = openat_in_root(root, &sofar, libc::O_PATH, 0)
            .with_context(|| format!("opening {} in the container root", sofar.display()))?;
    }
    Ok(cur)
}

/// `/proc/self/fd/N`: the path by which mount(2) reaches exactly the object an fd refers to.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub fn is_dir(fd: &impl AsRawFd) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a valid fd.
    unsafe { libc::fstat(fd.as_raw_fd(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR }
}

/// Opens `path` (absolute, inside the root we already pivoted into or a given root fd).
pub fn open_root(path: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening root {}", path.display()))?;
    Ok(fd)
}

/// Refuses a path with `..` where the OCI spec expects a clean absolute path.
pub fn check_clean(field: &str, p: &Path) -> Result<()> {
    if p.components().any(|c| c == Component::ParentDir) {
        bail!("{field}: {} must not contain '..'", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // An absolute symlink that would point at the host's /tmp outside the root.
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        // A dangling absolute symlink: its target is made inside the root.
        std::os::unix::fs::symlink("/tmp/elsewhere", root.join("dangling")).unwrap();
        let rfd = open_root(&root).unwrap();
        let fd = mkdir_all_in_root(rfd.as_raw_fd(), Path::new("/escape/newdir"), Kind::Dir).unwrap();
        assert!(is_dir(&fd));
        assert!(root.join("newdir").is_dir(), "created inside the root");
        let fd = mkdir_all_in_root(rfd.as_raw_fd(), Path::new("/up/x/../f"), Kind::File).unwrap();
        assert!(!is_dir(&fd));
        assert!(root.join("f").is_file());
        assert!(!Path::new("/newdir").exists());
        mkdir_all_in_root(rfd.as_raw_fd(), Path::new("/dangling/sub"), Kind::Dir).unwrap();
        assert!(root.join("tmp/elsewhere/sub").is_dir());
    }
}
