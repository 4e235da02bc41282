//! `volume create|ls|inspect|rm|prune`, and the `-v` / `--mount` values of `run` and `create`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use berth_engine::Engine;
use berth_engine::containers::Bind;
use berth_engine::volumes::Volume;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::template::{print_inspected, print_listing};

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create a volume.
    Create {
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Driver options: type=, device=, o= (mount a filesystem there while in use).
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        #[arg(long = "label")]
        label: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        #[arg(long)]
        format: Option<String>,
    },
    /// Show volumes in detail.
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused ones with -a).
    Prune {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        force: bool,
    },
}

fn key_values(v: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    v.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None if what == "label" => Ok((s.clone(), String::new())),
            None => bail!("invalid {what} {s:?}: expected key=value"),
        })
        .collect()
}

pub fn volume(e: &Engine, cmd: VolumeCmd) -> Result<i32> {
    match cmd {
        VolumeCmd::Create { driver, opt, label, name } => {
            let v = e.create_volume(
                name.as_deref(),
                Some(&driver),
                key_values(&opt, "option")?,
                key_values(&label, "label")?,
            )?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCmd::Ls { quiet, filter, format } => {
            let mut rows = Vec::new();
            for v in e.volumes()? {
                let mut keep = true;
                for f in &filter {
                    keep &= volume_matches(e, &v, f)?;
                }
                if keep {
                    rows.push(v);
                }
            }
            if quiet {
                rows.iter().for_each(|v| println!("{}", v.name));
                return Ok(0);
            }
            let fmt = format.unwrap_or_else(|| "table {{.Driver}}\t{{.Name}}".into());
            let value = |v: &Volume| {
                json!({
                    "Name": v.name,
                    "Driver": v.driver,
                    "Mountpoint": e.volume_data(&v.name),
                    "Scope": "local",
                    "Labels": v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect::<Vec<_>>().join(","),
                })
            };
            let values: Vec<Value> = rows.iter().map(value).collect();
            print_listing(&values, &fmt, &|f| match f {
                "Name" => "VOLUME NAME".into(),
                other => other.to_ascii_uppercase(),
            });
            Ok(0)
        }
        VolumeCmd::Inspect { format, volumes } => {
            let mut out = Vec::new();
            for n in &volumes {
                out.push(inspect_volume(e, &e.volume(n)?));
            }
            print_inspected(&out, format.as_deref())?;
            Ok(0)
        }
        VolumeCmd::Rm { force, volumes } => {
            let mut code = 0;
            for n in &volumes {
                match e.remove_volume(n) {
                    Ok(()) => println!("{n}"),
                    // -f: a volume that does not exist is no error.
                    Err(_) if force && e.volume(n).is_err() => {}
                    Err(err) if volumes.len() == 1 => return Err(err),
                    Err(err) => {
                        eprintln!("Error: {err:#}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCmd::Prune { all, force } => {
            let what = if all { "all local volumes" } else { "anonymous local volumes" };
            if !crate::confirmed(
                force,
                &format!("WARNING! This will remove {what} not used by at least one container."),
            ) {
                return Ok(0);
            }
            let (gone, bytes) = e.prune_volumes(all)?;
            if !gone.is_empty() {
                println!("Deleted Volumes:");
                gone.iter().for_each(|v| println!("{v}"));
                println!();
            }
            println!("Total reclaimed space: {}", crate::image_cmds::human_size(bytes));
            Ok(0)
        }
    }
}

fn volume_matches(e: &Engine, v: &Volume, f: &str) -> Result<bool> {
    let (k, val) = f.split_once('=').with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
    Ok(match k {
        "name" => v.name.contains(val),
        "driver" => v.driver == val,
        "dangling" => (e.volume_users(&v.name)?.is_empty()) == matches!(val, "true" | "1"),
        "label" => match val.split_once('=') {
            Some((lk, lv)) => v.labels.get(lk).is_some_and(|x| x == lv),
            None => v.labels.contains_key(val),
        },
        other => bail!("invalid filter '{other}'"),
    })
}

fn inspect_volume(e: &Engine, v: &Volume) -> Value {
    json!({
        "CreatedAt": berth_runtime::state::rfc3339(v.created / 1_000_000_000, (v.created % 1_000_000_000) as u32),
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": e.volume_data(&v.name),
        "Name": v.name,
        "Options": v.options,
        "Scope": "local",
        "Anonymous": v.anonymous,
    })
}

/// `-v /host:/ctr[:opts]` (a bind), `-v NAME:/ctr[:opts]` (a named volume, made when missing)
/// or `-v /ctr` (an anonymous volume).
pub fn parse_volume(v: &str) -> Result<Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!("invalid volume specification: '{v}'"),
    };
    if !dst.starts_with('/') {
        bail!("invalid volume specification: '{v}': the container path must be absolute");
    }
    let mut b = Bind { destination: dst.into(), ..Default::default() };
    if src.starts_with('/') {
        b.source = src.into();
    } else if src.is_empty() {
        b.volume = Some(String::new());
    } else if berth_engine::volumes::valid_name(src) {
        b.volume = Some(src.into());
    } else {
        bail!(
            "invalid volume specification: '{v}': {src:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
        );
    }
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => b.readonly = true,
            "rw" | "z" | "Z" => {}
            "nocopy" => b.nocopy = true,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => b.propagation = Some(o.into()),
            other => bail!("invalid volume specification: '{v}': unknown option {other:?}"),
        }
    }
    Ok(b)
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…,…`: a bind or volume, or a tmpfs
/// (destination, options).
pub enum Mount {
    Bind(Bind),
    Tmpfs(String, String),
}

pub fn parse_mount(spec: &str) -> Result<Mount> {
    let bad = |why: String| anyhow::anyhow!("invalid argument {spec:?} for \"--mount\" flag: {why}");
    let mut kind = "volume".to_string();
    let (mut src, mut dst) = (String::new(), String::new());
    let mut b = Bind::default();
    let (mut size, mut mode) = (None, None);
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        let flag = |v: &str| -> Result<bool> {
            match v {
                "" | "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(format!("invalid value {v:?} for {k}"))),
            }
        };
        match k {
            "type" => kind = v.to_string(),
            "source" | "src" => src = v.to_string(),
            "target" | "destination" | "dst" => dst = v.to_string(),
            "readonly" | "ro" => b.readonly = flag(v)?,
            "bind-propagation" => b.propagation = Some(v.to_string()),
            "volume-nocopy" => b.nocopy = flag(v)?,
            "volume-opt" => {
                let (ok, ov) = v.split_once('=').ok_or_else(|| bad(format!("invalid volume-opt {v:?}")))?;
                b.volume_options.insert(ok.into(), ov.into());
            }
            "volume-driver" if v == "local" => {}
            "tmpfs-size" => size = Some(v.to_string()),
            "tmpfs-mode" => mode = Some(v.to_string()),
            "consistency" | "bind-nonrecursive" => {}
            other => return Err(bad(format!("unexpected key '{other}'"))),
        }
    }
    if !dst.starts_with('/') {
        return Err(bad("target is required and must be an absolute path".into()));
    }
    match kind.as_str() {
        "bind" => {
            if !src.starts_with('/') {
                return Err(bad("a bind mount needs an absolute source path".into()));
            }
            if !std::path::Path::new(&src).exists() {
                return Err(bad(format!("bind source path does not exist: {src}")));
            }
            b.source = src.into();
            b.destination = dst;
            Ok(Mount::Bind(b))
        }
        "volume" => {
            if !src.is_empty() && !berth_engine::volumes::valid_name(&src) {
                return Err(bad(format!("invalid volume name {src:?}")));
            }
            b.volume = Some(src);
            b.destination = dst;
            Ok(Mount::Bind(b))
        }
        "tmpfs" => {
            if !src.is_empty() {
                return Err(bad("a tmpfs mount takes no source".into()));
            }
            let mut o = Vec::new();
            if let Some(s) = size {
                o.push(format!("size={s}"));
            }
            if let Some(m) = mode {
                o.push(format!("mode={m}"));
            }
            Ok(Mount::Tmpfs(dst, o.join(",")))
        }
        other => Err(bad(format!("mount type {other:?} is not supported (bind, volume, tmpfs)"))),
    }
}

/// The `Mounts` of `inspect`, in Docker's shape.
pub fn mounts_json(c: &berth_engine::ContainerRow) -> Value {
    let mut out: Vec<Value> = c
        .config
        .binds
        .iter()
        .map(|b| {
            json!({
                "Type": if b.volume.is_some() { "volume" } else { "bind" },
                "Name": b.volume.clone().unwrap_or_default(),
                "Source": b.source,
                "Destination": b.destination,
                "Driver": if b.volume.is_some() { "local" } else { "" },
                "Mode": if b.readonly { "ro" } else { "" },
                "RW": !b.readonly,
                "Propagation": b.propagation.clone().unwrap_or_else(|| "rprivate".into()),
            })
        })
        .collect();
    out.extend(c.config.tmpfs.iter().map(
        |(d, _)| json!({"Type": "tmpfs", "Source": "", "Destination": d, "Mode": "", "RW": true, "Propagation": ""}),
    ));
    Value::Array(out)
}
