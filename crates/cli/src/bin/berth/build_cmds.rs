//! `berth build` and `berth builder prune`: Docker's flags read into the engine's
//! `BuildOptions`; the context (a directory, a tar archive, or `-`) and the Dockerfile found.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_engine::Engine;
use berth_engine::build::{BuildOptions, ContextDir, ImageFormat, PullPolicy, Secret};
use clap::{Args, Subcommand};

#[derive(Args, Clone)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); may be given several times.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile (default: PATH/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Build-time variables (`NAME=VALUE`, or `NAME` to take our environment's value).
    #[arg(long = "build-arg")]
    build_arg: Vec<String>,
    /// Labels of the image (`KEY=VALUE`).
    #[arg(long)]
    label: Vec<String>,
    /// Do not use the build cache.
    #[arg(long)]
    no_cache: bool,
    /// Local images whose build steps this build may reuse (their history says which).
    #[arg(long)]
    cache_from: Vec<String>,
    /// Pull base images: `--pull` (always), or `--pull=missing|always|never`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "always")]
    pull: Option<String>,
    /// Write the image id to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Print only the image id.
    #[arg(short, long)]
    quiet: bool,
    /// The stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// The platform to build for (only this machine's).
    #[arg(long)]
    platform: Option<String>,
    /// The network of RUN steps: default (the bridge), none, host or a network's name.
    #[arg(long)]
    network: Option<String>,
    /// A secret for `RUN --mount=type=secret`: `id=NAME,src=PATH` or `id=NAME,env=VAR`.
    #[arg(long)]
    secret: Vec<String>,
    /// The image's manifest format: oci (default) or docker.
    #[arg(long)]
    format: Option<String>,
    /// Pin every time in the image to these unix seconds (as SOURCE_DATE_EPOCH does).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Accepted for Docker compatibility: intermediate containers are always removed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    rm: bool,
    /// Accepted for Docker compatibility: intermediate containers are always removed.
    #[arg(long)]
    force_rm: bool,
    /// The build context: a directory, a tar archive, or `-` (a Dockerfile or a tar on stdin).
    context: String,
}

#[derive(Subcommand)]
pub enum BuilderCmd {
    /// Remove the build cache.
    Prune {
        /// Accepted for Docker compatibility (everything is removed).
        #[arg(short, long)]
        all: bool,
        /// Do not ask (berth never asks).
        #[arg(short, long)]
        force: bool,
    },
}

/// Dockerfiles and stdin Dockerfiles larger than this are refused.
const MAX_DOCKERFILE: u64 = 16 << 20;

fn read_limited(r: impl Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    r.take(MAX_DOCKERFILE + 1).read_to_end(&mut bytes).with_context(|| format!("reading {what}"))?;
    if bytes.len() as u64 > MAX_DOCKERFILE {
        bail!("{what} is larger than {MAX_DOCKERFILE} bytes");
    }
    String::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8 text"))
}

/// Whether the first bytes of a stream are a tar archive (possibly compressed).
fn looks_like_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

fn parse_kv(s: &str) -> (String, Option<String>) {
    match s.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (s.to_string(), None),
    }
}

fn parse_secret(s: &str) -> Result<(String, Secret)> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in s.split(',') {
        match parse_kv(field) {
            (k, Some(v)) if k == "id" => id = Some(v),
            (k, Some(v)) if k == "src" || k == "source" => src = Some(v),
            (k, Some(v)) if k == "env" => env = Some(v),
            (k, Some(v)) if k == "type" => kind = Some(v),
            _ => bail!("invalid --secret {s:?}: expected id=NAME,src=PATH or id=NAME,env=VAR"),
        }
    }
    let id = id.or_else(|| src.as_deref().map(|p| p.rsplit('/').next().unwrap_or(p).to_string()));
    let Some(id) = id.filter(|i| !i.is_empty()) else { bail!("invalid --secret {s:?}: no id") };
    let secret = match (kind.as_deref(), src, env) {
        (Some("env"), Some(var), None) | (_, None, Some(var)) => {
            let v = std::env::var_os(&var).with_context(|| format!("--secret {id}: ${var} is not set"))?;
            Secret::Value(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
        }
        (None | Some("file"), Some(p), None) => Secret::File(PathBuf::from(p)),
        (_, None, None) => match std::env::var_os(&id) {
            Some(v) => Secret::Value(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
            None => bail!("--secret {id}: give src=PATH or env=VAR"),
        },
        _ => bail!("invalid --secret {s:?}"),
    };
    Ok((id, secret))
}

/// The Dockerfile in a context directory: `-f` inside it (tar contexts), else `Dockerfile`
/// (or `dockerfile`); read through a path resolved inside the context.
fn dockerfile_in(dir: &Path, name: Option<&str>) -> Result<(String, PathBuf)> {
    let candidates: Vec<&str> = match name {
        Some(n) => vec![n],
        None => vec!["Dockerfile", "dockerfile"],
    };
    let root = berth_runtime::safepath::open_root(dir)?;
    for c in &candidates {
        let rel = berth_runtime::safepath::relative(Path::new(c));
        if let Ok(fd) =
            berth_runtime::safepath::openat_in_root(std::os::fd::AsRawFd::as_raw_fd(&root), &rel, libc::O_RDONLY, 0)
        {
            let f = std::fs::File::from(fd);
            if f.metadata().map(|m| m.is_file()).unwrap_or(false) {
                return Ok((read_limited(f, c)?, dir.join(rel)));
            }
        }
    }
    bail!("unable to find the Dockerfile ({}) in the build context", candidates.join(" or "))
}

pub fn build(e: &Engine, a: BuildArgs) -> Result<i32> {
    let pull = match a.pull.as_deref() {
        None | Some("missing") | Some("false") => PullPolicy::Missing,
        Some("always") | Some("true") => PullPolicy::Always,
        Some("never") => PullPolicy::Never,
        Some(other) => bail!("invalid --pull {other:?}: use missing, always or never"),
    };
    let format = match a.format.as_deref() {
        None | Some("oci") => ImageFormat::Oci,
        Some("docker") => ImageFormat::Docker,
        Some(other) => bail!("invalid --format {other:?}: use oci or docker"),
    };
    let mut build_args = BTreeMap::new();
    for b in &a.build_arg {
        match parse_kv(b) {
            (k, Some(v)) => {
                build_args.insert(k, v);
            }
            // `--build-arg NAME`: our environment's value, if there is one.
            (k, None) => {
                if let Ok(v) = std::env::var(&k) {
                    build_args.insert(k, v);
                }
            }
        }
    }
    // --timestamp, else BuildKit's SOURCE_DATE_EPOCH build arg, else the environment's.
    let epoch = match (a.timestamp, build_args.get("SOURCE_DATE_EPOCH")) {
        (Some(t), _) => Some(t),
        (None, Some(v)) => Some(
            v.trim().parse::<i64>().with_context(|| format!("--build-arg SOURCE_DATE_EPOCH={v:?} is not a number"))?,
        ),
        (None, None) => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => {
                Some(v.trim().parse::<i64>().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?)
            }
            _ => None,
        },
    };
    let labels: BTreeMap<String, String> =
        a.label.iter().map(|l| parse_kv(l)).map(|(k, v)| (k, v.unwrap_or_default())).collect();
    let mut secrets = BTreeMap::new();
    for s in &a.secret {
        let (id, secret) = parse_secret(s)?;
        secrets.insert(id, secret);
    }
    let mut opts = BuildOptions {
        tags: a.tags.clone(),
        build_args,
        labels,
        no_cache: a.no_cache,
        cache_from: a.cache_from.clone(),
        pull,
        target: a.target.clone(),
        platform: a.platform.clone(),
        network: a.network.clone().unwrap_or_default(),
        secrets,
        format,
        epoch,
        quiet: a.quiet,
        ..Default::default()
    };
    for t in &opts.tags {
        berth_image::Reference::parse(t).with_context(|| format!("invalid argument {t:?} for \"-t, --tag\" flag"))?;
    }
    // The context. `_ctx` keeps an unpacked tar context until the build is done.
    let mut _ctx: Option<ContextDir> = None;
    let stdin_dockerfile = a.file.as_deref() == Some("-");
    if a.context == "-" {
        if stdin_dockerfile {
            bail!("the context and the Dockerfile cannot both come from stdin");
        }
        // Peek at the start to tell a tar archive from a Dockerfile, then read on from there.
        let mut stdin = std::io::stdin().lock();
        let mut head = Vec::with_capacity(512);
        (&mut stdin).take(512).read_to_end(&mut head).context("reading stdin")?;
        let r = BufReader::with_capacity(1 << 16, std::io::Cursor::new(head.clone()).chain(stdin));
        if looks_like_archive(&head) {
            let ctx = e.unpack_context(r)?;
            let (text, path) = dockerfile_in(ctx.path(), a.file.as_deref())?;
            opts.dockerfile = text;
            opts.dockerfile_path = Some(path);
            opts.context = Some(ctx.path().to_path_buf());
            _ctx = Some(ctx);
        } else {
            opts.dockerfile = read_limited(r, "the Dockerfile on stdin")?;
        }
        opts.dockerfile_name = "Dockerfile".into();
    } else if a.context.contains("://") || a.context.starts_with("git@") {
        bail!("remote build contexts ({}) are not supported by berth: give a directory or a tar archive", a.context);
    } else {
        let p = PathBuf::from(&a.context);
        let meta = std::fs::metadata(&p)
            .with_context(|| format!("unable to prepare context: path {:?} not found", a.context))?;
        if meta.is_dir() {
            let dir = std::fs::canonicalize(&p)?;
            if stdin_dockerfile {
                opts.dockerfile = read_limited(std::io::stdin().lock(), "the Dockerfile on stdin")?;
                opts.dockerfile_name = "Dockerfile".into();
            } else {
                let path = match &a.file {
                    Some(f) => PathBuf::from(f),
                    None => {
                        let d = dir.join("Dockerfile");
                        if d.exists() || !dir.join("dockerfile").exists() { d } else { dir.join("dockerfile") }
                    }
                };
                let f = std::fs::File::open(&path)
                    .with_context(|| format!("unable to find the Dockerfile {}", path.display()))?;
                opts.dockerfile = read_limited(f, &path.display().to_string())?;
                opts.dockerfile_name = a.file.clone().unwrap_or_else(|| "Dockerfile".into());
                opts.dockerfile_path = Some(std::fs::canonicalize(&path)?);
            }
            opts.context = Some(dir);
        } else {
            let f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            let ctx = e.unpack_context(BufReader::with_capacity(1 << 16, f))?;
            if stdin_dockerfile {
                opts.dockerfile = read_limited(std::io::stdin().lock(), "the Dockerfile on stdin")?;
            } else {
                let (text, path) = dockerfile_in(ctx.path(), a.file.as_deref())?;
                opts.dockerfile = text;
                opts.dockerfile_path = Some(path);
            }
            opts.dockerfile_name = a.file.clone().unwrap_or_else(|| "Dockerfile".into());
            opts.context = Some(ctx.path().to_path_buf());
            _ctx = Some(ctx);
        }
    }
    let quiet = a.quiet;
    let built = e.build(&opts, &|line| {
        if !quiet {
            println!("{line}");
        }
    })?;
    if let Some(f) = &a.iidfile {
        std::fs::write(f, built.id.to_string()).with_context(|| format!("writing --iidfile {}", f.display()))?;
    }
    if quiet {
        println!("{}", built.id);
    } else {
        println!("Successfully built {}", built.id.short());
        for t in &built.tags {
            println!("Successfully tagged {t}");
        }
    }
    Ok(0)
}

fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { format!("{n}B") } else { format!("{v:.3}{}", units[i]).replace(".000", "") }
}

pub fn builder(e: &Engine, c: BuilderCmd) -> Result<i32> {
    match c {
        BuilderCmd::Prune { all: _, force } => {
            if !crate::confirmed(force, "WARNING! This will remove all dangling build cache.") {
                return Ok(0);
            }
            let r = e.prune_build_cache()?;
            if !r.images.is_empty() {
                println!("Deleted build cache objects:");
                for i in &r.images {
                    println!("{i}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(r.bytes));
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_sizes() {
        let (id, s) = parse_secret("id=tok,src=/run/x").unwrap();
        assert_eq!(id, "tok");
        assert!(matches!(s, Secret::File(p) if p == Path::new("/run/x")));
        assert!(parse_secret("src=").is_err());
        assert!(parse_secret("bogus").is_err());
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1_500_000), "1.500MB");
        assert!(looks_like_archive(&[0x1f, 0x8b, 8]));
        assert!(!looks_like_archive(b"FROM busybox\n"));
    }
}
