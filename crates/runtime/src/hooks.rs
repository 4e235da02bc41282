//! OCI hooks: the state on stdin, a timeout, and a clear error naming the hook.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Hook;

pub fn run_all(kind: &str, hooks: Option<&Vec<Hook>>, state_json: &[u8]) -> Result<()> {
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        run(h, state_json).with_context(|| format!("hooks.{kind}[{i}] ({})", h.path().display()))?;
    }
    Ok(())
}

/// poststart and poststop: a failed hook is a warning and the ones after it still run (the
/// spec: "log a warning, but the remaining hooks and lifecycle continue").
pub fn run_all_warn(kind: &str, hooks: Option<&Vec<Hook>>, state_json: &[u8]) {
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        if let Err(e) = run(h, state_json) {
            eprintln!("warning: hooks.{kind}[{i}] ({}): {e:#}", h.path().display());
        }
    }
}

fn run(h: &Hook, state_json: &[u8]) -> Result<()> {
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some(a0) = args.first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1)).env_clear().stdin(Stdio::piped());
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().context("starting the hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json);
    }
    let deadline = h.timeout().filter(|t| *t > 0).map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("the hook failed: {st}");
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the hook timed out after {}s", h.timeout().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
