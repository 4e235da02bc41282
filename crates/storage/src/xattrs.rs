//! Extended attributes of a path (not following a symlink), and which of them a layer keeps.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::unpack::cstr;

/// Whether a layer's tar carries this xattr: file capabilities and user attributes.
pub fn kept_in_layers(name: &[u8]) -> bool {
    name.starts_with(b"security.capability") || name.starts_with(b"user.")
}

/// The xattrs of `p` whose names pass `keep`, sorted by name; none where the file system has
/// none.
pub fn read(p: &Path, keep: impl Fn(&[u8]) -> bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
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
    for name in names[..n as usize].split(|&c| c == 0).filter(|s| !s.is_empty() && keep(s)) {
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
