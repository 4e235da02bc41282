//! File trees a build reads from (the context, another stage's root) and writes into (the new
//! image's root), always through fds: a source path is resolved inside its root with
//! openat2(RESOLVE_IN_ROOT), so `..` and symlinks cannot leave it; the walk below a source goes
//! from directory fd to directory fd with O_NOFOLLOW, so a symlink inside a copied directory
//! is copied as a symlink and never followed, wherever it points.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_build::Ignore;
use berth_image::Algo;
use berth_image::digest::Hasher;
use berth_runtime::safepath;

/// Directory depth beyond which a walk gives up (no real tree comes close; a hostile one
/// must not exhaust the stack).
const MAX_DEPTH: usize = 512;

pub(crate) fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).context("a file name with a NUL byte")
}

pub(crate) fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<OwnedFd> {
    // SAFETY: openat with a valid dir fd and a NUL-terminated name; the fd is ours.
    let fd =
        unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn lstat_at(dir: RawFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: fstatat into a zeroed stat, not following a final symlink.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

pub(crate) fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    // SAFETY: fstat into a zeroed stat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

pub(crate) fn kind(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

pub(crate) fn readlink_at(dir: RawFd, name: &CStr) -> Result<CString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat into our buffer.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    buf.truncate(n as usize);
    Ok(CString::new(buf)?)
}

/// The names in a directory, sorted bytewise (so hashes and layers come out the same each time).
pub(crate) fn list(dir: RawFd) -> Result<Vec<CString>> {
    let mut names = Vec::new();
    for e in fs::read_dir(format!("/proc/self/fd/{dir}"))? {
        names.push(cstr(e?.file_name().as_bytes())?);
    }
    names.sort();
    Ok(names)
}

/// Reopens an O_PATH fd for reading (a directory or a regular file).
pub(crate) fn reopen(fd: RawFd, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let dot = c".";
    if flags & libc::O_DIRECTORY != 0 {
        // SAFETY: openat of "." relative to a directory fd we hold.
        let r = unsafe { libc::openat(fd, dot.as_ptr(), flags | libc::O_CLOEXEC) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd.
        return Ok(unsafe { OwnedFd::from_raw_fd(r) });
    }
    // The magic link reaches exactly the object the fd refers to.
    let p = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open(2) of a /proc path with a NUL-terminated name.
    let r = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// A root to read sources from: the build context (with its .dockerignore) or another
/// stage's or image's root (nothing excluded).
pub(crate) struct Tree<'a> {
    pub root: RawFd,
    pub ignore: Option<&'a Ignore>,
    /// How errors name the root ("build context", "stage builder").
    pub what: &'a str,
}

/// A source found in a tree: its path relative to the root and an O_PATH fd to what it
/// resolves to (a named symlink is followed, inside the root).
pub(crate) struct Source {
    pub rel: String,
    pub fd: OwnedFd,
    pub st: libc::stat,
}

impl Source {
    /// The name a copied file gets: the last component of its path.
    pub fn name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or(&self.rel)
    }

    pub fn is_dir(&self) -> bool {
        kind(&self.st) == libc::S_IFDIR
    }
}

/// Go's filepath.Match for one path component: `*`, `?`, `[...]` (with ranges, `^` or `!`
/// negation), `\` escapes. Linear in practice: `*` backtracks to the last star only.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' if n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(&p, pi, n[ni])
                        && ok
                    {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c == n[ni] && c != '?' && c != '\\' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) if n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start]` (`[`): (matched, index after `]`).
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = matches!(p.get(i), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if lo == '\\' {
            i += 1;
            lo = *p.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            hi = *p.get(i + 1)?;
            i += 2;
            if hi == '\\' {
                hi = *p.get(i)?;
                i += 1;
            }
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A source path as written, cleaned and kept inside the root: `a/../b` is `b`, `./x` is `x`,
/// `/x` is `x`; climbing above the root is an error, as in Docker.
pub(crate) fn clean_source(path: &str, what: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("forbidden path outside the {what}: {path}");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

impl Tree<'_> {
    fn excluded(&self, rel: &str, is_dir: bool) -> bool {
        !rel.is_empty() && self.ignore.is_some_and(|i| i.matches(rel, is_dir))
    }

    fn open_rel(&self, rel: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
        let p = if rel.is_empty() { "." } else { rel };
        safepath::openat_in_root(self.root, Path::new(p), flags, 0)
    }

    /// The sources a COPY/ADD path names, wildcards expanded (sorted), excluded paths left out.
    /// None found is an error naming the path.
    pub fn resolve(&self, path: &str) -> Result<Vec<Source>> {
        let clean = clean_source(path, self.what)?;
        let mut found: Vec<String> = vec![String::new()];
        if !clean.is_empty() {
            for comp in clean.split('/') {
                let mut next = Vec::new();
                for base in &found {
                    let join = |n: &str| if base.is_empty() { n.to_string() } else { format!("{base}/{n}") };
                    if !has_wildcard(comp) {
                        let unescaped = comp.replace('\\', "");
                        next.push(join(&unescaped));
                        continue;
                    }
                    let Ok(dir) = self.open_rel(base, libc::O_RDONLY | libc::O_DIRECTORY) else { continue };
                    for name in list(dir.as_raw_fd())? {
                        let Ok(n) = name.to_str() else { continue };
                        if glob_match(comp, n) {
                            let rel = join(n);
                            let is_dir =
                                lstat_at(dir.as_raw_fd(), &name).map(|s| kind(&s) == libc::S_IFDIR).unwrap_or(false);
                            if !self.excluded(&rel, is_dir) {
                                next.push(rel);
                            }
                        }
                    }
                }
                found = next;
            }
        }
        let mut out = Vec::new();
        for rel in found {
            let fd = match self.open_rel(&rel, libc::O_PATH) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("{path}: resolving in the {}", self.what)),
            };
            let st = fstat(fd.as_raw_fd())?;
            if self.excluded(&rel, kind(&st) == libc::S_IFDIR) {
                continue;
            }
            out.push(Source { rel, fd, st });
        }
        if out.is_empty() {
            if self.ignore.is_some() {
                bail!("file not found in {} or excluded by .dockerignore: {path}", self.what);
            }
            bail!("file not found in {}: {path}", self.what);
        }
        Ok(out)
    }
}

/// What a copy does with owners, modes and exclusions.
pub(crate) struct CopyOpts<'a> {
    /// `--chown`: every copied entry gets it.
    pub owner: Option<(u32, u32)>,
    /// Without `--chown`: keep the source's owners (`COPY --from`) or make them root's.
    pub keep_owner: bool,
    /// `--chmod`.
    pub mode: Option<super::copy::Chmod>,
    /// The context's .dockerignore (matched on context-relative paths).
    pub ignore: Option<&'a Ignore>,
    /// `--exclude` (matched on paths relative to the source).
    pub exclude: Option<&'a Ignore>,
    /// Entries copied so far (a progress figure and a sanity limit).
    pub count: u64,
}

impl CopyOpts<'_> {
    pub fn skip(&self, ctx_rel: &str, src_rel: &str, is_dir: bool) -> bool {
        (!ctx_rel.is_empty() && self.ignore.is_some_and(|i| i.matches(ctx_rel, is_dir)))
            || (!src_rel.is_empty() && self.exclude.is_some_and(|i| i.matches(src_rel, is_dir)))
    }

    pub fn skip_dir(&self, ctx_rel: &str, src_rel: &str) -> bool {
        (!ctx_rel.is_empty() && self.ignore.is_some_and(|i| i.matches(ctx_rel, true) && i.can_skip_dir(ctx_rel)))
            || (!src_rel.is_empty()
                && self.exclude.is_some_and(|i| i.matches(src_rel, true) && i.can_skip_dir(src_rel)))
    }

    fn owner_of(&self, st: &libc::stat) -> (u32, u32) {
        match self.owner {
            Some(o) => o,
            None if self.keep_owner => (st.st_uid, st.st_gid),
            None => (0, 0),
        }
    }

    /// What a copied entry gets: `--chown`/`--chmod` or the source's (owner root's but
    /// for `--from`), its modification time.
    pub fn meta(&self, st: &libc::stat) -> super::emit::Meta {
        let (uid, gid) = self.owner_of(st);
        let own = st.st_mode & 0o7777;
        let mode = match &self.mode {
            _ if kind(st) == libc::S_IFLNK => 0o777,
            Some(m) => m.apply(own, kind(st) == libc::S_IFDIR),
            None => own,
        };
        super::emit::Meta { mode, uid, gid, mtime: st.st_mtime }
    }
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() { name.to_string() } else { format!("{base}/{name}") }
}

/// A checksum of sources for the build cache: each entry's path (relative to its source),
/// type, mode, owner, size, link target and content. Modification times are left out, as
/// Docker does: touching a file does not invalidate the cache, changing it does.
pub(crate) struct TreeHasher<'a> {
    h: Hasher,
    ignore: Option<&'a Ignore>,
    exclude: Option<&'a Ignore>,
    buf: Vec<u8>,
    pub files: u64,
}

impl<'a> TreeHasher<'a> {
    pub fn new(ignore: Option<&'a Ignore>, exclude: Option<&'a Ignore>) -> Self {
        TreeHasher { h: Hasher::new(Algo::Sha256), ignore, exclude, buf: vec![0u8; 64 << 10], files: 0 }
    }

    pub fn text(&mut self, s: &str) {
        self.h.update(s.as_bytes());
        self.h.update(b"\0");
    }

    pub fn finish(self) -> String {
        self.h.finish().to_string()
    }

    fn entry(&mut self, path: &str, st: &libc::stat) {
        let line = format!(
            "{path}\0{:o}\0{:o}\0{}:{}\0{}\0",
            kind(st),
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid,
            if kind(st) == libc::S_IFREG { st.st_size } else { 0 }
        );
        self.h.update(line.as_bytes());
    }

    fn content(&mut self, fd: OwnedFd) -> Result<()> {
        let mut f = fs::File::from(fd);
        loop {
            let n = f.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            self.h.update(&self.buf[..n]);
        }
        self.h.update(b"\0");
        self.files += 1;
        Ok(())
    }

    /// Adds a resolved source (a directory with everything under it).
    pub fn source(&mut self, src: &Source) -> Result<()> {
        self.entry(&format!("/{}", src.name()), &src.st);
        match kind(&src.st) {
            libc::S_IFDIR => {
                let fd = reopen(src.fd.as_raw_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
                self.dir(fd.as_raw_fd(), &src.rel, "", 0)
            }
            libc::S_IFREG => self.content(reopen(src.fd.as_raw_fd(), libc::O_RDONLY)?),
            _ => Ok(()),
        }
    }

    fn dir(&mut self, fd: RawFd, ctx_rel: &str, src_rel: &str, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!("{ctx_rel}: directories nested deeper than {MAX_DEPTH}");
        }
        let o = CopyOpts {
            owner: None,
            keep_owner: true,
            mode: None,
            ignore: self.ignore,
            exclude: self.exclude,
            count: 0,
        };
        for name in list(fd)? {
            let n = String::from_utf8_lossy(name.as_bytes()).into_owned();
            let (crel, srel) = (join(ctx_rel, &n), join(src_rel, &n));
            let st = lstat_at(fd, &name)?;
            let is_dir = kind(&st) == libc::S_IFDIR;
            if is_dir && o.skip_dir(&crel, &srel) {
                continue;
            }
            if o.skip(&crel, &srel, is_dir) && !is_dir {
                continue;
            }
            self.entry(&srel, &st);
            match kind(&st) {
                libc::S_IFDIR => {
                    let sub = openat(fd, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                    self.dir(sub.as_raw_fd(), &crel, &srel, depth + 1)?;
                }
                libc::S_IFREG => self.content(openat(fd, &name, libc::O_RDONLY, 0)?)?,
                libc::S_IFLNK => {
                    let t = readlink_at(fd, &name)?;
                    self.h.update(t.as_bytes());
                    self.h.update(b"\0");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether `path` (absolute, in image terms) exists in a stack of unpacked layers (overlay
/// format, top layer first): the first layer that has it, or a whiteout of it or of a parent,
/// decides; an opaque directory hides what lower layers have below it. Symlinks on the way
/// count as existing (the caller only uses this to leave such paths alone).
pub(crate) fn exists_in_layers(layers: &[PathBuf], path: &str) -> bool {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() {
        return true;
    }
    for dir in layers {
        let mut cur = dir.clone();
        let mut opaque = false;
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let Ok(m) = fs::symlink_metadata(&cur) else { break };
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return false;
            }
            if i + 1 == comps.len() || m.file_type().is_symlink() {
                return true;
            }
            if !m.is_dir() {
                return false;
            }
            if xattr_is(&cur, "trusted.overlay.opaque", b"y") {
                opaque = true;
            }
        }
        if opaque {
            return false;
        }
    }
    false
}

fn xattr_is(p: &Path, name: &str, want: &[u8]) -> bool {
    let (Ok(c), Ok(n)) = (CString::new(p.as_os_str().as_bytes()), CString::new(name)) else { return false };
    let mut buf = [0u8; 16];
    // SAFETY: lgetxattr into our buffer.
    let len = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    len >= 0 && &buf[..len as usize] == want
}

/// Whether the entry `name` of `dir` has the xattr `key` (not following a symlink).
pub(crate) fn xattr_at(dir: RawFd, name: &CStr, key: &str) -> bool {
    let (Ok(p), Ok(k)) = (CString::new(format!("/proc/self/fd/{dir}/{}", name.to_string_lossy())), CString::new(key))
    else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: lgetxattr into our buffer; the /proc path reaches the entry through our dir fd.
    unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) >= 0 }
}

/// Whether a directory has no entries.
pub(crate) fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_go() {
        for (p, n, want) in [
            ("*.txt", "a.txt", true),
            ("*.txt", "a.txtx", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn sources_stay_inside() {
        assert_eq!(clean_source("./a/../b/", "build context").ok().as_deref(), Some("b"));
        assert_eq!(clean_source("/x", "build context").ok().as_deref(), Some("x"));
        assert_eq!(clean_source(".", "build context").ok().as_deref(), Some(""));
        let e = clean_source("../secret", "build context").err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("forbidden path outside the build context: ../secret"));
        assert!(clean_source("a/../../b", "build context").is_err());
    }

    #[test]
    fn resolve_wildcards_ignore_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("sub/deep")).unwrap();
        fs::write(root.join("a.txt"), "a").unwrap();
        fs::write(root.join("b.txt"), "b").unwrap();
        fs::write(root.join("c.log"), "c").unwrap();
        fs::write(root.join("sub/deep/f"), "f").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        let rootfd = safepath::open_root(root).unwrap();
        let ig = Ignore::parse("b.txt\n").unwrap();
        let t = Tree { root: rootfd.as_raw_fd(), ignore: Some(&ig), what: "build context" };
        let found: Vec<String> = t.resolve("*.txt").unwrap().into_iter().map(|s| s.rel).collect();
        assert_eq!(found, vec!["a.txt"]);
        assert!(t.resolve("b.txt").is_err(), "ignored");
        assert!(t.resolve("../a.txt").is_err());
        // A symlink that points out resolves inside the context: /etc/passwd is not there.
        assert!(t.resolve("escape").is_err());
        let s = t.resolve("s*/d*").unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].is_dir());
        // Checksums: content counts, mtimes do not.
        let sum = |t: &Tree| {
            let mut h = TreeHasher::new(t.ignore, None);
            for s in t.resolve(".").unwrap() {
                h.source(&s).unwrap();
            }
            h.finish()
        };
        let first = sum(&t);
        let f = fs::File::options().write(true).open(root.join("a.txt")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(sum(&t), first);
        fs::write(root.join("b.txt"), "ignored change").unwrap();
        assert_eq!(sum(&t), first, "ignored files do not count");
        fs::write(root.join("a.txt"), "A").unwrap();
        assert_ne!(sum(&t), first);
    }

    #[test]
    fn layer_lookup() {
        let d = tempfile::tempdir().unwrap();
        let (top, low) = (d.path().join("top"), d.path().join("low"));
        fs::create_dir_all(low.join("etc")).unwrap();
        fs::write(low.join("etc/hosts"), "").unwrap();
        fs::create_dir_all(top.join("proc")).unwrap();
        let layers = vec![top, low];
        assert!(exists_in_layers(&layers, "/etc/hosts"));
        assert!(exists_in_layers(&layers, "/proc"));
        assert!(!exists_in_layers(&layers, "/etc/resolv.conf"));
        assert!(!exists_in_layers(&layers, "/sys"));
    }
}
