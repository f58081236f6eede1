//! Pure renderers: sandbox outcomes to the exact text the reference's tools return.
//!
//! Invariants: these functions do no I/O, so every format is pinned by unit and
//! snapshot tests without a sandbox. Every name that comes from the sandbox's tree is
//! shown escaped ([`paddock_core::escape`]: one line, no control characters, exact even
//! when it is not UTF-8), so a file name can neither forge a line of a listing nor pass a
//! terminal escape through; names without such characters come out byte for byte as the
//! reference shows them.

use std::collections::BTreeMap;

use paddock_core::SandboxError;
use paddock_core::escape::escape_controls;
use paddock_core::sandbox::{ExecOutcome, GlobOutcome, GrepOutcome, Listing, Unreadable};

/// Values shorter than this are not masked: a short value (a region code, a PIN) would
/// shred unrelated output such as exit codes and sizes.
pub const MIN_MASK_LEN: usize = 8;
/// What a masked secret becomes.
pub const REDACTION: &str = "[redacted]";

/// Formats seconds as the reference does: `600 seconds`, `1 second`, `2.5 seconds`.
pub fn format_timeout_duration(secs: f64) -> String {
    let amount = if secs.fract() == 0.0 && secs.abs() < 1e15 {
        format!("{secs:.0}")
    } else {
        format_g(secs)
    };
    let unit = if secs == 1.0 { "second" } else { "seconds" };
    format!("{amount} {unit}")
}

/// C's `%g` with the default precision of 6 significant digits.
fn format_g(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let sci = format!("{x:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = usize::try_from(5 - exp).unwrap_or(0);
        trim(&format!("{x:.decimals$}"))
    }
}

/// The notice appended when the timeout killed a command.
pub fn timeout_notice(secs: f64) -> String {
    format!(
        "Command timed out after {} and was terminated. To run a long-lived process such as a web server, \
         start it in the background and redirect its output, e.g. \
         `your-command > /mnt/user-data/workspace/server.log 2>&1 &`.",
        format_timeout_duration(secs)
    )
}

/// The notice appended when the memory limit killed a command (Paddock's own; the
/// reference has no memory limit).
pub const OOM_NOTICE: &str = "Command was killed because the sandbox ran out of memory (its memory limit was reached). \
Use less memory, e.g. process the data in smaller pieces or stream it instead of loading it whole.";

fn push_block(out: &mut String, block: &str) {
    if out.is_empty() {
        out.push_str(block);
    } else {
        out.push('\n');
        out.push_str(block);
    }
}

/// Assembles a command's result as the reference does: stdout; `\nStd Error:\n` and
/// stderr (just stderr when stdout is empty); on timeout the timeout notice and
/// `Exit Code: 124`; otherwise `Exit Code: N` when the status is not 0 (128+signal for
/// a signal); `(no output)` when all of that is empty.
pub fn assemble_exec(outcome: &ExecOutcome, timeout_secs: f64) -> String {
    let mut out = outcome.stdout.clone();
    if !outcome.stderr.is_empty() {
        if out.is_empty() {
            out.push_str(&outcome.stderr);
        } else {
            out.push_str("\nStd Error:\n");
            out.push_str(&outcome.stderr);
        }
    }
    let exit = &outcome.exit;
    if exit.timed_out {
        push_block(&mut out, &timeout_notice(timeout_secs));
        out.push_str("\nExit Code: 124");
    } else {
        if exit.oom_killed {
            push_block(&mut out, OOM_NOTICE);
        }
        let status = exit.shell_status();
        if status != 0 {
            out.push_str(&format!("\nExit Code: {status}"));
        }
    }
    if out.is_empty() {
        "(no output)".to_owned()
    } else {
        out
    }
}

/// Replaces every injected value of at least [`MIN_MASK_LEN`] chars by `[redacted]`,
/// longest first so a value inside another is not half revealed.
pub fn mask_secrets(output: &str, env: &BTreeMap<String, String>) -> String {
    let mut values: Vec<&str> = env
        .values()
        .map(String::as_str)
        .filter(|v| v.chars().count() >= MIN_MASK_LEN)
        .collect();
    if values.is_empty() || output.is_empty() {
        return output.to_owned();
    }
    // Stable sort: equal lengths keep the map's order, as the reference does.
    values.sort_by_key(|v| std::cmp::Reverse(v.chars().count()));
    let mut out = output.to_owned();
    for v in values {
        if out.contains(v) {
            out = out.replace(v, REDACTION);
        }
    }
    out
}

/// Clamps a result cap: `<= 0` means `default`, anything above `upper` is `upper`.
pub fn clamp_max_results(value: i64, default: usize, upper: usize) -> usize {
    if value <= 0 {
        default
    } else {
        usize::try_from(value).unwrap_or(usize::MAX).min(upper)
    }
}

/// The cap in force: the smaller of the clamped request and the clamped operator cap.
pub fn resolve_max_results(
    requested: Option<i64>,
    configured: usize,
    default: usize,
    upper: usize,
) -> usize {
    let requested = clamp_max_results(
        requested.unwrap_or(i64::try_from(default).unwrap_or(i64::MAX)),
        default,
        upper,
    );
    let configured = clamp_max_results(
        i64::try_from(configured).unwrap_or(i64::MAX),
        default,
        upper,
    );
    requested.min(configured)
}

/// Most unreadable directories a note names (the count covers the rest).
pub const UNREADABLE_NOTE_MAX_PATHS: usize = 10;

/// Paddock's own note (the reference skips what it cannot read without a word): one
/// line naming the directories a walk could not read, so the model knows the result is
/// missing what lies beneath them. `None` when there are none.
pub fn unreadable_note(unreadable: &[Unreadable]) -> Option<String> {
    if unreadable.is_empty() {
        return None;
    }
    let n = unreadable.len();
    let what = if n == 1 { "directory" } else { "directories" };
    let mut note = format!("Could not read {n} {what}, so what lies beneath is not included: ");
    let shown: Vec<String> = unreadable
        .iter()
        .take(UNREADABLE_NOTE_MAX_PATHS)
        .map(|u| format!("{} ({})", u.shown(), escape_controls(&u.reason)))
        .collect();
    note.push_str(&shown.join("; "));
    if n > UNREADABLE_NOTE_MAX_PATHS {
        note.push_str(&format!("; and {} more", n - UNREADABLE_NOTE_MAX_PATHS));
    }
    Some(note)
}

/// The `ls` text before its length cap: one entry per line (directories end with `/`),
/// the entry-cap marker, the unreadable note; `(empty)` when there is no entry.
pub fn format_ls(listing: &Listing) -> String {
    let mut out = if listing.entries.is_empty() {
        "(empty)".to_owned()
    } else {
        listing
            .entries
            .iter()
            .map(|e| e.shown())
            .collect::<Vec<_>>()
            .join("\n")
    };
    if listing.truncated && !listing.entries.is_empty() {
        out.push_str(&format!(
            "\n... [listing stopped after {} entries. Use a more specific path to see fewer results] ...",
            listing.entries.len()
        ));
    }
    if let Some(note) = unreadable_note(&listing.unreadable) {
        out.push('\n');
        out.push_str(&note);
    }
    out
}

/// `Found N paths under ROOT` and a numbered list, or `No files matched under ROOT`.
pub fn format_glob(root: &str, found: &GlobOutcome) -> String {
    let paths = &found.paths;
    let truncated = found.truncated;
    let mut lines = Vec::with_capacity(paths.len() + 3);
    if paths.is_empty() {
        lines.push(format!("No files matched under {root}"));
    } else {
        let mut header = format!("Found {} paths under {root}", paths.len());
        if truncated {
            header.push_str(&format!(" (showing first {})", paths.len()));
        }
        lines.push(header);
        lines.extend((0..paths.len()).map(|i| format!("{}. {}", i + 1, found.shown(i))));
        if truncated {
            lines.push(
                "Results truncated. Narrow the path or pattern to see fewer matches.".to_owned(),
            );
        }
    }
    lines.extend(unreadable_note(&found.unreadable));
    lines.join("\n")
}

/// `Found N matches under ROOT` and `path:line: text` lines, or `No matches found under ROOT`.
/// The text is content, shown as it is but for control characters other than tab.
pub fn format_grep(root: &str, found: &GrepOutcome) -> String {
    let matches = &found.matches;
    let truncated = found.truncated;
    let mut lines = Vec::with_capacity(matches.len() + 3);
    if matches.is_empty() {
        lines.push(format!("No matches found under {root}"));
    } else {
        let mut header = format!("Found {} matches under {root}", matches.len());
        if truncated {
            header.push_str(&format!(" (showing first {})", matches.len()));
        }
        lines.push(header);
        lines.extend(matches.iter().map(|m| {
            format!(
                "{}:{}: {}",
                m.shown(),
                m.line_number,
                escape_controls(&m.line)
            )
        }));
        if truncated {
            lines.push("Results truncated. Narrow the path or add a glob filter.".to_owned());
        }
    }
    lines.extend(unreadable_note(&found.unreadable));
    lines.join("\n")
}

/// Whether the OS refused access (the reference's `PermissionError`).
pub fn is_permission_denied(e: &SandboxError) -> bool {
    matches!(e, SandboxError::Io { message, .. } if message == "permission denied")
}

/// The guidance returned when a non-append `write_file` payload is over the cap.
pub fn write_too_large(bytes: usize, limit: u64) -> String {
    format!(
        "Error: write_file content ({bytes} bytes) exceeds the {limit}-byte single-call limit. \
         Split the content into smaller pieces: either (a) write the first section now, then use \
         `str_replace` for further edits, or (b) call write_file again with append=True carrying \
         the next section. See SIZE POLICY in the tool description for the rationale."
    )
}

/// The message for a file that is not UTF-8 text.
pub fn not_text(path: &str) -> String {
    format!(
        "Error: cannot read '{path}' as text — it appears to be a binary file (e.g. .xlsx, .pdf, or an image). \
         read_file only supports UTF-8 text. Use bash with a suitable library instead \
         (pandas/openpyxl for spreadsheets), or view_image for images."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_core::sandbox::ExecExit;

    fn outcome(stdout: &str, stderr: &str, exit: ExecExit) -> ExecOutcome {
        ExecOutcome {
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit,
            ..Default::default()
        }
    }

    #[test]
    fn durations() {
        assert_eq!(format_timeout_duration(600.0), "600 seconds");
        assert_eq!(format_timeout_duration(1.0), "1 second");
        assert_eq!(format_timeout_duration(2.5), "2.5 seconds");
        assert_eq!(format_timeout_duration(0.1), "0.1 seconds");
        assert_eq!(format_timeout_duration(1.0 / 3.0), "0.333333 seconds");
        assert_eq!(format_timeout_duration(0.00001), "1e-05 seconds");
        assert_eq!(format_timeout_duration(1234567.5), "1.23457e+06 seconds");
    }

    #[test]
    fn assembly() {
        let ok = ExecExit {
            exit_code: Some(0),
            ..Default::default()
        };
        assert_eq!(
            assemble_exec(&outcome("", "", ok.clone()), 600.0),
            "(no output)"
        );
        assert_eq!(assemble_exec(&outcome("a\n", "", ok.clone()), 600.0), "a\n");
        assert_eq!(
            assemble_exec(&outcome("a\n", "b\n", ok.clone()), 600.0),
            "a\n\nStd Error:\nb\n"
        );
        assert_eq!(assemble_exec(&outcome("", "b", ok), 600.0), "b");
        let fail = ExecExit {
            exit_code: Some(2),
            ..Default::default()
        };
        assert_eq!(
            assemble_exec(&outcome("", "", fail.clone()), 600.0),
            "\nExit Code: 2"
        );
        assert_eq!(
            assemble_exec(&outcome("x", "", fail), 600.0),
            "x\nExit Code: 2"
        );
        let sig = ExecExit {
            signal: Some(15),
            ..Default::default()
        };
        assert_eq!(
            assemble_exec(&outcome("x", "", sig), 600.0),
            "x\nExit Code: 143"
        );
        let to = ExecExit {
            timed_out: true,
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(
            assemble_exec(&outcome("", "", to.clone()), 1.0),
            format!("{}\nExit Code: 124", timeout_notice(1.0))
        );
        assert!(
            assemble_exec(&outcome("x", "", to), 5.0)
                .starts_with("x\nCommand timed out after 5 seconds")
        );
        let oom = ExecExit {
            oom_killed: true,
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(
            assemble_exec(&outcome("x", "", oom), 5.0),
            format!("x\n{OOM_NOTICE}\nExit Code: 137")
        );
    }

    #[test]
    fn masking() {
        let mut env = BTreeMap::new();
        env.insert("A".into(), "short".into());
        env.insert("B".into(), "secretvalue".into());
        env.insert("C".into(), "secretvalue-longer".into());
        assert_eq!(
            mask_secrets("short secretvalue secretvalue-longer", &env),
            "short [redacted] [redacted]"
        );
        assert_eq!(mask_secrets("", &env), "");
    }

    #[test]
    fn clamps() {
        assert_eq!(clamp_max_results(0, 200, 1000), 200);
        assert_eq!(clamp_max_results(-3, 200, 1000), 200);
        assert_eq!(clamp_max_results(5000, 200, 1000), 1000);
        assert_eq!(resolve_max_results(None, 200, 200, 1000), 200);
        assert_eq!(resolve_max_results(Some(500), 200, 200, 1000), 200);
        assert_eq!(resolve_max_results(Some(10), 200, 200, 1000), 10);
        assert_eq!(resolve_max_results(Some(900), 5000, 200, 1000), 900);
        assert_eq!(resolve_max_results(Some(i64::MAX), 0, 100, 500), 100);
    }
}
