//! The MCP server: advertises `paddock_tools::specs()` as MCP tools and dispatches
//! `tools/call` to `paddock_tools::Tools::call` over the session's sandbox.
//!
//! Invariant: an operation failure (bad path, escape attempt, bad regex, timeout,
//! read-only mount, unavailable sandbox) is a `CallToolResult` with `isError: true`
//! carrying the DeerFlow-format `Error: ...` text; only an unknown tool or malformed
//! arguments become JSON-RPC errors (`-32602`, naming the tool and field).

use std::sync::Arc;

use paddock_tools::{ToolError, Tools, ToolsConfig};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::source::SandboxSource;

/// The MCP handler for one (user, thread).
pub struct PaddockMcp {
    source: Arc<SandboxSource>,
    config: ToolsConfig,
    tools: Mutex<Option<Arc<Tools>>>,
}

impl std::fmt::Debug for PaddockMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaddockMcp")
            .field("source", &self.source)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The tools as MCP advertises them (name, description, input schema).
pub fn mcp_tools() -> Vec<Tool> {
    paddock_tools::specs()
        .into_iter()
        .map(|s| {
            let schema = match s.input_schema {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            Tool::new(s.name, s.description, Arc::new(schema))
        })
        .collect()
}

impl PaddockMcp {
    /// A server over the sandbox from `source` with the tools' limits in `config`.
    pub fn new(source: SandboxSource, config: ToolsConfig) -> Self {
        Self {
            source: Arc::new(source),
            config,
            tools: Mutex::new(None),
        }
    }

    async fn tools(&self) -> Result<Arc<Tools>, String> {
        let mut slot = self.tools.lock().await;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let sandbox = self.source.sandbox().await.map_err(|e| {
            tracing::warn!(error = %e, "could not obtain the sandbox");
            format!("Error: sandbox unavailable: {e}")
        })?;
        let tools = Arc::new(Tools::new(sandbox, self.config.clone()));
        *slot = Some(tools.clone());
        Ok(tools)
    }

    /// Runs one call; `Err` is a protocol error.
    pub async fn dispatch(
        &self,
        name: &str,
        args: Option<serde_json::Map<String, Value>>,
    ) -> Result<CallToolResult, ErrorData> {
        if !paddock_tools::spec::tool_names().contains(&name) {
            let known = paddock_tools::spec::tool_names().join(", ");
            let shown: String = name.chars().take(64).collect();
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{shown}`; the tools are: {known}"),
                Some(json!({ "tool": shown })),
            ));
        }
        let tools = match self.tools().await {
            Ok(t) => t,
            Err(text) => return Ok(CallToolResult::error(vec![ContentBlock::text(text)])),
        };
        let args = Value::Object(args.unwrap_or_default());
        match tools.call(name, args).await {
            Ok(out) if out.is_error => {
                Ok(CallToolResult::error(vec![ContentBlock::text(out.text)]))
            }
            Ok(out) => Ok(CallToolResult::success(vec![ContentBlock::text(out.text)])),
            Err(e) => Err(tool_error(name, &e)),
        }
    }
}

fn tool_error(name: &str, e: &ToolError) -> ErrorData {
    let mut data = json!({ "tool": name });
    if let (Some(field), Value::Object(m)) = (e.field(), &mut data) {
        m.insert("field".into(), json!(field));
    }
    ErrorData::invalid_params(e.to_string(), Some(data))
}

impl ServerHandler for PaddockMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("paddock", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Paddock sandbox tools for one conversation thread. Paths are virtual: \
                 /mnt/user-data/{workspace,uploads,outputs} are writable, /mnt/skills is read-only.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(mcp_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        tracing::debug!(tool = %request.name, "tools/call");
        self.dispatch(&request.name, request.arguments)
            .await
            .map(CallToolResponse::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_tools_mirror_the_tool_specs() {
        let tools = mcp_tools();
        let specs = paddock_tools::specs();
        assert_eq!(tools.len(), 7);
        for (t, s) in tools.iter().zip(&specs) {
            assert_eq!(t.name, s.name.as_str());
            assert_eq!(t.description.as_deref(), Some(s.description.as_str()));
            assert_eq!(Value::Object((*t.input_schema).clone()), s.input_schema);
        }
    }

    #[test]
    fn tool_errors_name_tool_and_field() {
        let e = ToolError::MissingField {
            tool: "read_file",
            field: "path",
        };
        let d = tool_error("read_file", &e);
        assert_eq!(d.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert!(
            d.message.contains("missing required field `path`"),
            "{}",
            d.message
        );
        assert_eq!(d.data, Some(json!({"tool": "read_file", "field": "path"})));
    }
}
