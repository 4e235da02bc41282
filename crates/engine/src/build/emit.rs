//! COPY, ADD and WORKDIR write their layer directly: tar entries made from the sources (and
//! the image's directories they land in), gzipped into the store as they are made. No file is
//! created on disk for them (file creation is the slow part of a copy), and the layer holds
//! exactly what the step adds. Where things land is decided on a read-only view of the image:
//! a destination is resolved inside it (its symlinks followed, never out of it), and every
//! directory on the way is written with the image's own mode, owner and time, so the layer
//! changes nothing it does not mean to.

use std::collections::HashSet;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_image::digest::Hasher;
use berth_image::{Algo, Store};
use berth_runtime::safepath;

use super::tree::{self, CopyOpts, Source};
use crate::layer::{HashWriter, NewLayer};

/// An entry's metadata as it goes into the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

impl Meta {
    pub fn of(st: &libc::stat) -> Meta {
        Meta { mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid, mtime: st.st_mtime }
    }
}

type Gz = flate2::write::GzEncoder<BufWriter<std::fs::File>>;

/// A layer being written, with the image root it lands in (for where and on what).
pub(crate) struct LayerOut {
    b: tar::Builder<HashWriter<Gz>>,
    file: tempfile::NamedTempFile,
    /// The image's root (a read-only view), and its path as the kernel names it.
    view: RawFd,
    view_path: PathBuf,
    epoch: Option<i64>,
    now: i64,
    dirs: HashSet<String>,
    pub entries: u64,
}

/// `a/b` -> `/a/b`, for messages.
fn shown(path: &str) -> String {
    format!("/{path}")
}

impl LayerOut {
    pub fn new(tmp: &Path, view: RawFd, epoch: Option<i64>) -> Result<LayerOut> {
        let file = tempfile::NamedTempFile::new_in(tmp).context("creating a temp file for the layer")?;
        let gz = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(256 << 10, file.reopen()?),
            flate2::Compression::new(6),
        );
        let mut b = tar::Builder::new(HashWriter { inner: gz, hasher: Hasher::new(Algo::Sha256) });
        b.follow_symlinks(false);
        let view_path = std::fs::read_link(format!("/proc/self/fd/{view}")).context("naming the image view")?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Ok(LayerOut { b, file, view, view_path, epoch, now, dirs: HashSet::new(), entries: 0 })
    }

    /// The image view's root.
    pub fn root(&self) -> RawFd {
        self.view
    }

    /// Now, or the epoch when one is set.
    pub fn now(&self) -> i64 {
        self.epoch.unwrap_or(self.now)
    }

    fn mtime(&self, t: i64) -> u64 {
        self.epoch.map_or(t, |e| t.min(e)).max(0) as u64
    }

    fn header(&self, kind: tar::EntryType, m: Meta, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode);
        h.set_uid(m.uid as u64);
        h.set_gid(m.gid as u64);
        h.set_mtime(self.mtime(m.mtime));
        h.set_size(size);
        h
    }

    /// Where `path` (absolute in the image) is, its symlinks resolved inside the image:
    /// (the path without symlinks, relative to the root; whether a directory is there now).
    /// Components past the last existing one are kept as written.
    pub fn resolve(&self, path: &str) -> Result<(String, bool)> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        let mut real = String::new();
        for (i, c) in comps.iter().enumerate() {
            let candidate = if real.is_empty() { c.to_string() } else { format!("{real}/{c}") };
            match safepath::openat_in_root(self.view, Path::new(&candidate), libc::O_PATH, 0) {
                Ok(fd) => {
                    let st = tree::fstat(fd.as_raw_fd())?;
                    let named = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
                    let rel = named
                        .strip_prefix(&self.view_path)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if tree::kind(&st) != libc::S_IFDIR {
                        if i + 1 == comps.len() {
                            return Ok((rel, false));
                        }
                        bail!("{} is not a directory in the image", shown(&rel));
                    }
                    real = rel;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let rest = comps[i..].join("/");
                    return Ok((if real.is_empty() { rest } else { format!("{real}/{rest}") }, false));
                }
                Err(e) => return Err(e).with_context(|| format!("resolving {path} in the image")),
            }
        }
        Ok((real, true))
    }

    /// The image's metadata of `rel`, when it is there (not following a final symlink).
    fn image_meta(&self, rel: &str) -> Option<(libc::stat, bool)> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let p = if parent.is_empty() { "." } else { parent };
        let dir = safepath::openat_in_root(self.view, Path::new(p), libc::O_PATH | libc::O_DIRECTORY, 0).ok()?;
        let st = tree::lstat_at(dir.as_raw_fd(), &tree::cstr(name.as_bytes()).ok()?).ok()?;
        Some((st, tree::kind(&st) == libc::S_IFDIR))
    }

    /// Writes the directories above `rel` (a path without symlinks): the image's own when it
    /// has them, else new ones (0755, root).
    pub fn parents(&mut self, rel: &str) -> Result<()> {
        let mut upto = String::new();
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            upto = if upto.is_empty() { c.to_string() } else { format!("{upto}/{c}") };
            self.existing_dir(&upto)?;
        }
        Ok(())
    }

    /// Writes directory `rel` as the image has it (or new, 0755 root).
    pub fn existing_dir(&mut self, rel: &str) -> Result<()> {
        if rel.is_empty() || self.dirs.contains(rel) {
            return Ok(());
        }
        let m = match self.image_meta(rel) {
            Some((st, true)) => Meta::of(&st),
            Some((_, false)) => bail!("{} is in the image and not a directory", shown(rel)),
            None => Meta { mode: 0o755, uid: 0, gid: 0, mtime: self.now() },
        };
        self.dir(rel, m)
    }

    pub fn dir(&mut self, rel: &str, m: Meta) -> Result<()> {
        if rel.is_empty() {
            return Ok(());
        }
        let mut h = self.header(tar::EntryType::Directory, m, 0);
        self.b.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
        self.dirs.insert(rel.to_string());
        self.entries += 1;
        Ok(())
    }

    /// A regular file. A directory of the image at that path is an error, as with Docker.
    pub fn file(&mut self, rel: &str, m: Meta, size: u64, r: impl Read) -> Result<()> {
        if self.dirs.contains(rel) || self.image_meta(rel).is_some_and(|(_, d)| d) {
            bail!("cannot replace the directory {} with a file", shown(rel));
        }
        let mut h = self.header(tar::EntryType::Regular, m, size);
        let exact = Exact { r, left: size };
        self.b.append_data(&mut h, rel, exact).with_context(|| format!("writing {}", shown(rel)))?;
        self.entries += 1;
        Ok(())
    }

    pub fn symlink(&mut self, rel: &str, m: Meta, target: &Path) -> Result<()> {
        let mut h = self.header(tar::EntryType::Symlink, m, 0);
        self.b.append_link(&mut h, rel, target)?;
        self.entries += 1;
        Ok(())
    }

    /// Any entry of an archive ADD unpacks (path already moved under the destination).
    pub fn raw(&mut self, rel: &str, mut h: tar::Header, link: Option<&Path>, r: impl Read) -> Result<()> {
        let mtime = self.mtime(h.mtime().unwrap_or(0) as i64);
        h.set_mtime(mtime);
        match link {
            Some(l) => self.b.append_link(&mut h, rel, l)?,
            None => self.b.append_data(&mut h, rel, r)?,
        }
        if h.entry_type() == tar::EntryType::Directory {
            self.dirs.insert(rel.to_string());
        }
        self.entries += 1;
        Ok(())
    }

    /// Finishes the layer into the store (none when nothing was written).
    pub fn finish(self, store: &Store) -> Result<Option<NewLayer>> {
        if self.entries == 0 {
            return Ok(None);
        }
        let hw = self.b.into_inner().context("finishing the layer")?;
        let diff_id = hw.hasher.finish();
        hw.inner.finish()?.flush()?;
        let (blob, size) = store.put(std::fs::File::open(self.file.path())?, None)?;
        Ok(Some(NewLayer { blob, size, diff_id }))
    }
}

/// Exactly `left` bytes of `r`: a file that shrank while being read is an error, not a
/// short entry that would break the archive.
struct Exact<R> {
    r: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let cap = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.r.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file changed while it was read"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Copies a resolved source to the layer at `rel` (without symlinks; for a directory source,
/// its contents go there).
pub(crate) fn source(out: &mut LayerOut, src: &Source, rel: &str, o: &mut CopyOpts) -> Result<()> {
    match tree::kind(&src.st) {
        libc::S_IFDIR => {
            let from = tree::reopen(src.fd.as_raw_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            children(out, from.as_raw_fd(), rel, &src.rel, "", o, 0)
        }
        libc::S_IFREG => {
            let f = std::fs::File::from(tree::reopen(src.fd.as_raw_fd(), libc::O_RDONLY)?);
            out.file(rel, o.meta(&src.st), src.st.st_size as u64, f)
        }
        _ => Ok(()),
    }
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() { name.to_string() } else { format!("{base}/{name}") }
}

fn children(
    out: &mut LayerOut,
    from: RawFd,
    dest: &str,
    ctx_rel: &str,
    src_rel: &str,
    o: &mut CopyOpts,
    depth: usize,
) -> Result<()> {
    if depth > 512 {
        bail!("{ctx_rel}: directories nested too deep");
    }
    for name in tree::list(from)? {
        let n = String::from_utf8_lossy(name.as_bytes()).into_owned();
        let (crel, srel, drel) = (join(ctx_rel, &n), join(src_rel, &n), join(dest, &n));
        let st = tree::lstat_at(from, &name)?;
        let is_dir = tree::kind(&st) == libc::S_IFDIR;
        if is_dir && o.skip_dir(&crel, &srel) {
            continue;
        }
        if !is_dir && o.skip(&crel, &srel, false) {
            continue;
        }
        match tree::kind(&st) {
            libc::S_IFDIR => {
                out.dir(&drel, o.meta(&st))?;
                let sub = tree::openat(from, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                children(out, sub.as_raw_fd(), &drel, &crel, &srel, o, depth + 1)?;
            }
            libc::S_IFREG => {
                let f = std::fs::File::from(tree::openat(from, &name, libc::O_RDONLY, 0)?);
                out.file(&drel, o.meta(&st), st.st_size as u64, f)?;
            }
            libc::S_IFLNK => {
                let target = tree::readlink_at(from, &name)?;
                let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                out.symlink(&drel, o.meta(&st), target)?;
            }
            // Devices, fifos and sockets are not copied.
            _ => {}
        }
        o.count += 1;
    }
    Ok(())
}

use std::os::unix::ffi::OsStrExt;
