//! `berth-bundle DIR [ARG...]`: writes the test kit's busybox OCI bundle into DIR (created if
//! missing): `DIR/rootfs` from the host's busybox-static and `DIR/config.json` (runc's default
//! spec, read-only root) running ARG... (default `/bin/true`). Used by `benches/runtime.sh`.
//! The config says `ociVersion` 1.0.2, which every runtime here accepts (crun 1.8.1 refuses
//! the test kit's 1.2.0 with "unknown version specified").

use berth_testkit::bundle::Config;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: berth-bundle DIR [ARG...]");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let argv: Vec<String> = args.collect();
    let argv: Vec<&str> = if argv.is_empty() { vec!["/bin/true"] } else { argv.iter().map(String::as_str).collect() };
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap_or_else(|e| panic!("creating {}: {e}", rootfs.display()));
    berth_testkit::image::write_rootfs(&rootfs);
    Config::default().args(&argv).set("/ociVersion", "1.0.2".into()).write(&dir);
}
