//! Layers by chain id, each unpacked once and shared by every image and container above it.
//!
//! ```text
//! <root>/layers/<chain hex>/diff      the unpacked layer (overlay lower dir)
//! <root>/layers/<chain hex>/layer.json  diff id, parent chain id, size
//! <root>/l/<short id>  -> ../layers/<chain hex>/diff  (short names keep overlay's mount
//!                                                     options under a page for deep stacks)
//! ```
//! A layer is unpacked in `<root>/tmp/` and renamed into place only once its diff id checked
//! out, so an interrupted pull leaves nothing that looks like a layer. Unpacked files are not
//! fsynced one by one (thousands of journal commits); a layer is derived data, made again from
//! its verified blob in the content store when it is missing.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_image::Digest;
use berth_image::digest::HashReader;

use crate::unpack::{self, Limits, Stats};

#[derive(Debug, Clone)]
pub struct Layers {
    root: PathBuf,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerMeta {
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    pub size: u64,
    pub entries: u64,
    /// The size of the layer's tar stream (uncompressed); missing in layers unpacked before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_size: Option<u64>,
}

/// The short link name of a chain id.
fn short(chain: &Digest) -> String {
    format!("{}{}", &chain.algo.name()[3..], &chain.hex[..24])
}

impl Layers {
    pub fn open(root: &Path) -> Result<Layers> {
        for d in ["layers", "l", "tmp"] {
            fs::create_dir_all(root.join(d)).with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        Ok(Layers { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, chain: &Digest) -> PathBuf {
        self.root.join("layers").join(format!("{}-{}", chain.algo.name(), chain.hex))
    }

    pub fn has(&self, chain: &Digest) -> bool {
        self.dir(chain).join("layer.json").exists()
    }

    pub fn meta(&self, chain: &Digest) -> Result<LayerMeta> {
        let p = self.dir(chain).join("layer.json");
        serde_json::from_slice(&fs::read(&p).with_context(|| format!("layer {chain} is not unpacked"))?)
            .context("reading layer.json")
    }

    /// The lower dir overlay mounts for this layer (through its short link).
    pub fn lower_path(&self, chain: &Digest) -> PathBuf {
        self.root.join("l").join(short(chain))
    }

    pub fn diff_path(&self, chain: &Digest) -> PathBuf {
        self.dir(chain).join("diff")
    }

    /// Unpacks the uncompressed tar `r` as layer `chain` on top of `parent`, checking that the
    /// tar's digest is `diff_id`. Does nothing when the layer is already there.
    pub fn add(
        &self,
        chain: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
        r: impl Read,
        limits: &Limits,
    ) -> Result<Stats> {
        if self.has(chain) {
            return Ok(Stats::default());
        }
        let tmp = tempdir_in(&self.root.join("tmp"), "layer")?;
        let diff = tmp.0.join("diff");
        fs::create_dir(&diff)?;
        let mut hr = HashReader::new(r, diff_id.algo);
        let stats = unpack::unpack(&mut hr, &diff, limits)?;
        // The tar may end before the stream does (padding): hash to the end.
        std::io::copy(&mut hr, &mut std::io::sink()).context("reading the end of the layer")?;
        let (got, tar_size) = hr.finish();
        self.place(tmp, chain, parent, diff_id, stats, got, tar_size)
    }

    /// [`Layers::add`] for a stream whose digest someone else computes (a thread of its own,
    /// in a pull): `digest` is called once `r` is read to its end and dropped, and gives the
    /// stream's digest and size.
    pub fn add_hashed_elsewhere<R: Read>(
        &self,
        chain: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
        mut r: R,
        limits: &Limits,
        digest: impl FnOnce() -> Result<(Digest, u64)>,
    ) -> Result<Stats> {
        if self.has(chain) {
            std::io::copy(&mut r, &mut std::io::sink()).context("reading the layer")?;
            drop(r);
            digest()?;
            return Ok(Stats::default());
        }
        let tmp = tempdir_in(&self.root.join("tmp"), "layer")?;
        let diff = tmp.0.join("diff");
        fs::create_dir(&diff)?;
        let stats = unpack::unpack(&mut r, &diff, limits)?;
        std::io::copy(&mut r, &mut std::io::sink()).context("reading the end of the layer")?;
        drop(r);
        let (got, tar_size) = digest()?;
        self.place(tmp, chain, parent, diff_id, stats, got, tar_size)
    }

    /// Checks the unpacked layer in `tmp` against its diff id and renames it into place.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        tmp: TmpDir,
        chain: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
        stats: Stats,
        got: Digest,
        tar_size: u64,
    ) -> Result<Stats> {
        if got != *diff_id {
            bail!("layer content does not match its diff id: the image config says {diff_id}, the layer is {got}");
        }
        let meta = LayerMeta {
            diff_id: diff_id.clone(),
            parent: parent.cloned(),
            size: stats.bytes,
            entries: stats.entries,
            tar_size: Some(tar_size),
        };
        fs::write(tmp.0.join("layer.json"), serde_json::to_vec(&meta)?)?;
        let dest = self.dir(chain);
        // The short link overlay mounts through goes in first, and atomically (its target is
        // the same whoever unpacks): a layer that looks present (`has`) always has it. Made
        // after the rename, a concurrent start that found the layer in place could mount
        // before the link existed (ENOENT), as 50 parallel first runs of an image showed.
        let link = self.lower_path(chain);
        let pending = link.with_file_name(format!(
            ".{}-{}",
            link.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = fs::remove_file(&pending);
        std::os::unix::fs::symlink(
            Path::new("../layers").join(dest.file_name().unwrap_or_default()).join("diff"),
            &pending,
        )
        .context("linking the layer")?;
        fs::rename(&pending, &link).context("linking the layer")?;
        match fs::rename(&tmp.0, &dest) {
            Ok(()) => {}
            // Someone else unpacked the same layer meanwhile: theirs is as good as ours.
            Err(_) if self.has(chain) => return Ok(stats),
            Err(e) => return Err(e).with_context(|| format!("moving layer {chain} into place")),
        }
        std::mem::forget(tmp);
        Ok(stats)
    }

    /// Removes a layer (the caller knows nothing uses it).
    pub fn remove(&self, chain: &Digest) -> Result<()> {
        let _ = fs::remove_file(self.lower_path(chain));
        let dir = self.dir(chain);
        if !dir.exists() {
            return Ok(());
        }
        // Rename first, so a half-removed layer never looks complete.
        let trash = self.root.join("tmp").join(format!("rm-{}-{}", chain.hex, std::process::id()));
        fs::rename(&dir, &trash).with_context(|| format!("removing layer {chain}"))?;
        remove_tree(&trash)
    }

    /// Every layer present, by chain id.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("layers"))? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Some((a, h)) = name.split_once('-')
                && let Ok(d) = Digest::parse(&format!("{a}:{h}"))
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// What is wrong with layer `chain` as stored (None: it looks whole). Its content is not
    /// re-hashed: that would take a pass over every file.
    pub fn verify(&self, chain: &Digest) -> Option<String> {
        let dir = self.dir(chain);
        let meta = match fs::read(dir.join("layer.json")) {
            Err(e) => return Some(format!("its layer.json is unreadable ({e})")),
            Ok(b) => b,
        };
        if let Err(e) = serde_json::from_slice::<LayerMeta>(&meta) {
            return Some(format!("its layer.json is malformed ({e})"));
        }
        match fs::symlink_metadata(dir.join("diff")) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some("its diff is not a directory".into()),
            Err(e) => Some(format!("its diff directory is missing ({e})")),
        }
    }

    /// Whether layer `chain`'s files are still what its tar `r` (uncompressed) unpacks to:
    /// None, or the first difference. The tar is unpacked again in the temp dir, compared, and
    /// removed.
    pub fn verify_content(&self, chain: &Digest, r: impl Read, limits: &Limits) -> Result<Option<String>> {
        let tmp = tempdir_in(&self.root.join("tmp"), "verify")?;
        unpack::unpack(r, &tmp.0, limits).context("unpacking the layer's tar again")?;
        crate::verify::compare_trees(&self.diff_path(chain), &tmp.0)
    }

    /// Whether the short link of `chain` points at its diff.
    pub fn link_ok(&self, chain: &Digest) -> bool {
        let name = self.dir(chain).file_name().map(|n| n.to_os_string()).unwrap_or_default();
        fs::read_link(self.lower_path(chain)).is_ok_and(|t| t == Path::new("../layers").join(name).join("diff"))
    }

    /// Makes the short link of `chain` again.
    pub fn relink(&self, chain: &Digest) -> Result<()> {
        let link = self.lower_path(chain);
        let _ = fs::remove_file(&link);
        let name = self.dir(chain).file_name().map(|n| n.to_os_string()).unwrap_or_default();
        std::os::unix::fs::symlink(Path::new("../layers").join(name).join("diff"), &link).context("linking the layer")
    }

    /// Short links whose layer is gone.
    pub fn dangling_links(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("l"))? {
            let p = e?.path();
            if fs::metadata(&p).is_err() {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Removes what interrupted operations left in tmp/.
    pub fn clean_tmp(&self) -> Result<()> {
        for e in fs::read_dir(self.root.join("tmp"))? {
            let _ = remove_tree(&e?.path());
        }
        Ok(())
    }
}

pub(crate) struct TmpDir(pub PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

pub(crate) fn tempdir_in(dir: &Path, prefix: &str) -> Result<TmpDir> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!("{prefix}-{}-{n}", std::process::id()));
    let _ = remove_tree(&p);
    fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(TmpDir(p))
}

/// rm -rf that never follows symlinks and copes with read-only directories from layers.
pub fn remove_tree(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(m) if !m.is_dir() => return Ok(fs::remove_file(p)?),
        Ok(_) => {}
    }
    let fd = unpack::open_dir(p)?;
    unpack::remove_tree_fd(fd)?;
    fs::remove_dir(p).with_context(|| format!("removing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_layer_is_placed_only_when_its_digest_is_its_diff_id() {
        let t = tempfile::tempdir().unwrap();
        let l = Layers::open(t.path()).unwrap();
        let tar = tar_of("f", b"x");
        let good = Digest::sha256_of(&tar);
        let wrong = Digest::sha256_of(b"something else");
        // Hashed elsewhere, and that hash says something else: refused, nothing left.
        let e = l
            .add_hashed_elsewhere(&wrong, None, &wrong, &tar[..], &Limits::default(), || Ok((good.clone(), 3)))
            .unwrap_err();
        assert!(e.to_string().contains("does not match its diff id"), "{e}");
        assert!(!l.has(&wrong));
        assert_eq!(fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
        let s = l
            .add_hashed_elsewhere(&good, None, &good, &tar[..], &Limits::default(), || {
                Ok((good.clone(), tar.len() as u64))
            })
            .unwrap();
        assert_eq!(s.entries, 1);
        assert!(l.has(&good) && l.verify(&good).is_none() && l.link_ok(&good));
        assert_eq!(l.meta(&good).unwrap().tar_size, Some(tar.len() as u64));
        assert_eq!(fs::read(l.diff_path(&good).join("f")).unwrap(), b"x");
        // The same through add, which hashes itself.
        let e = l.add(&wrong, None, &wrong, &tar[..], &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("does not match its diff id"), "{e}");
    }
}
