//! The tenancy suite: hostile tenants against a real `paddock serve` with several users and
//! real jails. Each module is one class of attack from the tenant-containment work (issue
//! 16): a sandbox, or a holder of a sandbox URL, tries to hurt the host, the server or its
//! neighbours, and the case shows it is contained. Every case is bounded (seconds, modest
//! memory) so the suite is safe on a shared 2-core machine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod background;
mod capacity;
mod disk;
mod files;
mod harness;
mod kernel_counters;
mod limits;
mod memory;
mod names;
mod races;
mod secrets;
mod slow_clients;
mod walks;
