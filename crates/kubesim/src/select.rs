//! Label and field selectors, as the Kubernetes API parses them: `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-joined (all must hold).
//!
//! Invariant: a selector that does not parse is an error (the API answers 400), never a
//! selector that matches everything.

use std::collections::BTreeMap;

use serde_json::Value;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    /// `k=v` / `k==v`.
    Eq(String, String),
    /// `k!=v` (also holds when `k` is absent).
    Ne(String, String),
    /// `k in (…)`.
    In(String, Vec<String>),
    /// `k notin (…)` (also holds when `k` is absent).
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    NotExists(String),
}

fn split_terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(rest: &str) -> Result<Vec<String>, String> {
    let r = rest.trim();
    let inner = r
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, got {r:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

/// Parses a selector (empty: matches everything).
pub fn parse(s: &str) -> Result<Vec<Req>, String> {
    let mut out = Vec::new();
    for t in split_terms(s) {
        if let Some(k) = t.strip_prefix('!') {
            out.push(Req::NotExists(k.trim().to_owned()));
        } else if let Some((k, v)) = t.split_once("!=") {
            out.push(Req::Ne(k.trim().to_owned(), v.trim().to_owned()));
        } else if let Some((k, v)) = t.split_once("==") {
            out.push(Req::Eq(k.trim().to_owned(), v.trim().to_owned()));
        } else if let Some((k, v)) = t.split_once('=') {
            out.push(Req::Eq(k.trim().to_owned(), v.trim().to_owned()));
        } else if let Some((k, rest)) = t.split_once(" notin ") {
            out.push(Req::NotIn(k.trim().to_owned(), set(rest)?));
        } else if let Some((k, rest)) = t.split_once(" in ") {
            out.push(Req::In(k.trim().to_owned(), set(rest)?));
        } else if t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            out.push(Req::Exists(t));
        } else {
            return Err(format!("unable to parse requirement {t:?}"));
        }
    }
    Ok(out)
}

/// Whether `get` (a key lookup) satisfies every requirement.
pub fn matches(reqs: &[Req], get: impl Fn(&str) -> Option<String>) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
        Req::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

/// Labels of an object.
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A field (`metadata.name`, `status.phase`) of an object as a string.
pub fn field(obj: &Value, path: &str) -> Option<String> {
    let ptr = format!("/{}", path.replace('.', "/"));
    match obj.pointer(&ptr)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(sel: &str, pairs: &[(&str, &str)]) -> bool {
        let reqs = parse(sel).expect("parses");
        matches(&reqs, |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn every_operator() {
        let l = [("app", "x"), ("tier", "web")];
        assert!(m("app=x", &l));
        assert!(m("app==x,tier=web", &l));
        assert!(!m("app!=x", &l));
        assert!(m("missing!=x", &l));
        assert!(m("tier in (db, web)", &l));
        assert!(!m("tier notin (web)", &l));
        assert!(m("missing notin (web)", &l));
        assert!(m("app", &l));
        assert!(m("!missing", &l));
        assert!(!m("!app", &l));
        assert!(m("", &l));
        assert!(parse("a in b").is_err());
        assert!(parse("a b").is_err());
    }
}
