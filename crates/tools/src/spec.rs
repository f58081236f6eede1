//! The tools as a model sees them: names, descriptions and JSON Schemas, and the
//! argument checks of [`crate::Tools::call`].
//!
//! Invariant: the schemas and the argument validation come from one parameter table,
//! so a call the schema allows always passes validation. Validation is lenient in one
//! documented way: an optional parameter without a default (`glob`, `start_line`,
//! `end_line`) may also be `null`, meaning "not given", because models send that; the
//! schema keeps a single `type` so that every model provider accepts it.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::ToolError;

/// One tool as advertised to a model (MCP `tools/list`, an OpenAI function, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does, when to use it, its limits, with example paths.
    pub description: String,
    /// A JSON Schema object: `properties`, `required`, `additionalProperties: false`.
    pub input_schema: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Boolean,
    Integer,
}

impl Kind {
    fn schema_name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
        }
    }

    fn article(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Boolean => "a boolean",
            Kind::Integer => "an integer",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Default {
    None,
    Bool(bool),
    Int(i64),
    Str(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// `null` is accepted and means "not given".
    pub nullable: bool,
    pub default: Default,
    pub doc: &'static str,
}

const fn req(name: &'static str, kind: Kind, doc: &'static str) -> Param {
    Param {
        name,
        kind,
        required: true,
        nullable: false,
        default: Default::None,
        doc,
    }
}

const fn opt(name: &'static str, kind: Kind, default: Default, doc: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        nullable: false,
        default,
        doc,
    }
}

const fn nullable(name: &'static str, kind: Kind, doc: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        nullable: true,
        default: Default::None,
        doc,
    }
}

const DESCRIPTION: Param = opt(
    "description",
    Kind::String,
    Default::Str(""),
    "Optional short explanation of why you are making this call, shown to the user. It does not change what the tool does.",
);

pub(crate) struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub params: &'static [Param],
}

pub(crate) const TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "bash",
        description: "Execute a bash command in the sandbox and return its output.\n\
\n\
- Commands run with /bin/bash -c in /mnt/user-data/workspace, with stdin empty. Each call is a fresh shell: `cd` and exported variables do not carry over to the next call.\n\
- Files: /mnt/user-data/workspace (your working directory), /mnt/user-data/uploads (files the user uploaded), /mnt/user-data/outputs (put deliverables here); /mnt/skills and /mnt/acp-workspace are read-only.\n\
- Use `python` to run Python code. Prefer a virtual environment in /mnt/user-data/workspace/.venv and install packages with `python -m pip` inside it.\n\
- The output is stdout, then `Std Error:` and stderr, then `Exit Code: N` when the command failed. Output longer than the configured limit (20,000 characters by default) keeps its head and tail and drops the middle; redirect large output to a file and read parts of it with read_file.\n\
- A command is killed after the configured timeout (600 seconds by default). To start a long-lived process such as a web server, ALWAYS run it in the background with its output redirected, e.g. `your-command > /mnt/user-data/workspace/server.log 2>&1 &`, then check the log file or poll the port.",
        params: &[
            req(
                "command",
                Kind::String,
                "The bash command to execute, e.g. `ls -la /mnt/user-data/uploads` or `python script.py > out.txt`. Always use absolute paths for files and directories.",
            ),
            DESCRIPTION,
        ],
    },
    ToolDef {
        name: "ls",
        description: "List the contents of a directory up to 2 levels deep, one path per line; directories end with `/`.\n\
\n\
Use it to see what is in /mnt/user-data/workspace, /mnt/user-data/uploads, /mnt/user-data/outputs or a skill under /mnt/skills. Version-control, dependency and cache directories (.git, node_modules, __pycache__, …) are skipped. Prints `(empty)` for an empty directory. Output longer than the configured limit (20,000 characters by default) is cut at the end; list a more specific path to see the rest.",
        params: &[
            req(
                "path",
                Kind::String,
                "The **absolute** path of the directory to list, e.g. `/mnt/user-data/workspace`.",
            ),
            DESCRIPTION,
        ],
    },
    ToolDef {
        name: "glob",
        description: "Find files (and optionally directories) whose path relative to a root directory matches a glob pattern.\n\
\n\
`*` matches within one path segment and `**` across segments: `**/*.py` finds Python files at any depth, `*.csv` only directly under the root. Returns `Found N paths under ROOT` followed by a numbered list of absolute paths, or `No files matched under ROOT`. At most 200 paths by default (never more than 1000); when the list is cut, narrow the path or the pattern. Version-control, dependency and cache directories are skipped.",
        params: &[
            req(
                "pattern",
                Kind::String,
                "The glob pattern to match relative to the root path, for example `**/*.py`.",
            ),
            req(
                "path",
                Kind::String,
                "The **absolute** root directory to search under, e.g. `/mnt/user-data/workspace`.",
            ),
            DESCRIPTION,
            opt(
                "include_dirs",
                Kind::Boolean,
                Default::Bool(false),
                "Whether matching directories should also be returned. Default is false.",
            ),
            opt(
                "max_results",
                Kind::Integer,
                Default::Int(200),
                "Maximum number of paths to return. Default is 200; values <= 0 mean the default, values above 1000 are capped.",
            ),
        ],
    },
    ToolDef {
        name: "grep",
        description: "Search for lines matching a regular expression (or plain text) in a file or in every file under a directory.\n\
\n\
Matching is case-insensitive unless case_sensitive is true. Returns `Found N matches under ROOT` followed by one `path:line: text` line per match (lines are cut to 200 characters), or `No matches found under ROOT`. Binary files, files over 1 MB and lines over 2,000 characters are skipped. At most 100 matches by default (never more than 500); when the list is cut, narrow the path or add a glob filter such as `**/*.py`.",
        params: &[
            req(
                "pattern",
                Kind::String,
                "The regex (Rust/RE2-style syntax, e.g. `fn \\w+\\(`) or, with literal=true, the plain text to search for.",
            ),
            req(
                "path",
                Kind::String,
                "The **absolute** file or root directory to search, e.g. `/mnt/user-data/workspace/src`.",
            ),
            DESCRIPTION,
            nullable(
                "glob",
                Kind::String,
                "Optional glob filter for candidate files, relative to the root path, for example `**/*.py`.",
            ),
            opt(
                "literal",
                Kind::Boolean,
                Default::Bool(false),
                "Whether to treat `pattern` as a plain string. Default is false.",
            ),
            opt(
                "case_sensitive",
                Kind::Boolean,
                Default::Bool(false),
                "Whether matching is case-sensitive. Default is false.",
            ),
            opt(
                "max_results",
                Kind::Integer,
                Default::Int(100),
                "Maximum number of matching lines to return. Default is 100; values <= 0 mean the default, values above 500 are capped.",
            ),
        ],
    },
    ToolDef {
        name: "read_file",
        description: "Read a UTF-8 text file: source code, configuration, logs, CSV, Markdown, any text-based file.\n\
\n\
Without a range it returns the whole file; with start_line/end_line (1-based, inclusive) only those lines. Output longer than the configured limit (50,000 characters by default) is cut at the end with a note; read the rest in ranges. Binary files (spreadsheets, PDFs, images) cannot be read as text: process them with bash and a suitable library instead. Example paths: `/mnt/user-data/uploads/report.md`, `/mnt/skills/public/<skill>/SKILL.md`.",
        params: &[
            req(
                "path",
                Kind::String,
                "The **absolute** path of the file to read.",
            ),
            DESCRIPTION,
            nullable(
                "start_line",
                Kind::Integer,
                "Optional first line to return (1-indexed, inclusive). Omit to start at the first line.",
            ),
            nullable(
                "end_line",
                Kind::Integer,
                "Optional last line to return (1-indexed, inclusive). Omit to read through the last line.",
            ),
        ],
    },
    ToolDef {
        name: "write_file",
        description: "Write text to a file, creating missing parent directories. By default this overwrites the file; set append=true to add to its end instead.\n\
\n\
SIZE POLICY: one non-append call may carry at most 80 KB of UTF-8 content (the operator may change this). Larger single payloads risk the model's output stream timing out. For larger documents either (1) write a first version, then change sections with `str_replace`, or (2) write the first section with append=false and each further section with append=true (the cap does not apply to appends).\n\
\n\
Write deliverables to /mnt/user-data/outputs and scratch files to /mnt/user-data/workspace; /mnt/skills and /mnt/acp-workspace are read-only. Returns `OK` on success.",
        params: &[
            req(
                "path",
                Kind::String,
                "The **absolute** path of the file to write, e.g. `/mnt/user-data/outputs/report.md`.",
            ),
            req("content", Kind::String, "The text to write."),
            DESCRIPTION,
            opt(
                "append",
                Kind::Boolean,
                Default::Bool(false),
                "Whether to append the content to the end of the file instead of overwriting it. Default is false.",
            ),
        ],
    },
    ToolDef {
        name: "str_replace",
        description: "Replace a substring in a text file with another substring, in place. Use it for targeted edits instead of rewriting a whole file.\n\
\n\
Include enough surrounding text in old_str that it identifies the one place you mean: unless replace_all is true, only the first occurrence is replaced. Returns `OK` on success, or an error when old_str does not occur in the file. An empty old_str changes nothing.",
        params: &[
            req(
                "path",
                Kind::String,
                "The **absolute** path of the file to edit, e.g. `/mnt/user-data/workspace/app.py`.",
            ),
            req(
                "old_str",
                Kind::String,
                "The exact text to replace, including whitespace and indentation.",
            ),
            req("new_str", Kind::String, "The text to put in its place."),
            DESCRIPTION,
            opt(
                "replace_all",
                Kind::Boolean,
                Default::Bool(false),
                "Whether to replace every occurrence. If false, only the first occurrence is replaced. Default is false.",
            ),
        ],
    },
];

/// The names of every tool, in the order of [`specs`].
pub fn tool_names() -> Vec<&'static str> {
    TOOLS.iter().map(|t| t.name).collect()
}

pub(crate) fn find(name: &str) -> Option<&'static ToolDef> {
    TOOLS.iter().find(|t| t.name == name)
}

fn schema(def: &ToolDef) -> Value {
    let mut properties = Map::new();
    for p in def.params {
        let mut prop = Map::new();
        prop.insert("type".into(), json!(p.kind.schema_name()));
        prop.insert("description".into(), json!(p.doc));
        match p.default {
            Default::None => {}
            Default::Bool(b) => {
                prop.insert("default".into(), json!(b));
            }
            Default::Int(i) => {
                prop.insert("default".into(), json!(i));
            }
            Default::Str(s) => {
                prop.insert("default".into(), json!(s));
            }
        }
        properties.insert(p.name.into(), Value::Object(prop));
    }
    let required: Vec<&str> = def
        .params
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name)
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Every tool's name, description and input schema.
pub fn specs() -> Vec<ToolSpec> {
    TOOLS
        .iter()
        .map(|t| ToolSpec {
            name: t.name.into(),
            description: t.description.into(),
            input_schema: schema(t),
        })
        .collect()
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validated arguments of one call.
#[derive(Debug)]
pub(crate) struct Args {
    tool: &'static str,
    map: Map<String, Value>,
}

impl Args {
    /// Checks `args` against the tool's parameter table: an object, no unknown field,
    /// every field of its type, every required field present.
    pub fn validate(def: &'static ToolDef, args: Value) -> Result<Self, ToolError> {
        let map = match args {
            Value::Object(m) => m,
            // A call without arguments is an empty object to the validator, so a
            // missing required field is reported by name.
            Value::Null => Map::new(),
            other => {
                return Err(ToolError::NotAnObject {
                    tool: def.name,
                    got: type_of(&other),
                });
            }
        };
        for (key, value) in &map {
            let Some(p) = def.params.iter().find(|p| p.name == key) else {
                return Err(ToolError::UnknownField {
                    tool: def.name,
                    field: key.chars().take(64).collect(),
                    accepted: def
                        .params
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let ok = match (p.kind, value) {
                (_, Value::Null) => p.nullable,
                (Kind::String, Value::String(_)) | (Kind::Boolean, Value::Bool(_)) => true,
                (Kind::Integer, Value::Number(n)) => {
                    n.is_i64()
                        || n.is_u64()
                        || n.as_f64()
                            .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
                }
                _ => false,
            };
            if !ok {
                let expected = if p.nullable {
                    format!("{} or null", p.kind.article())
                } else {
                    p.kind.article().to_owned()
                };
                return Err(ToolError::InvalidType {
                    tool: def.name,
                    field: p.name,
                    expected,
                    got: type_of(value),
                });
            }
        }
        for p in def.params.iter().filter(|p| p.required) {
            if !map.contains_key(p.name) {
                return Err(ToolError::MissingField {
                    tool: def.name,
                    field: p.name,
                });
            }
        }
        Ok(Self {
            tool: def.name,
            map,
        })
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A required string (validated present).
    pub fn string(&self, name: &'static str) -> Result<&str, ToolError> {
        self.get(name)
            .and_then(Value::as_str)
            .ok_or(ToolError::MissingField {
                tool: self.tool,
                field: name,
            })
    }

    /// An optional string.
    pub fn opt_string(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// An optional boolean, `false` when absent.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).and_then(Value::as_bool).unwrap_or(false)
    }

    /// An optional integer; huge values saturate.
    pub fn int(&self, name: &str) -> Option<i64> {
        let n = self.get(name)?.as_number()?;
        if let Some(i) = n.as_i64() {
            return Some(i);
        }
        if n.as_u64().is_some() {
            return Some(i64::MAX);
        }
        // Integral floats were accepted by validation; `as` saturates out-of-range values.
        n.as_f64().map(|f| f as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_takes_an_optional_description() {
        for def in TOOLS {
            let d = def
                .params
                .iter()
                .find(|p| p.name == "description")
                .expect(def.name);
            assert!(!d.required);
        }
        assert_eq!(
            tool_names(),
            [
                "bash",
                "ls",
                "glob",
                "grep",
                "read_file",
                "write_file",
                "str_replace"
            ]
        );
    }

    #[test]
    fn integers_accept_integral_numbers_only() {
        let def = find("read_file").expect("must succeed");
        let a = Args::validate(
            def,
            json!({"path": "/x", "start_line": 3.0, "end_line": 18446744073709551615u64}),
        )
        .expect("must succeed");
        assert_eq!(a.int("start_line"), Some(3));
        assert_eq!(a.int("end_line"), Some(i64::MAX));
        let e =
            Args::validate(def, json!({"path": "/x", "start_line": 1.5})).expect_err("must fail");
        assert!(e.to_string().contains("start_line"), "{e}");
        let a =
            Args::validate(def, json!({"path": "/x", "start_line": null})).expect("must succeed");
        assert_eq!(a.int("start_line"), None);
    }
}
