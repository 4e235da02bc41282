//! Overlay mounts of deep images: more lower dirs than absolute paths fit in mount(2)'s page.
//! Runs as root.

use std::path::PathBuf;

use berth_storage::rootfs::mount_overlay;

#[test]
fn a_hundred_and_twenty_eight_layers_mount() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // Layer dirs named as the layers' short links are (27 characters), under a long path, as
    // /var/lib/berth/storage/l is: 128 of them are ~8 KB as absolute paths.
    let base = t.path().join("a-long-directory-name-as-a-root-could-have").join("storage");
    let l = base.join("l");
    let mut lowers: Vec<PathBuf> = Vec::new();
    for i in 0..128 {
        let d = l.join(format!("256{i:024x}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
        lowers.push(d);
    }
    lowers.reverse(); // top first
    let (upper, work, merged) = (t.path().join("upper"), t.path().join("work"), t.path().join("merged"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let cwd = std::env::current_dir().unwrap();
    mount_overlay(&merged, &lowers, Some((&upper, &work)), nix::mount::MsFlags::empty()).unwrap();
    assert_eq!(std::env::current_dir().unwrap(), cwd, "the working directory is back");
    let seen = (std::fs::read_to_string(merged.join("f0")), std::fs::read_to_string(merged.join("f127")));
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!((seen.0.unwrap(), seen.1.unwrap()), ("0".to_string(), "127".to_string()));
    // With a directory elsewhere among them (a container's upper dir, as a read-only view
    // has), they are named from their common ancestor.
    let mut view = vec![base.join("containers/c1/upper")];
    std::fs::create_dir_all(&view[0]).unwrap();
    std::fs::write(view[0].join("top"), "t").unwrap();
    view.extend(lowers.iter().take(120).cloned());
    mount_overlay(&merged, &view, None, nix::mount::MsFlags::MS_RDONLY).unwrap();
    let top = std::fs::read_to_string(merged.join("top"));
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(top.unwrap(), "t");
    // Lower dirs with no common ancestor below / cannot be shortened: a clear error.
    let mut scattered = lowers.clone();
    scattered.push(PathBuf::from("/proc"));
    let e = mount_overlay(&merged, &scattered, Some((&upper, &work)), nix::mount::MsFlags::empty()).unwrap_err();
    assert!(e.to_string().contains("too many layers (129)"), "{e}");
}
