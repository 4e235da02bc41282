//! The image a build step starts from and the one it makes: its config JSON (edited as JSON,
//! so fields berth does not model survive), its layers, and the commit of a new image (config
//! blob, manifest, `images` row) after each step, as Docker's classic builder does.

use anyhow::{Context, Result, bail};
use berth_image::manifest::{Descriptor, Document, Manifest, chain_ids, media};
use berth_image::{Digest, archive};
use serde_json::{Value, json};

use crate::Engine;
use crate::layer::NewLayer;

/// How the final image's manifest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// An OCI image manifest (the store's own format).
    #[default]
    Oci,
    /// A Docker schema 2 manifest (Docker's media types).
    Docker,
}

/// An image in the store, as a build sees it.
#[derive(Debug, Clone)]
pub(crate) struct Img {
    pub id: Digest,
    pub config: Value,
    pub layers: Vec<Descriptor>,
}

impl Img {
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().and_then(|s| Digest::parse(s).ok()))
            .collect()
    }

    pub fn chains(&self) -> Vec<Digest> {
        chain_ids(&self.diff_ids())
    }

    /// The container settings part (`config`), an object.
    pub fn cc(&self) -> &Value {
        &self.config["config"]
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
    }

    /// `Env` as ordered pairs.
    pub fn env(&self) -> Vec<(String, String)> {
        Self::strings(&self.cc()["Env"])
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e, String::new()),
            })
            .collect()
    }

    pub fn shell(&self) -> Vec<String> {
        let s = Self::strings(&self.cc()["Shell"]);
        if s.is_empty() { vec!["/bin/sh".into(), "-c".into()] } else { s }
    }

    pub fn workdir(&self) -> String {
        self.cc()["WorkingDir"].as_str().unwrap_or("").to_string()
    }

    pub fn onbuild(&self) -> Vec<String> {
        Self::strings(&self.cc()["OnBuild"])
    }

    /// The short id Docker prints (12 hex digits).
    pub fn short(&self) -> &str {
        self.id.short()
    }
}

/// The config of an empty image (`FROM scratch`).
pub(crate) fn scratch_config() -> Value {
    let p = berth_image::Platform::host();
    let mut c = json!({
        "architecture": p.architecture,
        "os": p.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    });
    if let Some(v) = p.variant.filter(|_| c["architecture"] != "arm64") {
        c["variant"] = json!(v);
    }
    c
}

/// Makes `v[key]` an object if it is not one, and returns it.
pub(crate) fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut serde_json::Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    match v[key].as_object_mut() {
        Some(m) => m,
        None => unreachable!("just made an object"),
    }
}

/// Sets (or replaces) `key` in the `Env` list, keeping the order of the others.
pub(crate) fn set_env(cc: &mut Value, key: &str, value: &str) {
    let mut env: Vec<String> = Img::strings(&cc["Env"]);
    let entry = format!("{key}={value}");
    match env.iter().position(|e| e.split('=').next() == Some(key)) {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
    cc["Env"] = json!(env);
}

/// What a step adds to the history.
pub(crate) struct HistoryEntry {
    pub created_by: String,
    pub empty_layer: bool,
    /// The step's cache key without its parent image: in the entry's comment, it lets
    /// `--cache-from` reuse the step from an image's history (see Builder::step_from_cache_images).
    pub step: String,
}

/// The comment of a history entry of step key `step`.
pub(crate) fn step_comment(step: &str) -> String {
    if step.is_empty() { "berth build".into() } else { format!("berth build {step}") }
}

impl Engine {
    /// An image of the store by id, with its config and layers.
    pub(crate) fn load_img(&self, id: &str) -> Result<Img> {
        let row = self.resolve_image(id)?;
        let config: Value = serde_json::from_slice(&self.store.read(&row.id)?)
            .with_context(|| format!("reading the config of image {}", row.id.short()))?;
        let layers = match berth_image::manifest::parse_document(&self.store.read(&row.manifest)?, None)? {
            Document::Manifest(m) => m.layers,
            Document::Index(_) => bail!("image {} points at an index", row.id),
        };
        Ok(Img { id: row.id, config, layers })
    }

    /// Makes the image `config` (and `layer` on top of `parent`'s layers) with `history`
    /// appended, registers it (untagged) and returns it. The layer must be in the store.
    pub(crate) fn commit_img(
        &self,
        parent: &Img,
        config: Value,
        layer: Option<&NewLayer>,
        history: Option<HistoryEntry>,
        created: &str,
    ) -> Result<Img> {
        let layer =
            layer.map(|l| (Descriptor::new(media::OCI_LAYER_GZIP, l.blob.clone(), l.size as i64), l.diff_id.clone()));
        let entry = history.map(|h| {
            let mut entry = json!({"created": created, "created_by": h.created_by, "comment": step_comment(&h.step)});
            if h.empty_layer {
                entry["empty_layer"] = json!(true);
            }
            entry
        });
        self.commit_entry(parent, config, layer, entry)
    }

    /// [`Engine::commit_img`] with the layer (its descriptor and diff id, blob in the store) and
    /// the history entry as they are: `--cache-from` takes both from another image.
    pub(crate) fn commit_entry(
        &self,
        parent: &Img,
        mut config: Value,
        layer: Option<(Descriptor, Digest)>,
        entry: Option<Value>,
    ) -> Result<Img> {
        let mut layers = parent.layers.clone();
        for d in &mut layers {
            // The store keeps one OCI manifest per image: Docker's types become their twins.
            if d.media_type == media::DOCKER_LAYER_GZIP {
                d.media_type = media::OCI_LAYER_GZIP.into();
            }
        }
        if let Some((mut desc, diff_id)) = layer {
            if !config["rootfs"]["diff_ids"].is_array() {
                config["rootfs"] = json!({"type": "layers", "diff_ids": []});
            }
            if let Some(d) = config["rootfs"]["diff_ids"].as_array_mut() {
                d.push(json!(diff_id.to_string()));
            }
            if desc.media_type == media::DOCKER_LAYER_GZIP {
                desc.media_type = media::OCI_LAYER_GZIP.into();
            }
            layers.push(desc);
        }
        if let Some(entry) = entry {
            config["created"] = entry["created"].clone();
            match config["history"].as_array_mut() {
                Some(a) => a.push(entry),
                None => config["history"] = json!([entry]),
            }
        }
        let bytes = serde_json::to_vec(&config)?;
        let cd = self.store.put_bytes(&bytes)?;
        let m = archive::put_manifest(
            &self.store,
            Descriptor::new(media::OCI_CONFIG, cd, bytes.len() as i64),
            layers.clone(),
        )?;
        let id = self.register(&m, None)?;
        Ok(Img { id, config, layers })
    }

    /// Rewrites the image's manifest in `format` (same config, same blobs: the image id stays)
    /// when the stored one is in the other format.
    pub(crate) fn set_format(&self, img: &Img, format: ImageFormat) -> Result<()> {
        let row = self.resolve_image(&img.id.to_string())?;
        let stored = self.manifest_of(&row)?;
        let docker = stored.media_type.as_deref() == Some(media::DOCKER_MANIFEST);
        if docker == (format == ImageFormat::Docker) {
            return Ok(());
        }
        let (mt, ct, lt) = match format {
            ImageFormat::Docker => (media::DOCKER_MANIFEST, media::DOCKER_CONFIG, media::DOCKER_LAYER_GZIP),
            ImageFormat::Oci => (media::OCI_MANIFEST, media::OCI_CONFIG, media::OCI_LAYER_GZIP),
        };
        let m = Manifest {
            schema_version: 2,
            media_type: Some(mt.into()),
            config: Descriptor::new(ct, stored.config.digest.clone(), stored.config.size),
            layers: stored.layers.iter().map(|l| Descriptor::new(lt, l.digest.clone(), l.size)).collect(),
            annotations: Default::default(),
        };
        let d = self.store.put_bytes(&serde_json::to_vec(&m)?)?;
        archive::check_complete(&self.store, &d)?;
        self.db.execute(
            "UPDATE images SET manifest = ?2 WHERE id = ?1",
            rusqlite::params![row.id.to_string(), d.to_string()],
        )?;
        Ok(())
    }
}

/// `80`, `80/tcp`, `53/UDP`, `8000-8002` -> Docker's `ExposedPorts` keys.
pub(crate) fn exposed_ports(spec: &str) -> Result<Vec<String>> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        bail!("invalid proto: {proto}");
    }
    // An ip:host:container mapping is not for EXPOSE; Docker keeps only the container port.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let num = |s: &str| s.parse::<u16>().map_err(|_| anyhow::anyhow!("invalid containerPort: {s}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if hi < lo {
        bail!("invalid range specified for containerPort: {ports}");
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_specs() {
        assert_eq!(exposed_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(exposed_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(exposed_ports("8000-8002").unwrap(), vec!["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert!(exposed_ports("http").is_err());
        assert!(exposed_ports("80/ftp").is_err());
        assert!(exposed_ports("9-1").is_err());
    }

    #[test]
    fn env_edits_keep_order() {
        let mut cc = json!({"Env": ["PATH=/bin", "A=1"]});
        set_env(&mut cc, "PATH", "/usr/bin");
        set_env(&mut cc, "B", "x=y");
        assert_eq!(cc["Env"], json!(["PATH=/usr/bin", "A=1", "B=x=y"]));
        let img = Img { id: Digest::sha256_of(b""), config: json!({"config": cc}), layers: vec![] };
        assert_eq!(img.env()[2], ("B".to_string(), "x=y".to_string()));
        assert_eq!(img.shell(), vec!["/bin/sh", "-c"]);
    }
}
