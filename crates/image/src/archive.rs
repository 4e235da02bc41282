//! Image archives: `berth load` (oci-archive / OCI layout tars and `docker save` tars),
//! `berth import` (a root filesystem tar becomes a one-layer image) and `berth save` (both
//! formats back). Streams every blob straight into or out of the store; only the small JSON
//! documents are held in memory.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::digest::HashReader;
use crate::manifest::{self, Compression, Descriptor, Document, ImageConfig, Manifest, Platform, media};
use crate::{Digest, Store};

const MAX_JSON: u64 = 8 << 20;

/// One image found in an archive: its manifest (now in the store) and the name it was saved as.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: Option<String>,
    pub manifest: Digest,
}

/// Reads a tar archive (optionally gzip-compressed) of an OCI layout or a `docker save`.
pub fn load(r: impl Read, store: &Store, platform: &Platform) -> Result<Vec<Loaded>> {
    let mut br = BufReader::with_capacity(256 << 10, r);
    let compression = sniff(&mut br)?;
    let mut ar = tar::Archive::new(decompress(br, compression)?);
    let mut files: HashMap<String, (Digest, i64)> = HashMap::new();
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    for e in ar.entries().context("reading the archive")? {
        let mut e = e.context("reading the archive")?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path()?.to_string_lossy().trim_start_matches("./").to_string();
        if matches!(path.as_str(), "index.json" | "manifest.json" | "oci-layout" | "repositories") {
            if e.size() > MAX_JSON {
                bail!("{path} in the archive is too large ({} bytes)", e.size());
            }
            let mut v = Vec::new();
            e.read_to_end(&mut v)?;
            json.insert(path, v);
            continue;
        }
        // Blobs named by digest are verified against their name; other files are hashed.
        let expected = path
            .strip_prefix("blobs/")
            .and_then(|p| p.split_once('/'))
            .and_then(|(a, h)| Digest::parse(&format!("{a}:{h}")).ok());
        let (d, n) =
            store.put(&mut e, expected.as_ref()).with_context(|| format!("storing {path} from the archive"))?;
        files.insert(path, (d, n as i64));
    }
    if let Some(idx) = json.get("index.json") {
        let Document::Index(index) = manifest::parse_document(idx, Some(media::OCI_INDEX))? else { unreachable!() };
        let mut out = Vec::new();
        for desc in &index.manifests {
            let name = desc
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| desc.annotations.get("org.opencontainers.image.ref.name"))
                .cloned();
            let manifest = resolve_platform(store, desc, platform)?;
            check_complete(store, &manifest)?;
            out.push(Loaded { name, manifest });
        }
        if out.is_empty() {
            bail!("the archive's index.json lists no images");
        }
        return Ok(out);
    }
    if let Some(m) = json.get("manifest.json") {
        return load_docker(m, &files, store);
    }
    bail!("this is not an image archive: it has neither index.json (OCI) nor manifest.json (docker save)")
}

/// Follows an index to the manifest for `platform`.
fn resolve_platform(store: &Store, desc: &Descriptor, platform: &Platform) -> Result<Digest> {
    let mut d = desc.clone();
    for _ in 0..4 {
        let bytes =
            store.read(&d.digest).with_context(|| format!("manifest {} is missing from the archive", d.digest))?;
        match manifest::parse_document(&bytes, Some(&d.media_type))? {
            Document::Manifest(_) => return Ok(d.digest),
            Document::Index(i) => d = i.select(platform)?.clone(),
        }
    }
    bail!("image indexes nested too deeply")
}

/// Every blob a manifest names must be in the store and parse.
pub fn check_complete(store: &Store, manifest: &Digest) -> Result<Manifest> {
    let Document::Manifest(m) = manifest::parse_document(&store.read(manifest)?, None)? else {
        bail!("{manifest} is an index, not a manifest")
    };
    let cfg = ImageConfig::parse(&store.read(&m.config.digest)?)?;
    if cfg.rootfs.diff_ids.len() != m.layers.len() {
        bail!(
            "image {manifest}: the config lists {} layers but the manifest {}",
            cfg.rootfs.diff_ids.len(),
            m.layers.len()
        );
    }
    for l in &m.layers {
        manifest::layer_compression(&l.media_type)?;
        if !store.has(&l.digest) {
            bail!("layer {} of image {manifest} is missing", l.digest);
        }
        if l.size >= 0 && store.size(&l.digest) != l.size as u64 {
            bail!(
                "layer {} of image {manifest}: the manifest says {} bytes, the blob has {}",
                l.digest,
                l.size,
                store.size(&l.digest)
            );
        }
    }
    Ok(m)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn load_docker(m: &[u8], files: &HashMap<String, (Digest, i64)>, store: &Store) -> Result<Vec<Loaded>> {
    let entries: Vec<DockerSaveEntry> = serde_json::from_slice(m).context("malformed manifest.json in the archive")?;
    let get = |p: &str| {
        files.get(p).cloned().with_context(|| format!("{p} is named by manifest.json but missing from the archive"))
    };
    let mut out = Vec::new();
    for e in entries {
        let (cd, cs) = get(&e.config)?;
        ImageConfig::parse(&store.read(&cd)?)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, s) = get(l)?;
            let mut f = BufReader::new(store.open_blob(&d)?);
            let mt = match sniff(&mut f)? {
                Compression::None => media::OCI_LAYER,
                Compression::Gzip => media::OCI_LAYER_GZIP,
                Compression::Zstd => media::OCI_LAYER_ZSTD,
            };
            layers.push(Descriptor::new(mt, d, s));
        }
        let manifest = put_manifest(store, Descriptor::new(media::OCI_CONFIG, cd, cs), layers)?;
        check_complete(store, &manifest)?;
        match e.repo_tags.filter(|t| !t.is_empty()) {
            Some(tags) => out.extend(tags.into_iter().map(|t| Loaded { name: Some(t), manifest: manifest.clone() })),
            None => out.push(Loaded { name: None, manifest }),
        }
    }
    Ok(out)
}

/// Writes an OCI manifest for `config` and `layers` into the store.
pub fn put_manifest(store: &Store, config: Descriptor, layers: Vec<Descriptor>) -> Result<Digest> {
    let m = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config,
        layers,
        annotations: Default::default(),
    };
    store.put_bytes(&serde_json::to_vec(&m)?)
}

/// `berth import`: a root filesystem tar (plain, gzip or zstd) becomes a one-layer image.
/// Returns the new manifest's digest.
pub fn import(
    r: impl Read,
    store: &Store,
    created: &str,
    change_note: &str,
    config: serde_json::Value,
) -> Result<Digest> {
    let mut br = BufReader::with_capacity(256 << 10, r);
    let compression = sniff(&mut br)?;
    // Store the blob as given, hashing the uncompressed stream on the way for the diff id.
    let tmp = store.root().join("tmp").join(format!("import-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let mut f = std::fs::File::create(&tmp)?;
    std::io::copy(&mut br, &mut f).context("reading the tar to import")?;
    drop(f);
    let mut hr = crate::digest::HashReader::new(
        decompress(BufReader::new(std::fs::File::open(&tmp)?), compression)?,
        crate::Algo::Sha256,
    );
    let mut ar = tar::Archive::new(&mut hr);
    for e in ar.entries().context("the file to import is not a tar archive")? {
        e.context("the file to import is not a valid tar archive")?;
    }
    std::io::copy(&mut hr, &mut std::io::sink())?;
    let (diff_id, _) = hr.finish();
    let (blob, size) = store.put(std::fs::File::open(&tmp)?, None)?;
    let platform = Platform::host();
    let config = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "berth import", "comment": change_note}],
    });
    let cbytes = serde_json::to_vec(&config)?;
    let cd = store.put_bytes(&cbytes)?;
    let mt = match compression {
        Compression::None => media::OCI_LAYER,
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    };
    put_manifest(
        store,
        Descriptor::new(media::OCI_CONFIG, cd, cbytes.len() as i64),
        vec![Descriptor::new(mt, blob, size as i64)],
    )
}

struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Looks at the first bytes of a stream to tell gzip and zstd from plain data.
pub fn sniff(r: &mut impl BufRead) -> Result<Compression> {
    let b = r.fill_buf().context("reading")?;
    Ok(if b.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// A reader that undoes `c`.
pub fn decompress<'a>(r: impl BufRead + 'a, c: Compression) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r).context("starting zstd")?),
    })
}

/// One image for [`save_docker`] / [`save_oci`].
#[derive(Debug, Clone)]
pub struct SaveItem {
    /// The manifest in the store.
    pub manifest: Digest,
    /// The names it is saved under: (full reference, as Docker shows it, tag).
    pub names: Vec<(String, String, String)>,
    /// The uncompressed size of each layer's tar when known (saves a pass over the layer).
    pub tar_sizes: Vec<Option<u64>>,
}

/// Writes tar entries with fixed metadata (root-owned, mtime 0, so the same images give the
/// same archive).
struct TarOut<W: Write> {
    b: tar::Builder<W>,
    written: HashSet<String>,
}

impl<W: Write> TarOut<W> {
    fn new(w: W) -> Self {
        let mut t = TarOut { b: tar::Builder::new(w), written: HashSet::new() };
        t.b.mode(tar::HeaderMode::Deterministic);
        t
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        if self.written.insert(path.to_string()) {
            self.b.append_data(&mut Self::header(tar::EntryType::Directory, 0), path, std::io::empty())?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, size: u64, r: impl Read) -> Result<()> {
        if self.written.insert(path.to_string()) {
            self.b.append_data(&mut Self::header(tar::EntryType::Regular, size), path, r)?;
        }
        Ok(())
    }

    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.file(path, data.len() as u64, data)
    }

    /// A blob of the store, as `blobs/<algo>/<hex>`.
    fn blob(&mut self, store: &Store, d: &Digest) -> Result<String> {
        let path = format!("blobs/{}/{}", d.algo.name(), d.hex);
        if !self.written.contains(&path) {
            self.dir("blobs/")?;
            self.dir(&format!("blobs/{}/", d.algo.name()))?;
            // Read through the hash: a blob that rotted in the store fails the save.
            let f = store.open_blob(d)?;
            let size = f.metadata()?.len();
            let mut hr = HashReader::new(Exact { r: BufReader::with_capacity(256 << 10, f), left: size }, d.algo);
            self.file(&path, size, &mut hr).with_context(|| format!("writing blob {d}"))?;
            if hr.finish().0 != *d {
                bail!("blob {d} in the store is corrupt (run `berth system check`)");
            }
        }
        Ok(path)
    }

    fn finish(mut self) -> Result<()> {
        self.b.finish().context("finishing the archive")?;
        self.b.get_mut().flush().context("writing the archive")?;
        Ok(())
    }
}

/// Reads exactly `left` bytes of `r`: fewer is an error, and so is more afterwards.
struct Exact<R> {
    r: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut one = [0u8; 1];
            return match self.r.read(&mut one)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other("the stream is longer than its recorded size")),
            };
        }
        let cap = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.r.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the stream ended early"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn stored_manifest(store: &Store, d: &Digest) -> Result<(Manifest, Vec<u8>)> {
    let bytes = store.read(d)?;
    match manifest::parse_document(&bytes, None)? {
        Document::Manifest(m) => Ok((m, bytes)),
        Document::Index(_) => bail!("{d} is an index, not an image manifest"),
    }
}

fn index_entry(media_type: &str, digest: &Digest, size: usize, name: Option<&(String, String, String)>) -> Value {
    let mut e = json!({"mediaType": media_type, "digest": digest.to_string(), "size": size});
    if let Some((full, _, tag)) = name {
        e["annotations"] = json!({"io.containerd.image.name": full, "org.opencontainers.image.ref.name": tag});
    }
    e
}

fn finish_layout<W: Write>(mut out: TarOut<W>, index: Vec<Value>) -> Result<()> {
    out.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": index});
    out.bytes("index.json", &serde_json::to_vec(&index)?)?;
    out.finish()
}

/// `berth save` (Docker's format since Docker 25): the layers as uncompressed tars named by
/// their diff ids (each checked against it on the way), the configs, an OCI manifest per
/// image over them, `index.json` + `oci-layout`, and `manifest.json` for `docker load`.
pub fn save_docker(store: &Store, items: &[SaveItem], w: impl Write) -> Result<()> {
    let mut out = TarOut::new(w);
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for item in items {
        let (m, _) = stored_manifest(store, &item.manifest)?;
        let cfg = ImageConfig::parse(&store.read(&m.config.digest)?)?;
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            bail!(
                "image {}: the config lists {} layers but the manifest {}",
                m.config.digest,
                cfg.rootfs.diff_ids.len(),
                m.layers.len()
            );
        }
        let config_path = out.blob(store, &m.config.digest)?;
        let mut layer_paths = Vec::new();
        let mut layers = Vec::new();
        for (i, (l, diff)) in m.layers.iter().zip(&cfg.rootfs.diff_ids).enumerate() {
            let path = format!("blobs/{}/{}", diff.algo.name(), diff.hex);
            let open = || -> Result<Box<dyn Read>> {
                let f = BufReader::with_capacity(256 << 10, store.open_blob(&l.digest)?);
                decompress(f, manifest::layer_compression(&l.media_type)?)
            };
            let size = match item.tar_sizes.get(i).copied().flatten() {
                Some(n) => n,
                None => std::io::copy(&mut open()?, &mut std::io::sink())
                    .with_context(|| format!("reading layer {}", l.digest))?,
            };
            if !out.written.contains(&path) {
                let mut hr = HashReader::new(Exact { r: open()?, left: size }, diff.algo);
                out.file(&path, size, &mut hr).with_context(|| format!("writing layer {}", l.digest))?;
                let (got, _) = hr.finish();
                if got != *diff {
                    bail!(
                        "layer {} does not match its diff id {diff} (it is {got}): run `berth system check`",
                        l.digest
                    );
                }
            }
            layers.push(Descriptor::new(media::OCI_LAYER, diff.clone(), size as i64));
            layer_paths.push(path);
        }
        let om = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new(media::OCI_CONFIG, m.config.digest.clone(), m.config.size),
            layers,
            annotations: Default::default(),
        };
        let mbytes = serde_json::to_vec(&om)?;
        let md = Digest::sha256_of(&mbytes);
        out.bytes(&format!("blobs/{}/{}", md.algo.name(), md.hex), &mbytes)?;
        if item.names.is_empty() {
            index.push(index_entry(media::OCI_MANIFEST, &md, mbytes.len(), None));
        }
        for n in &item.names {
            index.push(index_entry(media::OCI_MANIFEST, &md, mbytes.len(), Some(n)));
        }
        let tags: Vec<&str> = item.names.iter().map(|(_, shown, _)| shown.as_str()).collect();
        docker.push(json!({
            "Config": config_path,
            "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
            "Layers": layer_paths,
        }));
    }
    out.bytes("manifest.json", &serde_json::to_vec(&docker)?)?;
    finish_layout(out, index)
}

/// `berth save --format oci-archive`: an OCI layout of the images exactly as stored (their
/// manifests and compressed blobs, so digests stay those of the registry).
pub fn save_oci(store: &Store, items: &[SaveItem], w: impl Write) -> Result<()> {
    let mut out = TarOut::new(w);
    let mut index = Vec::new();
    for item in items {
        let (m, bytes) = stored_manifest(store, &item.manifest)?;
        for l in m.layers.iter().chain([&m.config]) {
            out.blob(store, &l.digest)?;
        }
        out.blob(store, &item.manifest)?;
        let mt = m.media_type.clone().unwrap_or_else(|| media::OCI_MANIFEST.into());
        if item.names.is_empty() {
            index.push(index_entry(&mt, &item.manifest, bytes.len(), None));
        }
        for n in &item.names {
            index.push(index_entry(&mt, &item.manifest, bytes.len(), Some(n)));
        }
    }
    finish_layout(out, index)
}
