//! The pure half of `berth build`: everything that can be decided from text alone.
//!
//! - [`dockerfile`]: the Dockerfile parser (directives, continuations, comments, heredocs,
//!   every instruction into [`Command`], exec-form JSON as Docker reads it), with errors as
//!   `Dockerfile:LINE: MESSAGE`.
//! - [`subst`]: variable substitution as BuildKit does it, which instruction expands what, and
//!   the predefined platform and proxy build arguments.
//! - [`stages`]: the split into build stages, `--target`, the global ARGs seen by FROM, and
//!   which stages a target needs (FROM, `COPY --from`, `RUN --mount from=`, ONBUILD triggers).
//! - [`ignore`]: `.dockerignore` (and `<Dockerfile>.dockerignore`) matching.
//!
//! Nothing here runs a build or touches the store: the engine does, from these types. The
//! input is untrusted: no function panics on any input, however malformed.

pub mod dockerfile;
pub mod ignore;
mod json;
pub mod stages;
pub mod subst;

pub use dockerfile::{Command, Dockerfile, Instruction, ParseError, Warning};
pub use ignore::Ignore;
pub use stages::{Plan, Stages};
pub use subst::{Lexer, Vars};
