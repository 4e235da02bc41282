//! Container logs in Docker's json-file format: one JSON object a line,
//! `{"log":"text\n","stream":"stdout","time":"2024-01-01T00:00:00.000000000Z"}`, with size-based
//! rotation (`max-size`, `max-file`).

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
}

impl Writer {
    pub fn open(path: &Path, max_size: Option<u64>, max_files: u32) -> Result<Writer> {
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
        let mut b = serde_json::to_vec(&e)?;
        b.push(b'\n');
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

/// Every entry of a container's log, oldest first (rotated files included).
pub fn read_all(path: &Path) -> Result<Vec<Entry>> {
    let mut files = vec![];
    for i in (1..100).rev() {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        for line in BufReader::new(file).lines() {
            if let Ok(e) = serde_json::from_str::<Entry>(&line?) {
                out.push(e);
            }
        }
    }
    Ok(out)
}
