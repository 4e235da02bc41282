//! The state database: one SQLite file in WAL mode. Every writer is a short transaction, and
//! a busy database is waited for, so parallel berth commands never fail with a lock error.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::Connection;

/// Schema versions, applied in order; `PRAGMA user_version` records how far a database got.
const MIGRATIONS: &[&str] = &[
    // 1: images, tags, containers.
    "CREATE TABLE images (
        id TEXT PRIMARY KEY,          -- the config digest, as Docker's image id
        manifest TEXT NOT NULL,       -- the manifest digest in the content store
        size INTEGER NOT NULL,
        created INTEGER NOT NULL      -- unix nanoseconds when it entered the store
    );
    CREATE TABLE tags (
        name TEXT PRIMARY KEY,        -- docker.io/library/busybox:latest
        image TEXT NOT NULL REFERENCES images(id)
    );
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,          -- image id
        config TEXT NOT NULL,         -- the container's settings, JSON
        created INTEGER NOT NULL,
        state TEXT NOT NULL,          -- created | running | paused | exited | dead
        pid INTEGER NOT NULL DEFAULT 0,
        monitor_pid INTEGER NOT NULL DEFAULT 0,
        monitor_start INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER NOT NULL DEFAULT 0,
        started INTEGER NOT NULL DEFAULT 0,
        finished INTEGER NOT NULL DEFAULT 0,
        oom_killed INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX containers_state ON containers(state);",
    // 2: restart policies count restarts.
    "ALTER TABLE containers ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;",
    // 3: where blobs came from, so that a push to another repository of the same registry
    // can mount them instead of uploading them again.
    "CREATE TABLE blob_sources (
        digest TEXT NOT NULL,
        registry TEXT NOT NULL,       -- 127.0.0.1:5000, docker.io
        repository TEXT NOT NULL,     -- library/busybox
        PRIMARY KEY (digest, registry, repository)
    );",
];

pub fn open(path: &Path) -> Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening the state database {}", path.display()))?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&c)?;
    Ok(c)
}

fn migrate(c: &Connection) -> Result<()> {
    let have = c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if have >= MIGRATIONS.len() {
        return Ok(());
    }
    // IMMEDIATE takes the write lock up front, so two first commands do not both migrate.
    c.execute_batch("BEGIN IMMEDIATE")?;
    let have = c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(have) {
        if let Err(e) = c.execute_batch(m) {
            let _ = c.execute_batch("ROLLBACK");
            return Err(e).with_context(|| format!("migrating the state database to version {}", i + 1));
        }
    }
    c.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    c.execute_batch("COMMIT")?;
    Ok(())
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
