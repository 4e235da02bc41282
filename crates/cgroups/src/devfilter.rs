//! The cgroup v2 device filter. v2 has no devices controller: the kernel asks every
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to a process's cgroup (and its ancestors)
//! whether an open or mknod of a device node is allowed. We compile `linux.resources.devices`
//! into such a program, load it with bpf(2) and attach it to the container's cgroup.
//!
//! Semantics, as the v1 controller's for the usual rule lists: the rules apply in order and a
//! later rule overrides an earlier one. Each access bit asked for (read, write, mknod) is
//! decided on its own by the last rule that matches the device and names that bit; a bit no
//! rule speaks about is allowed (a v1 cgroup inherits "allow all" too). Lists start with
//! `deny a *:* rwm` in practice (runc's and Docker's default), so everything not allowed later
//! is denied.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::{Result, err, invalid};

pub use berth_ebpf::Insn;
use berth_ebpf::op::*;
use berth_ebpf::{BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, insn};

// The context (struct bpf_cgroup_dev_ctx): access_type = access << 16 | type, major, minor.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;

/// A device rule in the program's terms. `None` matches anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub typ: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// ACC_* bits.
    pub access: u32,
}

impl Rule {
    fn matches_all_devices(&self) -> bool {
        self.typ.is_none() && self.major.is_none() && self.minor.is_none()
    }
}

/// The OCI rules, checked. Negative or absent numbers are wildcards, as in v1.
pub fn rules(devs: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>> {
    let mut out = Vec::with_capacity(devs.len());
    for (i, d) in devs.iter().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        let typ = match d.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::P) => {
                return Err(invalid(format!("{field}: type p (a FIFO) is not a device a cgroup rule can name")));
            }
        };
        let num = |n: Option<i64>, what: &str| -> Result<Option<u32>> {
            match n {
                None => Ok(None),
                Some(n) if n < 0 => Ok(None),
                Some(n) if n <= i32::MAX as i64 => Ok(Some(n as u32)),
                Some(n) => Err(invalid(format!("{field}: {what} {n} is out of range"))),
            }
        };
        let (major, minor) =
            if typ.is_none() { (None, None) } else { (num(d.major(), "major")?, num(d.minor(), "minor")?) };
        let mut access = 0;
        let text = d.access().as_deref().unwrap_or("rwm");
        for c in text.chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => return Err(invalid(format!("{field}: access {text:?} may only hold r, w and m"))),
            };
        }
        if text.is_empty() {
            access = ACC_READ | ACC_WRITE | ACC_MKNOD;
        }
        out.push(Rule { allow: d.allow(), typ, major, minor, access });
    }
    Ok(out)
}

/// Compiles the rules (see the module's comment for the semantics). Registers: r1 the context,
/// then scratch; r2 the device type, r3 the access asked for, r4 major, r5 minor.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for bit in [ACC_MKNOD, ACC_READ, ACC_WRITE] {
        // The rules that speak about this bit, last first, up to the first that matches every
        // device (the ones before it can never decide).
        let mut chain = Vec::new();
        for r in rules.iter().rev().filter(|r| r.access & bit != 0) {
            chain.push(*r);
            if r.matches_all_devices() {
                break;
            }
        }
        let block_len = |r: &Rule| {
            let conds = r.typ.is_some() as usize + r.major.is_some() as usize + r.minor.is_some() as usize;
            conds + if r.allow { 1 } else { 2 }
        };
        // r1 = access & bit; if not asked for, skip the section.
        let head = 3;
        let total = head + chain.iter().map(block_len).sum::<usize>();
        p.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
        p.push(insn(ALU32_AND_K, 1, 0, 0, bit as i32));
        p.push(insn(JMP_JEQ_K, 1, 0, (total - head) as i16, 0));
        let mut pos = head;
        for r in &chain {
            let len = block_len(r);
            let mut k = 0;
            for (reg, val) in [(2u8, r.typ), (4, r.major), (5, r.minor)] {
                if let Some(v) = val {
                    // Not this device: on to the next rule (right after this block).
                    p.push(insn(JMP_JNE_K, reg, 0, (len - k - 1) as i16, v as i32));
                    k += 1;
                }
            }
            if r.allow {
                // This bit is allowed: on to the next bit.
                p.push(insn(JMP_JA, 0, 0, (total - pos - len) as i16, 0));
            } else {
                p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
                p.push(insn(JMP_EXIT, 0, 0, 0, 0));
            }
            pos += len;
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Loads the program; a refusal carries the verifier's last words.
pub fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let p = berth_ebpf::Program {
        prog_type: berth_ebpf::BPF_PROG_TYPE_CGROUP_DEVICE,
        expected_attach_type: BPF_CGROUP_DEVICE,
        name: "berth_dev",
        insns: prog,
    };
    berth_ebpf::load(&p).map_err(|e| err("linux.resources.devices: the cgroup v2 device filter", e))
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| invalid("cgroup path has a NUL"))?;
    // SAFETY: open(2) of a directory with a valid path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(err(format!("opening {}", dir.display()), std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How many device programs are attached to the cgroup at `dir` (not counting its ancestors').
pub fn attached(dir: &Path) -> Result<usize> {
    let cg = open_dir(dir)?;
    berth_ebpf::cgroup_query(cg.as_fd(), BPF_CGROUP_DEVICE)
        .map(|(ids, _)| ids.len())
        .map_err(|e| err(format!("querying the device programs of {}", dir.display()), e))
}

/// Compiles `devs`, attaches the program to the cgroup at `dir` and then detaches the programs
/// that were there before (an `update`): never a moment without a filter.
pub fn apply(dir: &Path, devs: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = load(&program(&rules(devs)?))?;
    let cg = open_dir(dir)?;
    let ctx = |what: &str| format!("linux.resources.devices: {what} the device filter of {}", dir.display());
    let (old, flags) = berth_ebpf::cgroup_query(cg.as_fd(), BPF_CGROUP_DEVICE).map_err(|e| err(ctx("querying"), e))?;
    // Programs attached by someone else without BPF_F_ALLOW_MULTI can only be replaced.
    let multi = old.is_empty() || flags & BPF_F_ALLOW_MULTI != 0;
    berth_ebpf::cgroup_attach(cg.as_fd(), prog.as_fd(), BPF_CGROUP_DEVICE, if multi { BPF_F_ALLOW_MULTI } else { 0 })
        .map_err(|e| err(ctx("attaching"), e))?;
    if multi {
        for id in old {
            let Ok(old_fd) = berth_ebpf::prog_by_id(id) else { continue };
            berth_ebpf::cgroup_detach(cg.as_fd(), old_fd.as_fd(), BPF_CGROUP_DEVICE)
                .map_err(|e| err(ctx("detaching the previous"), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs a program of the instructions [`program`] emits on one request, as the kernel would.
    fn run(p: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access << 16 | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = ctx[i.off as usize / 4] as u64;
                }
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JA => pc = (pc as i64 + i.off as i64) as usize,
                JMP_JEQ_K if r[dst] == i.imm as i64 as u64 => pc = (pc as i64 + i.off as i64) as usize,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc = (pc as i64 + i.off as i64) as usize,
                JMP_JEQ_K | JMP_JNE_K => {}
                JMP_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
            assert!(pc < p.len(), "jumped out of the program");
        }
        panic!("no exit");
    }

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    const C: u32 = DEV_CHAR;
    const B: u32 = DEV_BLOCK;
    const R: u32 = ACC_READ;
    const W: u32 = ACC_WRITE;
    const M: u32 = ACC_MKNOD;

    /// runc's default list: deny everything, then mknod of any char/block device and the usual
    /// nodes (null, zero, full, tty, urandom, random, ptmx, pts).
    #[test]
    fn default_container_list() {
        use LinuxDeviceType::{A, B as Blk, C as Chr};
        let mut devs = vec![rule(false, A, None, None, "rwm")];
        devs.push(rule(true, Chr, None, None, "m"));
        devs.push(rule(true, Blk, None, None, "m"));
        for (maj, min) in [
            (1, Some(3)),
            (1, Some(5)),
            (1, Some(7)),
            (5, Some(0)),
            (1, Some(9)),
            (1, Some(8)),
            (5, Some(2)),
            (136, None),
        ] {
            devs.push(rule(true, Chr, Some(maj), min, "rwm"));
        }
        let p = program(&rules(&devs).unwrap());
        let allow = |t, a, maj, min| run(&p, t, a, maj, min) == 1;
        assert!(allow(C, R | W, 1, 3), "/dev/null rw");
        assert!(allow(C, R, 1, 9), "/dev/urandom");
        assert!(allow(C, R | W, 136, 7), "a pty slave: any minor of 136");
        assert!(allow(C, M, 4, 1), "mknod of any char device");
        assert!(allow(B, M, 8, 0), "mknod of any block device");
        assert!(!allow(B, R, 8, 0), "reading a disk");
        assert!(!allow(C, W, 4, 1), "writing a tty");
        assert!(!allow(C, R | M, 4, 1), "read+mknod: read is denied");
        assert!(!allow(C, R, 1, 1), "/dev/mem");
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        use LinuxDeviceType::{A, C as Chr};
        // Everything allowed, /dev/null's write denied, then all of major 1 allowed again for
        // reading only.
        let devs = vec![
            rule(true, A, None, None, "rwm"),
            rule(false, Chr, Some(1), Some(3), "w"),
            rule(true, Chr, Some(1), None, "r"),
        ];
        let p = program(&rules(&devs).unwrap());
        assert_eq!(run(&p, C, R, 1, 3), 1);
        assert_eq!(run(&p, C, W, 1, 3), 0);
        assert_eq!(run(&p, C, R | W, 1, 3), 0, "write denied denies read+write");
        assert_eq!(run(&p, C, W, 1, 5), 1);
        assert_eq!(run(&p, B, R | W | M, 8, 0), 1);
        // A deny of everything at the end wins over all before it.
        let mut devs = devs;
        devs.push(rule(false, A, None, None, "rwm"));
        let p = program(&rules(&devs).unwrap());
        assert_eq!(run(&p, C, R, 1, 3), 0);
        // ...and the rules before it are not even compiled.
        assert_eq!(p.len(), 6 + 3 * (3 + 2) + 2);
    }

    #[test]
    fn no_rule_means_allowed_and_bad_rules_fail() {
        let p = program(&[]);
        assert_eq!(run(&p, C, R | W | M, 1, 3), 1);
        let bad = [
            rule(true, LinuxDeviceType::P, Some(1), Some(3), "rw"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rx"),
            rule(true, LinuxDeviceType::C, Some(1 << 40), Some(3), "r"),
        ];
        for b in bad {
            let e = rules(&[b]).unwrap_err().to_string();
            assert!(e.contains("linux.resources.devices[0]"), "{e}");
        }
        // Negative numbers are wildcards (runc's -1).
        let r = rules(&[rule(true, LinuxDeviceType::C, Some(-1), Some(-1), "r")]).unwrap();
        assert_eq!((r[0].major, r[0].minor), (None, None));
    }

    /// The exact bytes for a small list, so that a change of encoding is seen.
    #[test]
    fn encoding() {
        let devs =
            [rule(false, LinuxDeviceType::A, None, None, "rwm"), rule(true, LinuxDeviceType::C, Some(1), Some(3), "r")];
        let p = program(&rules(&devs).unwrap());
        let want = [
            insn(LDX_MEM_W, 2, 1, 0, 0),
            insn(ALU32_AND_K, 2, 0, 0, 0xffff),
            insn(LDX_MEM_W, 3, 1, 0, 0),
            insn(ALU32_RSH_K, 3, 0, 0, 16),
            insn(LDX_MEM_W, 4, 1, 4, 0),
            insn(LDX_MEM_W, 5, 1, 8, 0),
            // mknod: only the deny-all speaks about it.
            insn(ALU64_MOV_X, 1, 3, 0, 0),
            insn(ALU32_AND_K, 1, 0, 0, M as i32),
            insn(JMP_JEQ_K, 1, 0, 2, 0),
            insn(ALU64_MOV_K, 0, 0, 0, 0),
            insn(JMP_EXIT, 0, 0, 0, 0),
            // read: c 1:3 allowed, then the deny-all.
            insn(ALU64_MOV_X, 1, 3, 0, 0),
            insn(ALU32_AND_K, 1, 0, 0, R as i32),
            insn(JMP_JEQ_K, 1, 0, 6, 0),
            insn(JMP_JNE_K, 2, 0, 3, C as i32),
            insn(JMP_JNE_K, 4, 0, 2, 1),
            insn(JMP_JNE_K, 5, 0, 1, 3),
            insn(JMP_JA, 0, 0, 2, 0),
            insn(ALU64_MOV_K, 0, 0, 0, 0),
            insn(JMP_EXIT, 0, 0, 0, 0),
            // write: the deny-all.
            insn(ALU64_MOV_X, 1, 3, 0, 0),
            insn(ALU32_AND_K, 1, 0, 0, W as i32),
            insn(JMP_JEQ_K, 1, 0, 2, 0),
            insn(ALU64_MOV_K, 0, 0, 0, 0),
            insn(JMP_EXIT, 0, 0, 0, 0),
            insn(ALU64_MOV_K, 0, 0, 0, 1),
            insn(JMP_EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(p, want);
    }
}
