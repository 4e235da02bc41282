//! berth's registry client, following the OCI distribution spec 1.1: endpoints over HTTPS
//! (system roots plus per-registry CAs from certs.d directories) or, for loopback and
//! registries configured insecure, plain HTTP; anonymous, Basic and Bearer token auth with
//! credentials from Docker's auth file; manifests, resumable verified blob downloads, blob
//! existence checks, cross-repository mounts, monolithic and chunked uploads.
//!
//! It speaks HTTP only; what to fetch and where it goes (the content store, the state DB) is
//! the engine's business (`berth-engine`'s `pull` module).

pub mod auth;
pub mod client;
pub mod config;

pub use auth::{AuthFile, Credentials};
pub use client::{BlobReader, Client, FetchedManifest, Mount, Repo};
pub use config::Config;
