//! Container logs in Docker's json-file format: one JSON object a line,
//! `{"log":"text\n","stream":"stdout","time":"2024-01-01T00:00:00.000000000Z"}`, or in podman's
//! k8s-file format (the CRI's): `2024-01-01T00:00:00.000000000Z stdout F text`, `P` instead of
//! `F` for a partial line; with size-based rotation (`max-size`, `max-file`).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_files: u32,
    partial: [Vec<u8>; 2],
    k8s: bool,
}

impl Writer {
    /// `k8s`: podman's k8s-file format instead of Docker's json-file.
    pub fn open(path: &Path, max_size: Option<u64>, max_files: u32, k8s: bool) -> Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
            k8s,
        })
    }

    /// Appends output of stream 0 (stdout) or 1 (stderr), one entry per complete line.
    pub fn write(&mut self, stream: usize, data: &[u8]) -> Result<()> {
        self.partial[stream].extend_from_slice(data);
        while let Some(i) = self.partial[stream].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial[stream].drain(..=i).collect();
            self.entry(stream, &line)?;
        }
        // Very long lines are cut as Docker does (16 KiB).
        if self.partial[stream].len() >= 16 << 10 {
            let line = std::mem::take(&mut self.partial[stream]);
            self.entry(stream, &line)?;
        }
        Ok(())
    }

    /// Writes what is left of unterminated lines.
    pub fn flush(&mut self) -> Result<()> {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                let line = std::mem::take(&mut self.partial[s]);
                self.entry(s, &line)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, stream: usize, line: &[u8]) -> Result<()> {
        let e = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: berth_runtime::state::now_rfc3339(),
        };
        let b = if self.k8s {
            let (tag, body) = match line.strip_suffix(b"\n") {
                Some(body) => ("F", body),
                None => ("P", line),
            };
            let mut b = format!("{} {} {tag} ", e.time, e.stream).into_bytes();
            b.extend_from_slice(body);
            b.push(b'\n');
            b
        } else {
            let mut b = serde_json::to_vec(&e)?;
            b.push(b'\n');
            b
        };
        if let Some(max) = self.max_size
            && self.size + b.len() as u64 > max
            && self.size > 0
        {
            self.rotate()?;
        }
        self.file.write_all(&b)?;
        self.size += b.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let name =
            |i: u32| if i == 0 { self.path.clone() } else { PathBuf::from(format!("{}.{i}", self.path.display())) };
        if self.max_files <= 1 {
            self.file.set_len(0)?;
        } else {
            for i in (0..self.max_files - 1).rev() {
                let _ = fs::rename(name(i), name(i + 1));
            }
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// One line of either format.
pub fn parse_line(line: &str) -> Option<Entry> {
    if line.starts_with('{') {
        return serde_json::from_str(line).ok();
    }
    let mut f = line.splitn(4, ' ');
    let (time, stream, tag) = (f.next()?, f.next()?, f.next()?);
    let body = f.next().unwrap_or("");
    let log = if tag == "F" { format!("{body}\n") } else { body.to_string() };
    Some(Entry { log, stream: stream.into(), time: time.into() })
}

/// Every entry of a container's log, oldest first (rotated files included).
pub fn read_all(path: &Path) -> Result<Vec<Entry>> {
    Ok(read_through(path)?.0)
}

/// [`read_all`], and how far into the current file its complete lines went: where a follower
/// goes on reading.
fn read_through(path: &Path) -> Result<(Vec<Entry>, u64)> {
    let mut out = Vec::new();
    for i in (1..100).rev() {
        let Ok(file) = File::open(format!("{}.{i}", path.display())) else { continue };
        for line in BufReader::new(file).lines() {
            if let Some(e) = parse_line(&line?) {
                out.push(e);
            }
        }
    }
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    out.extend(String::from_utf8_lossy(&text[..complete]).lines().filter_map(parse_line));
    Ok((out, complete as u64))
}

/// Which entries `logs` shows: those written from `since` and before `until` (unix
/// nanoseconds), and of those the last `tail`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub tail: Option<usize>,
}

impl Window {
    fn contains(&self, en: &Entry) -> bool {
        let t = crate::describe::parse_rfc3339(&en.time).unwrap_or(0);
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

impl crate::Engine {
    /// A container's log through `window`, oldest first, each entry handed to `out` (which
    /// returns false to stop early). With `follow` (and no `until`), then each entry as it is
    /// written, until the container has stopped and its monitor is gone.
    pub fn container_logs(
        &self,
        key: &str,
        window: Window,
        follow: bool,
        out: &mut dyn FnMut(&Entry) -> bool,
    ) -> Result<()> {
        let c = self.container(key)?;
        if c.config.log_driver == "none" {
            anyhow::bail!("configured logging driver does not support reading");
        }
        let path = c.log_path();
        let (mut all, mut off) = read_through(&path)?;
        all.retain(|e| window.contains(e));
        let skip = window.tail.map_or(0, |n| all.len().saturating_sub(n));
        for en in &all[skip..] {
            if !out(en) {
                return Ok(());
            }
        }
        if !follow || window.until.is_some() {
            return Ok(());
        }
        loop {
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len < off {
                // Rotated: the current file is a new one.
                off = 0;
            }
            if len > off {
                use std::io::{Read, Seek};
                let mut f = File::open(&path)?;
                f.seek(std::io::SeekFrom::Start(off))?;
                let mut s = Vec::new();
                f.read_to_end(&mut s)?;
                let complete = s.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                for en in String::from_utf8_lossy(&s[..complete]).lines().filter_map(parse_line) {
                    if window.contains(&en) && !out(&en) {
                        return Ok(());
                    }
                }
                off += complete as u64;
                if complete > 0 {
                    continue;
                }
                // Only a torn line (a writer killed mid-line): wait like for no news.
            }
            let now = self.container(&c.id)?;
            if !now.is_running() && !now.monitor_alive() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_write_rotate_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        for k8s in [false, true] {
            let path = t.path().join(format!("log-{k8s}"));
            let mut w = Writer::open(&path, Some(1000), 2, k8s).unwrap();
            w.write(0, b"one\ntw").unwrap();
            w.write(1, b"err line\n").unwrap();
            w.write(0, b"o\n").unwrap();
            w.write(0, b"no newline").unwrap();
            w.flush().unwrap();
            let text = fs::read_to_string(&path).unwrap();
            if k8s {
                let first = text.lines().next().unwrap();
                let f: Vec<&str> = first.splitn(4, ' ').collect();
                assert_eq!(&f[1..], ["stdout", "F", "one"], "{text}");
                assert!(f[0].ends_with('Z') && f[0].contains('T'), "{first}");
                assert!(text.lines().any(|l| l.ends_with("stdout P no newline")), "{text}");
            } else {
                assert!(text.starts_with(r#"{"log":"one\n","stream":"stdout","time":""#), "{text}");
            }
            let logs: Vec<(String, String)> = read_all(&path).unwrap().into_iter().map(|e| (e.stream, e.log)).collect();
            let want = [("stdout", "one\n"), ("stderr", "err line\n"), ("stdout", "two\n"), ("stdout", "no newline")];
            assert_eq!(logs, want.map(|(s, l)| (s.to_string(), l.to_string())), "k8s={k8s}");
            // Past max-size the log rotates, keeping max-file files in all.
            for i in 0..20 {
                w.write(0, format!("line {i}\n").as_bytes()).unwrap();
            }
            assert!(PathBuf::from(format!("{}.1", path.display())).exists());
            assert!(!PathBuf::from(format!("{}.2", path.display())).exists());
            assert_eq!(read_all(&path).unwrap().last().unwrap().log, "line 19\n");
        }
    }
}
