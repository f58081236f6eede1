"""The official MCP Python SDK drives `paddock mcp` over stdio: tool listing with
schemas, every tool called, operation failures as isError results, malformed calls as
JSON-RPC errors, and the session surviving all of it."""

import asyncio
import os
import tempfile

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

TOOLS = {"bash", "ls", "glob", "grep", "read_file", "write_file", "str_replace"}
BASH_TIMEOUT_SECS = 2


def run(test):
    """Starts `paddock mcp` on a fresh data dir and runs `test(session, data_dir)`."""
    binary = os.environ.get("PADDOCK_BIN")
    assert binary, "PADDOCK_BIN must name the paddock binary (run via run.sh)"

    async def main():
        with tempfile.TemporaryDirectory() as data_dir:
            params = StdioServerParameters(
                command=binary,
                args=[
                    "mcp",
                    "--data-dir", data_dir,
                    "--user", "u",
                    "--thread", "t",
                    "--bash-timeout-secs", str(BASH_TIMEOUT_SECS),
                ],
            )
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    await test(session, data_dir)

    asyncio.run(main())


def text_of(result):
    assert result.content, result
    return result.content[0].text


async def call(session, name, **args):
    return await session.call_tool(name, {"description": "compat test", **args})


def test_lists_all_seven_tools_with_schemas():
    async def t(session, _):
        listed = await session.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        assert set(tools) == TOOLS
        for name, tool in tools.items():
            schema = tool.input_schema
            assert schema["type"] == "object", name
            assert schema["additionalProperties"] is False, name
            assert "description" in schema["properties"], name
            assert tool.description and len(tool.description) > 20, name
        assert set(tools["bash"].input_schema["required"]) >= {"command"}
        assert set(tools["write_file"].input_schema["required"]) >= {"path", "content"}
        assert set(tools["str_replace"].input_schema["required"]) >= {"path", "old_str", "new_str"}
        assert tools["grep"].input_schema["properties"]["pattern"]["type"] == "string"

    run(t)


def test_every_tool_works():
    async def t(session, data_dir):
        path = "/mnt/user-data/workspace/notes.txt"
        r = await call(session, "write_file", path=path, content="alpha\nbeta\n")
        assert not r.is_error, text_of(r)
        r = await call(session, "read_file", path=path)
        assert not r.is_error and text_of(r) == "alpha\nbeta\n"
        r = await call(session, "str_replace", path=path, old_str="beta", new_str="gamma")
        assert not r.is_error, text_of(r)
        r = await call(session, "ls", path="/mnt/user-data/workspace")
        assert path in text_of(r)
        r = await call(session, "glob", pattern="**/*.txt", path="/mnt/user-data")
        assert path in text_of(r)
        r = await call(session, "grep", pattern="gam+a", path="/mnt/user-data")
        assert "notes.txt" in text_of(r)
        r = await call(session, "bash", command="cat " + path + " && pwd")
        assert not r.is_error
        assert "gamma" in text_of(r) and "/mnt/user-data/workspace" in text_of(r)
        host = os.path.join(data_dir, "users/u/threads/t/user-data/workspace/notes.txt")
        with open(host) as f:
            assert f.read() == "alpha\ngamma\n"

    run(t)


def test_failures_are_tool_errors_and_the_session_survives():
    async def t(session, data_dir):
        failing = [
            ("read_file", {"path": "/etc/passwd"}),
            ("ls", {"path": "/mnt/user-data/../../etc"}),
            ("read_file", {"path": "/mnt/user-data/../../../etc/shadow"}),
            ("grep", {"pattern": "(unclosed", "path": "/mnt/user-data"}),
            ("write_file", {"path": "/mnt/skills/evil.md", "content": "x"}),
            ("str_replace", {"path": "/mnt/user-data/workspace/none", "old_str": "a", "new_str": "b"}),
        ]
        for name, args in failing:
            r = await call(session, name, **args)
            assert r.is_error, (name, args, text_of(r))
            assert text_of(r).startswith("Error:"), (name, text_of(r))
            assert data_dir not in text_of(r), "host path leaked: " + text_of(r)
        r = await call(session, "bash", command="sleep 30")
        out = text_of(r)
        assert "timed out" in out and "Exit Code: 124" in out, out
        # Still serving.
        r = await call(session, "bash", command="echo alive")
        assert text_of(r).strip() == "alive"

    run(t)


def test_malformed_calls_are_protocol_errors():
    async def t(session, _):
        with pytest.raises(MCPError) as e:
            await session.call_tool("no_such_tool", {})
        assert e.value.code == -32602
        assert "unknown tool" in e.value.message
        with pytest.raises(MCPError) as e:
            await session.call_tool("read_file", {"description": "x"})
        assert e.value.code == -32602
        assert "path" in e.value.message
        with pytest.raises(MCPError) as e:
            await session.call_tool("ls", {"description": "x", "path": "/mnt/user-data", "extra": 1})
        assert e.value.code == -32602
        r = await call(session, "ls", path="/mnt/user-data")
        assert not r.is_error

    run(t)
