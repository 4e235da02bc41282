//! Container networking, netavark's shape in our own code: the link layer over rtnetlink
//! (bridge, veth pair, addresses, routes), address management, the nftables table berth owns
//! (masquerade, published ports, isolation), and the small DNS server each user-defined network
//! gets. Everything here works in the network namespace of the calling process; the engine
//! decides which namespace that is and keeps the state (leases, ports) in its database.

pub mod bypass;
pub mod dns;
pub mod firewall;
pub mod ipam;
pub mod netlink;
