//! Layer storage: untrusted layer tars unpacked safely, layers shared by chain id, and overlay
//! roots for containers.

pub mod copydriver;
pub mod layers;
pub mod rootfs;
pub mod tarball;
pub mod unpack;
pub mod verify;
pub mod xattrs;

pub use layers::{Layers, remove_tree};
pub use rootfs::{RootFs, Shift};
pub use unpack::{Limits, Stats};
