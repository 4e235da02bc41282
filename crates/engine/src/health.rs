//! Healthchecks, run by the container's monitor (no daemon): on schedule it execs the test in
//! the container, keeps its exit code and the start of its output, and writes the container's
//! health (`starting`, `healthy`, `unhealthy`, a failing streak and the last five results) to
//! `<container dir>/health.json` for `inspect` and `ps`.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_runtime::container::Container;
use serde::{Deserialize, Serialize};

/// Docker's healthcheck config (durations in nanoseconds, 0 = the default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: u32,
}

impl Healthcheck {
    /// Whether there is a test to run (not empty, not `NONE`).
    pub fn enabled(&self) -> bool {
        matches!(self.test.first().map(String::as_str), Some("CMD" | "CMD-SHELL")) && self.test.len() > 1
    }

    fn command(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1..].join(" ")],
            _ => self.test[1..].to_vec(),
        }
    }

    fn dur(ns: i64, default: Duration) -> Duration {
        if ns > 0 { Duration::from_nanos(ns as u64) } else { default }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Result_ {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// What `inspect` shows as State.Health.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<Result_>,
}

pub fn read(dir: &Path) -> Option<Health> {
    serde_json::from_slice(&fs::read(dir.join("health.json")).ok()?).ok()
}

struct Probe {
    pid: i32,
    pidfd: OwnedFd,
    out: OwnedFd,
    buf: Vec<u8>,
    began: Instant,
    began_wall: String,
}

/// The monitor's scheduler of one container's checks.
pub struct Checker {
    cfg: Healthcheck,
    runtime_root: PathBuf,
    /// Another OCI runtime's binary and state root (`--runtime`): checks go through its exec.
    external: Option<(PathBuf, PathBuf)>,
    bundle: PathBuf,
    id: String,
    file: PathBuf,
    started: Instant,
    next: Instant,
    probe: Option<Probe>,
    state: Health,
}

const OUTPUT_MAX: usize = 4096;

impl Checker {
    pub fn new(
        cfg: &Healthcheck,
        runtime_root: &Path,
        id: &str,
        dir: &Path,
        external: Option<(PathBuf, PathBuf)>,
    ) -> Option<Checker> {
        if !cfg.enabled() {
            return None;
        }
        let now = Instant::now();
        let mut c = Checker {
            cfg: cfg.clone(),
            runtime_root: runtime_root.to_path_buf(),
            external,
            bundle: dir.to_path_buf(),
            id: id.to_string(),
            file: dir.join("health.json"),
            started: now,
            next: now,
            probe: None,
            state: Health { status: "starting".into(), failing_streak: 0, log: Vec::new() },
        };
        c.next = now + c.interval();
        c.save();
        Some(c)
    }

    fn in_start_period(&self) -> bool {
        self.started.elapsed() < Healthcheck::dur(self.cfg.start_period, Duration::ZERO)
    }

    fn interval(&self) -> Duration {
        if self.state.status == "starting" && self.cfg.start_interval > 0 && self.in_start_period() {
            return Healthcheck::dur(self.cfg.start_interval, Duration::from_secs(5));
        }
        Healthcheck::dur(self.cfg.interval, Duration::from_secs(30))
    }

    /// The poll timeout until the next thing to do, in ms.
    pub fn timeout_ms(&self) -> i32 {
        let until = match &self.probe {
            Some(p) => p.began + Healthcheck::dur(self.cfg.timeout, Duration::from_secs(30)),
            None => self.next,
        };
        until.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32
    }

    /// The probe's pidfd and output pipe, to poll (-1 when none runs).
    pub fn fds(&self) -> (RawFd, RawFd) {
        match &self.probe {
            Some(p) => (p.pidfd.as_raw_fd(), p.out.as_raw_fd()),
            None => (-1, -1),
        }
    }

    /// Called after every poll: reads output, collects a finished probe, kills a late one,
    /// starts the next when it is due.
    pub fn tick(&mut self) {
        if let Some(p) = &mut self.probe {
            let mut chunk = [0u8; 1024];
            loop {
                // SAFETY: a non-blocking read into our buffer.
                let n = unsafe { libc::read(p.out.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
                if n <= 0 {
                    break;
                }
                let room = OUTPUT_MAX.saturating_sub(p.buf.len());
                p.buf.extend_from_slice(&chunk[..(n as usize).min(room)]);
            }
            let mut status = 0;
            // SAFETY: waitpid of the probe, our child.
            let done = unsafe { libc::waitpid(p.pid, &mut status, libc::WNOHANG) } == p.pid;
            let late = p.began.elapsed() >= Healthcheck::dur(self.cfg.timeout, Duration::from_secs(30));
            if done || late {
                let code = if done {
                    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) }
                } else {
                    // SAFETY: kill and reap our own child.
                    unsafe {
                        libc::kill(p.pid, libc::SIGKILL);
                        libc::waitpid(p.pid, std::ptr::null_mut(), 0);
                    }
                    -1
                };
                let mut output = String::from_utf8_lossy(&p.buf).into_owned();
                if !done {
                    output = format!(
                        "Health check exceeded timeout ({}s)",
                        Healthcheck::dur(self.cfg.timeout, Duration::from_secs(30)).as_secs()
                    );
                }
                let r = Result_ {
                    start: p.began_wall.clone(),
                    end: berth_runtime::state::now_rfc3339(),
                    exit_code: code,
                    output,
                };
                self.probe = None;
                self.record(r);
                self.next = Instant::now() + self.interval();
            }
        }
        if self.probe.is_none() && Instant::now() >= self.next {
            match self.start() {
                Ok(p) => self.probe = Some(p),
                Err(e) => {
                    let now = berth_runtime::state::now_rfc3339();
                    let r = Result_ { start: now.clone(), end: now, exit_code: -1, output: format!("{e:#}") };
                    self.record(r);
                    self.next = Instant::now() + self.interval();
                }
            }
        }
    }

    /// The container is going: kill and reap a probe still running. (A probe lives in the
    /// container's pid namespace: until we reap it, the container's init cannot finish.)
    pub fn abort(&mut self) {
        if let Some(p) = self.probe.take() {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(p.pid, libc::SIGKILL);
                libc::waitpid(p.pid, std::ptr::null_mut(), 0);
            }
        }
    }

    fn record(&mut self, r: Result_) {
        let before = self.state.status.clone();
        let ok = r.exit_code == 0;
        self.state.log.push(r);
        if self.state.log.len() > 5 {
            self.state.log.remove(0);
        }
        if ok {
            self.state.status = "healthy".into();
            self.state.failing_streak = 0;
        } else if !(self.in_start_period() && self.state.status == "starting") {
            // Failures in the start period do not count (Docker's rule).
            self.state.failing_streak += 1;
            let retries = if self.cfg.retries == 0 { 3 } else { self.cfg.retries };
            if self.state.failing_streak >= retries {
                self.state.status = "unhealthy".into();
            }
        }
        self.save();
        if self.state.status != before
            && let Some(runroot) = self.runtime_root.parent()
        {
            let action = format!("health_status: {}", self.state.status);
            crate::events::emit(runroot, "container", &action, &self.id, &[]);
        }
    }

    fn save(&self) {
        let tmp = self.file.with_extension("json.tmp");
        if fs::write(&tmp, serde_json::to_vec(&self.state).unwrap_or_default()).is_ok() {
            let _ = fs::rename(&tmp, &self.file);
        }
    }

    /// Execs the test in the container with its output in a pipe to us.
    fn start(&self) -> Result<Probe> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        if let Some((bin, root)) = &self.external {
            return self.start_external(bin, root, r, w);
        }
        let rc = Container::load(&self.runtime_root, &self.id)?;
        let spec = rc.spec()?;
        let mut p = spec.process().clone().context("the container has no process")?;
        p.set_args(Some(self.cfg.command()));
        p.set_terminal(Some(false));
        // The runtime gives the process our stdout and stderr: make them the pipe meanwhile.
        // SAFETY: dup/dup2 of fds we hold; restored right after.
        let saved = unsafe { (libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 10), libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 10)) };
        // The probe's end must block, the monitor's must not.
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()))?;
        // SAFETY: dup2 onto our stdout/stderr, restored below.
        unsafe {
            libc::dup2(w.as_raw_fd(), 1);
            libc::dup2(w.as_raw_fd(), 2);
        }
        let began_wall = berth_runtime::state::now_rfc3339();
        let began = Instant::now();
        let pid = rc.exec(&p, None, 0);
        // SAFETY: as above.
        unsafe {
            libc::dup2(saved.0, 1);
            libc::dup2(saved.1, 2);
            libc::close(saved.0);
            libc::close(saved.1);
        }
        drop(w);
        Self::probe(pid?, r, began, began_wall)
    }

    fn probe(pid: i32, out: OwnedFd, began: Instant, began_wall: String) -> Result<Probe> {
        // SAFETY: pidfd_open of our child.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("pidfd_open of the health check");
        }
        // SAFETY: a fresh fd.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Probe { pid, pidfd, out, buf: Vec::new(), began, began_wall })
    }

    /// The test through another runtime's `exec --detach`: its process, output in our pipe,
    /// is orphaned to the monitor (a child subreaper), which then waits for it as for its own.
    fn start_external(&self, bin: &Path, root: &Path, r: OwnedFd, w: OwnedFd) -> Result<Probe> {
        let spec: serde_json::Value = serde_json::from_slice(&fs::read(self.bundle.join("config.json"))?)?;
        let mut p = spec["process"].clone();
        p["args"] = serde_json::json!(self.cfg.command());
        p["terminal"] = serde_json::json!(false);
        let proc_file = self.bundle.join("health-process.json");
        let pid_file = self.bundle.join("health.pid");
        fs::write(&proc_file, serde_json::to_vec(&p)?)?;
        let _ = fs::remove_file(&pid_file);
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()))?;
        let began_wall = berth_runtime::state::now_rfc3339();
        let began = Instant::now();
        let mut child = std::process::Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["exec", "--detach", "--pid-file"])
            .arg(&pid_file)
            .arg("--process")
            .arg(&proc_file)
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .stdout(w.try_clone()?)
            .stderr(w)
            .spawn()
            .with_context(|| format!("running {}", bin.display()))?;
        // The monitor has a container to look after: the runtime gets the check's timeout.
        let st = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if began.elapsed() > Healthcheck::dur(self.cfg.timeout, Duration::from_secs(30)) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} exec of the health check did not return within the timeout", bin.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !st.success() {
            bail!("{} exec of the health check failed ({st})", bin.display());
        }
        let pid: i32 = fs::read_to_string(&pid_file)?.trim().parse().context("reading the health check's pid file")?;
        Self::probe(pid, r, began, began_wall)
    }
}
