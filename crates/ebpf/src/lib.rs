//! eBPF for berth: the instruction encoding and the few bpf(2) commands that the cgroup v2
//! device filter (berth-cgroups) and the bridge bypass (berth-network) use. Programs are
//! assembled in Rust by their users; nothing here knows what they do.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One instruction of the eBPF machine (struct bpf_insn). The register nibbles are in the
/// order of a little-endian machine (x86_64, aarch64), the only ones berth builds for.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn dst(&self) -> usize {
        (self.regs & 0xf) as usize
    }
    pub fn src(&self) -> usize {
        (self.regs >> 4) as usize
    }
}

/// Opcodes (include/uapi/linux/bpf.h, bpf_common.h): class | mode or operation | source.
pub mod op {
    pub const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    pub const LDX_MEM_H: u8 = 0x69; // BPF_LDX | BPF_MEM | BPF_H
    pub const STX_MEM_W: u8 = 0x63; // BPF_STX | BPF_MEM | BPF_W
    pub const STX_MEM_H: u8 = 0x6b; // BPF_STX | BPF_MEM | BPF_H
    pub const LD_IMM_DW: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW: two instructions
    pub const ALU32_AND_K: u8 = 0x54;
    pub const ALU32_RSH_K: u8 = 0x74;
    pub const ALU64_ADD_K: u8 = 0x07;
    pub const ALU64_MOV_X: u8 = 0xbf;
    pub const ALU64_MOV_K: u8 = 0xb7;
    pub const JMP_JA: u8 = 0x05;
    pub const JMP_JEQ_K: u8 = 0x15;
    pub const JMP_JNE_K: u8 = 0x55;
    pub const JMP_JGT_X: u8 = 0x2d;
    pub const JMP_JEQ_X: u8 = 0x1d;
    pub const JMP_CALL: u8 = 0x85;
    pub const JMP_EXIT: u8 = 0x95;
}

pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

/// `dst = map` (the two-instruction load of a map by its fd, BPF_PSEUDO_MAP_FD): the kernel
/// swaps in the map and keeps a reference to it for as long as the program lives. The fd must
/// still be open when the program is loaded.
pub fn ld_map_fd(dst: u8, map: BorrowedFd) -> [Insn; 2] {
    const BPF_PSEUDO_MAP_FD: u8 = 1;
    [insn(op::LD_IMM_DW, dst, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()), insn(0, 0, 0, 0, 0)]
}

// bpf(2) commands.
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_int = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;

pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
pub const BPF_CGROUP_DEVICE: u32 = 6;
pub const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_F_NO_PREALLOC: u32 = 1;

/// # Safety
/// `attr` must be the attribute struct of `cmd`, and every pointer in it valid for what the
/// kernel reads or writes through it.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: per the contract; the kernel zero-extends the struct to its own union.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A new fd the kernel returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a fresh fd that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let len = name.len().min(15);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    n
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// A program to load.
pub struct Program<'a> {
    pub prog_type: u32,
    /// 0 where the type has none.
    pub expected_attach_type: u32,
    /// At most 15 bytes are kept (shown by `bpftool prog`).
    pub name: &'a str,
    pub insns: &'a [Insn],
}

/// Loads the program. On a refusal it is loaded again with the verifier's log, whose last
/// lines go into the error; EPERM says which capability is missing.
pub fn load(p: &Program) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoad {
        prog_type: p.prog_type,
        insn_cnt: p.insns.len() as u32,
        insns: p.insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(p.name),
        expected_attach_type: p.expected_attach_type,
        ..Default::default()
    };
    // SAFETY: the instructions and the license outlive the call; no log buffer.
    let e = match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) => e,
    };
    let mut log = vec![0u8; 64 * 1024];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, and the log buffer is ours, of the size given.
    if let Ok(fd) = unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        return Ok(owned(fd));
    }
    let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).into_owned();
    let tail: String = text.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
    let hint = if e.raw_os_error() == Some(libc::EPERM) { " (needs CAP_BPF or CAP_SYS_ADMIN)" } else { "" };
    Err(io::Error::new(e.kind(), format!("loading the eBPF program {}{hint}: {e}: {tail}", p.name)))
}

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// A hash map (BPF_MAP_TYPE_HASH) of up to `max_entries` fixed-size keys and values, each
/// allocated when it is added (not all up front).
pub fn create_hash_map(name: &str, key_size: u32, value_size: u32, max_entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_HASH,
        key_size,
        value_size,
        max_entries,
        map_flags: BPF_F_NO_PREALLOC,
        map_name: name16(name),
        ..Default::default()
    };
    // SAFETY: no pointers in this command's attributes.
    unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.map(owned)
}

#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The key and value must have the map's sizes (the kernel reads and writes that many bytes),
/// and the map must be of a type whose value is one value (a per-CPU map's is one per CPU).
fn check_sizes(map: BorrowedFd, key: &[u8], value: Option<usize>) -> io::Result<()> {
    let info = map_info(map)?;
    if ![BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_LRU_HASH].contains(&info.map_type) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "eBPF map: not a hash or array map"));
    }
    if key.len() != info.key_size as usize || value.is_some_and(|v| v != info.value_size as usize) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "eBPF map: key or value of the wrong size"));
    }
    Ok(())
}

/// Inserts or replaces `key`'s value.
pub fn map_update(map: BorrowedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    check_sizes(map, key, Some(value.len()))?;
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key and value are live buffers of the map's sizes (checked), only read.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
}

/// Copies `key`'s value into `value`; false when the key is absent.
pub fn map_lookup(map: BorrowedFd, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    check_sizes(map, key, Some(value.len()))?;
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: the key is read and the value written, both of the map's sizes (checked).
    match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `key`; false when it was not there.
pub fn map_delete(map: BorrowedFd, key: &[u8]) -> io::Result<bool> {
    check_sizes(map, key, None)?;
    let mut attr = MapElem { map_fd: map.as_raw_fd() as u32, key: key.as_ptr() as u64, ..Default::default() };
    // SAFETY: the key is a live buffer of the map's key size (checked), only read.
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// An fd of the loaded program with this id (needs CAP_SYS_ADMIN).
pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut g = GetFdById { id, ..Default::default() };
    // SAFETY: no pointers in this command's attributes.
    unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut g) }.map(owned)
}

/// An fd of the map with this id (needs CAP_SYS_ADMIN).
pub fn map_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut g = GetFdById { id, ..Default::default() };
    // SAFETY: no pointers in this command's attributes.
    unsafe { bpf(BPF_MAP_GET_FD_BY_ID, &mut g) }.map(owned)
}

#[repr(C)]
#[derive(Default)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of struct bpf_prog_info, up to the map ids (the kernel fills what fits).
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
}

/// The head of struct bpf_map_info.
#[repr(C)]
#[derive(Default)]
struct MapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

fn map_info(map: BorrowedFd) -> io::Result<MapInfo> {
    let mut info = MapInfo::default();
    let mut attr = InfoByFd {
        bpf_fd: map.as_raw_fd() as u32,
        info_len: size_of::<MapInfo>() as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

/// The ids of the maps a loaded program uses.
pub fn map_ids_of(prog: BorrowedFd) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 16];
    let mut info = ProgInfo { nr_map_ids: ids.len() as u32, map_ids: ids.as_mut_ptr() as u64, ..Default::default() };
    let mut attr = InfoByFd {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of::<ProgInfo>() as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into `info` and at most nr_map_ids ids
    // into `ids`, which outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    ids.truncate((info.nr_map_ids as usize).min(16));
    Ok(ids)
}

#[repr(C)]
#[derive(Default)]
struct Attach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Attaches `prog` to the cgroup open at `cgroup`.
pub fn cgroup_attach(cgroup: BorrowedFd, prog: BorrowedFd, attach_type: u32, flags: u32) -> io::Result<()> {
    let mut a = Attach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        ..Default::default()
    };
    // SAFETY: no pointers in this command's attributes.
    unsafe { bpf(BPF_PROG_ATTACH, &mut a) }.map(|_| ())
}

/// Detaches `prog` from the cgroup open at `cgroup`.
pub fn cgroup_detach(cgroup: BorrowedFd, prog: BorrowedFd, attach_type: u32) -> io::Result<()> {
    let mut a = Attach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    // SAFETY: no pointers in this command's attributes.
    unsafe { bpf(BPF_PROG_DETACH, &mut a) }.map(|_| ())
}

#[repr(C)]
#[derive(Default)]
struct Query {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// Ids and attach flags of the programs of this type attached to the cgroup itself (not its
/// ancestors').
pub fn cgroup_query(cgroup: BorrowedFd, attach_type: u32) -> io::Result<(Vec<u32>, u32)> {
    let mut ids = vec![0u32; 64];
    let mut q = Query {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most prog_cnt ids into `ids`, which outlives the call.
    unsafe { bpf(BPF_PROG_QUERY, &mut q) }?;
    ids.truncate((q.prog_cnt as usize).min(64));
    Ok((ids, q.attach_flags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn encoding() {
        let i = insn(op::LDX_MEM_W, 2, 1, 4, 0);
        assert_eq!((i.dst(), i.src()), (2, 1));
        assert_eq!(size_of::<Insn>(), 8);
        // SAFETY: Insn is repr(C), 8 bytes of plain integers.
        let raw: [u8; 8] = unsafe { std::mem::transmute(i) };
        assert_eq!(raw, [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn hash_map_round_trip_and_a_program_that_uses_it() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let map = create_hash_map("berth_test", 6, 4, 8).unwrap();
        let key = [2u8, 0, 0, 0, 0, 1];
        let mut v = [0u8; 4];
        assert!(!map_lookup(map.as_fd(), &key, &mut v).unwrap());
        map_update(map.as_fd(), &key, &7u32.to_ne_bytes()).unwrap();
        assert!(map_lookup(map.as_fd(), &key, &mut v).unwrap());
        assert_eq!(u32::from_ne_bytes(v), 7);
        assert!(map_update(map.as_fd(), &key[..5], &v).is_err(), "a short key is refused before the kernel sees it");
        // A program that holds the map: its map ids lead back to the same map.
        let [a, b] = ld_map_fd(1, map.as_fd());
        let insns = [a, b, insn(op::ALU64_MOV_K, 0, 0, 0, 0), insn(op::JMP_EXIT, 0, 0, 0, 0)];
        let prog = load(&Program {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            expected_attach_type: 0,
            name: "berth_test",
            insns: &insns,
        })
        .unwrap();
        let ids = map_ids_of(prog.as_fd()).unwrap();
        assert_eq!(ids.len(), 1);
        let again = map_by_id(ids[0]).unwrap();
        assert!(map_lookup(again.as_fd(), &key, &mut v).unwrap());
        assert!(map_delete(again.as_fd(), &key).unwrap());
        assert!(!map_delete(map.as_fd(), &key).unwrap());
        // The verifier's words come back on a bad program.
        let bad = [insn(op::JMP_EXIT, 0, 0, 0, 0)];
        let e =
            load(&Program { prog_type: BPF_PROG_TYPE_SCHED_CLS, expected_attach_type: 0, name: "bad", insns: &bad })
                .unwrap_err();
        assert!(e.to_string().contains("R0"), "{e}");
    }
}
