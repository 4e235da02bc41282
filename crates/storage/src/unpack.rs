//! Unpacks an untrusted layer tar into a fresh directory. Every entry is resolved inside that
//! directory with openat2(RESOLVE_IN_ROOT) and written with *at calls on the resolved parent,
//! so absolute paths, symlinks pointing outside and paths through symlinks stay inside; `..`
//! and hardlinks to outside are refused. Whiteouts become overlay whiteouts (0/0 char devices,
//! the opaque xattr). Directory modes and times are applied last, so a read-only directory in
//! the layer does not block its own content.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_runtime::safepath::{Kind, mkdir_all_in_root, openat_in_root};

/// Limits against decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Device nodes are created only when allowed (root, not in a user namespace).
    pub allow_devices: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 64 << 30, max_entries: 4_000_000, allow_devices: true }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
}

struct DirMeta {
    path: PathBuf,
    mode: u32,
    mtime: i64,
}

const COPY_BUF: usize = 256 << 10;

/// Copies `r` to `w`, filling `buf` before each write.
fn copy_large(r: &mut impl Read, w: &mut impl std::io::Write, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n])?;
        total += n as u64;
        if n < buf.len() {
            return Ok(total);
        }
    }
}

/// Applies the layer in `r` to the directory `dest`.
pub fn unpack(r: impl Read, dest: &Path, limits: &Limits) -> Result<Stats> {
    let root = open_dir(dest)?;
    let mut ar = tar::Archive::new(r);
    let mut stats = Stats::default();
    // File contents go through one large buffer: big layers then cost a few thousand write
    // calls instead of one per 8 KiB (what std::io::copy would do).
    let mut buf = vec![0u8; COPY_BUF];
    let mut dirs: Vec<DirMeta> = Vec::new();
    // The parent directory of the last entry, and whether it is set-group-id.
    let mut cache: Option<(PathBuf, OwnedFd, bool)> = None;
    // Files we create are ours: as root (and not below a set-group-id directory, whose group
    // new files take), an entry owned by 0:0 needs no chown.
    // SAFETY: geteuid/getegid cannot fail.
    let root_creates = unsafe { libc::geteuid() == 0 && libc::getegid() == 0 };
    for e in ar.entries().context("reading the layer tar")? {
        let mut e = e.context("reading the layer tar")?;
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            bail!("the layer has more than {} entries (limit against tar bombs)", limits.max_entries);
        }
        let raw = e.path().context("an entry with an unreadable path")?.into_owned();
        let Some(rel) = clean(&raw)? else {
            // The root directory itself: keep ours.
            continue;
        };
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), cstr(n.as_encoded_bytes())?),
            _ => continue,
        };
        let (pfd, parent_sgid) = match &cache {
            Some((p, fd, sgid)) if *p == parent => (fd.as_raw_fd(), *sgid),
            _ => {
                let fd = mkdir_parents(root.as_raw_fd(), &parent)
                    .with_context(|| format!("layer entry {}", raw.display()))?;
                let sgid = nix::sys::stat::fstat(&fd).map(|st| st.st_mode & libc::S_ISGID != 0).unwrap_or(true);
                cache = Some((parent.clone(), fd, sgid));
                (cache.as_ref().map(|c| c.1.as_raw_fd()).unwrap_or(-1), sgid)
            }
        };
        let name_bytes = name.as_bytes();
        // Whiteouts.
        if name_bytes == b".wh..wh..opq" {
            xattr_set(pfd, None, "trusted.overlay.opaque", b"y")
                .with_context(|| format!("marking {} opaque", parent.display()))?;
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
            // `.wh.`, `.wh..` and `.wh...` would hide nothing or the directory itself (or its
            // parent), and the replace below would empty it.
            if matches!(hidden, b"" | b"." | b"..") {
                bail!("layer entry {}: not a valid whiteout name", raw.display());
            }
            if hidden.starts_with(b".wh.") {
                continue; // AUFS's own metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to hide
            }
            let hidden = cstr(hidden)?;
            // SAFETY: mknodat on a valid dir fd with a NUL-terminated name.
            let (_, removed) =
                make_fresh(pfd, &hidden, || unsafe { libc::mknodat(pfd, hidden.as_ptr(), libc::S_IFCHR | 0o600, 0) })
                    .with_context(|| format!("whiteout {}", raw.display()))?;
            if removed {
                cache = None;
            }
            continue;
        }
        let h = e.header().clone();
        let kind = h.entry_type();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        let mtime = h.mtime().unwrap_or(0) as i64;
        let xattrs = pax_xattrs(&mut e)?;
        let mut removed_dir = false;
        let chown = !(uid == 0 && gid == 0 && root_creates && !parent_sgid);
        match kind {
            tar::EntryType::Directory => {
                // A directory that was there already (made for an earlier entry) keeps its
                // owner unless this entry sets it.
                let mut fresh = true;
                // SAFETY: as above.
                if unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) } < 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::EEXIST) {
                        return Err(err).with_context(|| format!("creating {}", raw.display()));
                    }
                    // A directory again (later entries win) is kept; anything else replaced.
                    fresh = false;
                    if !is_dir_at(pfd, &name) {
                        fresh = true;
                        removed_dir = remove_any(pfd, &name)?;
                        // SAFETY: as above.
                        check(unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) })
                            .with_context(|| format!("creating {}", raw.display()))?;
                    }
                }
                let fd = open_at(pfd, &name, libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY)?;
                if chown || !fresh {
                    fchown(fd.as_raw_fd(), uid, gid)?;
                }
                set_xattrs(fd.as_raw_fd(), &xattrs)?;
                dirs.push(DirMeta { path: rel.clone(), mode, mtime });
                // The cached parent may be this directory replaced; drop it.
                cache = None;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                stats.bytes += h.size().unwrap_or(0);
                if stats.bytes > limits.max_bytes {
                    bail!("the layer unpacks to more than {} bytes (limit against tar bombs)", limits.max_bytes);
                }
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                // SAFETY: openat with a valid dir fd and a single-component name.
                let (fd, removed) =
                    make_fresh(pfd, &name, || unsafe { libc::openat(pfd, name.as_ptr(), flags, 0o600) })
                        .with_context(|| format!("creating {}", raw.display()))?;
                removed_dir = removed;
                // SAFETY: a new fd we own.
                let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                let n = copy_large(&mut e, &mut f, &mut buf).with_context(|| format!("writing {}", raw.display()))?;
                stats.bytes = stats.bytes - h.size().unwrap_or(0) + n;
                let fd = f.as_raw_fd();
                if chown {
                    fchown(fd, uid, gid)?;
                }
                // SAFETY: fchmod on our own fd (after chown, which clears set-id bits).
                check(unsafe { libc::fchmod(fd, mode) })?;
                set_xattrs(fd, &xattrs)?;
                set_times(fd, None, mtime, 0)?;
            }
            tar::EntryType::Symlink => {
                let target = e.link_name()?.context("a symlink without a target")?;
                let target = cstr(target.as_os_str().as_encoded_bytes())?;
                // SAFETY: symlinkat with valid strings and dir fd.
                let (_, removed) =
                    make_fresh(pfd, &name, || unsafe { libc::symlinkat(target.as_ptr(), pfd, name.as_ptr()) })
                        .with_context(|| format!("symlink {}", raw.display()))?;
                removed_dir = removed;
                if chown {
                    // SAFETY: fchownat without following the link.
                    check(unsafe { libc::fchownat(pfd, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
                }
                set_times(pfd, Some(&name), mtime, libc::AT_SYMLINK_NOFOLLOW)?;
            }
            tar::EntryType::Link => {
                let target = e.link_name()?.context("a hardlink without a target")?.into_owned();
                let Some(trel) = clean(&target)? else {
                    bail!("layer entry {}: a hardlink to the root directory", raw.display())
                };
                let tparent =
                    open_dir_in(root.as_raw_fd(), trel.parent().unwrap_or(Path::new(""))).with_context(|| {
                        format!(
                            "layer entry {}: hardlink target {} is not in the layer",
                            raw.display(),
                            target.display()
                        )
                    })?;
                let tname = cstr(trel.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default())?;
                // SAFETY: linkat between two dir fds we resolved inside the root; no symlink following.
                let (_, removed) = make_fresh(pfd, &name, || unsafe {
                    libc::linkat(tparent.as_raw_fd(), tname.as_ptr(), pfd, name.as_ptr(), 0)
                })
                .with_context(|| format!("layer entry {}: hardlink to {}", raw.display(), target.display()))?;
                removed_dir = removed;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let fmt = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if fmt != libc::S_IFIFO && !limits.allow_devices {
                    bail!("layer entry {}: device nodes are not allowed here", raw.display());
                }
                let dev = libc::makedev(h.device_major()?.unwrap_or(0), h.device_minor()?.unwrap_or(0));
                // SAFETY: mknodat with a valid dir fd and name.
                let (_, removed) =
                    make_fresh(pfd, &name, || unsafe { libc::mknodat(pfd, name.as_ptr(), fmt | mode, dev) })
                        .with_context(|| format!("creating device {}", raw.display()))?;
                removed_dir = removed;
                if chown {
                    // SAFETY: as above.
                    check(unsafe { libc::fchownat(pfd, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
                }
                set_times(pfd, Some(&name), mtime, libc::AT_SYMLINK_NOFOLLOW)?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => bail!("layer entry {}: unsupported tar entry type {other:?}", raw.display()),
        }
        if removed_dir {
            cache = None;
        }
    }
    drop(cache);
    // Deepest first, so a parent's mtime is set after its children are done.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in dirs {
        // A directory a later entry replaced (by a file, a link) is not there to chmod.
        let fd =
            match openat_in_root(root.as_raw_fd(), &d.path, libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ENOENT | libc::ELOOP)) => continue,
                Err(e) => return Err(e).with_context(|| format!("opening {}", d.path.display())),
            };
        // SAFETY: fchmod on an fd we own.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), d.mode) })?;
        set_times(fd.as_raw_fd(), None, d.mtime, 0)?;
    }
    Ok(stats)
}

/// The entry path relative to the layer root; `None` for the root itself; `..` is refused.
fn clean(p: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => bail!("layer entry {}: path traversal (..) is not allowed", p.display()),
            _ => {}
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

pub(crate) fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).context("a path with a NUL byte")
}

pub(crate) fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

pub(crate) fn open_dir(p: &Path) -> Result<OwnedFd> {
    let c = cstr(p.as_os_str().as_encoded_bytes())?;
    // SAFETY: open(2) with a valid path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC) };
    check(fd).with_context(|| format!("opening {}", p.display()))?;
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_in(root: RawFd, rel: &Path) -> Result<OwnedFd> {
    let p = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    openat_in_root(root, p, libc::O_DIRECTORY | libc::O_RDONLY, 0).with_context(|| format!("opening {}", rel.display()))
}

pub(crate) fn open_at(dir: RawFd, name: &CString, flags: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: openat with a valid dir fd and a single-component name.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    check(fd).with_context(|| format!("opening {}", name.to_string_lossy()))?;
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `rel` inside root, creating missing directories (mode 0755) on the way. A symlink on
/// the way is followed, still inside the root, as Docker does.
fn mkdir_parents(root: RawFd, rel: &Path) -> Result<OwnedFd> {
    match open_dir_in(root, rel) {
        Ok(fd) => Ok(fd),
        Err(_) => {
            mkdir_all_in_root(root, rel, Kind::Dir)?;
            open_dir_in(root, rel)
        }
    }
}

fn is_dir_at(dir: RawFd, name: &CString) -> bool {
    // SAFETY: fstatat into a zeroed stat, not following symlinks.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Runs `make`, a *at call that creates `name` in `dir` and fails if it exists; when something
/// is in the way (an earlier entry of the same name), removes it and runs `make` once more.
/// Trying first spares the common case (a fresh name) a lookup. Returns the call's result and
/// whether a directory was removed.
fn make_fresh(dir: RawFd, name: &CString, mut make: impl FnMut() -> libc::c_int) -> Result<(libc::c_int, bool)> {
    let rc = make();
    if rc >= 0 {
        return Ok((rc, false));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EEXIST) {
        return Err(err.into());
    }
    let removed = remove_any(dir, name)?;
    let rc = make();
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok((rc, removed))
}

/// Removes whatever is at `name` (a file, a link, or a whole directory tree).
/// Returns whether a directory was removed.
pub(crate) fn remove_any(dir: RawFd, name: &CString) -> Result<bool> {
    // SAFETY: unlinkat on a valid dir fd.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } == 0 {
        return Ok(false);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOENT) => Ok(false),
        Some(libc::EISDIR) | Some(libc::EPERM) if is_dir_at(dir, name) => {
            let fd = open_at(dir, name, libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY)?;
            // Never empty another file system (or a bind of one, such as a layer) that is
            // mounted inside the tree: unlinkat would fail on the mount point only after its
            // contents were gone.
            if mount_root_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH) == Some(true) {
                bail!("refusing to remove {}: a file system is mounted there", name.to_string_lossy());
            }
            remove_tree_fd(fd)?;
            // SAFETY: as above.
            check(unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) })?;
            Ok(true)
        }
        _ => Err(std::io::Error::last_os_error()).with_context(|| format!("removing {}", name.to_string_lossy())),
    }
}

/// Whether the file at `path` (from `dirfd`) is the root of a mount, as statx says
/// (STATX_ATTR_MOUNT_ROOT); None where it cannot say (Linux before 5.8, or an error).
pub(crate) fn mount_root_at(dirfd: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> Option<bool> {
    // SAFETY: statx into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statx(dirfd, path.as_ptr(), flags, 0, &mut st) };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (r == 0 && st.stx_attributes_mask & bit != 0).then_some(st.stx_attributes & bit != 0)
}

/// Empties the directory `fd`, never following symlinks.
pub(crate) fn remove_tree_fd(fd: OwnedFd) -> Result<()> {
    let raw = fd.as_raw_fd();
    let mut names = Vec::new();
    {
        let d = std::fs::read_dir(format!("/proc/self/fd/{raw}")).context("listing a directory to remove")?;
        for e in d.flatten() {
            names.push(e.file_name());
        }
    }
    for n in names {
        remove_any(raw, &cstr(n.as_encoded_bytes())?)?;
    }
    Ok(())
}

fn fchown(fd: RawFd, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: fchown on a valid fd.
    check(unsafe { libc::fchown(fd, uid, gid) }).context("setting an owner")?;
    Ok(())
}

fn set_times(dir: RawFd, name: Option<&CString>, mtime: i64, flags: libc::c_int) -> Result<()> {
    let ts = [libc::timespec { tv_sec: mtime, tv_nsec: 0 }; 2];
    // SAFETY: futimens/utimensat with a two-element array.
    let rc = unsafe {
        match name {
            None => libc::futimens(dir, ts.as_ptr()),
            Some(n) => libc::utimensat(dir, n.as_ptr(), ts.as_ptr(), flags),
        }
    };
    check(rc).context("setting times")?;
    Ok(())
}

fn pax_xattrs<R: Read>(e: &mut tar::Entry<R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = e.pax_extensions()? {
        for x in exts {
            let x = x?;
            if let Some(k) = x.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                // trusted.overlay.* would let a layer steer overlayfs (redirects, origins).
                if k.starts_with("trusted.overlay.") {
                    continue;
                }
                out.push((k.to_string(), x.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn set_xattrs(fd: RawFd, xs: &[(String, Vec<u8>)]) -> Result<()> {
    for (k, v) in xs {
        xattr_set(fd, None, k, v).with_context(|| format!("setting xattr {k}"))?;
    }
    Ok(())
}

fn xattr_set(fd: RawFd, _name: Option<&CString>, key: &str, v: &[u8]) -> Result<()> {
    let k = cstr(key.as_bytes())?;
    // SAFETY: fsetxattr on a valid fd with a valid buffer.
    check(unsafe { libc::fsetxattr(fd, k.as_ptr(), v.as_ptr().cast(), v.len(), 0) })?;
    Ok(())
}
