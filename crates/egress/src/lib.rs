//! Paddock's network egress policy: what a sandbox may connect to.
//!
//! A sandbox's only way out is its egress path, which asks this crate twice per
//! connection: once for the destination *name* the sandbox asked for (before resolving it),
//! and once for every *address* the name resolved to (right before connecting, on the
//! address actually used). Decisions are pure functions of a [`Policy`] and the destination,
//! so they are tested here without a network, and the same policy gives the same answer on
//! every backend.
//!
//! Invariant: an address in a [`ranges::Blocked`] range is never allowed unless the operator
//! listed a range containing it (an explicit IP/CIDR rule), whatever name led to it: a name
//! that resolves (or later re-resolves) to 127.0.0.1 or 169.254.169.254 gets nothing.

pub mod inject;
pub mod policy;
pub mod proxy;
pub mod ranges;
pub mod rule;

pub use policy::{Decision, Mode, Policy, PolicyError, Verdict};
pub use proxy::{Counts, Denial, Limits, Resolve, SandboxEgress, SystemResolver, serve};
pub use ranges::Blocked;
pub use rule::{HostPattern, PortSet, Rule, RuleError};
