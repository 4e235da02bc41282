//! The content store: blobs by digest under `<root>/blobs/<algo>/<hex>`. A blob is written to
//! a temp file, fsynced, and renamed into place only after its digest checks out.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::digest::{Algo, Digest, HashReader, Hasher};

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["blobs/sha256", "blobs/sha512", "tmp"] {
            fs::create_dir_all(root.join(d)).with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algo.name()).join(&d.hex)
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).exists()
    }

    /// Streams `r` into the store. With `expected`, the content must hash to it.
    pub fn put(&self, r: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let algo = expected.map(|d| d.algo).unwrap_or(Algo::Sha256);
        let tmp = tempfile_in(&self.root.join("tmp"))?;
        let mut f = File::create(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;
        let mut hr = HashReader::new(r, algo);
        // Errors of the source (a download, an archive) pass through as they are; only ours
        // say "store".
        // The buffer is filled before each write: a few large writes, not one per network read.
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let mut n = 0;
            while n < buf.len() {
                match hr.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).context("writing a blob into the store")?;
            if n < buf.len() {
                break;
            }
        }
        let (d, n) = hr.finish();
        if let Some(want) = expected
            && *want != d
        {
            bail!("digest mismatch: expected {want}, got {d} ({n} bytes)");
        }
        f.sync_all().context("fsync of a new blob")?;
        drop(f);
        fs::rename(&tmp.0, self.path(&d)).context("moving a verified blob into place")?;
        std::mem::forget(tmp);
        Ok((d, n))
    }

    /// A blob written piece by piece (e.g. teed off a download that is unpacked meanwhile);
    /// [`BlobWriter::commit`] puts it in place once it checks out.
    pub fn writer(&self, algo: Algo) -> Result<BlobWriter> {
        let tmp = tempfile_in(&self.root.join("tmp"))?;
        let file = File::create(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;
        Ok(BlobWriter { tmp, file, hasher: Hasher::new(algo), count: 0, root: self.root.clone() })
    }

    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::sha256_of(data);
        if !self.has(&d) {
            self.put(data, Some(&d))?;
        }
        Ok(d)
    }

    /// Reads a small blob (manifest, config) and checks its digest.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let mut hr = HashReader::new(self.open_blob(d)?, d.algo);
        hr.read_to_end(&mut v).with_context(|| format!("reading blob {d}"))?;
        if hr.finish().0 != *d {
            bail!("blob {d} in the store is corrupt (its content no longer matches its digest)");
        }
        Ok(v)
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.path(d)).with_context(|| format!("blob {d} is not in the store"))
    }

    pub fn size(&self, d: &Digest) -> u64 {
        fs::metadata(self.path(d)).map(|m| m.len()).unwrap_or(0)
    }

    /// Every blob in the store.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for algo in ["sha256", "sha512"] {
            for e in fs::read_dir(self.root.join("blobs").join(algo))? {
                if let Ok(d) = Digest::parse(&format!("{algo}:{}", e?.file_name().to_string_lossy())) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing blob {d}")),
        }
    }
}

/// See [`Store::writer`]. Dropped without a commit, it leaves nothing behind.
pub struct BlobWriter {
    tmp: TmpPath,
    file: File,
    hasher: Hasher,
    count: u64,
    root: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BlobWriter {
    /// Checks the content against `expected`, then fsyncs and renames it into the store.
    pub fn commit(self, expected: &Digest) -> Result<(Digest, u64)> {
        let BlobWriter { tmp, file, hasher, count, root } = self;
        let d = hasher.finish();
        if d != *expected {
            bail!("digest mismatch: expected {expected}, got {d} ({count} bytes)");
        }
        file.sync_all().context("fsync of a new blob")?;
        drop(file);
        let dest = root.join("blobs").join(d.algo.name()).join(&d.hex);
        fs::rename(&tmp.0, dest).context("moving a verified blob into place")?;
        std::mem::forget(tmp);
        Ok((d, count))
    }
}

/// A temp path that is removed on drop unless forgotten.
struct TmpPath(PathBuf);

impl Drop for TmpPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn tempfile_in(dir: &Path) -> Result<TmpPath> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    Ok(TmpPath(dir.join(format!("blob-{}-{n}-{t}", std::process::id()))))
}

/// Writes `data` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_before_it_stores() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let d = s.put_bytes(b"hello").unwrap();
        assert_eq!(s.read(&d).unwrap(), b"hello");
        let wrong = Digest::sha256_of(b"other");
        let e = s.put(&b"hello"[..], Some(&wrong)).unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        assert!(!s.has(&wrong));
        assert_eq!(fs::read_dir(t.path().join("tmp")).unwrap().count(), 0, "no temp file left");
        let mut w = s.writer(Algo::Sha256).unwrap();
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert!(w.commit(&wrong).unwrap_err().to_string().contains("digest mismatch"));
        let mut w = s.writer(Algo::Sha256).unwrap();
        w.write_all(b"hello!").unwrap();
        let d2 = Digest::sha256_of(b"hello!");
        assert_eq!(w.commit(&d2).unwrap(), (d2.clone(), 6));
        assert_eq!(s.read(&d2).unwrap(), b"hello!");
        drop(s.writer(Algo::Sha256).unwrap());
        assert_eq!(fs::read_dir(t.path().join("tmp")).unwrap().count(), 0, "no temp file left");
        fs::write(s.path(&d), b"tampered").unwrap();
        assert!(s.read(&d).is_err());
    }
}
