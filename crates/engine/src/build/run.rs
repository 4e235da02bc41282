//! RUN: a container of the current image, through the engine like `berth run` (the image's
//! Env, WorkingDir and User; the stage's build arguments added to the environment for this
//! step only; SHELL or the exec form; `--mount`s; the network per `--network`), its output on
//! our stdout. Once it exited 0 its upper dir becomes the layer, less the mount points the
//! runtime had to make there (/proc, /etc/hosts, mount targets... when the image lacks them).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use berth_build::dockerfile::{CommandLine, Instruction, Mount, MountType, Network, RunArgs, Security, Sharing};
use berth_runtime::safepath;

use super::image::{HistoryEntry, Img};
use super::mounts::{HostMount, Overlay};
use super::tree::{self, Tree, TreeHasher};
use super::{Builder, INTERRUPTED, Secret, StageState, join_clean, run_pid_clear, run_pid_set};
use crate::containers::{Attach, Bind, ContainerConfig, CreateRequest};
use crate::{Engine, ExitError, FileLock};

/// Mount points the runtime makes in every container.
const RUNTIME_MOUNTS: [&str; 6] = ["/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// Removes the step's container (and its anonymous volumes) however the step ends.
struct ContainerGuard<'a> {
    e: &'a Engine,
    id: String,
    /// Its init's slot among the running steps' (for Ctrl-C).
    slot: Option<usize>,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        run_pid_clear(self.slot.take());
        let row = self.e.container(&self.id).ok();
        let _ = self.e.remove_container(&self.id, true);
        if let Some(r) = row {
            self.e.remove_anonymous_volumes(&r);
        }
    }
}

/// What a RUN's mounts need while it runs.
#[derive(Default)]
struct Prepared {
    binds: Vec<Bind>,
    tmpfs: Vec<(String, String)>,
    env: Vec<String>,
    targets: Vec<String>,
    _mounts: Vec<HostMount>,
    _locks: Vec<FileLock>,
}

impl Builder<'_> {
    /// The RUN's command line: SHELL (or `/bin/sh -c`) for the shell form; a heredoc that is the
    /// whole command runs as the script (a `#!` one as a file of its own, like BuildKit);
    /// other heredocs go to the shell with their bodies.
    fn run_argv(&self, st: &StageState, r: &RunArgs, p: &mut Prepared) -> Result<Vec<String>> {
        let shell = st.img.shell();
        match &r.command {
            CommandLine::Exec(v) => Ok(v.clone()),
            CommandLine::Shell(text) if r.heredocs.is_empty() => Ok(shell.into_iter().chain([text.clone()]).collect()),
            CommandLine::Shell(text) => {
                let only = r.heredocs.len() == 1 && is_heredoc_marker(text.trim(), &r.heredocs[0].name);
                if only {
                    let body = r.heredocs[0].body();
                    if body.starts_with("#!") {
                        // Under /dev: a tmpfs in the container, so the mount point never
                        // reaches the layer.
                        let dir = self.tmp.make("heredoc")?;
                        let file = dir.join("script");
                        std::fs::write(&file, &body)?;
                        chmod(&file, 0o755)?;
                        let target = format!("/dev/pipes/{}", r.heredocs[0].name);
                        p.binds.push(Bind {
                            source: file,
                            destination: target.clone(),
                            readonly: true,
                            ..Default::default()
                        });
                        return Ok(vec![target]);
                    }
                    return Ok(shell.into_iter().chain([body]).collect());
                }
                let mut full = text.clone();
                for h in &r.heredocs {
                    full.push('\n');
                    full.push_str(&h.content);
                    full.push_str(&h.name);
                }
                Ok(shell.into_iter().chain([full]).collect())
            }
        }
    }

    /// The build arguments a RUN sees as environment variables: the stage's ARGs with a value
    /// (ENV of the same name wins), and the proxy arguments given with `--build-arg`.
    fn run_env(&self, st: &StageState) -> Vec<String> {
        let env = st.img.env();
        let mut out: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for (k, v) in &st.args {
            if let Some(v) = v
                && !env.iter().any(|(e, _)| e == k)
                && seen.insert(k.clone())
            {
                out.push(format!("{k}={v}"));
            }
        }
        for (k, v) in berth_build::subst::proxy_args(&self.o.build_args) {
            if seen.insert(k.clone()) {
                out.push(format!("{k}={v}"));
            }
        }
        out
    }

    /// Adds to the cache key what a RUN depends on beyond its text and parent: the build
    /// arguments it sees (proxy ones excepted, as Docker does) and the content of what it mounts.
    pub(super) fn run_key(&mut self, st: &StageState, r: &RunArgs, key: &mut super::Key) -> Result<()> {
        let proxies: BTreeSet<String> = berth_build::subst::PROXY_ARGS.iter().map(|s| s.to_string()).collect();
        for e in self.run_env(st) {
            if !proxies.contains(e.split('=').next().unwrap_or("")) {
                key.text(&e);
            }
        }
        for m in &r.mounts {
            if m.kind != MountType::Bind {
                continue;
            }
            match &m.from {
                Some(from) => key.text(&format!("from {}", self.stage_or_image(st, from)?.id)),
                None => {
                    let root = self.ctx_root.as_ref().context("RUN --mount=type=bind needs a build context")?;
                    let t = Tree { root: root.as_raw_fd(), ignore: self.ignore.as_ref(), what: "build context" };
                    let mut h = TreeHasher::new(self.ignore.as_ref(), None);
                    for s in t.resolve(m.source.as_deref().unwrap_or("."))? {
                        h.source(&s)?;
                    }
                    key.text(&h.finish());
                }
            }
        }
        Ok(())
    }

    fn prepare_mounts(&self, st: &StageState, r: &RunArgs, p: &mut Prepared) -> Result<()> {
        let workdir = st.img.workdir();
        for m in &r.mounts {
            let target = |default: Option<String>| -> Result<String> {
                match m.target.as_deref().map(str::to_string).or(default) {
                    Some(t) if !t.is_empty() => Ok(join_clean(&workdir, &t)),
                    _ => bail!("--mount type={} needs a target", mount_name(m.kind)),
                }
            };
            match m.kind {
                MountType::Bind => {
                    let t = target(None)?;
                    let source = self.bind_source(st, m, p)?;
                    p.binds.push(Bind { source, destination: t.clone(), readonly: m.readonly, ..Default::default() });
                    p.targets.push(t);
                }
                MountType::Cache => {
                    let t = target(None)?;
                    let id = m.id.clone().unwrap_or_else(|| t.clone());
                    let hex = berth_image::Digest::sha256_of(id.as_bytes()).hex;
                    let base = self.e.root.join("build").join("cache-mounts");
                    let dir = base.join(&hex[..32]);
                    if !dir.exists() {
                        std::fs::create_dir_all(&base)?;
                        let fresh = self.tmp.make("cache")?;
                        chmod(&fresh, m.mode.unwrap_or(0o755))?;
                        std::os::unix::fs::chown(&fresh, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))?;
                        // Another build may have made it meanwhile: theirs is as good.
                        if std::fs::rename(&fresh, &dir).is_err() && !dir.exists() {
                            bail!("creating the cache mount {id:?}");
                        }
                    }
                    if let Some(from) = &m.from {
                        bail!(
                            "--mount=type=cache,from={from}: a cache mount seeded from a stage or image is not supported; \
                             bind it (type=bind,from={from}) and copy what the cache should start with"
                        );
                    }
                    if matches!(m.sharing, Some(Sharing::Locked | Sharing::Private)) {
                        p._locks.push(FileLock::take(&base.join(format!("{}.lock", &hex[..32])), true)?);
                    }
                    p.binds.push(Bind {
                        source: dir,
                        destination: t.clone(),
                        readonly: m.readonly,
                        ..Default::default()
                    });
                    p.targets.push(t);
                }
                MountType::Tmpfs => {
                    let t = target(None)?;
                    let opts = m.size.map(|s| format!("size={s}")).unwrap_or_default();
                    p.tmpfs.push((t.clone(), opts));
                    p.targets.push(t);
                }
                MountType::Secret => {
                    let id = match (&m.id, &m.target) {
                        (Some(id), _) => id.clone(),
                        (None, Some(t)) => t.rsplit('/').next().unwrap_or(t).to_string(),
                        (None, None) => bail!("--mount type=secret needs an id or a target"),
                    };
                    let Some(secret) = self.o.secrets.get(&id) else {
                        if m.required {
                            bail!("secret {id} not found: give it with --secret id={id},src=PATH");
                        }
                        continue;
                    };
                    let data = match secret {
                        Secret::File(f) => {
                            std::fs::read(f).with_context(|| format!("reading secret {id} from {}", f.display()))?
                        }
                        Secret::Value(v) => v.clone(),
                    };
                    if let Some(name) = &m.env {
                        let v = String::from_utf8(data.clone())
                            .with_context(|| format!("secret {id} is not text, it cannot be {name}"))?;
                        p.env.push(format!("{name}={v}"));
                        if m.target.is_none() {
                            continue;
                        }
                    }
                    let t = target(Some(format!("/run/secrets/{id}")))?;
                    let dir = self.tmp.make("secret")?;
                    let file = dir.join("secret");
                    std::fs::write(&file, &data)?;
                    std::os::unix::fs::chown(&file, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))?;
                    chmod(&file, m.mode.unwrap_or(0o400))?;
                    p.binds.push(Bind { source: file, destination: t.clone(), readonly: true, ..Default::default() });
                    p.targets.push(t);
                }
                MountType::Ssh => bail!("RUN --mount=type=ssh is not supported by berth"),
            }
        }
        Ok(())
    }

    /// The host path a bind mount reads: a path of the context (resolved inside it), or of
    /// another stage's or image's root (an overlay the monitor can see). A read-write bind
    /// (`rw`) writes into a throwaway upper dir or copy: never into the context or a layer.
    fn bind_source(&self, st: &StageState, m: &Mount, p: &mut Prepared) -> Result<PathBuf> {
        let source = m.source.as_deref().unwrap_or(".");
        let rw = !m.readonly;
        let root_fd = match &m.from {
            Some(from) => {
                let img = self.stage_or_image(st, from)?;
                let row = self.e.resolve_image(&img.id.to_string())?;
                self.e.prepare_layers(&row)?;
                let lowers = img.chains().iter().rev().map(|c| self.e.layers.lower_path(c)).collect();
                let hm = self.host_overlay(lowers, rw)?;
                let fd = safepath::open_root(hm.path())?;
                p._mounts.push(hm);
                fd
            }
            None => {
                let root = self.ctx_root.as_ref().context("RUN --mount=type=bind needs a build context")?;
                nix::unistd::dup(root).context("dup")?
            }
        };
        let what = if m.from.is_some() { "mounted image" } else { "build context" };
        let clean = tree::clean_source(source, what)?;
        let rel = if clean.is_empty() { ".".to_string() } else { clean };
        let fd: OwnedFd = safepath::openat_in_root(root_fd.as_raw_fd(), Path::new(&rel), libc::O_PATH, 0)
            .with_context(|| format!("{source}: not found in the {what}"))?;
        // The kernel's name for what we resolved: no symlink left in it to follow elsewhere.
        let path =
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).context("resolving a bind mount source")?;
        if !rw || m.from.is_some() {
            return Ok(path);
        }
        if tree::kind(&tree::fstat(fd.as_raw_fd())?) == libc::S_IFDIR {
            let hm = self.host_overlay(vec![path], true)?;
            let out = hm.path().to_path_buf();
            p._mounts.push(hm);
            return Ok(out);
        }
        let copy = self.tmp.make("bind")?.join("file");
        let mut r = std::fs::File::from(tree::reopen(fd.as_raw_fd(), libc::O_RDONLY)?);
        std::io::copy(&mut r, &mut std::fs::File::create(&copy)?)?;
        Ok(copy)
    }

    /// An overlay in the engine's mount namespace over `lowers`, writable into a temp upper dir.
    fn host_overlay(&self, lowers: Vec<PathBuf>, rw: bool) -> Result<HostMount> {
        let dir = self.tmp.make("mount")?;
        let empty = dir.join("empty");
        std::fs::create_dir(&empty)?;
        let upper = if rw {
            let (u, w) = (dir.join("upper"), dir.join("work"));
            std::fs::create_dir(&u)?;
            std::fs::create_dir(&w)?;
            Some((u, w))
        } else {
            None
        };
        HostMount::new(&Overlay { lowers, upper, target: dir.join("root") }, &empty)
    }

    pub(super) fn run_step(&mut self, st: &StageState, r: &RunArgs, inst: &Instruction, created: &str) -> Result<Img> {
        if r.security == Security::Insecure {
            bail!("RUN --security=insecure is not allowed (berth grants no build entitlements)");
        }
        let mut p = Prepared::default();
        let argv = self.run_argv(st, r, &mut p)?;
        self.prepare_mounts(st, r, &mut p)?;
        let mut env = self.run_env(st);
        env.append(&mut p.env);
        let network = match r.network {
            Network::None => "none".to_string(),
            Network::Host => "host".to_string(),
            Network::Default if self.o.network == "default" => String::new(),
            Network::Default => self.o.network.clone(),
        };
        // A stage whose lines are held while an earlier one builds writes to its log instead.
        let live = !self.o.quiet && self.is_shown(self.pos);
        let config = ContainerConfig {
            env,
            network,
            binds: std::mem::take(&mut p.binds),
            tmpfs: std::mem::take(&mut p.tmpfs),
            log_driver: if live { "none".into() } else { "json-file".into() },
            ..Default::default()
        };
        let req = CreateRequest {
            image: st.img.id.to_string(),
            name: None,
            cmd: argv.clone(),
            entrypoint: Some(String::new()),
            config,
        };
        self.check_stop()?;
        let id = self.e.create_container(req)?;
        let mut guard = ContainerGuard { e: self.e, id: id.clone(), slot: None };
        self.say(&format!(" ---> Running in {}", &id[..12]));
        let started = self.e.start_container(&id, Attach { stdout: live, ..Default::default() })?;
        guard.slot = run_pid_set(started.pid);
        if INTERRUPTED.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst) {
            // SAFETY: kill(2) of the container's init.
            unsafe { libc::kill(started.pid, libc::SIGKILL) };
        }
        let code = started.wait()?;
        run_pid_clear(guard.slot.take());
        self.check_stop()?;
        // Not shown live (-q, or a stage built alongside an earlier one): its output is in
        // its log; -q shows it only when the step failed.
        if !live && (!self.o.quiet || code != 0) {
            let text = self.e.container(&id).map(|row| run_log(&row.log_path())).unwrap_or_default();
            if self.o.quiet {
                eprint!("{text}");
            } else {
                for l in text.lines() {
                    self.say(l);
                }
            }
        }
        if code != 0 {
            let shown = argv.join(" ");
            return Err(
                ExitError { code, msg: format!("The command '{shown}' returned a non-zero code: {code}") }.into()
            );
        }
        let upper = berth_storage::RootFs::path(&self.e.layers, &id).changes()?;
        let layer_dirs: Vec<PathBuf> = st.img.chains().iter().rev().map(|c| self.e.layers.diff_path(c)).collect();
        let mut targets: Vec<String> = RUNTIME_MOUNTS.iter().map(|s| s.to_string()).collect();
        targets.extend(p.targets.iter().cloned());
        strip_mount_points(&upper, &layer_dirs, &targets)?;
        let layer = if tree::dir_is_empty(&upper) {
            None
        } else {
            Some(crate::layer::store_layer(&self.e.store, &upper, &self.tmp.path, self.o.epoch)?)
        };
        if let Some(l) = &layer {
            // The next step needs this layer unpacked: the upper dir is that already.
            let mut diff_ids = st.img.diff_ids();
            diff_ids.push(l.diff_id.clone());
            let chains = berth_image::manifest::chain_ids(&diff_ids);
            if let Some(chain) = chains.last() {
                let parent = chains.len().checked_sub(2).map(|i| &chains[i]);
                adopt_upper(&self.e.layers, &upper, chain, parent, &l.diff_id)?;
            }
        }
        drop(guard);
        drop(p);
        self.say(&format!("Removing intermediate container {}", &id[..12]));
        let h = HistoryEntry {
            created_by: inst.original.clone(),
            empty_layer: layer.is_none(),
            step: self.step_key.clone(),
        };
        self.e.commit_img(&st.img, st.img.config.clone(), layer.as_ref(), Some(h), created)
    }
}

/// The text of a json-file log.
fn run_log(path: &Path) -> String {
    let mut text = String::new();
    for l in std::fs::read_to_string(path).unwrap_or_default().lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
            text.push_str(v["log"].as_str().unwrap_or(""));
        }
    }
    text
}

fn mount_name(k: MountType) -> &'static str {
    match k {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`: the whole command is this heredoc.
fn is_heredoc_marker(text: &str, name: &str) -> bool {
    let Some(rest) = text.strip_prefix("<<") else { return false };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let unquoted = rest.trim_matches(|c| c == '"' || c == '\'');
    unquoted == name
}

/// Removes from `upper` the mount points of `targets` (and their parents) that the image did
/// not have and that are still empty: what the runtime created only to mount over. Walked
/// with O_NOFOLLOW from the upper dir, so a symlink a RUN left there cannot lead out.
fn strip_mount_points(upper: &Path, layers: &[PathBuf], targets: &[String]) -> Result<()> {
    let mut all = BTreeSet::new();
    for t in targets {
        let Ok(clean) = tree::clean_source(t, "image") else { continue };
        let mut p = clean.as_str();
        while !p.is_empty() {
            all.insert(p.to_string());
            p = p.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
    }
    let mut ordered: Vec<String> = all.into_iter().collect();
    ordered.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    let root = tree::reopen(safepath::open_root(upper)?.as_raw_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
    for rel in ordered {
        // A directory the image has stays unless the RUN left it as it was: copied up only
        // because a mount point was made inside (its time aside, same mode and owner).
        let lower = if tree::exists_in_layers(layers, &rel) {
            match lower_meta(layers, &rel) {
                Some(m) if m.is_dir() => Some(m),
                _ => continue,
            }
        } else {
            None
        };
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", &rel));
        let mut dir = nix::unistd::dup(&root)?;
        let mut ok = true;
        for c in parent.split('/').filter(|c| !c.is_empty()) {
            match tree::openat(dir.as_raw_fd(), &CString::new(c)?, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
                Ok(d) => dir = d,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let name = CString::new(name)?;
        let Ok(st) = tree::lstat_at(dir.as_raw_fd(), &name) else { continue };
        if let Some(m) = &lower {
            use std::os::unix::fs::MetadataExt;
            let same = tree::kind(&st) == libc::S_IFDIR
                && st.st_mode == m.mode()
                && (st.st_uid, st.st_gid) == (m.uid(), m.gid())
                && !tree::xattr_at(dir.as_raw_fd(), &name, "trusted.overlay.opaque");
            if !same {
                continue;
            }
        }
        match tree::kind(&st) {
            // SAFETY: unlinkat relative to a directory fd we hold; rmdir fails if not empty.
            libc::S_IFDIR => unsafe {
                libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR);
            },
            // SAFETY: as above, for an empty regular file.
            libc::S_IFREG if st.st_size == 0 && lower.is_none() => unsafe {
                libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0);
            },
            _ => {}
        }
    }
    Ok(())
}

/// Makes a finished RUN's upper dir the unpacked layer `chain` in storage: a rename instead of
/// unpacking the blob just written from it. The dir is what unpacking would give (whiteouts and
/// opaque directories in overlay's format), once sockets (not part of a layer) and overlay's
/// own bookkeeping xattrs are gone; with redirects or metacopy files (overlay features berth
/// does not turn on) it is left alone and the blob is unpacked when needed. Returns whether it
/// was adopted.
fn adopt_upper(
    layers: &berth_storage::Layers,
    upper: &Path,
    chain: &berth_image::Digest,
    parent: Option<&berth_image::Digest>,
    diff_id: &berth_image::Digest,
) -> Result<bool> {
    if layers.has(chain) {
        return Ok(false);
    }
    let (mut size, mut entries) = (0u64, 0u64);
    let mut stack = vec![upper.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            let m = std::fs::symlink_metadata(&path)?;
            entries += 1;
            use std::os::unix::fs::FileTypeExt;
            if m.file_type().is_socket() {
                std::fs::remove_file(&path)?;
                continue;
            }
            for name in xattr_names(&path) {
                if name == "trusted.overlay.opaque" || !name.starts_with("trusted.overlay.") {
                    continue;
                }
                if name.starts_with("trusted.overlay.redirect") || name.starts_with("trusted.overlay.metacopy") {
                    return Ok(false);
                }
                if let (Ok(p), Ok(n)) = (CString::new(path.as_os_str().as_encoded_bytes()), CString::new(name)) {
                    // SAFETY: lremovexattr on a path we own, not following a symlink.
                    unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
                }
            }
            if m.is_dir() {
                stack.push(path);
            } else if m.is_file() {
                size += m.len();
            }
        }
    }
    let Some(dest) = layers.diff_path(chain).parent().map(Path::to_path_buf) else { return Ok(false) };
    let tmp = layers.root().join("tmp").join(format!("adopt-{}-{}", std::process::id(), &chain.hex[..16]));
    let _ = berth_storage::remove_tree(&tmp);
    std::fs::create_dir(&tmp)?;
    let meta = berth_storage::layers::LayerMeta {
        diff_id: diff_id.clone(),
        parent: parent.cloned(),
        size,
        entries,
        tar_size: None,
    };
    let moved = (|| -> Result<()> {
        std::fs::rename(upper, tmp.join("diff"))?;
        let mut f = std::fs::File::create(tmp.join("layer.json"))?;
        std::io::Write::write_all(&mut f, &serde_json::to_vec(&meta)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
        Ok(())
    })();
    if moved.is_err() {
        // Someone made the layer meanwhile, or the move failed: the blob stays the truth.
        let _ = berth_storage::remove_tree(&tmp);
        return Ok(false);
    }
    let link = layers.lower_path(chain);
    let _ = std::fs::remove_file(&link);
    let name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    std::os::unix::fs::symlink(Path::new("../layers").join(name).join("diff"), &link).context("linking the layer")?;
    std::fs::File::open(layers.root().join("layers"))?.sync_all()?;
    Ok(true)
}

fn xattr_names(p: &Path) -> Vec<String> {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else { return vec![] };
    let mut buf = vec![0u8; 4096];
    // SAFETY: llistxattr into our buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return vec![];
    }
    buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The metadata of `rel` in the topmost layer that has it.
fn lower_meta(layers: &[PathBuf], rel: &str) -> Option<std::fs::Metadata> {
    layers.iter().find_map(|l| std::fs::symlink_metadata(l.join(rel)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_markers() {
        assert!(is_heredoc_marker("<<EOF", "EOF"));
        assert!(is_heredoc_marker("<<-\"EOF\"", "EOF"));
        assert!(!is_heredoc_marker("<<EOF cat", "EOF"));
        assert!(!is_heredoc_marker("cat <<EOF", "EOF"));
    }

    #[test]
    fn mount_points_the_image_lacked_go() {
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        std::fs::create_dir_all(upper.join("proc")).unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/hosts"), "").unwrap();
        std::fs::write(upper.join("etc/made-by-run"), "x").unwrap();
        std::fs::create_dir_all(upper.join("run/secrets")).unwrap();
        std::fs::write(upper.join("run/secrets/s"), "").unwrap();
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("var")).unwrap();
        std::fs::create_dir_all(lower.join("var")).unwrap();
        std::fs::write(upper.join("var/x"), "").unwrap();
        std::os::unix::fs::symlink("/", upper.join("sys")).unwrap();
        let targets: Vec<String> = RUNTIME_MOUNTS
            .iter()
            .map(|s| s.to_string())
            .chain(["/run/secrets/s".to_string(), "/../x".into(), "/var/x".into()])
            .collect();
        strip_mount_points(&upper, &[lower], &targets).unwrap();
        assert!(!upper.join("proc").exists());
        assert!(!upper.join("etc/hosts").exists());
        assert!(upper.join("etc/made-by-run").exists());
        assert!(!upper.join("var").exists(), "a copied-up directory left as it was goes");
        assert!(!upper.join("run").exists());
        assert!(upper.join("sys").symlink_metadata().is_ok(), "a symlink is not a mount point left empty");
    }
}
