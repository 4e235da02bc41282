//! `pull`, `push`, `login`, `logout`, and the pull that `run` / `create` do for a missing
//! image (`--pull missing|always|never`). On a terminal a pull shows a progress bar per layer
//! (indicatif); otherwise Docker's plain lines.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use berth_engine::Engine;
use berth_engine::images::display_name;
use berth_engine::pull::{PullOptions, uses_default_tag};
use berth_image::{Platform, Reference};
use berth_registry::{AuthFile, Client, Credentials};
use clap::Args;

#[derive(Args, Clone)]
pub struct PullArgs {
    /// Download all tagged images in the repository.
    #[arg(short = 'a', long)]
    all_tags: bool,
    /// Print only the image's name.
    #[arg(short, long)]
    quiet: bool,
    /// Pull for this platform (os/arch[/variant]) when the image has several.
    #[arg(long)]
    platform: Option<String>,
    /// Accepted for Docker compatibility; signatures are not checked.
    #[arg(long, hide = true)]
    disable_content_trust: Option<Option<bool>>,
    name: String,
}

#[derive(Args, Clone)]
pub struct PushArgs {
    /// Push all tags (not supported yet).
    #[arg(short = 'a', long)]
    all_tags: bool,
    /// Print only the digest line.
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, hide = true)]
    disable_content_trust: Option<Option<bool>>,
    name: String,
}

#[derive(Args, Clone)]
pub struct LoginArgs {
    #[arg(short, long)]
    username: Option<String>,
    #[arg(short, long)]
    password: Option<String>,
    /// Take the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The registry (default: Docker Hub).
    server: Option<String>,
}

#[derive(Args, Clone)]
pub struct LogoutArgs {
    server: Option<String>,
}

/// `https://host:5000/v2/` and friends -> `host:5000`; none -> `docker.io`.
fn registry_name(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io").trim();
    let s = s.trim_start_matches("https://").trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// Per-layer progress bars of a pull: a bar per layer line (`<id>: <status>`), filled by the
/// bytes the engine reports; every other line printed above them.
struct Bars {
    mp: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    fn new(stderr: bool) -> Arc<Bars> {
        let target =
            if stderr { indicatif::ProgressDrawTarget::stderr() } else { indicatif::ProgressDrawTarget::stdout() };
        Arc::new(Bars { mp: indicatif::MultiProgress::with_draw_target(target), bars: Mutex::new(HashMap::new()) })
    }

    fn plain() -> indicatif::ProgressStyle {
        indicatif::ProgressStyle::with_template("{prefix}: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
    }

    fn bar(&self, id: &str) -> indicatif::ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(id.to_string())
            .or_insert_with(|| {
                let b = self.mp.add(indicatif::ProgressBar::new(0).with_style(Self::plain()));
                b.set_prefix(id.to_string());
                b
            })
            .clone()
    }

    fn line(&self, l: &str) {
        let layer = l.split_once(": ").filter(|(id, _)| id.len() == 12 && id.bytes().all(|c| c.is_ascii_hexdigit()));
        match layer {
            Some((id, status)) => {
                let b = self.bar(id);
                if matches!(status, "Pull complete" | "Already exists" | "Download complete") {
                    b.set_style(Self::plain());
                }
                b.set_message(status.to_string());
                if matches!(status, "Pull complete" | "Already exists") {
                    b.finish();
                }
            }
            None => {
                // A finished line of the block, so that it stays in order with the bars.
                let t = indicatif::ProgressStyle::with_template("{msg}").unwrap_or_else(|_| Self::plain());
                let b = self.mp.add(indicatif::ProgressBar::new(0).with_style(t));
                b.finish_with_message(l.to_string());
            }
        }
    }

    fn bytes(&self, d: &berth_image::Digest, done: u64, total: u64) {
        let b = self.bar(d.short());
        if b.length() != Some(total) {
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix}: {msg} [{bar:50}] {decimal_bytes}/{decimal_total_bytes}",
                )
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| Self::plain()),
            );
            b.set_length(total);
            b.set_message("Downloading");
        }
        b.set_position(done);
    }

    fn on_bytes(self: &Arc<Self>) -> berth_engine::pull::OnBytes {
        let me = self.clone();
        Arc::new(move |d, done, total| me.bytes(d, done, total))
    }

    fn done(&self) {
        for b in self.bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

/// Whether progress bars suit `fd` (a terminal that is not `dumb`).
fn bars_on(stderr: bool) -> bool {
    let tty = if stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
    tty && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true)
}

pub fn pull(e: &Engine, a: PullArgs) -> Result<i32> {
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    if !a.quiet && !a.all_tags && uses_default_tag(&a.name) {
        println!("Using default tag: latest");
    }
    let opts = PullOptions { platform, unpack: true };
    let quiet = a.quiet;
    let bars = (!quiet && bars_on(false)).then(|| Bars::new(false));
    let on_bytes = bars.as_ref().map(|b| b.on_bytes());
    let line = |l: &str| match &bars {
        _ if quiet => {}
        Some(b) => b.line(l),
        None => println!("{l}"),
    };
    let result = if a.all_tags {
        e.pull_all_tags(&a.name, &opts, &line, on_bytes).map(|p| {
            // Docker names the repository at the end.
            p.first().map(|x| format!("{}/{}", x.reference.registry, x.reference.repository)).unwrap_or_default()
        })
    } else {
        e.pull_with_bytes(&a.name, &opts, &line, on_bytes).map(|p| p.reference.full())
    };
    if let Some(b) = &bars {
        b.done();
    }
    println!("{}", result?);
    Ok(0)
}

pub fn push(e: &Engine, a: PushArgs) -> Result<i32> {
    if a.all_tags {
        bail!("push --all-tags is not supported yet: push the tags one by one");
    }
    if !a.quiet && uses_default_tag(&a.name) {
        println!("Using default tag: latest");
    }
    let quiet = a.quiet;
    let pushed = e.push(&a.name, &|line| {
        if !quiet {
            println!("{line}");
        }
    })?;
    if quiet {
        println!("{}", display_name(&pushed.reference));
    }
    Ok(0)
}

/// Reads a line from the terminal, without echo for passwords.
fn prompt(label: &str, secret: bool) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("Cannot perform an interactive login from a non TTY device");
    }
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    // SAFETY: tcgetattr/tcsetattr on fd 0, which is a terminal.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if secret && libc::tcgetattr(0, &mut t) == 0 {
            let old = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(old)
        } else {
            None
        }
    };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restoring the saved settings.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        eprintln!();
    }
    r.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn login(a: LoginArgs) -> Result<i32> {
    let registry = registry_name(a.server.as_deref());
    Reference::parse(&format!("{registry}/x")).with_context(|| format!("invalid registry {registry:?}"))?;
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin => bail!("Must provide --username with --password-stdin"),
        None => prompt("Username: ", false)?,
    };
    if username.is_empty() {
        bail!("Error: Non-null Username Required");
    }
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the password from standard input")?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else {
        match a.password {
            Some(p) => p,
            None => prompt("Password: ", true)?,
        }
    };
    if password.is_empty() {
        bail!("Error: Password Required");
    }
    let client = Client::from_env()?;
    let creds = Credentials { username, password };
    client.login(&registry, &creds)?;
    client.auth_file.set(&registry, &creds)?;
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(a: LogoutArgs) -> Result<i32> {
    let registry = registry_name(a.server.as_deref());
    let f = AuthFile::new(AuthFile::default_path());
    if f.remove(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}

/// For `run` / `create`: pulls `image` when `--pull` says so (`missing`: when it is not here;
/// `always`; `never`: not at all). Docker's lines go to stderr, so stdout stays the
/// container's.
pub fn ensure_image(e: &Engine, image: &str, policy: &str, platform: Option<&str>) -> Result<()> {
    let present = e.resolve_image(image).is_ok();
    match policy {
        "never" => return Ok(()),
        "missing" if present => return Ok(()),
        _ => {}
    }
    if !present {
        let shown = Reference::parse(image).map(|r| display_name(&r)).unwrap_or_else(|_| image.to_string());
        eprintln!("Unable to find image '{shown}' locally");
    }
    let opts = PullOptions { platform: platform.map(Platform::parse).transpose()?, unpack: true };
    let bars = bars_on(true).then(|| Bars::new(true));
    let on_bytes = bars.as_ref().map(|b| b.on_bytes());
    let line = |l: &str| match &bars {
        Some(b) => b.line(l),
        None => eprintln!("{l}"),
    };
    let r = e.pull_with_bytes(image, &opts, &line, on_bytes);
    if let Some(b) = &bars {
        b.done();
    }
    r?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names() {
        assert_eq!(registry_name(None), "docker.io");
        assert_eq!(registry_name(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(registry_name(Some("http://127.0.0.1:5000/v2/")), "127.0.0.1:5000");
        assert_eq!(registry_name(Some("localhost:5000")), "localhost:5000");
    }
}
