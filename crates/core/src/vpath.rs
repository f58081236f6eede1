//! Virtual paths: what an agent sees inside a sandbox. A [`VirtualPath`] is absolute,
//! lexically normalised (no `.`, `..`, empty segments or trailing `/`), NUL-free and
//! bounded in length; it can only be built by [`VirtualPath::parse`], so holding one
//! proves those properties.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SandboxError;

/// Longest accepted path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted path segment, in bytes (Linux `NAME_MAX`).
pub const MAX_SEGMENT_LEN: usize = 255;

/// An absolute, normalised path in the sandbox's virtual filesystem.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualPath(String);

/// The result of lexical analysis of a raw path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lexed {
    /// The normalised path.
    pub normalized: VirtualPath,
    /// When the raw path contains `..`, the normalised prefix before the first `..`.
    pub before_dotdot: Option<VirtualPath>,
}

impl VirtualPath {
    /// The virtual root `/`.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Parses and normalises `raw`. Refuses relative paths, NUL, over-long paths or
    /// segments, and `..` that would climb above `/`.
    pub fn parse(raw: &str) -> Result<Self, SandboxError> {
        lex(raw).map(|l| l.normalized)
    }

    /// The path as a string (`/` for the root, never a trailing `/` otherwise).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The segments, root has none.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// Number of segments.
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// Whether `base` is this path or one of its ancestors, on whole segments
    /// (`/mnt/user-data-x` does not start with `/mnt/user-data`).
    pub fn starts_with(&self, base: &VirtualPath) -> bool {
        self.strip_prefix(base).is_some()
    }

    /// The part of this path below `base` without a leading `/` (`""` when equal), or
    /// `None` when `base` is not an ancestor.
    pub fn strip_prefix(&self, base: &VirtualPath) -> Option<&str> {
        if base.is_root() {
            return Some(self.0.trim_start_matches('/'));
        }
        let rest = self.0.strip_prefix(base.0.as_str())?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix('/')
        }
    }

    /// Appends a relative path (normalised; `..` may not climb above `/`).
    pub fn join(&self, rel: &str) -> Result<Self, SandboxError> {
        if rel.starts_with('/') {
            return Self::parse(rel);
        }
        Self::parse(&format!("{}/{}", self.0, rel))
    }

    /// Appends one segment that is known to be a plain name (no `/`, not `.`/`..`).
    pub fn child(&self, name: &str) -> Result<Self, SandboxError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(SandboxError::invalid_path(name, "not a plain file name"));
        }
        self.join(name)
    }

    /// The parent (`None` for the root).
    pub fn parent(&self) -> Option<Self> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) => Some(Self::root()),
            Some(i) => Some(Self(self.0[..i].to_owned())),
            None => None,
        }
    }

    /// The last segment (`None` for the root).
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    pub(crate) fn from_segments<'a>(segs: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = String::new();
        for seg in segs {
            s.push('/');
            s.push_str(seg);
        }
        if s.is_empty() {
            s.push('/');
        }
        Self(s)
    }
}

/// Lexical analysis: validation, normalisation, and where the first `..` is.
pub(crate) fn lex(raw: &str) -> Result<Lexed, SandboxError> {
    if raw.contains('\0') {
        return Err(SandboxError::invalid_path(raw, "contains a NUL byte"));
    }
    if raw.is_empty() {
        return Err(SandboxError::invalid_path(raw, "is empty"));
    }
    if !raw.starts_with('/') {
        return Err(SandboxError::invalid_path(
            raw,
            "must be absolute (start with '/')",
        ));
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(SandboxError::invalid_path(
            raw,
            format!("is longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut before_dotdot = None;
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if before_dotdot.is_none() {
                    before_dotdot = Some(VirtualPath::from_segments(stack.iter().copied()));
                }
                if stack.pop().is_none() {
                    return Err(SandboxError::Escape {
                        path: crate::error::shown(raw),
                    });
                }
            }
            s => {
                if s.len() > MAX_SEGMENT_LEN {
                    return Err(SandboxError::invalid_path(
                        raw,
                        format!("has a segment longer than {MAX_SEGMENT_LEN} bytes"),
                    ));
                }
                stack.push(s);
            }
        }
    }
    Ok(Lexed {
        normalized: VirtualPath::from_segments(stack),
        before_dotdot,
    })
}

impl fmt::Display for VirtualPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VirtualPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtualPath({:?})", self.0)
    }
}

impl AsRef<str> for VirtualPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for VirtualPath {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for VirtualPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for VirtualPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> String {
        VirtualPath::parse(s).unwrap().0
    }

    #[test]
    fn normalises() {
        assert_eq!(p("/"), "/");
        assert_eq!(p("//"), "/");
        assert_eq!(p("/mnt/user-data/"), "/mnt/user-data");
        assert_eq!(
            p("/mnt//user-data/./workspace/"),
            "/mnt/user-data/workspace"
        );
        assert_eq!(
            p("/mnt/user-data/workspace/a/../b"),
            "/mnt/user-data/workspace/b"
        );
        assert_eq!(p("/a/b/../../c"), "/c");
    }

    #[test]
    fn refuses() {
        for (raw, code) in [
            ("", "invalid_path"),
            ("relative/x", "invalid_path"),
            ("/a\0b", "invalid_path"),
            ("/..", "access_denied"),
            ("/a/../../b", "access_denied"),
        ] {
            assert_eq!(VirtualPath::parse(raw).unwrap_err().code(), code, "{raw:?}");
        }
        let long = format!("/{}", "a/".repeat(2100));
        assert!(
            VirtualPath::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
        let seg = format!("/{}", "a".repeat(256));
        assert!(
            VirtualPath::parse(&seg)
                .unwrap_err()
                .to_string()
                .contains("segment")
        );
    }

    #[test]
    fn prefixes_are_segment_wise() {
        let base = VirtualPath::parse("/mnt/user-data").unwrap();
        let x = VirtualPath::parse("/mnt/user-data-x/y").unwrap();
        assert!(!x.starts_with(&base));
        let y = VirtualPath::parse("/mnt/user-data/y/z").unwrap();
        assert_eq!(y.strip_prefix(&base), Some("y/z"));
        assert_eq!(base.strip_prefix(&base), Some(""));
        assert_eq!(
            y.strip_prefix(&VirtualPath::root()),
            Some("mnt/user-data/y/z")
        );
    }

    #[test]
    fn parent_and_name() {
        let v = VirtualPath::parse("/a/b").unwrap();
        assert_eq!(v.parent().unwrap().as_str(), "/a");
        assert_eq!(v.parent().unwrap().parent().unwrap().as_str(), "/");
        assert_eq!(VirtualPath::root().parent(), None);
        assert_eq!(v.file_name(), Some("b"));
        assert!(v.child("..").is_err());
        assert_eq!(v.child("c").unwrap().as_str(), "/a/b/c");
    }

    #[test]
    fn lex_reports_dotdot_prefix() {
        let l = lex("/mnt/user-data/workspace/../uploads").unwrap();
        assert_eq!(l.normalized.as_str(), "/mnt/user-data/uploads");
        assert_eq!(
            l.before_dotdot.unwrap().as_str(),
            "/mnt/user-data/workspace"
        );
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(raw in "(/(\\.|\\.\\.|[a-z]{1,3}|)){0,12}") {
            if let Ok(v) = VirtualPath::parse(&raw) {
                let again = VirtualPath::parse(v.as_str()).unwrap();
                prop_assert_eq!(&again, &v);
                prop_assert!(!v.as_str().contains("/./") && !v.as_str().contains("/../"));
                prop_assert!(!v.as_str().contains("//"));
                prop_assert!(v.is_root() || !v.as_str().ends_with('/'));
            }
        }

        #[test]
        fn parse_never_panics(raw in "\\PC{0,64}") {
            let _ = VirtualPath::parse(&raw);
        }
    }
}
