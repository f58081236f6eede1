//! The OpenAPI 3 description of every route this crate serves, written by hand.
//!
//! Invariant: the document describes what the handlers accept and return, including the
//! error shapes and statuses, so a fuzzer driven by it (schemathesis) finds only 4xx for
//! bad input; a test checks that every route in [`crate::routes`] is described.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn s() -> Value {
    json!({ "type": "string" })
}
fn ns() -> Value {
    json!({ "type": ["string", "null"] })
}
fn nb() -> Value {
    json!({ "type": ["boolean", "null"] })
}
fn ni() -> Value {
    json!({ "type": ["integer", "null"] })
}
fn nn() -> Value {
    json!({ "type": ["number", "null"] })
}
fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": props })
}

fn errors(aio: bool) -> Value {
    let mut m = serde_json::Map::new();
    for code in [
        "400", "401", "403", "404", "405", "409", "413", "415", "422", "500", "503",
    ] {
        // Authentication and method errors come from the router, before any AIO handler,
        // so they always have the native shape.
        let e = if aio && code != "401" && code != "405" {
            r("AioError")
        } else {
            r("Error")
        };
        m.insert(
            code.into(),
            json!({ "description": "error", "content": { "application/json": { "schema": e } } }),
        );
    }
    Value::Object(m)
}

fn with_ok(mut errs: Value, ok: Value) -> Value {
    errs["200"] = ok;
    errs
}

fn json_ok(schema: Value) -> Value {
    json!({ "description": "ok", "content": { "application/json": { "schema": schema } } })
}

fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["success", "data"],
        "properties": { "success": { "type": "boolean" }, "message": ns(), "data": data }
    })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn post(id: &str, req: Value, ok: Value, aio: bool) -> Value {
    json!({ "post": { "operationId": id, "requestBody": body(req), "responses": with_ok(errors(aio), ok) } })
}

/// The document.
pub fn document() -> Value {
    let exec_request = obj(
        &["command"],
        json!({
            "command": s(),
            "env": { "type": "object", "additionalProperties": s() },
            "timeout_secs": nn(),
            "cwd": ns(),
            "max_output_bytes": { "type": ["integer", "null"], "minimum": 0 },
        }),
    );
    let entry = json!({
        "type": "object",
        "required": ["path", "kind", "size"],
        "properties": {
            "path": s(), "kind": { "enum": ["file", "dir", "symlink", "other"] },
            "size": { "type": "integer" }, "modified": ni(),
        }
    });
    let path_only = obj(&["path"], json!({ "path": s() }));
    let native_ok = |schema: Value| json_ok(schema);
    let bytes_ok = json!({
        "description": "the file's bytes",
        "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }
    });
    let any_obj = json!({ "type": "object" });
    let paths = json!({
        "/v1/sandbox": { "get": {
            "operationId": "sandbox_context",
            "responses": with_ok(errors(true), json_ok(json!({
                "type": "object",
                "required": ["home_dir", "version", "detail"],
                "properties": { "success": { "type": "boolean" }, "home_dir": s(), "workspace": ns(), "version": s(), "detail": any_obj }
            })))
        }},
        "/v1/shell/exec": post("shell_exec", obj(&["command"], json!({
            "command": s(), "id": ns(), "exec_dir": ns(), "async_mode": nb(), "timeout": nn(), "strict": nb(),
            "no_change_timeout": ni(), "hard_timeout": nn(), "preserve_symlinks": nb(), "truncate": nb(),
        })), json_ok(envelope(json!({
            "type": "object", "required": ["session_id", "command", "status"],
            "properties": { "session_id": s(), "command": s(), "status": s(), "output": ns(), "exit_code": ni() }
        }))), true),
        "/v1/shell/sessions/create": post("shell_create_session", obj(&[], json!({
            "id": ns(), "exec_dir": ns(), "no_change_timeout": ni(), "preserve_symlinks": nb(),
        })), json_ok(envelope(json!({
            "type": "object", "required": ["session_id", "working_dir"],
            "properties": { "session_id": s(), "working_dir": s() }
        }))), true),
        "/v1/shell/sessions/{id}": { "delete": {
            "operationId": "shell_cleanup_session",
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": s() }],
            "responses": with_ok(errors(true), json_ok(envelope(json!({}))))
        }},
        "/v1/bash/exec": post("bash_exec", obj(&["command"], json!({
            "command": s(), "session_id": ns(), "exec_dir": ns(),
            "env": { "type": ["object", "null"], "additionalProperties": ns() },
            "async_mode": nb(), "timeout": nn(), "hard_timeout": nn(), "max_output_length": ni(),
        })), json_ok(envelope(json!({
            "type": "object", "required": ["session_id", "command_id", "command", "status"],
            "properties": { "session_id": s(), "command_id": s(), "command": s(), "status": s(),
                "stdout": ns(), "stderr": ns(), "exit_code": ni() }
        }))), true),
        "/v1/file/read": post("file_read", obj(&["file"], json!({
            "file": s(), "start_line": ni(), "end_line": ni(), "sudo": nb(),
        })), json_ok(envelope(json!({
            "type": "object", "required": ["content", "file"], "properties": { "content": s(), "file": s() }
        }))), true),
        "/v1/file/write": post("file_write", obj(&["file", "content"], json!({
            "file": s(), "content": s(), "encoding": ns(), "append": nb(), "leading_newline": nb(),
            "trailing_newline": nb(), "sudo": nb(),
        })), json_ok(envelope(json!({
            "type": "object", "required": ["file"], "properties": { "file": s(), "bytes_written": ni() }
        }))), true),
        "/v1/file/download": { "get": {
            "operationId": "file_download",
            "parameters": [{ "name": "path", "in": "query", "required": true, "schema": s() }],
            "responses": with_ok(errors(true), bytes_ok.clone())
        }},
        "/v1/file/upload": { "post": {
            "operationId": "file_upload",
            "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": {
                "type": "object", "required": ["file"],
                "properties": { "path": s(), "file": { "type": "string", "format": "binary" } }
            }}}},
            "responses": with_ok(errors(true), json_ok(envelope(json!({
                "type": "object", "required": ["file_path", "file_size", "success"],
                "properties": { "file_path": s(), "file_size": { "type": "integer" }, "success": { "type": "boolean" } }
            }))))
        }},
        "/v1/file/find": post("file_find", obj(&["path", "glob"], json!({ "path": s(), "glob": s() })),
            json_ok(envelope(json!({ "type": "object", "required": ["path"],
                "properties": { "path": s(), "files": { "type": "array", "items": s() } } }))), true),
        "/v1/file/list": post("file_list", obj(&["path"], json!({
            "path": s(), "recursive": nb(), "show_hidden": nb(),
            "file_types": { "type": ["array", "null"], "items": s() }, "max_depth": ni(), "include_size": nb(),
            "include_permissions": nb(), "sort_by": ns(), "sort_desc": nb(),
        })), json_ok(envelope(json!({ "type": "object", "required": ["path"],
            "properties": { "path": s(), "files": { "type": "array" }, "total_count": ni() } }))), true),
        "/v1/file/grep": post("file_grep", obj(&["path", "pattern"], json!({
            "path": s(), "pattern": s(),
            "include": { "type": ["array", "null"], "items": s() }, "exclude": { "type": ["array", "null"], "items": s() },
            "case_insensitive": nb(), "fixed_strings": nb(), "context_before": ni(), "context_after": ni(),
            "max_results": ni(), "max_file_size": ns(), "multiline": nb(), "offset": ni(), "type": ns(), "recursive": nb(),
        })), json_ok(envelope(json!({ "type": "object", "required": ["path", "pattern"],
            "properties": { "path": s(), "pattern": s(), "matches": { "type": "array" }, "truncated": nb() } }))), true),
        "/v1/info": { "get": { "operationId": "info", "responses": with_ok(errors(false), native_ok(any_obj.clone())) } },
        "/v1/exec": { "post": {
            "operationId": "exec", "requestBody": body(exec_request),
            "responses": with_ok(errors(false), json!({
                "description": "one JSON event per line: stdout/stderr chunks, then the exit record",
                "content": { "application/x-ndjson": { "schema": s() } }
            }))
        }},
        "/v1/fs/read_text": post("read_text", obj(&["path"], json!({
            "path": s(), "start_line": { "type": ["integer", "null"], "minimum": 0 }, "end_line": { "type": ["integer", "null"], "minimum": 0 },
        })), native_ok(json!({ "type": "object", "required": ["path", "content", "total_lines"],
            "properties": { "path": s(), "content": s(), "total_lines": { "type": "integer" } } })), false),
        "/v1/fs/read_bytes": { "get": {
            "operationId": "read_bytes",
            "parameters": [
                { "name": "path", "in": "query", "required": true, "schema": s() },
                { "name": "offset", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0 } },
                { "name": "len", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0 } }
            ],
            "responses": with_ok(errors(false), bytes_ok)
        }},
        "/v1/fs/write_text": post("write_text", obj(&["path", "content"], json!({
            "path": s(), "content": s(), "append": { "type": "boolean" },
        })), native_ok(r("WriteOutcome")), false),
        "/v1/fs/write_bytes": { "put": {
            "operationId": "write_bytes",
            "parameters": [
                { "name": "path", "in": "query", "required": true, "schema": s() },
                { "name": "append", "in": "query", "required": false, "schema": { "type": "boolean" } },
                { "name": "max_bytes", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0 } }
            ],
            "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
            "responses": with_ok(errors(false), native_ok(r("WriteOutcome")))
        }},
        "/v1/fs/stat": post("stat", path_only, native_ok(entry.clone()), false),
        "/v1/fs/list": post("list", obj(&["path"], json!({
            "path": s(), "max_depth": { "type": "integer", "minimum": 0 }, "show_hidden": { "type": "boolean" },
            "apply_ignore": { "type": "boolean" }, "max_entries": { "type": "integer", "minimum": 0 },
        })), native_ok(json!({ "type": "object", "properties": { "entries": { "type": "array", "items": entry }, "truncated": { "type": "boolean" } } })), false),
        "/v1/fs/glob": post("glob", obj(&["path", "pattern"], json!({
            "path": s(), "pattern": s(), "include_dirs": { "type": "boolean" }, "max_results": { "type": "integer", "minimum": 0 },
        })), native_ok(json!({ "type": "object", "properties": { "paths": { "type": "array", "items": s() }, "truncated": { "type": "boolean" } } })), false),
        "/v1/fs/grep": post("grep", obj(&["path", "pattern"], json!({
            "path": s(), "pattern": s(), "glob": ns(), "literal": { "type": "boolean" },
            "case_sensitive": { "type": "boolean" }, "max_results": { "type": "integer", "minimum": 0 },
        })), native_ok(json!({ "type": "object", "properties": { "matches": { "type": "array" }, "truncated": { "type": "boolean" } } })), false),
        "/v1/fs/str_replace": post("str_replace", obj(&["path", "old", "new"], json!({
            "path": s(), "old": s(), "new": s(), "replace_all": { "type": "boolean" }, "expect_unique": { "type": "boolean" },
        })), native_ok(json!({ "type": "object", "required": ["replacements"], "properties": { "replacements": { "type": "integer" } } })), false),
        "/v1/tools/{name}": { "post": {
            "operationId": "tool_call",
            "parameters": [{ "name": "name", "in": "path", "required": true, "schema": s() }],
            "requestBody": body(json!({ "type": "object" })),
            "responses": with_ok(errors(false), native_ok(json!({
                "type": "object", "required": ["output", "is_error"],
                "properties": { "output": s(), "is_error": { "type": "boolean" } }
            })))
        }},
        "/openapi.json": { "get": { "operationId": "openapi", "responses": { "200": json_ok(json!({ "type": "object" })) } } },
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Paddock agent API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The in-sandbox data plane: AIO-compatible /v1/shell, /v1/bash, /v1/file and /v1/sandbox routes, and Paddock's native /v1/exec, /v1/fs and /v1/tools routes."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["detail", "code"],
                    "properties": { "detail": s(), "field": ns(), "code": s(), "error": { "type": ["object", "null"] } }
                },
                "AioError": {
                    "type": "object", "required": ["success", "message"],
                    "properties": { "success": { "const": false }, "message": s(), "data": { "type": "null" },
                        "code": s(), "error": { "type": ["object", "null"] }, "detail": { "type": "array" } }
                },
                "WriteOutcome": {
                    "type": "object", "required": ["path", "bytes_written"],
                    "properties": { "path": s(), "bytes_written": { "type": "integer" } }
                }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_route() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/sandbox",
            "/v1/shell/exec",
            "/v1/shell/sessions/create",
            "/v1/shell/sessions/{id}",
            "/v1/bash/exec",
            "/v1/file/read",
            "/v1/file/write",
            "/v1/file/download",
            "/v1/file/upload",
            "/v1/file/find",
            "/v1/file/list",
            "/v1/file/grep",
            "/v1/info",
            "/v1/exec",
            "/v1/fs/read_text",
            "/v1/fs/read_bytes",
            "/v1/fs/write_text",
            "/v1/fs/write_bytes",
            "/v1/fs/stat",
            "/v1/fs/list",
            "/v1/fs/glob",
            "/v1/fs/grep",
            "/v1/fs/str_replace",
            "/v1/tools/{name}",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(p), "{p} is not described");
        }
        assert_eq!(paths.len(), 25, "a described route is not served");
    }
}
