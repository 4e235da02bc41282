//! The container's root: mounts in order, /dev, pivot_root, masked and read-only paths.
//! Runs in the container's init, inside its new mount namespace.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    /// Idmapped mounts the runtime made ([`idmapped_mounts`]), by index in `mounts`.
    pub idmapped: &'a [(usize, OwnedFd)],
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
/// Mounts the container's root and its mounts, then (after `before_pivot`: the createContainer
/// hooks, which the spec runs there) pivots into it.
pub fn prepare(ctx: &RootfsCtx, no_pivot: bool, before_pivot: &dyn Fn() -> Result<()>) -> Result<()> {
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
    for (i, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        mount_one(ctx, &root, i, m).with_context(|| format!("mounts: {}", m.destination().display()))?;
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
    before_pivot()?;

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

fn mount_one(ctx: &RootfsCtx, root: &OwnedFd, index: usize, m: &Mount) -> Result<()> {
    let dest = m.destination();
    if !dest.is_absolute() {
        bail!("destination must be an absolute path");
    }
    safepath::check_clean("mounts.destination", dest)?;
    let opts = mountopts::parse(m.options().as_deref().unwrap_or(&[]))?;
    if let Some((_, tree)) = ctx.idmapped.iter().find(|(i, _)| *i == index) {
        let kind = if safepath::is_dir(tree) { Kind::Dir } else { Kind::File };
        let target = mkdir_all_in_root(root.as_raw_fd(), dest, kind)?;
        move_mount(tree, &target).context("attaching the idmapped mount")?;
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let t = mkdir_all_in_root(root.as_raw_fd(), dest, kind)?;
            remount(&fd_path(&t), extra)?;
        }
        return finish(root, dest, &opts);
    }
    if opts.idmap || m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        bail!("an idmapped mount the runtime did not prepare");
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

/// Attaches a detached mount tree (from open_tree) onto the directory or file `target`.
fn move_mount(tree: &OwnedFd, target: &OwnedFd) -> Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let empty = c"";
    // SAFETY: move_mount(2) between two fds we hold, with empty paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("move_mount");
    }
    Ok(())
}

/// Idmapped bind mounts: an entry of `mounts` with uidMappings/gidMappings, or with the `idmap`
/// / `ridmap` option and no mappings of its own (then the container's user namespace mappings,
/// as the spec allows). Made by the runtime before it forks, in the host's mount namespace and
/// with its privileges: setting MOUNT_ATTR_IDMAP needs CAP_SYS_ADMIN over the filesystem, which
/// an init in a user namespace lacks. Each is a detached copy of the source (open_tree), with
/// the idmapping of a user namespace made for it; the init attaches it at the destination.
///
/// `ridmap` (or `rbind` without `idmap`) idmaps the mounts below the source too.
pub fn idmapped_mounts(spec: &Spec, bundle: &Path) -> Result<Vec<(usize, OwnedFd)>> {
    let mut out = Vec::new();
    // One user namespace per distinct mapping.
    let mut userns: Vec<(String, OwnedFd)> = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let opts = mountopts::parse(m.options().as_deref().unwrap_or(&[]))?;
        if !opts.idmap && m.uid_mappings().is_none() && m.gid_mappings().is_none() {
            continue;
        }
        let field = format!("mounts[{i}] ({})", m.destination().display());
        let typ = m.typ().as_deref().unwrap_or("");
        if !(typ == "bind" || opts.flags.contains(MsFlags::MS_BIND)) {
            bail!("{field}: idmapped mounts are supported for bind mounts only (type {typ:?})");
        }
        let linux = spec.linux().as_ref();
        let (u, g) = match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) => (u, g),
            (None, None) => {
                let has_userns = linux
                    .and_then(|l| l.namespaces().as_ref())
                    .is_some_and(|n| n.iter().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User));
                match (linux.and_then(|l| l.uid_mappings().as_ref()), linux.and_then(|l| l.gid_mappings().as_ref())) {
                    (Some(u), Some(g)) if has_userns => (u, g),
                    _ => bail!(
                        "{field}: the idmap option needs uidMappings and gidMappings on the mount, or a user namespace with linux.uidMappings/gidMappings"
                    ),
                }
            }
            _ => bail!("{field}: uidMappings and gidMappings must be given together"),
        };
        let text = |v: &[oci_spec::runtime::LinuxIdMapping]| {
            v.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect::<String>()
        };
        let (ut, gt) = (text(u), text(g));
        if ut.is_empty() || gt.is_empty() {
            bail!("{field}: uidMappings and gidMappings must not be empty");
        }
        let key = format!("{ut}|{gt}");
        let ns = match userns.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                userns.push((key, userns_with_maps(&ut, &gt).with_context(|| format!("{field}: the idmapping"))?));
                userns.len() - 1
            }
        };
        let src = m.source().as_ref().with_context(|| format!("{field}: a bind mount needs a source"))?;
        let src = if src.is_relative() { bundle.join(src) } else { src.clone() };
        let rec_bind = opts.flags.contains(MsFlags::MS_REC);
        let tree =
            open_tree_clone(&src, rec_bind).with_context(|| format!("{field}: bind source {}", src.display()))?;
        let rec_idmap = opts.idmap_rec || (rec_bind && !opts.idmap);
        set_idmap(&tree, &userns[ns].1, rec_idmap).map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::ENOSYS) => "this kernel has no mount_setattr (idmapped mounts need Linux 5.12)".to_string(),
                Some(libc::EINVAL) => format!(
                    "the filesystem of {} ({}{}) does not support idmapped mounts on this kernel",
                    src.display(),
                    fs_name(&tree),
                    if rec_idmap { ", or one of the mounts below it" } else { "" }
                ),
                Some(libc::EPERM) => format!("{e} (idmapping needs CAP_SYS_ADMIN in the filesystem's user namespace)"),
                _ => e.to_string(),
            };
            anyhow::anyhow!("{field}: cannot idmap the mount: {why}")
        })?;
        out.push((i, tree));
    }
    Ok(out)
}

/// A detached copy of the mount at `src` (recursively for rbind).
fn open_tree_clone(src: &Path, recursive: bool) -> Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let c = CString::new(src.as_os_str().as_encoded_bytes())?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree(2) with a valid path; a new fd on success.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("open_tree");
    }
    // SAFETY: a new fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_idmap(tree: &OwnedFd, userns: &OwnedFd, recursive: bool) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        set: u64,
        clr: u64,
        propagation: u64,
        userns: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr { set: MOUNT_ATTR_IDMAP, clr: 0, propagation: 0, userns: userns.as_raw_fd() as u64 };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr(2) on an fd we hold with a properly sized attr struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches at `target` (an existing directory) an idmapped bind of the directory `src`: its
/// files appear with their owners shifted through the maps of `userns`. For the engine's
/// `--userns`, which builds a container's overlay from such views of its layers.
pub fn bind_idmapped(src: &Path, target: &Path, userns: &OwnedFd) -> Result<()> {
    let tree = open_tree_clone(src, false)?;
    set_idmap(&tree, userns, false).with_context(|| format!("idmapping {}", src.display()))?;
    let t = nix::fcntl::open(
        target,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening {}", target.display()))?;
    move_mount(&tree, &t).with_context(|| format!("attaching the idmapped view of {}", src.display()))
}

/// A user namespace with these uid_map and gid_map contents (lines "inside outside count"), as
/// an fd for idmapped mounts.
pub fn user_namespace(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    userns_with_maps(uid_map, gid_map)
}

/// Whether this kernel has mount_setattr(2), which idmapped mounts need (for `features`).
pub fn idmap_supported() -> bool {
    // SAFETY: mount_setattr(2) with invalid arguments only reports an error.
    let rc = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, std::ptr::null::<libc::c_char>(), 0, 0, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// The filesystem type of an fd, for messages.
fn fs_name(fd: &OwnedFd) -> String {
    let Ok(st) = nix::sys::statfs::fstatfs(fd) else { return "unknown filesystem".into() };
    let magic = st.filesystem_type().0 as u64;
    let name = match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlay",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        0x4d44 => "vfat",
        0x2FC1_2FC1 => "zfs",
        0x5346_544e => "ntfs",
        0xF2F5_2010 => "f2fs",
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x6367_7270 => "cgroup2",
        0x1cd1 => "devpts",
        _ => return format!("filesystem magic {magic:#x}"),
    };
    name.to_string()
}

/// A user namespace with these uid_map and gid_map lines, as an fd: a child is cloned into a new
/// user namespace, the maps are written from here, its namespace is opened, and the child goes.
fn userns_with_maps(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let pid = crate::init::raw_clone(libc::CLONE_NEWUSER)?;
    if pid == 0 {
        // The child waits for EOF: when we are done, or when we die.
        drop(w);
        let mut b = [0u8; 1];
        // SAFETY: read(2) into a buffer we own, then leave without running destructors.
        unsafe {
            libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(r);
    let res = (|| -> Result<OwnedFd> {
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map).context("writing uid_map")?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map).context("writing gid_map")?;
        Ok(nix::fcntl::open(
            format!("/proc/{pid}/ns/user").as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?)
    })();
    drop(w);
    // SAFETY: reap the child, which exits on EOF.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    res
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
