//! linux.seccomp: our own compiler from the OCI profile to a classic BPF program, and its
//! installation with seccomp(SECCOMP_SET_MODE_FILTER). No libseccomp.
//!
//! The filter is compiled in the runtime before it forks ([`for_spec`]) and installed by the
//! container process as one of its last steps ([`Filter::install`], called from
//! `init::finish_and_exec`), so the child only makes the seccomp(2) call.
//!
//! Program shape (the same for every profile):
//!
//! ```text
//!   ld  arch
//!   jeq AUDIT_ARCH_X86_64 -> x86_64   (one test per architecture the filter covers)
//!   jeq AUDIT_ARCH_I386   -> i386     (only if SCMP_ARCH_X86 is listed)
//!   ret KILL_PROCESS                   (any other architecture: the "bad arch" action)
//! x86_64:
//!   ld  nr
//!   binary search over number ranges: each range returns an action, goes to the argument
//!   checks of one syscall, or (nr >= 0x40000000) goes to the x32 search (if SCMP_ARCH_X32 is
//!   listed) or to KILL_PROCESS
//! argument checks of one syscall: its rules in profile order; the first whose conditions all
//!   hold returns its action, and when none holds the default action is returned
//! ```
//!
//! Semantics follow runc + libseccomp where the spec leaves room:
//! - the native architecture is always covered; `architectures` adds others. Architectures
//!   the host cannot run (e.g. SCMP_ARCH_PPC64LE on x86_64) never reach the filter and are
//!   ignored; SCMP_ARCH_ARM on aarch64 has no table here and is killed as a bad arch. The
//!   bad-arch action kills the process (libseccomp's default kills the thread, which for a
//!   multi-threaded program only hides the problem);
//! - syscall names unknown for an architecture are skipped (profiles name syscalls that
//!   older kernels or other architectures lack);
//! - rules whose action equals the default action are dropped (libseccomp refuses them and
//!   runc skips them);
//! - the conditions of one rule are ANDed, except when two of them test the same argument:
//!   then, as runc does, every condition becomes a rule of its own (ORed);
//! - errnoRet defaults to EPERM for SCMP_ACT_ERRNO and SCMP_ACT_TRACE and is ignored for the
//!   other actions;
//! - arguments are always compared as full 64-bit values (for i386 the kernel zero-extends
//!   them, so a value above 32 bits simply never matches; x32 passes 64-bit registers, so the
//!   high half is checked too instead of ignored as libseccomp does);
//! - SCMP_ACT_NOTIFY: the filter goes in with SECCOMP_FILTER_FLAG_NEW_LISTENER, and the
//!   listener fd goes to the agent at `listenerPath` (a unix socket) with the container
//!   process state (`listenerMetadata` in it) as JSON, in one message ([`Agent`]): the init
//!   sends it itself (connected before it leaves the host's mount namespace), `exec`'s process
//!   hands it to the runtime, which forwards it. That send happens after the filter is in
//!   place, so sendmsg cannot be a NOTIFY rule, nor can the default action be NOTIFY;
//!   SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is passed on.
//!
//! The syscall tables were generated from Linux 6.1's uapi headers (x86_64, i386, x32) and
//! the libc crate's aarch64 constants, cross-checked against libc, plus the numbers added up
//! to Linux 6.17 (451-469 are the same on every architecture here; uretprobe is x86_64 only).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use anyhow::{Result, bail};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec};

/// Return values of a seccomp filter (seccomp.h).
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// What a syscall from an architecture the filter does not cover gets.
pub const RET_BAD_ARCH: u32 = RET_KILL_PROCESS;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Classic BPF opcodes used by the filter.
pub const BPF_LD_W_ABS: u16 = 0x20;
pub const BPF_ALU_AND_K: u16 = 0x54;
pub const BPF_JA: u16 = 0x05;
pub const BPF_JEQ_K: u16 = 0x15;
pub const BPF_JGT_K: u16 = 0x25;
pub const BPF_JGE_K: u16 = 0x35;
pub const BPF_RET_K: u16 = 0x06;
/// The kernel's limit on a program's length.
pub const BPF_MAXINSNS: usize = 4096;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg(index: usize, high: bool) -> u32 {
    let base = 16 + 8 * index as u32;
    if high == cfg!(target_endian = "little") { base + 4 } else { base }
}

const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
const FLAG_NEW_LISTENER: u32 = 8;
const FLAG_TSYNC_ESRCH: u32 = 16;
const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

/// One `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());

/// A syscall ABI with its own numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Abi {
    X86_64,
    X32,
    I386,
    Aarch64,
}

impl Abi {
    /// The host's own ABI, or None where berth-runtime has no syscall table.
    pub const NATIVE: Option<Abi> = if cfg!(target_arch = "x86_64") {
        Some(Abi::X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(Abi::Aarch64)
    } else {
        None
    };

    fn table(self) -> &'static str {
        match self {
            Abi::X86_64 => X86_64,
            Abi::X32 => X32,
            Abi::I386 => I386,
            Abi::Aarch64 => AARCH64,
        }
    }

    /// The number of `name` in this ABI (with the x32 bit for x32).
    pub fn syscall(self, name: &str) -> Option<u32> {
        let nr = *self.index().get(name)?;
        Some(if self == Abi::X32 { nr | X32_SYSCALL_BIT } else { nr })
    }

    /// The table as a map, built once per process: a profile names each of several hundred
    /// syscalls for up to three ABIs, and scanning the text for each was a tenth of a start.
    fn index(self) -> &'static HashMap<&'static str, u32> {
        static MAPS: [OnceLock<HashMap<&'static str, u32>>; 4] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
        MAPS[self as usize].get_or_init(|| {
            let mut it = self.table().split_ascii_whitespace();
            let mut map = HashMap::new();
            while let (Some(n), Some(nr)) = (it.next(), it.next()) {
                if let Ok(nr) = nr.parse() {
                    map.entry(n).or_insert(nr);
                }
            }
            map
        })
    }

    fn audit_arch(self) -> u32 {
        match self {
            Abi::X86_64 | Abi::X32 => AUDIT_ARCH_X86_64,
            Abi::I386 => AUDIT_ARCH_I386,
            Abi::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// The ABI an `architectures` entry means on a host whose native ABI is `native`; None
    /// for architectures this host cannot run (or has no table for).
    fn for_arch(arch: Arch, native: Abi) -> Option<Abi> {
        match (native, arch) {
            (n, Arch::ScmpArchNative) => Some(n),
            (Abi::X86_64, Arch::ScmpArchX86_64) => Some(Abi::X86_64),
            (Abi::X86_64, Arch::ScmpArchX86) => Some(Abi::I386),
            (Abi::X86_64, Arch::ScmpArchX32) => Some(Abi::X32),
            (Abi::Aarch64, Arch::ScmpArchAarch64) => Some(Abi::Aarch64),
            _ => None,
        }
    }

    /// The OCI names of the architectures a host with this native ABI can filter.
    pub fn arch_names(self) -> &'static [&'static str] {
        match self {
            Abi::X86_64 | Abi::X32 | Abi::I386 => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            Abi::Aarch64 => &["SCMP_ARCH_AARCH64"],
        }
    }
}

/// The actions, operators and flags berth-runtime implements (for `features`).
pub const ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];
pub const OPERATORS: &[&str] =
    &["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"];
pub const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// The flags of [`FLAGS`] this kernel accepts: seccomp(SET_MODE_FILTER, flag, NULL) fails
/// with EFAULT (not EINVAL) for a known flag, without installing anything.
pub fn supported_flags() -> Vec<&'static str> {
    [
        (FLAGS[0], FLAG_TSYNC),
        (FLAGS[1], FLAG_SPEC_ALLOW),
        (FLAGS[2], FLAG_LOG),
        (FLAGS[3], FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV),
    ]
    .into_iter()
    .filter(|(_, f)| {
        // SAFETY: a NULL program makes the kernel fail with EFAULT before installing anything.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                *f as libc::c_ulong,
                std::ptr::null::<libc::sock_fprog>(),
            )
        };
        rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
    })
    .map(|(n, _)| n)
    .collect()
}

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    insns: Vec<Insn>,
    flags: u32,
    skipped: Vec<String>,
    listener: Option<Listener>,
}

/// Where the listener of a filter with NOTIFY rules goes.
#[derive(Debug, Clone)]
pub struct Listener {
    pub path: std::path::PathBuf,
    pub metadata: String,
}

impl Filter {
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// SECCOMP_FILTER_FLAG_* bits passed to seccomp(2).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Syscall names of the profile that no covered architecture knows (skipped).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The agent a filter with NOTIFY rules hands its listener to.
    pub fn listener(&self) -> Option<&Listener> {
        self.listener.as_ref()
    }

    /// Installs the filter on the calling thread. Needs no_new_privs or CAP_SYS_ADMIN. Makes
    /// no allocation unless it fails. Returns the listener fd of a filter with NOTIFY rules.
    pub fn install(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        let prog = libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) with a program that lives for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc >= 0 {
            if self.flags & FLAG_NEW_LISTENER != 0 {
                // SAFETY: with NEW_LISTENER seccomp(2) returns a new fd (close-on-exec).
                return Ok(Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(rc as libc::c_int) }));
            }
            return Ok(None);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EACCES) => {
                bail!("linux.seccomp: installing the filter needs process.noNewPrivileges or CAP_SYS_ADMIN: {e}")
            }
            Some(libc::EINVAL) => bail!(
                "linux.seccomp: the kernel refused the filter ({} instructions, flags {:#x}; an unsupported flag?): {e}",
                self.insns.len(),
                self.flags
            ),
            _ => bail!("linux.seccomp: installing the filter: {e}"),
        }
    }
}

/// Where a listener fd goes once the filter is in place: the seccomp agent (a connected unix
/// socket and the container process state to send with the fd), or the runtime (`exec`'s
/// process hands it to the runtime, which forwards it).
pub struct Agent {
    sock: std::os::fd::OwnedFd,
    msg: Vec<u8>,
}

impl Agent {
    /// Connects to the agent at `l.path`; the message is the container process state of the
    /// process `pid` (host pid) of the container in `state` (the spec's state JSON).
    pub fn connect(l: &Listener, pid: i32, state: serde_json::Value) -> Result<Agent> {
        let sock = std::os::unix::net::UnixStream::connect(&l.path).map_err(|e| {
            anyhow::anyhow!("linux.seccomp.listenerPath: connecting to the agent at {}: {e}", l.path.display())
        })?;
        let msg = serde_json::to_vec(&serde_json::json!({
            "ociVersion": state["ociVersion"],
            "fds": ["seccompFd"],
            "pid": pid,
            "metadata": l.metadata,
            "state": state,
        }))?;
        Ok(Agent { sock: sock.into(), msg })
    }

    /// Sends `msg` with the listener over an already connected socket (to the runtime).
    pub fn via(sock: std::os::fd::OwnedFd, msg: &[u8]) -> Agent {
        Agent { sock, msg: msg.to_vec() }
    }

    /// Sends the message with `listener` as SCM_RIGHTS, in one sendmsg and without allocating
    /// (the filter is in place: nothing but this call may be needed).
    pub fn send(&self, listener: std::os::fd::RawFd) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a msghdr over our message and a stack control buffer sized and aligned for
        // one fd, filled through the CMSG macros.
        unsafe {
            let mut control = [0u64; 4];
            let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
            debug_assert!(space <= std::mem::size_of_val(&control));
            let mut iov = libc::iovec { iov_base: self.msg.as_ptr() as *mut libc::c_void, iov_len: self.msg.len() };
            let mut mh: libc::msghdr = std::mem::zeroed();
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = control.as_mut_ptr().cast();
            mh.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), listener);
            if libc::sendmsg(self.sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        Ok(())
    }
}

/// The compiled filter of a spec's linux.seccomp, if it has one.
pub fn for_spec(spec: &Spec) -> Result<Option<Filter>> {
    spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).map(compile).transpose()
}

/// Compiles a profile for this host.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter> {
    match Abi::NATIVE {
        Some(native) => compile_for(s, native),
        None => bail!("linux.seccomp: berth-runtime has no syscall table for this architecture"),
    }
}

#[derive(Debug, Clone, Copy)]
struct Cond {
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

#[derive(Debug, Clone)]
struct Rule {
    action: u32,
    conds: Vec<Cond>,
}

fn action_value(a: LinuxSeccompAction, errno_ret: Option<u32>, errno_field: &str) -> Result<u32> {
    use LinuxSeccompAction::*;
    let data = || -> Result<u32> {
        match errno_ret {
            None => Ok(libc::EPERM as u32),
            Some(e) if e <= 0xffff => Ok(e),
            Some(e) => bail!("{errno_field}: {e} is out of range (at most 65535)"),
        }
    };
    Ok(match a {
        ScmpActKill | ScmpActKillThread => RET_KILL_THREAD,
        ScmpActKillProcess => RET_KILL_PROCESS,
        ScmpActTrap => RET_TRAP,
        ScmpActErrno => RET_ERRNO | data()?,
        ScmpActTrace => RET_TRACE | data()?,
        ScmpActLog => RET_LOG,
        ScmpActAllow => RET_ALLOW,
        ScmpActNotify => RET_USER_NOTIF,
    })
}

/// Compiles a profile for a host whose native ABI is `native`.
pub fn compile_for(s: &LinuxSeccomp, native: Abi) -> Result<Filter> {
    let default = action_value(s.default_action(), s.default_errno_ret(), "linux.seccomp.defaultErrnoRet")?;
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
        };
    }
    let mut abis = vec![native];
    for a in s.architectures().iter().flatten() {
        if let Some(abi) = Abi::for_arch(*a, native)
            && !abis.contains(&abi)
        {
            abis.push(abi);
        }
    }
    abis.sort();

    // Rules per ABI and syscall number, in profile order.
    let mut rules: BTreeMap<Abi, BTreeMap<u32, Vec<Rule>>> = abis.iter().map(|a| (*a, BTreeMap::new())).collect();
    let mut skipped = Vec::new();
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let action = action_value(sc.action(), sc.errno_ret(), &format!("{field}.errnoRet"))?;
        let mut conds = Vec::new();
        let mut seen = [0u32; 6];
        for (j, a) in sc.args().iter().flatten().enumerate() {
            if a.index() > 5 {
                bail!("{field}.args[{j}].index: {} is out of range (a syscall has arguments 0 to 5)", a.index());
            }
            seen[a.index()] += 1;
            conds.push(Cond { index: a.index(), op: a.op(), value: a.value(), value_two: a.value_two().unwrap_or(0) });
        }
        for n in sc.names() {
            if n.is_empty() {
                bail!("{field}.names: an empty syscall name");
            }
        }
        if action == default {
            continue;
        }
        let entry: Vec<Rule> = if seen.iter().any(|c| *c > 1) {
            conds.iter().map(|c| Rule { action, conds: vec![*c] }).collect()
        } else {
            vec![Rule { action, conds }]
        };
        for n in sc.names() {
            let mut known = false;
            for (abi, per_nr) in rules.iter_mut() {
                if let Some(nr) = abi.syscall(n) {
                    known = true;
                    per_nr.entry(nr).or_default().extend(entry.iter().cloned());
                }
            }
            if !known && !skipped.contains(n) {
                skipped.push(n.clone());
            }
        }
    }

    let mut e = Emitter::default();
    let x32_entry = match rules.get(&Abi::X32) {
        Some(r) => Target::Label(e.abi_tree(r, default, None)),
        None => Target::Ret(RET_BAD_ARCH),
    };
    let mut arch_entries: Vec<(u32, Label)> = Vec::new();
    for (abi, per_nr) in &rules {
        let entry = match abi {
            Abi::X32 => continue,
            Abi::X86_64 => e.abi_tree(per_nr, default, Some((X32_SYSCALL_BIT, x32_entry))),
            _ => e.abi_tree(per_nr, default, None),
        };
        arch_entries.push((abi.audit_arch(), e.fall(BPF_LD_W_ABS, OFF_NR, entry)));
    }
    let mut next = e.ret(RET_BAD_ARCH);
    for (arch, entry) in arch_entries.into_iter().rev() {
        next = e.jump(BPF_JEQ_K, arch, entry, next);
    }
    e.fall(BPF_LD_W_ABS, OFF_ARCH, next);
    let mut insns = e.rev;
    insns.reverse();
    if insns.len() > BPF_MAXINSNS {
        bail!(
            "linux.seccomp: the profile compiles to {} BPF instructions, more than the kernel's limit of {BPF_MAXINSNS}",
            insns.len()
        );
    }
    let notify = default == RET_USER_NOTIF
        || rules.values().flat_map(|per_nr| per_nr.values()).flatten().any(|r| r.action == RET_USER_NOTIF);
    let listener = if notify {
        if default == RET_USER_NOTIF {
            bail!(
                "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY is not supported as the default (berth-runtime hands the listener to the agent with sendmsg once the filter is in place)"
            );
        }
        let sendmsg = native.syscall("sendmsg");
        let blocked = rules.get(&native).and_then(|r| sendmsg.and_then(|n| r.get(&n)));
        if blocked.is_some_and(|r| r.iter().any(|r| r.action == RET_USER_NOTIF)) {
            bail!(
                "linux.seccomp.syscalls: SCMP_ACT_NOTIFY on sendmsg is not supported (berth-runtime hands the listener to the agent with it once the filter is in place)"
            );
        }
        let Some(path) = s.listener_path().clone().filter(|p| !p.as_os_str().is_empty()) else {
            bail!("linux.seccomp.listenerPath is required with SCMP_ACT_NOTIFY");
        };
        flags |= FLAG_NEW_LISTENER;
        if flags & FLAG_TSYNC != 0 {
            // TSYNC with a listener needs ESRCH reporting (as libseccomp sets it).
            flags |= FLAG_TSYNC_ESRCH;
        }
        Some(Listener { path, metadata: s.listener_metadata().clone().unwrap_or_default() })
    } else {
        // Only meaningful with a listener.
        flags &= !FLAG_WAIT_KILLABLE_RECV;
        None
    };
    Ok(Filter { insns, flags, skipped, listener })
}

/// Where a jump goes: a return of this value (placed wherever is near), or an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ret(u32),
    Label(Label),
}

/// An instruction's position counted from the end of the program.
type Label = usize;

/// Builds the program backwards, so that every jump target is known when the jump is made
/// and jumps farther than a conditional jump's 8-bit offset go through a `ja` (or a copy of
/// the `ret` they aim at) placed next to them.
#[derive(Default)]
struct Emitter {
    rev: Vec<Insn>,
    rets: HashMap<u32, Label>,
}

impl Emitter {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) -> Label {
        self.rev.push(Insn { code, jt, jf, k });
        self.rev.len() - 1
    }

    /// The offset a jump placed next would need to reach `l`.
    fn dist(&self, l: Label) -> usize {
        self.rev.len() - 1 - l
    }

    fn ret(&mut self, v: u32) -> Label {
        if let Some(&l) = self.rets.get(&v) {
            return l;
        }
        let l = self.push(BPF_RET_K, 0, 0, v);
        self.rets.insert(v, l);
        l
    }

    fn target(&mut self, t: Target) -> Label {
        match t {
            Target::Ret(v) => self.ret(v),
            Target::Label(l) => l,
        }
    }

    /// A one-instruction way to `to` placed next: a copy of the `ret` it is, or a `ja`.
    fn near(&mut self, to: Label) -> Label {
        let i = self.rev[to];
        if i.code == BPF_RET_K {
            let l = self.push(BPF_RET_K, 0, 0, i.k);
            self.rets.insert(i.k, l);
            l
        } else {
            let d = self.dist(to) as u32;
            self.push(BPF_JA, 0, 0, d)
        }
    }

    /// An instruction that falls through to `next`.
    fn fall(&mut self, code: u16, k: u32, next: Label) -> Label {
        if next + 1 != self.rev.len() {
            self.near(next);
        }
        self.push(code, 0, 0, k)
    }

    /// `if (A <op> k) goto jt else goto jf`.
    fn jump(&mut self, code: u16, k: u32, mut jt: Label, mut jf: Label) -> Label {
        if jt == jf {
            return jt;
        }
        loop {
            if self.dist(jt) > 255 {
                jt = self.near(jt);
            } else if self.dist(jf) > 255 {
                jf = self.near(jf);
            } else {
                break;
            }
        }
        let (t, f) = (self.dist(jt) as u8, self.dist(jf) as u8);
        self.push(code, t, f, k)
    }

    /// Checks one condition on the (64-bit) argument: goes to `pass` or `fail`.
    fn cond(&mut self, c: &Cond, pass: Label, fail: Label) -> Label {
        use LinuxSeccompOperator::*;
        let (lo, hi) = (off_arg(c.index, false), off_arg(c.index, true));
        let (vh, vl) = ((c.value >> 32) as u32, c.value as u32);
        match c.op {
            ScmpCmpEq => {
                let l = self.jump(BPF_JEQ_K, vl, pass, fail);
                let l = self.fall(BPF_LD_W_ABS, lo, l);
                let h = self.jump(BPF_JEQ_K, vh, l, fail);
                self.fall(BPF_LD_W_ABS, hi, h)
            }
            ScmpCmpNe => {
                let l = self.jump(BPF_JEQ_K, vl, fail, pass);
                let l = self.fall(BPF_LD_W_ABS, lo, l);
                let h = self.jump(BPF_JEQ_K, vh, l, pass);
                self.fall(BPF_LD_W_ABS, hi, h)
            }
            ScmpCmpGt | ScmpCmpGe => {
                // hi > vh: pass; hi == vh: decided by the low half; hi < vh: fail.
                let l = self.jump(if c.op == ScmpCmpGt { BPF_JGT_K } else { BPF_JGE_K }, vl, pass, fail);
                let l = self.fall(BPF_LD_W_ABS, lo, l);
                let eq = self.jump(BPF_JEQ_K, vh, l, fail);
                let h = self.jump(BPF_JGT_K, vh, pass, eq);
                self.fall(BPF_LD_W_ABS, hi, h)
            }
            ScmpCmpLt | ScmpCmpLe => {
                // hi > vh: fail; hi == vh: decided by the low half; hi < vh: pass.
                let l = if c.op == ScmpCmpLt {
                    self.jump(BPF_JGE_K, vl, fail, pass)
                } else {
                    self.jump(BPF_JGT_K, vl, fail, pass)
                };
                let l = self.fall(BPF_LD_W_ABS, lo, l);
                let eq = self.jump(BPF_JEQ_K, vh, l, pass);
                let h = self.jump(BPF_JGT_K, vh, fail, eq);
                self.fall(BPF_LD_W_ABS, hi, h)
            }
            ScmpCmpMaskedEq => {
                // (arg & value) == valueTwo.
                let (mh, ml) = ((c.value >> 32) as u32, c.value as u32);
                let (wh, wl) = ((c.value_two >> 32) as u32, c.value_two as u32);
                let l = self.jump(BPF_JEQ_K, wl, pass, fail);
                let l = self.fall(BPF_ALU_AND_K, ml, l);
                let l = self.fall(BPF_LD_W_ABS, lo, l);
                if mh == 0 && wh == 0 {
                    return l;
                }
                let h = self.jump(BPF_JEQ_K, wh, l, fail);
                let h = self.fall(BPF_ALU_AND_K, mh, h);
                self.fall(BPF_LD_W_ABS, hi, h)
            }
        }
    }

    /// The rules of one syscall: the first that matches returns its action.
    fn rules(&mut self, rules: &[Rule], default: u32) -> Target {
        if let Some(r) = rules.first()
            && r.conds.is_empty()
        {
            return Target::Ret(r.action);
        }
        let mut next = self.ret(default);
        for r in rules.iter().rev() {
            let mut l = self.ret(r.action);
            for c in r.conds.iter().rev() {
                l = self.cond(c, l, next);
            }
            next = l;
        }
        Target::Label(next)
    }

    /// The search over syscall numbers of one ABI, with A = nr. `tail` sends every number
    /// from its start on to its target (the x32 numbers of the x86_64 ABI).
    fn abi_tree(&mut self, per_nr: &BTreeMap<u32, Vec<Rule>>, default: u32, tail: Option<(u32, Target)>) -> Label {
        let miss = Target::Ret(default);
        let mut ranges: Vec<(u32, Target)> = Vec::new();
        let mut set = |start: u32, t: Target| {
            if ranges.last().is_some_and(|l| l.0 == start) {
                ranges.pop();
            }
            if ranges.last().map(|l| l.1) != Some(t) {
                ranges.push((start, t));
            }
        };
        set(0, miss);
        let mut targets = Vec::new();
        for (nr, rs) in per_nr {
            targets.push((*nr, self.rules(rs, default)));
        }
        for (nr, t) in targets {
            if tail.is_some_and(|(start, _)| nr >= start) {
                continue;
            }
            set(nr, t);
            if let Some(n) = nr.checked_add(1) {
                set(n, miss);
            }
        }
        if let Some((start, t)) = tail {
            set(start, t);
        }
        self.tree(&ranges)
    }

    /// Binary search over sorted ranges `(start, target)` covering every u32.
    fn tree(&mut self, ranges: &[(u32, Target)]) -> Label {
        if ranges.len() == 1 {
            return self.target(ranges[0].1);
        }
        let mid = ranges.len() / 2;
        let right = self.tree(&ranges[mid..]);
        let left = self.tree(&ranges[..mid]);
        self.jump(BPF_JGE_K, ranges[mid].0, right, left)
    }
}

/// Every architecture name of the OCI spec (all parse; see [`Abi::arch_names`] for the ones
/// this host filters).
pub const ARCH_NAMES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// For a config.json that failed to parse: the linux.seccomp field holding a value that is
/// not an action, operator, architecture or flag, named by its path (serde's own message
/// only gives a line and column).
pub fn explain_json(config: &serde_json::Value) -> Option<String> {
    use serde::de::DeserializeOwned;
    use serde_json::Value;
    fn check<T: DeserializeOwned>(v: Option<&Value>, field: &str, what: &str, known: &[&str]) -> Option<String> {
        let v = v?;
        if serde_json::from_value::<T>(v.clone()).is_ok() {
            return None;
        }
        Some(format!("{field}: unknown seccomp {what} {v} (known: {})", known.join(", ")))
    }
    let s = config.pointer("/linux/seccomp")?;
    let flags = FLAGS.to_vec();
    let list = |key: &str| s.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    check::<LinuxSeccompAction>(s.get("defaultAction"), "linux.seccomp.defaultAction", "action", ACTIONS)
        .or_else(|| {
            list("architectures").iter().enumerate().find_map(|(i, a)| {
                check::<Arch>(Some(a), &format!("linux.seccomp.architectures[{i}]"), "architecture", ARCH_NAMES)
            })
        })
        .or_else(|| {
            list("flags").iter().enumerate().find_map(|(i, f)| {
                check::<LinuxSeccompFilterFlag>(Some(f), &format!("linux.seccomp.flags[{i}]"), "flag", &flags)
            })
        })
        .or_else(|| {
            list("syscalls").iter().enumerate().find_map(|(i, sc)| {
                let field = format!("linux.seccomp.syscalls[{i}]");
                check::<LinuxSeccompAction>(sc.get("action"), &format!("{field}.action"), "action", ACTIONS).or_else(
                    || {
                        let args = sc.get("args").and_then(|a| a.as_array()).cloned().unwrap_or_default();
                        args.iter().enumerate().find_map(|(j, a)| {
                            check::<LinuxSeccompOperator>(
                                a.get("op"),
                                &format!("{field}.args[{j}].op"),
                                "operator",
                                OPERATORS,
                            )
                        })
                    },
                )
            })
        })
}

// Syscall tables: "name number" pairs (see the module documentation for their source).
const X86_64: &str = "\
read 0 write 1 open 2 close 3 stat 4 fstat 5 lstat 6 poll 7 lseek 8 mmap 9 mprotect 10 munmap 11 brk 12 \
rt_sigaction 13 rt_sigprocmask 14 rt_sigreturn 15 ioctl 16 pread64 17 pwrite64 18 readv 19 writev 20 \
access 21 pipe 22 select 23 sched_yield 24 mremap 25 msync 26 mincore 27 madvise 28 shmget 29 shmat 30 \
shmctl 31 dup 32 dup2 33 pause 34 nanosleep 35 getitimer 36 alarm 37 setitimer 38 getpid 39 sendfile 40 \
socket 41 connect 42 accept 43 sendto 44 recvfrom 45 sendmsg 46 recvmsg 47 shutdown 48 bind 49 listen 50 \
getsockname 51 getpeername 52 socketpair 53 setsockopt 54 getsockopt 55 clone 56 fork 57 vfork 58 execve 59 \
exit 60 wait4 61 kill 62 uname 63 semget 64 semop 65 semctl 66 shmdt 67 msgget 68 msgsnd 69 msgrcv 70 \
msgctl 71 fcntl 72 flock 73 fsync 74 fdatasync 75 truncate 76 ftruncate 77 getdents 78 getcwd 79 chdir 80 \
fchdir 81 rename 82 mkdir 83 rmdir 84 creat 85 link 86 unlink 87 symlink 88 readlink 89 chmod 90 fchmod 91 \
chown 92 fchown 93 lchown 94 umask 95 gettimeofday 96 getrlimit 97 getrusage 98 sysinfo 99 times 100 \
ptrace 101 getuid 102 syslog 103 getgid 104 setuid 105 setgid 106 geteuid 107 getegid 108 setpgid 109 \
getppid 110 getpgrp 111 setsid 112 setreuid 113 setregid 114 getgroups 115 setgroups 116 setresuid 117 \
getresuid 118 setresgid 119 getresgid 120 getpgid 121 setfsuid 122 setfsgid 123 getsid 124 capget 125 \
capset 126 rt_sigpending 127 rt_sigtimedwait 128 rt_sigqueueinfo 129 rt_sigsuspend 130 sigaltstack 131 \
utime 132 mknod 133 uselib 134 personality 135 ustat 136 statfs 137 fstatfs 138 sysfs 139 getpriority 140 \
setpriority 141 sched_setparam 142 sched_getparam 143 sched_setscheduler 144 sched_getscheduler 145 \
sched_get_priority_max 146 sched_get_priority_min 147 sched_rr_get_interval 148 mlock 149 munlock 150 \
mlockall 151 munlockall 152 vhangup 153 modify_ldt 154 pivot_root 155 _sysctl 156 prctl 157 arch_prctl 158 \
adjtimex 159 setrlimit 160 chroot 161 sync 162 acct 163 settimeofday 164 mount 165 umount2 166 swapon 167 \
swapoff 168 reboot 169 sethostname 170 setdomainname 171 iopl 172 ioperm 173 create_module 174 \
init_module 175 delete_module 176 get_kernel_syms 177 query_module 178 quotactl 179 nfsservctl 180 \
getpmsg 181 putpmsg 182 afs_syscall 183 tuxcall 184 security 185 gettid 186 readahead 187 setxattr 188 \
lsetxattr 189 fsetxattr 190 getxattr 191 lgetxattr 192 fgetxattr 193 listxattr 194 llistxattr 195 \
flistxattr 196 removexattr 197 lremovexattr 198 fremovexattr 199 tkill 200 time 201 futex 202 \
sched_setaffinity 203 sched_getaffinity 204 set_thread_area 205 io_setup 206 io_destroy 207 \
io_getevents 208 io_submit 209 io_cancel 210 get_thread_area 211 lookup_dcookie 212 epoll_create 213 \
epoll_ctl_old 214 epoll_wait_old 215 remap_file_pages 216 getdents64 217 set_tid_address 218 \
restart_syscall 219 semtimedop 220 fadvise64 221 timer_create 222 timer_settime 223 timer_gettime 224 \
timer_getoverrun 225 timer_delete 226 clock_settime 227 clock_gettime 228 clock_getres 229 \
clock_nanosleep 230 exit_group 231 epoll_wait 232 epoll_ctl 233 tgkill 234 utimes 235 vserver 236 mbind 237 \
set_mempolicy 238 get_mempolicy 239 mq_open 240 mq_unlink 241 mq_timedsend 242 mq_timedreceive 243 \
mq_notify 244 mq_getsetattr 245 kexec_load 246 waitid 247 add_key 248 request_key 249 keyctl 250 \
ioprio_set 251 ioprio_get 252 inotify_init 253 inotify_add_watch 254 inotify_rm_watch 255 migrate_pages 256 \
openat 257 mkdirat 258 mknodat 259 fchownat 260 futimesat 261 newfstatat 262 unlinkat 263 renameat 264 \
linkat 265 symlinkat 266 readlinkat 267 fchmodat 268 faccessat 269 pselect6 270 ppoll 271 unshare 272 \
set_robust_list 273 get_robust_list 274 splice 275 tee 276 sync_file_range 277 vmsplice 278 move_pages 279 \
utimensat 280 epoll_pwait 281 signalfd 282 timerfd_create 283 eventfd 284 fallocate 285 timerfd_settime 286 \
timerfd_gettime 287 accept4 288 signalfd4 289 eventfd2 290 epoll_create1 291 dup3 292 pipe2 293 \
inotify_init1 294 preadv 295 pwritev 296 rt_tgsigqueueinfo 297 perf_event_open 298 recvmmsg 299 \
fanotify_init 300 fanotify_mark 301 prlimit64 302 name_to_handle_at 303 open_by_handle_at 304 \
clock_adjtime 305 syncfs 306 sendmmsg 307 setns 308 getcpu 309 process_vm_readv 310 process_vm_writev 311 \
kcmp 312 finit_module 313 sched_setattr 314 sched_getattr 315 renameat2 316 seccomp 317 getrandom 318 \
memfd_create 319 kexec_file_load 320 bpf 321 execveat 322 userfaultfd 323 membarrier 324 mlock2 325 \
copy_file_range 326 preadv2 327 pwritev2 328 pkey_mprotect 329 pkey_alloc 330 pkey_free 331 statx 332 \
io_pgetevents 333 rseq 334 uretprobe 335 pidfd_send_signal 424 io_uring_setup 425 io_uring_enter 426 \
io_uring_register 427 open_tree 428 move_mount 429 fsopen 430 fsconfig 431 fsmount 432 fspick 433 \
pidfd_open 434 clone3 435 close_range 436 openat2 437 pidfd_getfd 438 faccessat2 439 process_madvise 440 \
epoll_pwait2 441 mount_setattr 442 quotactl_fd 443 landlock_create_ruleset 444 landlock_add_rule 445 \
landlock_restrict_self 446 memfd_secret 447 process_mrelease 448 futex_waitv 449 \
set_mempolicy_home_node 450 cachestat 451 fchmodat2 452 map_shadow_stack 453 futex_wake 454 futex_wait 455 \
futex_requeue 456 statmount 457 listmount 458 lsm_get_self_attr 459 lsm_set_self_attr 460 \
lsm_list_modules 461 mseal 462 setxattrat 463 getxattrat 464 listxattrat 465 removexattrat 466 \
open_tree_attr 467 file_getattr 468 file_setattr 469";

const I386: &str = "\
restart_syscall 0 exit 1 fork 2 read 3 write 4 open 5 close 6 waitpid 7 creat 8 link 9 unlink 10 execve 11 \
chdir 12 time 13 mknod 14 chmod 15 lchown 16 break 17 oldstat 18 lseek 19 getpid 20 mount 21 umount 22 \
setuid 23 getuid 24 stime 25 ptrace 26 alarm 27 oldfstat 28 pause 29 utime 30 stty 31 gtty 32 access 33 \
nice 34 ftime 35 sync 36 kill 37 rename 38 mkdir 39 rmdir 40 dup 41 pipe 42 times 43 prof 44 brk 45 \
setgid 46 getgid 47 signal 48 geteuid 49 getegid 50 acct 51 umount2 52 lock 53 ioctl 54 fcntl 55 mpx 56 \
setpgid 57 ulimit 58 oldolduname 59 umask 60 chroot 61 ustat 62 dup2 63 getppid 64 getpgrp 65 setsid 66 \
sigaction 67 sgetmask 68 ssetmask 69 setreuid 70 setregid 71 sigsuspend 72 sigpending 73 sethostname 74 \
setrlimit 75 getrlimit 76 getrusage 77 gettimeofday 78 settimeofday 79 getgroups 80 setgroups 81 select 82 \
symlink 83 oldlstat 84 readlink 85 uselib 86 swapon 87 reboot 88 readdir 89 mmap 90 munmap 91 truncate 92 \
ftruncate 93 fchmod 94 fchown 95 getpriority 96 setpriority 97 profil 98 statfs 99 fstatfs 100 ioperm 101 \
socketcall 102 syslog 103 setitimer 104 getitimer 105 stat 106 lstat 107 fstat 108 olduname 109 iopl 110 \
vhangup 111 idle 112 vm86old 113 wait4 114 swapoff 115 sysinfo 116 ipc 117 fsync 118 sigreturn 119 \
clone 120 setdomainname 121 uname 122 modify_ldt 123 adjtimex 124 mprotect 125 sigprocmask 126 \
create_module 127 init_module 128 delete_module 129 get_kernel_syms 130 quotactl 131 getpgid 132 fchdir 133 \
bdflush 134 sysfs 135 personality 136 afs_syscall 137 setfsuid 138 setfsgid 139 _llseek 140 getdents 141 \
_newselect 142 flock 143 msync 144 readv 145 writev 146 getsid 147 fdatasync 148 _sysctl 149 mlock 150 \
munlock 151 mlockall 152 munlockall 153 sched_setparam 154 sched_getparam 155 sched_setscheduler 156 \
sched_getscheduler 157 sched_yield 158 sched_get_priority_max 159 sched_get_priority_min 160 \
sched_rr_get_interval 161 nanosleep 162 mremap 163 setresuid 164 getresuid 165 vm86 166 query_module 167 \
poll 168 nfsservctl 169 setresgid 170 getresgid 171 prctl 172 rt_sigreturn 173 rt_sigaction 174 \
rt_sigprocmask 175 rt_sigpending 176 rt_sigtimedwait 177 rt_sigqueueinfo 178 rt_sigsuspend 179 pread64 180 \
pwrite64 181 chown 182 getcwd 183 capget 184 capset 185 sigaltstack 186 sendfile 187 getpmsg 188 \
putpmsg 189 vfork 190 ugetrlimit 191 mmap2 192 truncate64 193 ftruncate64 194 stat64 195 lstat64 196 \
fstat64 197 lchown32 198 getuid32 199 getgid32 200 geteuid32 201 getegid32 202 setreuid32 203 \
setregid32 204 getgroups32 205 setgroups32 206 fchown32 207 setresuid32 208 getresuid32 209 setresgid32 210 \
getresgid32 211 chown32 212 setuid32 213 setgid32 214 setfsuid32 215 setfsgid32 216 pivot_root 217 \
mincore 218 madvise 219 getdents64 220 fcntl64 221 gettid 224 readahead 225 setxattr 226 lsetxattr 227 \
fsetxattr 228 getxattr 229 lgetxattr 230 fgetxattr 231 listxattr 232 llistxattr 233 flistxattr 234 \
removexattr 235 lremovexattr 236 fremovexattr 237 tkill 238 sendfile64 239 futex 240 sched_setaffinity 241 \
sched_getaffinity 242 set_thread_area 243 get_thread_area 244 io_setup 245 io_destroy 246 io_getevents 247 \
io_submit 248 io_cancel 249 fadvise64 250 exit_group 252 lookup_dcookie 253 epoll_create 254 epoll_ctl 255 \
epoll_wait 256 remap_file_pages 257 set_tid_address 258 timer_create 259 timer_settime 260 \
timer_gettime 261 timer_getoverrun 262 timer_delete 263 clock_settime 264 clock_gettime 265 \
clock_getres 266 clock_nanosleep 267 statfs64 268 fstatfs64 269 tgkill 270 utimes 271 fadvise64_64 272 \
vserver 273 mbind 274 get_mempolicy 275 set_mempolicy 276 mq_open 277 mq_unlink 278 mq_timedsend 279 \
mq_timedreceive 280 mq_notify 281 mq_getsetattr 282 kexec_load 283 waitid 284 add_key 286 request_key 287 \
keyctl 288 ioprio_set 289 ioprio_get 290 inotify_init 291 inotify_add_watch 292 inotify_rm_watch 293 \
migrate_pages 294 openat 295 mkdirat 296 mknodat 297 fchownat 298 futimesat 299 fstatat64 300 unlinkat 301 \
renameat 302 linkat 303 symlinkat 304 readlinkat 305 fchmodat 306 faccessat 307 pselect6 308 ppoll 309 \
unshare 310 set_robust_list 311 get_robust_list 312 splice 313 sync_file_range 314 tee 315 vmsplice 316 \
move_pages 317 getcpu 318 epoll_pwait 319 utimensat 320 signalfd 321 timerfd_create 322 eventfd 323 \
fallocate 324 timerfd_settime 325 timerfd_gettime 326 signalfd4 327 eventfd2 328 epoll_create1 329 dup3 330 \
pipe2 331 inotify_init1 332 preadv 333 pwritev 334 rt_tgsigqueueinfo 335 perf_event_open 336 recvmmsg 337 \
fanotify_init 338 fanotify_mark 339 prlimit64 340 name_to_handle_at 341 open_by_handle_at 342 \
clock_adjtime 343 syncfs 344 sendmmsg 345 setns 346 process_vm_readv 347 process_vm_writev 348 kcmp 349 \
finit_module 350 sched_setattr 351 sched_getattr 352 renameat2 353 seccomp 354 getrandom 355 \
memfd_create 356 bpf 357 execveat 358 socket 359 socketpair 360 bind 361 connect 362 listen 363 accept4 364 \
getsockopt 365 setsockopt 366 getsockname 367 getpeername 368 sendto 369 sendmsg 370 recvfrom 371 \
recvmsg 372 shutdown 373 userfaultfd 374 membarrier 375 mlock2 376 copy_file_range 377 preadv2 378 \
pwritev2 379 pkey_mprotect 380 pkey_alloc 381 pkey_free 382 statx 383 arch_prctl 384 io_pgetevents 385 \
rseq 386 semget 393 semctl 394 shmget 395 shmctl 396 shmat 397 shmdt 398 msgget 399 msgsnd 400 msgrcv 401 \
msgctl 402 clock_gettime64 403 clock_settime64 404 clock_adjtime64 405 clock_getres_time64 406 \
clock_nanosleep_time64 407 timer_gettime64 408 timer_settime64 409 timerfd_gettime64 410 \
timerfd_settime64 411 utimensat_time64 412 pselect6_time64 413 ppoll_time64 414 io_pgetevents_time64 416 \
recvmmsg_time64 417 mq_timedsend_time64 418 mq_timedreceive_time64 419 semtimedop_time64 420 \
rt_sigtimedwait_time64 421 futex_time64 422 sched_rr_get_interval_time64 423 pidfd_send_signal 424 \
io_uring_setup 425 io_uring_enter 426 io_uring_register 427 open_tree 428 move_mount 429 fsopen 430 \
fsconfig 431 fsmount 432 fspick 433 pidfd_open 434 clone3 435 close_range 436 openat2 437 pidfd_getfd 438 \
faccessat2 439 process_madvise 440 epoll_pwait2 441 mount_setattr 442 quotactl_fd 443 \
landlock_create_ruleset 444 landlock_add_rule 445 landlock_restrict_self 446 memfd_secret 447 \
process_mrelease 448 futex_waitv 449 set_mempolicy_home_node 450 cachestat 451 fchmodat2 452 \
map_shadow_stack 453 futex_wake 454 futex_wait 455 futex_requeue 456 statmount 457 listmount 458 \
lsm_get_self_attr 459 lsm_set_self_attr 460 lsm_list_modules 461 mseal 462 setxattrat 463 getxattrat 464 \
listxattrat 465 removexattrat 466 open_tree_attr 467 file_getattr 468 file_setattr 469";

const X32: &str = "\
read 0 write 1 open 2 close 3 stat 4 fstat 5 lstat 6 poll 7 lseek 8 mmap 9 mprotect 10 munmap 11 brk 12 \
rt_sigprocmask 14 pread64 17 pwrite64 18 access 21 pipe 22 select 23 sched_yield 24 mremap 25 msync 26 \
mincore 27 madvise 28 shmget 29 shmat 30 shmctl 31 dup 32 dup2 33 pause 34 nanosleep 35 getitimer 36 \
alarm 37 setitimer 38 getpid 39 sendfile 40 socket 41 connect 42 accept 43 sendto 44 shutdown 48 bind 49 \
listen 50 getsockname 51 getpeername 52 socketpair 53 clone 56 fork 57 vfork 58 exit 60 wait4 61 kill 62 \
uname 63 semget 64 semop 65 semctl 66 shmdt 67 msgget 68 msgsnd 69 msgrcv 70 msgctl 71 fcntl 72 flock 73 \
fsync 74 fdatasync 75 truncate 76 ftruncate 77 getdents 78 getcwd 79 chdir 80 fchdir 81 rename 82 mkdir 83 \
rmdir 84 creat 85 link 86 unlink 87 symlink 88 readlink 89 chmod 90 fchmod 91 chown 92 fchown 93 lchown 94 \
umask 95 gettimeofday 96 getrlimit 97 getrusage 98 sysinfo 99 times 100 getuid 102 syslog 103 getgid 104 \
setuid 105 setgid 106 geteuid 107 getegid 108 setpgid 109 getppid 110 getpgrp 111 setsid 112 setreuid 113 \
setregid 114 getgroups 115 setgroups 116 setresuid 117 getresuid 118 setresgid 119 getresgid 120 \
getpgid 121 setfsuid 122 setfsgid 123 getsid 124 capget 125 capset 126 rt_sigsuspend 130 utime 132 \
mknod 133 personality 135 ustat 136 statfs 137 fstatfs 138 sysfs 139 getpriority 140 setpriority 141 \
sched_setparam 142 sched_getparam 143 sched_setscheduler 144 sched_getscheduler 145 \
sched_get_priority_max 146 sched_get_priority_min 147 sched_rr_get_interval 148 mlock 149 munlock 150 \
mlockall 151 munlockall 152 vhangup 153 modify_ldt 154 pivot_root 155 prctl 157 arch_prctl 158 adjtimex 159 \
setrlimit 160 chroot 161 sync 162 acct 163 settimeofday 164 mount 165 umount2 166 swapon 167 swapoff 168 \
reboot 169 sethostname 170 setdomainname 171 iopl 172 ioperm 173 init_module 175 delete_module 176 \
quotactl 179 getpmsg 181 putpmsg 182 afs_syscall 183 tuxcall 184 security 185 gettid 186 readahead 187 \
setxattr 188 lsetxattr 189 fsetxattr 190 getxattr 191 lgetxattr 192 fgetxattr 193 listxattr 194 \
llistxattr 195 flistxattr 196 removexattr 197 lremovexattr 198 fremovexattr 199 tkill 200 time 201 \
futex 202 sched_setaffinity 203 sched_getaffinity 204 io_destroy 207 io_getevents 208 io_cancel 210 \
lookup_dcookie 212 epoll_create 213 remap_file_pages 216 getdents64 217 set_tid_address 218 \
restart_syscall 219 semtimedop 220 fadvise64 221 timer_settime 223 timer_gettime 224 timer_getoverrun 225 \
timer_delete 226 clock_settime 227 clock_gettime 228 clock_getres 229 clock_nanosleep 230 exit_group 231 \
epoll_wait 232 epoll_ctl 233 tgkill 234 utimes 235 mbind 237 set_mempolicy 238 get_mempolicy 239 \
mq_open 240 mq_unlink 241 mq_timedsend 242 mq_timedreceive 243 mq_getsetattr 245 add_key 248 \
request_key 249 keyctl 250 ioprio_set 251 ioprio_get 252 inotify_init 253 inotify_add_watch 254 \
inotify_rm_watch 255 migrate_pages 256 openat 257 mkdirat 258 mknodat 259 fchownat 260 futimesat 261 \
newfstatat 262 unlinkat 263 renameat 264 linkat 265 symlinkat 266 readlinkat 267 fchmodat 268 faccessat 269 \
pselect6 270 ppoll 271 unshare 272 splice 275 tee 276 sync_file_range 277 utimensat 280 epoll_pwait 281 \
signalfd 282 timerfd_create 283 eventfd 284 fallocate 285 timerfd_settime 286 timerfd_gettime 287 \
accept4 288 signalfd4 289 eventfd2 290 epoll_create1 291 dup3 292 pipe2 293 inotify_init1 294 \
perf_event_open 298 fanotify_init 300 fanotify_mark 301 prlimit64 302 name_to_handle_at 303 \
open_by_handle_at 304 clock_adjtime 305 syncfs 306 setns 308 getcpu 309 kcmp 312 finit_module 313 \
sched_setattr 314 sched_getattr 315 renameat2 316 seccomp 317 getrandom 318 memfd_create 319 \
kexec_file_load 320 bpf 321 userfaultfd 323 membarrier 324 mlock2 325 copy_file_range 326 pkey_mprotect 329 \
pkey_alloc 330 pkey_free 331 statx 332 io_pgetevents 333 rseq 334 pidfd_send_signal 424 io_uring_setup 425 \
io_uring_enter 426 io_uring_register 427 open_tree 428 move_mount 429 fsopen 430 fsconfig 431 fsmount 432 \
fspick 433 pidfd_open 434 clone3 435 close_range 436 openat2 437 pidfd_getfd 438 faccessat2 439 \
process_madvise 440 epoll_pwait2 441 mount_setattr 442 quotactl_fd 443 landlock_create_ruleset 444 \
landlock_add_rule 445 landlock_restrict_self 446 memfd_secret 447 process_mrelease 448 futex_waitv 449 \
set_mempolicy_home_node 450 cachestat 451 fchmodat2 452 map_shadow_stack 453 futex_wake 454 futex_wait 455 \
futex_requeue 456 statmount 457 listmount 458 lsm_get_self_attr 459 lsm_set_self_attr 460 \
lsm_list_modules 461 mseal 462 setxattrat 463 getxattrat 464 listxattrat 465 removexattrat 466 \
open_tree_attr 467 file_getattr 468 file_setattr 469 rt_sigaction 512 rt_sigreturn 513 ioctl 514 readv 515 \
writev 516 recvfrom 517 sendmsg 518 recvmsg 519 execve 520 ptrace 521 rt_sigpending 522 rt_sigtimedwait 523 \
rt_sigqueueinfo 524 sigaltstack 525 timer_create 526 mq_notify 527 kexec_load 528 waitid 529 \
set_robust_list 530 get_robust_list 531 vmsplice 532 move_pages 533 preadv 534 pwritev 535 \
rt_tgsigqueueinfo 536 recvmmsg 537 sendmmsg 538 process_vm_readv 539 process_vm_writev 540 setsockopt 541 \
getsockopt 542 io_setup 543 io_submit 544 execveat 545 preadv2 546 pwritev2 547";

const AARCH64: &str = "\
io_setup 0 io_destroy 1 io_submit 2 io_cancel 3 io_getevents 4 setxattr 5 lsetxattr 6 fsetxattr 7 \
getxattr 8 lgetxattr 9 fgetxattr 10 listxattr 11 llistxattr 12 flistxattr 13 removexattr 14 lremovexattr 15 \
fremovexattr 16 getcwd 17 lookup_dcookie 18 eventfd2 19 epoll_create1 20 epoll_ctl 21 epoll_pwait 22 dup 23 \
dup3 24 fcntl 25 inotify_init1 26 inotify_add_watch 27 inotify_rm_watch 28 ioctl 29 ioprio_set 30 \
ioprio_get 31 flock 32 mknodat 33 mkdirat 34 unlinkat 35 symlinkat 36 linkat 37 umount2 39 mount 40 \
pivot_root 41 nfsservctl 42 statfs 43 fstatfs 44 truncate 45 ftruncate 46 fallocate 47 faccessat 48 \
chdir 49 fchdir 50 chroot 51 fchmod 52 fchmodat 53 fchownat 54 fchown 55 openat 56 close 57 vhangup 58 \
pipe2 59 quotactl 60 getdents64 61 lseek 62 read 63 write 64 readv 65 writev 66 pread64 67 pwrite64 68 \
preadv 69 pwritev 70 sendfile 71 pselect6 72 ppoll 73 signalfd4 74 vmsplice 75 splice 76 tee 77 \
readlinkat 78 newfstatat 79 fstat 80 sync 81 fsync 82 fdatasync 83 timerfd_create 85 timerfd_settime 86 \
timerfd_gettime 87 utimensat 88 acct 89 capget 90 capset 91 personality 92 exit 93 exit_group 94 waitid 95 \
set_tid_address 96 unshare 97 futex 98 set_robust_list 99 get_robust_list 100 nanosleep 101 getitimer 102 \
setitimer 103 kexec_load 104 init_module 105 delete_module 106 timer_create 107 timer_gettime 108 \
timer_getoverrun 109 timer_settime 110 timer_delete 111 clock_settime 112 clock_gettime 113 \
clock_getres 114 clock_nanosleep 115 syslog 116 ptrace 117 sched_setparam 118 sched_setscheduler 119 \
sched_getscheduler 120 sched_getparam 121 sched_setaffinity 122 sched_getaffinity 123 sched_yield 124 \
sched_get_priority_max 125 sched_get_priority_min 126 sched_rr_get_interval 127 restart_syscall 128 \
kill 129 tkill 130 tgkill 131 sigaltstack 132 rt_sigsuspend 133 rt_sigaction 134 rt_sigprocmask 135 \
rt_sigpending 136 rt_sigtimedwait 137 rt_sigqueueinfo 138 rt_sigreturn 139 setpriority 140 getpriority 141 \
reboot 142 setregid 143 setgid 144 setreuid 145 setuid 146 setresuid 147 getresuid 148 setresgid 149 \
getresgid 150 setfsuid 151 setfsgid 152 times 153 setpgid 154 getpgid 155 getsid 156 setsid 157 \
getgroups 158 setgroups 159 uname 160 sethostname 161 setdomainname 162 getrusage 165 umask 166 prctl 167 \
getcpu 168 gettimeofday 169 settimeofday 170 adjtimex 171 getpid 172 getppid 173 getuid 174 geteuid 175 \
getgid 176 getegid 177 gettid 178 sysinfo 179 mq_open 180 mq_unlink 181 mq_timedsend 182 \
mq_timedreceive 183 mq_notify 184 mq_getsetattr 185 msgget 186 msgctl 187 msgrcv 188 msgsnd 189 semget 190 \
semctl 191 semtimedop 192 semop 193 shmget 194 shmctl 195 shmat 196 shmdt 197 socket 198 socketpair 199 \
bind 200 listen 201 accept 202 connect 203 getsockname 204 getpeername 205 sendto 206 recvfrom 207 \
setsockopt 208 getsockopt 209 shutdown 210 sendmsg 211 recvmsg 212 readahead 213 brk 214 munmap 215 \
mremap 216 add_key 217 request_key 218 keyctl 219 clone 220 execve 221 mmap 222 fadvise64 223 swapon 224 \
swapoff 225 mprotect 226 msync 227 mlock 228 munlock 229 mlockall 230 munlockall 231 mincore 232 \
madvise 233 remap_file_pages 234 mbind 235 get_mempolicy 236 set_mempolicy 237 migrate_pages 238 \
move_pages 239 rt_tgsigqueueinfo 240 perf_event_open 241 accept4 242 recvmmsg 243 wait4 260 prlimit64 261 \
fanotify_init 262 fanotify_mark 263 name_to_handle_at 264 open_by_handle_at 265 clock_adjtime 266 \
syncfs 267 setns 268 sendmmsg 269 process_vm_readv 270 process_vm_writev 271 kcmp 272 finit_module 273 \
sched_setattr 274 sched_getattr 275 renameat2 276 seccomp 277 getrandom 278 memfd_create 279 bpf 280 \
execveat 281 userfaultfd 282 membarrier 283 mlock2 284 copy_file_range 285 preadv2 286 pwritev2 287 \
pkey_mprotect 288 pkey_alloc 289 pkey_free 290 statx 291 rseq 293 kexec_file_load 294 pidfd_send_signal 424 \
io_uring_setup 425 io_uring_enter 426 io_uring_register 427 open_tree 428 move_mount 429 fsopen 430 \
fsconfig 431 fsmount 432 fspick 433 pidfd_open 434 clone3 435 close_range 436 openat2 437 pidfd_getfd 438 \
faccessat2 439 process_madvise 440 epoll_pwait2 441 mount_setattr 442 quotactl_fd 443 \
landlock_create_ruleset 444 landlock_add_rule 445 landlock_restrict_self 446 memfd_secret 447 \
process_mrelease 448 futex_waitv 449 set_mempolicy_home_node 450 cachestat 451 fchmodat2 452 \
map_shadow_stack 453 futex_wake 454 futex_wait 455 futex_requeue 456 statmount 457 listmount 458 \
lsm_get_self_attr 459 lsm_set_self_attr 460 lsm_list_modules 461 mseal 462 setxattrat 463 getxattrat 464 \
listxattrat 465 removexattrat 466 open_tree_attr 467 file_getattr 468 file_setattr 469";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    fn build(v: serde_json::Value) -> Filter {
        let f = compile_for(&profile(v), Abi::X86_64).unwrap();
        verify(f.instructions());
        f
    }

    fn nr(abi: Abi, name: &str) -> u32 {
        abi.syscall(name).unwrap_or_else(|| panic!("{name} not in {abi:?}"))
    }

    /// What the kernel's checker enforces: known opcodes, aligned loads inside seccomp_data,
    /// jumps inside the program, a return at the end.
    fn verify(p: &[Insn]) {
        assert!(!p.is_empty() && p.len() <= BPF_MAXINSNS);
        assert_eq!(p.last().unwrap().code, BPF_RET_K);
        for (pc, i) in p.iter().enumerate() {
            match i.code {
                BPF_LD_W_ABS => assert!(i.k % 4 == 0 && i.k < 64, "load at {pc}"),
                BPF_JA => assert!(pc + 1 + (i.k as usize) < p.len(), "ja at {pc}"),
                BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K => {
                    assert!(pc + 1 + (i.jt.max(i.jf) as usize) < p.len(), "jump at {pc}")
                }
                BPF_ALU_AND_K | BPF_RET_K => {}
                c => panic!("opcode {c:#x} at {pc}"),
            }
        }
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_ne_bytes());
        d[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        d
    }

    /// A classic BPF interpreter for what seccomp filters use.
    fn run(p: &[Insn], d: &[u8; 64]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => a = u32::from_ne_bytes(d[i.k as usize..i.k as usize + 4].try_into().unwrap()),
                BPF_ALU_AND_K => a &= i.k,
                BPF_JA => pc += i.k as usize,
                BPF_JEQ_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
                BPF_JGT_K => pc += if a > i.k { i.jt } else { i.jf } as usize,
                BPF_JGE_K => pc += if a >= i.k { i.jt } else { i.jf } as usize,
                BPF_RET_K => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn call(f: &Filter, name: &str, args: [u64; 6]) -> u32 {
        run(f.instructions(), &data(AUDIT_ARCH_X86_64, nr(Abi::X86_64, name), args))
    }

    const EPERM: u32 = RET_ERRNO | 1;

    #[test]
    fn errno_for_named_syscalls_and_allow_for_the_rest() {
        let f = build(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        }));
        assert_eq!(call(&f, "mkdir", [0; 6]), EPERM, "errnoRet defaults to EPERM");
        assert_eq!(call(&f, "mkdirat", [0; 6]), EPERM);
        assert_eq!(call(&f, "chmod", [0; 6]), RET_ERRNO | 13);
        for n in ["read", "write", "execve", "rmdir", "fchmod", "file_setattr"] {
            assert_eq!(call(&f, n, [0; 6]), RET_ALLOW, "{n}");
        }
        assert_eq!(f.flags(), 0);
        assert!(f.skipped().is_empty());
    }

    #[test]
    fn default_errno_with_an_allowlist() {
        let f = build(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "syscalls": [{"names": ["read", "write", "exit_group", "getpid", "getppid"], "action": "SCMP_ACT_ALLOW"}]
        }));
        for n in ["read", "write", "exit_group", "getpid", "getppid"] {
            assert_eq!(call(&f, n, [0; 6]), RET_ALLOW, "{n}");
        }
        for n in ["open", "mkdir", "getuid", "mseal"] {
            assert_eq!(call(&f, n, [0; 6]), RET_ERRNO | 38, "{n}");
        }
        assert_eq!(run(f.instructions(), &data(AUDIT_ARCH_X86_64, 5000, [0; 6])), RET_ERRNO | 38);
    }

    #[test]
    fn every_action_has_its_return_value() {
        let cases = [
            ("SCMP_ACT_KILL", None, RET_KILL_THREAD),
            ("SCMP_ACT_KILL_THREAD", None, RET_KILL_THREAD),
            ("SCMP_ACT_KILL_PROCESS", None, RET_KILL_PROCESS),
            ("SCMP_ACT_TRAP", None, RET_TRAP),
            ("SCMP_ACT_ERRNO", Some(5), RET_ERRNO | 5),
            ("SCMP_ACT_TRACE", None, RET_TRACE | 1),
            ("SCMP_ACT_TRACE", Some(7), RET_TRACE | 7),
            ("SCMP_ACT_LOG", None, RET_LOG),
            ("SCMP_ACT_ALLOW", Some(9), RET_ALLOW),
        ];
        for (action, errno, want) in cases {
            let mut sc = json!({"names": ["uname"], "action": action});
            if let Some(e) = errno {
                sc["errnoRet"] = json!(e);
            }
            let f = build(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 99, "syscalls": [sc]}));
            assert_eq!(call(&f, "uname", [0; 6]), want, "{action}");
            assert_eq!(call(&f, "getpid", [0; 6]), RET_ERRNO | 99, "{action}");
            let f = build(json!({"defaultAction": action, "defaultErrnoRet": errno}));
            assert_eq!(call(&f, "uname", [0; 6]), want, "default {action}");
        }
    }

    /// Every operator against values around both 32-bit halves, in every argument slot.
    #[test]
    fn comparisons_follow_unsigned_64_bit_semantics() {
        type Holds = fn(u64, u64) -> bool;
        let ops: [(&str, Holds); 6] = [
            ("SCMP_CMP_EQ", |a, v| a == v),
            ("SCMP_CMP_NE", |a, v| a != v),
            ("SCMP_CMP_LT", |a, v| a < v),
            ("SCMP_CMP_LE", |a, v| a <= v),
            ("SCMP_CMP_GT", |a, v| a > v),
            ("SCMP_CMP_GE", |a, v| a >= v),
        ];
        let values =
            [0u64, 1, 5, 0x7fff_ffff, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0005, 0xffff_ffff_0000_0000, u64::MAX];
        let mut probes: Vec<u64> = Vec::new();
        for v in values {
            for d in [0u64, 1, 2, 1 << 32] {
                probes.push(v.wrapping_add(d));
                probes.push(v.wrapping_sub(d));
            }
        }
        for (op, holds) in ops {
            for v in values {
                for index in [0usize, 3, 5] {
                    let f = build(json!({
                        "defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                            "args": [{"index": index, "value": v, "op": op}]}]
                    }));
                    for &a in &probes {
                        let mut args = [0x5555_5555_5555_5555u64; 6];
                        args[index] = a;
                        let want = if holds(a, v) { EPERM } else { RET_ALLOW };
                        assert_eq!(call(&f, "kill", args), want, "arg{index}={a:#x} {op} {v:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn masked_eq_compares_the_masked_argument_with_value_two() {
        for (mask, want_v) in [(0o4000u64, 0o4000u64), (0xffff_0000_0000_00ff, 0x1234_0000_0000_0012), (0xf, 0), (0, 0)]
        {
            let f = build(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 2, "value": mask, "valueTwo": want_v, "op": "SCMP_CMP_MASKED_EQ"}]}]
            }));
            for a in
                [0u64, 0o755, 0o4755, 0o2755, 0x1234_0000_0000_0012, 0x1234_5678_0000_0012, 0x1234_0000_0000_0013, 0x10]
            {
                let want = if a & mask == want_v { EPERM } else { RET_ALLOW };
                assert_eq!(call(&f, "fchmodat", [0, 0, a, 0, 0, 0]), want, "{a:#x} & {mask:#x} == {want_v:#x}");
            }
        }
    }

    #[test]
    fn conditions_of_a_rule_are_anded_and_rules_are_ored() {
        let f = build(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2,
                    "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
                // The same argument twice: each condition is its own rule (runc).
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3,
                    "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"}]}
            ]
        }));
        assert_eq!(call(&f, "kill", [1, 15, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(call(&f, "kill", [2, 15, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(&f, "kill", [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(&f, "kill", [1, 9, 0, 0, 0, 0]), RET_ERRNO | 2);
        assert_eq!(call(&f, "kill", [7, 9, 0, 0, 0, 0]), RET_ERRNO | 2);
        assert_eq!(call(&f, "personality", [8, 0, 0, 0, 0, 0]), RET_ERRNO | 3);
        assert_eq!(call(&f, "personality", [0x20000, 0, 0, 0, 0, 0]), RET_ERRNO | 3);
        assert_eq!(call(&f, "personality", [0, 0, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn first_matching_rule_wins_and_rules_with_the_default_action_are_dropped() {
        let f = build(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                // Dropped, as runc does: it would otherwise shadow the next rule for arg0 == 1.
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                {"names": ["kill"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["kill"], "action": "SCMP_ACT_LOG"},
                {"names": ["dup"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_LE"}]},
                {"names": ["dup"], "action": "SCMP_ACT_TRAP", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LE"}]},
                {"names": ["dup"], "action": "SCMP_ACT_ALLOW"}
            ]
        }));
        assert_eq!(call(&f, "kill", [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(&f, "dup", [0, 0, 0, 0, 0, 0]), RET_LOG);
        assert_eq!(call(&f, "dup", [4, 0, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn architectures_select_the_sections_and_others_are_killed() {
        let rules = json!([{"names": ["mkdir", "rt_sigaction", "socketcall"], "action": "SCMP_ACT_ERRNO"}]);
        let x86 = |nr: u32| data(AUDIT_ARCH_I386, nr, [0; 6]);
        let x64 = |nr: u32| data(AUDIT_ARCH_X86_64, nr, [0; 6]);
        let f = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
        let p = f.instructions();
        assert_eq!(run(p, &x64(83)), EPERM, "x86_64 mkdir is 83");
        assert_eq!(run(p, &x64(13)), EPERM, "x86_64 rt_sigaction is 13");
        assert_eq!(run(p, &x86(39)), RET_BAD_ARCH, "i386 is not listed: killed");
        assert_eq!(run(p, &x64(X32_SYSCALL_BIT | 83)), RET_BAD_ARCH, "x32 is not listed: killed");
        assert_eq!(run(p, &x64(u32::MAX)), RET_BAD_ARCH);
        assert_eq!(run(p, &data(AUDIT_ARCH_AARCH64, 34, [0; 6])), RET_BAD_ARCH);
        assert_eq!(f.skipped(), ["socketcall"], "socketcall is i386 only");

        let f = build(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_PPC64LE"],
            "syscalls": rules
        }));
        let p = f.instructions();
        assert!(f.skipped().is_empty());
        assert_eq!(run(p, &x64(83)), EPERM);
        assert_eq!(run(p, &x86(39)), EPERM, "i386 mkdir is 39");
        assert_eq!(run(p, &x86(174)), EPERM, "i386 rt_sigaction is 174");
        assert_eq!(run(p, &x86(102)), EPERM, "i386 socketcall is 102");
        assert_eq!(run(p, &x86(83)), RET_ALLOW, "83 is symlink on i386");
        assert_eq!(run(p, &x64(X32_SYSCALL_BIT | 83)), EPERM, "x32 mkdir");
        assert_eq!(run(p, &x64(X32_SYSCALL_BIT | 512)), EPERM, "x32 rt_sigaction is 512");
        assert_eq!(run(p, &x64(X32_SYSCALL_BIT | 13)), RET_ALLOW, "x32 has no 13");
        assert_eq!(run(p, &x64(u32::MAX)), RET_ALLOW, "-1 under x32: the default");
        assert_eq!(run(p, &data(AUDIT_ARCH_AARCH64, 34, [0; 6])), RET_BAD_ARCH, "cannot run here: not covered");

        // An aarch64 host: its own numbers (mkdirat is 34, there is no mkdir).
        let f = compile_for(
            &profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]})),
            Abi::Aarch64,
        )
        .unwrap();
        verify(f.instructions());
        assert_eq!(run(f.instructions(), &data(AUDIT_ARCH_AARCH64, 34, [0; 6])), EPERM);
        assert_eq!(run(f.instructions(), &data(AUDIT_ARCH_AARCH64, 35, [0; 6])), RET_ALLOW);
        assert_eq!(run(f.instructions(), &data(AUDIT_ARCH_X86_64, 34, [0; 6])), RET_BAD_ARCH);
    }

    #[test]
    fn unknown_syscall_names_are_skipped() {
        let f = build(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_syscall", "mkdir", "socketcall", "no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]
        }));
        assert_eq!(call(&f, "mkdir", [0; 6]), EPERM);
        assert_eq!(f.skipped(), ["no_such_syscall", "socketcall"]);
    }

    #[test]
    fn notify_rules_return_user_notif_and_ask_for_a_listener() {
        let f = build(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "m",
            "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert_eq!(call(&f, "mkdirat", [0; 6]), RET_USER_NOTIF);
        assert_eq!(call(&f, "sendmsg", [0; 6]), RET_ALLOW);
        assert_eq!(f.flags(), FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV);
        let l = f.listener().expect("a listener");
        assert_eq!((l.path.to_str(), l.metadata.as_str()), (Some("/run/agent.sock"), "m"));
        // Without NOTIFY rules: no listener, and the flag that only concerns one is dropped.
        let f = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}));
        assert!(f.listener().is_none() && f.flags() == 0);
    }

    #[test]
    fn bad_profiles_are_refused_naming_the_field() {
        let cases = [
            (
                json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
                "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY is not supported",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
                    "syscalls": [{"names": ["sendmsg", "mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
                "linux.seccomp.syscalls: SCMP_ACT_NOTIFY on sendmsg is not supported",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
                "linux.seccomp.listenerPath is required with SCMP_ACT_NOTIFY",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                    {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
                "linux.seccomp.syscalls[1].args[0].index: 6 is out of range",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}),
                "linux.seccomp.syscalls[0].errnoRet: 70000 is out of range",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536}),
                "linux.seccomp.defaultErrnoRet: 65536 is out of range",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [""], "action": "SCMP_ACT_ERRNO"}]}),
                "linux.seccomp.syscalls[0].names: an empty syscall name",
            ),
        ];
        for (p, want) in cases {
            let e = compile_for(&profile(p), Abi::X86_64).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn flags_map_to_kernel_bits() {
        let f = build(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
        }));
        assert_eq!(
            f.flags() as libc::c_ulong,
            libc::SECCOMP_FILTER_FLAG_TSYNC | libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
    }

    /// Rules with conditions on every x86_64 syscall: a program far longer than a conditional
    /// jump reaches, so the far jumps go through `ja`s and copied `ret`s.
    fn long_profile() -> serde_json::Value {
        let names: Vec<&str> = X86_64.split_ascii_whitespace().step_by(2).collect();
        let skip = ["prctl", "seccomp", "getpriority", "getppid", "exit", "exit_group", "wait4", "kill"];
        let names: Vec<&str> = names.into_iter().filter(|n| !skip.contains(n)).collect();
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 99,
                    "args": [{"index": 5, "value": 0xdead_beef_0000_0000u64, "op": "SCMP_CMP_EQ"}]},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 43},
                {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42,
                    "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GE"}]}
            ]
        })
    }

    #[test]
    fn long_programs_reach_far_targets() {
        let f = build(long_profile());
        let p = f.instructions();
        assert!(p.len() > 1000, "{} instructions", p.len());
        assert!(p.iter().any(|i| i.code == BPF_JA), "far jumps use ja");
        for (n, nr) in X86_64.split_ascii_whitespace().collect::<Vec<_>>().chunks(2).map(|c| (c[0], c[1])) {
            let nr: u32 = nr.parse().unwrap();
            let want_match = match n {
                "getppid" => RET_ERRNO | 43,
                "getpriority" => RET_ALLOW,
                "prctl" | "seccomp" | "exit" | "exit_group" | "wait4" | "kill" => RET_ALLOW,
                _ => RET_ERRNO | 99,
            };
            assert_eq!(run(p, &data(AUDIT_ARCH_X86_64, nr, [0, 0, 0, 0, 0, 0xdead_beef_0000_0000])), want_match, "{n}");
            let want_other = if n == "getppid" { RET_ERRNO | 43 } else { RET_ALLOW };
            assert_eq!(run(p, &data(AUDIT_ARCH_X86_64, nr, [0, 0, 0, 0, 0, 0xdead_beef]),), want_other, "{n}");
        }
    }

    /// The kernel accepts the long program and enforces it, arguments included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_kernel_accepts_and_enforces_the_filter() {
        let f = compile(&profile(long_profile())).unwrap();
        // Arguments are passed as u64: a variadic int would leave a register's high half
        // undefined, and the filter checks all 64 bits.
        // SAFETY: the child makes raw syscalls only (no allocation) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            unsafe {
                let errno = || *libc::__errno_location();
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || f.install().is_err() {
                    libc::_exit(10);
                }
                if libc::syscall(libc::SYS_getppid) != -1 || errno() != 43 {
                    libc::_exit(11);
                }
                if libc::syscall(libc::SYS_getpriority, 0u64, 0x1_0000_0001u64) != -1 || errno() != 42 {
                    libc::_exit(12);
                }
                if libc::syscall(libc::SYS_getpriority, 0u64, 0u64) == -1 {
                    libc::_exit(13);
                }
                if libc::syscall(libc::SYS_getuid, 0u64, 0u64, 0u64, 0u64, 0u64, 0xdead_beef_0000_0000u64) != -1
                    || errno() != 99
                {
                    libc::_exit(14);
                }
                if libc::syscall(libc::SYS_getuid, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64) == -1 {
                    libc::_exit(15);
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: reap our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "the check that failed (10 = install)");
    }

    /// Every syscall number the libc crate knows for x86_64, by name.
    #[cfg(target_arch = "x86_64")]
    macro_rules! libc_numbers {
        ($($n:ident),* $(,)?) => {
            &[$((stringify!($n), libc::$n as u32)),*]
        };
    }

    #[cfg(target_arch = "x86_64")]
    #[rustfmt::skip]
    const LIBC_X86_64: &[(&str, u32)] = libc_numbers![
        SYS_read, SYS_write, SYS_open, SYS_close, SYS_stat, SYS_fstat, SYS_lstat, SYS_poll, SYS_lseek, SYS_mmap,
        SYS_mprotect, SYS_munmap, SYS_brk, SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_ioctl,
        SYS_pread64, SYS_pwrite64, SYS_readv, SYS_writev, SYS_access, SYS_pipe, SYS_select, SYS_sched_yield,
        SYS_mremap, SYS_msync, SYS_mincore, SYS_madvise, SYS_shmget, SYS_shmat, SYS_shmctl, SYS_dup, SYS_dup2,
        SYS_pause, SYS_nanosleep, SYS_getitimer, SYS_alarm, SYS_setitimer, SYS_getpid, SYS_sendfile, SYS_socket,
        SYS_connect, SYS_accept, SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_shutdown, SYS_bind,
        SYS_listen, SYS_getsockname, SYS_getpeername, SYS_socketpair, SYS_setsockopt, SYS_getsockopt, SYS_clone,
        SYS_fork, SYS_vfork, SYS_execve, SYS_exit, SYS_wait4, SYS_kill, SYS_uname, SYS_semget, SYS_semop, SYS_semctl,
        SYS_shmdt, SYS_msgget, SYS_msgsnd, SYS_msgrcv, SYS_msgctl, SYS_fcntl, SYS_flock, SYS_fsync, SYS_fdatasync,
        SYS_truncate, SYS_ftruncate, SYS_getdents, SYS_getcwd, SYS_chdir, SYS_fchdir, SYS_rename, SYS_mkdir,
        SYS_rmdir, SYS_creat, SYS_link, SYS_unlink, SYS_symlink, SYS_readlink, SYS_chmod, SYS_fchmod, SYS_chown,
        SYS_fchown, SYS_lchown, SYS_umask, SYS_gettimeofday, SYS_getrlimit, SYS_getrusage, SYS_sysinfo, SYS_times,
        SYS_ptrace, SYS_getuid, SYS_syslog, SYS_getgid, SYS_setuid, SYS_setgid, SYS_geteuid, SYS_getegid,
        SYS_setpgid, SYS_getppid, SYS_getpgrp, SYS_setsid, SYS_setreuid, SYS_setregid, SYS_getgroups, SYS_setgroups,
        SYS_setresuid, SYS_getresuid, SYS_setresgid, SYS_getresgid, SYS_getpgid, SYS_setfsuid, SYS_setfsgid,
        SYS_getsid, SYS_capget, SYS_capset, SYS_rt_sigpending, SYS_rt_sigtimedwait, SYS_rt_sigqueueinfo,
        SYS_rt_sigsuspend, SYS_sigaltstack, SYS_utime, SYS_mknod, SYS_uselib, SYS_personality, SYS_ustat, SYS_statfs,
        SYS_fstatfs, SYS_sysfs, SYS_getpriority, SYS_setpriority, SYS_sched_setparam, SYS_sched_getparam,
        SYS_sched_setscheduler, SYS_sched_getscheduler, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
        SYS_sched_rr_get_interval, SYS_mlock, SYS_munlock, SYS_mlockall, SYS_munlockall, SYS_vhangup, SYS_modify_ldt,
        SYS_pivot_root, SYS__sysctl, SYS_prctl, SYS_arch_prctl, SYS_adjtimex, SYS_setrlimit, SYS_chroot, SYS_sync,
        SYS_acct, SYS_settimeofday, SYS_mount, SYS_umount2, SYS_swapon, SYS_swapoff, SYS_reboot, SYS_sethostname,
        SYS_setdomainname, SYS_iopl, SYS_ioperm, SYS_init_module, SYS_delete_module, SYS_quotactl, SYS_nfsservctl,
        SYS_getpmsg, SYS_putpmsg, SYS_afs_syscall, SYS_tuxcall, SYS_security, SYS_gettid, SYS_readahead,
        SYS_setxattr, SYS_lsetxattr, SYS_fsetxattr, SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr, SYS_listxattr,
        SYS_llistxattr, SYS_flistxattr, SYS_removexattr, SYS_lremovexattr, SYS_fremovexattr, SYS_tkill, SYS_time,
        SYS_futex, SYS_sched_setaffinity, SYS_sched_getaffinity, SYS_set_thread_area, SYS_io_setup, SYS_io_destroy,
        SYS_io_getevents, SYS_io_submit, SYS_io_cancel, SYS_get_thread_area, SYS_lookup_dcookie, SYS_epoll_create,
        SYS_epoll_ctl_old, SYS_epoll_wait_old, SYS_remap_file_pages, SYS_getdents64, SYS_set_tid_address,
        SYS_restart_syscall, SYS_semtimedop, SYS_fadvise64, SYS_timer_create, SYS_timer_settime, SYS_timer_gettime,
        SYS_timer_getoverrun, SYS_timer_delete, SYS_clock_settime, SYS_clock_gettime, SYS_clock_getres,
        SYS_clock_nanosleep, SYS_exit_group, SYS_epoll_wait, SYS_epoll_ctl, SYS_tgkill, SYS_utimes, SYS_vserver,
        SYS_mbind, SYS_set_mempolicy, SYS_get_mempolicy, SYS_mq_open, SYS_mq_unlink, SYS_mq_timedsend,
        SYS_mq_timedreceive, SYS_mq_notify, SYS_mq_getsetattr, SYS_kexec_load, SYS_waitid, SYS_add_key,
        SYS_request_key, SYS_keyctl, SYS_ioprio_set, SYS_ioprio_get, SYS_inotify_init, SYS_inotify_add_watch,
        SYS_inotify_rm_watch, SYS_migrate_pages, SYS_openat, SYS_mkdirat, SYS_mknodat, SYS_fchownat, SYS_futimesat,
        SYS_newfstatat, SYS_unlinkat, SYS_renameat, SYS_linkat, SYS_symlinkat, SYS_readlinkat, SYS_fchmodat,
        SYS_faccessat, SYS_pselect6, SYS_ppoll, SYS_unshare, SYS_set_robust_list, SYS_get_robust_list, SYS_splice,
        SYS_tee, SYS_sync_file_range, SYS_vmsplice, SYS_move_pages, SYS_utimensat, SYS_epoll_pwait, SYS_signalfd,
        SYS_timerfd_create, SYS_eventfd, SYS_fallocate, SYS_timerfd_settime, SYS_timerfd_gettime, SYS_accept4,
        SYS_signalfd4, SYS_eventfd2, SYS_epoll_create1, SYS_dup3, SYS_pipe2, SYS_inotify_init1, SYS_preadv,
        SYS_pwritev, SYS_rt_tgsigqueueinfo, SYS_perf_event_open, SYS_recvmmsg, SYS_fanotify_init, SYS_fanotify_mark,
        SYS_prlimit64, SYS_name_to_handle_at, SYS_open_by_handle_at, SYS_clock_adjtime, SYS_syncfs, SYS_sendmmsg,
        SYS_setns, SYS_getcpu, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_finit_module,
        SYS_sched_setattr, SYS_sched_getattr, SYS_renameat2, SYS_seccomp, SYS_getrandom, SYS_memfd_create,
        SYS_kexec_file_load, SYS_bpf, SYS_execveat, SYS_userfaultfd, SYS_membarrier, SYS_mlock2, SYS_copy_file_range,
        SYS_preadv2, SYS_pwritev2, SYS_pkey_mprotect, SYS_pkey_alloc, SYS_pkey_free, SYS_statx, SYS_rseq,
        SYS_pidfd_send_signal, SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_open_tree,
        SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_pidfd_open, SYS_clone3,
        SYS_close_range, SYS_openat2, SYS_pidfd_getfd, SYS_faccessat2, SYS_process_madvise, SYS_epoll_pwait2,
        SYS_mount_setattr, SYS_quotactl_fd, SYS_landlock_create_ruleset, SYS_landlock_add_rule,
        SYS_landlock_restrict_self, SYS_memfd_secret, SYS_process_mrelease, SYS_futex_waitv,
        SYS_set_mempolicy_home_node, SYS_fchmodat2, SYS_mseal
    ];

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_x86_64_table_matches_libc() {
        assert_eq!(LIBC_X86_64.len(), 360);
        for (sys, want) in LIBC_X86_64 {
            let name = sys.strip_prefix("SYS_").unwrap();
            assert_eq!(Abi::X86_64.syscall(name), Some(*want), "{name}");
        }
        assert_eq!(Abi::X32.syscall("read"), Some(X32_SYSCALL_BIT));
        assert_eq!(Abi::I386.syscall("read"), Some(3));
        assert_eq!(Abi::I386.syscall("fchmodat2"), Some(452));
        assert_eq!(Abi::X86_64.syscall("no_such"), None);
    }

    #[test]
    fn every_oci_name_parses() {
        for a in ARCH_NAMES {
            serde_json::from_value::<Arch>(json!(a)).unwrap();
        }
        for a in ACTIONS {
            serde_json::from_value::<LinuxSeccompAction>(json!(a)).unwrap();
        }
        for o in OPERATORS {
            serde_json::from_value::<LinuxSeccompOperator>(json!(o)).unwrap();
        }
        for f in FLAGS {
            serde_json::from_value::<LinuxSeccompFilterFlag>(json!(f)).unwrap();
        }
    }

    #[test]
    fn unparsable_profiles_are_explained_by_field() {
        let base = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["b"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}}});
        assert_eq!(explain_json(&base), None);
        for (ptr, bad, want) in [
            (
                "/linux/seccomp/defaultAction",
                "SCMP_ACT_NOPE",
                "linux.seccomp.defaultAction: unknown seccomp action \"SCMP_ACT_NOPE\"",
            ),
            (
                "/linux/seccomp/architectures/0",
                "SCMP_ARCH_VAX",
                "linux.seccomp.architectures[0]: unknown seccomp architecture",
            ),
            ("/linux/seccomp/flags/0", "SECCOMP_FILTER_FLAG_NOPE", "linux.seccomp.flags[0]: unknown seccomp flag"),
            (
                "/linux/seccomp/syscalls/1/action",
                "SCMP_ACT_BOGUS",
                "linux.seccomp.syscalls[1].action: unknown seccomp action \"SCMP_ACT_BOGUS\" (known: SCMP_ACT_ALLOW",
            ),
            (
                "/linux/seccomp/syscalls/1/args/0/op",
                "SCMP_CMP_ABOUT",
                "linux.seccomp.syscalls[1].args[0].op: unknown seccomp operator",
            ),
        ] {
            let mut v = base.clone();
            *v.pointer_mut(ptr).unwrap() = json!(bad);
            let m = explain_json(&v).unwrap_or_default();
            assert!(m.contains(want), "{m:?} should contain {want:?}");
        }
    }
}
