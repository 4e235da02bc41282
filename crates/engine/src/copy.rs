//! `berth cp`: files between a container and the host, in both directions, for running and
//! stopped containers. The container's side is never trusted: its path is resolved inside its
//! root (openat2 RESOLVE_IN_ROOT), and the walk below it goes from directory fd to directory fd
//! with O_NOFOLLOW, so no symlink, not even one swapped in by a running container, leads out.

use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_image::manifest::chain_ids;
use berth_runtime::safepath;
use berth_storage::copydriver::{lstat_at, same_regular_file};
use berth_storage::{RootFs, Shift};

use crate::Engine;

/// One side of a copy: a host path, or a path in a container.
pub enum Location {
    Host(PathBuf),
    Container(String, String),
}

/// `NAME:PATH` is in a container, anything else (incl. `./a:b`) on the host, as Docker reads it.
pub fn parse_location(s: &str) -> Location {
    if !s.starts_with('/')
        && !s.starts_with('.')
        && let Some((c, p)) = s.split_once(':')
        && !c.is_empty()
    {
        return Location::Container(c.into(), p.into());
    }
    Location::Host(s.into())
}

fn err(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> anyhow::Error {
    let msg = format!("{what} {}", p.display());
    move |e| anyhow::Error::from(e).context(msg)
}

fn cstr(name: &OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).context("a file name with a NUL byte")
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<OwnedFd> {
    // SAFETY: openat with a valid dir fd and a NUL-terminated name; the fd is ours.
    let fd =
        unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The target of the symbolic link `name` in `dir`.
fn readlink_at(dir: RawFd, name: &CStr) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat into our buffer.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Copies the entry `name` of directory `from` into directory `to` as `as_name`; `owner`
/// gives each copy's owner from its source's.
fn copy_entry(
    from: RawFd,
    name: &CStr,
    to: RawFd,
    as_name: &CStr,
    owner: &dyn Fn(u32, u32) -> (u32, u32),
) -> Result<()> {
    let st = lstat_at(from, name)?;
    let (uid, gid) = owner(st.st_uid, st.st_gid);
    let mode = st.st_mode & 0o7777;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            // An existing directory is entered (never through a symlink), else made.
            // SAFETY: mkdirat with a valid dir fd.
            if unsafe { libc::mkdirat(to, as_name.as_ptr(), 0o700) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e.into());
                }
            }
            let src = openat(from, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let dst = openat(to, as_name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let mut names = Vec::new();
            for e in fs::read_dir(format!("/proc/self/fd/{}", src.as_raw_fd()))? {
                names.push(e?.file_name());
            }
            names.sort();
            for n in names {
                let n = cstr(&n)?;
                copy_entry(src.as_raw_fd(), &n, dst.as_raw_fd(), &n, owner)?;
            }
            // SAFETY: fchown/fchmod of our fd.
            unsafe {
                libc::fchown(dst.as_raw_fd(), uid, gid);
                libc::fchmod(dst.as_raw_fd(), mode);
            }
        }
        libc::S_IFREG => {
            // Opened without blocking and checked to be the file just looked at: a running
            // container may have swapped in a FIFO or a device node meanwhile.
            let src = openat(from, name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0)?;
            same_regular_file(src.as_raw_fd(), &st)?;
            // SAFETY: unlinkat of whatever was there (a file or a symlink: never followed).
            unsafe { libc::unlinkat(to, as_name.as_ptr(), 0) };
            let dst = openat(to, as_name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
            let (mut r, mut w) = (fs::File::from(src), fs::File::from(dst));
            std::io::copy(&mut r, &mut w)?;
            // SAFETY: fchown/fchmod of our fd.
            unsafe {
                libc::fchown(w.as_raw_fd(), uid, gid);
                libc::fchmod(w.as_raw_fd(), mode);
            }
        }
        libc::S_IFLNK => {
            let target = CString::new(readlink_at(from, name)?)?;
            // SAFETY: as above; the link is made, never followed.
            unsafe {
                libc::unlinkat(to, as_name.as_ptr(), 0);
                if libc::symlinkat(target.as_ptr(), to, as_name.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
                libc::fchownat(to, as_name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW);
            }
        }
        // Devices, fifos and sockets are not copied, as `docker cp` skips them too.
        _ => {}
    }
    Ok(())
}

/// A container's root for copying: its mount namespace's root while it runs, else its root
/// (and volumes and binds) mounted in a private mount namespace of the copying thread.
struct Root {
    fd: OwnedFd,
    /// A running `--userns` container: through its root the host sees ids shifted by this.
    shift: Option<Shift>,
}

/// What reaching a container's root takes, read from the database before the copy (the copy
/// of a stopped container runs on a thread of its own, without the engine).
struct RootPlan {
    running: Option<i32>,
    shift: Option<Shift>,
    rootfs: RootFs,
    chains: Vec<berth_image::Digest>,
    /// (source, destination, read-only), shortest destination first.
    binds: Vec<(PathBuf, String, bool)>,
}

impl Engine {
    fn root_plan(&self, key: &str) -> Result<RootPlan> {
        let c = self.container(key)?;
        let rootfs = RootFs::path(&self.layers, &c.id);
        if c.is_running() && c.pid > 0 {
            return Ok(RootPlan {
                running: Some(c.pid),
                shift: c.config.userns,
                rootfs,
                chains: Vec::new(),
                binds: Vec::new(),
            });
        }
        let image = self.resolve_image(&c.image)?;
        let chains = chain_ids(&self.config_of(&image)?.rootfs.diff_ids);
        let mut binds: Vec<(PathBuf, String, bool)> = c
            .config
            .binds
            .iter()
            .map(|b| {
                let source = match &b.volume {
                    Some(v) => self.volume_data(v),
                    None => b.source.clone(),
                };
                (source, b.destination.clone(), b.readonly)
            })
            .collect();
        binds.sort_by_key(|b| b.1.len());
        Ok(RootPlan { running: None, shift: None, rootfs, chains, binds })
    }

    /// Runs `f` with the container's root. A stopped container's root, volumes and binds are
    /// mounted (as it sees them when it runs: Docker's cp sees them too) in a private mount
    /// namespace of a thread of its own: nothing of it shows outside, and it all goes with the
    /// thread, also when the copy fails or berth is interrupted.
    fn with_root<T: Send>(&self, key: &str, f: impl FnOnce(&Root) -> Result<T> + Send) -> Result<T> {
        let plan = self.root_plan(key)?;
        if let Some(pid) = plan.running {
            let fd = safepath::open_root(Path::new(&format!("/proc/{pid}/root")))?;
            return f(&Root { fd, shift: plan.shift });
        }
        let layers = &self.layers;
        berth_storage::rootfs::in_private_mount_ns(move || {
            use nix::mount::{MsFlags, mount};
            plan.rootfs.mount(layers, &plan.chains)?; // nothing when it is mounted already
            // Stopped, the root is mounted without idmapped layers: the ids on disk.
            let root = Root { fd: safepath::open_root(&plan.rootfs.merged())?, shift: None };
            for (source, dest, ro) in &plan.binds {
                if !source.exists() {
                    continue;
                }
                // The mount point as the container's root resolves it (no symlink out); one
                // the image lacks is left alone.
                let Ok(at) = safepath::openat_in_root(
                    root.fd.as_raw_fd(),
                    &inside(Path::new(dest)),
                    libc::O_PATH | libc::O_CLOEXEC,
                    0,
                ) else {
                    continue;
                };
                let target = format!("/proc/self/fd/{}", at.as_raw_fd());
                mount(Some(source), &target[..], None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .with_context(|| format!("mounting {} at {dest} for the copy", source.display()))?;
                if *ro {
                    // Opened again, the place is now the new mount: make that read-only.
                    let on = safepath::openat_in_root(
                        root.fd.as_raw_fd(),
                        &inside(Path::new(dest)),
                        libc::O_PATH | libc::O_CLOEXEC,
                        0,
                    )?;
                    mount(
                        None::<&str>,
                        &format!("/proc/self/fd/{}", on.as_raw_fd())[..],
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .with_context(|| format!("making {dest} read-only for the copy"))?;
                }
            }
            f(&root)
        })
    }

    /// `berth cp SRC DST`; one side must be in a container.
    pub fn copy(&self, src: &Location, dst: &Location, archive: bool) -> Result<()> {
        self.copy_following(src, dst, archive, false)
    }

    /// [`Engine::copy`]; with `follow` (`cp -L`) a source in the container that is a symbolic
    /// link is copied as what it points to (resolved inside the container's root), under its
    /// own name.
    pub fn copy_following(&self, src: &Location, dst: &Location, archive: bool, follow: bool) -> Result<()> {
        match (src, dst) {
            (Location::Container(c, p), Location::Host(h)) => {
                self.with_root(c, |root| copy_out(root, c, p, h, archive, follow))
            }
            (Location::Host(h), Location::Container(c, p)) => {
                let hp = fs::canonicalize(h).map_err(err("no such file or directory:", h))?;
                let (hparent, hname) = split_host(&hp)?;
                let hdir = fs::File::open(&hparent).map_err(err("opening", &hparent))?;
                self.with_root(c, |root| copy_in(root, c, p, hdir.as_raw_fd(), &hname, archive))
            }
            _ => bail!(
                "copying between two containers or two host paths is not supported: one side must be CONTAINER:PATH"
            ),
        }
    }

    /// `berth cp CONTAINER:PATH -`: the path (a file or a tree, by its own name) as a tar
    /// stream on `w`, owners kept.
    pub fn copy_to_stream(&self, container: &str, path: &str, follow: bool, w: impl std::io::Write) -> Result<()> {
        let tmp = tempfile::Builder::new().prefix("cp-").tempdir_in(self.layers.root().join("tmp"))?;
        let into = tmp.path().to_path_buf();
        self.with_root(container, |root| copy_out(root, container, path, &into, true, follow))?;
        berth_storage::tarball::write_tree(tmp.path(), w)?;
        Ok(())
    }

    /// `berth cp - CONTAINER:DIR`: a tar stream from `r` unpacked into the directory DIR
    /// (safely, as a layer is), then copied in with its owners, entry by entry from the
    /// unpacked directory (a symlink in the stream is copied as a symlink, never followed).
    pub fn copy_from_stream(&self, r: impl std::io::Read, container: &str, dir: &str) -> Result<()> {
        let tmp = tempfile::Builder::new().prefix("cp-").tempdir_in(self.layers.root().join("tmp"))?;
        let limits = berth_storage::Limits { allow_devices: false, ..crate::settings::Settings::layer_limits()? };
        berth_storage::unpack::unpack(r, tmp.path(), &limits).context("reading the tar stream from stdin")?;
        let from = fs::File::open(tmp.path())?;
        let mut names: Vec<CString> = Vec::new();
        for e in fs::read_dir(tmp.path())? {
            names.push(cstr(&e?.file_name())?);
        }
        names.sort();
        self.with_root(container, |root| {
            // The destination must be a directory (Docker's rule for a stream).
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
            safepath::openat_in_root(root.fd.as_raw_fd(), &inside(Path::new(dir)), flags, 0)
                .map_err(|_| anyhow::anyhow!("destination \"{container}:{dir}\" must be a directory"))?;
            for n in &names {
                copy_in(root, container, dir, from.as_raw_fd(), n, true)?;
            }
            Ok(())
        })
    }
}

/// From the container: `p` in `root` to the host path `h` (an existing directory receives it
/// by its name).
fn copy_out(root: &Root, c: &str, p: &str, h: &Path, archive: bool, follow: bool) -> Result<()> {
    let (_, own_name) = split(p)?;
    let resolved;
    let p: &str = if follow {
        resolved = resolve_links(root.fd.as_raw_fd(), p)
            .map_err(|e| e.context(format!("Could not find the file {p} in container {c}")))?;
        &resolved
    } else {
        p
    };
    if p == "/" {
        bail!("{}: a link to the container's root cannot be copied with -L", own_name.to_string_lossy());
    }
    let (parent, name) = split(p)?;
    let dir = safepath::openat_in_root(
        root.fd.as_raw_fd(),
        &inside(parent),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    )
    .map_err(|e| anyhow::Error::from(e).context(format!("Could not find the file {p} in container {c}")))?;
    lstat_at(dir.as_raw_fd(), &name)
        .map_err(|e| anyhow::Error::from(e).context(format!("Could not find the file {p} in container {c}")))?;
    // SAFETY: getuid/getgid.
    let me = unsafe { (libc::getuid(), libc::getgid()) };
    let (hdir, hname) = host_target(h, &own_name)?;
    let hfd = fs::File::open(&hdir).map_err(err("opening", &hdir))?;
    let shift = root.shift;
    let owner = move |u: u32, g: u32| match (archive, shift) {
        (false, _) => me,
        (true, None) => (u, g),
        (true, Some(s)) => s.unshift(u, g),
    };
    copy_entry(dir.as_raw_fd(), &name, hfd.as_raw_fd(), &hname, &owner)
}

/// Into the container: the entry `hname` of the host directory `hdir` to `p` in `root` (an
/// existing directory receives it by its name; else the last component is its new name).
fn copy_in(root: &Root, c: &str, p: &str, hdir: RawFd, hname: &CStr, archive: bool) -> Result<()> {
    let rel = inside(Path::new(p));
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let (dir, name) = match safepath::openat_in_root(root.fd.as_raw_fd(), &rel, flags, 0) {
        Ok(d) => (d, hname.to_owned()),
        Err(_) => {
            let (parent, name) = split(p)?;
            let d = safepath::openat_in_root(root.fd.as_raw_fd(), &inside(parent), flags, 0).map_err(|e| {
                anyhow::Error::from(e)
                    .context(format!("Could not find the directory {} in container {c}", parent.display()))
            })?;
            (d, name)
        }
    };
    let owner = |u: u32, g: u32| if archive { (u, g) } else { (0, 0) };
    match root.shift {
        None => copy_entry(hdir, hname, dir.as_raw_fd(), &name, &owner),
        // Writes through the container's overlay must come from ids its idmapped layers can
        // map: the container's root, owners shifted alike.
        Some(s) => berth_storage::rootfs::as_fs_ids(s.uid, s.gid, || {
            let shifted = |u: u32, g: u32| {
                let (u, g) = owner(u, g);
                s.shift(u, g)
            };
            copy_entry(hdir, hname, dir.as_raw_fd(), &name, &shifted)
        }),
    }
}

/// A container path relative to its root (`.` for the root itself).
/// `p` with its last component's symbolic links followed (up to 40), read inside `root`:
/// absolute targets start at the container's root, `..` stops there. The directories on the
/// way are resolved inside the root again when the result is opened.
fn resolve_links(root: RawFd, p: &str) -> Result<String> {
    let mut cur = clean(p);
    for _ in 0..40 {
        if cur == "/" {
            return Ok(cur);
        }
        let (parent, name) = split(&cur)?;
        let dir =
            safepath::openat_in_root(root, &inside(parent), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
        let st = lstat_at(dir.as_raw_fd(), &name)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Ok(cur);
        }
        let target = String::from_utf8_lossy(&readlink_at(dir.as_raw_fd(), &name)?).into_owned();
        cur = if target.starts_with('/') { clean(&target) } else { clean(&format!("{}/{target}", parent.display())) };
    }
    bail!("too many levels of symbolic links")
}

/// A path made absolute and lexically clean (`.` dropped, `..` goes up but not above `/`).
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn inside(p: &Path) -> PathBuf {
    let r = safepath::relative(p);
    if r.as_os_str().is_empty() { PathBuf::from(".") } else { r }
}

/// `a/b/c` -> (`a/b`, `c`); `/` and paths ending in `.` or `..` are refused.
fn split(p: &str) -> Result<(&Path, CString)> {
    let path = Path::new(p.trim_end_matches('/'));
    let name = path.file_name().with_context(|| format!("invalid path {p:?}: name a file or directory"))?;
    Ok((path.parent().unwrap_or(Path::new("/")), cstr(name)?))
}

fn split_host(p: &Path) -> Result<(PathBuf, CString)> {
    let name = p.file_name().with_context(|| format!("cannot copy {}", p.display()))?;
    Ok((p.parent().unwrap_or(Path::new("/")).to_path_buf(), cstr(name)?))
}

/// Where a copy to host path `h` goes: into `h` when it is a directory, else `h` itself.
fn host_target(h: &Path, name: &CStr) -> Result<(PathBuf, CString)> {
    if h.is_dir() {
        return Ok((h.to_path_buf(), name.to_owned()));
    }
    let n = h.file_name().with_context(|| format!("invalid destination {}", h.display()))?;
    let parent = h.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("destination directory {} does not exist", parent.display());
    }
    Ok((parent.to_path_buf(), cstr(n)?))
}
