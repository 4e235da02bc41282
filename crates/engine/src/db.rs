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
    // 4: networks, address leases (endpoints) and published ports. The default network is
    // Docker's `bridge`, on its own Linux bridge berth0.
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        driver TEXT NOT NULL,
        bridge TEXT NOT NULL UNIQUE,  -- the Linux bridge's name
        subnet TEXT NOT NULL,         -- 10.77.0.0/16
        gateway TEXT NOT NULL,        -- the bridge's address
        ip_range TEXT NOT NULL DEFAULT '',
        internal INTEGER NOT NULL DEFAULT 0,
        dns INTEGER NOT NULL DEFAULT 1,  -- containers resolve each other's names
        mtu INTEGER NOT NULL DEFAULT 0,  -- 0: the kernel's default
        labels TEXT NOT NULL DEFAULT '{}',
        options TEXT NOT NULL DEFAULT '{}',
        created INTEGER NOT NULL
    );
    INSERT INTO networks (id, name, driver, bridge, subnet, gateway, dns, created) VALUES
        ('3b1d0a3e2f6c4d7b8a9e0f1c2d3b4a5e6f708192a3b4c5d6e7f8091a2b3c4d5e', 'bridge', 'bridge', 'berth0',
         '10.77.0.0/16', '10.77.0.1', 0, CAST(strftime('%s', 'now') AS INTEGER) * 1000000000);
    CREATE TABLE endpoints (
        container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        network TEXT NOT NULL REFERENCES networks(id),
        ip TEXT NOT NULL,
        mac TEXT NOT NULL,
        aliases TEXT NOT NULL DEFAULT '[]',  -- JSON list
        ifname TEXT NOT NULL,         -- eth0, eth1, ... inside the container
        active INTEGER NOT NULL DEFAULT 0,  -- the interface exists (the container runs)
        PRIMARY KEY (container, network),
        UNIQUE (network, ip)
    );
    CREATE TABLE ports (
        container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        proto TEXT NOT NULL,
        host_ip TEXT NOT NULL,
        host_port INTEGER NOT NULL,
        container_port INTEGER NOT NULL,
        PRIMARY KEY (proto, host_ip, host_port)
    );",
    // 5: volumes and which containers use them.
    "CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL,         -- local
        options TEXT NOT NULL DEFAULT '{}',  -- type, device, o
        labels TEXT NOT NULL DEFAULT '{}',
        anonymous INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL
    );
    CREATE TABLE container_volumes (
        container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        volume TEXT NOT NULL REFERENCES volumes(name),
        destination TEXT NOT NULL,
        PRIMARY KEY (container, destination)
    );",
    // 6: the digests repositories gave an image (what the tag pointed to when pulled: for a
    // multi-platform image the index's digest), for `images --digests`, `RepoDigests` and
    // `NAME@DIGEST` lookups.
    "CREATE TABLE repo_digests (
        repository TEXT NOT NULL,     -- docker.io/library/busybox
        digest TEXT NOT NULL,
        image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        PRIMARY KEY (repository, digest)
    );",
];

pub fn open(path: &Path) -> Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening the state database {}", path.display()))?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // No checkpoint when a command closes the database: every berth command would pay the
    // WAL's and the database's fsyncs at exit. Writers checkpoint when the WAL grows past
    // SQLite's threshold (1000 pages).
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
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
