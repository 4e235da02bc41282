//! COPY and ADD, with Docker's rules: a directory source copies what is in it; a file goes to
//! `DEST/NAME` when DEST ends with `/` or is a directory of the image, else to DEST itself;
//! several sources need a directory DEST ending with `/`; a relative DEST is under WORKDIR;
//! files belong to root (`--chown` resolved in the image's /etc/passwd and /etc/group) and
//! keep their modes (`--chmod`) and modification times. ADD unpacks local tar archives (plain,
//! gzip, zstd, bzip2, xz) through berth-storage's unpacker and downloads URLs. `--from` reads another
//! stage's or image's root (owners kept), `--exclude` leaves paths out, `--parents` keeps a
//! source's parent directories.
//!
//! Sources in the context are resolved (and hashed for the cache key) before the step runs;
//! the copy itself writes into the image's root mounted in a private mount namespace.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result, bail};
use berth_build::Ignore;
use berth_build::dockerfile::{Command, Heredoc, Instruction};
use berth_image::manifest::Compression;
use berth_runtime::safepath;

use super::emit::{self, LayerOut, Meta};
use super::fetch::{self, Download};
use super::image::{HistoryEntry, Img};
use super::tree::{self, CopyOpts, Source, Tree, TreeHasher};
use super::{Builder, StageState, join_clean};

/// COPY's and ADD's arguments, expanded.
pub(super) struct CopySpec {
    pub add: bool,
    pub sources: Vec<String>,
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
    pub parents: bool,
    /// `--link`: the layer is made without the parent's files.
    pub link: bool,
}

impl CopySpec {
    pub fn of(cmd: &Command) -> Option<CopySpec> {
        match cmd {
            Command::Copy(c) => Some(CopySpec {
                add: false,
                sources: c.sources.clone(),
                heredocs: c.heredocs.clone(),
                dest: c.dest.clone(),
                from: c.from.clone(),
                chown: c.chown.clone(),
                chmod: c.chmod.clone(),
                checksum: None,
                unpack: Some(false),
                exclude: c.exclude.clone(),
                parents: c.parents,
                link: c.link,
            }),
            Command::Add(a) => Some(CopySpec {
                add: true,
                sources: a.sources.clone(),
                heredocs: a.heredocs.clone(),
                dest: a.dest.clone(),
                from: None,
                chown: a.chown.clone(),
                chmod: a.chmod.clone(),
                checksum: a.checksum.clone(),
                unpack: a.unpack,
                exclude: a.exclude.clone(),
                parents: false,
                link: a.link,
            }),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        if self.add { "ADD" } else { "COPY" }
    }
}

/// What a COPY/ADD found before it runs.
pub(super) struct CopyPrep {
    /// Per source in the context: what it matched.
    context: Vec<Vec<Source>>,
    downloads: Vec<Download>,
    from: Option<Img>,
    exclude: Option<Ignore>,
}

/// `--chmod`: an octal mode, or symbolic clauses as chmod(1) takes them (`u+x,go-w`, `a=rX`,
/// `g=u`), applied to each copied file's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The bits of the classes named (u, g, o; all when none is).
    who: u32,
    /// Operator and permission letters, in order: `u+x-w` is [('+', "x"), ('-', "w")].
    ops: Vec<(char, String)>,
}

impl Chmod {
    /// The mode a file (or directory) of mode `mode` gets.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for c in clauses {
            for (op, perms) in &c.ops {
                let mut bits = 0;
                for p in perms.chars() {
                    bits |= match p {
                        'r' => 0o444,
                        'w' => 0o222,
                        'x' => 0o111,
                        'X' if is_dir || mode & 0o111 != 0 => 0o111,
                        's' => 0o6000,
                        't' => 0o1000,
                        // Copy another class's bits to every class.
                        'u' => ((mode >> 6) & 7) * 0o111,
                        'g' => ((mode >> 3) & 7) * 0o111,
                        'o' => (mode & 7) * 0o111,
                        _ => 0,
                    };
                }
                bits &= c.who;
                mode = match op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => (mode & !c.who) | bits,
                };
            }
        }
        mode
    }
}

pub(super) fn parse_chmod(s: &str) -> Result<Chmod> {
    let bad = || anyhow::anyhow!("invalid --chmod={s}: give an octal mode (755) or chmod's symbolic form (u+x,go-w)");
    if s.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return match u32::from_str_radix(s, 8) {
            Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
            _ => Err(bad()),
        };
    }
    let mut clauses = Vec::new();
    for part in s.split(',') {
        let at = part.find(['+', '-', '=']).ok_or_else(bad)?;
        let (who_s, rest) = part.split_at(at);
        let mut who = 0;
        for w in who_s.chars() {
            who |= match w {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return Err(bad()),
            };
        }
        if who == 0 {
            who = 0o7777;
        }
        let mut ops: Vec<(char, String)> = Vec::new();
        for ch in rest.chars() {
            match ch {
                '+' | '-' | '=' => ops.push((ch, String::new())),
                'r' | 'w' | 'x' | 'X' | 's' | 't' | 'u' | 'g' | 'o' => ops.last_mut().ok_or_else(bad)?.1.push(ch),
                _ => return Err(bad()),
            }
        }
        // A class to copy from stands alone after its operator (`g=u`, not `g=ur`).
        if ops.iter().any(|(_, p)| p.len() > 1 && p.contains(['u', 'g', 'o'])) {
            return Err(bad());
        }
        clauses.push(Clause { who, ops });
    }
    Ok(Chmod::Symbolic(clauses))
}

/// `--chown=USER[:GROUP]`, names looked up in the image's /etc/passwd and /etc/group. A user
/// without a group gets the group of the same number, as Docker documents.
fn parse_chown(root: RawFd, spec: &str) -> Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str, what: &str| -> Result<u32> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        let fd = safepath::openat_in_root(root, Path::new(file), libc::O_RDONLY, 0)
            .with_context(|| format!("unable to find {what} {name}: no /{file} in the image"))?;
        let mut text = String::new();
        std::fs::File::from(fd).take(16 << 20).read_to_string(&mut text)?;
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name) && f.len() > 2)
            .and_then(|f| f[2].parse().ok())
            .with_context(|| format!("unable to find {what} {name}: no matching entries in /{file}"))
    };
    if user.is_empty() {
        bail!("invalid --chown={spec}");
    }
    let uid = lookup("etc/passwd", user, "user")?;
    let gid = match group {
        Some(g) if !g.is_empty() => lookup("etc/group", g, "group")?,
        _ => uid,
    };
    Ok((uid, gid))
}

/// The archive format of a file ADD may unpack: None when it is not a tar archive.
/// How a local archive for ADD is compressed: what image layers use, and bzip2 and xz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packed {
    Layer(Compression),
    Bzip2,
    Xz,
}

/// A reader that undoes `p`.
fn unpacked<'a>(r: impl BufRead + 'a, p: Packed) -> Result<Box<dyn Read + 'a>> {
    Ok(match p {
        Packed::Layer(c) => berth_image::archive::decompress(r, c)?,
        Packed::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Packed::Xz => Box::new(lzma_rust2::XzReader::new(r, true)),
    })
}

fn archive_kind(fd: RawFd) -> Result<Option<Packed>> {
    let mut f = std::fs::File::from(tree::reopen(fd, libc::O_RDONLY)?);
    let mut head = [0u8; 6];
    let n = f.read(&mut head)?;
    let head = &head[..n];
    let c = if head.starts_with(&[0x1f, 0x8b]) {
        Packed::Layer(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Packed::Layer(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Packed::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Packed::Xz
    } else {
        Packed::Layer(Compression::None)
    };
    // A tar header says `ustar` at offset 257 (old v7 archives without it are not unpacked).
    let f = std::fs::File::from(tree::reopen(fd, libc::O_RDONLY)?);
    let mut r = unpacked(BufReader::new(f), c)?;
    let mut block = vec![0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(_) => return Ok(None),
        }
    }
    Ok((got == 512 && &block[257..262] == b"ustar").then_some(c))
}

/// Where a file named `name` lands: `DEST/NAME` when DEST ends with `/` or is a directory of
/// the image, else DEST itself (a path without symlinks, relative to the root).
fn file_target(out: &LayerOut, dest: &str, dir_hint: bool, name: &str) -> Result<String> {
    let (rel, is_dir) = out.resolve(dest)?;
    if dir_hint || is_dir {
        return Ok(if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") });
    }
    if rel.is_empty() {
        bail!("cannot copy a file onto /");
    }
    Ok(rel)
}

/// A file of known content (heredocs, downloads).
fn put_file(out: &mut LayerOut, rel: &str, meta: Meta, size: u64, r: impl Read) -> Result<()> {
    out.parents(rel)?;
    out.file(rel, meta, size, r)
}

impl Builder<'_> {
    pub(super) fn copy_prepare(&mut self, st: &StageState, spec: &CopySpec, key: &mut super::Key) -> Result<CopyPrep> {
        let name = spec.name();
        if spec.sources.is_empty() && spec.heredocs.is_empty() {
            bail!("{name} needs a source and a destination");
        }
        let exclude = if spec.exclude.is_empty() { None } else { Some(Ignore::new(&spec.exclude)?) };
        let mut prep = CopyPrep { context: Vec::new(), downloads: Vec::new(), from: None, exclude };
        if let Some(from) = &spec.from {
            let img = self.stage_or_image(st, from)?;
            key.text(&format!("from {}", img.id));
            prep.from = Some(img);
            return Ok(prep);
        }
        for s in &spec.sources {
            if fetch::is_git(s) {
                bail!("{name} {s}: git sources are not supported by berth");
            }
            if fetch::is_url(s) {
                if !spec.add {
                    bail!("source can't be a URL for COPY");
                }
                let d = fetch::fetch(s, &self.tmp.make("download")?).with_context(|| format!("ADD {s}"))?;
                if let Some(want) = &spec.checksum
                    && d.digest.to_string() != *want
                {
                    bail!("ADD {s}: the download's digest is {}, not {want} (--checksum)", d.digest);
                }
                key.text(&format!("url {s} {}", d.digest));
                prep.downloads.push(d);
                continue;
            }
            if spec.checksum.is_some() {
                bail!("ADD --checksum is only for URL sources");
            }
            let Some(root) = &self.ctx_root else {
                bail!("{s}: there is no build context (the Dockerfile came on stdin): {name} has nothing to copy");
            };
            let tree = Tree { root: root.as_raw_fd(), ignore: self.ignore.as_ref(), what: "build context" };
            let found = tree.resolve(s)?;
            let mut h = TreeHasher::new(self.ignore.as_ref(), prep.exclude.as_ref());
            for f in &found {
                h.text(&f.rel);
                h.source(f)?;
            }
            key.text(&h.finish());
            prep.context.push(found);
        }
        Ok(prep)
    }

    pub(super) fn copy_step(
        &mut self,
        st: &StageState,
        spec: &CopySpec,
        prep: CopyPrep,
        inst: &Instruction,
        created: &str,
    ) -> Result<Img> {
        let name = spec.name();
        let dest = join_clean(&st.img.workdir(), &spec.dest);
        let dir_hint =
            spec.dest.ends_with('/') || spec.dest == "." || spec.dest.ends_with("/.") || spec.dest.ends_with("..");
        let keep_owner = spec.from.is_some();
        let mode = spec.chmod.as_deref().map(parse_chmod).transpose()?;
        let ignore = if spec.from.is_some() { None } else { self.ignore.as_ref() };
        let from_name = spec.from.clone().unwrap_or_default();
        let (context, downloads, exclude) = (prep.context, prep.downloads, prep.exclude);
        let count_fixed = spec.heredocs.len() + downloads.len();
        let now = self.o.epoch.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
        });
        if spec.link
            && let Some(c) = &spec.chown
            && c.split(':').any(|p| p.parse::<u32>().is_err())
        {
            bail!(
                "{name} --link --chown={c}: a linked layer is made without the image's files, so user and group names \
                 cannot be looked up there; give numeric ids"
            );
        }
        let layer = self.in_view(st, spec.link, prep.from.as_ref(), |out, view| {
            let owner = spec.chown.as_deref().map(|c| parse_chown(out.root(), c)).transpose()?;
            let resolved;
            let groups: &[Vec<Source>] = match view {
                Some(v) => {
                    let what = format!("stage {from_name}");
                    let t = Tree { root: v, ignore: None, what: &what };
                    resolved = spec.sources.iter().map(|s| t.resolve(s)).collect::<Result<Vec<_>>>()?;
                    &resolved
                }
                None => &context,
            };
            let total: usize = groups.iter().map(Vec::len).sum::<usize>() + count_fixed;
            if total > 1 && !dir_hint {
                bail!(
                    "When using {name} with more than one source file, the destination must be a directory and end with a /"
                );
            }
            let mut o = CopyOpts { owner, keep_owner, mode: mode.clone(), ignore, exclude: exclude.as_ref(), count: 0 };
            for (pattern, srcs) in spec.sources.iter().zip(groups) {
                for src in srcs {
                    let target = if spec.parents {
                        parents_target(&dest, pattern, &src.rel, src.is_dir())
                    } else {
                        dest.clone()
                    };
                    place(out, src, &target, dir_hint || spec.parents && !src.is_dir(), spec, &mut o)?;
                }
            }
            let (uid, gid) = owner.unwrap_or((0, 0));
            for h in &spec.heredocs {
                let rel = file_target(out, &dest, dir_hint, &h.name)?;
                let body = h.body();
                let meta = Meta { mode: mode.as_ref().map_or(0o644, |m| m.apply(0o644, false)), uid, gid, mtime: now };
                put_file(out, &rel, meta, body.len() as u64, body.as_bytes())?;
            }
            for d in &downloads {
                let f = std::fs::File::open(&d.path)?;
                if spec.unpack == Some(true) && archive_kind(f.as_raw_fd())?.is_some() {
                    extract(out, &dest, f.as_raw_fd())?;
                    continue;
                }
                let rel = file_target(out, &dest, dir_hint, &d.name)?;
                let size = f.metadata()?.len();
                let meta =
                    Meta { mode: mode.as_ref().map_or(0o600, |m| m.apply(0o600, false)), uid, gid, mtime: d.mtime.unwrap_or(now) };
                put_file(out, &rel, meta, size, BufReader::new(f))?;
            }
            Ok(())
        })?;
        let h = HistoryEntry {
            created_by: inst.original.clone(),
            empty_layer: layer.is_none(),
            step: self.step_key.clone(),
        };
        self.e.commit_img(&st.img, st.img.config.clone(), layer.as_ref(), Some(h), created)
    }
}

/// `COPY --parents a/b/c.txt /dst/` -> `/dst/a/b/c.txt`; a `/./` in the pattern says where the
/// kept part starts.
fn parents_target(dest: &str, pattern: &str, rel: &str, is_dir: bool) -> String {
    let skip = match pattern.find("/./") {
        Some(i) => tree::clean_source(&pattern[..i], "context")
            .map(|p| p.matches('/').count() + usize::from(!p.is_empty()))
            .unwrap_or(0),
        None => 0,
    };
    let kept: Vec<&str> = rel.split('/').skip(skip).collect();
    // A directory is copied into its own path, a file into its parent.
    let parent = if is_dir { &kept[..] } else { &kept[..kept.len().saturating_sub(1)] };
    if parent.is_empty() { dest.to_string() } else { join_clean(dest, &parent.join("/")) }
}

/// Copies one resolved source to `dest` by Docker's rules.
fn place(
    out: &mut LayerOut,
    src: &Source,
    dest: &str,
    dir_hint: bool,
    spec: &CopySpec,
    o: &mut CopyOpts,
) -> Result<()> {
    if src.is_dir() {
        let (rel, exists) = out.resolve(dest)?;
        out.parents(&rel)?;
        if exists {
            out.existing_dir(&rel)?;
        } else {
            out.dir(&rel, o.meta(&src.st))?;
        }
        return emit::source(out, src, &rel, o);
    }
    if spec.add
        && spec.unpack != Some(false)
        && tree::kind(&src.st) == libc::S_IFREG
        && archive_kind(src.fd.as_raw_fd())?.is_some()
    {
        return extract(out, dest, src.fd.as_raw_fd());
    }
    let rel = file_target(out, dest, dir_hint, src.name())?;
    out.parents(&rel)?;
    emit::source(out, src, &rel, o)
}

/// An archive entry's path, relative and clean; `..` is refused, the root itself is None.
fn entry_path(p: &Path) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                bail!("archive entry {}: path traversal (..) is not allowed", p.display())
            }
            _ => {}
        }
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join("/")) })
}

/// Unpacks the tar archive in `fd` under directory `dest` (owners and modes as in the archive;
/// devices and whiteout names left out).
fn extract(out: &mut LayerOut, dest: &str, fd: RawFd) -> Result<()> {
    let Some(c) = archive_kind(fd)? else { bail!("not a tar archive") };
    let (rel, exists) = out.resolve(dest)?;
    out.parents(&rel)?;
    if !exists {
        out.dir(&rel, Meta { mode: 0o755, uid: 0, gid: 0, mtime: out.now() })?;
    }
    out.existing_dir(&rel)?;
    let under = |p: &str| if rel.is_empty() { p.to_string() } else { format!("{rel}/{p}") };
    let f = std::fs::File::from(tree::reopen(fd, libc::O_RDONLY)?);
    let r = unpacked(BufReader::with_capacity(256 << 10, f), c)?;
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().context("reading the archive")? {
        let mut e = e.context("reading the archive")?;
        let Some(path) = entry_path(&e.path()?)? else { continue };
        if path.rsplit('/').next().is_some_and(|n| n.starts_with(".wh.")) {
            continue;
        }
        let h = e.header().clone();
        let target = under(&path);
        match h.entry_type() {
            tar::EntryType::Directory | tar::EntryType::Regular | tar::EntryType::Continuous => {
                out.raw(&target, h, None, &mut e)?;
            }
            tar::EntryType::Symlink => {
                let link = e.link_name()?.context("a symlink without a target")?.into_owned();
                out.raw(&target, h, Some(&link), std::io::empty())?;
            }
            tar::EntryType::Link => {
                let link = e.link_name()?.context("a hardlink without a target")?.into_owned();
                let Some(l) = entry_path(&link)? else { bail!("archive entry {path}: a hardlink to the root") };
                out.raw(&target, h, Some(Path::new(&under(&l))), std::io::empty())?;
            }
            // Devices, fifos and extension headers are not unpacked.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_parents() {
        assert_eq!(parse_chmod("755").ok(), Some(Chmod::Octal(0o755)));
        assert_eq!(parse_chmod("0640").ok(), Some(Chmod::Octal(0o640)));
        assert!(parse_chmod("17777").is_err());
        let m = |s: &str, mode: u32, dir: bool| parse_chmod(s).unwrap().apply(mode, dir);
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-w", 0o666, false), 0o644);
        assert_eq!(m("a=rX", 0o640, false), 0o444);
        assert_eq!(m("a=rX", 0o640, true), 0o555);
        assert_eq!(m("a=rX", 0o740, false), 0o555);
        assert_eq!(m("u=rwx,g=rx,o=", 0o000, false), 0o750);
        assert_eq!(m("g=u", 0o640, false), 0o660);
        assert_eq!(m("+x", 0o600, false), 0o711);
        assert_eq!(m("u+x-w", 0o644, false), 0o544);
        assert_eq!(m("u+s,o+t", 0o755, true), 0o5755);
        for bad in ["u+y", "z+x", "ux", "", "u+x,", "g=ur", "8"] {
            assert!(parse_chmod(bad).is_err(), "{bad}");
        }
        assert_eq!(parents_target("/dst", "a/b/c.txt", "a/b/c.txt", false), "/dst/a/b");
        assert_eq!(parents_target("/dst", "a/./b/c.txt", "a/b/c.txt", false), "/dst/b");
        assert_eq!(parents_target("/dst", "c.txt", "c.txt", false), "/dst");
        assert_eq!(parents_target("/dst", "a/*", "a/d", true), "/dst/a/d");
    }
}
