//! Links `berth` as a position-dependent executable. A PIE's loader must write every pointer in
//! its read-only data at start: ≈ 250 KiB of private, dirty pages for berth, paid by every
//! monitor (one per container, for as long as the container runs). Linked at a fixed address
//! those pages stay clean and shared by all the monitors. `berth-runtime` stays a PIE: it runs
//! briefly, and address randomization of the binary that sets up every container is worth more.
fn main() {
    println!("cargo:rustc-link-arg-bin=berth=-no-pie");
}
