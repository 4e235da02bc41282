//! Overlay mounts a build makes for itself: the new image's root while COPY/ADD/WORKDIR write
//! into it, and read-only views of other stages' roots. They live in a mount namespace of one
//! thread of ours, so nothing of them is seen outside it and they go with it whatever
//! happens; only `RUN --mount=from=` needs a view the container's monitor can see, which
//! [`HostMount`] makes in the engine's own mount namespace and unmounts on drop.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};

/// One overlay: its lower dirs (top first), an upper and work dir when writable, the target.
pub(crate) struct Overlay {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<(PathBuf, PathBuf)>,
    pub target: PathBuf,
}

impl Overlay {
    fn mount(&self, empty: &Path) -> Result<()> {
        let mut lowers = self.lowers.clone();
        // Overlay wants a lower dir, and two of them without an upper dir (never the same
        // one twice: the callers mount no overlay without any layer and without an upper).
        if lowers.is_empty() || (self.upper.is_none() && lowers.len() < 2) {
            lowers.push(empty.to_path_buf());
        }
        let flags = if self.upper.is_none() { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        let upper = self.upper.as_ref().map(|(u, w)| (u.as_path(), w.as_path()));
        berth_storage::rootfs::mount_overlay(&self.target, &lowers, upper, flags)
            .with_context(|| format!("mounting an overlay at {}", self.target.display()))
    }
}

/// Runs `f` on a thread of its own with the overlays mounted in a private mount namespace
/// (`empty` is an empty directory for overlays without enough lower dirs).
pub(crate) fn with_overlays<T: Send>(
    overlays: &[Overlay],
    empty: &Path,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    berth_storage::rootfs::in_private_mount_ns(move || {
        let mut mounted = Vec::new();
        let mut result = Ok(());
        // An image without layers is an empty directory: the target as it is.
        for o in overlays.iter().filter(|o| !o.lowers.is_empty() || o.upper.is_some()) {
            if let Err(e) = o.mount(empty) {
                result = Err(e);
                break;
            }
            mounted.push(&o.target);
        }
        let out = result.and_then(|()| f());
        // Unmount now rather than when the namespace goes: the caller reads the upper dir next.
        for t in mounted.into_iter().rev() {
            let _ = nix::mount::umount2(t, MntFlags::MNT_DETACH);
        }
        out
    })
}

/// A read-only overlay in the engine's mount namespace (for a RUN's bind mount from another
/// stage), unmounted when dropped.
pub(crate) struct HostMount {
    target: PathBuf,
}

impl HostMount {
    pub fn new(overlay: &Overlay, empty: &Path) -> Result<HostMount> {
        std::fs::create_dir_all(&overlay.target)?;
        if overlay.lowers.is_empty() && overlay.upper.is_none() {
            // Nothing to show: a second empty directory is the view.
            nix::mount::mount(
                Some(empty),
                &overlay.target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .with_context(|| format!("mounting an empty view at {}", overlay.target.display()))?;
            return Ok(HostMount { target: overlay.target.clone() });
        }
        overlay.mount(empty)?;
        Ok(HostMount { target: overlay.target.clone() })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
    }
}
