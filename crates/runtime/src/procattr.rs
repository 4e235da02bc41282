//! What the kernel keeps per task and the spec sets for the container's processes:
//! `process.ioPriority` (ioprio_set), `process.scheduler` (sched_setattr),
//! `process.execCPUAffinity` (sched_setaffinity around `exec`), `linux.personality`
//! (personality) and `linux.memoryPolicy` (set_mempolicy).
//!
//! [`Attrs::new`] checks and converts the spec's values in the runtime, before anything is
//! forked, so that a bad value fails `create`/`exec` with the field's name; [`Attrs::apply`]
//! runs in the container's process just before its last steps (capabilities, seccomp, execve):
//! everything here is inherited across execve and by the program's children.

use anyhow::{Result, bail};
use oci_spec::runtime::{
    IOPriorityClass, Linux, LinuxPersonalityDomain, LinuxSchedulerFlag, LinuxSchedulerPolicy, MemoryPolicyFlagType,
    MemoryPolicyModeType, Process,
};

/// Highest CPU or NUMA node number accepted in a list (the kernel's own limits are 8192 CPUs
/// and 1024 nodes); bounds the masks we build from untrusted text.
const MAX_CPU: usize = 8191;
const MAX_NODE: usize = 1023;

/// A set of CPUs or NUMA nodes as the kernel takes it: bit n of word n/64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask(pub Vec<u64>);

impl Mask {
    /// Parses the kernel's list format, `0-3,7`. Empty text gives an empty mask.
    pub fn parse(field: &str, s: &str, max: usize) -> Result<Mask> {
        let mut words = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let num = |t: &str| -> Result<usize> {
                match t.parse::<usize>() {
                    Ok(n) if n <= max => Ok(n),
                    Ok(n) => bail!("{field}: {n} is above the highest number this runtime accepts ({max})"),
                    Err(_) => bail!("{field}: {s:?} is not a list such as 0-3,7"),
                }
            };
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (num(a.trim())?, num(b.trim())?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            if a > b {
                bail!("{field}: range {part:?} runs backwards");
            }
            for n in a..=b {
                if words.len() <= n / 64 {
                    words.resize(n / 64 + 1, 0u64);
                }
                words[n / 64] |= 1 << (n % 64);
            }
        }
        Ok(Mask(words))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

/// sched_attr(2), with the utilization clamps (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

const SCHED_DEADLINE: u32 = 6;

/// The memory policy as set_mempolicy(2) takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemPolicy {
    /// The mode with its MPOL_F_* flags or'ed in.
    pub mode: i32,
    pub nodes: Mask,
    /// For messages: the spec's words.
    pub text: String,
}

/// Everything of this module a process gets, checked and in the kernel's terms.
#[derive(Debug, Clone, Default)]
pub struct Attrs {
    /// IOPRIO_PRIO_VALUE(class, level).
    pub ioprio: Option<i32>,
    pub sched: Option<SchedAttr>,
    pub personality: Option<libc::c_ulong>,
    pub mempolicy: Option<MemPolicy>,
    /// execCPUAffinity.final, for `exec` only (the spec leaves the init alone).
    pub affinity_final: Option<Mask>,
}

impl Attrs {
    /// `exec`: whether the process is one started by `exec` (execCPUAffinity applies) rather
    /// than the container's init.
    pub fn new(linux: Option<&Linux>, p: &Process, exec: bool) -> Result<Attrs> {
        let mut a = Attrs::default();
        if let Some(io) = p.io_priority() {
            a.ioprio = Some(ioprio(io.class(), io.priority())?);
        }
        if let Some(s) = p.scheduler() {
            a.sched = Some(sched_attr(s)?);
        }
        if let Some(aff) = p.exec_cpu_affinity() {
            // Checked for the init too, though only `exec` uses it.
            if let Some(i) = aff.initial().as_deref() {
                Mask::parse("process.execCPUAffinity.initial", i, MAX_CPU)?;
            }
            if let Some(f) = aff.cpu_affinity_final().as_deref().filter(|f| !f.trim().is_empty()) {
                let m = Mask::parse("process.execCPUAffinity.final", f, MAX_CPU)?;
                if exec {
                    a.affinity_final = Some(m);
                }
            }
        }
        if let Some(l) = linux {
            if let Some(per) = l.personality() {
                a.personality = Some(personality(per.domain(), per.flags().as_deref().unwrap_or(&[]))?);
            }
            if let Some(mp) = l.memory_policy() {
                a.mempolicy = Some(mempolicy(mp.mode(), mp.nodes().as_deref(), mp.flags().as_deref().unwrap_or(&[]))?);
            }
        }
        Ok(a)
    }

    pub fn is_empty(&self) -> bool {
        self.ioprio.is_none()
            && self.sched.is_none()
            && self.personality.is_none()
            && self.mempolicy.is_none()
            && self.affinity_final.is_none()
    }

    /// Applies everything to the calling process. Runs in the container's process, in its
    /// cgroup, with its privileges still whole (raising a priority needs CAP_SYS_NICE).
    pub fn apply(&self) -> Result<()> {
        if let Some(m) = &self.affinity_final {
            set_affinity(m).map_err(|e| anyhow::anyhow!("process.execCPUAffinity.final: {}", affinity_error(&e)))?;
        }
        if let Some(v) = self.ioprio {
            const IOPRIO_WHO_PROCESS: libc::c_int = 1;
            // SAFETY: ioprio_set(2) with integer arguments.
            if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, v) } != 0 {
                let e = std::io::Error::last_os_error();
                bail!("process.ioPriority: ioprio_set: {}", privileged(&e, "the realtime class needs CAP_SYS_ADMIN"));
            }
        }
        if let Some(attr) = &self.sched {
            // SAFETY: sched_setattr(2) on ourselves with a sized, initialised struct.
            if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0u32) } != 0 {
                let e = std::io::Error::last_os_error();
                bail!("process.scheduler: sched_setattr: {}", sched_error(attr, &e));
            }
        }
        if let Some(mp) = &self.mempolicy {
            let (ptr, maxnode) = if mp.nodes.0.is_empty() {
                (std::ptr::null(), 0usize)
            } else {
                // The kernel reads maxnode - 1 bits: exactly our words.
                (mp.nodes.0.as_ptr(), mp.nodes.0.len() * 64 + 1)
            };
            // SAFETY: set_mempolicy(2) with a mask of `maxnode - 1` bits that we own.
            if unsafe { libc::syscall(libc::SYS_set_mempolicy, mp.mode, ptr, maxnode) } != 0 {
                let e = std::io::Error::last_os_error();
                let why = match e.raw_os_error() {
                    Some(libc::ENOSYS) => "this kernel has no NUMA support (CONFIG_NUMA)".to_string(),
                    Some(libc::EINVAL) => format!(
                        "the kernel refused it ({e}): a node that is not online or not in the container's cpuset.mems, or flags this kernel or mode does not take"
                    ),
                    _ => e.to_string(),
                };
                bail!("linux.memoryPolicy {}: set_mempolicy: {why}", mp.text);
            }
        }
        if let Some(per) = self.personality {
            // SAFETY: personality(2) with an integer; it returns the previous value or -1.
            if unsafe { libc::personality(per) } == -1 {
                bail!("linux.personality: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn privileged(e: &std::io::Error, hint: &str) -> String {
    if e.raw_os_error() == Some(libc::EPERM) { format!("{e} ({hint})") } else { e.to_string() }
}

fn ioprio(class: IOPriorityClass, level: i64) -> Result<i32> {
    if !(0..=7).contains(&level) {
        bail!("process.ioPriority.priority {level} is out of range (0 to 7)");
    }
    const IOPRIO_CLASS_SHIFT: i32 = 13;
    let c = match class {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        // The idle class has no levels.
        IOPriorityClass::IoprioClassIdle => return Ok(3 << IOPRIO_CLASS_SHIFT),
    };
    Ok((c << IOPRIO_CLASS_SHIFT) | level as i32)
}

/// The spec's scheduler as sched_attr, with runc's checks plus the kernel's rules for
/// SCHED_DEADLINE (so the error names the field rather than an EINVAL).
pub fn sched_attr(s: &oci_spec::runtime::Scheduler) -> Result<SchedAttr> {
    use LinuxSchedulerPolicy::*;
    let policy = match s.policy() {
        SchedOther => 0,
        SchedFifo => 1,
        SchedRr => 2,
        SchedBatch => 3,
        SchedIso => bail!("process.scheduler.policy SCHED_ISO is not implemented by Linux"),
        SchedIdle => 5,
        SchedDeadline => SCHED_DEADLINE,
    };
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        bail!("process.scheduler.nice {nice} is out of range (-20 to 19)");
    }
    let prio = s.priority().unwrap_or(0);
    let realtime = matches!(s.policy(), SchedFifo | SchedRr);
    if realtime && !(1..=99).contains(&prio) {
        bail!("process.scheduler.priority {prio} is out of range for {:?} (1 to 99)", s.policy());
    }
    if !realtime && prio != 0 {
        bail!("process.scheduler.priority can only be set for SCHED_FIFO or SCHED_RR");
    }
    let (runtime, deadline, period) = (s.runtime().unwrap_or(0), s.deadline().unwrap_or(0), s.period().unwrap_or(0));
    if policy == SCHED_DEADLINE {
        // The kernel's rules (__checkparam_dl): 1024 ns <= runtime <= deadline <= period.
        if runtime < 1024 {
            bail!("process.scheduler.runtime {runtime} ns is too small for SCHED_DEADLINE (at least 1024)");
        }
        if deadline < runtime {
            bail!("process.scheduler.deadline {deadline} ns is below the runtime {runtime} ns");
        }
        if period != 0 && period < deadline {
            bail!("process.scheduler.period {period} ns is below the deadline {deadline} ns");
        }
    } else if runtime != 0 || deadline != 0 || period != 0 {
        bail!("process.scheduler.runtime/deadline/period can only be set for SCHED_DEADLINE");
    }
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
        };
    }
    Ok(SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice,
        priority: prio as u32,
        runtime,
        deadline,
        period,
        util_min: 0,
        util_max: 0,
    })
}

fn sched_error(attr: &SchedAttr, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) if attr.policy == 1 || attr.policy == 2 => {
            let rt_group = std::path::Path::new("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists()
                || std::path::Path::new("/sys/fs/cgroup/cpu,cpuacct/cpu.rt_runtime_us").exists();
            if rt_group {
                format!(
                    "{e}: a realtime policy needs CAP_SYS_NICE and realtime CPU time in the container's cpu cgroup (linux.resources.cpu.realtimeRuntime; this kernel schedules realtime tasks by group)"
                )
            } else {
                format!("{e}: a realtime policy needs CAP_SYS_NICE")
            }
        }
        Some(libc::EPERM) => format!("{e}: raising the priority needs CAP_SYS_NICE"),
        Some(libc::EBUSY) if attr.policy == SCHED_DEADLINE => {
            format!("{e}: the SCHED_DEADLINE bandwidth asked for does not fit (admission control)")
        }
        Some(libc::EOPNOTSUPP) => format!("{e}: a flag this kernel does not support (utilization clamping?)"),
        _ => e.to_string(),
    }
}

/// The kernel's personality flags (include/uapi/linux/personality.h), by name. The spec lists
/// none yet; these are what `setarch` knows.
const PERSONALITY_FLAGS: &[(&str, libc::c_ulong)] = &[
    ("UNAME26", 0x0020000),
    ("ADDR_NO_RANDOMIZE", 0x0040000),
    ("FDPIC_FUNCPTRS", 0x0080000),
    ("MMAP_PAGE_ZERO", 0x0100000),
    ("ADDR_COMPAT_LAYOUT", 0x0200000),
    ("READ_IMPLIES_EXEC", 0x0400000),
    ("ADDR_LIMIT_32BIT", 0x0800000),
    ("SHORT_INODE", 0x1000000),
    ("WHOLE_SECONDS", 0x2000000),
    ("STICKY_TIMEOUTS", 0x4000000),
    ("ADDR_LIMIT_3GB", 0x8000000),
];

/// Names of the personality flags [`Attrs`] takes.
pub fn personality_flag_names() -> Vec<&'static str> {
    PERSONALITY_FLAGS.iter().map(|(n, _)| *n).collect()
}

fn personality(domain: LinuxPersonalityDomain, flags: &[String]) -> Result<libc::c_ulong> {
    let mut v: libc::c_ulong = match domain {
        LinuxPersonalityDomain::PerLinux => 0,
        LinuxPersonalityDomain::PerLinux32 => {
            if !cfg!(any(
                target_arch = "x86_64",
                target_arch = "aarch64",
                target_arch = "powerpc64",
                target_arch = "s390x"
            )) {
                bail!("linux.personality.domain LINUX32 needs a 64-bit host");
            }
            0x0008
        }
    };
    for f in flags {
        match PERSONALITY_FLAGS.iter().find(|(n, _)| n == f) {
            Some((_, bit)) => v |= bit,
            None => {
                bail!("linux.personality.flags: unknown flag {f:?} (known: {})", personality_flag_names().join(", "))
            }
        }
    }
    Ok(v)
}

const MPOL_F_STATIC_NODES: i32 = 1 << 15;
const MPOL_F_RELATIVE_NODES: i32 = 1 << 14;
const MPOL_F_NUMA_BALANCING: i32 = 1 << 13;

/// Mode names and numbers of set_mempolicy(2), for `features` too.
pub const MEMPOLICY_MODES: &[(&str, i32)] = &[
    ("MPOL_DEFAULT", 0),
    ("MPOL_PREFERRED", 1),
    ("MPOL_BIND", 2),
    ("MPOL_INTERLEAVE", 3),
    ("MPOL_LOCAL", 4),
    ("MPOL_PREFERRED_MANY", 5),
    ("MPOL_WEIGHTED_INTERLEAVE", 6),
];
pub const MEMPOLICY_FLAGS: &[&str] = &["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"];

fn mempolicy(mode: MemoryPolicyModeType, nodes: Option<&str>, flags: &[MemoryPolicyFlagType]) -> Result<MemPolicy> {
    use MemoryPolicyModeType::*;
    let (name, m) = match mode {
        MpolDefault => MEMPOLICY_MODES[0],
        MpolPreferred => MEMPOLICY_MODES[1],
        MpolBind => MEMPOLICY_MODES[2],
        MpolInterleave => MEMPOLICY_MODES[3],
        MpolLocal => MEMPOLICY_MODES[4],
        MpolPreferredMany => MEMPOLICY_MODES[5],
        MpolWeightedInterleave => MEMPOLICY_MODES[6],
    };
    let text_nodes = nodes.unwrap_or("");
    let mask = Mask::parse("linux.memoryPolicy.nodes", text_nodes, MAX_NODE)?;
    match mode {
        MpolDefault | MpolLocal if !mask.is_empty() => {
            bail!("linux.memoryPolicy: {name} takes no nodes (got {text_nodes:?})")
        }
        MpolBind | MpolInterleave | MpolPreferredMany | MpolWeightedInterleave if mask.is_empty() => {
            bail!("linux.memoryPolicy: {name} needs at least one node in nodes")
        }
        MpolPreferred if mask.count() > 1 => {
            bail!("linux.memoryPolicy: MPOL_PREFERRED takes one node (MPOL_PREFERRED_MANY takes several)")
        }
        _ => {}
    }
    let mut f = 0;
    let mut names = Vec::new();
    for fl in flags {
        let (n, bit) = match fl {
            MemoryPolicyFlagType::MpolFNumaBalancing => (MEMPOLICY_FLAGS[0], MPOL_F_NUMA_BALANCING),
            MemoryPolicyFlagType::MpolFRelativeNodes => (MEMPOLICY_FLAGS[1], MPOL_F_RELATIVE_NODES),
            MemoryPolicyFlagType::MpolFStaticNodes => (MEMPOLICY_FLAGS[2], MPOL_F_STATIC_NODES),
        };
        f |= bit;
        names.push(n);
    }
    if f & MPOL_F_STATIC_NODES != 0 && f & MPOL_F_RELATIVE_NODES != 0 {
        bail!("linux.memoryPolicy.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other");
    }
    if matches!(mode, MpolDefault | MpolLocal) && f != 0 {
        bail!("linux.memoryPolicy.flags: {name} takes no flags");
    }
    let text = if names.is_empty() {
        format!("{name} {text_nodes:?}")
    } else {
        format!("{name}|{} {text_nodes:?}", names.join("|"))
    };
    Ok(MemPolicy { mode: m | f, nodes: mask, text })
}

/// Sets the calling process's CPU affinity.
pub fn set_affinity(m: &Mask) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity(2) on ourselves with a mask of the given byte length.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setaffinity, 0, m.0.len() * 8, m.0.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling process's CPU affinity.
pub fn get_affinity() -> std::io::Result<Mask> {
    let mut words = vec![0u64; (MAX_CPU + 1) / 64];
    // SAFETY: sched_getaffinity(2) into a buffer of the given byte length.
    let rc = unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, words.len() * 8, words.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Mask(words))
}

pub fn affinity_error(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EINVAL) {
        format!("{e} (none of these CPUs is online, or none is allowed by the cgroup's cpuset)")
    } else {
        e.to_string()
    }
}

/// execCPUAffinity.initial of `p`, parsed (the spec's "runtime parent process" runs there
/// until it joins the container's cgroup).
pub fn initial_affinity(p: &Process) -> Result<Option<Mask>> {
    match p.exec_cpu_affinity().as_ref().and_then(|a| a.initial().as_deref()).filter(|s| !s.trim().is_empty()) {
        Some(s) => Ok(Some(Mask::parse("process.execCPUAffinity.initial", s, MAX_CPU)?)),
        None => Ok(None),
    }
}

/// The spec's names for two scheduler flags that oci-spec 0.10 spells differently
/// (`SCHED_RESET_ON_FORK`, `SCHED_FLAG_D_L_OVERRUN`): config.json bytes that mention them are
/// rewritten to oci-spec's names before they are parsed (a whole config.json or a
/// process.json for `exec --process`). Returns `None` when there is nothing to change (the
/// usual case: no copy, no second parse).
pub fn normalize_spec_json(data: &[u8]) -> Option<Vec<u8>> {
    const FIX: &[(&str, &str)] =
        &[("SCHED_FLAG_RESET_ON_FORK", "SCHED_RESET_ON_FORK"), ("SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_D_L_OVERRUN")];
    // A name spelled with \u escapes is not looked for: it fails to parse, with serde's message.
    let has = |pat: &[u8]| data.windows(pat.len()).any(|w| w == pat);
    if !FIX.iter().any(|(from, _)| has(from.as_bytes())) {
        return None;
    }
    let mut v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let mut changed = false;
    for pointer in ["/process/scheduler/flags", "/scheduler/flags"] {
        if let Some(serde_json::Value::Array(flags)) = v.pointer_mut(pointer) {
            for f in flags.iter_mut() {
                if let Some((_, to)) = FIX.iter().find(|(from, _)| f.as_str() == Some(from)) {
                    *f = serde_json::Value::String((*to).into());
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(Mask::parse("f", "0-3,7", MAX_CPU).unwrap(), Mask(vec![0b1000_1111]));
        assert_eq!(Mask::parse("f", "64", MAX_CPU).unwrap(), Mask(vec![0, 1]));
        assert!(Mask::parse("f", "", MAX_CPU).unwrap().is_empty());
        assert_eq!(Mask::parse("f", "1, 2", MAX_CPU).unwrap().count(), 2);
        for bad in ["3-1", "a", "-1", "1-", "9000", "99999999999999999999"] {
            let e = Mask::parse("process.execCPUAffinity.final", bad, MAX_CPU).unwrap_err().to_string();
            assert!(e.starts_with("process.execCPUAffinity.final"), "{bad}: {e}");
        }
    }

    fn sched(j: serde_json::Value) -> Result<SchedAttr> {
        sched_attr(&serde_json::from_value(j).unwrap())
    }

    #[test]
    fn scheduler_rules() {
        let a = sched(serde_json::json!({"policy": "SCHED_BATCH", "nice": 5})).unwrap();
        assert_eq!((a.policy, a.nice, a.size), (3, 5, 56));
        let a = sched(serde_json::json!({"policy": "SCHED_FIFO", "priority": 10, "flags": ["SCHED_RESET_ON_FORK"]}))
            .unwrap();
        assert_eq!((a.policy, a.priority, a.flags), (1, 10, 1));
        let a = sched(
            serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 10_000_000, "deadline": 50_000_000, "period": 100_000_000}),
        )
        .unwrap();
        assert_eq!((a.policy, a.runtime, a.deadline, a.period), (6, 10_000_000, 50_000_000, 100_000_000));
        for (j, want) in [
            (serde_json::json!({"policy": "SCHED_FIFO"}), "priority 0 is out of range"),
            (serde_json::json!({"policy": "SCHED_OTHER", "priority": 3}), "only be set for SCHED_FIFO"),
            (serde_json::json!({"policy": "SCHED_OTHER", "nice": 20}), "nice 20"),
            (serde_json::json!({"policy": "SCHED_OTHER", "runtime": 5}), "only be set for SCHED_DEADLINE"),
            (serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 100, "deadline": 1000}), "too small"),
            (serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 2000, "deadline": 1500}), "below the runtime"),
            (
                serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 2000, "deadline": 3000, "period": 2500}),
                "below the deadline",
            ),
            (serde_json::json!({"policy": "SCHED_ISO"}), "SCHED_ISO"),
        ] {
            let e = sched(j.clone()).unwrap_err().to_string();
            assert!(e.contains(want) && e.starts_with("process.scheduler"), "{j}: {e}");
        }
    }

    #[test]
    fn spec_flag_names_are_accepted() {
        let spec = br#"{"process": {"scheduler": {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_RECLAIM"]}}}"#;
        let fixed = normalize_spec_json(spec).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fixed).unwrap();
        let s: oci_spec::runtime::Scheduler = serde_json::from_value(v["process"]["scheduler"].clone()).unwrap();
        assert_eq!(sched_attr(&s).unwrap().flags, 0x01 | 0x04 | 0x02);
        assert!(normalize_spec_json(br#"{"process": {"args": ["sh"]}}"#).is_none());
    }

    #[test]
    fn ioprio_values() {
        assert_eq!(ioprio(IOPriorityClass::IoprioClassBe, 6).unwrap(), (2 << 13) | 6);
        assert_eq!(ioprio(IOPriorityClass::IoprioClassRt, 0).unwrap(), 1 << 13);
        assert_eq!(ioprio(IOPriorityClass::IoprioClassIdle, 0).unwrap(), 3 << 13);
        assert!(ioprio(IOPriorityClass::IoprioClassBe, 8).unwrap_err().to_string().contains("process.ioPriority"));
    }

    #[test]
    fn personalities_and_policies() {
        assert_eq!(personality(LinuxPersonalityDomain::PerLinux32, &["ADDR_NO_RANDOMIZE".into()]).unwrap(), 0x0040008);
        assert!(personality(LinuxPersonalityDomain::PerLinux, &["NOPE".into()]).is_err());
        use MemoryPolicyModeType::*;
        let p = mempolicy(MpolBind, Some("0"), &[MemoryPolicyFlagType::MpolFStaticNodes]).unwrap();
        assert_eq!((p.mode, p.nodes.clone()), (2 | MPOL_F_STATIC_NODES, Mask(vec![1])));
        assert!(mempolicy(MpolDefault, Some("0"), &[]).is_err());
        assert!(mempolicy(MpolBind, None, &[]).is_err());
        assert!(mempolicy(MpolPreferred, Some("0-1"), &[]).is_err());
        assert!(mempolicy(MpolPreferred, None, &[]).is_ok());
        assert!(
            mempolicy(
                MpolInterleave,
                Some("0"),
                &[MemoryPolicyFlagType::MpolFStaticNodes, MemoryPolicyFlagType::MpolFRelativeNodes]
            )
            .is_err()
        );
    }
}
