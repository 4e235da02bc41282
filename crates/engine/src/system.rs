//! `system df` (what images, containers and volumes take on disk) and `system check` (is the
//! store whole: every blob's digest, every layer's shape, every image's blobs; `--repair`
//! removes what is broken and the rows that point at it).

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use berth_image::Digest;
use berth_image::digest::HashReader;
use berth_image::manifest::chain_ids;

use crate::images::{ImageRow, display_name};
use crate::volumes::Volume;
use crate::{ContainerRow, Engine};

/// One image in `system df`: its disk use (blobs plus unpacked layers), the part it shares
/// with other images and the part only it uses.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    pub image: ImageRow,
    pub created: Option<String>,
    pub size: u64,
    pub shared: u64,
    pub unique: u64,
    /// Containers made from it.
    pub containers: usize,
}

#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub container: ContainerRow,
    /// Its writable layer.
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct VolumeUsage {
    pub volume: Volume,
    /// Containers using it.
    pub links: usize,
    pub size: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    /// All images together (what is shared counted once).
    pub images_size: u64,
    /// What removing every image no container uses would free.
    pub images_reclaimable: u64,
    pub containers: Vec<ContainerUsage>,
    pub volumes: Vec<VolumeUsage>,
}

/// A piece of the image store: a blob or an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Piece {
    Blob(Digest),
    Layer(Digest),
}

/// Something `system check` found.
#[derive(Debug, Clone)]
pub struct Problem {
    pub what: String,
    /// What `--repair` does (or did) about it.
    pub fix: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub blobs: usize,
    pub layers: usize,
    pub images: usize,
    pub problems: Vec<Problem>,
}

impl Engine {
    /// `info`: what this engine and host are, in the shape of Docker's `/info` (the fields
    /// berth has).
    pub fn info(&self) -> Result<serde_json::Value> {
        let cs = self.containers(true)?;
        let running = cs.iter().filter(|c| c.state == "running").count();
        let paused = cs.iter().filter(|c| c.state == "paused").count();
        let layout = match berth_cgroups::Layout::detect() {
            berth_cgroups::Layout::V2 { .. } => "2",
            _ => "1",
        };
        let uname = nix::sys::utsname::uname()?;
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            })
            .unwrap_or_else(|| "Linux".into());
        Ok(serde_json::json!({
            "Containers": cs.len(),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": cs.len() - running - paused,
            "Images": self.images()?.len(),
            "Driver": "overlay",
            "CgroupVersion": layout,
            "DefaultRuntime": "berth-runtime",
            "DockerRootDir": self.root,
            "RunRoot": self.runroot,
            "KernelVersion": uname.release().to_string_lossy(),
            "OperatingSystem": os,
            "OSType": "linux",
            "Architecture": uname.machine().to_string_lossy(),
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "MemTotal": crate::inspect::host_memory(),
            "Name": uname.nodename().to_string_lossy(),
            "ServerVersion": env!("CARGO_PKG_VERSION"),
        }))
    }

    fn pieces(&self, img: &ImageRow) -> Vec<Piece> {
        let mut v = vec![Piece::Blob(img.manifest.clone()), Piece::Blob(img.id.clone())];
        if let Ok(m) = self.manifest_of(img) {
            v.extend(m.layers.iter().map(|l| Piece::Blob(l.digest.clone())));
        }
        if let Ok(c) = self.config_of(img) {
            v.extend(chain_ids(&c.rootfs.diff_ids).into_iter().filter(|c| self.layers.has(c)).map(Piece::Layer));
        }
        v
    }

    fn piece_size(&self, p: &Piece) -> u64 {
        match p {
            Piece::Blob(d) => self.store.size(d),
            Piece::Layer(c) => self.layers.meta(c).map(|m| m.size).unwrap_or(0),
        }
    }

    /// `berth system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let containers = self.containers(true)?;
        let images = self.images()?;
        let pieces: Vec<Vec<Piece>> = images.iter().map(|i| self.pieces(i)).collect();
        let mut users: HashMap<&Piece, usize> = HashMap::new();
        for ps in &pieces {
            for p in ps.iter().collect::<HashSet<_>>() {
                *users.entry(p).or_default() += 1;
            }
        }
        let sizes: HashMap<&Piece, u64> = users.keys().map(|p| (*p, self.piece_size(p))).collect();
        let mut u = DiskUsage { images_size: sizes.values().sum(), ..Default::default() };
        let mut active: HashSet<&Piece> = HashSet::new();
        for (img, ps) in images.iter().zip(&pieces) {
            let n = containers.iter().filter(|c| c.image == img.id.to_string()).count();
            let mut usage = ImageUsage {
                image: img.clone(),
                created: self.config_of(img).ok().and_then(|c| c.created),
                size: 0,
                shared: 0,
                unique: 0,
                containers: n,
            };
            for p in ps.iter().collect::<HashSet<_>>() {
                let s = sizes.get(p).copied().unwrap_or(0);
                usage.size += s;
                if users.get(p).copied().unwrap_or(0) > 1 {
                    usage.shared += s;
                } else {
                    usage.unique += s;
                }
                if n > 0 {
                    active.insert(p);
                }
            }
            u.images.push(usage);
        }
        u.images_reclaimable = u.images_size - active.iter().map(|p| sizes.get(p).copied().unwrap_or(0)).sum::<u64>();
        for c in containers {
            let size = self.container_changes_size(&c.id);
            u.containers.push(ContainerUsage { container: c, size });
        }
        for v in self.volumes()? {
            let links = self.volume_users(&v.name)?.len();
            let size = crate::tree_size(&self.volume_data(&v.name));
            u.volumes.push(VolumeUsage { volume: v, links, size });
        }
        Ok(u)
    }

    /// The blob each unpacked layer (by chain id) was unpacked from, through the images'
    /// manifests and configs.
    fn layer_sources(&self) -> HashMap<Digest, berth_image::manifest::Descriptor> {
        let mut out = HashMap::new();
        for img in self.images().unwrap_or_default() {
            let (Ok(m), Ok(cfg)) = (self.manifest_of(&img), self.config_of(&img)) else { continue };
            out.extend(chain_ids(&cfg.rootfs.diff_ids).into_iter().zip(m.layers));
        }
        out
    }

    /// The layers some container's root is made of, with one such container's name; None
    /// when the image of some container cannot be read (its layers are unknown).
    fn layers_in_use(&self) -> Result<Option<HashMap<Digest, String>>> {
        let mut out = HashMap::new();
        for c in self.containers(true)? {
            let Ok(cfg) = self.resolve_image(&c.image).and_then(|i| self.config_of(&i)) else { return Ok(None) };
            for chain in chain_ids(&cfg.rootfs.diff_ids) {
                out.entry(chain).or_insert_with(|| c.name.clone());
            }
        }
        Ok(Some(out))
    }

    /// `berth system check [--repair]`: reads every blob back through its digest, looks at
    /// every unpacked layer and every image's blobs, and finds what nothing refers to. With
    /// `repair`, broken blobs and layers go, images that lost a blob go (unless a container
    /// uses them) and so do the DB rows that point at what is gone.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        // Exclusive for a repair: no pull, load or commit is half-way while things are removed.
        let _l = self.store_lock(repair)?;
        let mut problems = Vec::new();
        let mut problem = |what: String, fix: &str, done: bool| {
            problems.push(Problem { what, fix: fix.to_string(), repaired: done });
        };

        // Blobs: each read back through its digest.
        let mut broken: HashSet<Digest> = HashSet::new();
        let blobs = self.store.list()?;
        for d in &blobs {
            let bad = match self.store.open_blob(d) {
                Err(e) => Some(format!("{e:#}")),
                Ok(f) => {
                    let mut hr = HashReader::new(std::io::BufReader::with_capacity(256 << 10, f), d.algo);
                    match std::io::copy(&mut hr, &mut std::io::sink()) {
                        Err(e) => Some(format!("it cannot be read ({e})")),
                        Ok(_) => {
                            let (got, n) = hr.finish();
                            (got != *d).then(|| format!("its content ({n} bytes) hashes to {got}"))
                        }
                    }
                }
            };
            if let Some(why) = bad {
                let done = repair && self.store.remove(d).is_ok();
                problem(format!("blob {d} is corrupt: {why}"), "remove the blob", done);
                broken.insert(d.clone());
            }
        }

        // Unpacked layers: their files, their short links; links to nothing.
        let layers = self.layers.list()?;
        let mut bad_layers: HashSet<Digest> = HashSet::new();
        for c in &layers {
            if let Some(why) = self.layers.verify(c) {
                let done = repair && self.layers.remove(c).is_ok();
                problem(
                    format!("layer {c} is broken: {why}"),
                    "remove the layer (it is unpacked again when needed)",
                    done,
                );
                bad_layers.insert(c.clone());
            } else if !self.layers.link_ok(c) {
                let done = repair && self.layers.relink(c).is_ok();
                problem(format!("layer {c} has no short link"), "make the link again", done);
            }
        }
        // Their files: each layer's tar unpacked again from its blob and compared. A layer
        // that changed under a container stays (the container runs from it); others go and
        // are unpacked again from the blob when next needed.
        let sources = self.layer_sources();
        let in_use = self.layers_in_use()?;
        let mut limits = None;
        for c in &layers {
            if bad_layers.contains(c) {
                continue;
            }
            let Some(blob) = sources.get(c).filter(|b| !broken.contains(&b.digest) && self.store.has(&b.digest)) else {
                continue;
            };
            let limits = match limits {
                Some(l) => l,
                None => *limits.insert(crate::settings::Settings::layer_limits()?),
            };
            let compared = berth_image::manifest::layer_compression(&blob.media_type).and_then(|comp| {
                let f = std::io::BufReader::with_capacity(256 << 10, self.store.open_blob(&blob.digest)?);
                self.layers.verify_content(c, berth_image::archive::decompress(f, comp)?, &limits)
            });
            let why = match compared {
                Ok(None) => continue,
                Ok(Some(why)) => why,
                // Not a verdict on the layer (a full disk, lower limits than at the pull): the
                // layer stays, whatever the repair.
                Err(e) => {
                    problem(format!("layer {c} could not be compared with its blob: {e:#}"), "none", false);
                    continue;
                }
            };
            let what = format!("layer {c} differs from its blob {}: {why}", blob.digest);
            match &in_use {
                None => {
                    problem(what, "none while a container's image cannot be read (see above)", false);
                    continue;
                }
                Some(users) if users.contains_key(c) => {
                    let user = &users[c];
                    problem(what, &format!("none while container {user} uses it (remove the container)"), false);
                    continue;
                }
                Some(_) => {}
            }
            let done = repair && self.layers.remove(c).is_ok();
            problem(what, "remove the layer (it is unpacked again from its blob when needed)", done);
            bad_layers.insert(c.clone());
        }
        for l in self.layers.dangling_links()? {
            let done = repair && std::fs::remove_file(&l).is_ok();
            problem(format!("{} links to a layer that is gone", l.display()), "remove the link", done);
        }

        // Images: their manifest, config and layer blobs must be there and whole.
        let containers = self.containers(true)?;
        let images = self.images()?;
        let mut keep_blobs: HashSet<Digest> = HashSet::new();
        let mut keep_layers: HashSet<Digest> = HashSet::new();
        // What broken images held: removed with them, not reported once more.
        let mut theirs: HashSet<Digest> = HashSet::new();
        for img in &images {
            let name = img
                .tags
                .first()
                .and_then(|t| berth_image::Reference::parse(t).ok())
                .map(|r| format!(" ({})", display_name(&r)))
                .unwrap_or_default();
            let missing = |d: &Digest| broken.contains(d) || !self.store.has(d);
            let mut why = None;
            if missing(&img.manifest) {
                why = Some(format!("its manifest {} is missing", img.manifest));
            } else if missing(&img.id) {
                why = Some(format!("its config {} is missing", img.id));
            }
            let m = if why.is_none() {
                match self.manifest_of(img) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        why = Some(format!("{e:#}"));
                        None
                    }
                }
            } else {
                None
            };
            let cfg = if why.is_none() {
                match self.config_of(img) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        why = Some(format!("{e:#}"));
                        None
                    }
                }
            } else {
                None
            };
            if let (Some(m), Some(cfg)) = (&m, &cfg) {
                if cfg.rootfs.diff_ids.len() != m.layers.len() {
                    why = Some("its manifest and config disagree on the number of layers".into());
                } else if let Some(l) = m.layers.iter().find(|l| missing(&l.digest)) {
                    why = Some(format!("its layer blob {} is missing", l.digest));
                }
            }
            let Some(why) = why else {
                keep_blobs.insert(img.manifest.clone());
                keep_blobs.insert(img.id.clone());
                if let (Some(m), Some(cfg)) = (m, cfg) {
                    keep_blobs.extend(m.layers.into_iter().map(|l| l.digest));
                    keep_layers.extend(chain_ids(&cfg.rootfs.diff_ids));
                }
                continue;
            };
            let users: Vec<&ContainerRow> = containers.iter().filter(|c| c.image == img.id.to_string()).collect();
            if let Some(c) = users.first() {
                // Its containers still run from the unpacked layers: keep what it has.
                keep_blobs.extend([img.manifest.clone(), img.id.clone()]);
                if let Ok(m) = self.manifest_of(img) {
                    keep_blobs.extend(m.layers.into_iter().map(|l| l.digest));
                }
                if let Ok(cfg) = self.config_of(img) {
                    keep_layers.extend(chain_ids(&cfg.rootfs.diff_ids));
                }
                problem(
                    format!("image {}{name} is broken: {why}", img.id.short()),
                    &format!("none while container {} uses it (pull the image again)", c.name),
                    false,
                );
                continue;
            }
            let done = repair && self.forget_image(&img.id).is_ok();
            problem(format!("image {}{name} is broken: {why}", img.id.short()), "remove the image", done);
            theirs.extend([img.manifest.clone(), img.id.clone()]);
            if let Ok(m) = self.manifest_of(img) {
                theirs.extend(m.layers.into_iter().map(|l| l.digest));
            }
            if let Ok(cfg) = self.config_of(img) {
                theirs.extend(chain_ids(&cfg.rootfs.diff_ids));
            }
        }
        for c in &containers {
            if !images.iter().any(|i| i.id.to_string() == c.image) {
                problem(format!("container {} uses image {}, which is gone", c.name, c.image), "none", false);
            }
        }

        // What nothing refers to: left by interrupted removals.
        for d in self.store.list()? {
            if !keep_blobs.contains(&d) && !broken.contains(&d) {
                let done = repair && self.store.remove(&d).is_ok();
                if !theirs.contains(&d) {
                    problem(format!("blob {d} belongs to no image"), "remove the blob", done);
                }
            }
        }
        for c in self.layers.list()? {
            if !keep_layers.contains(&c) && !bad_layers.contains(&c) {
                let done = repair && self.layers.remove(&c).is_ok();
                if !theirs.contains(&c) {
                    problem(format!("layer {c} belongs to no image"), "remove the layer", done);
                }
            }
        }
        // Rows about blobs that are gone.
        let sources: Vec<String> = {
            let mut st = self.db.prepare("SELECT DISTINCT digest FROM blob_sources")?;
            st.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        for s in sources {
            let gone = Digest::parse(&s).map(|d| !self.store.has(&d)).unwrap_or(true);
            if gone {
                let done = repair && self.db.execute("DELETE FROM blob_sources WHERE digest = ?1", [&s]).is_ok();
                problem(
                    format!("the database records where blob {s} came from, but it is gone"),
                    "delete the rows",
                    done,
                );
            }
        }
        // Temp files of processes that died.
        for dir in [self.store.root().join("tmp"), self.layers.root().join("tmp")] {
            for p in crate::pull::stale_tmp(&dir, &[]) {
                let done = repair && berth_storage::remove_tree(&p).is_ok();
                problem(format!("{} was left by an interrupted operation", p.display()), "remove it", done);
            }
        }
        Ok(CheckReport { blobs: blobs.len(), layers: layers.len(), images: images.len(), problems })
    }

    /// Removes an image's rows (tags, repo digests) without touching the store.
    fn forget_image(&self, id: &Digest) -> Result<()> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute("DELETE FROM tags WHERE image = ?1", [id.to_string()])?;
        tx.execute("DELETE FROM images WHERE id = ?1", [id.to_string()])?;
        tx.commit()?;
        Ok(())
    }
}
