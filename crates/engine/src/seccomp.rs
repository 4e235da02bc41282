//! The default seccomp profile (what Docker's default allows, written as our own lists) and
//! `--security-opt seccomp=FILE` in Docker's profile format (`names`, `includes`/`excludes` by
//! capability and architecture), both turned into the OCI `linux.seccomp` the runtime takes.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// Syscalls every container may make.
const ALLOWED: &str = "accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32 \
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep \
clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 \
epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit \
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 \
fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat \
fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait \
futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid \
getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom \
getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt \
get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 \
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set \
io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 \
lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise \
map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall \
mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend \
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap \
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open \
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv \
preadv2 prlimit64 process_mrelease process_vm_readv process_vm_writev pselect6 pselect6_time64 \
ptrace pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg \
recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq \
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait \
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max \
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity \
sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop \
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 \
setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 \
setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area \
set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 \
sigprocmask sigreturn socket socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat \
sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime \
timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime \
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime utimensat \
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev arch_prctl modify_ldt";

/// Syscalls a capability brings with it.
const BY_CAP: &[(&str, &str)] = &[
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    (
        "CAP_SYS_ADMIN",
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr move_mount \
         open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog umount umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    // ptrace and process_vm_* are every container's (Docker's, on kernels since 4.8, whose
    // ptrace checks are enough); these reach into other processes without those checks.
    ("CAP_SYS_PTRACE", "kcmp pidfd_getfd process_madvise"),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    ("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    ("CAP_SYS_NICE", "get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// Namespace flags a process without CAP_SYS_ADMIN may not pass to clone.
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;

fn names(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// The default profile for a container with `caps`, as OCI `linux.seccomp`.
pub fn default_profile(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut allow: Vec<&str> = names(ALLOWED);
    for (cap, calls) in BY_CAP {
        if has(cap) {
            allow.extend(names(calls));
        }
    }
    allow.sort_unstable();
    allow.dedup();
    let mut syscalls = vec![json!({"names": allow, "action": "SCMP_ACT_ALLOW"})];
    // personality(2) only for the harmless personas (Linux, 32-bit, UNAME26 and the query).
    for persona in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]}));
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without new namespaces; clone3 cannot be filtered by flags, so it says ENOSYS
        // and libc falls back to clone.
        syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": arches(),
        "syscalls": syscalls,
    })
}

fn arches() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec![],
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<DockerRule>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerRule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

/// A profile file in Docker's format (or plain OCI `linux.seccomp`), resolved for `caps`.
pub fn from_file(bytes: &[u8], caps: &[String]) -> Result<Value> {
    let p: DockerProfile =
        serde_json::from_slice(bytes).context("the seccomp profile is not valid JSON in Docker's or the OCI format")?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let native = arches().first().copied().unwrap_or("");
    let mut architectures = p.architectures.clone();
    for m in &p.arch_map {
        if m.architecture == native {
            architectures.push(m.architecture.clone());
            architectures.extend(m.sub_architectures.iter().cloned());
        }
    }
    let has = |c: &String| caps.contains(c);
    let mut syscalls = Vec::new();
    for r in p.syscalls {
        let inc = (r.includes.caps.is_empty() || r.includes.caps.iter().all(has))
            && (r.includes.arches.is_empty() || r.includes.arches.iter().any(|a| a == arch));
        let exc = r.excludes.caps.iter().any(has) || r.excludes.arches.iter().any(|a| a == arch);
        if !inc || exc {
            continue;
        }
        let mut names = r.names;
        names.extend(r.name);
        if names.is_empty() {
            bail!("seccomp profile: a rule without syscall names");
        }
        let mut rule = json!({"names": names, "action": r.action});
        if let Some(a) = r.args.filter(|a| !a.is_null()) {
            rule["args"] = a;
        }
        if let Some(e) = r.errno_ret {
            rule["errnoRet"] = json!(e);
        }
        syscalls.push(rule);
    }
    let mut out = json!({"defaultAction": p.default_action, "architectures": architectures, "syscalls": syscalls});
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    if !p.flags.is_empty() {
        out["flags"] = json!(p.flags);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_follows_capabilities() {
        let base = default_profile(&[]);
        let allowed = base["syscalls"][0]["names"].as_array().unwrap();
        let has = |v: &[Value], n: &str| v.iter().any(|x| x == n);
        assert!(has(allowed, "read") && has(allowed, "execve"));
        assert!(!has(allowed, "mount") && !has(allowed, "unshare") && !has(allowed, "reboot"));
        let admin = default_profile(&["CAP_SYS_ADMIN".into()]);
        assert!(has(admin["syscalls"][0]["names"].as_array().unwrap(), "mount"));
        assert_eq!(base["defaultAction"], "SCMP_ACT_ERRNO");
        // Reaching into other processes: ptrace's checks for everyone, the rest with
        // CAP_SYS_PTRACE only (Docker's profile).
        assert!(has(allowed, "ptrace") && has(allowed, "process_vm_readv") && has(allowed, "name_to_handle_at"));
        for n in ["kcmp", "pidfd_getfd", "process_madvise"] {
            assert!(!has(allowed, n), "{n}");
        }
        let tracer = default_profile(&["CAP_SYS_PTRACE".into()]);
        assert!(has(tracer["syscalls"][0]["names"].as_array().unwrap(), "pidfd_getfd"));
    }

    #[test]
    fn docker_format_files_resolve_includes() {
        let f = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["chmod"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"excludes":{"caps":["CAP_FOWNER"]}}]}"#;
        let p = from_file(f, &[]).unwrap();
        assert_eq!(p["syscalls"].as_array().unwrap().len(), 2);
        let p = from_file(f, &["CAP_SYS_ADMIN".into(), "CAP_FOWNER".into()]).unwrap();
        let names: Vec<&str> =
            p["syscalls"].as_array().unwrap().iter().map(|r| r["names"][0].as_str().unwrap()).collect();
        assert_eq!(names, ["read", "mount"]);
        assert!(from_file(b"not json", &[]).is_err());
    }
}
