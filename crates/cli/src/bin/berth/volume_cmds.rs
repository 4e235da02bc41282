//! `volume create|ls|inspect|rm|prune`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use berth_engine::Engine;
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
            let rows = e.list_volumes(&filter)?;
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
                out.push(e.inspect_volume(&e.volume(n)?));
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
