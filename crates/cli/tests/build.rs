//! `berth build` end to end: the corpus in tests/build/ (each case built, its config read from
//! the store and its files checked in a container), the cache (what hits, what misses), the
//! reproducibility of an image under SOURCE_DATE_EPOCH, the forms of context, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::Berth;
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/build");

/// Copies a corpus case into the test's dir (files and directories).
fn context(b: &Berth, case: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let t = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &t);
            } else {
                std::fs::copy(e.path(), &t).unwrap();
            }
        }
    }
    let dir = b.g.path(&format!("ctx-{case}"));
    copy(&Path::new(CORPUS).join(case), &dir);
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `berth build ARGS` with `--network none` unless the args name a network.
fn build(b: &Berth, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["build"];
    if !args.iter().any(|a| a.starts_with("--network")) {
        all.extend(["--network", "none"]);
    }
    all.extend(args);
    b.run(&all)
}

fn build_ok(b: &Berth, args: &[&str]) -> String {
    let (code, out, err) = build(b, args);
    assert_eq!(code, 0, "berth build {args:?} failed:\n{out}\n{err}");
    out
}

/// The image's config JSON, read from the content store.
fn config(b: &Berth, image: &str) -> Value {
    let id = b.ok(&["image", "inspect", "-f", "{{.Id}}", image]);
    let hex = id.trim().trim_start_matches("sha256:").to_string();
    let bytes = std::fs::read(b.g.path("root").join("images/blobs/sha256").join(hex)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Output of a shell script in a container of the image.
fn sh(b: &Berth, image: &str, script: &str) -> String {
    b.ok(&["run", "--rm", "--network", "none", "--entrypoint", "", "-u", "root", image, "sh", "-c", script])
}

/// The paths in the image's root filesystem (as `berth export` writes it).
fn files(b: &Berth, image: &str) -> Vec<String> {
    let c = b.ok(&["create", "--network", "none", image, "true"]);
    let tar = b.g.path("export.tar");
    b.ok(&["export", "-o", s(&tar), c.trim()]);
    b.ok(&["rm", c.trim()]);
    let (code, out, err) = b.host("tar", &["-tf", s(&tar)]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(&tar).unwrap();
    out.lines().map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string()).collect()
}

fn hits(out: &str) -> usize {
    out.matches(" ---> Using cache").count()
}

#[test]
fn metadata_instructions_make_the_config() {
    let b = Berth::new("build-meta");
    let ctx = context(&b, "metadata");
    let out = build_ok(&b, &["-t", "berth-test/metadata", "--build-arg", "NAME=berth", "--label", "extra=1", s(&ctx)]);
    assert!(out.contains("Step 1/18 : FROM busybox:${TAG}"), "{out}");
    assert!(out.contains("Step 18/18 : LABEL extra=\"1\""), "{out}");
    assert!(out.contains("Successfully tagged berth-test/metadata:latest"), "{out}");
    let c = config(&b, "berth-test/metadata");
    let cc = &c["config"];
    let env: Vec<&str> = cc["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(env[1..], ["GREETING=hello berth", "PLAIN=1", "OLD_STYLE=value with spaces"]);
    assert!(env[0].starts_with("PATH="));
    assert_eq!(cc["Labels"], serde_json::json!({"org.example.name": "berth", "multi word": "yes", "extra": "1"}));
    assert_eq!(cc["ExposedPorts"], serde_json::json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}));
    assert_eq!(cc["WorkingDir"], "/srv/app");
    assert_eq!(cc["User"], "nobody");
    assert_eq!(cc["Volumes"], serde_json::json!({"/data": {}, "/cache": {}}));
    assert_eq!(cc["StopSignal"], "SIGQUIT");
    assert_eq!(
        cc["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "wget -q localhost || exit 1"], "Interval": 30_000_000_000u64, "Timeout": 5_000_000_000u64, "Retries": 3})
    );
    assert_eq!(cc["Shell"], serde_json::json!(["/bin/sh", "-e", "-c"]));
    assert_eq!(cc["OnBuild"], serde_json::json!(["RUN echo \"triggered in $(pwd)\" > /tmp/onbuild.txt"]));
    assert_eq!(cc["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert_eq!(cc["Cmd"], serde_json::json!(["default", "args"]));
    assert_eq!(c["author"], "berth tests <tests@berth.invalid>");
    // History: one entry per step after FROM (ARG too, as Docker records it); only the
    // WORKDIRs that made a directory have a layer.
    let hist = c["history"].as_array().unwrap();
    let ours: Vec<&Value> =
        hist.iter().filter(|h| h["comment"].as_str().is_some_and(|c| c.starts_with("berth build "))).collect();
    assert_eq!(ours.len(), 17, "{hist:?}");
    assert!(ours.iter().any(|h| h["created_by"] == "ARG NAME=world" && h["empty_layer"] == true), "{hist:?}");
    let layers: Vec<&str> =
        ours.iter().filter(|h| h["empty_layer"] != true).map(|h| h["created_by"].as_str().unwrap()).collect();
    assert_eq!(layers, vec!["WORKDIR /srv", "WORKDIR app"]);
    assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    // The image runs as configured.
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "berth-test/metadata"]), "default args\n");
    assert_eq!(sh(&b, "berth-test/metadata", "pwd; ls -d /srv/app"), "/srv/app\n/srv/app\n");
    // A child image runs the ONBUILD trigger first and does not inherit it.
    let child = context(&b, "onbuild");
    let out = build_ok(&b, &["-t", "child", s(&child)]);
    assert!(out.contains("# Executing 1 build trigger"), "{out}");
    assert_eq!(sh(&b, "child", "cat /child.txt"), "triggered in /srv/app\n");
    assert_eq!(config(&b, "child")["config"]["OnBuild"], Value::Null);
}

#[test]
fn copy_and_add_follow_dockers_rules() {
    let b = Berth::new("build-copy");
    let ctx = context(&b, "copy");
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("dir/escape")).unwrap();
    // An archive for ADD: a file and a directory, with an owner of its own.
    let layer = b.g.path("layer.tar");
    let src = b.g.path("layer-src");
    std::fs::create_dir_all(src.join("pkg")).unwrap();
    std::fs::write(src.join("pkg/data"), "from the archive\n").unwrap();
    let (code, _, err) = b.host("tar", &["-C", s(&src), "--owner=42", "--group=43", "-cf", s(&layer), "pkg"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = b.host("gzip", &["-k", s(&layer)]);
    assert_eq!(code, 0, "{err}");
    std::fs::rename(b.g.path("layer.tar.gz"), ctx.join("layer.tar.gz")).unwrap();
    build_ok(&b, &["-t", "copied", s(&ctx)]);
    let out = sh(
        &b,
        "copied",
        "cd /work && ls; cat renamed.txt; \
         find /tree /docs /misc /parents /unpacked /added | sort; \
         readlink /tree/escape; \
         stat -c '%n %u:%g %a' /owned/top.txt /owned/numeric.txt /unpacked/pkg/data /work/top.txt /tmp /tmp/top.txt; \
         cat /etc/motd /tree/through-link.txt; test -e /work/secret.txt || echo no-secret",
    );
    let want = "\
renamed.txt
top.txt
top
/added
/added/top.txt
/docs
/docs/a.md
/docs/b.md
/misc
/misc/x.txt
/parents
/parents/nested
/parents/nested/a
/parents/nested/a/b.txt
/tree
/tree/escape
/tree/keep.log
/tree/sub
/tree/sub/f.txt
/tree/through-link.txt
/unpacked
/unpacked/pkg
/unpacked/pkg/data
/etc/passwd
/owned/top.txt 65534:65534 600
/owned/numeric.txt 1234:1234 644
/unpacked/pkg/data 42:43 644
/work/top.txt 0:0 644
/tmp 0:0 1777
/tmp/top.txt 0:0 644
motd for berth
top
no-secret
";
    assert_eq!(out, want);
}

#[test]
fn run_steps_mounts_and_networks() {
    let b = Berth::new("build-run");
    let ctx = context(&b, "run");
    let secret = b.g.path("token");
    std::fs::write(&secret, "s3cret").unwrap();
    let args = ["--network", "default", "--build-arg", "STEP_ARG=given", "-t", "ran"];
    let secret_arg = format!("id=token,src={}", s(&secret));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--secret", &secret_arg, s(&ctx)]);
    let out = build_ok(&b, &all);
    assert!(out.contains(" ---> Running in "), "{out}");
    let out = sh(
        &b,
        "ran",
        "cat /run-env.txt /exec.txt /heredoc.txt /cat-heredoc.txt /shebang.txt /tmp/uid.txt /bind.txt \
         /cache-count.txt /secret-file.txt /secret-env.txt /eth-none.txt /eth-default.txt; \
         echo \"step arg: ${STEP_ARG:-unset}\"",
    );
    let want = "\
arg=given env=env-value
exec form
heredoc one
heredoc two
through cat
shebang script
65534
from the context
1
s3crets3cret
0
1
step arg: unset
";
    assert_eq!(out, want);
    // A rw bind mount writes nowhere that lasts: the context is as it was.
    assert_eq!(std::fs::read_to_string(ctx.join("data/in.txt")).unwrap(), "from the context\n");
    // Mount points the runtime or the mounts made are not in the image.
    let paths = files(&b, "ran");
    for gone in ["mnt", "run", "scratch", "var/cache", "etc/resolv.conf", "etc/hostname", "dev/pipes"] {
        assert!(!paths.iter().any(|p| p == gone || p.starts_with(&format!("{gone}/"))), "{gone} in {paths:?}");
    }
    // The cache mount lasts between builds: the step runs again and counts 2. A secret can
    // come from the environment too.
    let mut c = b.cmd(&[
        "build",
        "--no-cache",
        "--network",
        "none",
        "--secret",
        "id=token,env=BERTH_TEST_TOKEN",
        "-t",
        "ran",
        s(&ctx),
    ]);
    let o = c.env("BERTH_TEST_TOKEN", "from-env").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sh(&b, "ran", "cat /cache-count.txt /secret-file.txt"), "2\nfrom-env");
    // Without the secret (not `required`, as in BuildKit) the step runs without the file.
    let (code, _, err) = build(&b, &["--no-cache", s(&ctx)]);
    assert_eq!(code, 1);
    assert!(err.contains("can't open '/run/secrets/token'"), "{err}");
    // The host's network (here, the test's namespace): --network host for every step, or
    // RUN --network=host for one.
    let o = b.ns.command("readlink").arg("/proc/self/ns/net").output().unwrap();
    let host_ns = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(host_ns.starts_with("net:["), "{host_ns}");
    let hctx = b.g.path("ctx-host");
    std::fs::create_dir_all(&hctx).unwrap();
    std::fs::write(
        hctx.join("Dockerfile"),
        "FROM busybox\nRUN readlink /proc/self/ns/net > /ns-all.txt\n\
        RUN --network=host readlink /proc/self/ns/net > /ns-one.txt\nRUN readlink /proc/self/ns/net > /ns-none.txt\n",
    )
    .unwrap();
    build_ok(&b, &["--network", "host", "-t", "on-host", s(&hctx)]);
    assert_eq!(sh(&b, "on-host", "cat /ns-all.txt /ns-one.txt"), format!("{host_ns}{host_ns}"));
    build_ok(&b, &["--no-cache", "-t", "one-on-host", s(&hctx)]);
    let ns = sh(&b, "one-on-host", "cat /ns-all.txt /ns-one.txt /ns-none.txt");
    let lines: Vec<&str> = ns.lines().collect();
    assert_eq!(lines[1], host_ns.trim(), "{ns}");
    assert!(lines[0] != lines[1] && lines[2] != lines[1], "--network none steps have their own: {ns}");
    assert!(b.network_leftovers().is_empty(), "{:?}", b.network_leftovers());
}

#[test]
fn stages_build_what_the_target_needs() {
    let b = Berth::new("build-stages");
    let ctx = context(&b, "multistage");
    let out = build_ok(&b, &["--build-arg", "VERSION=2", "-t", "final", s(&ctx)]);
    assert!(!out.contains("this stage is not needed"), "{out}");
    assert_eq!(
        sh(&b, "final", "cat /from-tools.txt /from-index.txt; cmp /copied-busybox /bin/busybox && echo same"),
        "version 2\nbase\nsame\n"
    );
    // --target: the builder stage only.
    let out = build_ok(&b, &["--target", "builder", "-t", "builder", s(&ctx)]);
    assert!(!out.contains("COPY --from"), "{out}");
    assert_eq!(
        sh(&b, "builder", "cat /out/version.txt /base.txt; test -e /from-tools.txt || echo only-builder"),
        "version none\nbase\nonly-builder\n"
    );
    // A scratch stage holds only what was copied in.
    build_ok(&b, &["--target", "tools", "-t", "tools", s(&ctx)]);
    assert_eq!(files(&b, "tools"), vec!["version.txt"]);
    // A global ARG picks the base image; one that is not here cannot be pulled with --pull=never.
    let (code, _, err) = build(&b, &["--pull=never", "--build-arg", "BASE=nothere:1", s(&ctx)]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:3: FROM: image nothere:1 is not here"), "{err}");
}

#[test]
fn cache_hits_until_a_file_changes() {
    let b = Berth::new("build-cache");
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "a1\n").unwrap();
    std::fs::write(ctx.join("b.txt"), "b1\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a-copy.txt\nCOPY b.txt /b.txt\nRUN cat /b.txt > /b-copy.txt\nENV DONE=1\n",
    )
    .unwrap();
    let first = build_ok(&b, &["-t", "cached", s(&ctx)]);
    assert_eq!(hits(&first), 0, "{first}");
    let again = build_ok(&b, &["-t", "cached", s(&ctx)]);
    assert_eq!(hits(&again), 5, "{again}");
    assert!(!again.contains("Running in"), "{again}");
    let id = |out: &str| out.lines().find_map(|l| l.strip_prefix("Successfully built ")).unwrap().to_string();
    assert_eq!(id(&first), id(&again));
    // A new modification time alone changes nothing.
    let f = std::fs::File::options().write(true).open(ctx.join("a.txt")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(hits(&build_ok(&b, &["-t", "cached", s(&ctx)])), 5);
    // A changed file invalidates its COPY and what follows, not what comes before.
    std::fs::write(ctx.join("b.txt"), "b2\n").unwrap();
    let changed = build_ok(&b, &["-t", "cached", s(&ctx)]);
    assert_eq!(hits(&changed), 2, "{changed}");
    assert!(changed.contains("Step 4/6 : COPY b.txt /b.txt\n ---> "), "{changed}");
    assert_eq!(sh(&b, "cached", "cat /a-copy.txt /b-copy.txt"), "a1\nb2\n");
    // --no-cache, -q and --iidfile.
    let iid = b.g.path("iid");
    let q = build_ok(&b, &["--no-cache", "-q", "--iidfile", s(&iid), "-t", "cached", s(&ctx)]);
    assert!(q.trim().starts_with("sha256:") && q.lines().count() == 1, "{q}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), q.trim());
    // `images` hides the intermediate images, `-a` shows them; `image prune` keeps them
    // while the tagged image is built on them.
    let shown = b.ok(&["images", "-q"]).lines().count();
    let all = b.ok(&["images", "-aq"]).lines().count();
    // busybox, cached, and the two earlier finals (dangling, as Docker shows them).
    assert_eq!(shown, 4, "{}", b.ok(&["images"]));
    assert!(all >= shown + 8, "{all}");
    b.ok(&["image", "prune", "-f"]);
    assert_eq!(hits(&build_ok(&b, &["-t", "cached", s(&ctx)])), 5);
    // Without the tag the whole chain goes with `image prune`.
    b.ok(&["rmi", "cached"]);
    b.ok(&["image", "prune", "-f"]);
    assert_eq!(b.ok(&["images", "-aq"]).lines().count(), 1, "{}", b.ok(&["images", "-a"]));
    // `builder prune` forgets everything; `system df` counts what it holds before.
    build_ok(&b, &["-t", "cached", s(&ctx)]);
    let df = b.ok(&["system", "df", "--format", "{{.Type}}={{.TotalCount}}"]);
    let cache_line = df.lines().find(|l| l.starts_with("Build Cache=")).unwrap_or_default().to_string();
    assert!(cache_line != "Build Cache=0" && !cache_line.is_empty(), "{df}");
    let p = b.ok(&["builder", "prune", "-f"]);
    assert!(p.contains("Total reclaimed space:"), "{p}");
    assert_eq!(hits(&build_ok(&b, &["-t", "cached", s(&ctx)])), 0);
    // So does `system prune`, which names what it deleted.
    assert_eq!(hits(&build_ok(&b, &["-t", "cached", s(&ctx)])), 5);
    let p = b.ok(&["system", "prune", "-f"]);
    assert!(p.contains("Deleted build cache objects:"), "{p}");
    assert_eq!(hits(&build_ok(&b, &["-t", "cached", s(&ctx)])), 0);
}

#[test]
fn the_same_context_gives_the_same_image_under_an_epoch() {
    let b = Berth::new("build-repro");
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(ctx.join("d")).unwrap();
    std::fs::write(ctx.join("d/f.txt"), "content\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY d /d\nRUN echo made > /made.txt && mkdir /dir\nWORKDIR /w\nLABEL x=y\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut c = b.cmd(&["build", "--network", "none", "--no-cache", "-q"]);
        c.args(extra).arg(s(&ctx)).env("SOURCE_DATE_EPOCH", "1700000000");
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let first = run(&[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let f = std::fs::File::options().write(true).open(ctx.join("d/f.txt")).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    let second = run(&[]);
    assert_eq!(first, second, "two builds of the same context");
    let c = config(&b, &first);
    assert_eq!(c["created"], "2023-11-14T22:13:20.000000000Z");
    let ours: Vec<&Value> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["comment"].as_str().is_some_and(|c| c.starts_with("berth build ")))
        .collect();
    assert!(!ours.is_empty() && ours.iter().all(|h| h["created"] == c["created"]), "{:?}", c["history"]);
    // --timestamp does the same; another time gives another image.
    let t = b.ok(&["build", "--network", "none", "--no-cache", "-q", "--timestamp", "1700000000", s(&ctx)]);
    assert_eq!(t.trim(), first);
    let other = b.ok(&["build", "--network", "none", "--no-cache", "-q", "--timestamp", "1700000001", s(&ctx)]);
    assert_ne!(other.trim(), first);
    // So does BuildKit's build arg, which is not reported as unused.
    let (code, out, err) = build(&b, &["--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", s(&ctx)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Successfully built {}", &first.trim_start_matches("sha256:")[..12])), "{out}");
    assert!(!out.contains("not consumed"), "{out}");
}

#[test]
fn contexts_archives_stdin_and_dockerfile_flags() {
    let b = Berth::new("build-contexts");
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(ctx.join("other.txt"), "other\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /ctx/\n").unwrap();
    // A tar archive as the context, from a file and from stdin.
    let tar = b.g.path("ctx.tar");
    let (code, _, err) = b.host("tar", &["-C", s(&ctx), "-cf", s(&tar), "."]);
    assert_eq!(code, 0, "{err}");
    build_ok(&b, &["-t", "from-tar", s(&tar)]);
    assert_eq!(sh(&b, "from-tar", "ls /ctx"), "Dockerfile\nhello.txt\nother.txt\n");
    // Compressed: gzip and zstd.
    for (flag, name) in [("-z", "ctx.tar.gz"), ("--zstd", "ctx.tar.zst")] {
        let packed = b.g.path(name);
        let (code, _, err) = b.host("tar", &["-C", s(&ctx), flag, "-cf", s(&packed), "."]);
        assert_eq!(code, 0, "{err}");
        build_ok(&b, &["-t", "from-packed", s(&packed)]);
        assert_eq!(sh(&b, "from-packed", "cat /ctx/other.txt"), "other\n", "{name}");
    }
    let mut c = b.cmd(&["build", "--network", "none", "-t", "from-stdin-tar", "-"]);
    c.stdin(std::fs::File::open(&tar).unwrap());
    assert!(c.output().unwrap().status.success());
    assert_eq!(sh(&b, "from-stdin-tar", "cat /ctx/hello.txt"), "hello\n");
    // A Dockerfile on stdin has no context: RUN works, COPY has nothing to copy.
    let piped = |args: &[&str], input: &str| {
        let mut c = b.cmd(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) =
        piped(&["build", "--network", "none", "-t", "nocontext", "-"], "FROM busybox\nRUN echo ran > /ran\n");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sh(&b, "nocontext", "cat /ran"), "ran\n");
    let (code, _, err) = piped(&["build", "--network", "none", "-"], "FROM busybox\nCOPY x /x\n");
    assert_ne!(code, 0);
    assert!(err.contains("there is no build context"), "{err}");
    // `-f -` with a directory context; `-f` elsewhere with its own NAME.dockerignore.
    let (code, out, err) =
        piped(&["build", "--network", "none", "-t", "dash-f", "-f", "-", s(&ctx)], "FROM busybox\nCOPY hello.txt /\n");
    assert_eq!(code, 0, "{out}{err}");
    let df = b.g.path("elsewhere/App.Dockerfile");
    std::fs::create_dir_all(df.parent().unwrap()).unwrap();
    std::fs::write(&df, "FROM busybox\nCOPY . /ctx/\n").unwrap();
    std::fs::write(b.g.path("elsewhere/App.Dockerfile.dockerignore"), "other.txt\nDockerfile\n").unwrap();
    build_ok(&b, &["-f", s(&df), "-t", "own-ignore", s(&ctx)]);
    assert_eq!(sh(&b, "own-ignore", "ls /ctx"), "hello.txt\n");
    // --format docker writes a Docker manifest; the id (the config's digest) is the same.
    let oci = build_ok(&b, &["-q", "-f", s(&df), s(&ctx)]);
    let docker = build_ok(&b, &["-q", "--format", "docker", "-t", "docker-format", "-f", s(&df), s(&ctx)]);
    assert_eq!(oci, docker);
    let saved = b.g.path("saved.tar");
    b.ok(&["save", "--format", "oci-archive", "-o", s(&saved), "docker-format"]);
    let (_, index, _) = b.host("tar", &["-xOf", s(&saved), "index.json"]);
    assert!(index.contains("application/vnd.docker.distribution.manifest.v2+json"), "{index}");
}

#[test]
fn add_fetches_urls() {
    let b = Berth::new("build-url");
    // A one-shot HTTP server in the test's network namespace.
    let listener = common::in_netns(b.ns.path(), || std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    // An archive for ADD --unpack, served at /files/p.tar.
    let src = b.g.path("payload");
    std::fs::create_dir_all(src.join("pkg")).unwrap();
    std::fs::write(src.join("pkg/data"), "unpacked\n").unwrap();
    let (code, _, err) = b.host("tar", &["-C", s(&src), "-cf", s(&b.g.path("p.tar")), "pkg"]);
    assert_eq!(code, 0, "{err}");
    let tar = std::fs::read(b.g.path("p.tar")).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for _ in 0..5 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = [0u8; 4096];
            let n = conn.read(&mut req).unwrap();
            let body: &[u8] =
                if String::from_utf8_lossy(&req[..n]).contains("/p.tar ") { &tar } else { b"downloaded\n" };
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            conn.write_all(body).unwrap();
        }
    });
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nADD http://127.0.0.1:{port}/files/data.txt /dl/\n"))
        .unwrap();
    build_ok(&b, &["-t", "fetched", s(&ctx)]);
    // --checksum: the download must have that digest.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nADD --checksum=sha256:{} http://127.0.0.1:{port}/files/data.txt /dl/\n", "0".repeat(64)),
    )
    .unwrap();
    let (code, _, err) = build(&b, &[s(&ctx)]);
    assert_ne!(code, 0);
    assert!(err.contains("(--checksum)"), "{err}");
    // The right one (sha256 of "downloaded\n").
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nADD --checksum=sha256:30031a9831674dd684c3817399acebc88a116ce5a7a3fbc0cf34d92521a534e6 http://127.0.0.1:{port}/files/data.txt /sum/\n"),
    )
    .unwrap();
    build_ok(&b, &["-t", "summed", s(&ctx)]);
    assert_eq!(sh(&b, "summed", "cat /sum/data.txt"), "downloaded\n");
    // An archive from a URL is a file unless --unpack says otherwise.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\nADD http://127.0.0.1:{port}/files/p.tar /kept/\n\
             ADD --unpack=true http://127.0.0.1:{port}/files/p.tar /unpacked/\n"
        ),
    )
    .unwrap();
    build_ok(&b, &["-t", "unpacked", s(&ctx)]);
    assert_eq!(sh(&b, "unpacked", "ls /kept; cat /unpacked/pkg/data"), "p.tar\nunpacked\n");
    server.join().unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nADD http://127.0.0.1:{port}/files/data.txt /dl/\n"))
        .unwrap();
    assert_eq!(sh(&b, "fetched", "cat /dl/data.txt; stat -c '%a %Y' /dl/data.txt"), "downloaded\n600 784111777\n");
    // Nothing listens there any more: a clear error, with the line.
    let (code, _, err) = build(&b, &["--no-cache", s(&ctx)]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:2: ADD:") && err.contains("cannot fetch http://127.0.0.1"), "{err}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let b = Berth::new("build-bad");
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(b.g.path("outside.txt"), "secret\n").unwrap();
    std::fs::write(ctx.join("a"), "").unwrap();
    std::fs::write(ctx.join("b"), "").unwrap();
    let try_build = |dockerfile: &str, extra: &[&str]| {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let mut args = extra.to_vec();
        args.push(s(&ctx));
        build(&b, &args)
    };
    let cases: &[(&str, &[&str], &str)] = &[
        ("FROM busybox\nCOPY onlyone\n", &[], "Dockerfile:2: COPY: requires at least two arguments"),
        ("FORM busybox\n", &[], "Dockerfile:1: unknown instruction: FORM"),
        ("FROM busybox\n", &["--target", "nope"], "target stage \"nope\" could not be found"),
        ("FROM nothere:1\n", &["--pull=never"], "Dockerfile:1: FROM: image nothere:1 is not here"),
        ("FROM 127.0.0.1:1/nothere\n", &[], "Dockerfile:1: FROM: pulling 127.0.0.1:1/nothere:latest"),
        (
            "FROM busybox\nCOPY ../outside.txt /\n",
            &[],
            "Dockerfile:2: COPY: forbidden path outside the build context: ../outside.txt",
        ),
        ("FROM busybox\nCOPY missing.txt /\n", &[], "Dockerfile:2: COPY: file not found in build context"),
        ("FROM busybox\nCOPY a b c\n", &[], "the destination must be a directory and end with a /"),
        (
            "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n",
            &["--target", "a"],
            "Dockerfile:2: COPY: cannot copy from stage \"b\", it needs to be defined before current stage \"a\"",
        ),
        (
            "FROM busybox AS a\nRUN --mount=from=b,target=/b true\nFROM busybox AS b\nRUN --mount=from=a,target=/a true\n",
            &[],
            "Dockerfile:2: RUN: circular dependency detected on stage",
        ),
        ("ARG V\nFROM $V\n", &[], "Dockerfile:2: FROM: base name ($V) should not be blank"),
        (
            "FROM busybox\nRUN --mount=type=secret,id=missing,required cat /run/secrets/missing\n",
            &[],
            "Dockerfile:2: RUN: secret missing not found",
        ),
        ("FROM busybox\nSTOPSIGNAL NOPE\n", &[], "Dockerfile:2: STOPSIGNAL: invalid signal: NOPE"),
        ("FROM busybox\nEXPOSE http\n", &[], "Dockerfile:2: EXPOSE: invalid containerPort: http"),
        ("FROM busybox\n", &["--platform", "linux/s390x"], "--platform linux/s390x: this machine builds for"),
        (
            "FROM --platform=linux/s390x busybox\n",
            &[],
            "Dockerfile:1: FROM: --platform=linux/s390x: this machine builds for",
        ),
        (
            "FROM busybox\nCOPY --from=nostage /x /x\n",
            &["--pull=never"],
            "Dockerfile:2: COPY: image nostage is not here",
        ),
        (
            "ARG VER\nFROM busybox:$VER\n",
            &[],
            "Dockerfile:2: FROM: invalid reference format: bad tag \"\" in \"busybox:\"",
        ),
        ("FROM busybox\nENV X=${V:?needs}\n", &[], "Dockerfile:2: ENV: failed to process \"${V:?needs}\": V: needs"),
        (
            "FROM busybox\nRUN --mount=type=cache,from=busybox,target=/c true\n",
            &[],
            "Dockerfile:2: RUN: --mount=type=cache,from=busybox: a cache mount seeded from a stage or image is not supported",
        ),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/c,uid=$NOPE true\n",
            &[],
            "Dockerfile:2: RUN: failed to process \"type=cache,target=/c,uid=$NOPE\": invalid value  for uid",
        ),
        (
            "# check=error=true\nFROM busybox\nMAINTAINER me\n",
            &[],
            "Dockerfile: lint violation found for rules: MaintainerDeprecated",
        ),
    ];
    for (df, extra, want) in cases {
        let (code, out, err) = try_build(df, extra);
        assert_ne!(code, 0, "{df:?} built:\n{out}");
        assert!(err.contains(want), "{df:?}: want {want:?}, got:\n{err}");
    }
    // `# check=skip=` leaves a rule out; the `# syntax=` note is no lint violation.
    for df in [
        "# check=skip=MaintainerDeprecated;error=true\nFROM busybox\nMAINTAINER me\n",
        "# check=skip=all;error=true\nFROM busybox\nMAINTAINER me\n",
        "# syntax=docker/dockerfile:1\n# check=error=true\nFROM busybox\n",
    ] {
        let (code, out, err) = try_build(df, &[]);
        assert_eq!(code, 0, "{df:?}:\n{out}\n{err}");
        assert!(!out.contains("MaintainerDeprecated"), "{out}");
    }
    // A failing RUN: its exit code, the line, no image tagged, no container left.
    let (code, out, err) =
        try_build("FROM busybox\nRUN echo before\nRUN echo failing; exit 7\nRUN echo never\n", &["-t", "broken"]);
    assert_eq!(code, 7, "{out}{err}");
    assert!(out.contains("failing") && !out.contains("never\n"), "{out}");
    assert!(
        err.contains("Dockerfile:3: The command '/bin/sh -c echo failing; exit 7' returned a non-zero code: 7"),
        "{err}"
    );
    assert!(b.run(&["image", "inspect", "broken"]).0 != 0, "nothing is tagged");
    assert!(b.ids().is_empty(), "{:?}", b.ids());
}

#[test]
fn ctrl_c_stops_the_build_and_removes_its_container() {
    let b = Berth::new("build-int");
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN echo started; sleep 60\n").unwrap();
    let mut c = b.cmd(&["build", "--network", "none", "-t", "never", s(&ctx)]);
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("started") {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    // SAFETY: kill(2) of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t0 = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    assert!(b.ids().is_empty(), "{:?}", b.ids());
    assert!(b.run(&["image", "inspect", "never"]).0 != 0);
}

#[test]
fn copy_chmod_takes_symbolic_modes() {
    use std::os::unix::fs::PermissionsExt;
    let b = Berth::new("build-chmod");
    let ctx = b.g.path("ctx-chmod");
    std::fs::create_dir_all(ctx.join("dir")).unwrap();
    std::fs::write(ctx.join("f.txt"), "f\n").unwrap();
    std::fs::write(ctx.join("dir/g"), "g\n").unwrap();
    std::fs::set_permissions(ctx.join("f.txt"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(ctx.join("dir/g"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(ctx.join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY --chmod=u+x,go-w f.txt /sym/f.txt\nCOPY --chmod=a=rX dir /sym/dir\nCOPY --chmod=0640 f.txt /sym/octal\n",
    )
    .unwrap();
    build_ok(&b, &["-t", "chmod", s(&ctx)]);
    let out = sh(&b, "chmod", "stat -c '%n %a' /sym/f.txt /sym/dir /sym/dir/g /sym/octal");
    assert_eq!(out, "/sym/f.txt 744\n/sym/dir 555\n/sym/dir/g 444\n/sym/octal 640\n");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY --chmod=u+y f.txt /x\n").unwrap();
    let (code, _, err) = build(&b, &["-t", "bad", s(&ctx)]);
    assert!(code != 0 && err.contains("invalid --chmod=u+y"), "{err}");
}

#[test]
fn add_unpacks_bzip2_xz_and_zstd_archives() {
    let b = Berth::new("build-addz");
    let ctx = b.g.path("ctx-addz");
    let src = b.g.path("payload");
    std::fs::create_dir_all(src.join("pkg")).unwrap();
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(src.join("pkg/data"), "packed\n").unwrap();
    for (flag, name) in [("-cjf", "p.tar.bz2"), ("-cJf", "p.tar.xz"), ("--zstd", "p.tar.zst")] {
        let out = s(&ctx.join(name)).to_string();
        let args: Vec<&str> = if flag == "--zstd" {
            vec!["-C", s(&src), flag, "-cf", &out, "pkg"]
        } else {
            vec!["-C", s(&src), flag, &out, "pkg"]
        };
        let (code, _, err) = b.host("tar", &args);
        assert_eq!(code, 0, "{err}");
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nADD p.tar.bz2 /bz/\nADD p.tar.xz /xz/\nADD p.tar.zst /zst/\n",
    )
    .unwrap();
    build_ok(&b, &["-t", "addz", s(&ctx)]);
    assert_eq!(sh(&b, "addz", "cat /bz/pkg/data /xz/pkg/data /zst/pkg/data"), "packed\npacked\npacked\n");
    // A corrupt archive is an error, not a file copied as is.
    let mut bad = std::fs::read(ctx.join("p.tar.xz")).unwrap();
    let n = bad.len();
    bad[n / 2..].fill(0);
    std::fs::write(ctx.join("p.tar.xz"), bad).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nADD p.tar.xz /xz/\n").unwrap();
    let (code, out, err) = build(&b, &["-t", "bad", s(&ctx)]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("Dockerfile:2: ADD") && err.contains("reading the archive"), "{err}");
}

#[test]
fn cache_from_reuses_the_steps_of_a_local_image() {
    let b = Berth::new("build-cachefrom");
    let ctx = b.g.path("ctx-cf");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "one\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nENV GREETING=hi\nRUN echo built > /built\nCOPY a.txt /a.txt\nWORKDIR /app\n\
         RUN cat /a.txt > copy.txt\nCMD [\"cat\", \"/app/copy.txt\"]\n",
    )
    .unwrap();
    build_ok(&b, &["-t", "app:1", s(&ctx)]);
    let id = |r: &str| b.ok(&["image", "inspect", "-f", "{{.Id}}", r]).trim().to_string();
    // With the build cache gone, the image's own history stands in for it: every step is
    // taken from it, and the result is that image.
    b.ok(&["builder", "prune", "-f"]);
    let out = build_ok(&b, &["--cache-from", "app:1", "-t", "app:2", s(&ctx)]);
    assert_eq!(hits(&out), 6, "{out}");
    assert_eq!(id("app:2"), id("app:1"));
    // A changed file: the steps before its COPY are taken, the rest are built.
    b.ok(&["builder", "prune", "-f"]);
    std::fs::write(ctx.join("a.txt"), "two\n").unwrap();
    let out = build_ok(&b, &["--cache-from", "app:1", "-t", "app:3", s(&ctx)]);
    assert_eq!(hits(&out), 2, "{out}");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "app:3"]), "two\n");
    assert_eq!(sh(&b, "app:3", "echo $GREETING; cat /built"), "hi\nbuilt\n");
    // A build arg that changes what a RUN sees is a different step.
    b.ok(&["builder", "prune", "-f"]);
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nARG V=1\nRUN echo $V > /v\n").unwrap();
    build_ok(&b, &["-t", "argv:1", s(&ctx)]);
    b.ok(&["builder", "prune", "-f"]);
    let out = build_ok(&b, &["--cache-from", "argv:1", "--build-arg", "V=2", "-t", "argv:2", s(&ctx)]);
    // (The ARG step itself records the same history entry, whatever the value.)
    assert_eq!(hits(&out), 1, "{out}");
    assert!(out.contains("Step 3/3 : RUN echo $V > /v\n ---> Running in"), "{out}");
    assert_eq!(sh(&b, "argv:2", "cat /v"), "2\n");
    let (code, _, err) = build(&b, &["--cache-from", "nosuch:image", s(&ctx)]);
    assert!(code != 0 && err.contains("--cache-from nosuch:image"), "{err}");
}

#[test]
fn independent_stages_build_in_parallel() {
    let b = Berth::new("build-parallel");
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // Each of the two stages waits (up to 30 s) for the other one's file in a shared cache
    // mount: built one after the other, the first would give up.
    let meet = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,target=/c,id=meet touch /c/{me}; i=0; until [ -e /c/{other} ]; do \
             i=$((i+1)); [ $i -lt 300 ] || exit 9; sleep 0.1; done; echo {me}-met-{other}; echo {me} > /{me}.txt\n"
        )
    };
    let df = format!(
        "FROM busybox AS a\n{}FROM busybox AS b\n{}FROM busybox\nCOPY --from=a /a.txt /\nCOPY --from=b /b.txt /\n",
        meet("a", "b"),
        meet("b", "a")
    );
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    let out = build_ok(&b, &["-t", "met", s(&ctx)]);
    assert_eq!(sh(&b, "met", "cat /a.txt /b.txt"), "a\nb\n");
    // The lines read as if the stages were built one after the other.
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("Step ")).collect();
    let want: Vec<String> = (1..=7).map(|i| format!("Step {i}/7 ")).collect();
    assert_eq!(steps.len(), 7, "{out}");
    for (l, w) in steps.iter().zip(&want) {
        assert!(l.starts_with(w.as_str()), "{l:?} is not {w:?}:\n{out}");
    }
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{out}"));
    assert!(at("Step 2/7") < at("a-met-b") && at("a-met-b") < at("Step 3/7"), "{out}");
    assert!(at("Step 4/7") < at("b-met-a") && at("b-met-a") < at("Step 5/7"), "{out}");

    // A failing stage stops the stage building alongside (its RUN killed), and the build fails
    // with the failing step's error, whatever the order.
    let df = "FROM busybox AS slow\nRUN sleep 60; echo never > /x\nFROM busybox AS bad\nRUN echo failing; exit 3\n\
              FROM busybox\nCOPY --from=slow /x /\nCOPY --from=bad /etc/passwd /\n";
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    let t0 = std::time::Instant::now();
    let (code, out, err) = build(&b, &["--no-cache", "-t", "never", s(&ctx)]);
    assert!(t0.elapsed() < std::time::Duration::from_secs(40), "{out}\n{err}");
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("Dockerfile:4: The command '/bin/sh -c echo failing; exit 3' returned a non-zero code: 3"),
        "{err}"
    );
    assert!(!err.contains("another stage"), "{err}");
    assert!(out.contains("failing"), "{out}");
    assert!(b.ids().is_empty(), "{:?}", b.ids());
    assert!(b.run(&["image", "inspect", "never"]).0 != 0);
}

#[test]
fn the_parsers_forms_build() {
    let b = Berth::new("build-forms");
    let ctx = context(&b, "forms");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    // Several tags, --platform of this machine, a build arg from the environment, a proxy arg
    // (seen by RUN without an ARG, never reported as unused).
    let mut c = b.cmd(&[
        "build",
        "--network",
        "none",
        "--target",
        "base",
        "--platform",
        &format!("linux/{arch}"),
        "--build-arg",
        "FROM_ENVIRONMENT",
        "--build-arg",
        "HTTP_PROXY=http://proxy.invalid:3128",
        "-t",
        "forms:1",
        "-t",
        "forms:2",
        s(&ctx),
    ]);
    let o = c.env("FROM_ENVIRONMENT", "from-env").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.contains("not consumed"), "{out}");
    assert!(out.contains("Successfully tagged forms:1") && out.contains("Successfully tagged forms:2"), "{out}");
    let id = |r: &str| b.ok(&["image", "inspect", "-f", "{{.Id}}", r]);
    assert_eq!(id("forms:1"), id("forms:2"));
    let files = sh(
        &b,
        "forms:1",
        "cat /platform.txt /subst.txt /continued.txt /dash-heredoc.txt /quoted.txt /expanded.txt /env.txt; \
         ls /added; stat -c '%u:%g %a %n' /added/data.txt /added/keep.txt",
    );
    assert_eq!(
        files,
        format!(
            "linux/{arch} linux {arch} linux/{arch} linux\n\
             tar.gz|archive.tar|gz|/usr/local/sbin:/usr/bin|set||fallback|colon|yes\n\
             one two three\n\
             tab-stripped\n\
             kept $FILE as written\n\
             file is archive.tar.gz\n\
             proxy=http://proxy.invalid:3128 arg=from-env\n\
             data.txt\nkeep.txt\n\
             7:8 640 /added/data.txt\n7:8 640 /added/keep.txt\n"
        )
    );
    let cc = config(&b, "forms:1")["config"].clone();
    assert_eq!(cc["Healthcheck"]["Test"], serde_json::json!(["NONE"]));
    assert_eq!(cc["Entrypoint"], serde_json::json!(["/bin/sh", "-c", "echo entry"]));
    assert_eq!(cc["Cmd"], serde_json::json!(["/bin/sh", "-c", "echo cmd"]));
    assert!(!cc["Env"].to_string().contains("HTTP_PROXY"), "{}", cc["Env"]);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "forms:1"]), "entry\n");
    // Another proxy value is not another step: every step is taken from the cache.
    let again = build_ok(
        &b,
        &[
            "--target",
            "base",
            "--build-arg",
            "FROM_ENVIRONMENT=from-env",
            "--build-arg",
            "HTTP_PROXY=http://other.invalid",
            s(&ctx),
        ],
    );
    assert!(!again.contains("Running in"), "{again}");
    // The whole file: COPY --from with --chown.
    build_ok(&b, &["-t", "forms-final", s(&ctx)]);
    assert_eq!(sh(&b, "forms-final", "stat -c '%u:%g' /owned.txt"), "3:4\n");
    // A changed --chmod alone is a changed step.
    let df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap().replace("--chmod=640", "--chmod=600");
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    let changed = build_ok(&b, &["--target", "base", "-t", "forms:3", s(&ctx)]);
    assert!(
        changed.contains("ADD --chown=7:8 --chmod=600")
            && !changed.contains("--chmod=600 --exclude=*.skip data.txt extra/ /added/\n ---> Using cache"),
        "{changed}"
    );
    assert_eq!(sh(&b, "forms:3", "stat -c '%a' /added/data.txt"), "600\n");
}

#[test]
fn copy_link_layers_survive_a_changed_parent() {
    let b = Berth::new("build-link");
    let ctx = b.g.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    let df = |base: &str| {
        format!("FROM busybox\nRUN echo {base} > /base\nWORKDIR /app\nCOPY --link --chmod=600 a.txt sub/\n")
    };
    std::fs::write(ctx.join("Dockerfile"), df("v1")).unwrap();
    build_ok(&b, &["-t", "link:1", s(&ctx)]);
    // The layer is made without the parent's files, so it is the same on any parent.
    let diff = |r: &str| config(&b, r)["rootfs"]["diff_ids"].as_array().unwrap().last().unwrap().clone();
    // A changed step before it: the RUN runs again, the linked COPY is taken as it was.
    std::fs::write(ctx.join("Dockerfile"), df("v2")).unwrap();
    let out = build_ok(&b, &["-t", "link:2", s(&ctx)]);
    assert!(out.contains("Step 4/4 : COPY --link --chmod=600 a.txt sub/\n ---> Using cache"), "{out}");
    assert_eq!(diff("link:1"), diff("link:2"));
    assert_eq!(sh(&b, "link:2", "cat /base /app/sub/a.txt; stat -c %a /app/sub/a.txt"), "v2\na\n600\n");
    // The same file without --link is built again on the new parent.
    std::fs::write(ctx.join("Dockerfile"), df("v3").replace("--link ", "")).unwrap();
    let out = build_ok(&b, &["-t", "nolink", s(&ctx)]);
    assert!(!out.contains("a.txt sub/\n ---> Using cache"), "{out}");
    // A new source file is a new layer; names in --chown cannot be looked up.
    std::fs::write(ctx.join("a.txt"), "a2\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), df("v2")).unwrap();
    let out = build_ok(&b, &["-t", "link:3", s(&ctx)]);
    assert!(!out.contains("a.txt sub/\n ---> Using cache"), "{out}");
    assert_ne!(diff("link:1"), diff("link:3"));
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY --link --chown=nobody a.txt /\n").unwrap();
    let (code, _, err) = build(&b, &[s(&ctx)]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:2: COPY: COPY --link --chown=nobody: a linked layer is made without"), "{err}");
}
