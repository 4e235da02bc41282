//! Checks an unpacked layer's files against its tar, for `system check`: the tar is unpacked
//! again beside the layer (by the same unpacker) and the two trees compared entry by entry:
//! type, mode, owner, size, content, link targets, device numbers and the xattrs a layer
//! keeps. Times are left out: a build stores its RUN steps' files as made, and their tar
//! clamps times when asked to (SOURCE_DATE_EPOCH). A file
//! changed, added or lost since the pull shows up, and a pull stores nothing extra for it.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use crate::unpack::cstr;

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
    let path = cstr(p.as_os_str().as_bytes())?;
    // SAFETY: llistxattr with no buffer asks for the size; not following a symlink.
    let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    let mut names = vec![0u8; size.max(0) as usize + 1];
    // SAFETY: llistxattr into our buffer; not following a symlink.
    let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(e).with_context(|| format!("listing the xattrs of {}", p.display()));
    }
    let mut out = Vec::new();
    // Only what every layer's tar carries: file capabilities, user attributes and the opaque
    // mark. A build keeps the files of its RUN steps as they were made, with whatever else
    // the host adds (SELinux labels, ACLs, overlayfs's bookkeeping), which its tar leaves out.
    let kept =
        |k: &[u8]| k.starts_with(b"security.capability") || k.starts_with(b"user.") || k == b"trusted.overlay.opaque";
    for name in names[..n as usize].split(|&c| c == 0).filter(|s| kept(s)) {
        let k = CString::new(name)?;
        let mut v = vec![0u8; 64 << 10];
        // SAFETY: lgetxattr into our buffer.
        let m = unsafe { libc::lgetxattr(path.as_ptr(), k.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("reading an xattr of {}", p.display()));
        }
        v.truncate(m as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
