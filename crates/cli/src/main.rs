//! The `paddock` binary: runs `paddock exec` itself and hands every other subcommand to
//! `paddock-full` beside it (see [`paddock_cli::front`] for why). Its start is the lean one
//! of [`paddock_sys::entry`]: no stack-overflow handler, whose set-up reads and parses
//! `/proc/self/maps` on every run. (A test build keeps the harness's own `main`.)

#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
paddock_sys::lean_main!(paddock_cli::front::main_entry);
