//! Writes a directory tree as a tar stream (`berth export`). The tree may belong to a running
//! container, so it is walked with directory fds and *at calls that never follow symlinks: a
//! name swapped for a symlink meanwhile cannot lead the walk out of the tree. Entries come in a
//! stable order (names sorted bytewise), hardlinked files once with links to the first path,
//! `security.capability` kept as a PAX xattr record (what Docker keeps), sockets skipped.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Writes the tree under `root` (not the root entry itself) to `w` as a tar archive and
/// finishes it. Returns the number of entries.
pub fn write_tree(root: &Path, w: impl Write) -> Result<u64> {
    let fd = crate::unpack::open_dir(root)?;
    let mut t = TreeWriter { b: tar::Builder::new(w), links: HashMap::new(), entries: 0 };
    t.dir(fd.as_fd(), Path::new(""))?;
    t.b.finish().context("finishing the tar stream")?;
    Ok(t.entries)
}

/// The apparent size of the tree under `root` (file sizes, each inode once), not crossing
/// into other file systems and never following symlinks.
pub fn tree_size(root: &Path) -> Result<u64> {
    let fd = crate::unpack::open_dir(root)?;
    let dev = nix::sys::stat::fstat(fd.as_fd())?.st_dev;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![fd];
    while let Some(dir) = stack.pop() {
        let mut names = Vec::new();
        {
            let Ok(mut d) =
                Dir::openat(dir.as_fd(), c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            else {
                continue;
            };
            for e in d.iter().flatten() {
                let n = e.file_name();
                if n != c"." && n != c".." {
                    names.push(n.to_owned());
                }
            }
        }
        for n in names {
            let Ok(st) = stat_at(dir.as_fd(), &n) else { continue };
            if st.st_dev != dev {
                continue;
            }
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    if let Ok(fd) = open_at(dir.as_fd(), &n, libc::O_RDONLY | libc::O_DIRECTORY) {
                        stack.push(fd);
                    }
                }
                _ if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) => {}
                _ => total += st.st_size.max(0) as u64,
            }
        }
    }
    Ok(total)
}

struct TreeWriter<W: Write> {
    b: tar::Builder<W>,
    /// (device, inode) of files with several links -> the path written first.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

fn stat_at(dir: std::os::fd::BorrowedFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: fstatat into a zeroed stat, not following symlinks.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

fn open_at(dir: std::os::fd::BorrowedFd, name: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: openat with a valid dir fd and a single-component name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `security.capability` of an open file, if it has one.
fn capability(fd: std::os::fd::BorrowedFd) -> Option<Vec<u8>> {
    let name = c"security.capability";
    let mut v = vec![0u8; 256];
    // SAFETY: fgetxattr into a buffer of the given length.
    let n = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    if n <= 0 {
        return None;
    }
    v.truncate(n as usize);
    Some(v)
}

/// One PAX record: `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while (body + len.to_string().len()) != len {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn base_header(st: &libc::stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> TreeWriter<W> {
    fn pax(&mut self, cap: Option<Vec<u8>>) -> Result<()> {
        let Some(cap) = cap else { return Ok(()) };
        let data = pax_record("SCHILY.xattr.security.capability", &cap);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeader")?;
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, &data[..])?;
        Ok(())
    }

    fn dir(&mut self, dir: std::os::fd::BorrowedFd, rel: &Path) -> Result<()> {
        let mut names: Vec<CString> = Vec::new();
        {
            let mut d = Dir::openat(dir, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .with_context(|| format!("listing /{}", rel.display()))?;
            for e in d.iter() {
                let e = e.with_context(|| format!("listing /{}", rel.display()))?;
                let n = e.file_name();
                if n != c"." && n != c".." {
                    names.push(n.to_owned());
                }
            }
        }
        names.sort();
        for name in names {
            let path = rel.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            // Gone meanwhile (a running container deleted it): leave it out.
            let st = match stat_at(dir, &name) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e).with_context(|| format!("reading /{}", path.display())),
            };
            self.entry(dir, &name, &path, &st).with_context(|| format!("adding /{} to the archive", path.display()))?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: std::os::fd::BorrowedFd, name: &CStr, path: &Path, st: &libc::stat) -> Result<()> {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let fd = match open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY) {
                    Ok(fd) => fd,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => {
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                self.pax(capability(fd.as_fd()))?;
                let mut h = base_header(st, tar::EntryType::Directory);
                let mut p = path.as_os_str().as_bytes().to_vec();
                p.push(b'/');
                self.b.append_data(&mut h, std::ffi::OsStr::from_bytes(&p), std::io::empty())?;
                self.entries += 1;
                self.dir(fd.as_fd(), path)?;
            }
            libc::S_IFREG => {
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) {
                        let first = first.clone();
                        let mut h = base_header(st, tar::EntryType::Link);
                        self.b.append_link(&mut h, path, first)?;
                        self.entries += 1;
                        return Ok(());
                    }
                    self.links.insert((st.st_dev, st.st_ino), path.to_path_buf());
                }
                let fd = match open_at(dir, name, libc::O_RDONLY) {
                    Ok(fd) => fd,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                // What was opened is what was stat'ed (not a file swapped in since).
                let now = nix::sys::stat::fstat(fd.as_fd())?;
                if now.st_ino != st.st_ino || now.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Ok(());
                }
                self.pax(capability(fd.as_fd()))?;
                let size = now.st_size.max(0) as u64;
                let mut h = base_header(&now, tar::EntryType::Regular);
                h.set_size(size);
                // A file that shrinks while it is read is padded with zeros, one that grows is
                // cut: the header's size is what the archive must hold.
                let mut f = std::fs::File::from(fd);
                let data = ExactSize { r: &mut f, left: size };
                self.b.append_data(&mut h, path, data)?;
                self.entries += 1;
            }
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dir, name)?;
                let mut h = base_header(st, tar::EntryType::Symlink);
                self.b.append_link(&mut h, path, Path::new(&target))?;
                self.entries += 1;
            }
            kind @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO) => {
                let t = match kind {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = base_header(st, t);
                if kind != libc::S_IFIFO {
                    h.set_device_major(libc::major(st.st_rdev))?;
                    h.set_device_minor(libc::minor(st.st_rdev))?;
                }
                self.b.append_data(&mut h, path, std::io::empty())?;
                self.entries += 1;
            }
            // Sockets are not archived (as Docker does).
            _ => {}
        }
        Ok(())
    }
}

/// Reads exactly `left` bytes: what `r` has, then zeros.
struct ExactSize<'a, R> {
    r: &'a mut R,
    left: u64,
}

impl<R: Read> Read for ExactSize<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let cap = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = match self.r.read(&mut buf[..cap])? {
            0 => {
                buf[..cap].fill(0);
                cap
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_record("k", b"v");
        assert_eq!(r, b"6 k=v\n");
        let long = vec![b'x'; 95];
        let r = pax_record("k", &long);
        assert_eq!(String::from_utf8_lossy(&r[..4]), "102 ");
        assert_eq!(r.len(), 102);
    }

    #[test]
    fn writes_a_tree_that_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc/deep")).unwrap();
        std::fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
        std::fs::hard_link(root.join("etc/hosts"), root.join("etc/hosts2")).unwrap();
        symlink("/etc/hosts", root.join("link")).unwrap();
        std::fs::set_permissions(root.join("etc/deep"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let long = "d".repeat(120);
        std::fs::create_dir(root.join(&long)).unwrap();
        std::fs::write(root.join(&long).join("f"), b"x").unwrap();
        let mut out = Vec::new();
        let n = write_tree(&root, &mut out).unwrap();
        assert_eq!(n, 7);
        let mut ar = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mut data = String::new();
            if kind.is_file() {
                e.read_to_string(&mut data).unwrap();
            }
            let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
            seen.push((p, kind, data, link, e.header().mode().unwrap()));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [&format!("{long}/"), &format!("{long}/f"), "etc/", "etc/deep/", "etc/hosts", "etc/hosts2", "link"]
        );
        assert_eq!(seen[4].2, "127.0.0.1 localhost\n");
        assert_eq!((seen[5].1, seen[5].3.as_str()), (tar::EntryType::Link, "etc/hosts"));
        assert_eq!((seen[6].1, seen[6].3.as_str()), (tar::EntryType::Symlink, "/etc/hosts"));
        assert_eq!(seen[3].4, 0o700);
        assert_eq!(std::fs::metadata(root.join("etc/hosts")).unwrap().nlink(), 2);
    }
}
