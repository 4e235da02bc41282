//! berth's OCI runtime as a library: the `berth-runtime` binary and the engine both use it.
//!
//! The process that calls [`container::create`] or [`container::Container::exec`] must be
//! single threaded: they fork and clone.

pub mod caps;
pub mod container;
pub mod criu;
pub mod hooks;
pub mod init;
pub mod mountopts;
pub mod ns;
pub mod procattr;
pub mod process;
pub mod rootfs;
pub mod safepath;
pub mod sealed;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod tty;
pub mod units;

pub use container::{Container, CreateOptions, DEFAULT_ROOT, create, list, wait_exit_code};
pub use state::{State, Status};
