//! The suite's final check: fails, naming each item, if anything berth-like is left on the
//! machine (mounts, cgroups, processes, veths, network namespaces, nftables tables).
//! Prints nothing when the machine is clean.

fn main() {
    let found = berth_testkit::leak::scan();
    if !found.is_empty() {
        eprintln!("leak check: the test suite left {} thing(s) behind:", found.len());
        for f in &found {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}
