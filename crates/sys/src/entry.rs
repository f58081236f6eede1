//! A lean start for a binary that runs one command and exits (the `paddock` front).
//!
//! Rust's own start-up (`lang_start`) installs a stack-overflow handler for the main
//! thread, and to place it asks glibc for the main thread's stack, which glibc finds by
//! reading and parsing `/proc/self/maps`: about 0.15 ms of a `paddock exec` that takes 9.
//! [`lean_main!`](crate::lean_main) defines the C `main` instead and does the rest of what
//! that start-up does that matters here: descriptors 0, 1 and 2 are opened on `/dev/null`
//! when closed (so no file the program opens lands on them), `SIGPIPE` is ignored (a closed
//! pipe is a write error, not death), a panic becomes exit status 101 after its message,
//! and stdout is flushed at the end. What is lost: a stack overflow of the main thread is a
//! plain `SIGSEGV`, without Rust's one-line message.

use std::io::Write;

/// Runs `entry` as a program's life; returns its exit status (101 when it panicked).
pub fn run(entry: fn() -> u8) -> i32 {
    sanitize_standard_fds();
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety requirements.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = std::panic::catch_unwind(entry).map_or(101, i32::from);
    let _ = std::io::stdout().flush();
    code
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed.
fn sanitize_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll over a live array of three pollfds, without waiting.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            // SAFETY: a NUL-terminated path; the kernel hands out the lowest free
            // descriptor, which is this one, as the lower ones are open.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// Defines the C `main` of a `#![no_main]` binary that runs `$entry` (a `fn() -> u8`)
/// through [`run`](crate::entry::run). The `unsafe` attribute lives here, in Paddock's one
/// crate for such code.
#[macro_export]
macro_rules! lean_main {
    ($entry:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn main(
            _argc: ::core::ffi::c_int,
            _argv: *const *const ::core::ffi::c_char,
        ) -> ::core::ffi::c_int {
            $crate::entry::run($entry)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_status_101_and_a_code_passes_through() {
        assert_eq!(run(|| 7), 7);
        assert_eq!(run(|| panic!("on purpose")), 101);
    }
}
