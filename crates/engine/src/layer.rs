//! New layers from directories: a container's overlay upper dir (`commit`, a build's RUN) or a
//! directory of new files (a build's COPY) becomes a gzip tar blob in the store, with its diff id.
//! Overlay whiteouts (0/0 character devices, the opaque xattr) become OCI whiteouts (`.wh.NAME`,
//! `.wh..wh..opq`); entries are written in name order, so the same tree gives the same bytes.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_image::digest::Hasher;
use berth_image::{Algo, Digest, Store};

/// A layer written into the store.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub blob: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Hashes what passes through (the uncompressed tar: the diff id).
pub(crate) struct HashWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Hasher,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hasher.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `dir` as a gzip layer into `store` (through a temp file in `tmp`). With `epoch`,
/// every timestamp is clamped to it (SOURCE_DATE_EPOCH).
pub fn store_layer(store: &Store, dir: &Path, tmp: &Path, epoch: Option<i64>) -> Result<NewLayer> {
    fs::create_dir_all(tmp)?;
    // Named with our pid, as the store's own temp files: one a killed commit leaves is stale.
    let file = tempfile::Builder::new()
        .prefix(&format!("blob-{}-", std::process::id()))
        .tempfile_in(tmp)
        .context("creating a temp file for the layer")?;
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file.reopen()?), flate2::Compression::new(6));
    let mut hw = HashWriter { inner: gz, hasher: Hasher::new(Algo::Sha256) };
    {
        let mut b = tar::Builder::new(&mut hw);
        b.follow_symlinks(false);
        write_tree(&mut b, dir, Path::new(""), epoch, &mut HashMap::new())
            .with_context(|| format!("writing {} as a layer", dir.display()))?;
        b.finish()?;
    }
    let diff_id = hw.hasher.finish();
    hw.inner.finish()?.flush()?;
    let (blob, size) = store.put(fs::File::open(file.path())?, None)?;
    Ok(NewLayer { blob, size, diff_id })
}

fn write_tree<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    epoch: Option<i64>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)?.map(|e| e.map(|e| e.file_name())).collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let full = root.join(&path);
        let m = fs::symlink_metadata(&full)?;
        let ft = m.file_type();
        let mtime = epoch.map_or(m.mtime(), |e| m.mtime().min(e)).max(0) as u64;
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(mtime);
        h.set_size(0);
        if ft.is_char_device() && m.rdev() == 0 {
            // An overlay whiteout: the file was deleted.
            let mut w = tar::Header::new_gnu();
            w.set_entry_type(tar::EntryType::Regular);
            w.set_mode(0o644);
            w.set_mtime(mtime);
            w.set_size(0);
            let mut wname = std::ffi::OsString::from(".wh.");
            wname.push(&name);
            b.append_data(&mut w, rel.join(wname), std::io::empty())?;
            continue;
        }
        write_xattrs(b, &full)?;
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, &path, std::io::empty())?;
            let opaque = berth_storage::xattrs::read(&full, |k| k == b"trusted.overlay.opaque").unwrap_or_default();
            if opaque.first().is_some_and(|(_, v)| v == b"y") {
                let mut o = tar::Header::new_gnu();
                o.set_entry_type(tar::EntryType::Regular);
                o.set_mode(0o644);
                o.set_mtime(mtime);
                o.set_size(0);
                b.append_data(&mut o, path.join(".wh..wh..opq"), std::io::empty())?;
            }
            write_tree(b, root, &path, epoch, links)?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, &path, fs::read_link(&full)?)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, &path, first)?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), path.clone());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            let f = fs::File::open(&full).with_context(|| format!("opening {}", full.display()))?;
            b.append_data(&mut h, &path, f)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
            b.append_data(&mut h, &path, std::io::empty())?;
        }
        // Sockets are not part of a layer.
    }
    Ok(())
}

/// The xattrs a layer keeps (file capabilities and user attributes), as PAX records.
fn write_xattrs<W: Write>(b: &mut tar::Builder<W>, p: &Path) -> Result<()> {
    let records: Vec<(String, Vec<u8>)> = berth_storage::xattrs::read(p, berth_storage::xattrs::kept_in_layers)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{}", String::from_utf8_lossy(&k)), v))
        .collect();
    if !records.is_empty() {
        b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    Ok(())
}
