//! `berth build`: a Dockerfile and a context become an image in the store, as Docker's classic
//! builder does it, step by step, each step an image of its own and an entry in the build cache.
//!
//! ```text
//! parse (berth-build)     Dockerfile -> instructions -> stages; --target, global ARGs, the
//!                         stages the target needs (dependencies first)
//! per stage               FROM: scratch, an earlier stage, or an image (pulled per --pull);
//!                         its ONBUILD triggers run first; stages that do not need each
//!                         other build in parallel, their lines shown in plan order
//! per instruction         expanded (berth-build's subst) with the stage's ARGs and ENV;
//!                         cache key = parent image + instruction + (RUN) build args +
//!                         (COPY/ADD) checksum of the files; a hit reuses the image
//!   RUN                   a container of the current image through the engine (create,
//!                         start with output to our stdout, wait); its upper dir, less the
//!                         mount points the runtime made, becomes the layer
//!   COPY/ADD/WORKDIR      the current image's root as an overlay in a private mount
//!                         namespace of one thread; files copied in through fds resolved
//!                         inside both roots; the upper dir becomes the layer
//!   the rest              config edits, history entries with empty_layer
//! end                     --format, tags (-t), the id
//! ```
//!
//! The store lock is held (shared) for the whole build, so garbage collection cannot take the
//! images it makes from under it. With an epoch (SOURCE_DATE_EPOCH, `--timestamp`) every
//! time in the config, the history and the layers is pinned: the same context gives the same
//! image digest.

mod cache;
mod copy;
mod emit;
mod fetch;
mod image;
mod mounts;
mod run;
mod tree;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result, bail};
use berth_build::dockerfile::{Command, CommandLine, Healthcheck, Instruction, KeyValue};
use berth_build::stages::{Base, Plan, StagePlan};
use berth_build::subst::{Platform, Vars, expand_command, platform_args};
use berth_build::{Dockerfile, Ignore, Lexer, Stages};
use berth_image::Digest;
use berth_image::digest::Hasher;
use berth_runtime::safepath;
use serde_json::{Value, json};

pub use cache::PruneReport;
pub use image::ImageFormat;
use image::{HistoryEntry, Img, object, set_env};

use crate::{Engine, ExitError};

/// Where a build's lines go (the classic builder's `Step N/M : ...`, ` ---> ID`).
pub type Output<'a> = &'a (dyn Fn(&str) + Sync);

/// A `--secret`: a file, or a value taken from the environment.
#[derive(Debug, Clone)]
pub enum Secret {
    File(PathBuf),
    Value(Vec<u8>),
}

/// `--pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    #[default]
    Missing,
    Always,
    Never,
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory; none for a Dockerfile given on stdin alone.
    pub context: Option<PathBuf>,
    /// The Dockerfile's text and how messages name it.
    pub dockerfile: String,
    pub dockerfile_name: String,
    /// Where the Dockerfile is, for `<Dockerfile>.dockerignore`.
    pub dockerfile_path: Option<PathBuf>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    pub pull: PullPolicy,
    pub target: Option<String>,
    pub platform: Option<String>,
    /// `--network`: empty or `default` for the default bridge, `none`, `host`, a network.
    pub network: String,
    pub secrets: BTreeMap<String, Secret>,
    pub format: ImageFormat,
    /// SOURCE_DATE_EPOCH / `--timestamp`.
    pub epoch: Option<i64>,
    /// RUN output is not shown (`-q`); a failing RUN's output still is.
    pub quiet: bool,
    /// `--cache-from`: local images whose steps may stand in for this build's.
    pub cache_from: Vec<String>,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    pub id: Digest,
    /// The tags given, as Docker prints them.
    pub tags: Vec<String>,
}

// Ctrl-C during a build: the running steps' containers are killed (their inits ignore SIGINT
// as pid 1), the build stops at the next check and its guards remove what it made.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The inits of the RUN steps running now (stages build in parallel), for the signal handler;
/// 0 is a free slot.
static RUN_PIDS: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

/// Records a running RUN step's init; its slot, to clear once it ended (none when every slot is
/// taken: a Ctrl-C then stops that step at its end instead of at once).
fn run_pid_set(pid: i32) -> Option<usize> {
    RUN_PIDS.iter().position(|s| s.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

fn run_pid_clear(slot: Option<usize>) {
    if let Some(s) = slot {
        RUN_PIDS[s].store(0, Ordering::SeqCst);
    }
}

/// Kills every running RUN step's init but `except`'s.
fn kill_runs(except: Option<usize>) {
    for (i, s) in RUN_PIDS.iter().enumerate() {
        let pid = s.load(Ordering::SeqCst);
        if pid > 0 && Some(i) != except {
            // SAFETY: kill(2) is async-signal-safe.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

extern "C" fn on_interrupt(_: libc::c_int) {
    // A second one while the build is still winding down: leave now (the next build sweeps
    // what this one left in its temp dirs).
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
    kill_runs(None);
}

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Our handlers for the build's duration; the previous ones come back on drop.
struct Interrupts(Vec<(libc::c_int, libc::sighandler_t)>);

impl Interrupts {
    fn install() -> Interrupts {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut saved = Vec::new();
        for s in STOP_SIGNALS {
            // SAFETY: a handler that only stores and calls kill(2).
            let old = unsafe { libc::signal(s, on_interrupt as *const () as libc::sighandler_t) };
            saved.push((s, old));
        }
        Interrupts(saved)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for (s, old) in &self.0 {
            // SAFETY: restoring what was there.
            unsafe { libc::signal(*s, *old) };
        }
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(ExitError { code: 130, msg: "the build was interrupted".into() }.into());
    }
    Ok(())
}

/// A temp dir for one build, under the engine's root (overlay wants its upper and work dirs
/// on the same filesystem as the layers); removed on drop.
struct BuildDir {
    path: PathBuf,
    n: AtomicU64,
}

impl BuildDir {
    fn new(e: &Engine) -> Result<BuildDir> {
        let base = e.root.join("build").join("tmp");
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        sweep_stale(&base);
        sweep_stale(&e.root.join("build").join("contexts"));
        let path = base.join(format!("{}-{}", std::process::id(), &crate::names::new_id()[..12]));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(BuildDir { path, n: AtomicU64::new(0) })
    }

    /// A new empty directory inside.
    fn make(&self, prefix: &str) -> Result<PathBuf> {
        let n = self.n.fetch_add(1, Ordering::Relaxed) + 1;
        let p = self.path.join(format!("{prefix}-{n}"));
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }
}

/// Removes what builds killed before their cleanup left in `base` (entries are named
/// `PID-...`): mounts first (a RUN's view of another stage), then the files.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid: i32 = name.split('-').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        // SAFETY: kill(pid, 0) only checks that the process exists.
        if pid <= 0 || unsafe { libc::kill(pid, 0) } == 0 {
            continue;
        }
        let prefix = format!("{}/", entry.path().display());
        let mut mounts: Vec<&str> =
            mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = berth_storage::remove_tree(&entry.path());
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        let _ = berth_storage::remove_tree(&self.path);
    }
}

/// One stage being built.
struct StageState {
    img: Img,
    /// ARGs declared in the stage: their values (None: declared without one).
    args: Vec<(String, Option<String>)>,
    /// A CMD was given in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
    name: String,
}

impl StageState {
    /// What instructions expand with: the stage's ARGs, then ENV (which wins).
    fn vars(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> =
            self.args.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone()))).collect();
        v.extend(self.img.env());
        v
    }
}

/// The cache key of a step: the parent image and everything the step reads. Alongside, the
/// step key: the same without the parent image's id (its image config instead), written into
/// the step's history entry for `--cache-from`; and the link key: the same without anything
/// of the parent, under which a `COPY --link` layer is found again on another parent.
struct Key {
    local: Hasher,
    step: Hasher,
    link: Hasher,
}

impl Key {
    fn new(parent: &Img, cmd: &Command) -> Key {
        let h = || Hasher::new(berth_image::Algo::Sha256);
        let mut k = Key { local: h(), step: h(), link: h() };
        k.local.update(format!("berth-build-cache/1\n{}\n", parent.id).as_bytes());
        k.step.update(format!("berth-build-step/1\n{}\n", parent.config["config"]).as_bytes());
        k.link.update(b"berth-build-link/1\n");
        k.text(&serde_json::to_string(cmd).unwrap_or_default());
        k
    }

    fn text(&mut self, s: &str) {
        for h in [&mut self.local, &mut self.step, &mut self.link] {
            h.update(s.as_bytes());
            h.update(b"\n");
        }
    }

    /// (cache key, step key, link key).
    fn finish(self) -> (String, String, String) {
        (self.local.finish().hex, self.step.finish().hex, self.link.finish().hex)
    }
}

/// What every stage of one build reads, and what the stages share while they are built in
/// parallel (each on a thread of its own with its own engine handle).
struct Common<'a> {
    o: &'a BuildOptions,
    out: Output<'a>,
    df: Dockerfile,
    stages: Stages,
    lexer: Lexer,
    file: String,
    ctx_root: Option<OwnedFd>,
    ignore: Option<Ignore>,
    /// Global ARG values (with the predefined platform arguments) as FROM sees them.
    meta: BTreeMap<String, String>,
    total: usize,
    tmp: BuildDir,
    host: Platform,
    /// `--cache-from` images.
    cache_from: Vec<Img>,
    /// Build args some ARG took.
    consumed: Mutex<BTreeSet<String>>,
    /// Stage index -> its position in the plan.
    positions: HashMap<usize, usize>,
    progress: Mutex<Progress>,
    changed: Condvar,
    /// A stage failed: the others give up at their next step.
    failed: AtomicBool,
}

/// How far the stages are.
#[derive(Default)]
struct Progress {
    /// Stage index -> its image, once built.
    built: HashMap<usize, Img>,
    /// Per plan position: the stage ended (built, failed or given up).
    ended: Vec<bool>,
    /// The plan position of the stage that failed first.
    first_failure: Option<usize>,
    /// The first plan position not ended: its lines go out as they come; a later stage's lines
    /// are held until every stage before it ended, so the output reads as if built in order.
    shown: usize,
    held: Vec<Vec<String>>,
}

impl Progress {
    /// Whether the stage at `pos` shows its lines as they come (always before a plan is set).
    fn turn_came(&self, pos: usize) -> bool {
        pos <= self.shown || self.held.is_empty()
    }
}

/// A stage gave up because another one failed (that one's error is the build's).
#[derive(Debug)]
struct GaveUp;

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("stopped: another stage of the build failed")
    }
}

impl std::error::Error for GaveUp {}

/// One stage's builder: the shared parts, an engine handle of its thread, its step counter.
struct Builder<'a> {
    e: &'a Engine,
    c: &'a Common<'a>,
    /// This stage's position in the plan.
    pos: usize,
    step: usize,
    /// The step key of the step being built (for its history entry).
    step_key: String,
}

impl<'a> std::ops::Deref for Builder<'a> {
    type Target = Common<'a>;
    fn deref(&self) -> &Common<'a> {
        self.c
    }
}

impl Engine {
    /// Builds the image; returns its id and the tags it got.
    pub fn build(&self, o: &BuildOptions, out: Output) -> Result<Built> {
        self.cache_init()?;
        let _lock = self.store_lock(false)?;
        let _signals = Interrupts::install();
        let mut c = Common::new(self, o, out)?;
        let (plan, target) = c.plan()?;
        let img = c.build_plan(self, &plan, target)?;
        c.warn_unused_args();
        if o.format != ImageFormat::Oci {
            self.set_format(&img, o.format)?;
        }
        let mut tags = Vec::new();
        for t in &o.tags {
            let r = berth_image::Reference::parse(t).with_context(|| format!("invalid tag {t:?}"))?;
            self.tag(&img.id.to_string(), t)?;
            tags.push(crate::images::display_name(&r));
        }
        Ok(Built { id: img.id, tags })
    }
}

/// A build context unpacked from a tar archive, removed on drop.
pub struct ContextDir {
    dir: PathBuf,
}

impl ContextDir {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ContextDir {
    fn drop(&mut self) {
        let _ = berth_storage::remove_tree(&self.dir);
    }
}

impl Engine {
    /// Unpacks a context given as a tar archive (plain, gzip or zstd) into a directory of its
    /// own, streamed, with the layer unpacker's safety (every entry resolved inside, no
    /// devices, limits against tar bombs).
    pub fn unpack_context(&self, r: impl std::io::BufRead) -> Result<ContextDir> {
        let mut r = r;
        let c = berth_image::archive::sniff(&mut r)?;
        let base = self.root.join("build").join("contexts");
        std::fs::create_dir_all(&base)?;
        let dir = base.join(format!("{}-{}", std::process::id(), &crate::names::new_id()[..12]));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ctx = ContextDir { dir };
        let limits = berth_storage::Limits { allow_devices: false, ..Default::default() };
        berth_storage::unpack::unpack(berth_image::archive::decompress(r, c)?, &ctx.dir, &limits)
            .context("unpacking the build context")?;
        Ok(ctx)
    }
}

/// `a/b` and `../c` joined the way WORKDIR and COPY join relative paths: cleaned, absolute.
fn join_clean(base: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", if base.is_empty() { "/" } else { base })
    };
    crate::copy::clean(&full)
}

fn now(epoch: Option<i64>) -> String {
    match epoch {
        Some(e) => berth_runtime::state::rfc3339(e, 0),
        None => berth_runtime::state::now_rfc3339(),
    }
}

impl<'a> Common<'a> {
    fn new(e: &Engine, o: &'a BuildOptions, out: Output<'a>) -> Result<Common<'a>> {
        let file = if o.dockerfile_name.is_empty() { "Dockerfile".to_string() } else { o.dockerfile_name.clone() };
        let df = Dockerfile::parse(&o.dockerfile).map_err(|err| anyhow::anyhow!("{}", err.with_file(file.clone())))?;
        let stages = df.stages().map_err(|err| anyhow::anyhow!("{}", err.with_file(file.clone())))?;
        let host = Platform::host();
        let target_platform = match &o.platform {
            Some(p) => {
                let want = Platform::parse(p).map_err(|m| anyhow::anyhow!("--platform: {m}"))?;
                if want.os != host.os || want.arch != host.arch {
                    bail!(
                        "--platform {p}: this machine builds for {host} only (berth does not emulate other platforms)"
                    );
                }
                want
            }
            None => host.clone(),
        };
        let (ctx_root, ignore) = match &o.context {
            Some(dir) => {
                let root = safepath::open_root(dir)?;
                let df_path = o.dockerfile_path.clone().unwrap_or_else(|| dir.join("Dockerfile"));
                let ignore = berth_build::ignore::load_ignore_file(dir, &df_path)?.map(|(_, i)| i);
                (Some(root), ignore)
            }
            None => (None, None),
        };
        let predefined = platform_args(&host, &target_platform);
        let meta = stages
            .meta_args(&df, &o.build_args, &predefined)
            .map_err(|err| anyhow::anyhow!("{}", err.with_file(file.clone())))?;
        let mut consumed = BTreeSet::new();
        for &i in &stages.meta_args {
            if let Some(Command::Arg(decls)) = df.instructions.get(i).map(|i| &i.command) {
                consumed.extend(decls.iter().map(|d| d.name.clone()).filter(|n| o.build_args.contains_key(n)));
            }
        }
        let lexer = Lexer::new(df.directives.escape);
        let cache_from = o
            .cache_from
            .iter()
            .map(|n| e.load_img(n).with_context(|| format!("--cache-from {n}: no such local image")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Common {
            o,
            out,
            df,
            stages,
            lexer,
            file,
            ctx_root,
            ignore,
            meta,
            total: 0,
            tmp: BuildDir::new(e)?,
            host,
            cache_from,
            consumed: Mutex::new(consumed),
            positions: HashMap::new(),
            progress: Mutex::new(Progress::default()),
            changed: Condvar::new(),
            failed: AtomicBool::new(false),
        })
    }

    fn warn(&self, line: usize, message: &str) {
        if line == 0 {
            (self.out)(&format!("[WARNING]: {}: {message}", self.file));
        } else {
            (self.out)(&format!("[WARNING]: {}:{line}: {message}", self.file));
        }
    }

    /// The stages the target needs, dependencies first; the warnings said; the step count.
    fn plan(&mut self) -> Result<(Plan, usize)> {
        let file = self.file.clone();
        let ferr = move |err: berth_build::ParseError| anyhow::anyhow!("{}", err.with_file(file.clone()));
        let target = self.stages.target(self.o.target.as_deref()).map_err(&ferr)?;
        let plan = self.stages.plan(&self.df, target, &self.meta).map_err(&ferr)?;
        // `# check=skip=` drops a rule's findings; `error=true` makes the others fail the build
        // (notes, such as the one on `# syntax=`, are not findings).
        let check = self.df.directives.check.clone().unwrap_or_default();
        let warnings: Vec<&berth_build::dockerfile::Warning> = (self.df.warnings.iter())
            .chain(&self.stages.warnings)
            .chain(&plan.warnings)
            .filter(|w| !check.skips(w))
            .collect();
        for w in &warnings {
            self.warn(w.line, &w.message);
        }
        let rules: BTreeSet<&str> = warnings.iter().filter_map(|w| w.rule()).collect();
        if check.error && !rules.is_empty() {
            let rules: Vec<&str> = rules.into_iter().collect();
            bail!(
                "{}: lint violation found for rules: {} (`# check=error=true` makes them errors; `# check=skip=RULE` leaves one out)",
                self.file,
                rules.join(", ")
            );
        }
        self.total = plan.stages.iter().map(|p| self.steps_of(p.index)).sum();
        if !self.o.labels.is_empty() {
            self.total += 1;
        }
        self.positions = plan.stages.iter().enumerate().map(|(pos, sp)| (sp.index, pos)).collect();
        let n = plan.stages.len();
        *self.lock() = Progress { ended: vec![false; n], held: vec![Vec::new(); n], ..Default::default() };
        Ok((plan, target))
    }

    /// The steps a stage counts (its FROM and body; ONBUILD triggers are not counted).
    fn steps_of(&self, index: usize) -> usize {
        self.stages.stages[index].end - self.stages.stages[index].from
    }

    /// Builds the plan's stages: one on this thread; several each on a thread of its own, a
    /// stage starting once the stages it needs are built (so independent stages build in
    /// parallel), their lines shown in plan order. The first failure stops the others.
    fn build_plan(&self, e: &Engine, plan: &Plan, target: usize) -> Result<Img> {
        let mut firsts = Vec::with_capacity(plan.stages.len());
        let mut step = 0;
        for sp in &plan.stages {
            firsts.push(step);
            step += self.steps_of(sp.index);
        }
        // A chain (each stage needs the one before it) has nothing to run alongside: built here,
        // one stage after the other, with no thread or engine handle of its own.
        if plan.stages.windows(2).all(|w| w[1].deps.contains(&w[0].index)) {
            let mut last = None;
            for (pos, sp) in plan.stages.iter().enumerate() {
                let mut b = Builder { e, c: self, pos, step: firsts[pos], step_key: String::new() };
                let r = b.stage(sp, sp.index == target);
                self.ended(pos, sp.index, &r);
                last = Some(r?);
            }
            return last.context("no stage was built");
        }
        let (root, runroot) = (&e.root, &e.runroot);
        let results: Vec<Result<Img>> = std::thread::scope(|s| {
            let workers: Vec<_> = plan
                .stages
                .iter()
                .enumerate()
                .map(|(pos, sp)| {
                    let first = firsts[pos];
                    s.spawn(move || {
                        let r = (|| {
                            for &d in &sp.deps {
                                self.wait_for(pos, d)?;
                            }
                            let e = Engine::open_unrepaired(root, runroot)?;
                            let mut b = Builder { e: &e, c: self, pos, step: first, step_key: String::new() };
                            b.stage(sp, sp.index == target)
                        })();
                        self.ended(pos, sp.index, &r);
                        r
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a build thread panicked"))))
                .collect()
        });
        let first_failure = {
            let mut p = self.lock();
            self.show_ended(&mut p, true);
            p.first_failure
        };
        let mut results = results;
        if let Some(pos) = first_failure {
            return Err(results.swap_remove(pos).err().unwrap_or_else(|| anyhow::anyhow!("{GaveUp}")));
        }
        results.pop().context("no stage was built")?
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until stage `index` is built, for the stage at plan position `pos`: only a stage
    /// earlier in the plan can be waited for (as if built one by one).
    fn wait_for(&self, pos: usize, index: usize) -> Result<Img> {
        let mut p = self.lock();
        loop {
            if let Some(img) = p.built.get(&index) {
                return Ok(img.clone());
            }
            match self.positions.get(&index) {
                Some(&d) if d < pos && !p.ended[d] && p.first_failure.is_none() => {}
                Some(&d) if d < pos => return Err(GaveUp.into()),
                _ => bail!("a stage was used before it was built"),
            }
            p = self.changed.wait(p).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Records the end of the stage at `pos`; a failure stops the other stages.
    fn ended(&self, pos: usize, index: usize, r: &Result<Img>) {
        let mut p = self.lock();
        match r {
            Ok(img) => {
                p.built.insert(index, img.clone());
            }
            Err(err) if err.downcast_ref::<GaveUp>().is_none() && p.first_failure.is_none() => {
                p.first_failure = Some(pos);
                self.failed.store(true, Ordering::SeqCst);
                kill_runs(None);
            }
            Err(_) => {}
        }
        p.ended[pos] = true;
        self.show_ended(&mut p, false);
        self.changed.notify_all();
    }

    /// Shows the held lines of the stages whose turn came (`all`: of every stage, at the end).
    fn show_ended(&self, p: &mut Progress, all: bool) {
        let n = p.ended.len();
        while p.shown < n && (all || p.ended[p.shown]) {
            p.shown += 1;
            if p.shown < n {
                for l in std::mem::take(&mut p.held[p.shown]) {
                    (self.out)(&l);
                }
            }
        }
    }

    /// A line of the stage at `pos`: shown now if its turn came, else held.
    fn say_at(&self, pos: usize, line: &str) {
        let mut p = self.lock();
        if p.turn_came(pos) {
            (self.out)(line);
        } else {
            p.held[pos].push(line.to_string());
        }
    }

    /// The stage at `pos` shows its lines as they come.
    fn is_shown(&self, pos: usize) -> bool {
        self.lock().turn_came(pos)
    }

    fn warn_unused_args(&self) {
        let consumed = self.consumed.lock().unwrap_or_else(|p| p.into_inner());
        let unused: Vec<&str> = self
            .o
            .build_args
            .keys()
            .filter(|k| !consumed.contains(*k) && !berth_build::subst::is_proxy_arg(k) && *k != "SOURCE_DATE_EPOCH")
            .map(|k| k.as_str())
            .collect();
        if !unused.is_empty() {
            (self.out)(&format!("[Warning] One or more build-args [{}] were not consumed", unused.join(" ")));
        }
    }
}

impl<'a> Builder<'a> {
    fn say(&self, line: &str) {
        self.c.say_at(self.pos, line);
    }

    /// An error of `inst`, as `FILE:LINE: INSTRUCTION: message` (a failed RUN keeps its code).
    fn at(&self, inst: &Instruction, e: anyhow::Error) -> anyhow::Error {
        if e.downcast_ref::<GaveUp>().is_some() {
            return e;
        }
        let line = if inst.line == 0 { String::new() } else { format!("{}:{}: ", self.file, inst.line) };
        if let Some(x) = e.downcast_ref::<ExitError>() {
            return ExitError { code: x.code, msg: format!("{line}{}", x.msg) }.into();
        }
        anyhow::anyhow!("{line}{}: {e:#}", inst.command.name())
    }

    /// Stops the stage when the build was interrupted or another stage failed.
    fn check_stop(&self) -> Result<()> {
        check_interrupted()?;
        if self.failed.load(Ordering::SeqCst) {
            return Err(GaveUp.into());
        }
        Ok(())
    }

    fn stage(&mut self, sp: &StagePlan, is_target: bool) -> Result<Img> {
        let stage = self.stages.stages[sp.index].clone();
        let from = self.df.instructions[stage.from].clone();
        self.step += 1;
        self.say(&format!("Step {}/{} : {}", self.step, self.total, from.original));
        self.check_stop()?;
        if let Some(p) = &sp.platform {
            let ok = Platform::parse(p).is_ok_and(|w| w.os == self.host.os && w.arch == self.host.arch);
            if !ok {
                return Err(
                    self.at(&from, anyhow::anyhow!("--platform={p}: this machine builds for {} only", self.host))
                );
            }
        }
        let img = match &sp.base {
            Base::Scratch => self.scratch(),
            Base::Stage(j) => self.wait_for(self.pos, *j),
            Base::Image(name) => self.base_image(name),
        }
        .map_err(|e| self.at(&from, e))?;
        self.say(&format!(" ---> {}", img.short()));
        let mut st = StageState { img, args: Vec::new(), cmd_set: false, name: stage.display_name() };
        // The base's ONBUILD triggers run first; the new image does not inherit them.
        let triggers = st.img.onbuild();
        if !triggers.is_empty() {
            let mut cfg = st.img.config.clone();
            object(&mut cfg, "config").remove("OnBuild");
            st.img = self.e.commit_img(&st.img, cfg, None, None, "").map_err(|e| self.at(&from, e))?;
            self.say(&format!(
                "# Executing {} build trigger{}",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ));
            for t in triggers {
                let mut inst = Dockerfile::parse_trigger(&t)
                    .map_err(|err| self.at(&from, anyhow::anyhow!("ONBUILD trigger {t:?}: {}", err.message)))?;
                inst.line = from.line;
                self.instruction(&mut st, &inst, true)?;
            }
        }
        for i in stage.body() {
            let inst = self.df.instructions[i].clone();
            self.instruction(&mut st, &inst, false)?;
        }
        if is_target && !self.o.labels.is_empty() {
            let kvs: Vec<KeyValue> =
                self.o.labels.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect();
            let text: Vec<String> = self.o.labels.iter().map(|(k, v)| format!("{k}={}", json!(v))).collect();
            let inst = Instruction {
                line: 0,
                end_line: 0,
                original: format!("LABEL {}", text.join(" ")),
                command: Command::Label(kvs),
            };
            self.instruction(&mut st, &inst, false)?;
        }
        Ok(st.img)
    }

    /// The empty image `FROM scratch` starts from (registered, so a RUN can use it).
    fn scratch(&self) -> Result<Img> {
        let cfg = image::scratch_config();
        let bytes = serde_json::to_vec(&cfg)?;
        let cd = self.e.store.put_bytes(&bytes)?;
        let desc =
            berth_image::manifest::Descriptor::new(berth_image::manifest::media::OCI_CONFIG, cd, bytes.len() as i64);
        let m = berth_image::archive::put_manifest(&self.e.store, desc, vec![])?;
        let id = self.e.register(&m, None)?;
        Ok(Img { id, config: cfg, layers: vec![] })
    }

    /// An image named by FROM or `--from`, pulled per `--pull`.
    fn base_image(&self, name: &str) -> Result<Img> {
        let present = self.e.resolve_image(name).is_ok();
        let pull = match self.o.pull {
            PullPolicy::Always => true,
            PullPolicy::Missing => !present,
            PullPolicy::Never => false,
        };
        if pull {
            let opts = crate::pull::PullOptions { unpack: true, ..Default::default() };
            let (c, pos) = (self.c, self.pos);
            self.e.pull(name, &opts, &move |l: &str| c.say_at(pos, l))?;
        } else if !present {
            bail!("image {name} is not here and --pull=never forbids pulling it");
        }
        let img = self.e.load_img(name)?;
        let row = self.e.resolve_image(&img.id.to_string())?;
        self.e.prepare_layers(&row)?;
        Ok(img)
    }

    /// The image of `--from=NAME`: a stage (by name or index) or an image.
    fn stage_or_image(&self, st: &StageState, from: &str) -> Result<Img> {
        let stage = match from.parse::<usize>() {
            Ok(i) if i < self.stages.stages.len() => Some(i),
            _ => self.stages.find(from),
        };
        match stage {
            Some(i) => self.wait_for(self.pos, i).map_err(|e| match e.downcast_ref::<GaveUp>() {
                Some(_) => e,
                None => {
                    anyhow::anyhow!("stage {from:?} is not built before stage {:?} (it must come earlier)", st.name)
                }
            }),
            None => self.base_image(from),
        }
    }

    fn instruction(&mut self, st: &mut StageState, inst: &Instruction, trigger: bool) -> Result<()> {
        if trigger {
            self.say(&format!(" ---> Running build trigger: {}", inst.original));
        } else {
            self.step += 1;
            self.say(&format!("Step {}/{} : {}", self.step, self.total, inst.original));
        }
        self.check_stop()?;
        let r = self.instruction_inner(st, inst);
        r.map_err(|e| self.at(inst, e))
    }

    fn instruction_inner(&mut self, st: &mut StageState, inst: &Instruction) -> Result<()> {
        let vars = st.vars();
        match &inst.command {
            Command::Arg(decls) => {
                for d in decls {
                    let value = if let Some(v) = self.o.build_args.get(&d.name) {
                        self.consumed.lock().unwrap_or_else(|p| p.into_inner()).insert(d.name.clone());
                        Some(v.clone())
                    } else if let Some(def) = &d.default {
                        Some(self.lexer.word(def, &vars)?)
                    } else {
                        self.meta.get(&d.name).cloned()
                    };
                    st.args.retain(|(k, _)| *k != d.name);
                    st.args.push((d.name.clone(), value));
                }
                // Then a step of its own, as Docker records it: a history entry, no layer.
            }
            Command::From(_) => bail!("FROM cannot be used here"),
            _ => {}
        }
        let cmd = expand_command(&inst.command, &self.lexer, &vars as &dyn Vars)?;
        let mut key = Key::new(&st.img, &cmd);
        let mut prep = None;
        match &cmd {
            Command::Run(r) => self.run_key(st, r, &mut key)?,
            Command::Copy(_) | Command::Add(_) => {
                let spec = copy::CopySpec::of(&cmd).context("not a copy")?;
                prep = Some(self.copy_prepare(st, &spec, &mut key)?);
                // A relative destination is the parent's business (the link key has no parent).
                key.link.update(format!("workdir {}\n", st.img.workdir()).as_bytes());
            }
            Command::Entrypoint(_) => key.text(&format!("cmd_set={}", st.cmd_set)),
            _ => {}
        }
        let (key, step, link_key) = key.finish();
        let linked = matches!(&cmd, Command::Copy(c) if c.link) || matches!(&cmd, Command::Add(a) if a.link);
        if matches!(cmd, Command::Cmd(_)) {
            st.cmd_set = true;
        }
        if !self.o.no_cache {
            let hit = match self.e.cache_get(&key)? {
                Some(id) => Some(self.e.load_img(&id.to_string())?),
                None if linked => match self.linked_layer(st, &link_key, &step)? {
                    Some(img) => Some(img),
                    None => self.step_from_cache_images(st, &cmd, &step)?,
                },
                None => self.step_from_cache_images(st, &cmd, &step)?,
            };
            if let Some(img) = hit {
                self.e.cache_put(&key, &img.id, &st.img.id)?;
                st.img = img;
                self.say(" ---> Using cache");
                self.say(&format!(" ---> {}", st.img.short()));
                return Ok(());
            }
        }
        self.step_key = step;
        let created = now(self.o.epoch);
        let img = match &cmd {
            Command::Run(r) => self.run_step(st, r, inst, &created)?,
            Command::Copy(_) | Command::Add(_) => {
                let spec = copy::CopySpec::of(&cmd).context("not a copy")?;
                self.copy_step(st, &spec, prep.context("COPY was not prepared")?, inst, &created)?
            }
            Command::Workdir(p) => self.workdir_step(st, p, inst, &created)?,
            other => {
                let mut cfg = st.img.config.clone();
                apply_metadata(&mut cfg, other, st)?;
                let h =
                    HistoryEntry { created_by: inst.original.clone(), empty_layer: true, step: self.step_key.clone() };
                self.e.commit_img(&st.img, cfg, None, Some(h), &created)?
            }
        };
        self.e.cache_put(&key, &img.id, &st.img.id)?;
        if linked {
            self.e.cache_put(&link_key, &img.id, &st.img.id)?;
        }
        st.img = img;
        self.say(&format!(" ---> {}", st.img.short()));
        Ok(())
    }

    /// `COPY --link`: a layer made by the same step on another parent (it never saw its
    /// parent's files), put on this one.
    fn linked_layer(&self, st: &StageState, link_key: &str, step: &str) -> Result<Option<Img>> {
        let Some(id) = self.e.cache_get(link_key)? else { return Ok(None) };
        let Ok(c) = self.e.load_img(&id.to_string()) else { return Ok(None) };
        let Some(entry) = c.config["history"].as_array().and_then(|h| h.last()).cloned() else { return Ok(None) };
        let layer = if entry["empty_layer"].as_bool().unwrap_or(false) {
            None
        } else {
            match (c.layers.last(), c.diff_ids().last()) {
                (Some(d), Some(diff)) => Some((d.clone(), diff.clone())),
                _ => return Ok(None),
            }
        };
        let mut entry = entry;
        entry["created"] = json!(now(self.o.epoch));
        entry["comment"] = json!(image::step_comment(step));
        Ok(Some(self.e.commit_entry(&st.img, st.img.config.clone(), layer, Some(entry))?))
    }

    /// WORKDIR: the config, and the directory made in a layer when the image lacks it.
    fn workdir_step(&mut self, st: &StageState, path: &str, inst: &Instruction, created: &str) -> Result<Img> {
        let dir = join_clean(&st.img.workdir(), path);
        let mut cfg = st.img.config.clone();
        object(&mut cfg, "config").insert("WorkingDir".into(), json!(dir));
        let layer_dirs: Vec<PathBuf> = st.img.chains().iter().rev().map(|c| self.e.layers.diff_path(c)).collect();
        let layer = if tree::exists_in_layers(&layer_dirs, &dir) {
            None
        } else {
            self.in_view(st, false, None, |out, _| {
                let (rel, exists) = out.resolve(&dir)?;
                if !exists {
                    out.parents(&rel)?;
                    out.existing_dir(&rel)?;
                }
                Ok(())
            })?
        };
        let h = HistoryEntry {
            created_by: inst.original.clone(),
            empty_layer: layer.is_none(),
            step: self.step_key.clone(),
        };
        self.e.commit_img(&st.img, cfg, layer.as_ref(), Some(h), created)
    }

    /// A step taken from a `--cache-from` image: one whose history and layers begin with the
    /// current image's and whose next history entry is this step (its step key in the comment).
    /// The new image gets that entry and layer as they are, and the config this step makes, so
    /// that the next steps can match too; a whole build taken this way gives the image it was
    /// taken from.
    fn step_from_cache_images(&self, st: &StageState, cmd: &Command, step: &str) -> Result<Option<Img>> {
        let history = |i: &Img| i.config["history"].as_array().cloned().unwrap_or_default();
        let (ph, pd) = (history(&st.img), st.img.diff_ids());
        let want = image::step_comment(step);
        for c in &self.cache_from {
            let (ch, cd) = (history(c), c.diff_ids());
            if ch.len() <= ph.len() || ch[..ph.len()] != ph[..] || cd.len() < pd.len() || cd[..pd.len()] != pd[..] {
                continue;
            }
            let entry = &ch[ph.len()];
            if entry["comment"].as_str() != Some(want.as_str()) {
                continue;
            }
            let layer = if entry["empty_layer"].as_bool().unwrap_or(false) {
                None
            } else {
                match (c.layers.get(pd.len()), cd.get(pd.len())) {
                    (Some(d), Some(diff)) => Some((d.clone(), diff.clone())),
                    _ => continue,
                }
            };
            let mut cfg = st.img.config.clone();
            match cmd {
                Command::Run(_) | Command::Copy(_) | Command::Add(_) => {}
                Command::Workdir(p) => {
                    let dir = join_clean(&st.img.workdir(), p);
                    object(&mut cfg, "config").insert("WorkingDir".into(), json!(dir));
                }
                other => apply_metadata(&mut cfg, other, st)?,
            }
            return Ok(Some(self.e.commit_entry(&st.img, cfg, layer, Some(entry.clone()))?));
        }
        Ok(None)
    }

    /// Runs `f` with a layer to write and a read-only view of the current image's root (and of
    /// `from`'s: its fd is passed), mounted in a private mount namespace of one thread; returns
    /// the layer (none when nothing was written).
    fn in_view(
        &self,
        st: &StageState,
        linked: bool,
        from: Option<&Img>,
        f: impl FnOnce(&mut emit::LayerOut, Option<RawFd>) -> Result<()> + Send,
    ) -> Result<Option<crate::layer::NewLayer>> {
        let lowers_of = |img: &Img| -> Result<Vec<PathBuf>> {
            let row = self.e.resolve_image(&img.id.to_string())?;
            self.e.prepare_layers(&row)?;
            Ok(img.chains().iter().rev().map(|c| self.e.layers.lower_path(c)).collect())
        };
        let work = self.tmp.make("view")?;
        let (root, fdir, empty) = (work.join("root"), work.join("from"), work.join("empty"));
        for d in [&root, &fdir, &empty] {
            std::fs::create_dir(d)?;
        }
        // A linked layer is made on an empty root: it depends on nothing of its parent.
        let mut overlays = Vec::new();
        if !linked {
            overlays.push(mounts::Overlay { lowers: lowers_of(&st.img)?, upper: None, target: root.clone() });
        }
        if let Some(v) = from {
            overlays.push(mounts::Overlay { lowers: lowers_of(v)?, upper: None, target: fdir.clone() });
        }
        let (has_from, tmp, store, epoch) = (from.is_some(), &self.tmp.path, &self.e.store, self.o.epoch);
        let layer = mounts::with_overlays(&overlays, &empty, || {
            let r = safepath::open_root(&root)?;
            let v = if has_from { Some(safepath::open_root(&fdir)?) } else { None };
            let mut out = emit::LayerOut::new(tmp, r.as_raw_fd(), epoch)?;
            f(&mut out, v.as_ref().map(|v| v.as_raw_fd()))?;
            out.finish(store)
        })?;
        let _ = berth_storage::remove_tree(&work);
        Ok(layer)
    }
}

/// `CMD`/`ENTRYPOINT`/`SHELL`-form arguments: exec form as is, shell form through the shell.
fn argv(cl: &CommandLine, shell: &[String]) -> Vec<String> {
    match cl {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(t) if t.is_empty() => vec![],
        CommandLine::Shell(t) => shell.iter().cloned().chain([t.clone()]).collect(),
    }
}

fn healthcheck(h: &Healthcheck) -> Value {
    let mut v = json!({"Test": h.test});
    for (k, n) in [
        ("Interval", h.interval),
        ("Timeout", h.timeout),
        ("StartPeriod", h.start_period),
        ("StartInterval", h.start_interval),
    ] {
        if n > 0 {
            v[k] = json!(n);
        }
    }
    if h.retries > 0 {
        v["Retries"] = json!(h.retries);
    }
    v
}

/// The config change of a metadata instruction (already expanded).
fn apply_metadata(cfg: &mut Value, cmd: &Command, st: &StageState) -> Result<()> {
    let shell = st.img.shell();
    let cc = &mut cfg["config"];
    if !cc.is_object() {
        *cc = json!({});
    }
    match cmd {
        Command::Env(kvs) => {
            for kv in kvs {
                if kv.key.is_empty() {
                    bail!("ENV names can not be blank");
                }
                set_env(cc, &kv.key, &kv.value);
            }
        }
        Command::Label(kvs) => {
            let labels = object(cc, "Labels");
            for kv in kvs {
                if kv.key.is_empty() {
                    bail!("LABEL names can not be blank");
                }
                labels.insert(kv.key.clone(), json!(kv.value));
            }
        }
        Command::Maintainer(m) => cfg["author"] = json!(m),
        Command::Expose(ports) => {
            let mut keys = Vec::new();
            for p in ports {
                keys.extend(image::exposed_ports(p)?);
            }
            let exposed = object(cc, "ExposedPorts");
            for k in keys {
                exposed.insert(k, json!({}));
            }
        }
        Command::Volume(paths) => {
            let volumes = object(cc, "Volumes");
            for p in paths {
                if p.trim().is_empty() {
                    bail!("VOLUME specified can not be an empty string");
                }
                volumes.insert(p.clone(), json!({}));
            }
        }
        Command::User(u) => {
            if u.is_empty() {
                bail!("USER requires an argument");
            }
            cc["User"] = json!(u);
        }
        Command::StopSignal(s) => {
            berth_runtime::units::parse_signal(s).map_err(|_| anyhow::anyhow!("invalid signal: {s}"))?;
            cc["StopSignal"] = json!(s);
        }
        Command::Cmd(cl) => cc["Cmd"] = json!(argv(cl, &shell)),
        Command::Entrypoint(cl) => {
            let a = argv(cl, &shell);
            cc["Entrypoint"] = if a.is_empty() { Value::Null } else { json!(a) };
            if !st.cmd_set {
                cc["Cmd"] = Value::Null;
            }
        }
        Command::Healthcheck(h) => cc["Healthcheck"] = healthcheck(h),
        Command::Shell(s) => {
            if s.is_empty() {
                bail!("SHELL requires at least one argument");
            }
            cc["Shell"] = json!(s);
        }
        Command::Onbuild(o) => {
            if !cc["OnBuild"].is_array() {
                cc["OnBuild"] = json!([]);
            }
            if let Some(a) = cc["OnBuild"].as_array_mut() {
                a.push(json!(o.expression));
            }
        }
        Command::Arg(_) => {}
        other => bail!("{} is not a metadata instruction", other.name()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_workdir() {
        assert_eq!(join_clean("", "app"), "/app");
        assert_eq!(join_clean("/a", "b/../c"), "/a/c");
        assert_eq!(join_clean("/a", "/x/"), "/x");
        assert_eq!(join_clean("/", "../.."), "/");
    }

    #[test]
    fn metadata_edits() {
        let img = Img { id: Digest::sha256_of(b""), config: image::scratch_config(), layers: vec![] };
        let st = StageState { img, args: vec![], cmd_set: false, name: "s".into() };
        let mut cfg = st.img.config.clone();
        let p = |t: &str| Dockerfile::parse(&format!("FROM x\n{t}")).unwrap().instructions[1].command.clone();
        for t in [
            "ENV A=1 B=\"two words\"",
            "LABEL l=v",
            "EXPOSE 80 53/udp",
            "VOLUME /data",
            "USER nobody",
            "STOPSIGNAL SIGQUIT",
            "CMD echo hi",
            "HEALTHCHECK --interval=5s CMD true",
            "SHELL [\"/bin/bash\", \"-c\"]",
            "ONBUILD RUN echo child",
        ] {
            let cmd = expand_command(&p(t), &Lexer::new('\\'), &Vec::<(String, String)>::new()).unwrap();
            apply_metadata(&mut cfg, &cmd, &st).unwrap();
        }
        let cc = &cfg["config"];
        assert_eq!(cc["Env"], json!(["A=1", "B=two words"]));
        assert_eq!(cc["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(cc["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(cc["Healthcheck"], json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64}));
        assert_eq!(cc["OnBuild"], json!(["RUN echo child"]));
        assert_eq!(cc["StopSignal"], "SIGQUIT");
        let e = apply_metadata(&mut cfg, &p("STOPSIGNAL SIGNOPE"), &st).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("invalid signal: SIGNOPE"));
        // ENTRYPOINT drops an inherited CMD unless this stage set one.
        apply_metadata(&mut cfg, &p("ENTRYPOINT [\"top\"]"), &st).unwrap();
        assert_eq!(cfg["config"]["Cmd"], Value::Null);
    }
}
