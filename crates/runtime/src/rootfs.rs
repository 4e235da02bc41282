//! The container's root: mounts in order, /dev, pivot_root, masked and read-only paths.
//! Runs in the container's init, inside its new mount namespace.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_cgroups::{Cgroup, Layout};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::mountopts::{self, Parsed};
use crate::safepath::{self, Kind, fd_path, mkdir_all_in_root};

pub struct RootfsCtx<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub cgroup: Option<&'a Cgroup>,
    pub in_userns: bool,
    pub new_cgroupns: bool,
}

fn mnt(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<()> {
    mount(src, target, fstype, flags, data).with_context(|| {
        format!(
            "mount {} on {} (type {}, flags {:?}, data {:?})",
            src.map(|s| s.display().to_string()).unwrap_or_default(),
            target.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("")
        )
    })
}

fn propagation_flag(s: &str) -> Result<MsFlags> {
    Ok(match s {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => bail!("linux.rootfsPropagation: unknown value {other:?}"),
    })
}

/// Everything up to and including pivot_root.
pub fn prepare(ctx: &RootfsCtx, no_pivot: bool) -> Result<()> {
    let linux = ctx.spec.linux().as_ref();
    let prop = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some(p) => propagation_flag(p)?,
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    // Nothing we mount may propagate back to the host.
    mnt(None, Path::new("/"), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
    mnt(Some(ctx.rootfs), ctx.rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    let root = safepath::open_root(ctx.rootfs)?;

    let mut dev_is_fresh = false;
    for m in ctx.spec.mounts().iter().flatten() {
        mount_one(ctx, &root, m).with_context(|| format!("mounts: {}", m.destination().display()))?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind") {
            dev_is_fresh = true;
        }
    }
    if dev_is_fresh {
        default_devices(ctx, &root)?;
    }
    for d in linux.and_then(|l| l.devices().as_ref()).into_iter().flatten() {
        make_device(ctx, &root, d).with_context(|| format!("linux.devices: {}", d.path().display()))?;
    }
    if dev_is_fresh {
        dev_symlinks(&root)?;
    }
    drop(root);

    if no_pivot {
        nix::unistd::chdir(ctx.rootfs).context("chdir to rootfs")?;
        mnt(Some(ctx.rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
        nix::unistd::chroot(".").context("chroot (--no-pivot)")?;
    } else {
        nix::unistd::chdir(ctx.rootfs).context("chdir to rootfs")?;
        nix::unistd::pivot_root(".", ".").context("pivot_root")?;
        // The old root now sits on top of the new one; detach it without touching the host.
        mnt(None, Path::new("."), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
        umount2(".", MntFlags::MNT_DETACH).context("unmounting the old root")?;
    }
    nix::unistd::chdir("/").context("chdir /")?;
    if prop != (MsFlags::MS_SLAVE | MsFlags::MS_REC) {
        mnt(None, Path::new("/"), None, prop, None)?;
    }
    Ok(())
}

fn mount_one(ctx: &RootfsCtx, root: &OwnedFd, m: &Mount) -> Result<()> {
    let dest = m.destination();
    if !dest.is_absolute() {
        bail!("destination must be an absolute path");
    }
    safepath::check_clean("mounts.destination", dest)?;
    let opts = mountopts::parse(m.options().as_deref().unwrap_or(&[]))?;
    if opts.idmap || m.uid_mappings().is_some() {
        bail!("idmapped mounts are not supported by berth-runtime yet");
    }
    let typ = m.typ().as_deref().unwrap_or(if opts.flags.contains(MsFlags::MS_BIND) { "bind" } else { "" });
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    let source = m.source().as_ref().map(|s| if s.is_relative() && is_bind { ctx.bundle.join(s) } else { s.clone() });

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(ctx, root, dest, &opts);
    }
    if is_bind {
        let src = source.context("a bind mount needs a source")?;
        let meta = std::fs::metadata(&src).with_context(|| format!("bind source {}", src.display()))?;
        let target = mkdir_all_in_root(root.as_raw_fd(), dest, if meta.is_dir() { Kind::Dir } else { Kind::File })?;
        let tpath = fd_path(&target);
        let rec = opts.flags & MsFlags::MS_REC;
        mnt(Some(&src), &tpath, None, MsFlags::MS_BIND | rec, None)?;
        // A bind ignores other flags; apply them with a remount of the new mount.
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let t = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
            remount(&fd_path(&t), extra)?;
        }
        finish(root, dest, &opts)?;
        return Ok(());
    }
    let target = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
    let tpath = fd_path(&target);
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let src = source.unwrap_or_else(|| PathBuf::from(typ));
    let res = mount(Some(&src), &tpath, Some(typ), opts.flags, data);
    match res {
        Ok(()) => {}
        // Without a new network namespace (or inside a user namespace) sysfs cannot be
        // mounted fresh; bind the host's, read-only, as runc does.
        Err(nix::Error::EPERM) | Err(nix::Error::EBUSY) if typ == "sysfs" => {
            mnt(Some(Path::new("/sys")), &tpath, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
            let t = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
            remount(&fd_path(&t), opts.flags | MsFlags::MS_RDONLY)?;
        }
        // mqueue needs an ipc namespace of our own; bind the host's otherwise.
        Err(nix::Error::EPERM) if typ == "mqueue" => {
            mnt(Some(Path::new("/dev/mqueue")), &tpath, None, MsFlags::MS_BIND, None)?;
        }
        Err(e) => {
            return Err(e).with_context(|| format!("mount {} type {typ} (options {:?})", src.display(), m.options()));
        }
    }
    finish(root, dest, &opts)
}

/// Propagation and recursive attributes, applied to the mount now at `dest`.
fn finish(root: &OwnedFd, dest: &Path, opts: &Parsed) -> Result<()> {
    if opts.propagation.is_empty() && opts.rec_set == 0 && opts.rec_clr == 0 {
        return Ok(());
    }
    let t = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
    for p in &opts.propagation {
        mnt(None, &fd_path(&t), None, *p, None)?;
    }
    if opts.rec_set != 0 || opts.rec_clr != 0 {
        mount_setattr_rec(&t, opts.rec_set, opts.rec_clr)?;
    }
    Ok(())
}

/// MOUNT_ATTR_* bits of the per-mount MS_* flags among `f` (ro, nosuid, nodev, noexec).
fn attr_bits(f: MsFlags) -> u64 {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ]
    .iter()
    .filter(|(m, _)| f.contains(*m))
    .fold(0, |acc, (_, a)| acc | a)
}

fn mount_setattr_rec(fd: &OwnedFd, set: u64, clr: u64) -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        set: u64,
        clr: u64,
        propagation: u64,
        userns: u64,
    }
    let attr = MountAttr { set, clr, propagation: 0, userns: 0 };
    let empty = CString::new("").unwrap();
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    // SAFETY: mount_setattr(2) on an fd we hold with a properly sized attr struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH as libc::c_uint) | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(
            anyhow::Error::new(std::io::Error::last_os_error()).context("mount_setattr (recursive mount options)")
        );
    }
    Ok(())
}

/// Remounts a bind mount with `flags`, keeping the flags the kernel locks in a user namespace.
pub fn remount(target: &Path, flags: MsFlags) -> Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None::<&str>, target, None::<&str>, base | flags, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::Error::EPERM) => {
            let st = nix::sys::statvfs::statvfs(target).context("statvfs")?;
            let mut locked = MsFlags::empty();
            use nix::sys::statvfs::FsFlags;
            for (f, m) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if st.flags().contains(f) {
                    locked |= m;
                }
            }
            mnt(None, target, None, base | flags | locked, None)
        }
        Err(e) => Err(e).with_context(|| format!("remounting {} with {:?}", target.display(), flags)),
    }
}

/// A cgroup mount: cgroup2 on a v2 host; on v1, a tmpfs holding one bind of the container's own
/// cgroup per controller (its view starts at its own cgroup, with or without a cgroup namespace).
fn mount_cgroup(ctx: &RootfsCtx, root: &OwnedFd, dest: &Path, opts: &Parsed) -> Result<()> {
    let target = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
    let tpath = fd_path(&target);
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    let Some(cg) = ctx.cgroup else {
        return mnt(Some(Path::new("cgroup2")), &tpath, Some("cgroup2"), flags, None);
    };
    match cg.layout() {
        Layout::V2 { root: host } => {
            if ctx.new_cgroupns {
                mnt(Some(Path::new("cgroup2")), &tpath, Some("cgroup2"), flags, None)
            } else {
                mnt(Some(&host.join(cg.path())), &tpath, None, MsFlags::MS_BIND, None)?;
                remount(&tpath, flags)
            }
        }
        Layout::V1 { root: host, unified } => {
            let ro = flags.contains(MsFlags::MS_RDONLY);
            mnt(
                Some(Path::new("tmpfs")),
                &tpath,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )?;
            // The tmpfs we just mounted, in a mount namespace no other process has: plain *at
            // calls relative to it cannot be redirected.
            let tmp = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
            let mut dirs: Vec<(String, PathBuf)> = Vec::new();
            for e in std::fs::read_dir(host).context("listing the cgroup hierarchies")?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ft = e.file_type()?;
                if name == "unified" {
                    continue;
                }
                if ft.is_symlink() {
                    let to = std::fs::read_link(e.path())?;
                    let c = CString::new(name.as_bytes())?;
                    let to = CString::new(to.as_os_str().as_encoded_bytes())?;
                    // SAFETY: symlinkat relative to a dir fd we hold (tmpfs we just mounted).
                    unsafe { libc::symlinkat(to.as_ptr(), tmp.as_raw_fd(), c.as_ptr()) };
                    continue;
                }
                if ft.is_dir() {
                    dirs.push((name, host.join(e.file_name()).join(cg.path())));
                }
            }
            if let Some(u) = unified {
                dirs.push(("unified".into(), u.join(cg.path())));
            }
            let attrs = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | (flags & MsFlags::MS_RDONLY);
            let mut bound = Vec::new();
            for (name, src) in dirs {
                if !src.exists() {
                    continue;
                }
                let c = CString::new(name.as_bytes())?;
                // SAFETY: mkdirat relative to the fresh tmpfs.
                if unsafe { libc::mkdirat(tmp.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| format!("mkdir {name}"));
                }
                let t = nix::fcntl::openat(
                    &tmp,
                    name.as_str(),
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_NOFOLLOW
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?;
                mnt(Some(&src), &fd_path(&t), None, MsFlags::MS_BIND, None)?;
                bound.push(name);
            }
            // One recursive mount_setattr for the tmpfs and every bind in it (one syscall
            // instead of a remount per hierarchy); remounts where the kernel lacks it (< 5.12).
            let tmp = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
            match mount_setattr_rec(&tmp, attr_bits(attrs), 0) {
                Ok(()) => return Ok(()),
                Err(e) if e.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) != Some(libc::ENOSYS) => {
                    return Err(e);
                }
                Err(_) => {}
            }
            for name in bound {
                let t = mkdir_all_in_root(root.as_raw_fd(), &dest.join(&name), Kind::Dir)?;
                remount(&fd_path(&t), attrs)?;
            }
            if ro {
                let t = mkdir_all_in_root(root.as_raw_fd(), dest, Kind::Dir)?;
                mnt(
                    None,
                    &fd_path(&t),
                    None,
                    MsFlags::MS_REMOUNT
                        | MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("mode=755"),
                )?;
            }
            Ok(())
        }
    }
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn default_devices(ctx: &RootfsCtx, root: &OwnedFd) -> Result<()> {
    for (name, major, minor) in DEFAULT_DEVICES {
        let d = oci_spec::runtime::LinuxDeviceBuilder::default()
            .path(format!("/dev/{name}"))
            .typ(LinuxDeviceType::C)
            .major(*major as i64)
            .minor(*minor as i64)
            .file_mode(0o666u32)
            .uid(0u32)
            .gid(0u32)
            .build()?;
        make_device(ctx, root, &d).with_context(|| format!("default device /dev/{name}"))?;
    }
    Ok(())
}

/// mknod where we may; in a user namespace, bind the host's node onto an empty file instead.
fn make_device(ctx: &RootfsCtx, root: &OwnedFd, d: &LinuxDevice) -> Result<()> {
    let path = d.path();
    if !path.starts_with("/dev") {
        bail!("device path must be under /dev");
    }
    safepath::check_clean("linux.devices.path", path)?;
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let name = path.file_name().context("device path has no name")?;
    let pfd = mkdir_all_in_root(root.as_raw_fd(), parent, Kind::Dir)?;
    let dir = nix::fcntl::openat(
        &pfd,
        ".",
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let cname = CString::new(name.as_encoded_bytes())?;
    if ctx.in_userns {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let t = mkdir_all_in_root(root.as_raw_fd(), rel, Kind::File)?;
        return mnt(Some(path), &fd_path(&t), None, MsFlags::MS_BIND, None);
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => bail!("type 'a' is only valid in device cgroup rules"),
    };
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    let dev = libc::makedev(d.major() as u32, d.minor() as u32);
    // SAFETY: *at calls relative to a directory fd resolved inside the root.
    unsafe {
        libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0);
        if libc::mknodat(dir.as_raw_fd(), cname.as_ptr(), kind | mode, dev) != 0 {
            return Err(std::io::Error::last_os_error()).context("mknod");
        }
        // mknod honours the umask; set the exact mode and owner the spec asks for.
        libc::fchmodat(dir.as_raw_fd(), cname.as_ptr(), mode, 0);
        libc::fchownat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
    Ok(())
}

fn dev_symlinks(root: &OwnedFd) -> Result<()> {
    let dev = mkdir_all_in_root(root.as_raw_fd(), Path::new("/dev"), Kind::Dir)?;
    let dir = nix::fcntl::openat(
        &dev,
        ".",
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("core", "/proc/kcore"));
    }
    // /dev/ptmx points at the container's own devpts when it has one.
    let has_pts = safepath::openat_in_root(root.as_raw_fd(), Path::new("dev/pts/ptmx"), libc::O_PATH, 0).is_ok();
    if has_pts {
        links.push(("ptmx", "pts/ptmx"));
    }
    for (name, to) in links {
        let n = CString::new(name)?;
        let t = CString::new(to)?;
        // SAFETY: symlinkat relative to the container's /dev fd.
        unsafe {
            if name == "ptmx" {
                libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0);
            }
            if libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e).with_context(|| format!("symlink /dev/{name}"));
                }
            }
        }
    }
    Ok(())
}

/// After pivot_root: masked paths, read-only paths, and a read-only root.
pub fn finalize(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let root = safepath::open_root(Path::new("/"))?;
    let masked = linux.and_then(|l| l.masked_paths().as_ref());
    if masked.is_some_and(|m| !m.is_empty()) {
        // Only ever bind the real /dev/null (CVE-2025-31133): check what we opened.
        let null = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .context("opening /dev/null for maskedPaths")?;
        let st = nix::sys::stat::fstat(&null)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
            bail!("maskedPaths: /dev/null in the container is not the null device");
        }
        for p in masked.into_iter().flatten() {
            let rel = safepath::relative(Path::new(p));
            let t = match safepath::openat_in_root(root.as_raw_fd(), &rel, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                Ok(t) => t,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ELOOP) => continue,
                Err(e) => return Err(e).with_context(|| format!("maskedPaths: {p}")),
            };
            if safepath::is_dir(&t) {
                mnt(Some(Path::new("tmpfs")), &fd_path(&t), Some("tmpfs"), MsFlags::MS_RDONLY, Some("size=0"))
                    .with_context(|| format!("maskedPaths: {p}"))?;
            } else {
                mnt(Some(&fd_path(&null)), &fd_path(&t), None, MsFlags::MS_BIND, None)
                    .with_context(|| format!("maskedPaths: {p}"))?;
            }
        }
    }
    for p in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
        let rel = safepath::relative(Path::new(p));
        let t = match safepath::openat_in_root(root.as_raw_fd(), &rel, libc::O_PATH, 0) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("readonlyPaths: {p}")),
        };
        mnt(Some(&fd_path(&t)), &fd_path(&t), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        let t = safepath::openat_in_root(root.as_raw_fd(), &rel, libc::O_PATH, 0)?;
        remount(&fd_path(&t), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)
            .with_context(|| format!("readonlyPaths: {p}"))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount(Path::new("/"), MsFlags::MS_RDONLY).context("root.readonly")?;
    }
    Ok(())
}
