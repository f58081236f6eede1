//! JSON responses whose large strings (a file's text, a command's output) are escaped while
//! the response is sent, a window at a time, instead of into one buffer first.
//!
//! Escaping can multiply a string by six (`\u0001` per control byte), and a response that
//! names the same output twice (AIO's `output` and `console[0].output`) would hold it
//! twice. Here the raw text is held once (shared by every place it appears) and at most
//! one escaped window per connection exists at a time; hyper asks for the next window
//! only when the previous one is written, so a slow reader costs no more. The length is
//! computed up front, so the response carries an exact `Content-Length`.
//!
//! Invariant: the bytes produced are exactly `serde_json`'s serialisation of the same
//! strings (checked by the tests), so clients see the same JSON as before.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;

/// Raw bytes escaped per frame.
const WINDOW: usize = 64 * 1024;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `\u00XX` for every control byte (those with a short form use that instead).
const LONG: [[u8; 6]; 32] = {
    let mut t = [[0u8; 6]; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// The escape of one byte of a UTF-8 string in a JSON string literal, if it needs one.
/// Only ASCII bytes are ever escaped, so a window may end anywhere in a multi-byte char.
fn escape(b: u8) -> Option<&'static [u8]> {
    match b {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        b'\t' => Some(b"\\t"),
        0x08 => Some(b"\\b"),
        0x0c => Some(b"\\f"),
        0..=0x1f => Some(&LONG[b as usize]),
        _ => None,
    }
}

/// Length of `s` as a JSON string literal, quotes included.
fn escaped_len(s: &[u8]) -> u64 {
    2 + s
        .iter()
        .map(|&b| escape(b).map_or(1, <[u8]>::len) as u64)
        .sum::<u64>()
}

fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut plain = 0;
    for (i, &b) in s.iter().enumerate() {
        if let Some(e) = escape(b) {
            out.extend_from_slice(&s[plain..i]);
            out.extend_from_slice(e);
            plain = i + 1;
        }
    }
    out.extend_from_slice(&s[plain..]);
}

#[derive(Debug)]
enum Part {
    /// Already JSON.
    Raw(Bytes),
    /// UTF-8 text to be sent as a JSON string.
    Text(Bytes),
}

/// Where the writer is: per open container, whether an element was written and whether a
/// key is waiting for its value.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    written: bool,
    after_key: bool,
}

/// Builds a JSON document from small values and large strings; see the module docs.
#[derive(Debug, Default)]
pub struct JsonBody {
    parts: Vec<Part>,
    raw: Vec<u8>,
    stack: Vec<Level>,
}

impl JsonBody {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    fn element(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            if top.after_key {
                top.after_key = false;
            } else {
                if top.written {
                    self.raw.push(b',');
                }
                top.written = true;
            }
        }
    }

    fn flush_raw(&mut self) {
        if !self.raw.is_empty() {
            self.parts
                .push(Part::Raw(Bytes::from(std::mem::take(&mut self.raw))));
        }
    }

    /// Opens an object (as a value: after a key, in an array, or at the top).
    pub fn begin_object(&mut self) -> &mut Self {
        self.element();
        self.raw.push(b'{');
        self.stack.push(Level::default());
        self
    }

    /// Closes the innermost object.
    pub fn end_object(&mut self) -> &mut Self {
        self.stack.pop();
        self.raw.push(b'}');
        self
    }

    /// Opens an array.
    pub fn begin_array(&mut self) -> &mut Self {
        self.element();
        self.raw.push(b'[');
        self.stack.push(Level::default());
        self
    }

    /// Closes the innermost array.
    pub fn end_array(&mut self) -> &mut Self {
        self.stack.pop();
        self.raw.push(b']');
        self
    }

    /// Writes an object key; its value comes next.
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.element();
        escape_quoted(&mut self.raw, k.as_bytes());
        self.raw.push(b':');
        if let Some(top) = self.stack.last_mut() {
            top.after_key = true;
        }
        self
    }

    /// Writes a small value, serialised now.
    pub fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> &mut Self {
        self.element();
        // Serialising into a Vec fails only for maps with non-string keys, which the
        // callers never pass; `null` keeps the document well-formed regardless.
        if serde_json::to_writer(&mut self.raw, v).is_err() {
            self.raw.extend_from_slice(b"null");
        }
        self
    }

    /// Writes a large string, escaped only while it is sent. `text` must be UTF-8 (it is
    /// always a `String`'s bytes); the same `Bytes` may be written several times for free.
    pub fn text(&mut self, text: Bytes) -> &mut Self {
        self.element();
        self.flush_raw();
        self.parts.push(Part::Text(text));
        self
    }

    /// `key` then `value`.
    pub fn field<T: Serialize + ?Sized>(&mut self, k: &str, v: &T) -> &mut Self {
        self.key(k).value(v)
    }

    /// `key` then `text`.
    pub fn text_field(&mut self, k: &str, text: Bytes) -> &mut Self {
        self.key(k).text(text)
    }

    /// The response: `application/json` with an exact length, streamed.
    pub fn into_response(mut self) -> Response {
        self.flush_raw();
        let len = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Raw(b) => b.len() as u64,
                Part::Text(t) => escaped_len(t),
            })
            .sum();
        let mut resp = Response::new(Body::new(Streamed {
            parts: self.parts.into(),
            at: 0,
            left: len,
        }));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    /// The whole document as bytes (tests, small documents).
    pub fn to_vec(mut self) -> Vec<u8> {
        self.flush_raw();
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Raw(b) => out.extend_from_slice(b),
                Part::Text(t) => escape_quoted(&mut out, t),
            }
        }
        out
    }
}

fn escape_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// The body: raw parts as they are, text parts a window at a time.
struct Streamed {
    parts: std::collections::VecDeque<Part>,
    /// How far into the front text part (counting its opening quote as done) we are.
    at: usize,
    left: u64,
}

impl Streamed {
    fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.parts.front()? {
                Part::Raw(_) => {
                    let Some(Part::Raw(b)) = self.parts.pop_front() else {
                        return None;
                    };
                    if !b.is_empty() {
                        return Some(b);
                    }
                }
                Part::Text(t) => {
                    let mut out = Vec::new();
                    if self.at == 0 {
                        out.push(b'"');
                    }
                    let end = (self.at + WINDOW).min(t.len());
                    escape_into(&mut out, &t[self.at..end]);
                    if end == t.len() {
                        out.push(b'"');
                        self.parts.pop_front();
                        self.at = 0;
                    } else {
                        self.at = end;
                    }
                    return Some(Bytes::from(out));
                }
            }
        }
    }
}

impl HttpBody for Streamed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.next_chunk();
        if let Some(b) = &next {
            self.left = self.left.saturating_sub(b.len() as u64);
        }
        Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn nasty() -> String {
        let mut s: String = (0u8..0x80).map(char::from).collect();
        s.push_str("ü€𝄞\"\\ end");
        s
    }

    #[test]
    fn escaping_matches_serde_json() {
        let s = nasty();
        let mut out = Vec::new();
        escape_quoted(&mut out, s.as_bytes());
        let want = serde_json::to_vec(&s).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(want.clone()).unwrap()
        );
        assert_eq!(escaped_len(s.as_bytes()), want.len() as u64);
    }

    #[tokio::test]
    async fn the_streamed_document_is_the_serde_document() {
        // Long enough for several windows, with multi-byte chars across window edges.
        let big: String = nasty().repeat(3000);
        assert!(big.len() > 3 * WINDOW);
        let text = Bytes::from(big.clone());
        let mut j = JsonBody::new();
        j.begin_object()
            .field("success", &true)
            .key("data")
            .begin_object()
            .text_field("output", text.clone())
            .key("console")
            .begin_array()
            .begin_object()
            .field("ps1", "$")
            .text_field("output", text)
            .end_object()
            .end_array()
            .field("exit_code", &Some(0))
            .end_object()
            .end_object();
        let resp = j.into_response();
        let len = HttpBody::size_hint(resp.body()).exact().unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len() as u64, len);
        let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let want = serde_json::json!({
            "success": true,
            "data": {
                "output": big,
                "console": [{ "ps1": "$", "output": big }],
                "exit_code": 0,
            }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn small_documents() {
        let mut j = JsonBody::new();
        j.begin_array()
            .value(&1)
            .text(Bytes::from_static(b"a\nb"))
            .begin_object()
            .end_object()
            .end_array();
        assert_eq!(j.to_vec(), br#"[1,"a\nb",{}]"#);
    }
}
