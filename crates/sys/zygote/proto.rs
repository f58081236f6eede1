// The contract between Paddock's jail (`src/jail/wire.rs`) and the shell preload (`zygote.rs`),
// included by both so the two can never disagree.

/// What the shell's third argument starts with until the preload replaces it. Should the
/// preload not load, bash runs it as it stands: it says so and exits 126, so a command is
/// never silently skipped.
pub const ZYGOTE_PLACEHOLDER: &[u8] =
    b"echo 'paddock: the shell preload did not load' >&2; exit 126 # PADDOCK-ZYGOTE ";
/// Environment entry naming the program to `execve` when a command cannot be placed into the
/// waiting shell (its value is the program's path).
pub const ZYGOTE_ENV_KEY: &[u8] = b"PADDOCK_ZYGOTE=";
/// Environment entry naming the locale the waiting shell loads while it waits (the one the
/// command will most likely run in): libc keeps a loaded locale, so the shell's own
/// `setlocale` then finds it without reading a file. Empty or absent: none.
pub const ZYGOTE_LOCALE_KEY: &[u8] = b"PADDOCK_ZYGOTE_LOCALE=";
/// glibc's `LC_ALL`.
pub const ZYGOTE_LC_ALL: i32 = 6;
/// The waiting shell reads its command message here.
pub const ZYGOTE_CMD_FD: i32 = 3;
/// …and reports a failed step here (a status record, as init writes them).
pub const ZYGOTE_STATUS_FD: i32 = 4;
/// Bytes the placeholder argument takes in all (the longest command placed in place, NUL
/// included).
pub const ZYGOTE_ARG_BYTES: usize = 16 * 1024;
/// Environment slots of the waiting shell, and the bytes of its environment strings.
pub const ZYGOTE_ENV_SLOTS: usize = 96;
pub const ZYGOTE_ENV_BYTES: usize = 16 * 1024;
/// Status record tag of a failed step, and the steps the preload can fail at.
pub const ZYGOTE_TAG_SETUP: u32 = 2;
pub const ZYGOTE_S_CWD: u32 = 26;
pub const ZYGOTE_S_EXEC: u32 = 29;
pub const ZYGOTE_S_COMMAND: u32 = 33;
