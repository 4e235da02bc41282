//! The copy driver, for hosts where overlayfs cannot be used (`storage-driver = "copy"` in
//! berth.toml, or a kernel without overlay): a container's root is a full copy of its image's
//! layers, applied bottom up as overlay would show them (whiteouts remove, opaque directories
//! hide what is below). Its changes, which `diff`, `commit` and `ps -s` read from an overlay
//! upper dir, are found by comparing the root with a snapshot taken right after the copy
//! (each entry's inode and ctime: any write, chmod, chown or rename changes them) and laid out
//! as an overlay upper dir would hold them (changed entries hard-linked, whiteouts for what
//! went, opaque directories for ones made anew).
//!
//! Everything walks from directory fd to directory fd with O_NOFOLLOW: a running container
//! may swap a directory of its root for a symlink, and nothing here follows it.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::unpack::{check, cstr, open_at, open_dir, remove_any};

const OPAQUE: &CStr = c"trusted.overlay.opaque";

/// What `name` in `dir` is, not following a symlink.
pub fn lstat_at(dir: RawFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: fstatat into a zeroed stat, not following symlinks.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

/// Whether `fd` is the regular file `st` describes (same device and inode): what was looked at
/// is what got opened, not a FIFO or device node a running container swapped in meanwhile.
pub fn same_regular_file(fd: RawFd, st: &libc::stat) -> Result<()> {
    // SAFETY: fstat into a zeroed stat.
    let now = unsafe {
        let mut now: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd, &mut now))?;
        now
    };
    if now.st_mode & libc::S_IFMT != libc::S_IFREG || now.st_dev != st.st_dev || now.st_ino != st.st_ino {
        anyhow::bail!("a file changed while it was being copied");
    }
    Ok(())
}

fn names(dir: RawFd) -> Result<Vec<CString>> {
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/self/fd/{dir}"))? {
        out.push(cstr(e?.file_name().as_bytes())?);
    }
    out.sort();
    Ok(out)
}

fn sub_dir(dir: RawFd, name: &CString) -> Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
}

fn is_opaque(dir: RawFd) -> bool {
    let mut v = [0u8; 2];
    // SAFETY: fgetxattr into a small buffer.
    let n = unsafe { libc::fgetxattr(dir, OPAQUE.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    n == 1 && v[0] == b'y'
}

fn set_meta(dir: RawFd, name: &CString, st: &libc::stat) -> Result<()> {
    let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    // SAFETY: *at calls on a valid dir fd with a NUL-terminated single-component name.
    unsafe {
        check(libc::fchownat(dir, name.as_ptr(), st.st_uid, st.st_gid, libc::AT_SYMLINK_NOFOLLOW))?;
        if !is_link {
            check(libc::fchmodat(dir, name.as_ptr(), st.st_mode & 0o7777, 0))?;
        }
        let times = [
            libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec },
            libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
        ];
        check(libc::utimensat(dir, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW))?;
    }
    Ok(())
}

/// Hard links within one layer: source inode -> the first copy's path, relative to the root
/// being filled (`root`; nothing runs in it yet).
struct Links {
    root: RawFd,
    first: HashMap<(u64, u64), CString>,
}

/// Copies the non-directory `name` of `from` to `to` (file data, symlink, node), with its
/// metadata; hard links within one copy stay links (`links`).
fn copy_leaf(
    from: RawFd,
    to: RawFd,
    name: &CString,
    st: &libc::stat,
    rel: &Path,
    links: &mut Option<Links>,
) -> Result<()> {
    let key = (st.st_dev, st.st_ino);
    if st.st_nlink > 1
        && let Some(l) = links.as_ref()
        && let Some(first) = l.first.get(&key)
    {
        // SAFETY: linkat from a path relative to the root being filled to a valid dir fd.
        if unsafe { libc::linkat(l.root, first.as_ptr(), to, name.as_ptr(), 0) } == 0 {
            return Ok(());
        }
    }
    let mut file_pair = None;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            // Without blocking, and checked to be the file looked at: a running container may
            // have put a FIFO or a device node there meanwhile.
            let src = open_at(from, name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)?;
            same_regular_file(src.as_raw_fd(), st)?;
            let dst = open_at(to, name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)?;
            let (mut s, mut d) = (fs::File::from(src), fs::File::from(dst));
            std::io::copy(&mut s, &mut d)?;
            file_pair = Some((s, d));
        }
        libc::S_IFLNK => {
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: readlinkat into our buffer.
            let n = unsafe { libc::readlinkat(from, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            check(n as libc::c_int)?;
            buf.truncate(n as usize);
            let target = CString::new(buf)?;
            // SAFETY: symlinkat with NUL-terminated strings.
            check(unsafe { libc::symlinkat(target.as_ptr(), to, name.as_ptr()) })?;
        }
        _ => {
            // SAFETY: mknodat of a device, FIFO or socket node as the source has it.
            check(unsafe { libc::mknodat(to, name.as_ptr(), st.st_mode, st.st_rdev) })?;
        }
    }
    set_meta(to, name, st)?;
    if let Some((s, d)) = file_pair {
        // After the owner is set: a chown drops file capabilities.
        copy_xattrs(s.as_raw_fd(), d.as_raw_fd())?;
    }
    if st.st_nlink > 1
        && let Some(l) = links.as_mut()
    {
        l.first.insert(key, cstr(rel.join(OsStr::from_bytes(name.as_bytes())).as_os_str().as_bytes())?);
    }
    Ok(())
}

/// The extended attributes of file `from` (security.capability and the like) onto `to`; not
/// overlay's own (trusted.overlay.*).
fn copy_xattrs(from: RawFd, to: RawFd) -> Result<()> {
    let mut list = vec![0u8; 64 << 10];
    // SAFETY: flistxattr into our buffer.
    let n = unsafe { libc::flistxattr(from, list.as_mut_ptr().cast(), list.len()) };
    if n <= 0 {
        return Ok(()); // none, or a file system without them
    }
    list.truncate(n as usize);
    for key in list.split(|b| *b == 0).filter(|k| !k.is_empty() && !k.starts_with(b"trusted.overlay.")) {
        let key = CString::new(key)?;
        let mut v = vec![0u8; 64 << 10];
        // SAFETY: fgetxattr into our buffer.
        let m = unsafe { libc::fgetxattr(from, key.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m < 0 {
            continue;
        }
        // SAFETY: fsetxattr from our buffer.
        check(unsafe { libc::fsetxattr(to, key.as_ptr(), v.as_ptr().cast(), m as usize, 0) })
            .with_context(|| format!("copying xattr {}", key.to_string_lossy()))?;
    }
    Ok(())
}

/// Applies the layer directory `from` onto `to` (`rel` in the root) as overlay would stack it.
fn apply(from: RawFd, to: RawFd, rel: &Path, links: &mut Option<Links>) -> Result<()> {
    for name in names(from)? {
        let st = lstat_at(from, &name)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFCHR && st.st_rdev == 0 {
            remove_any(to, &name)?; // a whiteout
            continue;
        }
        if kind == libc::S_IFDIR {
            let src = sub_dir(from, &name)?;
            // A directory stays one (and is merged into) unless this layer makes it opaque;
            // anything else in its place goes.
            let keep = lstat_at(to, &name).is_ok_and(|t| t.st_mode & libc::S_IFMT == libc::S_IFDIR);
            if !keep || is_opaque(src.as_raw_fd()) {
                remove_any(to, &name)?;
                // SAFETY: mkdirat on a valid dir fd.
                check(unsafe { libc::mkdirat(to, name.as_ptr(), 0o700) })?;
            }
            let dst = sub_dir(to, &name)?;
            apply(src.as_raw_fd(), dst.as_raw_fd(), &rel.join(OsStr::from_bytes(name.as_bytes())), links)?;
            set_meta(to, &name, &st)?;
            continue;
        }
        remove_any(to, &name)?;
        copy_leaf(from, to, &name, &st, rel, links)?;
    }
    Ok(())
}

/// Fills `merged` (empty) with `lowers` (top first, as overlay's lowerdir lists them).
pub fn populate(merged: &Path, lowers: &[PathBuf]) -> Result<()> {
    let to = open_dir(merged)?;
    for l in lowers.iter().rev() {
        let mut links = Some(Links { root: to.as_raw_fd(), first: HashMap::new() });
        let from = open_dir(l)?;
        apply(from.as_raw_fd(), to.as_raw_fd(), Path::new(""), &mut links)
            .with_context(|| format!("copying layer {}", l.display()))?;
    }
    Ok(())
}

/// Calls `f(relative path, stat)` for every entry under `dir` (depth first, never through a
/// symlink).
fn walk(
    dir: RawFd,
    dev: u64,
    rel: &Path,
    f: &mut dyn FnMut(&Path, &libc::stat, RawFd, &CString) -> Result<()>,
) -> Result<()> {
    for name in names(dir)? {
        let st = match lstat_at(dir, &name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // gone meanwhile
            Err(e) => return Err(e.into()),
        };
        if st.st_dev != dev {
            continue; // another file system mounted inside
        }
        let r = rel.join(OsStr::from_bytes(name.as_bytes()));
        f(&r, &st, dir, &name)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let sub = sub_dir(dir, &name).with_context(|| format!("reading {}", r.display()))?;
            walk(sub.as_raw_fd(), dev, &r, f)?;
        }
    }
    Ok(())
}

fn dev_of(fd: &OwnedFd) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::File::from(fd.try_clone()?).metadata()?.dev())
}

fn ctime(st: &libc::stat) -> i128 {
    st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128
}

/// Records every entry of `merged` (path, inode, ctime) in `file`.
pub fn snapshot(merged: &Path, file: &Path) -> Result<()> {
    let root = open_dir(merged)?;
    let dev = dev_of(&root)?;
    let mut w = BufWriter::new(fs::File::create(file)?);
    walk(root.as_raw_fd(), dev, Path::new(""), &mut |rel, st, _, _| {
        w.write_all(rel.as_os_str().as_bytes())?;
        w.write_all(format!("\0{} {}\0", st.st_ino, ctime(st)).as_bytes())?;
        Ok(())
    })?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

fn read_snapshot(file: &Path) -> Result<HashMap<PathBuf, (u64, i128)>> {
    let mut out = HashMap::new();
    let mut r = BufReader::new(fs::File::open(file).with_context(|| format!("reading {}", file.display()))?);
    loop {
        let mut path = Vec::new();
        if r.read_until(0, &mut path)? == 0 {
            break;
        }
        path.pop();
        let mut v = Vec::new();
        r.read_until(0, &mut v)?;
        v.pop();
        let v = String::from_utf8_lossy(&v);
        let (ino, ct) = v.split_once(' ').unwrap_or(("0", "0"));
        out.insert(PathBuf::from(OsStr::from_bytes(&path)), (ino.parse().unwrap_or(0), ct.parse().unwrap_or(0)));
    }
    Ok(out)
}

/// Makes `rel`'s parent directories in `upper` (from `root`'s, metadata included) and returns
/// the parent's fd.
fn upper_parent(upper: RawFd, root: RawFd, rel: &Path) -> Result<OwnedFd> {
    let mut up = open_dir(Path::new(&format!("/proc/self/fd/{upper}")))?;
    let mut src = open_dir(Path::new(&format!("/proc/self/fd/{root}")))?;
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        let name = cstr(c.as_os_str().as_bytes())?;
        let st = lstat_at(src.as_raw_fd(), &name)?;
        // SAFETY: mkdirat on a valid dir fd.
        if unsafe { libc::mkdirat(up.as_raw_fd(), name.as_ptr(), 0o700) } == 0 {
            set_meta(up.as_raw_fd(), &name, &st)?;
        }
        src = sub_dir(src.as_raw_fd(), &name)?;
        up = sub_dir(up.as_raw_fd(), &name)?;
    }
    Ok(up)
}

/// Lays out in `upper` (empty) what changed in `merged` since `snapshot_file`, as an overlay
/// upper dir: new and changed entries (files hard-linked), whiteouts (0/0 character devices)
/// for what went, opaque directories for ones that replaced another.
pub fn changes(merged: &Path, snapshot_file: &Path, upper: &Path) -> Result<()> {
    let before = read_snapshot(snapshot_file)?;
    let root = open_dir(merged)?;
    let dev = dev_of(&root)?;
    let up = open_dir(upper)?;
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    walk(root.as_raw_fd(), dev, Path::new(""), &mut |rel, st, dir, name| {
        seen.insert(rel.to_path_buf());
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            dirs.insert(rel.to_path_buf());
        }
        let was = before.get(rel);
        if was.is_some_and(|&(ino, ct)| ino == st.st_ino && ct == ctime(st)) {
            return Ok(());
        }
        let parent = upper_parent(up.as_raw_fd(), root.as_raw_fd(), rel)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            // SAFETY: mkdirat on a valid dir fd.
            if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) } == 0 {
                set_meta(parent.as_raw_fd(), name, st)?;
            }
            if was.is_some_and(|&(ino, _)| ino != st.st_ino) {
                // Made anew where another was: what the image had below it is gone.
                let d = sub_dir(parent.as_raw_fd(), name)?;
                // SAFETY: fsetxattr on a directory we made.
                check(unsafe { libc::fsetxattr(d.as_raw_fd(), OPAQUE.as_ptr(), c"y".as_ptr().cast(), 1, 0) })?;
            }
            return Ok(());
        }
        // SAFETY: linkat from the root's directory to ours, same file system.
        if unsafe { libc::linkat(dir, name.as_ptr(), parent.as_raw_fd(), name.as_ptr(), 0) } != 0 {
            copy_leaf(dir, parent.as_raw_fd(), name, st, rel, &mut None)?;
        }
        Ok(())
    })?;
    // What went: a whiteout for each topmost path gone whose parent is still a directory.
    let mut gone: Vec<&PathBuf> = before.keys().filter(|p| !seen.contains(*p)).collect();
    gone.sort();
    for p in gone {
        let parent_rel = p.parent().unwrap_or(Path::new(""));
        if !parent_rel.as_os_str().is_empty() && !dirs.contains(parent_rel) {
            continue; // inside something that went, or that is no directory any more, as a whole
        }
        let name = cstr(p.file_name().map(|n| n.as_bytes()).unwrap_or_default())?;
        let parent = upper_parent(up.as_raw_fd(), root.as_raw_fd(), p)?;
        // SAFETY: mknodat of a 0/0 character device, overlay's whiteout.
        check(unsafe { libc::mknodat(parent.as_raw_fd(), name.as_ptr(), libc::S_IFCHR | 0o600, 0) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setxattr(p: &Path, k: &CStr, v: &[u8]) {
        let c = cstr(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: setxattr with valid strings and buffer.
        assert_eq!(unsafe { libc::setxattr(c.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) }, 0);
    }

    fn getxattr(p: &Path, k: &CStr) -> Vec<u8> {
        let c = cstr(p.as_os_str().as_bytes()).unwrap();
        let mut v = [0u8; 64];
        // SAFETY: getxattr into a local buffer.
        let n = unsafe { libc::getxattr(c.as_ptr(), k.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        v[..n.max(0) as usize].to_vec()
    }

    #[test]
    fn layers_stack_as_overlay_would_and_files_keep_their_xattrs() {
        // SAFETY: geteuid.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (whiteouts are device nodes)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (bottom, top, merged) = (t.path().join("bottom"), t.path().join("top"), t.path().join("merged"));
        for d in [bottom.join("a"), bottom.join("b"), top.join("b"), merged.clone()] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(bottom.join("a/x"), "x").unwrap();
        fs::write(bottom.join("b/y"), "y").unwrap();
        fs::write(bottom.join("f"), "old").unwrap();
        setxattr(&bottom.join("f"), c"user.berth", b"kept");
        // The top layer: a's whiteout, b opaque with its own z, f unchanged below.
        let a = cstr(top.join("a").as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod of a 0/0 character device (a whiteout).
        assert_eq!(unsafe { libc::mknod(a.as_ptr(), libc::S_IFCHR | 0o600, 0) }, 0);
        setxattr(&top.join("b"), OPAQUE, b"y");
        fs::write(top.join("b/z"), "z").unwrap();
        populate(&merged, &[top, bottom]).unwrap();
        assert!(!merged.join("a").exists(), "the whiteout removes a");
        let mut b: Vec<String> =
            fs::read_dir(merged.join("b")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        b.sort();
        assert_eq!(b, ["z"], "the opaque b hides what was below");
        assert_eq!(fs::read_to_string(merged.join("f")).unwrap(), "old");
        assert_eq!(getxattr(&merged.join("f"), c"user.berth"), b"kept");
    }
}
