//! The routes that walk a directory: `POST /v1/file/find` (glob), `POST /v1/file/list`
//! (entries, filtered and sorted) and `POST /v1/file/grep` (matches, filtered and paged).

use std::collections::BTreeMap;

use axum::extract::State;
use paddock_core::VirtualPath;
use paddock_core::sandbox::{EntryKind, Glob, Grep, List};
use serde::Deserialize;
use serde_json::{Value, json};

use super::envelope::{AioResult, flag, ok, refuse};
use crate::AppState;
use crate::error::{AioError, ApiError};
use crate::extract::AioJson;

/// `POST /v1/file/find` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindRequest {
    /// Directory to search.
    pub path: String,
    /// A file-name pattern (`*.py`, matched at any depth) or a relative path pattern
    /// (containing `/`, `**` recursive).
    pub glob: String,
}

/// Result cap of `find` (the SDK offers no parameter).
pub const FIND_MAX_RESULTS: usize = 10_000;

/// `POST /v1/file/find`.
pub async fn file_find(
    State(st): State<AppState>,
    AioJson(req): AioJson<FindRequest>,
) -> AioResult {
    if req.glob.is_empty() {
        return Err(refuse("glob", "must not be empty"));
    }
    let pattern = if req.glob.contains('/') {
        req.glob.clone()
    } else {
        format!("**/{}", req.glob)
    };
    let mut g = Glob::new(&req.path, pattern);
    g.max_results = FIND_MAX_RESULTS;
    let out = st
        .sandbox
        .glob(g)
        .await
        .map_err(|e| AioError(ApiError::sandbox(e)))?;
    let root = VirtualPath::parse(&req.path)
        .map(|p| p.to_string())
        .unwrap_or(req.path);
    let files: Vec<String> = out.paths.iter().map(ToString::to_string).collect();
    // Paths with a name that is not UTF-8: their index in `files` and the exact path
    // escaped (as in `/v1/file/list`); absent when there are none.
    let mut body = json!({ "path": root, "files": files, "truncated": out.truncated });
    if !out.escaped_paths.is_empty() {
        body["escaped_paths"] = json!(
            out.escaped_paths
                .iter()
                .map(|(i, p)| (i.to_string(), Value::String(p.clone())))
                .collect::<serde_json::Map<String, Value>>()
        );
    }
    Ok(ok(body))
}

/// `POST /v1/file/list` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Directory.
    pub path: String,
    /// Descend (to `max_depth`, default unlimited up to 64 levels).
    #[serde(default)]
    pub recursive: Option<bool>,
    /// Include dot files (default false).
    #[serde(default)]
    pub show_hidden: Option<bool>,
    /// Only files with these extensions (directories are kept).
    #[serde(default)]
    pub file_types: Option<Vec<String>>,
    /// Depth when recursive.
    #[serde(default)]
    pub max_depth: Option<i64>,
    /// Report sizes (default true).
    #[serde(default)]
    pub include_size: Option<bool>,
    /// Refused when true (Paddock does not expose host permissions).
    #[serde(default)]
    pub include_permissions: Option<bool>,
    /// `name` (default), `size`, `modified` or `type`.
    #[serde(default)]
    pub sort_by: Option<String>,
    /// Descending order.
    #[serde(default)]
    pub sort_desc: Option<bool>,
}

/// Deepest recursive listing.
pub const LIST_MAX_DEPTH: u32 = 64;

pub use paddock_core::time::iso8601;

/// `POST /v1/file/list`.
pub async fn file_list(
    State(st): State<AppState>,
    AioJson(req): AioJson<ListRequest>,
) -> AioResult {
    if flag(req.include_permissions) {
        return Err(refuse(
            "include_permissions",
            "permissions are not exposed by Paddock",
        ));
    }
    let depth = if flag(req.recursive) {
        match req.max_depth {
            Some(d) if d < 1 => return Err(refuse("max_depth", "must be >= 1")),
            Some(d) => u32::try_from(d)
                .unwrap_or(LIST_MAX_DEPTH)
                .min(LIST_MAX_DEPTH),
            None => LIST_MAX_DEPTH,
        }
    } else {
        1
    };
    let sort_by = req.sort_by.as_deref().unwrap_or("name");
    if !matches!(sort_by, "name" | "size" | "modified" | "type") {
        return Err(refuse(
            "sort_by",
            "must be one of name, size, modified, type",
        ));
    }
    let mut list = List::new(&req.path);
    list.max_depth = depth;
    list.show_hidden = flag(req.show_hidden);
    list.apply_ignore = false;
    let listing = st.sandbox.list(list).await?;
    let types: Option<Vec<String>> = req.file_types.map(|ts| {
        ts.iter()
            .map(|t| t.trim_start_matches('.').to_ascii_lowercase())
            .collect()
    });
    let include_size = req.include_size.unwrap_or(true);
    let mut files: Vec<(Value, &paddock_core::sandbox::Entry)> = Vec::new();
    for e in &listing.entries {
        let name = e.path.file_name().unwrap_or_default().to_owned();
        let is_dir = e.kind == EntryKind::Dir;
        let extension = (!is_dir)
            .then(|| name.rsplit_once('.').map(|(_, x)| x.to_owned()))
            .flatten();
        if let Some(ts) = &types
            && !is_dir
            && !extension
                .as_ref()
                .is_some_and(|x| ts.contains(&x.to_ascii_lowercase()))
        {
            continue;
        }
        let mut v = json!({
            "name": name,
            "path": e.path.to_string(),
            "is_directory": is_dir,
            "size": if include_size { Some(e.size) } else { None },
            "modified_time": e.modified.map(iso8601),
            "permissions": null,
            "extension": extension,
        });
        // A name that is not UTF-8 is listed with a lossy stand-in in `name` and `path`
        // (the schema's strings) and, beside them, the exact path escaped, so two such
        // names never read as one and the file can still be addressed.
        if let Some(exact) = &e.escaped_path {
            v["escaped_path"] = json!(exact);
        }
        files.push((v, e));
    }
    files.sort_by(|(_, a), (_, b)| match sort_by {
        "size" => a.size.cmp(&b.size).then(a.path.cmp(&b.path)),
        "modified" => a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)),
        "type" => (a.kind != EntryKind::Dir)
            .cmp(&(b.kind != EntryKind::Dir))
            .then(a.path.cmp(&b.path)),
        _ => a.path.cmp(&b.path),
    });
    if flag(req.sort_desc) {
        files.reverse();
    }
    let dirs = files
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Dir)
        .count();
    let total = files.len();
    let root = VirtualPath::parse(&req.path)
        .map(|p| p.to_string())
        .unwrap_or(req.path);
    Ok(ok(json!({
        "path": root,
        "files": files.into_iter().map(|(v, _)| v).collect::<Vec<_>>(),
        "total_count": total,
        "directory_count": dirs,
        "file_count": total - dirs,
        "truncated": listing.truncated,
    })))
}

/// `POST /v1/file/grep` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrepRequest {
    /// File or directory.
    pub path: String,
    /// Regex (or literal with `fixed_strings`).
    pub pattern: String,
    /// Only files matching one of these globs (relative path or file name).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Skip files matching one of these globs.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// Ignore case (default false).
    #[serde(default)]
    pub case_insensitive: Option<bool>,
    /// Literal pattern.
    #[serde(default)]
    pub fixed_strings: Option<bool>,
    /// Refused when > 0.
    #[serde(default)]
    pub context_before: Option<i64>,
    /// Refused when > 0.
    #[serde(default)]
    pub context_after: Option<i64>,
    /// Result cap (default 100).
    #[serde(default)]
    pub max_results: Option<i64>,
    /// Skip larger files (`1M`, `500K`, bytes); Paddock never searches files over 1 MB.
    #[serde(default)]
    pub max_file_size: Option<String>,
    /// Refused when true.
    #[serde(default)]
    pub multiline: Option<bool>,
    /// Skip this many matches (paging).
    #[serde(default)]
    pub offset: Option<i64>,
    /// Refused when set (no file-type database).
    #[serde(default)]
    pub r#type: Option<String>,
    /// Search subdirectories (default true).
    #[serde(default)]
    pub recursive: Option<bool>,
}

/// Largest `max_results` + `offset` accepted.
pub const GREP_MAX_RESULTS: usize = 10_000;

/// Parses `1M`, `500K`, `2G`, `123` into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last()?.to_ascii_uppercase() {
        'K' => (&t[..t.len() - 1], 1024u64),
        'M' => (&t[..t.len() - 1], 1024 * 1024),
        'G' => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

fn globset(field: &str, pats: &[String]) -> Result<globset::GlobSet, AioError> {
    let mut b = globset::GlobSetBuilder::new();
    for p in pats {
        let g = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map_err(|e| refuse(field, &format!("invalid glob {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| refuse(field, &format!("invalid globs: {e}")))
}

/// `POST /v1/file/grep`.
pub async fn file_grep(
    State(st): State<AppState>,
    AioJson(req): AioJson<GrepRequest>,
) -> AioResult {
    if req.context_before.is_some_and(|n| n != 0) {
        return Err(refuse("context_before", "context lines are not supported"));
    }
    if req.context_after.is_some_and(|n| n != 0) {
        return Err(refuse("context_after", "context lines are not supported"));
    }
    if flag(req.multiline) {
        return Err(refuse("multiline", "multiline search is not supported"));
    }
    if req.r#type.is_some() {
        return Err(refuse(
            "type",
            "file types are not supported; use include globs",
        ));
    }
    let max = match req.max_results {
        Some(n) if n < 1 => return Err(refuse("max_results", "must be >= 1")),
        Some(n) => usize::try_from(n)
            .unwrap_or(GREP_MAX_RESULTS)
            .min(GREP_MAX_RESULTS),
        None => paddock_core::sandbox::DEFAULT_GREP_MAX_RESULTS,
    };
    let offset = match req.offset {
        Some(n) if n < 0 => return Err(refuse("offset", "must be >= 0")),
        Some(n) => usize::try_from(n)
            .unwrap_or(GREP_MAX_RESULTS)
            .min(GREP_MAX_RESULTS),
        None => 0,
    };
    let size_cap =
        match &req.max_file_size {
            Some(s) => Some(parse_size(s).ok_or_else(|| {
                refuse("max_file_size", "must be a size such as 1M, 500K or 1024")
            })?),
            None => None,
        };
    let include = req
        .include
        .as_deref()
        .map(|p| globset("include", p))
        .transpose()?;
    let exclude = req
        .exclude
        .as_deref()
        .map(|p| globset("exclude", p))
        .transpose()?;
    let recursive = req.recursive.unwrap_or(true);
    let mut g = Grep::new(&req.path, &req.pattern);
    g.literal = flag(req.fixed_strings);
    g.case_sensitive = !flag(req.case_insensitive);
    let filtering = include.is_some() || exclude.is_some() || !recursive || size_cap.is_some();
    // With client-side filters, ask for more so the filtered page can still fill up.
    g.max_results = if filtering {
        GREP_MAX_RESULTS
    } else {
        (max + offset).min(GREP_MAX_RESULTS)
    };
    let out = st.sandbox.grep(g).await?;
    let root = VirtualPath::parse(&req.path).map_err(|e| AioError(ApiError::sandbox(e)))?;
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut kept = Vec::new();
    for m in &out.matches {
        let rel = m
            .path
            .strip_prefix(&root)
            .unwrap_or(m.path.file_name().unwrap_or_default())
            .to_owned();
        let name = m.path.file_name().unwrap_or_default();
        let rel = if rel.is_empty() { name.to_owned() } else { rel };
        if !recursive && rel.contains('/') {
            continue;
        }
        if let Some(inc) = &include
            && !(inc.is_match(&rel) || inc.is_match(name))
        {
            continue;
        }
        if let Some(exc) = &exclude
            && (exc.is_match(&rel) || exc.is_match(name))
        {
            continue;
        }
        if let Some(cap) = size_cap {
            let key = m.path.to_string();
            let size = match sizes.get(&key) {
                Some(s) => *s,
                None => {
                    let s = st
                        .sandbox
                        .stat(&key)
                        .await
                        .map(|e| e.size)
                        .unwrap_or(u64::MAX);
                    sizes.insert(key, s);
                    s
                }
            };
            if size > cap {
                continue;
            }
        }
        kept.push(m);
    }
    let available = kept.len();
    let page: Vec<Value> = kept
        .into_iter()
        .skip(offset)
        .take(max)
        .map(|m| json!({ "file": m.path.to_string(), "line_number": m.line_number, "line_content": m.line }))
        .collect();
    let files_matched = {
        let mut f: Vec<&str> = page.iter().filter_map(|v| v["file"].as_str()).collect();
        f.dedup();
        f.len()
    };
    let truncated = out.truncated || available > offset + page.len();
    Ok(ok(json!({
        "path": root.to_string(),
        "pattern": req.pattern,
        "matches": page,
        "match_count": page.len(),
        "files_matched": files_matched,
        "truncated": truncated,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M"), Some(1024 * 1024));
        assert_eq!(parse_size("500k"), Some(500 * 1024));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }
}
