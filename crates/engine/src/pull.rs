//! `pull` and `push`: the registry client (berth-registry) glued to the content store, layer
//! storage and the state DB.
//!
//! A pull holds the store lock (shared) throughout, so garbage collection cannot take blobs
//! from under it. The manifest and config come first; then the layers download in parallel
//! (`max-concurrent-downloads`, default 3), each streamed through digest and size checks into
//! the store (blobs are renamed into place only once verified) and unpacked at once by the
//! same thread. The image row and its tag are written last, so an interrupted pull (Ctrl-C,
//! kill -9) leaves nothing `images` shows; the next pull reuses the verified blobs and layers
//! that made it, and removes the temp files of dead pulls.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use berth_image::digest::HashReader;
use berth_image::manifest::{self, Compression, Descriptor, Document, ImageConfig, Manifest, chain_ids, media};
use berth_image::store::BlobWriter;
use berth_image::{Digest, Platform, Reference, Store, archive};
use berth_registry::client::manifest_media_type;
use berth_registry::{Client, Mount, Repo};
use berth_storage::Layers;
use rusqlite::{OptionalExtension, params};

use crate::Engine;
use crate::images::{display_name, unpack_layer};

/// Image configs larger than this are refused (they are read into memory).
const MAX_CONFIG: u64 = 32 << 20;

/// Where progress lines go (Docker's wording); called from worker threads too.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// Called as a layer's bytes arrive: (layer digest, bytes so far, total); from worker threads.
pub type OnBytes = std::sync::Arc<dyn Fn(&Digest, u64, u64) + Send + Sync>;

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `--platform`; the host's when unset.
    pub platform: Option<Platform>,
    /// Unpack the layers too, so that the first `run` does not have to.
    pub unpack: bool,
}

#[derive(Debug, Clone)]
pub struct Pulled {
    pub reference: Reference,
    /// The image id (config digest).
    pub id: Digest,
    /// The digest of what the tag points to (an index for multi-platform images).
    pub digest: Digest,
    pub up_to_date: bool,
}

#[derive(Debug, Clone)]
pub struct Pushed {
    pub reference: Reference,
    pub digest: Digest,
    pub size: usize,
}

/// Whether `name` gives neither a tag nor a digest (Docker then says "Using default tag").
pub fn uses_default_tag(name: &str) -> bool {
    !name.contains('@') && !name.rsplit('/').next().unwrap_or(name).contains(':')
}

/// Whether `name` names no registry (`busybox`, `user/app`), so the search list applies.
pub(crate) fn unqualified(name: &str) -> bool {
    match name.split_once('/') {
        None => true,
        Some((first, _)) => !(first.contains('.') || first.contains(':') || first == "localhost"),
    }
}

/// The references a pull of `name` tries, in order.
fn candidates(name: &str, client: &Client) -> Result<Vec<Reference>> {
    if !unqualified(name) {
        return Ok(vec![Reference::parse(name)?]);
    }
    search_references(name, &client.config)
}

/// The short name `name` in each registry of the search list, in order (docker.io's as Docker
/// reads a short name).
pub(crate) fn search_references(name: &str, config: &berth_registry::config::Config) -> Result<Vec<Reference>> {
    let mut out = Vec::new();
    for reg in config.search_registries() {
        let r = if reg == berth_image::reference::DEFAULT_REGISTRY {
            Reference::parse(name)?
        } else {
            Reference::parse(&format!("{reg}/{name}"))?
        };
        out.push(r);
    }
    Ok(out)
}

impl Engine {
    /// `berth pull NAME`: Docker's progress lines go to `progress`.
    pub fn pull(&self, name: &str, opts: &PullOptions, progress: Progress) -> Result<Pulled> {
        self.pull_with_bytes(name, opts, progress, None)
    }

    /// [`Engine::pull`] that also reports each layer's bytes as they arrive (progress bars).
    pub fn pull_with_bytes(
        &self,
        name: &str,
        opts: &PullOptions,
        progress: Progress,
        on_bytes: Option<OnBytes>,
    ) -> Result<Pulled> {
        let client = Client::from_env()?;
        let refs = candidates(name, &client)?;
        let mut errors = Vec::new();
        for r in &refs {
            match self.pull_reference(&client, r, opts, progress, on_bytes.clone()) {
                Ok(p) => return Ok(p),
                Err(e) if refs.len() == 1 => {
                    self.collect_garbage_if_idle();
                    return Err(e);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        self.collect_garbage_if_idle();
        bail!("{}", errors.join("; "))
    }

    /// `berth pull -a NAME`: every tag of the repository (`GET /v2/<name>/tags/list`).
    pub fn pull_all_tags(
        &self,
        name: &str,
        opts: &PullOptions,
        progress: Progress,
        on_bytes: Option<OnBytes>,
    ) -> Result<Vec<Pulled>> {
        if !uses_default_tag(name) {
            bail!("tag can't be used with --all-tags/-a");
        }
        let client = Client::from_env()?;
        let refs = candidates(name, &client)?;
        let mut errors = Vec::new();
        for r in &refs {
            let tags = client.repo(&r.registry, &r.repository, false).and_then(|repo| repo.tags());
            let tags = match tags {
                Ok(t) if t.is_empty() => {
                    errors.push(format!("{} has no tags", display_name(&Reference { tag: None, ..r.clone() })));
                    continue;
                }
                Ok(t) => t,
                Err(e) if refs.len() == 1 => return Err(e),
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    continue;
                }
            };
            let mut out = Vec::new();
            for t in tags {
                let tagged = Reference { tag: Some(t.clone()), digest: None, ..r.clone() };
                // A tag the registry lists must be a valid one before it becomes a name here.
                let tagged = Reference::parse(&tagged.full())
                    .with_context(|| format!("the registry lists an invalid tag {t:?}"))?;
                out.push(self.pull_reference(&client, &tagged, opts, progress, on_bytes.clone())?);
            }
            return Ok(out);
        }
        bail!("{}", errors.join("; "))
    }

    fn pull_reference(
        &self,
        client: &Client,
        r: &Reference,
        opts: &PullOptions,
        progress: Progress,
        on_bytes: Option<OnBytes>,
    ) -> Result<Pulled> {
        let shown = display_name(r);
        self.pull_inner(client, r, opts, progress, on_bytes).with_context(|| format!("pulling {shown}"))
    }

    fn pull_inner(
        &self,
        client: &Client,
        r: &Reference,
        opts: &PullOptions,
        progress: Progress,
        on_bytes: Option<OnBytes>,
    ) -> Result<Pulled> {
        let wanted = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        progress(&format!("{wanted}: Pulling from {}", r.repository));
        let _lock = self.store_lock(false)?;
        clean_stale_tmp(&self.store.root().join("tmp"), &["blob-", "import-", "push-"]);
        clean_stale_tmp(&self.layers.root().join("tmp"), &["layer-", "rm-"]);

        // The manifest: from a mirror when one has it, else from the registry.
        let mut found = None;
        let mut errors = Vec::new();
        for (registry, repository) in client.pull_sources(&r.registry, &r.repository) {
            match client.repo(&registry, &repository, false).and_then(|repo| Ok((repo.get_manifest(&wanted)?, repo))) {
                Ok(x) => {
                    found = Some(x);
                    break;
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let Some((top, repo)) = found else { bail!("{}", errors.join("; ")) };

        // An index: the manifest for the platform.
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let mut current = top.clone();
        let m = loop {
            match manifest::parse_document(&current.bytes, Some(&current.media_type))? {
                Document::Manifest(m) => break m,
                Document::Index(i) => {
                    if current.digest != top.digest {
                        bail!("image indexes nested in indexes are not supported");
                    }
                    let d = i.select(&platform)?;
                    current = repo.get_manifest(&d.digest.to_string())?;
                }
            }
        };
        if !matches!(m.config.media_type.as_str(), media::OCI_CONFIG | media::DOCKER_CONFIG | "") {
            bail!(
                "unsupported media type {:?} for the image config: this is not a container image (berth runs images whose config is {} or {})",
                m.config.media_type,
                media::OCI_CONFIG,
                media::DOCKER_CONFIG
            );
        }
        for l in m.layers.iter().chain([&m.config]) {
            if l.size < 0 {
                bail!("the manifest gives blob {} a negative size", l.digest);
            }
        }
        for l in &m.layers {
            manifest::layer_compression(&l.media_type).with_context(|| format!("layer {}", l.digest))?;
        }

        let manifest_digest = current.digest.clone();
        // The config is read into memory and checked here; it goes into the store (with the
        // manifest) on a thread of its own while the layers download, so that their fsyncs
        // wait on the disk alongside the downloads rather than before them.
        let config_bytes = if self.store.has(&m.config.digest) {
            None
        } else {
            if m.config.size as u64 > MAX_CONFIG {
                bail!("the image config is {} bytes, more than berth takes ({MAX_CONFIG})", m.config.size);
            }
            let mut v = Vec::with_capacity(m.config.size as usize);
            let mut hr =
                HashReader::new(repo.blob(&m.config.digest, Some(m.config.size as u64), None), m.config.digest.algo);
            hr.read_to_end(&mut v).with_context(|| format!("config {}", m.config.digest))?;
            let (got, n) = hr.finish();
            if got != m.config.digest {
                bail!("config {}: digest mismatch: got {got} ({n} bytes)", m.config.digest);
            }
            Some(v)
        };
        let cfg = match &config_bytes {
            Some(b) => ImageConfig::parse(b)?,
            None => ImageConfig::parse(&self.store.read(&m.config.digest)?)?,
        };
        // A single-platform image asked for with --platform must be that platform (through an
        // index, the index's word is taken, as Docker does).
        if let Some(p) = &opts.platform
            && current.digest == top.digest
            && !cfg.os.is_empty()
            && (cfg.os != p.os || cfg.architecture != p.architecture)
        {
            bail!(
                "the image was found but its platform ({}/{}) does not match the requested {p}",
                cfg.os,
                cfg.architecture
            );
        }
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            bail!("the image config lists {} layers but the manifest {}", cfg.rootfs.diff_ids.len(), m.layers.len());
        }
        let before: Option<String> =
            self.db.query_row("SELECT image FROM tags WHERE name = ?1", [r.full()], |row| row.get(0)).optional()?;

        let chains = chain_ids(&cfg.rootfs.diff_ids);
        let jobs: Vec<usize> = (0..m.layers.len())
            .filter(|&i| !self.store.has(&m.layers[i].digest) || (opts.unpack && !self.layers.has(&chains[i])))
            .collect();
        for (i, l) in m.layers.iter().enumerate() {
            let state = if jobs.contains(&i) { "Pulling fs layer" } else { "Already exists" };
            progress(&format!("{}: {state}", l.digest.short()));
        }
        let work = LayerWork {
            on_bytes,
            store: &self.store,
            layers: &self.layers,
            repo: &repo,
            descs: &m.layers,
            chains: &chains,
            diff_ids: &cfg.rootfs.diff_ids,
            unpack: opts.unpack,
            limits: crate::settings::Settings::layer_limits()?,
            progress,
        };
        let store = &self.store;
        let store_small = || -> Result<()> {
            if !store.has(&manifest_digest) {
                store.put(&current.bytes[..], Some(&manifest_digest))?;
            }
            if let Some(b) = &config_bytes {
                store.put(&b[..], Some(&m.config.digest)).with_context(|| format!("config {}", m.config.digest))?;
            }
            Ok(())
        };
        std::thread::scope(|s| -> Result<()> {
            let small = s.spawn(store_small);
            let layers = work.run(&jobs, client.config.downloads());
            let small = small.join().unwrap_or_else(|_| Err(anyhow::anyhow!("storing the manifest panicked")));
            layers.and(small)
        })?;

        let id = self.register(&manifest_digest, Some(r))?;
        self.add_repo_digest(&format!("{}/{}", r.registry, r.repository), &top.digest, &id)?;
        for d in m.layers.iter().map(|l| &l.digest).chain([&m.config.digest]) {
            self.db.execute(
                "INSERT OR IGNORE INTO blob_sources (digest, registry, repository) VALUES (?1, ?2, ?3)",
                params![d.to_string(), repo.registry(), repo.name],
            )?;
        }
        let up_to_date = before.as_deref() == Some(id.to_string().as_str()) && jobs.is_empty();
        progress(&format!("Digest: {}", top.digest));
        let shown = display_name(r);
        if up_to_date {
            progress(&format!("Status: Image is up to date for {shown}"));
        } else {
            progress(&format!("Status: Downloaded newer image for {shown}"));
        }
        Ok(Pulled { reference: r.clone(), id, digest: top.digest, up_to_date })
    }

    /// `berth push NAME[:TAG]`.
    pub fn push(&self, name: &str, progress: Progress) -> Result<Pushed> {
        let r = Reference::parse(name)?;
        let Some(tag) = r.tag.clone().filter(|_| r.digest.is_none()) else {
            bail!("cannot push a digest reference ({name}): push a tag");
        };
        let img = self.resolve_image(&r.full()).map_err(|_| crate::ExitError {
            code: 1,
            msg: format!("An image does not exist locally with the tag: {}", r.familiar_name()),
        })?;
        let _lock = self.store_lock(false)?;
        let bytes = self.store.read(&img.manifest)?;
        let m = self.manifest_of(&img)?;
        progress(&format!("The push refers to repository [{}/{}]", r.registry, r.repository));
        let gzipped = self.gzip_for_push(&bytes, &m)?;
        let (bytes, m) = match &gzipped {
            Some(g) => (g.manifest.clone(), g.parsed.clone()),
            None => (bytes, m),
        };
        let temp_blob = |d: &Digest| gzipped.as_ref().and_then(|g| g.blobs.get(d)).map(|f| f.path().to_path_buf());
        let client = Client::from_env()?;
        let repo = client.repo(&r.registry, &r.repository, true).with_context(|| format!("pushing {}", r.full()))?;
        // Blobs this registry already has in another repository can be mounted from there.
        let mut from: HashMap<Digest, String> = HashMap::new();
        let blobs: Vec<&Descriptor> = m.layers.iter().rev().chain([&m.config]).collect();
        for d in &blobs {
            let src: Option<String> = self
                .db
                .query_row(
                    "SELECT repository FROM blob_sources WHERE digest = ?1 AND registry = ?2 AND repository != ?3 LIMIT 1",
                    params![d.digest.to_string(), r.registry, r.repository],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(s) = src {
                from.insert(d.digest.clone(), s);
            }
        }
        let chunk = client.config.chunk_size();
        let store = &self.store;
        let is_layer = |d: &Digest| m.layers.iter().any(|l| l.digest == *d);
        let push_one = |d: &Descriptor| -> Result<()> {
            let say = |what: &str| {
                if is_layer(&d.digest) {
                    progress(&format!("{}: {what}", d.digest.short()));
                }
            };
            let temp = temp_blob(&d.digest);
            if temp.is_none() && !store.has(&d.digest) {
                bail!("blob {} is missing from the store (run `berth pull` again)", d.digest);
            }
            if repo.blob_size(&d.digest)?.is_some() {
                say("Layer already exists");
                return Ok(());
            }
            let path = temp.unwrap_or_else(|| store.path(&d.digest));
            let session = match from.get(&d.digest) {
                Some(src) => match repo.mount(&d.digest, src)? {
                    Mount::Mounted => {
                        say(&format!("Mounted from {src}"));
                        return Ok(());
                    }
                    Mount::Upload(loc) => Some(loc),
                },
                None => None,
            };
            repo.upload(&d.digest, &path, chunk, session)?;
            say("Pushed");
            Ok(())
        };
        parallel(blobs.len(), client.config.uploads(), &|i, _cancel: &AtomicBool| {
            push_one(blobs[i]).with_context(|| format!("pushing {}: blob {}", display_name(&r), blobs[i].digest))
        })?;
        let digest = repo
            .put_manifest(&tag, &bytes, &manifest_media_type(&bytes))
            .with_context(|| format!("pushing {}", display_name(&r)))?;
        // (The gzipped copies are not kept: nothing to mount them from later.)
        for d in blobs.iter().filter(|d| temp_blob(&d.digest).is_none()) {
            self.db.execute(
                "INSERT OR IGNORE INTO blob_sources (digest, registry, repository) VALUES (?1, ?2, ?3)",
                params![d.digest.to_string(), r.registry, r.repository],
            )?;
        }
        if let Some(g) = &gzipped {
            self.adopt_gzipped(&img, g, &bytes)?;
        }
        self.add_repo_digest(&format!("{}/{}", r.registry, r.repository), &digest, &img.id)?;
        progress(&format!("{tag}: digest: {digest} size: {}", bytes.len()));
        drop(_lock);
        if gzipped.is_some() {
            // The plain blobs and manifest the image had, unless another image uses them.
            self.collect_garbage_if_idle();
        }
        Ok(Pushed { reference: r, digest, size: bytes.len() })
    }
}

/// What a push sends instead of an image's own manifest when some of its layers are stored
/// uncompressed: the manifest naming gzipped copies, and those copies (temp files).
struct Gzipped {
    manifest: Vec<u8>,
    parsed: Manifest,
    blobs: HashMap<Digest, tempfile::NamedTempFile>,
}

impl Engine {
    /// Layers stored uncompressed (a `load` of a docker-archive, an `import`) go up gzipped,
    /// as Docker pushes them: each is compressed into a temp file and the pushed manifest
    /// names those; the local image keeps its own manifest. None when every layer is
    /// compressed already.
    fn gzip_for_push(&self, bytes: &[u8], m: &Manifest) -> Result<Option<Gzipped>> {
        let plain: Vec<usize> = (0..m.layers.len())
            .filter(|&i| matches!(manifest::layer_compression(&m.layers[i].media_type), Ok(Compression::None)))
            .collect();
        if plain.is_empty() {
            return Ok(None);
        }
        let mut v: serde_json::Value = serde_json::from_slice(bytes).context("reading the image's manifest")?;
        let docker = v["mediaType"] == media::DOCKER_MANIFEST || m.config.media_type == media::DOCKER_CONFIG;
        let gz_type = if docker { media::DOCKER_LAYER_GZIP } else { media::OCI_LAYER_GZIP };
        let tmp = self.root.join("images").join("tmp");
        let mut blobs = HashMap::new();
        let mut parsed = m.clone();
        for i in plain {
            let src = &m.layers[i];
            // Named with our pid: one a killed push leaves is found and removed as stale.
            let file = tempfile::Builder::new()
                .prefix(&format!("push-{}-", std::process::id()))
                .tempfile_in(&tmp)
                .context("creating a temp file for a gzipped layer")?;
            let hw = crate::layer::HashWriter {
                inner: std::io::BufWriter::new(file.reopen()?),
                hasher: berth_image::digest::Hasher::new(src.digest.algo),
            };
            let mut gz = flate2::write::GzEncoder::new(hw, flate2::Compression::new(6));
            let mut blob = self.store.open_blob(&src.digest)?;
            std::io::copy(&mut blob, &mut gz).with_context(|| format!("compressing layer {}", src.digest))?;
            let mut hw = gz.finish()?;
            std::io::Write::flush(&mut hw.inner)?;
            let digest = hw.hasher.finish();
            let size = file.as_file().metadata()?.len() as i64;
            let layer = &mut v["layers"][i];
            layer["mediaType"] = serde_json::json!(gz_type);
            layer["digest"] = serde_json::json!(digest.to_string());
            layer["size"] = serde_json::json!(size);
            // A foreign layer's URLs name its plain blob, not this one.
            if let Some(o) = layer.as_object_mut() {
                o.remove("urls");
            }
            parsed.layers[i] = Descriptor {
                media_type: gz_type.into(),
                digest: digest.clone(),
                size,
                urls: Vec::new(),
                ..src.clone()
            };
            blobs.insert(digest, file);
        }
        Ok(Some(Gzipped { manifest: serde_json::to_vec_pretty(&v)?, parsed, blobs }))
    }
}

impl Engine {
    /// After a push that gzipped layers: the image takes the manifest it was pushed with and
    /// the gzipped blobs, as Docker then knows its layers by their pushed digests. A pull of
    /// the tag back finds everything there, and the next push compresses nothing.
    fn adopt_gzipped(&self, img: &crate::images::ImageRow, g: &Gzipped, manifest: &[u8]) -> Result<()> {
        for (digest, file) in &g.blobs {
            self.store.put(std::fs::File::open(file.path())?, Some(digest))?;
        }
        let (md, _) = self.store.put(manifest, None)?;
        let size: i64 = g.parsed.layers.iter().map(|l| l.size.max(0)).sum::<i64>() + g.parsed.config.size;
        self.db.execute(
            "UPDATE images SET manifest = ?2, size = ?3 WHERE id = ?1",
            params![img.id.to_string(), md.to_string(), size],
        )?;
        Ok(())
    }
}

/// The layer downloads of one pull.
struct LayerWork<'a> {
    on_bytes: Option<OnBytes>,
    store: &'a Store,
    layers: &'a Layers,
    repo: &'a Repo,
    descs: &'a [Descriptor],
    chains: &'a [Digest],
    diff_ids: &'a [Digest],
    unpack: bool,
    /// berth.toml's unpack limits, read once per pull.
    limits: berth_storage::Limits,
    progress: Progress<'a>,
}

impl LayerWork<'_> {
    fn run(&self, jobs: &[usize], workers: usize) -> Result<()> {
        parallel(jobs.len(), workers, &|k, cancel| {
            let i = jobs[k];
            self.one(i, cancel).with_context(|| format!("layer {}", self.descs[i].digest))
        })
    }

    fn one(&self, i: usize, cancel: &AtomicBool) -> Result<()> {
        let d = &self.descs[i];
        let parent = if i > 0 { Some(&self.chains[i - 1]) } else { None };
        if self.unpack && !self.store.has(&d.digest) && !self.layers.has(&self.chains[i]) {
            self.fetch_and_unpack(i, parent, cancel)?;
            (self.progress)(&format!("{}: Pull complete", d.digest.short()));
            return Ok(());
        }
        if !self.store.has(&d.digest) {
            let r = self.counted(d, self.repo.blob(&d.digest, Some(d.size as u64), Some(cancel)));
            self.store.put(r, Some(&d.digest))?;
            (self.progress)(&format!("{}: Download complete", d.digest.short()));
        }
        if self.unpack {
            unpack_layer(self.store, self.layers, d, &self.chains[i], parent, &self.diff_ids[i], &self.limits)
                .context("unpacking it")?;
        }
        (self.progress)(&format!("{}: Pull complete", d.digest.short()));
        Ok(())
    }
}

impl LayerWork<'_> {
    /// One pass over the download, on three threads joined by small bounded channels (memory
    /// stays flat whatever the layer's size): this one reads the network and hashes the bytes
    /// into the store; the second decompresses; the third hashes the layer's tar (its diff id)
    /// and unpacks it. The blob is renamed into place only if its digest matches; when
    /// something fails, the download's own error (size, network) comes first, then a digest
    /// mismatch, then the decompression's or the unpack's error.
    fn fetch_and_unpack(&self, i: usize, parent: Option<&Digest>, cancel: &AtomicBool) -> Result<()> {
        let d = &self.descs[i];
        let compression = manifest::layer_compression(&d.media_type)?;
        let limits = self.limits;
        let mut w = self.store.writer(d.digest.algo)?;
        let inner = self.counted(d, self.repo.blob(&d.digest, Some(d.size as u64), Some(cancel)));
        let mut tee = Tee { inner, out: &mut w, err: None };
        // Compressed chunks to the decompressor, decompressed ones to the unpacker; each comes
        // back to be filled again (no allocation, no page faults per chunk).
        let (tx_c, rx_c) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let (back_c, spare_c) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT + 2);
        let (tx_d, rx_d) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let (back_d, spare_d) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT + 2);
        // Decompressed chunks the unpacker is done with go, in order, to a fourth thread that
        // hashes them (the diff id), and from there back to the decompressor.
        let (to_hash, hash_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT + 2);
        let algo = self.diff_ids[i].algo;
        let (drained, decoded, unpacked) = std::thread::scope(|s| {
            let hasher = s.spawn(move || {
                let mut h = berth_image::digest::Hasher::new(algo);
                let mut n = 0u64;
                for chunk in hash_rx {
                    h.update(&chunk);
                    n += chunk.len() as u64;
                    let _ = back_d.try_send(chunk);
                }
                (h.finish(), n)
            });
            let unpacker = s.spawn(move || {
                let r = ChannelReader { rx: rx_d, back: Some(to_hash), deliver: true, cur: Vec::new(), pos: 0 };
                self.layers.add_hashed_elsewhere(&self.chains[i], parent, &self.diff_ids[i], r, &limits, || {
                    hasher.join().map_err(|_| anyhow::anyhow!("the thread hashing the layer panicked"))
                })
            });
            let decoder = s.spawn(move || -> Result<()> {
                let r = BufReader::with_capacity(
                    CHUNK,
                    ChannelReader { rx: rx_c, back: Some(back_c), deliver: false, cur: Vec::new(), pos: 0 },
                );
                let res = match archive::decompress(r, compression) {
                    Ok(mut dec) => feed(&mut dec, &tx_d, &spare_d),
                    Err(e) => Err(e),
                };
                if let Err(e) = &res {
                    let _ = tx_d.send(Err(std::io::Error::other(format!("{e:#}"))));
                }
                res
            });
            let sent = feed(&mut tee, &tx_c, &spare_c);
            if let Err(e) = &sent {
                let _ = tx_c.send(Err(std::io::Error::other(format!("{e:#}"))));
            }
            drop(tx_c);
            // Read what the decompressor did not take (all of it, after an error) so that the
            // digest covers the whole blob.
            let drained = sent.and_then(|_| Ok(std::io::copy(&mut tee, &mut std::io::sink())?));
            let decoded =
                decoder.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread decompressing the layer panicked")));
            let unpacked =
                unpacker.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread unpacking the layer panicked")));
            (drained, decoded, unpacked)
        });
        if let Some(e) = tee.err.take() {
            return Err(e.into());
        }
        drained.context("reading the layer")?;
        w.commit(&d.digest)?;
        (self.progress)(&format!("{}: Download complete", d.digest.short()));
        decoded.context("decompressing it")?;
        unpacked.context("unpacking it")?;
        Ok(())
    }
}

/// The size of the chunks handed between the threads of a layer, and how many may wait.
const CHUNK: usize = 64 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

/// Sends what `r` yields in chunks until its end, or until the receiver is gone (the unpack
/// stopped: its error tells why). Chunks the receiver gave back in `spare` are used again.
fn feed(
    r: &mut dyn Read,
    tx: &std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    spare: &std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        let last = n < CHUNK;
        if tx.send(Ok(buf)).is_err() || last {
            return Ok(());
        }
    }
}

/// Reads the chunks of [`feed`]: an error sent is returned, the sender's end is the end.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    /// Where chunks go once read (in order); closed at the end of the stream.
    back: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Every chunk must arrive (a hasher) rather than only those there is room for (a pool of
    /// chunks to fill again, which may be full or no longer emptied).
    deliver: bool,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn pass_on(&self, chunk: Vec<u8>) {
        if let Some(b) = &self.back
            && !chunk.is_empty()
        {
            let _ = if self.deliver { b.send(chunk).map_err(|_| ()) } else { b.try_send(chunk).map_err(|_| ()) };
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    let used = std::mem::replace(&mut self.cur, b);
                    self.pass_on(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    // The end: the last chunk goes on too, and whoever takes them learns
                    // that there are no more.
                    let last = std::mem::take(&mut self.cur);
                    self.pos = 0;
                    self.pass_on(last);
                    self.back = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl LayerWork<'_> {
    fn counted<R: Read>(&self, d: &Descriptor, inner: R) -> Counted<R> {
        Counted { inner, digest: d.digest.clone(), done: 0, total: d.size.max(0) as u64, cb: self.on_bytes.clone() }
    }
}

/// Reports the bytes read through it.
struct Counted<R> {
    inner: R,
    digest: Digest,
    done: u64,
    total: u64,
    cb: Option<OnBytes>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(cb) = &self.cb
            && n > 0
        {
            self.done += n as u64;
            cb(&self.digest, self.done, self.total);
        }
        Ok(n)
    }
}

/// Copies what is read from `inner` into `out`, remembering the first error of `inner`.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut BlobWriter,
    err: Option<std::io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                self.err.get_or_insert(e);
                return Err(copy);
            }
        };
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Runs `f(0..n)` on up to `workers` threads. The first error stops the others (they see
/// `cancel`) and is returned.
fn parallel(n: usize, workers: usize, f: &(dyn Fn(usize, &AtomicBool) -> Result<()> + Sync)) -> Result<()> {
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let first: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let work = || {
        loop {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= n {
                return;
            }
            if let Err(e) = f(k, &cancel) {
                let mut g = first.lock().unwrap_or_else(|p| p.into_inner());
                if g.is_none() {
                    *g = Some(e);
                }
                cancel.store(true, Ordering::Relaxed);
                return;
            }
        }
    };
    let workers = workers.clamp(1, n.max(1));
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    match first.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Removes temp files and dirs of `prefixes` in `dir` whose process (the first number in the
/// name) is gone: what a killed pull or unpack left.
fn clean_stale_tmp(dir: &Path, prefixes: &[&str]) {
    for p in stale_tmp(dir, prefixes) {
        let _ = berth_storage::remove_tree(&p);
    }
}

/// The temp files and dirs of `prefixes` (all when empty) in `dir` whose process is gone.
pub(crate) fn stale_tmp(dir: &Path, prefixes: &[&str]) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !prefixes.is_empty() && !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Some(pid) = name.split(['-', '.']).find_map(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: kill with signal 0 only checks the process exists.
        let alive = pid > 0
            && (unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        if !alive {
            out.push(e.path());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn names() {
        assert!(uses_default_tag("busybox"));
        assert!(uses_default_tag("127.0.0.1:5000/app"));
        assert!(!uses_default_tag("127.0.0.1:5000/app:v1"));
        assert!(!uses_default_tag("app@sha256:abc"));
        assert!(unqualified("busybox"));
        assert!(unqualified("user/app"));
        assert!(!unqualified("localhost/app"));
        assert!(!unqualified("quay.io/app"));
        assert!(!unqualified("host:5000/app"));
    }

    #[test]
    fn parallel_returns_the_first_error_and_stops() {
        let done = AtomicUsize::new(0);
        let r = parallel(50, 3, &|i, cancel| {
            if cancel.load(Ordering::Relaxed) {
                return Err(anyhow!("cancelled"));
            }
            if i == 2 {
                return Err(anyhow!("boom"));
            }
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        assert_eq!(r.unwrap_err().to_string(), "boom");
        assert!(done.load(Ordering::Relaxed) < 50);
        assert!(parallel(0, 3, &|_, _| Ok(())).is_ok());
    }
}
