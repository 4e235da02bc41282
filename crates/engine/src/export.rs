//! `berth export`: a container's root filesystem as a tar stream (what `import` takes back).
//!
//! The root is read through a read-only overlay view (the container's upper dir over its
//! image's layers) mounted in a private mount namespace of one thread, whether the container
//! runs or not: nothing is mounted where anyone else can see it, and the container's own mount
//! is not touched. Volumes and bind mounts are not part of it (as in Docker).

use std::io::Write;

use anyhow::{Context, Result};
use berth_image::manifest::chain_ids;
use berth_storage::RootFs;

use crate::Engine;

impl Engine {
    /// Writes the root filesystem of container `key` to `w` as a tar archive.
    pub fn export(&self, key: &str, w: impl Write + Send) -> Result<()> {
        let c = self.container(key)?;
        let _lock = self.store_lock(false)?;
        let image = self.resolve_image(&c.image).with_context(|| format!("the image of container {}", c.name))?;
        let chains = chain_ids(&self.config_of(&image)?.rootfs.diff_ids);
        // Layers are unpacked when the container is created; make sure (a repaired store).
        self.prepare_layers(&image)?;
        let rootfs = RootFs::path(&self.layers, &c.id);
        if !rootfs.upper().is_dir() {
            anyhow::bail!("container {} has no root filesystem (its upper dir is missing)", c.name);
        }
        rootfs
            .with_readonly_view(&self.layers, &chains, |root| berth_storage::tarball::write_tree(root, w))
            .with_context(|| format!("exporting container {}", c.name))?;
        Ok(())
    }
}
