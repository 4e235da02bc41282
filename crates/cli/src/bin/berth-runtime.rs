//! `berth-runtime`: an OCI runtime with runc's command line.

use berth_runtime::units::{parse_signal, parse_size};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_runtime::{Container, CreateOptions, Status, container, state};
use oci_spec::runtime::{LinuxResources, Process, Spec};

/// runc's command line, parsed by hand: clap's command tree cost about 0.3 ms and 200 KB of
/// heap on every invocation (and its code a tenth of the binary that `create`, `run` and `exec`
/// copy into a sealed memfd). Global options go anywhere, options before or after the id,
/// `--opt value` and `--opt=value`, `-o value` and `-ovalue`, and `--` ends the options.
mod cli {
    use std::path::PathBuf;

    pub struct Cli {
        pub root: PathBuf,
        pub log: Option<PathBuf>,
        pub log_format: String,
        #[allow(dead_code)]
        pub debug: bool,
        pub systemd_cgroup: bool,
        pub cmd: Cmd,
    }

    pub struct CreateArgs {
        pub bundle: PathBuf,
        pub console_socket: Option<PathBuf>,
        pub pid_file: Option<PathBuf>,
        pub no_pivot: bool,
        pub no_new_keyring: bool,
        pub preserve_fds: u32,
        pub id: String,
    }

    pub enum Cmd {
        Create(CreateArgs),
        Start {
            id: String,
        },
        State {
            id: String,
        },
        Kill {
            all: bool,
            id: String,
            signal: String,
        },
        Delete {
            force: bool,
            id: String,
        },
        Run {
            create: CreateArgs,
            detach: bool,
            keep: bool,
        },
        Exec {
            process: Option<PathBuf>,
            tty: bool,
            console_socket: Option<PathBuf>,
            env: Vec<String>,
            cwd: Option<PathBuf>,
            user: Option<String>,
            additional_gids: Vec<u32>,
            cap: Vec<String>,
            no_new_privs: bool,
            detach: bool,
            pid_file: Option<PathBuf>,
            preserve_fds: u32,
            id: String,
            args: Vec<String>,
        },
        Ps {
            format: String,
            id: String,
            /// Options for ps(1) in table format [default: -ef].
            ps_args: Vec<String>,
        },
        List {
            format: String,
            quiet: bool,
        },
        Pause {
            id: String,
        },
        Resume {
            id: String,
        },
        Update {
            resources: Option<PathBuf>,
            memory: Option<String>,
            memory_reservation: Option<String>,
            memory_swap: Option<String>,
            cpu_quota: Option<i64>,
            cpu_period: Option<u64>,
            cpu_shares: Option<u64>,
            cpuset_cpus: Option<String>,
            cpuset_mems: Option<String>,
            pids_limit: Option<i64>,
            id: String,
        },
        Events {
            stats: bool,
            interval: String,
            id: String,
        },
        Features,
        Spec {
            bundle: PathBuf,
            rootless: bool,
        },
        Checkpoint {
            criu: berth_runtime::criu::CriuOptions,
            leave_running: bool,
            /// A runc option berth-runtime does not have, if one was given.
            unsupported: Option<&'static str>,
            id: String,
        },
        Restore {
            criu: berth_runtime::criu::CriuOptions,
            bundle: PathBuf,
            detach: bool,
            pid_file: Option<PathBuf>,
            unsupported: Option<&'static str>,
            id: String,
        },
    }

    /// (long, short, takes a value, help)
    type Opt = (&'static str, Option<char>, bool, &'static str);

    const GLOBAL: &[Opt] = &[
        (
            "root",
            None,
            true,
            "Directory for container state [default: /run/berth-runtime; $XDG_RUNTIME_DIR/berth-runtime for a user]",
        ),
        ("log", None, true, "Also write errors to this file"),
        ("log-format", None, true, "Format of --log: text or json [default: text]"),
        ("debug", None, false, "Accepted for compatibility"),
        ("systemd-cgroup", None, false, "Accepted for compatibility; systemd cgroup management is not supported"),
    ];

    const CREATE: &[Opt] = &[
        ("bundle", Some('b'), true, "Path of the bundle [default: .]"),
        ("console-socket", None, true, "Unix socket that receives the pty master"),
        ("pid-file", None, true, "File to write the init's pid to"),
        ("no-pivot", None, false, "Use chroot (MS_MOVE) instead of pivot_root"),
        ("no-new-keyring", None, false, "Keep the caller's session keyring"),
        ("preserve-fds", None, true, "Pass this many fds after stdio to the container"),
    ];
    const RUN: &[Opt] = &[
        ("bundle", Some('b'), true, "Path of the bundle [default: .]"),
        ("console-socket", None, true, "Unix socket that receives the pty master"),
        ("pid-file", None, true, "File to write the init's pid to"),
        ("no-pivot", None, false, "Use chroot (MS_MOVE) instead of pivot_root"),
        ("no-new-keyring", None, false, "Keep the caller's session keyring"),
        ("preserve-fds", None, true, "Pass this many fds after stdio to the container"),
        ("detach", Some('d'), false, "Return once the container is started"),
        ("keep", None, false, "Do not delete the container after it exits"),
    ];
    const EXEC: &[Opt] = &[
        ("process", Some('p'), true, "process.json to run instead of ARGS"),
        ("tty", Some('t'), false, "Allocate a pty"),
        ("console-socket", None, true, "Unix socket that receives the pty master"),
        ("env", Some('e'), true, "Add an environment variable (repeatable)"),
        ("cwd", None, true, "Working directory"),
        ("user", Some('u'), true, "uid[:gid]"),
        ("additional-gids", Some('g'), true, "Additional gid (repeatable)"),
        ("cap", Some('c'), true, "Add a capability (repeatable)"),
        ("no-new-privs", None, false, "Set no_new_privs"),
        ("detach", Some('d'), false, "Return once the process is started"),
        ("pid-file", None, true, "File to write the process's pid to"),
        ("preserve-fds", None, true, "Pass this many fds after stdio to the process"),
    ];
    const KILL: &[Opt] = &[("all", Some('a'), false, "Signal every process of the container")];
    const DELETE: &[Opt] = &[("force", Some('f'), false, "Kill the container first if it runs")];
    const PS: &[Opt] = &[("format", Some('f'), true, "table or json [default: table]")];
    const LIST: &[Opt] = &[
        ("format", Some('f'), true, "table or json [default: table]"),
        ("quiet", Some('q'), false, "Print the ids only"),
    ];
    const UPDATE: &[Opt] = &[
        ("resources", Some('r'), true, "LinuxResources JSON file (- for stdin)"),
        ("memory", None, true, "Memory limit"),
        ("memory-reservation", None, true, "Memory soft limit"),
        ("memory-swap", None, true, "Memory plus swap limit"),
        ("cpu-quota", None, true, "CFS quota (us)"),
        ("cpu-period", None, true, "CFS period (us)"),
        ("cpu-shares", None, true, "CPU shares"),
        ("cpuset-cpus", None, true, "CPUs allowed"),
        ("cpuset-mems", None, true, "Memory nodes allowed"),
        ("pids-limit", None, true, "Maximum number of processes"),
    ];
    const EVENTS: &[Opt] = &[
        ("stats", None, false, "Print the stats once"),
        ("interval", None, true, "Interval between stats [default: 5s]"),
    ];
    const SPEC: &[Opt] = &[
        ("bundle", Some('b'), true, "Bundle to write config.json into [default: .]"),
        ("rootless", None, false, "A spec for an unprivileged user"),
    ];
    const CHECKPOINT: &[Opt] = &[
        ("image-path", None, true, "Directory for the images [default: ./checkpoint]"),
        ("work-path", None, true, "Directory for CRIU's log and work files [default: the image path]"),
        ("leave-running", None, false, "Leave the container running after the checkpoint"),
        ("tcp-established", None, false, "Checkpoint established TCP connections"),
        ("ext-unix-sk", None, false, "Allow external unix sockets"),
        ("shell-job", None, false, "The container is a shell job (a terminal of the caller's)"),
        ("file-locks", None, false, "Checkpoint file locks"),
        ("manage-cgroups-mode", None, true, "soft, full, strict or ignore [default: soft]"),
        ("parent-path", None, true, "Not supported: incremental dumps"),
        ("pre-dump", None, false, "Not supported: incremental dumps"),
        ("page-server", None, true, "Not supported: a page server"),
        ("lazy-pages", None, false, "Not supported: lazy migration"),
        ("status-fd", None, true, "Not supported: lazy migration"),
        ("auto-dedup", None, false, "Not supported"),
        ("empty-ns", None, true, "Not supported"),
    ];
    const RESTORE: &[Opt] = &[
        ("bundle", Some('b'), true, "Path of the bundle [default: .]"),
        ("image-path", None, true, "Directory of the images [default: ./checkpoint]"),
        ("work-path", None, true, "Directory for CRIU's log and work files [default: the image path]"),
        ("detach", Some('d'), false, "Return once the container is restored"),
        ("pid-file", None, true, "File to write the init's pid to"),
        ("tcp-established", None, false, "Restore established TCP connections"),
        ("ext-unix-sk", None, false, "Allow external unix sockets"),
        ("shell-job", None, false, "The container is a shell job (a terminal of the caller's)"),
        ("file-locks", None, false, "Restore file locks"),
        ("manage-cgroups-mode", None, true, "soft, full, strict or ignore [default: soft]"),
        ("no-subreaper", None, false, "Accepted for compatibility"),
        ("no-pivot", None, false, "Accepted for compatibility (CRIU sets up the root)"),
        ("console-socket", None, true, "Not supported: restoring a terminal container"),
        ("lazy-pages", None, false, "Not supported: lazy migration"),
        ("auto-dedup", None, false, "Not supported"),
        ("empty-ns", None, true, "Not supported"),
        ("lsm-profile", None, true, "Not supported"),
        ("lsm-mount-context", None, true, "Not supported"),
    ];
    const NONE: &[Opt] = &[];

    /// (name, options, positionals for the usage line, about)
    const COMMANDS: &[(&str, &[Opt], &str, &str)] = &[
        ("create", CREATE, "<ID>", "Create a container; its process waits for `start`"),
        ("start", NONE, "<ID>", "Start a created container"),
        ("state", NONE, "<ID>", "Print the state of a container as JSON"),
        ("kill", KILL, "<ID> [SIGNAL]", "Send a signal to the container's init (or all its processes)"),
        ("delete", DELETE, "<ID>", "Delete a container and everything it had"),
        ("run", RUN, "<ID>", "Create, start and wait for a container; then delete it"),
        ("exec", EXEC, "<ID> [ARGS]...", "Run a process in a running container"),
        (
            "ps",
            PS,
            "<ID> [-- PS_OPTIONS...]",
            "List the processes of a container (table: the host's ps, -ef by default)",
        ),
        ("list", LIST, "", "List containers"),
        ("pause", NONE, "<ID>", "Freeze every process of a container"),
        ("resume", NONE, "<ID>", "Thaw a paused container"),
        ("update", UPDATE, "<ID>", "Change the resource limits of a running container"),
        ("events", EVENTS, "<ID>", "Print resource usage (once with --stats, else every --interval)"),
        ("features", NONE, "", "Print what this runtime supports, as the OCI features JSON"),
        ("spec", SPEC, "", "Write a default config.json into the bundle"),
        ("checkpoint", CHECKPOINT, "<ID>", "Checkpoint a running container (needs CRIU)"),
        ("restore", RESTORE, "<ID>", "Restore a container from a checkpoint (needs CRIU)"),
    ];

    /// A usage error: the message, and the command whose usage to show.
    pub struct Usage(pub String, pub Option<&'static str>);

    pub enum Parsed {
        Run(Box<Cli>),
        /// --help or --version: print this on stdout and exit 0.
        Print(String),
    }

    #[derive(Default)]
    struct Matches {
        values: Vec<(&'static str, String)>,
        flags: Vec<&'static str>,
        pos: Vec<String>,
    }

    impl Matches {
        fn flag(&self, name: &str) -> bool {
            self.flags.contains(&name)
        }
        fn last(&self, name: &str) -> Option<String> {
            self.values.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
        }
        fn all(&self, name: &str) -> Vec<String> {
            self.values.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.clone()).collect()
        }
        fn path(&self, name: &str) -> Option<PathBuf> {
            self.last(name).map(PathBuf::from)
        }
        fn num<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Usage>
        where
            T::Err: std::fmt::Display,
        {
            match self.last(name) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|e| {
                    Usage(format!("invalid value '{v}' for '--{name} <{}>': {e}", name.to_uppercase()), None)
                }),
            }
        }
    }

    pub fn help(cmd: Option<&str>) -> String {
        let opts = |list: &[Opt], out: &mut String| {
            for (long, short, value, about) in list.iter().chain(GLOBAL) {
                let s = short.map(|c| format!("-{c}, ")).unwrap_or_else(|| "    ".into());
                let v = if *value { format!(" <{}>", long.to_uppercase().replace('-', "_")) } else { String::new() };
                out.push_str(&format!("  {s}--{long}{v}\n          {about}\n"));
            }
            out.push_str("  -h, --help\n          Print help\n");
        };
        let mut out = String::new();
        match cmd.and_then(|c| COMMANDS.iter().find(|(n, ..)| *n == c)) {
            Some((name, list, pos, about)) => {
                out.push_str(&format!("{about}\n\nUsage: berth-runtime {name} [OPTIONS] {pos}\n\nOptions:\n"));
                opts(list, &mut out);
            }
            None => {
                out.push_str(
                    "berth's OCI runtime (runc-compatible command line)\n\nUsage: berth-runtime [OPTIONS] <COMMAND>\n\nCommands:\n",
                );
                for (name, _, _, about) in COMMANDS {
                    out.push_str(&format!("  {name:<11} {about}\n"));
                }
                out.push_str("  help        Print this message or the help of the given command\n\nOptions:\n");
                opts(&[], &mut out);
                out.push_str("  -V, --version\n          Print version\n");
            }
        }
        out
    }

    pub fn parse(args: &[String]) -> Result<Parsed, Usage> {
        // As runc: a user's containers live under $XDG_RUNTIME_DIR, root's under /run.
        // SAFETY: geteuid cannot fail.
        let mut root = match std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| std::path::Path::new(d).is_absolute() && unsafe { libc::geteuid() } != 0)
        {
            Some(d) => PathBuf::from(d).join("berth-runtime"),
            None => PathBuf::from(berth_runtime::DEFAULT_ROOT),
        };
        let (mut log, mut log_format, mut debug, mut systemd) = (None, "text".to_string(), false, false);
        let mut sub: Option<(&'static str, &'static [Opt])> = None;
        let mut m = Matches::default();
        let mut verbatim = false;
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let name = sub.map(|s| s.0);
            // exec's ARGS start at the first word after the id.
            if !verbatim && name == Some("exec") && m.pos.len() >= 2 {
                verbatim = true;
            }
            if verbatim {
                m.pos.push(arg.clone());
                continue;
            }
            if arg == "--" {
                verbatim = true;
                continue;
            }
            let table = sub.map(|s| s.1).unwrap_or(NONE);
            let (opt, inline): (Opt, Option<String>) = if let Some(long) = arg.strip_prefix("--") {
                let (n, v) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                match n {
                    "help" => return Ok(Parsed::Print(help(name))),
                    "version" => return Ok(Parsed::Print(version())),
                    _ => {}
                }
                match table.iter().chain(GLOBAL).find(|o| o.0 == n) {
                    Some(o) => (*o, v),
                    None => return Err(Usage(format!("unexpected argument '--{n}' found"), name)),
                }
            } else if arg.len() > 1 && arg.starts_with('-') {
                let mut chars = arg[1..].chars();
                let c = chars.next().unwrap_or('-');
                let rest: String = chars.collect();
                match c {
                    'h' if rest.is_empty() => return Ok(Parsed::Print(help(name))),
                    'V' if rest.is_empty() && sub.is_none() => return Ok(Parsed::Print(version())),
                    _ => {}
                }
                match table.iter().find(|o| o.1 == Some(c)) {
                    // -ovalue, or a cluster of flags such as -dt
                    Some(o) if o.2 => (*o, (!rest.is_empty()).then_some(rest)),
                    Some(o) => {
                        for c2 in rest.chars() {
                            match table.iter().find(|o| o.1 == Some(c2) && !o.2) {
                                Some(o2) => m.flags.push(o2.0),
                                None => return Err(Usage(format!("unexpected argument '-{c2}' found"), name)),
                            }
                        }
                        (*o, None)
                    }
                    None => return Err(Usage(format!("unexpected argument '-{c}' found"), name)),
                }
            } else {
                match sub {
                    None if arg == "help" => {
                        let on = args.get(i).and_then(|a| COMMANDS.iter().find(|c| c.0 == a).map(|c| c.0));
                        return Ok(Parsed::Print(help(on)));
                    }
                    None => match COMMANDS.iter().find(|c| c.0 == arg) {
                        Some(c) => sub = Some((c.0, c.1)),
                        None => return Err(Usage(format!("unrecognized subcommand '{arg}'"), None)),
                    },
                    Some(_) => m.pos.push(arg.clone()),
                }
                continue;
            };
            let (long, _, takes, _) = opt;
            if !takes {
                // Go's flag package (runc's) also takes `--flag=true` and `--flag=false`.
                match inline.as_deref() {
                    None | Some("true") => {}
                    Some("false") => continue,
                    Some(v) => return Err(Usage(format!("invalid value '{v}' for '--{long}'"), name)),
                }
                match long {
                    "debug" => debug = true,
                    "systemd-cgroup" => systemd = true,
                    _ => m.flags.push(long),
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None if i < args.len() => {
                    i += 1;
                    args[i - 1].clone()
                }
                None => return Err(Usage(format!("a value is required for '--{long}' but none was supplied"), name)),
            };
            match long {
                "root" => root = PathBuf::from(value),
                "log" => log = Some(PathBuf::from(value)),
                "log-format" => log_format = value,
                _ => m.values.push((long, value)),
            }
        }
        let Some((name, _)) = sub else {
            return Err(Usage("a subcommand is required".into(), None));
        };
        let cmd = build(name, m)?;
        Ok(Parsed::Run(Box::new(Cli { root, log, log_format, debug, systemd_cgroup: systemd, cmd })))
    }

    /// The options checkpoint and restore share (runc's defaults).
    fn criu_options(m: &Matches) -> berth_runtime::criu::CriuOptions {
        berth_runtime::criu::CriuOptions {
            image_path: m.path("image-path").unwrap_or_else(|| PathBuf::from("checkpoint")),
            work_path: m.path("work-path"),
            tcp_established: m.flag("tcp-established"),
            ext_unix_sk: m.flag("ext-unix-sk"),
            shell_job: m.flag("shell-job"),
            file_locks: m.flag("file-locks"),
            manage_cgroups_mode: m.last("manage-cgroups-mode"),
        }
    }

    /// The first option given whose help says it is not supported.
    fn unsupported(m: &Matches, table: &[Opt]) -> Option<&'static str> {
        table.iter().find(|o| o.3.starts_with("Not supported") && (m.flag(o.0) || m.last(o.0).is_some())).map(|o| o.0)
    }

    fn version() -> String {
        format!("berth-runtime {}\n", env!("CARGO_PKG_VERSION"))
    }

    fn build(name: &'static str, mut m: Matches) -> Result<Cmd, Usage> {
        let wanted: &[&str] = match name {
            "list" | "features" | "spec" => &[],
            "kill" => &["<ID>", "[SIGNAL]"],
            "ps" => &["<ID>", "[PS_OPTIONS]..."],
            "exec" => &[],
            _ => &["<ID>"],
        };
        let required = wanted.iter().filter(|w| w.starts_with('<')).count();
        if name != "exec" {
            if m.pos.len() < required {
                return Err(Usage(
                    format!("the following required arguments were not provided:\n  {}", wanted[m.pos.len()]),
                    Some(name),
                ));
            }
            if m.pos.len() > wanted.len() && !wanted.last().is_some_and(|w| w.ends_with("...")) {
                return Err(Usage(format!("unexpected argument '{}' found", m.pos[wanted.len()]), Some(name)));
            }
        }
        let mut pos = std::mem::take(&mut m.pos).into_iter();
        let mut id = || pos.next().unwrap_or_default();
        let create = |m: &Matches, id: String| -> Result<CreateArgs, Usage> {
            Ok(CreateArgs {
                bundle: m.path("bundle").unwrap_or_else(|| PathBuf::from(".")),
                console_socket: m.path("console-socket"),
                pid_file: m.path("pid-file"),
                no_pivot: m.flag("no-pivot"),
                no_new_keyring: m.flag("no-new-keyring"),
                preserve_fds: m.num("preserve-fds")?.unwrap_or(0),
                id,
            })
        };
        Ok(match name {
            "create" => Cmd::Create(create(&m, id())?),
            "start" => Cmd::Start { id: id() },
            "state" => Cmd::State { id: id() },
            "kill" => {
                let i = id();
                let signal = pos.next().unwrap_or_else(|| "SIGTERM".into());
                Cmd::Kill { all: m.flag("all"), id: i, signal }
            }
            "delete" => Cmd::Delete { force: m.flag("force"), id: id() },
            "run" => Cmd::Run { create: create(&m, id())?, detach: m.flag("detach"), keep: m.flag("keep") },
            "exec" => {
                let Some(i) = pos.next() else {
                    return Err(Usage(
                        "the following required arguments were not provided:\n  <ID>".into(),
                        Some(name),
                    ));
                };
                let mut gids = Vec::new();
                for g in m.all("additional-gids") {
                    gids.push(g.parse().map_err(|e| {
                        Usage(format!("invalid value '{g}' for '--additional-gids <ADDITIONAL_GIDS>': {e}"), None)
                    })?);
                }
                Cmd::Exec {
                    process: m.path("process"),
                    tty: m.flag("tty"),
                    console_socket: m.path("console-socket"),
                    env: m.all("env"),
                    cwd: m.path("cwd"),
                    user: m.last("user"),
                    additional_gids: gids,
                    cap: m.all("cap"),
                    no_new_privs: m.flag("no-new-privs"),
                    detach: m.flag("detach"),
                    pid_file: m.path("pid-file"),
                    preserve_fds: m.num("preserve-fds")?.unwrap_or(0),
                    id: i,
                    args: pos.collect(),
                }
            }
            "ps" => {
                Cmd::Ps { format: m.last("format").unwrap_or_else(|| "table".into()), id: id(), ps_args: pos.collect() }
            }
            "list" => Cmd::List { format: m.last("format").unwrap_or_else(|| "table".into()), quiet: m.flag("quiet") },
            "pause" => Cmd::Pause { id: id() },
            "resume" => Cmd::Resume { id: id() },
            "update" => Cmd::Update {
                resources: m.path("resources"),
                memory: m.last("memory"),
                memory_reservation: m.last("memory-reservation"),
                memory_swap: m.last("memory-swap"),
                cpu_quota: m.num("cpu-quota")?,
                cpu_period: m.num("cpu-period")?,
                cpu_shares: m.num("cpu-shares")?,
                cpuset_cpus: m.last("cpuset-cpus"),
                cpuset_mems: m.last("cpuset-mems"),
                pids_limit: m.num("pids-limit")?,
                id: id(),
            },
            "events" => Cmd::Events {
                stats: m.flag("stats"),
                interval: m.last("interval").unwrap_or_else(|| "5s".into()),
                id: id(),
            },
            "features" => Cmd::Features,
            "spec" => Cmd::Spec {
                bundle: m.path("bundle").unwrap_or_else(|| PathBuf::from(".")),
                rootless: m.flag("rootless"),
            },
            "checkpoint" => Cmd::Checkpoint {
                criu: criu_options(&m),
                leave_running: m.flag("leave-running"),
                unsupported: unsupported(&m, CHECKPOINT),
                id: id(),
            },
            _ => Cmd::Restore {
                criu: criu_options(&m),
                bundle: m.path("bundle").unwrap_or_else(|| PathBuf::from(".")),
                detach: m.flag("detach"),
                pid_file: m.path("pid-file"),
                unsupported: unsupported(&m, RESTORE),
                id: id(),
            },
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn p(a: &[&str]) -> Cli {
            match parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()) {
                Ok(Parsed::Run(c)) => *c,
                _ => panic!("{a:?} did not parse"),
            }
        }

        #[test]
        fn options_anywhere() {
            let c = p(&["create", "x", "--bundle", "/b", "--root=/r", "--pid-file", "/p"]);
            assert_eq!(c.root, PathBuf::from("/r"));
            let Cmd::Create(a) = c.cmd else { panic!() };
            assert_eq!((a.id.as_str(), a.bundle.as_path()), ("x", std::path::Path::new("/b")));
            let c = p(&["--root", "/r", "run", "-d", "-b/b", "y"]);
            let Cmd::Run { create, detach, .. } = c.cmd else { panic!() };
            assert!(detach);
            assert_eq!((create.id.as_str(), create.bundle.to_str()), ("y", Some("/b")));
        }

        #[test]
        fn exec_args_are_verbatim() {
            let c = p(&["exec", "-t", "-e", "A=1", "--env=B=2", "id", "sh", "-c", "echo --root"]);
            let Cmd::Exec { tty, env, id, args, .. } = c.cmd else { panic!() };
            assert!(tty);
            assert_eq!(env, ["A=1", "B=2"]);
            assert_eq!(id, "id");
            assert_eq!(args, ["sh", "-c", "echo --root"]);
            let Cmd::Exec { args, .. } = p(&["exec", "id", "--", "ls", "-l"]).cmd else { panic!() };
            assert_eq!(args, ["ls", "-l"]);
        }

        /// Every command and option of runc's command line that issue 3 lists, options after
        /// the id as well as before.
        #[test]
        fn every_runc_option_parses() {
            let c = p(&[
                "--log",
                "/l",
                "--log-format",
                "json",
                "--debug",
                "--systemd-cgroup",
                "create",
                "id",
                "--console-socket",
                "/s",
                "--no-pivot",
                "--no-new-keyring",
                "--preserve-fds",
                "2",
                "-b",
                "/b",
            ]);
            assert_eq!((c.log.as_deref(), c.log_format.as_str()), (Some(std::path::Path::new("/l")), "json"));
            assert!(c.debug && c.systemd_cgroup);
            let Cmd::Create(a) = c.cmd else { panic!() };
            assert_eq!(a.console_socket.as_deref(), Some(std::path::Path::new("/s")));
            assert!(a.no_pivot && a.no_new_keyring);
            assert_eq!(a.preserve_fds, 2);
            let Cmd::Start { id } = p(&["start", "id"]).cmd else { panic!() };
            assert_eq!(id, "id");
            let Cmd::State { id } = p(&["state", "id"]).cmd else { panic!() };
            assert_eq!(id, "id");
            let Cmd::Kill { all, signal, .. } = p(&["kill", "id", "9", "-a"]).cmd else { panic!() };
            assert!(all);
            assert_eq!(signal, "9");
            let Cmd::Delete { force, .. } = p(&["delete", "id", "--force"]).cmd else { panic!() };
            assert!(force);
            let Cmd::Run { create, detach, keep } = p(&["run", "id", "--detach", "--keep", "--pid-file=/p"]).cmd else {
                panic!()
            };
            assert!(detach && keep);
            assert_eq!(create.pid_file.as_deref(), Some(std::path::Path::new("/p")));
            let Cmd::Exec {
                process,
                tty,
                console_socket,
                cwd,
                user,
                additional_gids,
                cap,
                no_new_privs,
                detach,
                pid_file,
                preserve_fds,
                ..
            } = p(&[
                "exec",
                "-p",
                "/proc.json",
                "-t",
                "--console-socket",
                "/s",
                "--cwd",
                "/w",
                "-u",
                "1:2",
                "-g",
                "3",
                "--cap",
                "CAP_KILL",
                "-c",
                "CAP_CHOWN",
                "--no-new-privs",
                "-d",
                "--pid-file",
                "/p",
                "--preserve-fds",
                "1",
                "id",
            ])
            .cmd
            else {
                panic!()
            };
            assert_eq!(process.as_deref(), Some(std::path::Path::new("/proc.json")));
            assert!(tty && no_new_privs && detach);
            assert_eq!(console_socket.as_deref(), Some(std::path::Path::new("/s")));
            assert_eq!(cwd.as_deref(), Some(std::path::Path::new("/w")));
            assert_eq!(user.as_deref(), Some("1:2"));
            assert_eq!(additional_gids, [3]);
            assert_eq!(cap, ["CAP_KILL", "CAP_CHOWN"]);
            assert_eq!(pid_file.as_deref(), Some(std::path::Path::new("/p")));
            assert_eq!(preserve_fds, 1);
            let Cmd::Ps { format, .. } = p(&["ps", "id", "--format", "json"]).cmd else { panic!() };
            let Cmd::Ps { ps_args, .. } = p(&["ps", "id", "--", "-o", "pid,comm"]).cmd else { panic!() };
            assert_eq!(ps_args, ["-o", "pid,comm"]);
            assert_eq!(format, "json");
            let Cmd::List { format, quiet } = p(&["list", "-f", "json", "-q"]).cmd else { panic!() };
            assert_eq!(format, "json");
            assert!(quiet);
            let Cmd::Pause { .. } = p(&["pause", "id"]).cmd else { panic!() };
            let Cmd::Resume { .. } = p(&["resume", "id"]).cmd else { panic!() };
            let Cmd::Update {
                resources,
                memory,
                memory_reservation,
                memory_swap,
                cpu_quota,
                cpu_period,
                cpu_shares,
                cpuset_cpus,
                cpuset_mems,
                pids_limit,
                id,
            } = p(&[
                "update",
                "id",
                "-r",
                "-",
                "--memory",
                "1m",
                "--memory-reservation",
                "2m",
                "--memory-swap",
                "3m",
                "--cpu-quota",
                "-1",
                "--cpu-period",
                "100000",
                "--cpu-shares",
                "512",
                "--cpuset-cpus",
                "0",
                "--cpuset-mems",
                "0",
                "--pids-limit",
                "10",
            ])
            .cmd
            else {
                panic!()
            };
            assert_eq!(resources.as_deref(), Some(std::path::Path::new("-")));
            assert_eq!(
                (memory.as_deref(), memory_reservation.as_deref(), memory_swap.as_deref()),
                (Some("1m"), Some("2m"), Some("3m"))
            );
            assert_eq!((cpu_quota, cpu_period, cpu_shares, pids_limit), (Some(-1), Some(100_000), Some(512), Some(10)));
            assert_eq!((cpuset_cpus.as_deref(), cpuset_mems.as_deref(), id.as_str()), (Some("0"), Some("0"), "id"));
            let Cmd::Events { stats, interval, .. } = p(&["events", "--stats", "--interval=1s", "id"]).cmd else {
                panic!()
            };
            assert!(stats);
            assert_eq!(interval, "1s");
            let Cmd::Features = p(&["features"]).cmd else { panic!() };
            let Cmd::Spec { bundle, rootless } = p(&["spec", "--rootless", "-b", "/b"]).cmd else { panic!() };
            assert!(rootless);
            assert_eq!(bundle, PathBuf::from("/b"));
            let Cmd::Checkpoint { criu, leave_running, unsupported, id } =
                p(&["checkpoint", "--image-path", "/i", "id", "--leave-running", "--manage-cgroups-mode=full"]).cmd
            else {
                panic!()
            };
            assert_eq!(
                (criu.image_path, id, leave_running, unsupported),
                (PathBuf::from("/i"), "id".into(), true, None)
            );
            assert_eq!(criu.manage_cgroups_mode.as_deref(), Some("full"));
            let Cmd::Checkpoint { unsupported, .. } = p(&["checkpoint", "--pre-dump", "id"]).cmd else { panic!() };
            assert_eq!(unsupported, Some("pre-dump"));
            let Cmd::Restore { criu, bundle, detach, unsupported, id, .. } =
                p(&["restore", "-d", "-b", "/b", "id"]).cmd
            else {
                panic!()
            };
            assert_eq!(
                (criu.image_path, bundle, detach, unsupported, id),
                (PathBuf::from("checkpoint"), PathBuf::from("/b"), true, None, "id".into())
            );
        }

        #[test]
        fn boolean_options_take_true_or_false() {
            let Cmd::Run { detach, .. } = p(&["run", "--detach=true", "x"]).cmd else { panic!() };
            assert!(detach);
            let Cmd::Run { detach, .. } = p(&["run", "--detach=false", "x"]).cmd else { panic!() };
            assert!(!detach);
            assert!(parse(&["run".to_string(), "--detach=maybe".to_string(), "x".to_string()]).is_err());
        }

        #[test]
        fn kill_defaults_and_errors() {
            let Cmd::Kill { all, signal, .. } = p(&["kill", "--all", "id"]).cmd else { panic!() };
            assert!(all);
            assert_eq!(signal, "SIGTERM");
            let bad = |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).is_err();
            assert!(bad(&["start"]));
            assert!(bad(&["frob"]));
            assert!(bad(&["delete", "--nope", "x"]));
            assert!(bad(&["create", "--preserve-fds", "x", "id"]));
            assert!(bad(&["state", "a", "b"]));
        }
    }
}

use cli::{Cli, Cmd, CreateArgs};

/// The CVE-2019-5736 re-exec (berth_runtime::sealed) as the first thing the process does: an
/// ELF constructor, which glibc calls with argc, argv and envp once the libraries are loaded,
/// before std's initialisation and `main`; none of that work is then done twice. `main` still
/// calls `ensure_sealed`, which finds the mark (or, if the early attempt failed, tries again and
/// reports why).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array")]
static SEAL_EARLY: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) = seal_early;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn seal_early(argc: libc::c_int, argv: *const *const libc::c_char, envp: *const *const libc::c_char) {
    // SAFETY: glibc passes the process's own argument and environment arrays; the process is
    // single threaded this early.
    unsafe {
        if argv.is_null() || envp.is_null() {
            return;
        }
        let wants = (1..argc.max(0) as usize).any(|i| {
            let a = std::ffi::CStr::from_ptr(*argv.add(i)).to_bytes();
            matches!(a, b"create" | b"run" | b"exec")
        });
        if wants {
            berth_runtime::sealed::reexec_sealed_raw(argv, envp);
        }
    }
}

fn main() {
    let wants_seal = std::env::args_os().skip(1).any(|a| a == "create" || a == "run" || a == "exec");
    if wants_seal && let Err(e) = berth_runtime::sealed::ensure_sealed() {
        eprintln!("berth-runtime: {e:#}");
        std::process::exit(1);
    }
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().unwrap_or_else(|a| a.to_string_lossy().into_owned()))
        .collect();
    let cli = match cli::parse(&args) {
        Ok(cli::Parsed::Run(c)) => *c,
        Ok(cli::Parsed::Print(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(cli::Usage(msg, on)) => {
            let usage = match on {
                Some(c) => format!("berth-runtime {c} [OPTIONS]"),
                None => "berth-runtime [OPTIONS] <COMMAND>".into(),
            };
            eprintln!("error: {msg}\n\nUsage: {usage}\n\nFor more information, try '--help'.");
            std::process::exit(2);
        }
    };
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            report(&cli, &e);
            1
        }
    };
    std::process::exit(code);
}

/// Errors go to stderr, and to --log in the format the caller asked for (containerd and
/// conmon read the last JSON line of that file).
fn report(cli: &Cli, e: &anyhow::Error) {
    let msg = format!("{e:#}");
    eprintln!("berth-runtime: {msg}");
    if let Some(p) = &cli.log
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p)
    {
        let line = if cli.log_format == "json" {
            serde_json::json!({"level": "error", "msg": msg, "time": state::now_rfc3339()}).to_string()
        } else {
            format!("time=\"{}\" level=error msg={:?}", state::now_rfc3339(), msg)
        };
        let _ = writeln!(f, "{line}");
    }
}

fn create_opts(cli: &Cli, a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        root: cli.root.clone(),
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        start: false,
    }
}

fn run(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: berth-runtime manages cgroupfs directly (drop the flag)");
    }
    let root = &cli.root;
    match &cli.cmd {
        Cmd::Create(a) => {
            container::create(&create_opts(cli, a))?;
        }
        Cmd::Start { id } => Container::load(root, id)?.start()?,
        Cmd::State { id } => {
            let c = Container::load(root, id)?;
            println!("{}", serde_json::to_string_pretty(&c.state.to_oci_json(c.status()))?);
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal)?;
            Container::load(root, id)?.kill(sig, *all)?;
        }
        Cmd::Delete { force, id } => match Container::load(root, id) {
            Ok(c) => c.delete(*force)?,
            Err(_) if *force && state::validate_id(id).is_ok() => {}
            Err(e) => return Err(e),
        },
        Cmd::Run { create, detach, keep } => return run_container(cli, create, *detach, *keep),
        Cmd::Exec {
            process,
            tty,
            console_socket,
            env,
            cwd,
            user,
            additional_gids,
            cap,
            no_new_privs,
            detach,
            pid_file,
            preserve_fds,
            id,
            args,
        } => {
            let c = Container::load(root, id)?;
            let spec = c.spec()?;
            let p = match process {
                Some(f) => {
                    let data = std::fs::read(f).with_context(|| format!("reading --process {}", f.display()))?;
                    berth_runtime::spec::parse::<Process>(&data)
                        .with_context(|| format!("parsing --process {}", f.display()))?
                }
                None => exec_process(&spec, args, env, cwd, user, additional_gids, cap, *no_new_privs, *tty)?,
            };
            let pid = c.exec(&p, console_socket.as_deref(), *preserve_fds)?;
            if let Some(pf) = pid_file {
                std::fs::write(pf, pid.to_string()).with_context(|| format!("writing --pid-file {}", pf.display()))?;
            }
            if *detach {
                return Ok(0);
            }
            return forward_and_wait(pid);
        }
        Cmd::Ps { format, id, ps_args } => {
            let c = Container::load(root, id)?;
            let pids = c.pids()?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                // runc's: the host's ps, cut to the container's processes.
                let (header, lines) = berth_runtime::process::host_ps(ps_args, &pids)?;
                println!("{header}");
                for l in lines {
                    println!("{l}");
                }
            }
        }
        Cmd::List { format, quiet } => {
            let all = container::list(root)?;
            if *quiet {
                for c in &all {
                    println!("{}", c.state.id);
                }
            } else if format == "json" {
                let v: Vec<_> = all.iter().map(|c| c.state.to_oci_json(c.status())).collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("{:<20} {:<8} {:<10} {:<40} CREATED", "ID", "PID", "STATUS", "BUNDLE");
                for c in &all {
                    let s = c.status();
                    let pid = if s == Status::Stopped { 0 } else { c.state.pid };
                    println!(
                        "{:<20} {:<8} {:<10} {:<40} {}",
                        c.state.id,
                        pid,
                        s,
                        c.state.bundle.display(),
                        c.state.created
                    );
                }
            }
        }
        Cmd::Pause { id } => Container::load(root, id)?.pause()?,
        Cmd::Resume { id } => Container::load(root, id)?.resume()?,
        Cmd::Update {
            resources,
            memory,
            memory_reservation,
            memory_swap,
            cpu_quota,
            cpu_period,
            cpu_shares,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
            id,
        } => {
            let c = Container::load(root, id)?;
            let res: LinuxResources = match resources {
                Some(f) => {
                    let data = if f.as_os_str() == "-" {
                        let mut v = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                        v
                    } else {
                        std::fs::read(f).with_context(|| format!("reading --resources {}", f.display()))?
                    };
                    serde_json::from_slice(&data).context("parsing --resources")?
                }
                None => {
                    let mut j = serde_json::json!({});
                    let mut mem = serde_json::Map::new();
                    if let Some(m) = memory {
                        mem.insert("limit".into(), parse_size(m)?.into());
                    }
                    if let Some(m) = memory_reservation {
                        mem.insert("reservation".into(), parse_size(m)?.into());
                    }
                    if let Some(m) = memory_swap {
                        mem.insert("swap".into(), parse_size(m)?.into());
                    }
                    if !mem.is_empty() {
                        j["memory"] = mem.into();
                    }
                    let mut cpu = serde_json::Map::new();
                    if let Some(v) = cpu_quota {
                        cpu.insert("quota".into(), (*v).into());
                    }
                    if let Some(v) = cpu_period {
                        cpu.insert("period".into(), (*v).into());
                    }
                    if let Some(v) = cpu_shares {
                        cpu.insert("shares".into(), (*v).into());
                    }
                    if let Some(v) = cpuset_cpus {
                        cpu.insert("cpus".into(), v.clone().into());
                    }
                    if let Some(v) = cpuset_mems {
                        cpu.insert("mems".into(), v.clone().into());
                    }
                    if !cpu.is_empty() {
                        j["cpu"] = cpu.into();
                    }
                    if let Some(p) = pids_limit {
                        j["pids"] = serde_json::json!({ "limit": p });
                    }
                    serde_json::from_value(j)?
                }
            };
            c.update(&res)?;
        }
        Cmd::Events { stats, interval, id } => {
            let c = Container::load(root, id)?;
            let cg = c.cgroup().context("container has no cgroup")?;
            let every = parse_duration(interval)?;
            let mut ooms = None;
            loop {
                if c.status() == Status::Stopped {
                    bail!("container {id} is not running");
                }
                let s = cg.stats()?;
                // Between two looks the OOM killer struck: runc's "oom" event first.
                if ooms.is_some_and(|o| s.oom_kills > o) {
                    println!("{}", serde_json::json!({"type": "oom", "id": id}));
                }
                ooms = Some(s.oom_kills);
                println!("{}", serde_json::json!({"type": "stats", "id": id, "data": runc_stats(&s)}));
                if *stats {
                    break;
                }
                std::thread::sleep(every);
            }
        }
        Cmd::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        Cmd::Spec { bundle, rootless } => {
            let p = bundle.join("config.json");
            if p.exists() {
                bail!("{} already exists; remove it first", p.display());
            }
            let mut spec = if *rootless { default_spec_rootless()? } else { Spec::default() };
            spec.set_hostname(Some("berth".into()));
            std::fs::write(&p, serde_json::to_string_pretty(&spec)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Cmd::Checkpoint { criu, leave_running, unsupported, id } => {
            if let Some(o) = unsupported {
                bail!("checkpoint --{o} is not supported by berth-runtime");
            }
            berth_runtime::criu::binary()?;
            Container::load(&cli.root, id)?.checkpoint(criu, *leave_running)?;
        }
        Cmd::Restore { criu, bundle, detach, pid_file, unsupported, id } => {
            if let Some(o) = unsupported {
                bail!("restore --{o} is not supported by berth-runtime");
            }
            berth_runtime::criu::binary()?;
            if !*detach {
                // The restored init is orphaned when criu exits: to us, so that we can wait.
                // SAFETY: a prctl on ourselves.
                unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            }
            let st = berth_runtime::criu::restore(&berth_runtime::criu::RestoreOptions {
                root: cli.root.clone(),
                id: id.clone(),
                bundle: bundle.clone(),
                pid_file: pid_file.clone(),
                criu: criu.clone(),
            })?;
            if !*detach {
                let c = Container { root: cli.root.clone(), state: st };
                let code = forward_and_wait(c.state.pid);
                c.delete(true)?;
                return code;
            }
        }
    }
    Ok(0)
}

/// `run`: create and start; unless detached, forward signals, wait, delete, and exit with the
/// container's code.
fn run_container(cli: &Cli, a: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    // Started by create itself (no exec socket round trip) unless poststart hooks need the
    // separate start: then the container is left created and started here.
    let opts = CreateOptions { start: true, ..create_opts(cli, a) };
    let (st, pty) = match container::create(&opts) {
        // A terminal and no console socket, in the foreground: the pty is ours, as runc does.
        Err(e) if !detach && a.console_socket.is_none() && format!("{e}").contains("--console-socket is required") => {
            let sock = std::env::temp_dir().join(format!("berth-runtime-tty-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&sock);
            let listener = std::os::unix::net::UnixListener::bind(&sock).context("making a console socket")?;
            let made = container::create(&CreateOptions { console_socket: Some(sock.clone()), ..opts });
            let _ = std::fs::remove_file(&sock);
            let st = made?;
            let (conn, _) = listener.accept().context("accepting the console socket")?;
            let (_, master) = berth_runtime::init::recv_with_fd(std::os::fd::AsRawFd::as_raw_fd(&conn))?;
            (st, Some(master.context("the container sent no pty")?))
        }
        r => (r?, None),
    };
    let c = Container { root: cli.root.clone(), state: st };
    if c.status() == Status::Created
        && let Err(e) = c.start()
    {
        let _ = c.delete(true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    if let Some(master) = &pty {
        berth_runtime::tty::relay(master, c.state.pid, true);
    }
    let code = forward_and_wait(c.state.pid)?;
    if !keep {
        c.delete(true)?;
    }
    Ok(code)
}

/// `events` data in runc's shape (its types/events.go): what the cgroup tells, by controller.
/// Block I/O is summed over devices (major and minor 0).
fn runc_stats(s: &berth_cgroups::Stats) -> serde_json::Value {
    serde_json::json!({
        "cpu": {"usage": {"total": s.cpu_usage_ns}, "throttling": {}},
        "memory": {
            "usage": {"limit": s.memory_limit.unwrap_or(u64::MAX), "usage": s.memory_usage, "max": s.memory_max_usage, "failcnt": 0},
            "raw": {"oom_kill": s.oom_kills},
        },
        "pids": {"current": s.pids_current, "limit": s.pids_limit.unwrap_or(0)},
        "blkio": {"ioServiceBytesRecursive": [
            {"major": 0, "minor": 0, "op": "Read", "value": s.io_read_bytes},
            {"major": 0, "minor": 0, "op": "Write", "value": s.io_write_bytes},
        ]},
        "hugetlb": {},
        "intel_rdt": {},
    })
}

/// Forwards the usual signals to `pid` until it exits; returns its exit code.
fn forward_and_wait(pid: i32) -> Result<i32> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set.thread_block()?;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(128 + libc::WTERMSIG(status));
            }
        } else if r < 0 {
            return Err(std::io::Error::last_os_error()).context("waiting for the container");
        }
        let sig = set.wait()?;
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn exec_process(
    spec: &Spec,
    args: &[String],
    env: &[String],
    cwd: &Option<PathBuf>,
    user: &Option<String>,
    gids: &[u32],
    caps: &[String],
    nnp: bool,
    tty: bool,
) -> Result<Process> {
    if args.is_empty() {
        bail!("exec needs a command (or --process FILE)");
    }
    let mut p = spec.process().clone().context("the container's config has no process")?;
    p.set_args(Some(args.to_vec()));
    p.set_terminal(Some(tty));
    // -e NAME=VALUE replaces the container's NAME (runc's), or adds it.
    let mut e = p.env().clone().unwrap_or_default();
    for kv in env {
        let name = kv.split_once('=').map_or(kv.as_str(), |(n, _)| n);
        e.retain(|old| old.split_once('=').map_or(old.as_str(), |(n, _)| n) != name);
        e.push(kv.clone());
    }
    p.set_env(Some(e));
    if let Some(c) = cwd {
        p.set_cwd(c.clone());
    }
    if let Some(u) = user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let mut usr = p.user().clone();
        usr.set_uid(uid.parse().context("--user takes uid[:gid] numbers")?);
        usr.set_gid(gid.parse().context("--user takes uid[:gid] numbers")?);
        p.set_user(usr);
    }
    if !gids.is_empty() {
        let mut usr = p.user().clone();
        usr.set_additional_gids(Some(gids.to_vec()));
        p.set_user(usr);
    }
    if !caps.is_empty() {
        let mut c = p.capabilities().clone().unwrap_or_default();
        for name in caps {
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::Value::String(name.to_uppercase()))
                    .with_context(|| format!("unknown capability {name}"))?;
            let mut b = c.bounding().clone().unwrap_or_default();
            b.insert(cap);
            c.set_bounding(Some(b));
            let mut e = c.effective().clone().unwrap_or_default();
            e.insert(cap);
            c.set_effective(Some(e));
            let mut pm = c.permitted().clone().unwrap_or_default();
            pm.insert(cap);
            c.set_permitted(Some(pm));
        }
        p.set_capabilities(Some(c));
    }
    if nnp {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => bail!("invalid duration {s:?}"),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn default_spec_rootless() -> Result<Spec> {
    let mut spec = Spec::default();
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mut j = serde_json::to_value(&spec)?;
    let linux = &mut j["linux"];
    let ns: Vec<serde_json::Value> = linux["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["type"] != "network")
        .chain([serde_json::json!({"type": "user"})])
        .collect();
    linux["namespaces"] = ns.into();
    linux["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    linux["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    linux.as_object_mut().map(|o| o.remove("resources"));
    // Without a network namespace sysfs cannot be mounted; bind the host's read-only.
    if let Some(mounts) = j["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" {
                *m = serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| !o.as_str().is_some_and(|s| s.starts_with("gid=")));
            }
        }
    }
    spec = serde_json::from_value(j)?;
    Ok(spec)
}

fn features() -> serde_json::Value {
    let caps: Vec<&str> = berth_runtime::caps::NAMES.to_vec();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": berth_runtime::mountopts::KNOWN,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": berth_runtime::seccomp::Abi::NATIVE.is_some(),
                "actions": berth_runtime::seccomp::ACTIONS,
                "operators": berth_runtime::seccomp::OPERATORS,
                "archs": berth_runtime::seccomp::Abi::NATIVE.map(|a| a.arch_names()).unwrap_or_default(),
                "knownFlags": berth_runtime::seccomp::FLAGS,
                "supportedFlags": berth_runtime::seccomp::supported_flags()
            },
            "apparmor": {"enabled": std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists()},
            "selinux": {"enabled": std::path::Path::new("/sys/fs/selinux/enforce").exists()},
            "intelRdt": {"enabled": false},
            "memoryPolicy": {
                "modes": berth_runtime::procattr::MEMPOLICY_MODES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                "flags": berth_runtime::procattr::MEMPOLICY_FLAGS
            },
            "mountExtensions": {"idmap": {"enabled": berth_runtime::rootfs::idmap_supported()}},
            "netDevices": {"enabled": false}
        },
        "annotations": {
            "org.opencontainers.runc.version": "berth-runtime",
            "io.github.berth.runtime.version": env!("CARGO_PKG_VERSION"),
            // Fields the features schema has no place for: what this runtime does with them.
            "io.github.berth.runtime.process": "ioPriority,scheduler,execCPUAffinity",
            "io.github.berth.runtime.personality": format!("LINUX,LINUX32;flags:{}", berth_runtime::procattr::personality_flag_names().join(",")),
            "io.github.berth.runtime.cgroup.v2.devices": "ebpf"
        }
    })
}
