//! Volumes end to end: named and anonymous volumes, the image's files copied into an empty
//! volume, read-only mounts, `--mount`, `--volumes-from`, volumes with a filesystem of their
//! own, and what `volume rm`/`rm -v`/`prune` keep and remove.

mod common;

use common::Berth;

fn run(b: &Berth, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--network", "none"];
    all.extend_from_slice(args);
    b.ok(&all)
}

#[test]
fn named_volumes_keep_data_copy_up_and_refuse_removal_in_use() {
    let b = Berth::new("vol-named");
    run(&b, &["-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f"]);
    assert_eq!(run(&b, &["-v", "data:/data:ro", "busybox", "cat", "/data/f"]), "kept\n");
    let (code, _, err) =
        b.run(&["run", "--rm", "--network", "none", "-v", "data:/data:ro", "busybox", "touch", "/data/g"]);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(b.ok(&["volume", "ls", "-q"]).lines().any(|l| l == "data"));
    let mp = b.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "data"]);
    assert!(mp.trim().ends_with("/volumes/data/_data"), "{mp}");
    assert_eq!(std::fs::read_to_string(format!("{}/f", mp.trim())).unwrap(), "kept\n");
    // An empty volume gets the image's files at its path (and their owner and mode), once.
    run(&b, &["-v", "etcv:/etc", "busybox", "true"]);
    assert!(run(&b, &["-v", "etcv:/mnt", "busybox", "cat", "/mnt/passwd"]).contains("root:x:0:0"));
    // ... unless nocopy asks otherwise.
    run(&b, &["--mount", "type=volume,src=bare,dst=/etc,volume-nocopy", "busybox", "true"]);
    assert_eq!(run(&b, &["-v", "bare:/mnt", "busybox", "ls", "-A", "/mnt"]), "");
    // In use (even by a stopped container): not removed, and `volume rm` says by whom.
    let id = b.ok(&["create", "--network", "none", "-v", "data:/data", "busybox", "true"]);
    let (code, _, err) = b.run(&["volume", "rm", "data"]);
    assert_eq!(code, 1);
    assert!(err.contains("volume is in use") && err.contains(&id.trim()[..12]), "{err}");
    b.ok(&["rm", id.trim()]);
    for v in ["data", "etcv", "bare"] {
        b.ok(&["volume", "rm", v]);
    }
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "");
    assert!(!std::path::Path::new(mp.trim()).exists());
}

#[test]
fn anonymous_volumes_mounts_and_volumes_from() {
    let b = Berth::new("vol-anon");
    // -v /path: an anonymous volume, shared with --volumes-from, removed by rm -v.
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        "/scratch",
        "--name",
        "first",
        "busybox",
        "sh",
        "-c",
        "echo anon > /scratch/x; sleep 60",
    ]);
    let id = id.trim();
    let info: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", id])).unwrap();
    let name = info[0]["Mounts"][0]["Name"].as_str().unwrap_or_default().to_string();
    assert_eq!(info[0]["Mounts"][0]["Type"], "volume");
    assert_eq!(name.len(), 64, "{name}");
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--volumes-from",
        "first:ro",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2; cat /scratch/x; touch /scratch/y 2>&1 || true",
    ]);
    assert!(out.starts_with("anon\n") && out.contains("Read-only"), "{out}");
    // --mount: tmpfs, a bind that must exist.
    let out =
        run(&b, &["--mount", "type=tmpfs,dst=/t,tmpfs-size=1m", "busybox", "sh", "-c", "grep ' /t ' /proc/mounts"]);
    assert!(out.contains("tmpfs") && out.contains("size=1024k"), "{out}");
    let (code, _, err) =
        b.run(&["run", "--rm", "--mount", "type=bind,src=/nonexistent-berth,dst=/x", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("bind source path does not exist"), "{err}");
    let (code, _, err) = b.run(&["run", "--rm", "-v", "aa:/x", "-v", "bb:/x", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("Duplicate mount point"), "{err}");
    // A volume with a filesystem of its own is mounted while a container uses it.
    b.ok(&["volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=2m", "small"]);
    let mp = b.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "small"]).trim().to_string();
    let user = b.ok(&["run", "-d", "--network", "none", "-v", "small:/s", "busybox", "sleep", "60"]);
    let mounted = |p: &str| {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(p))
    };
    assert!(mounted(&mp), "{mp} is not mounted");
    b.ok(&["rm", "-f", user.trim()]);
    assert!(!mounted(&mp), "{mp} is still mounted");
    // Docker's way to name a host directory as a volume: type=none, o=bind (flag words of o=
    // are mount flags, here read-only too).
    let host = b.g.path("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from-host").unwrap();
    let dev = format!("device={}", host.display());
    b.ok(&["volume", "create", "--opt", "type=none", "--opt", "o=bind,ro", "--opt", &dev, "hostvol"]);
    let out = run(&b, &["-v", "hostvol:/h", "busybox", "sh", "-c", "cat /h/f; touch /h/g 2>/dev/null || echo ro"]);
    assert_eq!(out, "from-hostro\n");
    b.ok(&["volume", "rm", "hostvol"]);
    b.ok(&["rm", "-f", "-v", id]);
    assert!(!b.ok(&["volume", "ls", "-q"]).contains(&name), "rm -v left the anonymous volume");
    // --rm takes its anonymous volumes along; prune takes the unused anonymous ones.
    run(&b, &["-v", "/gone", "busybox", "true"]);
    b.ok(&["create", "--network", "none", "-v", "/left", "--name", "keeper", "busybox", "true"]);
    b.ok(&["rm", "keeper"]);
    let left = b.ok(&["volume", "ls", "-q"]);
    assert_eq!(left.lines().count(), 2, "{left}");
    let pruned = b.ok(&["volume", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Volumes:\n") && pruned.contains("\nTotal reclaimed space: "), "{pruned}");
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "small\n");
    b.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "");
}
