//! A container's root filesystem: overlay of the image's layers (read-only, shared) and the
//! container's own upper dir.
//!
//! ```text
//! <root>/containers/<id>/upper   the writable layer (what `diff` and `commit` read)
//! <root>/containers/<id>/work    overlay's work dir
//! <root>/containers/<id>/merged  the mount point handed to the runtime as root.path
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_image::Digest;

use crate::layers::{Layers, remove_tree};

pub struct RootFs {
    pub dir: PathBuf,
}

impl RootFs {
    pub fn path(layers: &Layers, id: &str) -> RootFs {
        RootFs { dir: layers.root().join("containers").join(id) }
    }

    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// Creates the directories (not mounted yet).
    pub fn create(&self) -> Result<()> {
        self.create_with(false)
    }

    /// Creates the directories; with `copy`, for the copy driver (see the copydriver module):
    /// the root will be a copy of the layers, not an overlay.
    pub fn create_with(&self, copy: bool) -> Result<()> {
        for d in ["upper", "work", "merged"] {
            fs::create_dir_all(self.dir.join(d)).with_context(|| format!("creating {}", self.dir.join(d).display()))?;
        }
        if copy {
            fs::write(self.dir.join("driver"), "copy")?;
        }
        Ok(())
    }

    /// Whether this root is the copy driver's.
    pub fn is_copy(&self) -> bool {
        fs::read(self.dir.join("driver")).is_ok_and(|d| d == b"copy")
    }

    fn snapshot(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    /// The container's changes as an overlay upper dir holds them: the upper dir itself, or
    /// for the copy driver a layout, made now, of what changed since the copy was made (a
    /// directory of the caller's own, removed when the result is dropped).
    pub fn changes(&self) -> Result<Changes> {
        if !self.is_copy() || !self.snapshot().exists() {
            return Ok(Changes { path: self.upper(), owned: false });
        }
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fresh = Changes { path: self.dir.join(format!("changes-{}-{n}", std::process::id())), owned: true };
        let _ = remove_tree(&fresh.path);
        fs::create_dir(&fresh.path)?;
        crate::copydriver::changes(&self.merged(), &self.snapshot(), &fresh.path)?;
        Ok(fresh)
    }

    /// The overlay's lower dirs for `chains` (bottom layer first), top first.
    fn lower_dirs(&self, layers: &Layers, chains: &[Digest]) -> Result<Vec<PathBuf>> {
        let mut lowers: Vec<PathBuf> = chains.iter().rev().map(|c| layers.lower_path(c)).collect();
        if lowers.is_empty() {
            // An image without layers: overlay still needs a lower dir.
            let empty = self.dir.join("empty");
            fs::create_dir_all(&empty)?;
            lowers.push(empty);
        }
        Ok(lowers)
    }

    /// Mounts overlay with `chains` (bottom layer first) below the upper dir.
    pub fn mount(&self, layers: &Layers, chains: &[Digest]) -> Result<()> {
        let copy = self.is_copy();
        if self.mounted_as(copy) {
            return Ok(());
        }
        let lowers = self.lower_dirs(layers, chains)?;
        if copy {
            // Made once (a restart keeps the root as it was); the snapshot says it is whole.
            // Two commands (a cp and a start) may get here at once: one makes it.
            let lock = fs::File::create(self.dir.join("copy.lock"))?;
            // SAFETY: flock on a file we hold; released when it is closed.
            crate::unpack::check(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) })?;
            if self.snapshot().exists() {
                return Ok(());
            }
            let merged = self.merged();
            let _ = remove_tree(&merged);
            fs::create_dir_all(&merged)?;
            crate::copydriver::populate(&merged, &lowers)?;
            let tmp = self.dir.join("snapshot.tmp");
            crate::copydriver::snapshot(&merged, &tmp)?;
            return Ok(fs::rename(tmp, self.snapshot())?);
        }
        self.mount_overlay(&lowers, &self.dir)
    }

    /// Mounts overlay at `merged` over `lowers` (top first) with `rw`/upper and `rw`/work.
    fn mount_overlay(&self, lowers: &[PathBuf], rw: &Path) -> Result<()> {
        let (upper, work) = (rw.join("upper"), rw.join("work"));
        mount_overlay(&self.merged(), lowers, Some((&upper, &work)), nix::mount::MsFlags::empty())
            .with_context(|| format!("mounting the overlay root at {}", self.merged().display()))
    }

    /// Mounts overlay as [`RootFs::mount`] does, for a container in a user namespace whose root
    /// is host uid/gid `shift`: every layer and the upper dir are seen through idmapped binds
    /// (disk id n appears as n + shift), so the image's files belong to the container's root
    /// while everything stays stored with the image's own ids: commit, diff, cp and export
    /// read the upper dir as for any other container. overlayfs itself cannot be idmapped, its
    /// layers can (Linux 5.19+).
    pub fn mount_shifted(&self, layers: &Layers, chains: &[Digest], shift: &Shift) -> Result<()> {
        if self.is_copy() {
            bail!("--userns needs the overlay storage driver (this container's root is a copy)");
        }
        if self.is_mounted() {
            return Ok(());
        }
        let lowers = self.lower_dirs(layers, chains)?;
        let userns = berth_runtime::rootfs::user_namespace(
            &format!("0 {} {}", shift.uid, shift.size),
            &format!("0 {} {}", shift.gid, shift.size),
        )?;
        let views = self.views();
        self.drop_views();
        fs::create_dir_all(&views).with_context(|| format!("creating {}", views.display()))?;
        let res = (|| -> Result<()> {
            let view_of = |src: &Path, name: &str| -> Result<PathBuf> {
                let at = views.join(name);
                fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
                berth_runtime::rootfs::bind_idmapped(src, &at, &userns)?;
                Ok(at)
            };
            let rw = view_of(&self.dir, "rw")?;
            let mut shifted = Vec::new();
            for (i, l) in lowers.iter().enumerate() {
                shifted.push(view_of(l, &i.to_string())?);
            }
            // overlayfs works on its layers with the credentials of whoever mounted it: as
            // host root (uid 0, which the idmapped views cannot map) it could not even make its
            // work dir. Mount as the container's root instead, keeping every capability.
            as_fs_ids(shift.uid, shift.gid, || self.mount_overlay(&shifted, &rw))
        })();
        // overlayfs keeps private copies of its layers' mounts: the views can go now.
        self.drop_views();
        res
    }

    fn views(&self) -> PathBuf {
        self.dir.join("shifted")
    }

    /// Detaches and removes the idmapped views of mount_shifted, also those a crash left
    /// (never by a recursive removal: through a view it would empty a shared layer).
    fn drop_views(&self) {
        let Ok(entries) = fs::read_dir(self.views()) else { return };
        for e in entries.flatten() {
            let p = e.path();
            while is_mountpoint(&p) {
                if nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
            let _ = fs::remove_dir(&p);
        }
        let _ = fs::remove_dir(self.views());
    }

    pub fn is_mounted(&self) -> bool {
        self.mounted_as(self.is_copy())
    }

    /// [`RootFs::is_mounted`] for a root known to be the copy driver's (`copy`) or not.
    fn mounted_as(&self, copy: bool) -> bool {
        if copy { self.snapshot().exists() } else { is_mountpoint(&self.merged()) }
    }

    pub fn unmount(&self) -> Result<()> {
        if self.is_copy() {
            return Ok(()); // the copy is the container's root, kept until it is removed
        }
        self.drop_views();
        if self.mounted_as(false) {
            nix::mount::umount2(&self.merged(), nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("unmounting {}", self.merged().display()))?;
        }
        Ok(())
    }

    /// Runs `f` on a read-only view of the container's root: its upper dir as the top lower
    /// layer over the image's `chains` (bottom first), mounted in a mount namespace of a thread
    /// of its own. Nothing of it is visible outside that thread, the container's own mount (when
    /// it runs) is not touched, and the view goes away with the thread whatever `f` does.
    pub fn with_readonly_view<T: Send>(
        &self,
        layers: &Layers,
        chains: &[Digest],
        f: impl FnOnce(&Path) -> Result<T> + Send,
    ) -> Result<T> {
        if self.is_copy() {
            self.mount(layers, chains)?;
            return f(&self.merged());
        }
        let mut lowers: Vec<PathBuf> = vec![self.upper()];
        lowers.extend(chains.iter().rev().map(|c| layers.lower_path(c)));
        if lowers.len() < 2 {
            // Overlay without an upper dir wants two lower dirs.
            let empty = self.dir.join("empty");
            fs::create_dir_all(&empty)?;
            lowers.push(empty);
        }
        let target = self.merged();
        fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
        in_private_mount_ns(move || {
            mount_overlay(&target, &lowers, None, nix::mount::MsFlags::MS_RDONLY)
                .with_context(|| format!("mounting a read-only view of {}", self.dir.display()))?;
            f(&target)
        })
    }

    /// Unmounts and removes everything of the container's root.
    pub fn remove(&self) -> Result<()> {
        self.unmount()?;
        remove_tree(&self.dir)
    }
}

/// Where a container's user namespace puts its ids on the host: container id n is host id
/// `uid` + n (and `gid` + n), for n below `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shift {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl Shift {
    /// Container ids to host ids (ids beyond the block stay as they are: they map to nothing).
    pub fn shift(&self, uid: u32, gid: u32) -> (u32, u32) {
        let to = |id: u32, base: u32| if id < self.size { base + id } else { id };
        (to(uid, self.uid), to(gid, self.gid))
    }

    /// Host ids back to container ids.
    pub fn unshift(&self, uid: u32, gid: u32) -> (u32, u32) {
        let back = |id: u32, base: u32| if id >= base && id - base < self.size { id - base } else { id };
        (back(uid, self.uid), back(gid, self.gid))
    }
}

/// Runs `f` with the filesystem ids `uid`/`gid` and every permitted capability effective (a
/// change of fsuid away from 0 drops the file capabilities from the effective set); both are
/// restored after.
pub fn as_fs_ids<T>(uid: u32, gid: u32, f: impl FnOnce() -> Result<T>) -> Result<T> {
    // SAFETY: setfsgid/setfsuid change this thread's filesystem ids.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    let res = berth_runtime::caps::raise_effective().and_then(|()| f());
    // SAFETY: back to root's filesystem ids (which makes the file capabilities effective again).
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    res
}

/// Whether `p` is a mount point. statx says so directly (STATX_ATTR_MOUNT_ROOT, Linux 5.8+) in
/// one syscall; reading /proc/self/mountinfo instead costs time in proportion to the number of
/// mounts, which grows with every running container.
pub fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else { return false };
    if let Some(root) = crate::unpack::mount_root_at(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW) {
        return root;
    }
    let Ok(s) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.display().to_string();
    s.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Runs `f` on a thread of its own in a new, private mount namespace: nothing it mounts is seen
/// outside, and all of it goes with the thread, whatever `f` does (CLONE_NEWNS implies
/// CLONE_FS, which one thread of a process may unshare).
pub fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || -> Result<T> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("a private mount namespace")?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .context("making the private mount namespace private")?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread with a mount namespace of its own panicked")))
    })
}

/// A container's changes laid out as an overlay upper dir (see [`RootFs::changes`]).
pub struct Changes {
    path: PathBuf,
    owned: bool,
}

impl std::ops::Deref for Changes {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        if self.owned {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Mount options larger than this do not fit in the page mount(2) copies them into.
const OPTIONS_MAX: usize = 4000;

/// mount(2) of an overlay at `target` over `lowers` (top first), writable with `upper` (upper
/// and work dir). Deep images: overlay's options must fit in one page, so when the absolute
/// paths do not, the lower dirs are named relative to their common parent (the layers' short
/// links `l/…`, about 30 bytes each: room for more than Docker's 125 layers), with this
/// thread's working directory there for the mount (its file-system context unshared first, so
/// the process's other threads keep theirs; it is set back after).
pub fn mount_overlay(
    target: &Path,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    flags: nix::mount::MsFlags,
) -> Result<()> {
    let opts = |names: &[String]| {
        let mut o = format!("lowerdir={}", names.join(":"));
        if let Some((u, w)) = upper {
            o.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
        }
        o
    };
    let abs: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    if let Some(l) = abs.iter().find(|l| l.contains([',', ':'])) {
        bail!("layer path {l} contains a character overlay cannot take");
    }
    let mount = |o: &str| nix::mount::mount(Some("overlay"), target, Some("overlay"), flags, Some(o));
    let o = opts(&abs);
    if o.len() < OPTIONS_MAX {
        return Ok(mount(&o)?);
    }
    let too_many = || anyhow::anyhow!("the image has too many layers ({}) for one overlay mount", lowers.len());
    // Their deepest common ancestor (the layers' links dir; or the storage root when a
    // container's upper dir is among them, as in a read-only view).
    let mut parent = lowers.first().and_then(|l| l.parent()).ok_or_else(too_many)?.to_path_buf();
    while !lowers.iter().all(|l| l.starts_with(&parent)) {
        parent = parent.parent().ok_or_else(too_many)?.to_path_buf();
    }
    if parent == Path::new("/") {
        return Err(too_many());
    }
    let rel: Vec<String> =
        lowers.iter().map(|l| l.strip_prefix(&parent).map(|r| r.display().to_string()).unwrap_or_default()).collect();
    let o = opts(&rel);
    if o.len() >= OPTIONS_MAX {
        return Err(too_many());
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).context("a file-system context of this thread's own")?;
    std::env::set_current_dir(&parent).with_context(|| format!("entering {}", parent.display()))?;
    let r = mount(&o);
    if std::env::set_current_dir(&cwd).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    Ok(r?)
}

#[cfg(test)]
mod tests {
    use super::is_mountpoint;
    use std::path::Path;

    #[test]
    fn removal_never_empties_a_tree_mounted_inside() {
        let t = tempfile::tempdir().unwrap();
        let (keep, tree) = (t.path().join("keep"), t.path().join("tree"));
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(keep.join("file"), "layer data").unwrap();
        std::fs::create_dir_all(tree.join("a/view")).unwrap();
        std::fs::write(tree.join("a/other"), "x").unwrap();
        nix::mount::mount(Some(&keep), &tree.join("a/view"), None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
            .unwrap();
        let res = crate::remove_tree(&tree);
        let _ = nix::mount::umount2(&tree.join("a/view"), nix::mount::MntFlags::MNT_DETACH);
        let e = res.unwrap_err();
        assert!(format!("{e:#}").contains("a file system is mounted there"), "{e:#}");
        assert_eq!(std::fs::read_to_string(keep.join("file")).unwrap(), "layer data");
        crate::remove_tree(&tree).unwrap();
    }

    #[test]
    fn mountpoints_are_told_apart_from_directories() {
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(is_mountpoint(Path::new("/")));
        assert!(!is_mountpoint(Path::new("/proc/self/fdinfo")));
        let dir = std::env::temp_dir().join(format!("berth-mnt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let found = is_mountpoint(&dir);
        std::fs::remove_dir(&dir).unwrap();
        assert!(!found);
        assert!(!is_mountpoint(Path::new("/nonexistent/berth")));
    }
}
