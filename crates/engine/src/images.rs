//! Images in the engine: registering what the store holds under names, resolving names and
//! ids, unpacking layers for containers, removing images and collecting what nothing uses.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read};

use anyhow::{Context, Result, bail};
use berth_image::archive;
use berth_image::manifest::{self, Descriptor, Document, ImageConfig, Manifest, chain_ids};
use berth_image::{Digest, Platform, Reference, Store};
use berth_storage::Layers;
use rusqlite::{OptionalExtension, params};

use crate::{Engine, db};

#[derive(Debug, Clone)]
pub struct ImageRow {
    pub id: Digest,
    pub manifest: Digest,
    pub size: i64,
    pub tags: Vec<String>,
    /// `registry/repository@digest` for each digest a registry gave the image.
    pub repo_digests: Vec<String>,
    /// Unix nanoseconds when the image entered this store.
    pub added: i64,
}

/// One line of `berth history`, newest first.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// The image id on the top line, none below (Docker's `<missing>`).
    pub id: Option<Digest>,
    pub created: Option<String>,
    pub created_by: String,
    pub size: u64,
    pub comment: String,
    pub empty_layer: bool,
}

/// How `save` writes images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// What `docker save` writes since Docker 25: a `manifest.json` for `docker load` and, in
    /// the same tar, an OCI layout; layers as uncompressed tars named by their diff ids.
    DockerArchive,
    /// An OCI layout tar of the images as stored: the manifests and compressed blobs as pulled.
    OciArchive,
}

impl Engine {
    /// `image prune`: dangling images (every unused one with `all`); Docker's lines and the
    /// bytes the removed images held.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let used: Vec<String> = self.containers(true)?.into_iter().map(|c| c.image).collect();
        let mut lines = Vec::new();
        let mut reclaimed = 0u64;
        // A build's intermediate images stay while an image is built on them; once that one goes,
        // the next round takes its parent (so a whole unused chain goes).
        loop {
            let keep = if all { Default::default() } else { self.intermediate_images()? };
            let mut removed = false;
            for img in self.images()? {
                let id = img.id.to_string();
                if (all || img.tags.is_empty()) && !used.contains(&id) && !keep.contains(&id) {
                    lines.extend(self.remove_image(&id, true)?);
                    reclaimed += img.size.max(0) as u64;
                    removed = true;
                }
            }
            if !removed || all {
                return Ok((lines, reclaimed));
            }
        }
    }

    /// Records the image of `manifest` (already complete in the store), tagged `name`.
    pub fn register(&self, manifest: &Digest, name: Option<&Reference>) -> Result<Digest> {
        let m = archive::check_complete(&self.store, manifest)?;
        let id = m.config.digest.clone();
        let size: i64 = m.layers.iter().map(|l| l.size.max(0)).sum::<i64>() + m.config.size;
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO images (id, manifest, size, created) VALUES (?1, ?2, ?3, ?4)",
            params![id.to_string(), manifest.to_string(), size, db::now_nanos()],
        )?;
        if let Some(n) = name {
            tx.execute("INSERT OR REPLACE INTO tags (name, image) VALUES (?1, ?2)", params![n.full(), id.to_string()])?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// `berth load`: returns Docker's lines (`Loaded image: NAME` / `Loaded image ID: ID`).
    pub fn load(&self, r: impl Read) -> Result<Vec<String>> {
        let _l = self.store_lock(false)?;
        let loaded = archive::load(r, &self.store, &Platform::host())?;
        let mut out = Vec::new();
        for l in loaded {
            let name = match &l.name {
                // An OCI ref.name may be a bare tag ("latest"); that names no repository.
                Some(n)
                    if n.contains('/')
                        || n.contains(':')
                        || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') =>
                {
                    Some(Reference::parse(n).with_context(|| format!("the archive names an image {n:?}"))?)
                }
                _ => None,
            };
            let id = self.register(&l.manifest, name.as_ref())?;
            out.push(match name {
                Some(n) => format!("Loaded image: {}", display_name(&n)),
                None => format!("Loaded image ID: {id}"),
            });
        }
        Ok(out)
    }

    /// `berth import FILE [REF]`: returns the new image id.
    /// `changes` are Dockerfile instructions for the image's config (`import -c`), as commit's.
    pub fn import(&self, r: impl Read, name: Option<&str>, message: &str, changes: &[String]) -> Result<Digest> {
        let reference = name.map(Reference::parse).transpose()?;
        let mut config = serde_json::json!({});
        for ch in changes {
            let (word, v) = crate::commit::parse_change(ch)?;
            crate::commit::apply_change(&mut config, &word, v);
        }
        let _l = self.store_lock(false)?;
        let created = berth_runtime::state::now_rfc3339();
        let m = archive::import(r, &self.store, &created, message, config)?;
        self.register(&m, reference.as_ref())
    }

    pub fn images(&self) -> Result<Vec<ImageRow>> {
        let mut st = self.db.prepare(
            "SELECT i.id, i.manifest, i.size, t.name, i.created FROM images i LEFT JOIN tags t ON t.image = i.id ORDER BY i.created DESC, i.id, t.name",
        )?;
        let mut out: Vec<ImageRow> = Vec::new();
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        for row in rows {
            let (id, m, size, tag, added) = row?;
            match out.last_mut() {
                Some(last) if last.id.to_string() == id => last.tags.extend(tag),
                _ => out.push(ImageRow {
                    id: Digest::parse(&id)?,
                    manifest: Digest::parse(&m)?,
                    size,
                    tags: tag.into_iter().collect(),
                    repo_digests: Vec::new(),
                    added,
                }),
            }
        }
        let mut st =
            self.db.prepare("SELECT image, repository, digest FROM repo_digests ORDER BY repository, digest")?;
        let rows =
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        for row in rows {
            let (image, repo, digest) = row?;
            if let Some(i) = out.iter_mut().find(|i| i.id.to_string() == image) {
                i.repo_digests.push(format!("{repo}@{digest}"));
            }
        }
        Ok(out)
    }

    /// Records that `repository` (`registry/path`) gave `image` under `digest`.
    pub fn add_repo_digest(&self, repository: &str, digest: &Digest, image: &Digest) -> Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO repo_digests (repository, digest, image) VALUES (?1, ?2, ?3)",
            params![repository, digest.to_string(), image.to_string()],
        )?;
        Ok(())
    }

    /// An image by name (`busybox`, `busybox:1.36`, `host:5000/app@sha256:…`) or id (prefix).
    pub fn resolve_image(&self, name: &str) -> Result<ImageRow> {
        let images = self.images()?;
        if let Ok(r) = Reference::parse(name) {
            let full = r.full();
            if let Some(i) = images.iter().find(|i| i.tags.contains(&full)) {
                return Ok(i.clone());
            }
            if let Some(d) = &r.digest {
                let by_repo = format!("{}/{}@{d}", r.registry, r.repository);
                if let Some(i) = images.iter().find(|i| i.repo_digests.contains(&by_repo)) {
                    return Ok(i.clone());
                }
                if let Some(i) = images.iter().find(|i| i.manifest == *d || i.id == *d) {
                    return Ok(i.clone());
                }
            }
        }
        // A short name pulled from another registry of the search list (registries.toml) is
        // stored under that registry's name: look there too, in the list's order.
        for r in searched_references(name) {
            if let Some(i) = images.iter().find(|i| i.tags.contains(&r.full())) {
                return Ok(i.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let found: Vec<&ImageRow> = images.iter().filter(|i| i.id.hex.starts_with(hex)).collect();
            match found.len() {
                1 => return Ok(found[0].clone()),
                0 => {}
                _ => bail!("image id prefix {hex} is ambiguous: it matches {} images", found.len()),
            }
        }
        let shown = Reference::parse(name).map(|r| display_name(&r)).unwrap_or_else(|_| name.to_string());
        Err(crate::ExitError { code: 125, msg: format!("Unable to find image '{shown}' locally") }.into())
    }

    /// The tag of `img` that `name` names, also through the search registries (None: `name`
    /// is an id or a digest).
    fn tag_named(&self, name: &str, img: &ImageRow) -> Option<String> {
        let direct = Reference::parse(name).ok().map(|r| r.full()).filter(|f| img.tags.contains(f));
        direct.or_else(|| searched_references(name).iter().map(Reference::full).find(|f| img.tags.contains(f)))
    }

    /// An image a command acts on and does not pull (rmi, tag, save, history, inspect): a
    /// missing one is Docker's "No such image: NAME:TAG", exit 1.
    pub fn existing_image(&self, name: &str) -> Result<ImageRow> {
        self.resolve_image(name).map_err(|e| match e.downcast_ref::<crate::ExitError>() {
            Some(x) if x.code == 125 => {
                let shown = Reference::parse(name).map(|r| display_name(&r)).unwrap_or_else(|_| name.to_string());
                crate::ExitError { code: 1, msg: format!("No such image: {shown}") }.into()
            }
            _ => e,
        })
    }

    pub fn manifest_of(&self, image: &ImageRow) -> Result<Manifest> {
        match manifest::parse_document(&self.store.read(&image.manifest)?, None)? {
            Document::Manifest(m) => Ok(m),
            Document::Index(_) => bail!("image {} points at an index", image.id),
        }
    }

    pub fn config_of(&self, image: &ImageRow) -> Result<ImageConfig> {
        ImageConfig::parse(&self.store.read(&image.id)?)
    }

    /// Unpacks every layer of `image` that storage does not have yet; returns the chain ids,
    /// bottom first. The caller holds the store lock (shared).
    pub fn prepare_layers(&self, image: &ImageRow) -> Result<Vec<Digest>> {
        let m = self.manifest_of(image)?;
        let cfg = self.config_of(image)?;
        let chains = chain_ids(&cfg.rootfs.diff_ids);
        // Read from the settings only when some layer is missing (not on a start's way).
        let mut limits = None;
        for (i, (layer, chain)) in m.layers.iter().zip(&chains).enumerate() {
            if self.layers.has(chain) {
                continue;
            }
            let limits = match limits {
                Some(l) => l,
                None => *limits.insert(crate::settings::Settings::layer_limits()?),
            };
            let parent = if i > 0 { Some(&chains[i - 1]) } else { None };
            unpack_layer(&self.store, &self.layers, layer, chain, parent, &cfg.rootfs.diff_ids[i], &limits)
                .with_context(|| format!("unpacking layer {} of image {}", layer.digest, image.id.short()))?;
        }
        Ok(chains)
    }

    /// `berth rmi`: Docker's lines (`Untagged: …`, `Deleted: …`).
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Vec<String>> {
        // Exclusive from the check for containers to the garbage collection: a `create`
        // (which holds the lock shared from resolving the image to writing its row) either
        // comes first and is seen, or finds the image gone.
        let _l = self.store_lock(true)?;
        let img = self.existing_image(name)?;
        let by_tag = self.tag_named(name, &img);
        let users: Vec<String> = {
            let mut st = self.db.prepare("SELECT id FROM containers WHERE image = ?1")?;
            st.query_map([img.id.to_string()], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        let running: Option<String> = self
            .db
            .query_row(
                "SELECT id FROM containers WHERE image = ?1 AND state IN ('running', 'paused', 'restarting') LIMIT 1",
                [img.id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let mut out = Vec::new();
        let untag = |t: &str, out: &mut Vec<String>| -> Result<()> {
            self.db.execute("DELETE FROM tags WHERE name = ?1", [t])?;
            out.push(format!("Untagged: {}", display_name(&Reference::parse(t)?)));
            Ok(())
        };
        match &by_tag {
            Some(t) if img.tags.len() > 1 => {
                untag(t, &mut out)?;
                return Ok(out);
            }
            None if img.tags.len() > 1 && !force => bail!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                img.id.short()
            ),
            _ => {}
        }
        if let Some(c) = running.filter(|_| force && by_tag.is_none()) {
            bail!(
                "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                img.id.short(),
                &c[..12]
            );
        }
        if let Some(c) = users.first() {
            if !force {
                bail!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                    &c[..12],
                    img.id.short()
                );
            }
            // Forced: untag, keep the image for the containers.
            for t in &img.tags {
                untag(t, &mut out)?;
            }
            return Ok(out);
        }
        for t in &img.tags {
            untag(t, &mut out)?;
        }
        self.db.execute("DELETE FROM images WHERE id = ?1", [img.id.to_string()])?;
        out.push(format!("Deleted: {}", img.id));
        self.collect_garbage_locked()?;
        Ok(out)
    }

    /// Removes blobs and layers no image in the database refers to.
    pub fn collect_garbage(&self) -> Result<()> {
        let _l = self.store_lock(true)?;
        self.collect_garbage_locked()
    }

    /// After a failed pull: what it stored (its manifest and config, layers that checked out)
    /// goes unless another command holds the store (then the next collection takes it), so
    /// that the store checks out. A killed pull's blobs stay for the next pull to finish with.
    pub fn collect_garbage_if_idle(&self) {
        if let Ok(Some(_l)) = self.try_store_lock() {
            let _ = self.collect_garbage_locked();
        }
    }

    /// [`Engine::collect_garbage`] for a caller that holds the store lock exclusively.
    fn collect_garbage_locked(&self) -> Result<()> {
        let mut keep_blobs: HashSet<Digest> = HashSet::new();
        let mut keep_layers: HashSet<Digest> = HashSet::new();
        for img in self.images()? {
            keep_blobs.insert(img.manifest.clone());
            keep_blobs.insert(img.id.clone());
            if let Ok(m) = self.manifest_of(&img) {
                keep_blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
            }
            if let Ok(c) = self.config_of(&img) {
                keep_layers.extend(chain_ids(&c.rootfs.diff_ids));
            }
        }
        for d in self.store.list()? {
            if !keep_blobs.contains(&d) {
                self.store.remove(&d)?;
                self.db.execute("DELETE FROM blob_sources WHERE digest = ?1", [d.to_string()])?;
            }
        }
        for c in self.layers.list()? {
            if !keep_layers.contains(&c) {
                self.layers.remove(&c)?;
            }
        }
        Ok(())
    }

    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let img = self.existing_image(source)?;
        let r = Reference::parse(target)?;
        self.db.execute(
            "INSERT OR REPLACE INTO tags (name, image) VALUES (?1, ?2)",
            params![r.full(), img.id.to_string()],
        )?;
        Ok(())
    }

    pub fn image_exists(&self, id: &Digest) -> Result<bool> {
        Ok(self.db.query_row("SELECT 1 FROM images WHERE id = ?1", [id.to_string()], |_| Ok(())).optional()?.is_some())
    }
}

impl Engine {
    /// The size of each layer of `image`, bottom first: what it unpacked to when it is
    /// unpacked (Docker's layer size), else its blob's size.
    pub fn layer_sizes(&self, image: &ImageRow) -> Result<Vec<u64>> {
        let m = self.manifest_of(image)?;
        let cfg = self.config_of(image)?;
        let chains = chain_ids(&cfg.rootfs.diff_ids);
        Ok(m.layers
            .iter()
            .zip(chains.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(l, c)| c.and_then(|c| self.layers.meta(c).ok()).map(|m| m.size).unwrap_or(l.size.max(0) as u64))
            .collect())
    }

    /// `berth history`: the config's history, newest first, each entry that made a layer with
    /// that layer's size.
    pub fn history(&self, image: &ImageRow) -> Result<Vec<HistoryRow>> {
        let cfg = self.config_of(image)?;
        let sizes = self.layer_sizes(image)?;
        let mut rows = Vec::new();
        let mut layer = 0;
        for h in &cfg.history {
            let size = if h.empty_layer {
                0
            } else {
                layer += 1;
                sizes.get(layer - 1).copied().unwrap_or(0)
            };
            rows.push(HistoryRow {
                id: None,
                created: h.created.clone(),
                created_by: h.created_by.clone().unwrap_or_default(),
                size,
                comment: h.comment.clone().unwrap_or_default(),
                empty_layer: h.empty_layer,
            });
        }
        // Layers the history does not account for (an image without history) get a line each.
        for &size in sizes.iter().skip(layer) {
            rows.push(HistoryRow {
                id: None,
                created: cfg.created.clone(),
                created_by: String::new(),
                size,
                comment: String::new(),
                empty_layer: false,
            });
        }
        rows.reverse();
        if let Some(top) = rows.first_mut() {
            top.id = Some(image.id.clone());
        }
        Ok(rows)
    }

    /// `image inspect`, in the shape of Docker's `docker image inspect`.
    pub fn inspect_image(&self, image: &ImageRow) -> Result<serde_json::Value> {
        use serde_json::{Value, json};
        let raw: Value = serde_json::from_slice(&self.store.read(&image.id)?).context("the image config")?;
        let cfg = self.config_of(image)?;
        let mut config = json!({
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
            "AttachStderr": false, "Tty": false, "OpenStdin": false, "StdinOnce": false, "Env": null,
            "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "", "Entrypoint": null,
            "OnBuild": null, "Labels": null,
        });
        if let (Some(c), Some(o)) = (config.as_object_mut(), raw["config"].as_object()) {
            for (k, v) in o {
                c.insert(k.clone(), v.clone());
            }
        }
        let names = |v: &[String]| -> Vec<String> {
            v.iter().filter_map(|t| Reference::parse(t).ok()).map(|r| display_name(&r)).collect()
        };
        let chains = chain_ids(&cfg.rootfs.diff_ids);
        let mut lowers: Vec<String> =
            chains.iter().rev().map(|c| self.layers.diff_path(c).display().to_string()).collect();
        let upper = lowers.first().cloned().unwrap_or_default();
        if !lowers.is_empty() {
            lowers.remove(0);
        }
        let mut graph = json!({"MergedDir": "", "UpperDir": upper, "WorkDir": ""});
        if !lowers.is_empty() {
            graph["LowerDir"] = json!(lowers.join(":"));
        }
        let size: u64 = self.layer_sizes(image).map(|v| v.iter().sum()).unwrap_or(image.size.max(0) as u64);
        let mut v = json!({
            "Id": image.id.to_string(),
            "RepoTags": names(&image.tags),
            "RepoDigests": names(&image.repo_digests),
            "Parent": "",
            "Comment": raw["comment"].as_str().unwrap_or(""),
            "Created": raw["created"].as_str().unwrap_or("0001-01-01T00:00:00Z"),
            "DockerVersion": raw["docker_version"].as_str().unwrap_or(""),
            "Author": raw["author"].as_str().unwrap_or(""),
            "Config": config,
            "Architecture": cfg.architecture,
            "Os": cfg.os,
            "Size": size,
            "GraphDriver": {"Data": graph, "Name": "overlay"},
            "RootFS": {"Type": "layers", "Layers": cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        });
        if let Some(variant) = &cfg.variant {
            v["Variant"] = json!(variant);
        }
        if let Some(osv) = raw["os.version"].as_str() {
            v["OsVersion"] = json!(osv);
        }
        Ok(v)
    }

    /// The images `berth save NAME...` writes, with the names each is saved under: a name
    /// with a tag saves that tag, a repository without one all its tags, an id the image alone.
    pub fn save_list(&self, names: &[String]) -> Result<Vec<(ImageRow, Vec<Reference>)>> {
        let images = self.images()?;
        let mut out: Vec<(ImageRow, Vec<Reference>)> = Vec::new();
        let mut add = |img: &ImageRow, name: Option<Reference>| {
            let i = match out.iter().position(|(o, _)| o.id == img.id) {
                Some(i) => i,
                None => {
                    out.push((img.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            if let Some(n) = name
                && !out[i].1.contains(&n)
            {
                out[i].1.push(n);
            }
        };
        for n in names {
            let bare_repo = crate::pull::uses_default_tag(n) && Reference::parse(n).is_ok();
            if bare_repo && let Ok(r) = Reference::parse(n) {
                let prefix = format!("{}/{}:", r.registry, r.repository);
                let tagged: Vec<(&ImageRow, &String)> = images
                    .iter()
                    .flat_map(|i| i.tags.iter().map(move |t| (i, t)))
                    .filter(|(_, t)| t.starts_with(&prefix))
                    .collect();
                if !tagged.is_empty() {
                    for (i, t) in tagged {
                        add(i, Reference::parse(t).ok());
                    }
                    continue;
                }
            }
            let img = self.existing_image(n)?;
            let by_tag = Reference::parse(n).ok().filter(|r| r.digest.is_none() && img.tags.contains(&r.full()));
            add(&img, by_tag);
        }
        Ok(out)
    }

    /// `berth save`: writes the images of `names` to `w` as one tar archive.
    pub fn save(&self, names: &[String], format: SaveFormat, w: impl std::io::Write) -> Result<()> {
        let _l = self.store_lock(false)?;
        let list = self.save_list(names)?;
        let mut items = Vec::new();
        for (img, refs) in &list {
            let cfg = self.config_of(img)?;
            let chains = chain_ids(&cfg.rootfs.diff_ids);
            items.push(archive::SaveItem {
                manifest: img.manifest.clone(),
                names: refs.iter().map(|r| (r.full(), display_name(r), r.tag.clone().unwrap_or_default())).collect(),
                tar_sizes: chains.iter().map(|c| self.layers.meta(c).ok().and_then(|m| m.tar_size)).collect(),
            });
        }
        match format {
            SaveFormat::DockerArchive => archive::save_docker(&self.store, &items, w),
            SaveFormat::OciArchive => archive::save_oci(&self.store, &items, w),
        }
    }
}

/// What a short name also stands for through the search list of registries.toml (the
/// registries other than docker.io's, in order); nothing for an id or a qualified name, so
/// that the file is read only for a short name not found as docker.io's.
fn searched_references(name: &str) -> Vec<Reference> {
    if name.starts_with("sha256:") || name.contains('@') || !crate::pull::unqualified(name) {
        return Vec::new();
    }
    let Ok(config) = berth_registry::config::Config::load() else { return Vec::new() };
    crate::pull::search_references(name, &config)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.registry != berth_image::reference::DEFAULT_REGISTRY)
        .collect()
}

/// Unpacks the layer blob `layer` (in the store) as `chain` unless storage has it already.
pub(crate) fn unpack_layer(
    store: &Store,
    layers: &Layers,
    layer: &Descriptor,
    chain: &Digest,
    parent: Option<&Digest>,
    diff_id: &Digest,
    limits: &berth_storage::Limits,
) -> Result<()> {
    if layers.has(chain) {
        return Ok(());
    }
    let c = manifest::layer_compression(&layer.media_type)?;
    let f = BufReader::with_capacity(256 << 10, store.open_blob(&layer.digest)?);
    let r = archive::decompress(f, c)?;
    layers.add(chain, parent, diff_id, r, limits)?;
    Ok(())
}

/// `busybox:latest`, `127.0.0.1:5000/app:v1`, as Docker prints names.
pub fn display_name(r: &Reference) -> String {
    let mut s = r.familiar_name();
    if let Some(t) = &r.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
    s
}
/// Docker's reference filter patterns: `*` and `?` within one path component.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != '/').any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => n.first().is_some_and(|c| *c != '/') && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(&p, &n)
}

/// One `images` line: an image under one of its names.
pub struct ImageLine {
    pub repo: String,
    pub tag: String,
    pub digest: String,
}

/// The lines `images` shows for an image: one per tag, else one per repository it was pulled
/// from, else `<none>`.
pub fn image_lines(img: &ImageRow) -> Vec<ImageLine> {
    let digest_of = |repo_full: &str| {
        img.repo_digests
            .iter()
            .find(|d| d.rsplit_once('@').is_some_and(|(r, _)| r == repo_full))
            .and_then(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
            .unwrap_or_else(|| "<none>".into())
    };
    let mut out = Vec::new();
    for t in &img.tags {
        if let Ok(r) = Reference::parse(t) {
            out.push(ImageLine {
                repo: r.familiar_name(),
                tag: r.tag.clone().unwrap_or_else(|| "<none>".into()),
                digest: digest_of(&format!("{}/{}", r.registry, r.repository)),
            });
        }
    }
    if out.is_empty() {
        // No tag: its repositories (from its digests), or <none>.
        for d in &img.repo_digests {
            if let Some((repo, digest)) = d.rsplit_once('@')
                && let Ok(r) = Reference::parse(repo)
                && !out.iter().any(|l| l.repo == r.familiar_name())
            {
                out.push(ImageLine { repo: r.familiar_name(), tag: "<none>".into(), digest: digest.into() });
            }
        }
    }
    if out.is_empty() {
        out.push(ImageLine { repo: "<none>".into(), tag: "<none>".into(), digest: "<none>".into() });
    }
    out
}

/// The image's creation time (its config's), else when it entered the store.
fn image_time(e: &Engine, img: &ImageRow) -> (Option<String>, i64) {
    let created = e.config_of(img).ok().and_then(|c| c.created);
    let t = created
        .as_deref()
        .and_then(|t| crate::describe::parse_rfc3339(t).map(|n| n.div_euclid(1_000_000_000)))
        .unwrap_or(img.added / 1_000_000_000);
    (created, t)
}

/// An image as `images` lists it: its names that passed the filters, its config's creation
/// time, and its unpacked size (Docker's SIZE; the blobs as pulled are compressed).
pub struct ListedImage {
    pub image: ImageRow,
    pub created: Option<String>,
    pub lines: Vec<ImageLine>,
    pub size: u64,
}

impl Engine {
    /// The images `images` lists through its `--filter`s (`dangling`, `reference`, `label`,
    /// `before`, `since`): values of one key are alternatives, different keys must all hold.
    /// Without `all`, the untagged images a build made its steps on are left out, as Docker's.
    pub fn list_images(&self, all: bool, filters: &[String]) -> Result<Vec<ListedImage>> {
        let hidden = if all { Default::default() } else { self.intermediate_images()? };
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in filters {
            let (k, v) =
                f.split_once('=').with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
            if !matches!(k, "dangling" | "reference" | "label" | "before" | "since") {
                bail!("invalid filter '{k}'");
            }
            by_key.entry(k.to_string()).or_default().push(v.to_string());
        }
        let time_of = |name: &str| -> Result<i64> { Ok(image_time(self, &self.resolve_image(name)?).1) };
        let mut bounds = Vec::new();
        for (k, vs) in &by_key {
            for v in vs {
                match k.as_str() {
                    "before" => bounds.push((true, time_of(v)?)),
                    "since" => bounds.push((false, time_of(v)?)),
                    "dangling" if !matches!(v.as_str(), "true" | "false" | "1" | "0") => {
                        bail!("invalid filter 'dangling={v}': use true or false")
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for img in self.images()?.into_iter().filter(|i| !hidden.contains(&i.id.to_string())) {
            if let Some(d) = by_key.get("dangling")
                && !d.iter().any(|v| matches!(v.as_str(), "true" | "1") == img.tags.is_empty())
            {
                continue;
            }
            if let Some(ls) = by_key.get("label") {
                let labels = self.config_of(&img).ok().and_then(|c| c.config.labels).unwrap_or_default();
                if !ls.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                    None => labels.contains_key(l),
                }) {
                    continue;
                }
            }
            let (created, t) = image_time(self, &img);
            if bounds.iter().any(|&(before, b)| if before { t >= b } else { t <= b }) {
                continue;
            }
            let mut lines = image_lines(&img);
            if let Some(pats) = by_key.get("reference") {
                // A tag is after the last ':' that follows the last '/' (before it: a port).
                let has_tag = |p: &str| p.rfind(':').is_some_and(|i| !p[i..].contains('/'));
                lines.retain(|l| {
                    let full = format!("{}:{}", l.repo, l.tag);
                    l.repo != "<none>"
                        && pats.iter().any(|p| if has_tag(p) { glob(p, &full) } else { glob(p, &l.repo) })
                });
                if lines.is_empty() {
                    continue;
                }
            }
            let size = self.layer_sizes(&img).map(|v| v.iter().sum()).unwrap_or(img.size.max(0) as u64);
            out.push(ListedImage { image: img, created, lines, size });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_patterns() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:1.*", "busybox:1.36"));
        assert!(!glob("*", "library/busybox"));
        assert!(glob("*/*", "127.0.0.1:5000/app"));
        assert!(!glob("busybox", "busybox2"));
        assert!(glob("b?sybox", "busybox"));
    }
}
