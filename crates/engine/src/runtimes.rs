//! `--runtime`: a container can be run by another OCI runtime binary (runc, crun, or any with
//! runc's command line) instead of the built-in one. The engine writes the same bundle; the
//! monitor calls the binary's `create`/`start`/`kill`/`pause`/`resume`/`delete` with a state
//! root of berth's (`<runroot>/runtimes/<name>`), and becomes a child subreaper so the
//! container's init, orphaned when the runtime exits, is its child all the same.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use berth_runtime::container::Container;

use crate::Engine;
use crate::containers::ContainerRow;

/// The built-in runtime's names (no binary is run for them).
pub fn is_builtin(name: &str) -> bool {
    matches!(name, "" | "berth-runtime" | "berth")
}

/// A runtime name or path -> the binary, checked at create.
pub fn resolve(name: &str) -> Result<PathBuf> {
    let p = Path::new(name);
    let found = if name.contains('/') {
        p.is_file().then(|| p.to_path_buf())
    } else {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|c| c.is_file()))
            .unwrap_or(None)
    };
    let bin = found.with_context(|| {
        format!("unknown or invalid runtime name: {name} (no such binary in PATH; install it or give its path)")
    })?;
    Ok(bin)
}

/// For a container of another runtime (`--runtime NAME`): its binary and the state root it is
/// given; None for the built-in runtime.
pub(crate) fn external_of(runroot: &Path, name: &str) -> Result<Option<(PathBuf, PathBuf)>> {
    if is_builtin(name) {
        return Ok(None);
    }
    Ok(Some((resolve(name)?, external_root_in(runroot, name))))
}

/// Where another runtime `name` keeps its state for berth's containers (`--root`).
pub(crate) fn external_root_in(runroot: &Path, name: &str) -> PathBuf {
    let base = Path::new(name).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    runroot.join("runtimes").join(base)
}

/// A container's runtime, built-in or external.
pub(crate) enum Runtime {
    Builtin(Container),
    External { bin: PathBuf, root: PathBuf, id: String },
}

impl Engine {
    /// Where an external runtime keeps its state for berth's containers.
    pub(crate) fn external_root(&self, name: &str) -> PathBuf {
        external_root_in(&self.runroot, name)
    }

    /// The runtime that has container `c` (an error for the built-in one when it has no state).
    pub(crate) fn runtime_of(&self, c: &ContainerRow) -> Result<Runtime> {
        if is_builtin(&c.config.runtime) {
            return Ok(Runtime::Builtin(Container::load(&self.runtime_root(), &c.id)?));
        }
        Ok(Runtime::External {
            bin: resolve(&c.config.runtime)?,
            root: self.external_root(&c.config.runtime),
            id: c.id.clone(),
        })
    }
}

impl Runtime {
    fn run(bin: &Path, root: &Path, args: &[&str]) -> Result<()> {
        let out = Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            bail!("{} {}: {}", bin.display(), args.first().unwrap_or(&""), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    pub(crate) fn kill(&self, sig: i32) -> Result<()> {
        match self {
            Runtime::Builtin(c) => c.kill(sig, false),
            Runtime::External { bin, root, id } => Self::run(bin, root, &["kill", id, &sig.to_string()]),
        }
    }

    pub(crate) fn pause(&self, pause: bool) -> Result<()> {
        match (self, pause) {
            (Runtime::Builtin(c), true) => c.pause(),
            (Runtime::Builtin(c), false) => c.resume(),
            (Runtime::External { bin, root, id }, p) => Self::run(bin, root, &[if p { "pause" } else { "resume" }, id]),
        }
    }

    /// New limits for the running container (an OCI linux.resources object).
    pub(crate) fn update(&self, resources: &serde_json::Value) -> Result<()> {
        match self {
            Runtime::Builtin(c) => c.update(&serde_json::from_value(resources.clone())?),
            Runtime::External { bin, root, id } => {
                let f = tempfile_in(root, "resources.json", &serde_json::to_vec(resources)?)?;
                let r = Self::run(bin, root, &["update", "--resources", &f.to_string_lossy(), id]);
                let _ = std::fs::remove_file(&f);
                r
            }
        }
    }

    pub(crate) fn delete(&self) {
        match self {
            Runtime::Builtin(c) => {
                let _ = c.delete(true);
            }
            Runtime::External { bin, root, id } => {
                let _ = Self::run(bin, root, &["delete", "--force", id]);
            }
        }
    }
}

/// The monitor's `create` with an external runtime: the init's pid. The container's stdio are
/// ours (the caller made them the pipes, or gives a console socket for a pty).
pub(crate) fn external_create(bin: &Path, root: &Path, bundle: &Path, id: &str, console: Option<&Path>) -> Result<i32> {
    std::fs::create_dir_all(root)?;
    let pid_file = bundle.join("runtime.pid");
    let log = bundle.join("runtime.log");
    let _ = std::fs::remove_file(&pid_file);
    let mut cmd = Command::new(bin);
    cmd.arg("--root").arg(root).arg("--log").arg(&log).arg("create").arg("--bundle").arg(bundle);
    cmd.arg("--pid-file").arg(&pid_file);
    if let Some(c) = console {
        cmd.arg("--console-socket").arg(c);
    }
    cmd.arg(id).stdin(Stdio::null());
    // The container starts with no signal ignored, as with the built-in runtime (runc and crun
    // pass on what they got: the monitor ignores SIGHUP, SIGINT and SIGPIPE).
    // SAFETY: default_signals makes raw rt_sigaction/rt_sigprocmask calls only, which are
    // async-signal-safe between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            berth_runtime::process::default_signals();
            Ok(())
        });
    }
    let st = cmd.status().with_context(|| format!("running {}", bin.display()))?;
    if !st.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // runc's log is JSON lines with a "msg"; show the last error.
        let msg = text
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["msg"].as_str().map(String::from))
            })
            .unwrap_or_else(|| text.trim().to_string());
        bail!("{} create failed: {msg}", bin.display());
    }
    let pid = std::fs::read_to_string(&pid_file)?.trim().parse::<i32>().context("reading the runtime's pid file")?;
    Ok(pid)
}

pub(crate) fn external_start(bin: &Path, root: &Path, id: &str) -> Result<()> {
    Runtime::run(bin, root, &["start", id])
}

/// `exec` through an external runtime, attached to our own stdio; returns its exit code.
pub fn external_exec(bin: &Path, root: &Path, id: &str, tty: bool, detach: bool, args: &[String]) -> Result<i32> {
    let mut cmd = Command::new(bin);
    cmd.arg("--root").arg(root).arg("exec");
    if tty {
        cmd.arg("-t");
    }
    if detach {
        cmd.arg("-d");
    }
    cmd.arg(id).args(args);
    let st = cmd.status().with_context(|| format!("running {}", bin.display()))?;
    Ok(st.code().unwrap_or(126))
}

/// A file of ours in `dir` holding `bytes` (for a runtime that reads it by path).
fn tempfile_in(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(format!(".{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}
