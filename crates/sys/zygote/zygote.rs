//! The shell preload: a tiny shared object a prebuilt jail's shell is started with
//! (`LD_PRELOAD`), so that `execve`, the dynamic loader and the relocation of the shell's
//! libraries happen while the jail waits for its command, not after the command came.
//!
//! Its constructor runs after the loader and before the shell's `main`. When the shell was
//! started as a waiting one (third argument starting with the placeholder), it reads the
//! command message Paddock sends to every jail (`[body, argc, envc]`, then
//! `cwd\0 argv…\0 env…\0`; see `JailCommand::encode`), changes to the working directory
//! and, when the command fits the shape the shell was started with — `bash -c COMMAND`, an
//! environment of at most `ZYGOTE_ENV_SLOTS` entries in `ZYGOTE_ENV_BYTES`, no variable the
//! loader or libc read before `main` — writes the command and the environment over the
//! placeholder strings in place. `main` then runs exactly as if the shell had been
//! `execve`d with them: same argv, same environment, same `/proc/self/cmdline` and
//! `/proc/self/environ` contents (padded with NULs). Any other command is `execve`d as it
//! is, which is what a jail without the preload does. While it waits it also loads the
//! locale the command will most likely use (`PADDOCK_ZYGOTE_LOCALE`), so that the shell's
//! `setlocale` needs no file.
//!
//! Built by `build.rs` with `rustc --crate-type cdylib -C panic=abort`: no std, only a
//! handful of libc calls, no allocation (one anonymous mapping holds the message).
#![no_std]
#![allow(clippy::missing_safety_doc)]

use core::ffi::{c_char, c_int, c_void};

include!("proto.rs");

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: _exit ends the process; nothing else can run.
    unsafe { _exit(127) }
}

#[link(name = "c")]
unsafe extern "C" {
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int;
    fn chdir(p: *const c_char) -> c_int;
    fn _exit(c: c_int) -> !;
    fn execve(p: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn mmap(a: *mut c_void, l: usize, p: c_int, f: c_int, fd: c_int, o: i64) -> *mut c_void;
    fn __errno_location() -> *mut c_int;
    fn setlocale(category: c_int, locale: *const c_char) -> *mut c_char;
}

const EINTR: c_int = 4;
const EPIPE: c_int = 32;
const EINVAL: c_int = 22;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const PROT_RW: c_int = 0x1 | 0x2;
const MAP_PRIVATE_ANON: c_int = 0x02 | 0x20;
/// The limits `JailCommand::encode` enforces; a message over them is refused.
const MAX_BODY: usize = 4 << 20;
const MAX_ARGS: usize = 1024;
const MAX_ENV: usize = 4096;

/// Run by the loader with `main`'s arguments, before `main`.
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: unsafe extern "C" fn(c_int, *mut *mut u8, *mut *mut u8) = start;

unsafe fn strlen(p: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller passes a NUL-terminated string.
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    n
}

/// Whether the NUL-terminated `p` starts with `pre`.
unsafe fn starts(p: *const u8, pre: &[u8]) -> bool {
    for (i, &b) in pre.iter().enumerate() {
        // SAFETY: stops at the first difference, at the latest at `p`'s NUL.
        if unsafe { *p.add(i) } != b {
            return false;
        }
    }
    true
}

/// Whether two NUL-terminated strings are equal.
unsafe fn same(a: *const u8, b: *const u8) -> bool {
    let mut i = 0;
    loop {
        // SAFETY: both are NUL-terminated; stops at the first difference or NUL.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return false;
        }
        if x == 0 {
            return true;
        }
        i += 1;
    }
}

fn errno() -> c_int {
    // SAFETY: libc's thread-local errno.
    unsafe { *__errno_location() }
}

/// Reads exactly `len` bytes; `Err(true)` on EOF before the first.
unsafe fn read_full(buf: *mut u8, len: usize) -> Result<(), bool> {
    let mut off = 0;
    while off < len {
        // SAFETY: `buf` holds `len` bytes.
        let n = unsafe { read(ZYGOTE_CMD_FD, buf.add(off).cast(), len - off) };
        if n < 0 && errno() == EINTR {
            continue;
        }
        if n <= 0 {
            return Err(off == 0);
        }
        off += n as usize;
    }
    Ok(())
}

/// Reports a failed step on the status pipe, as init's own steps do, and exits.
unsafe fn fail(step: u32, err: c_int) -> ! {
    let mut rec = [0u8; 12];
    rec[0..4].copy_from_slice(&ZYGOTE_TAG_SETUP.to_ne_bytes());
    rec[4..8].copy_from_slice(&(step as i32).to_ne_bytes());
    rec[8..12].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: a write from a stack buffer, then _exit.
    unsafe {
        write(ZYGOTE_STATUS_FD, rec.as_ptr().cast(), rec.len());
        _exit(127)
    }
}

/// A variable the loader or libc reads before `main` (so setting it afterwards would not
/// do what it does for a freshly started program).
unsafe fn read_before_main(entry: *const u8) -> bool {
    // SAFETY: NUL-terminated entry.
    unsafe { starts(entry, b"LD_") || starts(entry, b"GLIBC_") || starts(entry, b"MALLOC_") }
}

unsafe extern "C" fn start(argc: c_int, argv: *mut *mut u8, envp: *mut *mut u8) {
    // SAFETY: `argv` and `envp` are the process's own NULL-terminated arrays of
    // NUL-terminated strings, as the kernel laid them out; the message buffer is a fresh
    // private mapping of the size read from the header, with room for the pointer arrays.
    unsafe {
        if argc != 3 || !starts(*argv.add(2), ZYGOTE_PLACEHOLDER) {
            return;
        }
        // While waiting: load the likely locale, then return to the "C" every program
        // starts in. glibc keeps locale data a global locale once used, so the shell's
        // `setlocale(LC_ALL, "")` finds it; its state afterwards is the same either way.
        let mut i = 0;
        while !(*envp.add(i)).is_null() {
            let e = *envp.add(i);
            if starts(e, ZYGOTE_LOCALE_KEY) && *e.add(ZYGOTE_LOCALE_KEY.len()) != 0 {
                setlocale(ZYGOTE_LC_ALL, e.add(ZYGOTE_LOCALE_KEY.len()).cast());
                setlocale(ZYGOTE_LC_ALL, c"C".as_ptr());
            }
            i += 1;
        }
        let mut h = [0u8; 12];
        match read_full(h.as_mut_ptr(), h.len()) {
            Ok(()) => {}
            // The jail was abandoned before its command came.
            Err(true) => _exit(0),
            Err(false) => fail(ZYGOTE_S_COMMAND, EPIPE),
        }
        let body = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let n_arg = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let n_env = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]) as usize;
        if body == 0 || body > MAX_BODY || n_arg == 0 || n_arg > MAX_ARGS || n_env > MAX_ENV {
            fail(ZYGOTE_S_COMMAND, EINVAL);
        }
        let ptrs_at = (body + 7) & !7;
        let len = ptrs_at + (n_arg + n_env + 2) * core::mem::size_of::<usize>();
        let m = mmap(core::ptr::null_mut(), len, PROT_RW, MAP_PRIVATE_ANON, -1, 0) as *mut u8;
        if m as isize == -1 {
            fail(ZYGOTE_S_COMMAND, errno());
        }
        if read_full(m, body).is_err() {
            fail(ZYGOTE_S_COMMAND, EPIPE);
        }
        if *m.add(body - 1) != 0 {
            fail(ZYGOTE_S_COMMAND, EINVAL);
        }
        let av = m.add(ptrs_at) as *mut *const u8;
        let ev = av.add(n_arg + 1);
        let mut cwd: *const u8 = core::ptr::null();
        let (mut seen, mut from) = (0usize, 0usize);
        for i in 0..body {
            if *m.add(i) != 0 {
                continue;
            }
            let s = m.add(from) as *const u8;
            if seen == 0 {
                cwd = s;
            } else if seen <= n_arg {
                *av.add(seen - 1) = s;
            } else if seen <= n_arg + n_env {
                *ev.add(seen - 1 - n_arg) = s;
            } else {
                fail(ZYGOTE_S_COMMAND, EINVAL);
            }
            seen += 1;
            from = i + 1;
        }
        if seen != 1 + n_arg + n_env {
            fail(ZYGOTE_S_COMMAND, EINVAL);
        }
        *av.add(n_arg) = core::ptr::null();
        *ev.add(n_env) = core::ptr::null();
        if chdir(cwd.cast()) < 0 {
            fail(ZYGOTE_S_CWD, errno());
        }

        // Where the strings to overwrite are, and the program for the other case.
        let mut program: *const u8 = core::ptr::null();
        let mut slots = 0usize;
        while !(*envp.add(slots)).is_null() {
            let e = *envp.add(slots);
            if starts(e, ZYGOTE_ENV_KEY) {
                program = e.add(ZYGOTE_ENV_KEY.len());
            }
            slots += 1;
        }
        if program.is_null() || slots == 0 {
            fail(ZYGOTE_S_EXEC, EINVAL);
        }
        let area = *envp;
        let last = *envp.add(slots - 1);
        let area_end = last.add(strlen(last) + 1);
        let area_len = area_end as usize - area as usize;
        // The kernel lays the strings out one after the other; check rather than assume.
        let mut contiguous = true;
        for i in 0..slots {
            let e = *envp.add(i) as usize;
            contiguous &= e >= area as usize && e < area_end as usize;
        }
        let arg = *argv.add(2);
        let arg_room = strlen(arg) + 1;
        let mut in_place = contiguous
            && n_arg == 3
            && same(*av, *argv)
            && same(*av.add(1), *argv.add(1))
            && strlen(*av.add(2)) < arg_room
            && n_env < slots;
        let mut need = 0usize;
        for i in 0..n_env {
            let e = *ev.add(i);
            in_place &= !read_before_main(e);
            need += strlen(e) + 1;
        }
        in_place &= need <= area_len;

        if !in_place {
            // `program` lives in the strings execve is about to replace: copy it.
            let mut path = [0u8; 4096];
            let pl = strlen(program);
            if pl >= path.len() {
                fail(ZYGOTE_S_EXEC, EINVAL);
            }
            core::ptr::copy_nonoverlapping(program, path.as_mut_ptr(), pl);
            close(ZYGOTE_CMD_FD);
            fcntl(ZYGOTE_STATUS_FD, F_SETFD, FD_CLOEXEC);
            execve(path.as_ptr().cast(), av.cast(), ev.cast());
            fail(ZYGOTE_S_EXEC, errno());
        }

        let cmd = *av.add(2);
        let l = strlen(cmd);
        core::ptr::copy_nonoverlapping(cmd, arg, l);
        core::ptr::write_bytes(arg.add(l), 0, arg_room - l);
        let mut off = 0usize;
        for i in 0..n_env {
            let e = *ev.add(i);
            let l = strlen(e) + 1;
            core::ptr::copy_nonoverlapping(e, area.add(off), l);
            *envp.add(i) = area.add(off);
            off += l;
        }
        core::ptr::write_bytes(area.add(off), 0, area_len - off);
        *envp.add(n_env) = core::ptr::null_mut();
        close(ZYGOTE_CMD_FD);
        close(ZYGOTE_STATUS_FD);
    }
}
