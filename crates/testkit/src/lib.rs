//! berth's test kit. Every integration test builds on it:
//! - [`image`]: a busybox rootfs, layer and OCI image layout made deterministically from the
//!   host's busybox-static binary (no internet);
//! - [`bundle`]: OCI runtime bundles and a config.json builder;
//! - [`registry`]: Debian's docker-registry on a free loopback port (plain, TLS, basic auth,
//!   token auth with [`token`], a small Bearer token server of our own);
//! - [`netns`]: a throwaway network namespace to run commands or a whole engine in;
//! - [`leak`]: guards that clean up and fail a test that leaves mounts, cgroups or processes.

pub mod bundle;
pub mod image;
pub mod leak;
pub mod netns;
pub mod registry;
pub mod token;

use std::sync::atomic::{AtomicU32, Ordering};

/// The runtime binary a test runs: `built` (this build's, from `CARGO_BIN_EXE_berth-runtime`),
/// or the one `$BERTH_RUNTIME_BIN` names (scripts/test.sh runs the runtime's tests again
/// against the statically linked build that `make build` ships).
pub fn runtime_under_test(built: &str) -> String {
    std::env::var("BERTH_RUNTIME_BIN").unwrap_or_else(|_| built.to_string())
}

/// A short tag unique to this test process and call, used in ids and paths so that leaks can
/// be traced to the test that made them.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-bt{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Skips (returns true and says why) when the test cannot run here, e.g. not root.
pub fn need_root() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return true;
    }
    false
}
