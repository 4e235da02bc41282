//! Images: the content store, references, manifests and configs, and image archives.

pub mod digest;
pub mod reference;
pub mod store;

pub use digest::{Algo, Digest};
pub use reference::Reference;
pub use store::Store;
pub mod archive;
pub mod manifest;

pub use manifest::{ImageConfig, Manifest, Platform};
