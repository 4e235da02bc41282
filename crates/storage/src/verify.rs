//! Checks an unpacked layer's files against its tar, for `system check`: the tar is unpacked
//! again beside the layer (by the same unpacker) and the two trees compared entry by entry:
//! type, mode, owner, size, content, link targets, device numbers and the xattrs a layer
//! keeps. Times are left out: a build stores its RUN steps' files as made, and their tar
//! clamps times when asked to (SOURCE_DATE_EPOCH). A file
//! changed, added or lost since the pull shows up, and a pull stores nothing extra for it.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// The first difference between the trees at `have` (the stored layer) and `want` (its tar
/// unpacked anew), with the path inside the layer; None when they are the same.
pub fn compare_trees(have: &Path, want: &Path) -> Result<Option<String>> {
    compare_dir(have, want, Path::new(""))
}

fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    v.sort();
    Ok(v)
}

fn compare_dir(have: &Path, want: &Path, rel: &Path) -> Result<Option<String>> {
    let (h, w) = (names(have)?, names(want)?);
    if let Some(extra) = h.iter().find(|n| w.binary_search(n).is_err()) {
        return Ok(Some(format!("/{} is not in the layer's tar", rel.join(extra).display())));
    }
    if let Some(lost) = w.iter().find(|n| h.binary_search(n).is_err()) {
        return Ok(Some(format!("/{} is missing", rel.join(lost).display())));
    }
    for n in &w {
        let (hp, wp, r) = (have.join(n), want.join(n), rel.join(n));
        if let Some(why) = compare_entry(&hp, &wp)? {
            return Ok(Some(format!("/{}: {why}", r.display())));
        }
        if fs::symlink_metadata(&wp)?.is_dir()
            && let Some(d) = compare_dir(&hp, &wp, &r)?
        {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

fn compare_entry(have: &Path, want: &Path) -> Result<Option<String>> {
    let (h, w) = (fs::symlink_metadata(have)?, fs::symlink_metadata(want)?);
    // Whiteouts (0/0 character devices): the kernel makes them mode 0 in a build's upper
    // dir, the unpacker 0600; only what they are counts.
    let whiteout = |m: &fs::Metadata| m.mode() & libc::S_IFMT == libc::S_IFCHR && m.rdev() == 0;
    if whiteout(&w) {
        return Ok((!whiteout(&h)).then(|| "a whiteout in the tar, something else here".to_string()));
    }
    if h.mode() != w.mode() {
        return Ok(Some(format!("mode {:o}, the tar has {:o}", h.mode(), w.mode())));
    }
    if (h.uid(), h.gid()) != (w.uid(), w.gid()) {
        return Ok(Some(format!("owner {}:{}, the tar has {}:{}", h.uid(), h.gid(), w.uid(), w.gid())));
    }
    if w.is_dir() {
        // A directory's times move with its entries (made, then timed last by the unpacker).
        return Ok(xattrs_differ(have, want)?.then(|| "its extended attributes differ".to_string()));
    }
    if h.len() != w.len() {
        return Ok(Some(format!("{} bytes, the tar has {}", h.len(), w.len())));
    }
    let t = w.file_type();
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() && fs::read_link(have)? != fs::read_link(want)? {
        return Ok(Some("the link's target changed".into()));
    }
    if (t.is_char_device() || t.is_block_device()) && h.rdev() != w.rdev() {
        return Ok(Some("the device numbers changed".into()));
    }
    if t.is_file() && !same_content(have, want)? {
        return Ok(Some("its content changed".into()));
    }
    if !t.is_symlink() && xattrs_differ(have, want)? {
        return Ok(Some("its extended attributes differ".into()));
    }
    Ok(None)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
            .with_context(|| format!("reading {}", p.display()))
    };
    let (mut fa, mut fb): (File, File) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 128 << 10], vec![0u8; 128 << 10]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether the two entries' extended attributes (names and values) differ.
fn xattrs_differ(a: &Path, b: &Path) -> Result<bool> {
    Ok(xattrs(a)? != xattrs(b)?)
}

fn xattrs(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // Only what every layer's tar carries, and the opaque mark. A build keeps the files of its
    // RUN steps as they were made, with whatever else the host adds (SELinux labels, ACLs,
    // overlayfs's bookkeeping), which its tar leaves out.
    crate::xattrs::read(p, |k| crate::xattrs::kept_in_layers(k) || k == b"trusted.overlay.opaque")
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use crate::unpack::cstr;

    #[test]
    fn trees_compare_by_every_attribute() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("etc")).unwrap();
            fs::write(d.join("etc/passwd"), "root:x:0:0\n").unwrap();
            std::os::unix::fs::symlink("passwd", d.join("etc/link")).unwrap();
        }
        let same_time = |p: &Path| {
            let f = File::options().write(true).open(p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000)).unwrap();
        };
        same_time(&a.join("etc/passwd"));
        same_time(&b.join("etc/passwd"));
        let c = |x: &Path, y: &Path| compare_trees(x, y).unwrap();
        // Symlink times differ (made at different moments): set them alike.
        let link_time = |p: &Path| {
            let cp = cstr(p.as_os_str().as_bytes()).unwrap();
            let ts = [libc::timespec { tv_sec: 5, tv_nsec: 0 }; 2];
            // SAFETY: utimensat on a valid path, not following the link.
            assert_eq!(
                unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) },
                0
            );
        };
        link_time(&a.join("etc/link"));
        link_time(&b.join("etc/link"));
        assert_eq!(c(&a, &b), None);
        fs::write(a.join("etc/passwd"), "root:x:0:1\n").unwrap();
        same_time(&a.join("etc/passwd"));
        assert_eq!(c(&a, &b).as_deref(), Some("/etc/passwd: its content changed"));
        fs::write(a.join("etc/passwd"), "root:x:0:0\n").unwrap();
        same_time(&a.join("etc/passwd"));
        fs::write(a.join("etc/extra"), "").unwrap();
        assert_eq!(c(&a, &b).as_deref(), Some("/etc/extra is not in the layer's tar"));
        fs::remove_file(a.join("etc/extra")).unwrap();
        fs::remove_file(b.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("shadow", b.join("etc/link")).unwrap();
        link_time(&b.join("etc/link"));
        assert_eq!(c(&a, &b).as_deref(), Some("/etc/link: the link's target changed"));
        fs::remove_file(a.join("etc/link")).unwrap();
        assert_eq!(c(&a, &b).as_deref(), Some("/etc/link is missing"));
        std::fs::set_permissions(b.join("etc"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        assert!(c(&a, &b).unwrap().starts_with("/etc: mode 40755, the tar has 40700"));
    }
}
