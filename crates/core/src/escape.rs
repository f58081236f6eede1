//! Unambiguous display of names a tenant controls, for text shown to a model or a terminal.
//!
//! A file name may hold any byte but `/` and NUL: a newline that forges a line in a
//! listing, an ESC that starts a terminal sequence, bytes that are not UTF-8. Invariant: the
//! output of [`escape_bytes`] and [`escape_str`] holds no [`is_control`] character, and
//! distinct inputs give distinct outputs (a backslash is escaped too, so the escapes can be
//! read back), while a name without any of these characters is returned unchanged.
//!
//! The escapes: `\\`, `\n`, `\r`, `\t`; `\xNN` for the other ASCII controls and for each
//! byte that is not valid UTF-8 (always `>= 0x80`, so never confused with an ASCII
//! control); `\u{NNNN}` for the other control characters.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` moves the cursor, breaks a line or reorders text instead of showing a
/// glyph: the C0 controls, DEL, the C1 controls (NEL among them), the Unicode line and
/// paragraph separators, and the bidirectional marks, embeddings, overrides and isolates
/// (which make a name read as another one: CVE-2021-42574, "Trojan Source").
pub fn is_control(c: char) -> bool {
    matches!(
        c,
        '\0'..='\x1f'
            | '\x7f'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Writing to a String cannot fail.
        c if c.is_ascii() => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

fn escape_where(s: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A UTF-8 name or path as display text: backslashes and [`is_control`] characters
/// escaped, anything else unchanged (borrowed when nothing needed escaping).
pub fn escape_str(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c == '\\' || is_control(c))
}

/// A name or path of arbitrary bytes as display text: like [`escape_str`], and each byte
/// that is not part of valid UTF-8 as `\xNN`.
pub fn escape_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return escape_str(s);
    }
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        out.push_str(&escape_str(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// Text that is content rather than a name (a matched line): [`is_control`] characters
/// other than tab escaped, so it cannot break or rewrite the line it is shown on.
/// Backslashes and tabs stay as they are: content is shown, never used as a name.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c != '\t' && is_control(c))
}

/// Reads back what [`escape_bytes`] wrote (`None` for text it cannot have written).
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next()? {
            '\\' => out.push(b'\\'),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                if hex.len() != 2 {
                    return None;
                }
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let c = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_names_are_borrowed_unchanged() {
        for s in [
            "/mnt/user-data/workspace/a b.txt",
            "été",
            "日本語",
            "a-b_c.d",
            "",
        ] {
            assert!(matches!(escape_str(s), Cow::Borrowed(x) if x == s), "{s}");
            assert!(matches!(escape_bytes(s.as_bytes()), Cow::Borrowed(x) if x == s));
        }
    }

    #[test]
    fn controls_backslashes_and_bad_bytes_are_escaped() {
        assert_eq!(
            escape_str("a\n/mnt/user-data/outputs/x"),
            "a\\n/mnt/user-data/outputs/x"
        );
        assert_eq!(escape_str("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escape_str("a\tb\rc\\d\x7f"), "a\\tb\\rc\\\\d\\x7f");
        assert_eq!(
            escape_str("nel\u{85}ls\u{2028}rlo\u{202e}"),
            "nel\\u{85}ls\\u{2028}rlo\\u{202e}"
        );
        assert_eq!(escape_bytes(b"bad\xff\xfe.txt"), "bad\\xff\\xfe.txt");
        assert_eq!(escape_bytes(b"\xc3(\n"), "\\xc3(\\n");
        // A literal backslash-n is not a newline.
        assert_ne!(escape_str("a\\nb"), escape_str("a\nb"));
        assert_eq!(escape_controls("x\ty\\z\r\x1b"), "x\ty\\z\\r\\x1b");
    }

    proptest! {
        #[test]
        fn escaping_is_reversible_and_control_free(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let shown = escape_bytes(&b);
            prop_assert!(!shown.chars().any(is_control), "{shown:?}");
            prop_assert_eq!(unescape(&shown), Some(b));
        }

        #[test]
        fn strings_escape_like_their_bytes(s in "\\PC*|[\\x00-\\x20\\\\\u{80}-\u{a0}\u{2028}]*") {
            prop_assert_eq!(escape_str(&s), escape_bytes(s.as_bytes()));
            prop_assert_eq!(unescape(&escape_str(&s)), Some(s.clone().into_bytes()));
        }
    }
}
