//! Events without a daemon: every berth process appends what it did (one JSON line, Docker's
//! event shape) to `<runroot>/events.log` (O_APPEND, one write per event, so concurrent writers
//! never interleave); `berth events` reads it back and follows it. The log rotates to
//! `events.log.1` past 4 MiB.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

const ROTATE_AT: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// One event, as `docker events --format '{{json .}}'` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    /// Docker's older fields, for containers and images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

pub fn log_path(runroot: &Path) -> PathBuf {
    runroot.join("events.log")
}

/// Appends an event; never fails the caller (events are a record, not a step).
pub fn emit(runroot: &Path, kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) {
    let now = crate::db::now_nanos();
    let attributes: BTreeMap<String, String> =
        attributes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let legacy = matches!(kind, "container" | "image");
    let e = Event {
        kind: kind.into(),
        action: action.into(),
        actor: Actor { id: id.into(), attributes: attributes.clone() },
        scope: "local".into(),
        time: now / 1_000_000_000,
        time_nano: now,
        status: legacy.then(|| action.to_string()),
        id: legacy.then(|| id.to_string()),
        from: if kind == "container" { attributes.get("image").cloned() } else { None },
    };
    let Ok(mut line) = serde_json::to_vec(&e) else { return };
    line.push(b'\n');
    let path = log_path(runroot);
    if fs::metadata(&path).map(|m| m.len() > ROTATE_AT).unwrap_or(false) {
        let _ = fs::rename(&path, path.with_extension("log.1"));
    }
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = f.write_all(&line);
    }
}

/// What `berth events` asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Unix nanoseconds; events before `since` are skipped.
    pub since: Option<i64>,
    /// Stop at this time (and do not follow); without it, follow forever.
    pub until: Option<i64>,
    /// `key=value` filters: type, event/action, container, image, network, volume, label.
    /// Values of one key are ORed, keys are ANDed, as Docker does.
    pub filters: BTreeMap<String, Vec<String>>,
}

impl Query {
    pub fn matches(&self, e: &Event) -> bool {
        self.filters.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "type" => e.kind == *v,
                "event" | "action" => e.action == *v || e.action.split(':').next() == Some(v.as_str()),
                "container" | "image" | "network" | "volume" => {
                    e.kind == *k
                        && (e.actor.id.starts_with(v.as_str())
                            || e.actor.attributes.get("name") == Some(v)
                            || (k == "container" && e.actor.attributes.get("name").is_some_and(|n| n == v)))
                        || (k == "image" && e.actor.attributes.get("image") == Some(v))
                }
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => e.actor.attributes.get(lk).is_some_and(|x| x == lv),
                    None => e.actor.attributes.contains_key(v),
                },
                _ => false,
            })
        })
    }
}

/// Calls `each` for every event the query selects, in order; follows the log when there is no
/// `until`, until `each` returns false.
pub fn read(runroot: &Path, q: &Query, mut each: impl FnMut(&Event) -> bool) -> Result<()> {
    let path = log_path(runroot);
    let mut sources = vec![path.with_extension("log.1"), path.clone()];
    sources.retain(|p| p.exists());
    let wanted = |e: &Event| q.since.is_none_or(|s| e.time_nano >= s) && q.matches(e);
    let mut offset = 0u64;
    for src in &sources {
        let f = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let mut r = BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line)?;
            if n == 0 {
                break;
            }
            if *src == path {
                offset += n as u64;
            }
            let Ok(e) = serde_json::from_str::<Event>(&line) else { continue };
            if q.until.is_some_and(|u| e.time_nano > u) {
                return Ok(());
            }
            if wanted(&e) && !each(&e) {
                return Ok(());
            }
        }
    }
    if q.until.is_some() {
        return Ok(());
    }
    // Follow: new lines as they come (a rotation starts the new file from its beginning).
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let Ok(mut f) = fs::File::open(&path) else { continue };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0;
        }
        if len == offset {
            continue;
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut r = BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            offset += n as u64;
            if let Ok(e) = serde_json::from_str::<Event>(&line)
                && wanted(&e)
                && !each(&e)
            {
                return Ok(());
            }
        }
    }
}

/// Docker's text form: `TIME TYPE ACTION ID (k=v, ...)`.
pub fn text(e: &Event) -> String {
    let t = berth_runtime::state::rfc3339(e.time_nano / 1_000_000_000, (e.time_nano % 1_000_000_000) as u32);
    let attrs: Vec<String> = e.actor.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{t} {} {} {} ({})", e.kind, e.action, e.actor.id, attrs.join(", "))
}
