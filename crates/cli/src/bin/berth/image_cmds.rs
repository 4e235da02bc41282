//! Image commands with Docker's flags and output: `images` / `image ls`, `history`,
//! `image inspect`, `save`, `export`, and `system df` / `system check`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_engine::images::SaveFormat;
use berth_engine::{ContainerRow, Engine};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::template::{Template, print_tabbed};

#[derive(Args, Clone)]
pub struct ImagesArgs {
    /// Show all images (the intermediate images of builds too).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only show image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Do not truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE.
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Go template, `table TEMPLATE` or `json`.
    #[arg(long)]
    format: Option<String>,
    /// Only images of this repository (and tag).
    reference: Option<String>,
}

#[derive(Args, Clone)]
pub struct HistoryArgs {
    /// Sizes and dates in human readable form.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    #[arg(long)]
    no_trunc: bool,
    #[arg(short, long)]
    quiet: bool,
    #[arg(long)]
    format: Option<String>,
    image: String,
}

#[derive(Args, Clone)]
pub struct InspectArgs {
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Clone)]
pub struct SaveArgs {
    /// Write to a file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// docker-archive (Docker's `save`, also an OCI layout) or oci-archive (the images as
    /// stored: compressed layers, the registry's digests).
    #[arg(long, default_value = "docker-archive")]
    format: String,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Clone)]
pub struct ExportArgs {
    /// Write to a file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    container: String,
}

#[derive(Subcommand, Clone)]
pub enum SystemCmd {
    /// Show disk usage of images, containers and volumes.
    Df {
        #[arg(short, long)]
        verbose: bool,
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove stopped containers, unused networks, dangling images (all unused with -a), the
    /// build cache, and with --volumes unused anonymous volumes.
    Prune {
        #[arg(short, long)]
        all: bool,
        #[arg(long)]
        volumes: bool,
        #[arg(short, long)]
        force: bool,
    },
    /// Verify the image store (every blob's digest, every layer) and report what is wrong.
    Check {
        /// Remove broken blobs and layers, and the images and rows that point to them.
        #[arg(long)]
        repair: bool,
    },
}

/// Docker's sizes (`units.HumanSize`): decimal units, four significant digits.
pub fn human_size(b: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", g4(v), units[i])
}

/// `%.4g` of a value below 1000.
fn g4(v: f64) -> String {
    let decimals = if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    // 999.96 rounds to "1000": keep four digits.
    if s.len() > 4 && !s.contains('.') { format!("{v:.0}") } else { s }
}

use berth_engine::describe::human_duration;

/// Unix seconds of an RFC 3339 time (`2024-01-02T03:04:05.678Z`, `...+02:00`).
pub fn parse_time(s: &str) -> Option<i64> {
    berth_engine::describe::parse_rfc3339(s).map(|n| n.div_euclid(1_000_000_000))
}

fn now_secs() -> i64 {
    berth_engine::db::now_nanos() / 1_000_000_000
}

fn since(created: Option<&str>) -> String {
    match created.and_then(parse_time) {
        Some(t) => format!("{} ago", human_duration(now_secs() - t)),
        None => "N/A".into(),
    }
}

/// Docker's `CreatedAt`: `2024-01-02 03:04:05 +0000 UTC`.
fn created_at(created: Option<&str>) -> String {
    match created.and_then(parse_time) {
        Some(t) => {
            let s = berth_runtime::state::rfc3339(t, 0);
            format!("{} {} +0000 UTC", s.get(..10).unwrap_or(""), s.get(11..19).unwrap_or(""))
        }
        None => String::new(),
    }
}

/// Shortens to `max` characters with `…`, as Docker's tables do.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

/// Prints `rows` (JSON objects) with `format` (Go template, `table ...`, `json`) or the
/// default table; `header` names the fields.
fn print_rows(rows: &[Value], format: Option<&str>, default: &str, header: &[(&str, &str)]) {
    let f = format.unwrap_or(default);
    if f == "json" {
        for r in rows {
            println!("{r}");
        }
        return;
    }
    let t = Template::parse(if f == "table" { default } else { f });
    let names: BTreeMap<&str, &str> = header.iter().copied().collect();
    let mut lines = Vec::new();
    if t.table {
        lines.push(t.header(&|f| names.get(f).map(|s| s.to_string()).unwrap_or_else(|| f.to_uppercase())));
    }
    for r in rows {
        lines.push(t.render(r));
    }
    if t.table {
        print_tabbed(&lines);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
}

/// Matches `name` against a glob with `*` (not across `/`), `?` and literal characters.
pub fn images(e: &Engine, a: &ImagesArgs) -> Result<i32> {
    let mut filters = a.filter.clone();
    if let Some(r) = &a.reference {
        filters.push(format!("reference={r}"));
    }
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for listed in e.list_images(a.all, &filters)? {
        let img = &listed.image;
        let created = listed.created.as_deref();
        for l in &listed.lines {
            let id = if a.no_trunc { img.id.to_string() } else { img.id.short().to_string() };
            if !ids.contains(&id) {
                ids.push(id.clone());
            }
            rows.push(json!({
                "Repository": l.repo,
                "Tag": l.tag,
                "Digest": l.digest,
                "ID": id,
                "CreatedSince": since(created),
                "CreatedAt": created_at(created),
                "Size": human_size(listed.size),
                "VirtualSize": human_size(listed.size),
                "SharedSize": "N/A",
                "UniqueSize": "N/A",
                "Containers": "N/A",
            }));
        }
    }
    if a.quiet {
        for id in ids {
            println!("{id}");
        }
        return Ok(0);
    }
    let default = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    print_rows(
        &rows,
        a.format.as_deref(),
        default,
        &[
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("Digest", "DIGEST"),
            ("ID", "IMAGE ID"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("Size", "SIZE"),
            ("VirtualSize", "VIRTUAL SIZE"),
            ("SharedSize", "SHARED SIZE"),
            ("UniqueSize", "UNIQUE SIZE"),
            ("Containers", "CONTAINERS"),
        ],
    );
    Ok(0)
}

pub fn history(e: &Engine, a: &HistoryArgs) -> Result<i32> {
    let img = e.existing_image(&a.image)?;
    let mut rows = Vec::new();
    for h in e.history(&img)? {
        let id = match &h.id {
            Some(d) if a.no_trunc => d.to_string(),
            Some(d) => d.short().to_string(),
            None => "<missing>".into(),
        };
        if a.quiet {
            println!("{id}");
            continue;
        }
        let by = h.created_by.replace('\t', " ");
        let by = if a.no_trunc { by } else { ellipsis(&by, 45) };
        let created = if a.human { since(h.created.as_deref()) } else { h.created.clone().unwrap_or_default() };
        let size = if a.human { human_size(h.size) } else { h.size.to_string() };
        rows.push(json!({
            "ID": id,
            "CreatedSince": created,
            "CreatedAt": h.created.clone().unwrap_or_default(),
            "CreatedBy": by,
            "Size": size,
            "Comment": h.comment,
        }));
    }
    if a.quiet {
        return Ok(0);
    }
    print_rows(
        &rows,
        a.format.as_deref(),
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
        &[
            ("ID", "IMAGE"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedBy", "CREATED BY"),
            ("Size", "SIZE"),
            ("Comment", "COMMENT"),
        ],
    );
    Ok(0)
}

pub fn inspect(e: &Engine, a: &InspectArgs) -> Result<i32> {
    let mut out = Vec::new();
    for n in &a.images {
        out.push(e.inspect_image(&e.existing_image(n)?)?);
    }
    crate::template::print_inspected(&out, a.format.as_deref())?;
    Ok(0)
}

/// Where `save` and `export` write: the `-o` file (made whole or not at all: written beside
/// it and renamed at the end), else standard output, but never a terminal.
fn write_out(output: Option<&Path>, f: impl FnOnce(Box<dyn Write + Send>) -> Result<()>) -> Result<()> {
    let Some(path) = output else {
        if std::io::stdout().is_terminal() {
            bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
        }
        return f(Box::new(std::io::BufWriter::with_capacity(256 << 10, std::io::stdout())));
    };
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.berth-{}", name.to_string_lossy(), std::process::id()));
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let done = f(Box::new(std::io::BufWriter::with_capacity(256 << 10, file.try_clone()?)))
        .and_then(|_| file.sync_all().context("writing the file"))
        .and_then(|_| std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display())));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

pub fn save(e: &Engine, a: &SaveArgs) -> Result<i32> {
    let format = match a.format.as_str() {
        "docker-archive" | "docker" => SaveFormat::DockerArchive,
        "oci-archive" | "oci" => SaveFormat::OciArchive,
        other => bail!("unsupported --format {other:?}: use docker-archive or oci-archive"),
    };
    write_out(a.output.as_deref(), |w| e.save(&a.images, format, w))?;
    Ok(0)
}

pub fn export(e: &Engine, a: &ExportArgs) -> Result<i32> {
    // Fails early (before a file is made) for a container that does not exist.
    e.container(&a.container)?;
    write_out(a.output.as_deref(), |w| e.export(&a.container, w))?;
    Ok(0)
}

pub fn system(e: &Engine, cmd: SystemCmd) -> Result<i32> {
    match cmd {
        SystemCmd::Df { verbose, format } => df(e, verbose, format.as_deref()),
        SystemCmd::Check { repair } => check(e, repair),
        SystemCmd::Prune { .. } => unreachable!("main handles system prune"),
    }
}

fn reclaimable(r: u64, total: u64) -> String {
    match (r * 100).checked_div(total) {
        Some(pct) => format!("{} ({pct}%)", human_size(r)),
        None => human_size(r),
    }
}

fn df(e: &Engine, verbose: bool, format: Option<&str>) -> Result<i32> {
    let u = e.disk_usage()?;
    let active_images = u.images.iter().filter(|i| i.containers > 0).count();
    let running = |c: &ContainerRow| matches!(c.state.as_str(), "running" | "paused" | "restarting");
    let c_total: u64 = u.containers.iter().map(|c| c.size).sum();
    let c_free: u64 = u.containers.iter().filter(|c| !running(&c.container)).map(|c| c.size).sum();
    let v_total: u64 = u.volumes.iter().map(|v| v.size).sum();
    let v_free: u64 = u.volumes.iter().filter(|v| v.links == 0).map(|v| v.size).sum();
    let (cache_entries, cache_bytes) = e.build_cache_usage()?;
    let summary = [
        json!({"Type": "Images", "TotalCount": u.images.len().to_string(), "Active": active_images.to_string(),
               "Size": human_size(u.images_size), "Reclaimable": reclaimable(u.images_reclaimable, u.images_size)}),
        json!({"Type": "Containers", "TotalCount": u.containers.len().to_string(),
               "Active": u.containers.iter().filter(|c| running(&c.container)).count().to_string(),
               "Size": human_size(c_total), "Reclaimable": reclaimable(c_free, c_total)}),
        json!({"Type": "Local Volumes", "TotalCount": u.volumes.len().to_string(),
               "Active": u.volumes.iter().filter(|v| v.links > 0).count().to_string(),
               "Size": human_size(v_total), "Reclaimable": reclaimable(v_free, v_total)}),
        json!({"Type": "Build Cache", "TotalCount": cache_entries.to_string(), "Active": "0",
               "Size": human_size(cache_bytes), "Reclaimable": human_size(cache_bytes)}),
    ];
    if !verbose || format.is_some() {
        print_rows(
            &summary,
            format,
            "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
            &[
                ("Type", "TYPE"),
                ("TotalCount", "TOTAL"),
                ("Active", "ACTIVE"),
                ("Size", "SIZE"),
                ("Reclaimable", "RECLAIMABLE"),
            ],
        );
        return Ok(0);
    }
    println!("Images space usage:\n");
    let mut rows = Vec::new();
    for i in &u.images {
        for l in berth_engine::images::image_lines(&i.image) {
            rows.push(json!({
                "Repository": l.repo, "Tag": l.tag, "ID": i.image.id.short(),
                "CreatedSince": since(i.created.as_deref()), "Size": human_size(i.size),
                "SharedSize": human_size(i.shared), "UniqueSize": human_size(i.unique),
                "Containers": i.containers.to_string(),
            }));
        }
    }
    print_rows(
        &rows,
        None,
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
        &[
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("ID", "IMAGE ID"),
            ("CreatedSince", "CREATED"),
            ("Size", "SIZE"),
            ("SharedSize", "SHARED SIZE"),
            ("UniqueSize", "UNIQUE SIZE"),
            ("Containers", "CONTAINERS"),
        ],
    );
    println!("\nContainers space usage:\n");
    let rows: Vec<Value> = u
        .containers
        .iter()
        .map(|c| {
            let k = &c.container;
            let cmd = ellipsis(&k.config.args.join(" "), 20);
            let vols = e
                .volumes()
                .map(|vs| vs.iter().filter(|v| e.volume_users(&v.name).is_ok_and(|u| u.contains(&k.id))).count())
                .unwrap_or(0);
            json!({
                "ID": &k.id[..12.min(k.id.len())], "Image": k.config.image_ref, "Command": format!("\"{cmd}\""),
                "LocalVolumes": vols.to_string(), "Size": human_size(c.size),
                "RunningFor": format!("{} ago", human_duration(now_secs() - k.created / 1_000_000_000)),
                "Status": berth_engine::describe::status_text(k), "Names": k.name,
            })
        })
        .collect();
    print_rows(
        &rows,
        None,
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}",
        &[
            ("ID", "CONTAINER ID"),
            ("Image", "IMAGE"),
            ("Command", "COMMAND"),
            ("LocalVolumes", "LOCAL VOLUMES"),
            ("Size", "SIZE"),
            ("RunningFor", "CREATED"),
            ("Status", "STATUS"),
            ("Names", "NAMES"),
        ],
    );
    println!("\nLocal Volumes space usage:\n");
    let rows: Vec<Value> = u
        .volumes
        .iter()
        .map(|v| json!({"Name": v.volume.name, "Links": v.links.to_string(), "Size": human_size(v.size)}))
        .collect();
    print_rows(
        &rows,
        None,
        "table {{.Name}}\t{{.Links}}\t{{.Size}}",
        &[("Name", "VOLUME NAME"), ("Links", "LINKS"), ("Size", "SIZE")],
    );
    println!("\nBuild cache usage: 0B");
    Ok(0)
}

fn check(e: &Engine, repair: bool) -> Result<i32> {
    let r = e.check(repair)?;
    println!("Checked {} blobs, {} layers and {} images.", r.blobs, r.layers, r.images);
    let mut left = 0;
    for p in &r.problems {
        if repair && p.repaired {
            println!("- {}: repaired ({})", p.what, p.fix);
        } else if repair {
            println!("- {}: not repaired (repair: {})", p.what, p.fix);
            left += 1;
        } else {
            println!("- {} (repair: {})", p.what, p.fix);
            left += 1;
        }
    }
    if r.problems.is_empty() {
        println!("No problems found.");
    } else if left == 0 {
        println!("{} problems found and repaired.", r.problems.len());
    } else if repair {
        println!("{} problems found, {left} not repaired.", r.problems.len());
    } else {
        println!("{} problems found: run `berth system check --repair` to repair them.", r.problems.len());
    }
    Ok(if left == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_times_globs() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(925), "925B");
        assert_eq!(human_size(4_261_000), "4.261MB");
        assert_eq!(human_size(224_123_456), "224.1MB");
        assert_eq!(human_size(12_500), "12.5kB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(created_at(Some("2024-02-29T12:00:00Z")), "2024-02-29 12:00:00 +0000 UTC");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
    }
}
