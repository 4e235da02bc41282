//! A short cut past the bridge for frames between two containers of one network.
//!
//! On a host where br_netfilter is loaded (Docker, Podman and Kubernetes load it; the
//! `bridge-nf-call-*` switches are host-wide), every frame the bridge forwards also walks the
//! IPv4 netfilter hooks: container-to-container throughput lost a sixth to that walk here, and
//! berth cannot turn it off for its own bridges alone. So each container's host-side veth gets
//! a tc program on its ingress that looks the frame's destination MAC up in a map of the
//! network's containers (MAC -> host-side veth) and, on a hit, hands the frame straight to
//! that container's interface with `bpf_redirect_peer` (into its namespace, the same single
//! hop a bare veth pair makes). Everything else (ARP and other broadcasts, the gateway, other
//! networks, unknown MACs) takes the bridge as before; so does everything when the bypass
//! could not be set up. What the bridge path would do to such a frame is nothing: berth's
//! firewall neither filters nor tracks traffic inside one network.
//!
//! The map belongs to the bridge: a small program attached to the bridge's own ingress (the
//! "anchor", it only holds the map) keeps it alive and lets any berth process find it (filter
//! -> program id -> map id), with no file to pin and nothing to clean up: deleting the bridge
//! frees the anchor, and the map goes with the last program that uses it. A container's entry
//! is added when it joins and removed when it leaves (stop, disconnect, a failed start, crash
//! repair), and only while it is the container's own (a duplicate MAC's entry stays with the
//! port that has it). An entry left behind names an interface index that the kernel does not
//! hand out again until its 31-bit counter wraps (short of someone creating a link with that
//! index explicitly), and frames for it are dropped, where the bridge would have had nowhere to
//! send them either.
//!
//! The trade-off: frames between two containers of one berth network no longer pass the
//! bridge's own filtering either (ebtables, nftables' bridge family, br_netfilter rules that
//! others put on berth's bridges, port flags). berth's bridges are its own and berth puts no
//! such rule there; inside one network everything is allowed, as on Docker's bridges with
//! inter-container communication on. If someone deletes a bridge while its containers run, the
//! surviving ports keep the old map among themselves until they go (they can reach nothing
//! else: the bridge is gone), and a new bridge of that name starts a new map.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use berth_ebpf::op::*;
use berth_ebpf::{BPF_PROG_TYPE_SCHED_CLS, Insn, Program, insn};

use crate::netlink::Netlink;

/// Filter names on the bridge's and on each port's ingress.
const ANCHOR: &str = "berth-anchor";
const PORT: &str = "berth-bypass";
/// A network has at most a /16's worth of containers; entries are allocated as they come.
const MAX_ENTRIES: u32 = 65536;

// struct __sk_buff offsets, helper ids, return codes (include/uapi/linux/bpf.h, pkt_cls.h).
const SKB_IFINDEX: i16 = 40;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_SKB_CHANGE_TYPE: i32 = 32;
const FN_REDIRECT_PEER: i32 = 155;
const PACKET_HOST: i32 = 0;
const TC_ACT_UNSPEC: i32 = -1;

/// The port program. r6 the context; r2/r3 the frame's start and end; the key (6 bytes of
/// destination MAC) at r10-8; r7 the target's index, r8 the port's own.
fn port_program(map: BorrowedFd) -> Vec<Insn> {
    let [ld0, ld1] = berth_ebpf::ld_map_fd(1, map);
    vec![
        insn(ALU64_MOV_X, 6, 1, 0, 0),
        insn(LDX_MEM_W, 2, 6, SKB_DATA, 0),
        insn(LDX_MEM_W, 3, 6, SKB_DATA_END, 0),
        insn(ALU64_MOV_X, 4, 2, 0, 0),
        insn(ALU64_ADD_K, 4, 0, 0, 6),
        insn(JMP_JGT_X, 4, 3, 20, 0), // shorter than a MAC: pass
        insn(LDX_MEM_W, 5, 2, 0, 0),
        insn(STX_MEM_W, 10, 5, -8, 0),
        insn(LDX_MEM_H, 5, 2, 4, 0),
        insn(STX_MEM_H, 10, 5, -4, 0),
        ld0,
        ld1,
        insn(ALU64_MOV_X, 2, 10, 0, 0),
        insn(ALU64_ADD_K, 2, 0, 0, -8),
        insn(JMP_CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM),
        insn(JMP_JEQ_K, 0, 0, 10, 0), // not a container of this network: pass
        insn(LDX_MEM_W, 7, 0, 0, 0),
        // A frame for the sender itself: the bridge would drop it (no hairpin), so does pass.
        insn(LDX_MEM_W, 8, 6, SKB_IFINDEX, 0),
        insn(JMP_JEQ_X, 7, 8, 7, 0),
        // The frame was addressed to another host as far as this veth is concerned; for the
        // target's interface it is its own (else its IP layer drops it).
        insn(ALU64_MOV_X, 1, 6, 0, 0),
        insn(ALU64_MOV_K, 2, 0, 0, PACKET_HOST),
        insn(JMP_CALL, 0, 0, 0, FN_SKB_CHANGE_TYPE),
        insn(ALU64_MOV_X, 1, 7, 0, 0),
        insn(ALU64_MOV_K, 2, 0, 0, 0),
        insn(JMP_CALL, 0, 0, 0, FN_REDIRECT_PEER), // TC_ACT_REDIRECT, or TC_ACT_SHOT
        insn(JMP_EXIT, 0, 0, 0, 0),
        // pass: on to the next filter, then the bridge
        insn(ALU64_MOV_K, 0, 0, 0, TC_ACT_UNSPEC),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ]
}

/// The anchor: passes everything; it exists to hold the map.
fn anchor_program(map: BorrowedFd) -> Vec<Insn> {
    let [ld0, ld1] = berth_ebpf::ld_map_fd(1, map);
    vec![ld0, ld1, insn(ALU64_MOV_K, 0, 0, 0, TC_ACT_UNSPEC), insn(JMP_EXIT, 0, 0, 0, 0)]
}

fn load(name: &str, insns: &[Insn]) -> io::Result<OwnedFd> {
    berth_ebpf::load(&Program { prog_type: BPF_PROG_TYPE_SCHED_CLS, expected_attach_type: 0, name, insns })
}

/// The map held by the anchor on the bridge's ingress, if there is one.
fn find_map(nl: &mut Netlink, bridge: u32) -> io::Result<Option<OwnedFd>> {
    for (name, id) in nl.ingress_programs(bridge)? {
        if name == ANCHOR {
            let prog = berth_ebpf::prog_by_id(id)?;
            if let Some(map) = berth_ebpf::map_ids_of(prog.as_fd())?.first() {
                return berth_ebpf::map_by_id(*map).map(Some);
            }
        }
    }
    Ok(None)
}

/// The bridge's map, made with its anchor when missing. Two processes racing here both try to
/// attach an anchor at the same handle; the loser takes the winner's map.
fn bridge_map(nl: &mut Netlink, bridge: u32) -> io::Result<OwnedFd> {
    if let Some(map) = find_map(nl, bridge)? {
        return Ok(map);
    }
    let map = berth_ebpf::create_hash_map("berth_bypass", 6, 4, MAX_ENTRIES)?;
    let anchor = load("berth_anchor", &anchor_program(map.as_fd()))?;
    nl.add_clsact(bridge)?;
    match nl.add_ingress_program(bridge, anchor.as_fd(), ANCHOR) {
        Ok(()) => Ok(map),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => find_map(nl, bridge)?.ok_or(e),
        Err(e) => Err(e),
    }
}

/// Puts the container's interface (its MAC, behind host-side veth `port`) on the bypass of the
/// bridge: an entry in the map, the program on the port's ingress, and a static entry in the
/// bridge's own forwarding table (frames from the host keep going straight to the port, though
/// the bridge no longer sees the container's traffic to its neighbours to learn from, and no
/// other port can claim the MAC). A MAC that is the bridge's own, or that a live port of this
/// bridge already has in the map, stays off the map.
pub(crate) fn join(
    nl: &mut Netlink,
    bridge: u32,
    bridge_mac: Option<[u8; 6]>,
    port: u32,
    mac: [u8; 6],
) -> io::Result<()> {
    let map = bridge_map(nl, bridge)?;
    let mut v = [0u8; 4];
    let taken = berth_ebpf::map_lookup(map.as_fd(), &mac, &mut v)? && {
        let other = u32::from_ne_bytes(v);
        other != port && nl.link_by_index(other)?.is_some_and(|l| l.master == Some(bridge))
    };
    if bridge_mac != Some(mac) && !taken {
        nl.add_static_fdb(port, mac)?;
        berth_ebpf::map_update(map.as_fd(), &mac, &port.to_ne_bytes())?;
    }
    let prog = load("berth_bypass", &port_program(map.as_fd()))?;
    nl.add_clsact(port)?;
    nl.add_ingress_program(port, prog.as_fd(), PORT)
}

/// Takes `mac` off the bridge's map if its entry is this container's: it names `port` (the
/// container's host-side veth, while it still exists) or an interface that is no longer a port
/// of this bridge. An entry of another live port (a duplicate MAC) stays.
pub(crate) fn forget(nl: &mut Netlink, bridge: u32, mac: [u8; 6], port: Option<u32>) -> io::Result<()> {
    let Some(map) = find_map(nl, bridge)? else { return Ok(()) };
    let mut v = [0u8; 4];
    if !berth_ebpf::map_lookup(map.as_fd(), &mac, &mut v)? {
        return Ok(());
    }
    let stored = u32::from_ne_bytes(v);
    if Some(stored) == port || nl.link_by_index(stored)?.is_none_or(|l| l.master != Some(bridge)) {
        berth_ebpf::map_delete(map.as_fd(), &mac)?;
    }
    Ok(())
}

/// [`forget`] for the engine: the container with this MAC, host-side veth `port` (by name),
/// has left the bridge or is leaving it (stop, disconnect, a failed start, crash repair).
pub fn leave(bridge: &str, mac: [u8; 6], port: &str) -> io::Result<()> {
    let mut nl = Netlink::open()?;
    let Some(index) = nl.link_index(bridge)? else { return Ok(()) };
    let port = nl.link_index(port)?;
    forget(&mut nl, index, mac, port)
}

/// The host-side veth index the bridge's bypass has for `mac`, if any (for tests and checks).
pub fn entry(bridge: &str, mac: [u8; 6]) -> io::Result<Option<u32>> {
    let mut nl = Netlink::open()?;
    let Some(index) = nl.link_index(bridge)? else { return Ok(None) };
    let Some(map) = find_map(&mut nl, index)? else { return Ok(None) };
    let mut v = [0u8; 4];
    Ok(berth_ebpf::map_lookup(map.as_fd(), &mac, &mut v)?.then(|| u32::from_ne_bytes(v)))
}

/// Whether the link's ingress has the bypass program.
pub fn on_port(port: &str) -> io::Result<bool> {
    let mut nl = Netlink::open()?;
    let Some(index) = nl.link_index(port)? else { return Ok(false) };
    Ok(nl.ingress_programs(index)?.iter().any(|(n, _)| n == PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_out_land_on_pass() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let p = port_program(null.as_fd());
        let pass = p.len() - 2;
        assert_eq!(p[pass], insn(ALU64_MOV_K, 0, 0, 0, TC_ACT_UNSPEC));
        let jumps: Vec<usize> =
            (0..p.len()).filter(|&i| matches!(p[i].code, JMP_JGT_X | JMP_JEQ_K | JMP_JEQ_X)).collect();
        assert_eq!(jumps.len(), 3);
        for i in jumps {
            assert_eq!((i as i64 + 1 + p[i].off as i64) as usize, pass, "jump at {i}");
        }
        assert_eq!(p[pass - 1].code, JMP_EXIT, "the redirect's result is returned");
    }
}
