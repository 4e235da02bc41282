//! Builds berth-init (init/main.rs) as a static binary for `--init`: it runs inside containers,
//! whose images may have no libc at all. std only, linked statically against glibc (no NSS use).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let src = "init/main.rs";
    println!("cargo:rerun-if-changed={src}");
    let st = Command::new(rustc)
        .args(["--edition", "2024", "--crate-name", "berth_init", "-C", "opt-level=s", "-C", "panic=abort"])
        .args(["-C", "target-feature=+crt-static", "-C", "strip=symbols", "-o"])
        .arg(out.join("berth-init"))
        .arg(src)
        .status()
        .expect("running rustc for berth-init");
    assert!(st.success(), "building berth-init failed");
}
