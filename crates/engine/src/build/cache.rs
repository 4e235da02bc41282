//! The build cache: one row per build step, from a key (the parent image, the instruction with
//! its arguments expanded, the build arguments a RUN sees, and for COPY/ADD a checksum of the
//! files) to the image the step made. The images are ordinary untagged images; a row whose
//! image is gone (`rmi`, `image prune`) is a miss and is dropped.
//!
//! The table is made on first use rather than by a numbered migration, so the build cache
//! never competes for a schema version with the rest of the engine.

use std::collections::HashSet;

use anyhow::Result;
use berth_image::Digest;
use rusqlite::{OptionalExtension, params};

use crate::{Engine, db};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS build_cache (
    key TEXT PRIMARY KEY,         -- sha256 of the step (see build/cache.rs)
    image TEXT NOT NULL,          -- the image the step made
    parent TEXT NOT NULL,         -- the image it started from
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS build_cache_parent ON build_cache(parent);
CREATE INDEX IF NOT EXISTS build_cache_image ON build_cache(image);";

/// What `builder prune` removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub entries: usize,
    pub images: Vec<String>,
    pub bytes: u64,
}

fn has_table(db: &rusqlite::Connection) -> Result<bool> {
    Ok(db
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'build_cache'", [], |_| Ok(()))
        .optional()?
        .is_some())
}

impl Engine {
    pub(crate) fn cache_init(&self) -> Result<()> {
        if !has_table(&self.db)? {
            self.db.execute_batch(SCHEMA)?;
        }
        Ok(())
    }

    /// The image cached for `key`, if it is still in the store.
    pub(crate) fn cache_get(&self, key: &str) -> Result<Option<Digest>> {
        let found: Option<String> =
            self.db.query_row("SELECT image FROM build_cache WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        let Some(id) = found else { return Ok(None) };
        let d = Digest::parse(&id)?;
        if self.image_exists(&d)? && self.store.has(&d) {
            return Ok(Some(d));
        }
        self.db.execute("DELETE FROM build_cache WHERE key = ?1", [key])?;
        Ok(None)
    }

    pub(crate) fn cache_put(&self, key: &str, image: &Digest, parent: &Digest) -> Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO build_cache (key, image, parent, created) VALUES (?1, ?2, ?3, ?4)",
            params![key, image.to_string(), parent.to_string(), db::now_nanos()],
        )?;
        Ok(())
    }

    /// Untagged images a build made that other built images were made from: Docker's
    /// "intermediate" images, which `images` hides without `-a` and `image prune` keeps while
    /// something is built on them.
    pub fn intermediate_images(&self) -> Result<HashSet<String>> {
        if !has_table(&self.db)? {
            return Ok(HashSet::new());
        }
        let mut st = self.db.prepare(
            "SELECT DISTINCT b.parent FROM build_cache b
             JOIN images child ON child.id = b.image
             WHERE b.parent != b.image AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.image = b.parent)",
        )?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// For `system df`: the cached steps, and the bytes `builder prune` would give back (the
    /// images only the cache holds, and the `RUN --mount=type=cache` directories).
    pub fn build_cache_usage(&self) -> Result<(u64, u64)> {
        let mut entries = 0;
        let mut bytes = 0;
        if has_table(&self.db)? {
            entries = self.db.query_row("SELECT COUNT(*) FROM build_cache", [], |r| r.get::<_, i64>(0))? as u64;
            bytes = self.db.query_row(
                "SELECT COALESCE(SUM(size), 0) FROM images WHERE id IN (SELECT DISTINCT image FROM build_cache)
                   AND id NOT IN (SELECT image FROM tags) AND id NOT IN (SELECT image FROM containers)",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
        }
        let mounts = self.root.join("build").join("cache-mounts");
        if mounts.exists() {
            bytes += crate::tree_size(&mounts);
        }
        Ok((entries, bytes))
    }

    /// `berth builder prune`: forgets every cached step and removes the untagged images that
    /// only the cache held (none a container uses), then the blobs and layers nothing needs,
    /// and the `RUN --mount=type=cache` directories.
    pub fn prune_build_cache(&self) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        if has_table(&self.db)? {
            let images: Vec<String> = {
                let mut st = self.db.prepare(
                    "SELECT DISTINCT image FROM build_cache
                     WHERE image NOT IN (SELECT image FROM tags)
                       AND image NOT IN (SELECT image FROM containers)",
                )?;
                st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
            };
            report.entries = self.db.execute("DELETE FROM build_cache", [])?;
            for id in images {
                let size: Option<i64> =
                    self.db.query_row("SELECT size FROM images WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
                if let Some(size) = size {
                    self.db.execute("DELETE FROM images WHERE id = ?1", [&id])?;
                    report.bytes += size.max(0) as u64;
                    report.images.push(id);
                }
            }
        }
        let mounts = self.root.join("build").join("cache-mounts");
        if mounts.exists() {
            report.bytes += crate::tree_size(&mounts);
            berth_storage::remove_tree(&mounts)?;
        }
        if !report.images.is_empty() {
            self.collect_garbage()?;
        }
        Ok(report)
    }
}
