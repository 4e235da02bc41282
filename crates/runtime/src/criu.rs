//! `checkpoint` and `restore` through CRIU, the `criu` command (runc drives the same tool
//! through its RPC socket; the options below are the ones runc sets).
//!
//! checkpoint: `criu dump` of the container's process tree (frozen through its cgroup) into
//! the image directory, with the container's root as the dump's root, its bind mounts marked
//! external (their sources are the host's, named again at restore) and the init's stdio
//! recorded in `descriptors.json` (runc's file). Unless `--leave-running`, the container is
//! then deleted, as runc does, so that it can be restored under the same id.
//!
//! restore: a new container (state dir, cgroup with the bundle's limits) whose processes come
//! from `criu restore` instead of the bundle's process: the root is bind-mounted at
//! `<state>/criu-root` for CRIU, the external mounts are mapped to the bundle's sources again,
//! pipes among the init's stdio are replaced by the restoring caller's (`--inherit-fd`).
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;

use crate::container::{Container, cgroup_for, effective_resources, new_state_dir, write_pid_file};
use crate::state::{self, State, Status};

/// What both take (runc's flags of the same names).
#[derive(Debug, Clone, Default)]
pub struct CriuOptions {
    /// Where the images are written (checkpoint) or read (restore).
    pub image_path: PathBuf,
    /// Where CRIU's log and work files go [default: the image path].
    pub work_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    /// soft, full, strict or ignore [default: soft].
    pub manage_cgroups_mode: Option<String>,
}

pub struct RestoreOptions {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub criu: CriuOptions,
}

impl CriuOptions {
    /// The same with absolute paths: criu works from its own directory.
    fn absolute(&self) -> Result<CriuOptions> {
        Ok(CriuOptions {
            image_path: absolute(&self.image_path)?,
            work_path: self.work_path.as_deref().map(absolute).transpose()?,
            ..self.clone()
        })
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
}

/// runc's name for the record of the init's stdio, kept in the image directory.
const DESCRIPTORS: &str = "descriptors.json";

/// The `criu` binary, or an error that names what to install.
pub fn binary() -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("criu")).find(|p| p.is_file()))
        .context("checkpoint/restore needs CRIU, which is not installed (criu not found in PATH; apt install criu)")
}

/// The arguments `dump` and `restore` share.
fn common(o: &CriuOptions, work: &Path, log: &str) -> Result<Vec<OsString>> {
    let mut a: Vec<OsString> = vec![
        "--images-dir".into(),
        o.image_path.clone().into(),
        "--work-dir".into(),
        work.into(),
        "--log-file".into(),
        log.into(),
        "-v4".into(),
    ];
    let mode = o.manage_cgroups_mode.as_deref().unwrap_or("soft");
    if !matches!(mode, "soft" | "full" | "strict" | "ignore") {
        bail!("--manage-cgroups-mode {mode:?}: expected soft, full, strict or ignore");
    }
    a.push(format!("--manage-cgroups={mode}").into());
    for (on, flag) in [
        (o.tcp_established, "--tcp-established"),
        (o.ext_unix_sk, "--ext-unix-sk"),
        (o.shell_job, "--shell-job"),
        (o.file_locks, "--file-locks"),
    ] {
        if on {
            a.push(flag.into());
        }
    }
    Ok(a)
}

/// The spec's bind mounts, by destination (CRIU calls them external: their sources are not in
/// the container's mount namespace).
fn bind_mounts(spec: &Spec) -> Vec<(String, PathBuf)> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| Some((m.destination().to_string_lossy().into_owned(), m.source().clone()?)))
        .collect()
}

/// Runs `criu ARGS`; a failure carries the end of its log.
fn run_criu(args: &[OsString], work: &Path, log: &str, what: &str) -> Result<()> {
    let status = Command::new(binary()?).args(args).status().with_context(|| format!("running criu {what}"))?;
    if !status.success() {
        let text = fs::read_to_string(work.join(log)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().filter(|l| l.contains("Error") || l.contains("Warn")).collect();
        let tail = tail[tail.len().saturating_sub(6)..].join("\n  ");
        bail!("criu {what} failed ({status}); from {}:\n  {tail}", work.join(log).display());
    }
    Ok(())
}

fn work_dir(o: &CriuOptions) -> Result<PathBuf> {
    let w = o.work_path.clone().unwrap_or_else(|| o.image_path.clone());
    fs::create_dir_all(&w).with_context(|| format!("creating the work path {}", w.display()))?;
    Ok(w)
}

impl Container {
    /// `criu dump` of the running (or paused) container; deletes it afterwards unless
    /// `leave_running`.
    pub fn checkpoint(&self, o: &CriuOptions, leave_running: bool) -> Result<()> {
        let s = self.status();
        if !matches!(s, Status::Running | Status::Paused) {
            bail!("cannot checkpoint a container that is {s} (only a running or paused one)");
        }
        binary()?;
        let spec = self.spec()?;
        let o = &o.absolute()?;
        fs::create_dir_all(&o.image_path)
            .with_context(|| format!("creating the image path {}", o.image_path.display()))?;
        let work = work_dir(o)?;
        let pid = self.state.pid;
        let stdio: Vec<String> = (0..3)
            .map(|fd| {
                fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "/dev/null".into())
            })
            .collect();
        fs::write(o.image_path.join(DESCRIPTORS), serde_json::to_vec(&stdio)?)
            .with_context(|| format!("writing {DESCRIPTORS}"))?;

        let mut a: Vec<OsString> = vec!["dump".into(), "--tree".into(), pid.to_string().into()];
        a.extend(common(o, &work, "dump.log")?);
        a.push("--root".into());
        a.push(self.state.rootfs.clone().into());
        if leave_running {
            a.push("--leave-running".into());
        }
        if let Some(cg) = self.cgroup() {
            a.push("--freeze-cgroup".into());
            a.push(cg.freezer_dir().into());
        }
        for (dest, _) in bind_mounts(&spec) {
            a.push("--external".into());
            a.push(format!("mnt[{dest}]:{dest}").into());
        }
        run_criu(&a, &work, "dump.log", "dump")?;
        if !leave_running {
            self.delete(true).context("removing the checkpointed container")?;
        }
        Ok(())
    }
}

/// The bundle's root bind-mounted where CRIU wants it (a mount point of its own), outside the
/// container's state dir so that no removal of that dir can reach into the root; unmounted when
/// dropped.
struct CriuRoot(PathBuf);

impl CriuRoot {
    fn mount(root: &Path, id: &str, rootfs: &Path) -> Result<CriuRoot> {
        let p = root.join(format!(".criu-root-{id}"));
        fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        let flags = nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC;
        if let Err(e) = nix::mount::mount(Some(rootfs), &p, None::<&str>, flags, None::<&str>) {
            let _ = fs::remove_dir(&p);
            return Err(e).with_context(|| format!("bind-mounting {} for criu", rootfs.display()));
        }
        Ok(CriuRoot(p))
    }
}

impl Drop for CriuRoot {
    fn drop(&mut self) {
        // Only an empty directory is removed: if the unmount failed, the root stays untouched.
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.0);
    }
}

/// Restores a checkpoint as container `o.id` of the bundle. Returns its state (running).
pub fn restore(o: &RestoreOptions) -> Result<State> {
    state::validate_id(&o.id)?;
    binary()?;
    let opts = o.criu.absolute()?;
    let root = absolute(&o.root)?;
    let images = &opts.image_path;
    if !images.join("inventory.img").is_file() {
        bail!("{} holds no checkpoint (no inventory.img): see `berth-runtime checkpoint`", images.display());
    }
    let bundle = fs::canonicalize(&o.bundle).with_context(|| format!("bundle {}", o.bundle.display()))?;
    let (spec, spec_bytes) = crate::spec::load_bytes(&bundle)?;
    let rootfs = crate::spec::rootfs_path(&spec, &bundle)?;
    let stdio: Vec<String> = match fs::read(images.join(DESCRIPTORS)) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {DESCRIPTORS}"))?,
        Err(_) => Vec::new(),
    };
    let work = work_dir(&opts)?;
    // Everything checked before anything is made.
    let shared = common(&opts, &work, "restore.log")?;
    let cg = cgroup_for(&spec, &o.id)?;
    crate::container::refuse_busy(&cg)?;

    let (dir, mut undo) = new_state_dir(&root, &o.id, &spec_bytes)?;
    // The cgroup with the bundle's limits; CRIU puts the processes back into it (same path).
    undo.cgroup = Some(cg.clone());
    cg.create()?;
    if let Some(r) = effective_resources(&spec)? {
        cg.apply(&r).context("linux.resources")?;
    }
    let criu_root = CriuRoot::mount(&root, &o.id, &rootfs)?;

    let pidfile = dir.join("restore.pid");
    let mut a: Vec<OsString> =
        vec!["restore".into(), "--restore-detached".into(), "--pidfile".into(), pidfile.clone().into()];
    a.extend(shared);
    a.push("--root".into());
    a.push(criu_root.0.clone().into());
    // Device nodes by any path when the dumped one is not there (runc's EvasiveDevices).
    a.push("--evasive-devices".into());
    for (dest, src) in bind_mounts(&spec) {
        let src = if src.is_absolute() { src } else { bundle.join(src) };
        a.push("--external".into());
        a.push(format!("mnt[{dest}]:{}", src.display()).into());
    }
    // The init's stdio pipes become ours (what the caller of restore handed us).
    for (fd, what) in stdio.iter().enumerate() {
        if what.starts_with("pipe:") && is_pipe(fd as i32) {
            a.push("--inherit-fd".into());
            a.push(format!("fd[{fd}]:{what}").into());
        }
    }
    let res = run_criu(&a, &work, "restore.log", "restore");
    drop(criu_root);
    res?;
    let pid: i32 = fs::read_to_string(&pidfile)
        .context("reading criu's pid file")?
        .trim()
        .parse()
        .context("criu's pid file does not hold a pid")?;
    undo.pids.push(pid);
    let st = State {
        oci_version: spec.version().clone(),
        id: o.id.clone(),
        pid,
        pid_start: state::proc_start(pid).map(|s| s.0).unwrap_or(0),
        bundle,
        rootfs,
        created: state::now_rfc3339(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup_path: Some(cg.path().to_path_buf()),
        owner: String::new(),
    };
    st.save(&root)?;
    if let Some(pf) = &o.pid_file {
        write_pid_file(pf, pid)?;
    }
    undo.disarm();
    Ok(st)
}

/// Whether our `fd` is open on a pipe.
fn is_pipe(fd: i32) -> bool {
    // SAFETY: fstat of a number writes only into the zeroed struct given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO }
}
