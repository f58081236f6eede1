//! Truncation helpers that bound what a tool returns to the model.
//!
//! Invariant: every helper returns at most `max_chars` characters (Unicode scalar values,
//! as the reference counts them) whenever `max_chars > 0`, cuts only on char boundaries,
//! and returns its input unchanged when it already fits or when `max_chars == 0`. The
//! marker texts are the reference's, so prompts that recognise them keep working.

/// Marker a middle cut of bash output leaves behind.
pub fn bash_marker(skipped: usize) -> String {
    format!("\n... [middle truncated: {skipped} chars skipped] ...\n")
}

/// Marker a middle cut of a `write_file` error leaves behind.
pub fn write_error_marker(skipped: usize) -> String {
    format!("\n... [write_file error truncated: {skipped} chars skipped] ...\n")
}

/// Marker a head cut of `read_file` output leaves behind.
pub fn read_file_marker(kept: usize, total: usize) -> String {
    format!(
        "\n... [truncated: showing first {kept} of {total} chars. Use start_line/end_line to read a specific range] ..."
    )
}

/// Marker a head cut of `ls` output leaves behind.
pub fn ls_marker(kept: usize, total: usize) -> String {
    format!(
        "\n... [truncated: showing first {kept} of {total} chars. Use a more specific path to see fewer results] ..."
    )
}

/// Byte offset of the `n`-th char of `s` (or `s.len()` past the end).
fn byte_at_char(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// The first `n` chars of `s`.
pub fn head_chars(s: &str, n: usize) -> &str {
    &s[..byte_at_char(s, n)]
}

/// The last `n` chars of `s` (`total` is `s.chars().count()`).
fn tail_chars(s: &str, n: usize, total: usize) -> &str {
    if n >= total {
        return s;
    }
    &s[byte_at_char(s, total - n)..]
}

/// Keeps the head and the tail (50/50) and replaces the middle by `marker(skipped)`.
///
/// The marker's length is budgeted for its worst case (`skipped == total`), so the
/// result never exceeds `max_chars`. When not even the marker fits, the plain head is
/// returned.
pub fn truncate_middle(text: &str, max_chars: usize, marker: impl Fn(usize) -> String) -> String {
    if max_chars == 0 {
        return text.to_owned();
    }
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_owned();
    }
    let marker_max = marker(total).chars().count();
    let kept = max_chars.saturating_sub(marker_max);
    if kept == 0 {
        return head_chars(text, max_chars).to_owned();
    }
    let head = kept / 2;
    let tail = kept - head;
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    out.push_str(head_chars(text, head));
    out.push_str(&marker(total - kept));
    out.push_str(tail_chars(text, tail, total));
    out
}

/// Keeps the head and appends `marker(kept, total)`; never longer than `max_chars`.
pub fn truncate_head(
    text: &str,
    max_chars: usize,
    marker: impl Fn(usize, usize) -> String,
) -> String {
    if max_chars == 0 {
        return text.to_owned();
    }
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_owned();
    }
    let marker_max = marker(total, total).chars().count();
    let kept = max_chars.saturating_sub(marker_max);
    if kept == 0 {
        return head_chars(text, max_chars).to_owned();
    }
    let mut out = head_chars(text, kept).to_owned();
    out.push_str(&marker(kept, total));
    out
}

/// Where a trailing shell exit marker (`\nExit Code: N`, or a remote backend's
/// `Command exited with code N`, then only whitespace) starts, if `text` ends with one.
pub fn exit_marker_start(text: &str) -> Option<usize> {
    let trimmed = text.trim_end();
    let digits_start = trimmed.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits_start == trimmed.len() {
        return None;
    }
    let before = &trimmed[..digits_start];
    let before = before.strip_suffix('-').unwrap_or(before);
    if let Some(rest) = before.strip_suffix("\nExit Code: ") {
        return Some(rest.len());
    }
    if let Some(rest) = before.strip_suffix("Command exited with code ") {
        return Some(rest.strip_suffix('\n').unwrap_or(rest).len());
    }
    None
}

/// Middle-truncates bash output to `max_chars` (0 = off).
///
/// A trailing exit marker is kept whole when it fits (its budget comes out of the
/// tail), because whoever reads the output needs the command's status even when the
/// output was huge.
pub fn truncate_bash_output(output: &str, max_chars: usize) -> String {
    if max_chars == 0 || output.chars().count() <= max_chars {
        return output.to_owned();
    }
    if let Some(start) = exit_marker_start(output) {
        let preserved = &output[start..];
        let preserved_len = preserved.chars().count();
        if preserved_len < max_chars {
            let body = &output[..start];
            let mut out = truncate_middle(body, max_chars - preserved_len, bash_marker);
            out.push_str(preserved);
            return out;
        }
    }
    truncate_middle(output, max_chars, bash_marker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fits_unchanged_and_zero_is_off() {
        assert_eq!(truncate_middle("abc", 3, bash_marker), "abc");
        assert_eq!(truncate_middle("abcdef", 0, bash_marker), "abcdef");
        assert_eq!(truncate_head("abc", 3, ls_marker), "abc");
        assert_eq!(truncate_head("abcdef", 0, ls_marker), "abcdef");
    }

    #[test]
    fn middle_cut_shape() {
        let text = format!("HEAD{}TAIL", "m".repeat(30_000));
        let out = truncate_middle(&text, 20_000, bash_marker);
        let n = out.chars().count();
        assert!((19_990..=20_000).contains(&n), "{n}");
        assert!(out.starts_with("HEAD") && out.ends_with("TAIL"));
        assert!(out.contains("\n... [middle truncated: "));
        // head + skipped + tail adds up to the input.
        let skipped: usize = out
            .split("truncated: ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .expect("must succeed")
            .parse()
            .expect("must succeed");
        let kept = out.chars().count() - bash_marker(skipped).chars().count();
        assert_eq!(kept + skipped, text.chars().count());
    }

    #[test]
    fn tiny_limits_fall_back_to_plain_head() {
        assert_eq!(truncate_middle("abcdefghij", 5, bash_marker), "abcde");
        assert_eq!(truncate_head("abcdefghij", 5, read_file_marker), "abcde");
    }

    #[test]
    fn multibyte_cut_on_char_boundaries() {
        let text = "é😀ü".repeat(5_000);
        for max in [1, 2, 3, 50, 51, 52, 99, 100, 1000] {
            let m = truncate_middle(&text, max, bash_marker);
            assert!(m.chars().count() <= max, "{max}");
            let h = truncate_head(&text, max, read_file_marker);
            assert!(h.chars().count() <= max, "{max}");
        }
    }

    #[test]
    fn exit_marker_detection() {
        assert_eq!(exit_marker_start("out\nExit Code: 2"), Some(3));
        assert_eq!(exit_marker_start("out\nExit Code: -1\n  "), Some(3));
        assert_eq!(
            exit_marker_start("out\nCommand exited with code 7"),
            Some(3)
        );
        assert_eq!(exit_marker_start("Command exited with code 7"), Some(0));
        assert_eq!(exit_marker_start("out\nExit Code: "), None);
        assert_eq!(exit_marker_start("Exit Code: 3"), None);
        assert_eq!(exit_marker_start("out 12"), None);
        assert_eq!(exit_marker_start(""), None);
    }

    #[test]
    fn bash_keeps_the_exit_marker() {
        let text = format!("{}\nExit Code: 137", "x".repeat(50_000));
        let out = truncate_bash_output(&text, 200);
        assert!(out.chars().count() <= 200);
        assert!(out.ends_with("x\nExit Code: 137"), "{out}");
        assert!(out.contains("[middle truncated:"));
        // A limit smaller than the marker: plain middle cut, still bounded.
        let out = truncate_bash_output(&text, 10);
        assert_eq!(out, "xxxxxxxxxx");
    }

    proptest! {
        #[test]
        fn middle_never_exceeds_and_keeps_ends(text in "\\PC{0,400}", max in 0usize..500) {
            let out = truncate_middle(&text, max, bash_marker);
            let n = text.chars().count();
            if max == 0 || n <= max {
                prop_assert_eq!(&out, &text);
            } else {
                prop_assert!(out.chars().count() <= max);
                let marker_max = bash_marker(n).chars().count();
                if max > marker_max {
                    let kept = max - marker_max;
                    let head: String = text.chars().take(kept / 2).collect();
                    let tail: String = text.chars().skip(n - (kept - kept / 2)).collect();
                    prop_assert!(out.starts_with(&head));
                    prop_assert!(out.ends_with(&tail));
                } else {
                    prop_assert!(text.starts_with(&out));
                }
            }
        }

        #[test]
        fn head_never_exceeds_and_keeps_head(text in "\\PC{0,400}", max in 0usize..500) {
            let out = truncate_head(&text, max, read_file_marker);
            let n = text.chars().count();
            if max == 0 || n <= max {
                prop_assert_eq!(&out, &text);
            } else {
                prop_assert!(out.chars().count() <= max);
                let marker_max = read_file_marker(n, n).chars().count();
                let kept = max.saturating_sub(marker_max);
                let head: String = text.chars().take(if kept == 0 { max } else { kept }).collect();
                prop_assert!(out.starts_with(&head));
            }
        }

        #[test]
        fn bash_never_exceeds(body in "\\PC{0,300}", code in proptest::option::of(-300i32..300), max in 0usize..400) {
            let text = match code { Some(c) => format!("{body}\nExit Code: {c}"), None => body.clone() };
            let out = truncate_bash_output(&text, max);
            if max == 0 {
                prop_assert_eq!(&out, &text);
            } else {
                prop_assert!(out.chars().count() <= max);
                if let Some(c) = code {
                    let marker = format!("\nExit Code: {c}");
                    if text.chars().count() <= max || marker.chars().count() < max {
                        prop_assert!(out.ends_with(&marker));
                    }
                }
            }
        }

        #[test]
        fn write_error_never_exceeds(text in "[a-zé😀 ]{0,3000}", max in 1usize..2500) {
            let out = truncate_middle(&text, max, write_error_marker);
            prop_assert!(out.chars().count() <= max);
        }
    }
}
