"""memd's MCP server through the official MCP Python SDK (pinned in requirements.txt), over
both transports: Streamable HTTP at memd's /mcp, and stdio through `memctl mcp`, as a
desktop host would launch it. Every tool is called; a call the key's policy refuses comes
back as an MCP error, never as data."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, TypeVar
from urllib.parse import quote

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

import memd as md
from conftest import ADMIN_KEY, Memd, _binary, unique

TOOLS = {"remember", "recall", "search_history", "get_context", "list_sessions", "forget"}
T = TypeVar("T")


@pytest.fixture(scope="module")
def memory_id(memd: Memd) -> str:
    with md.Client(memd.grpc, api_key=ADMIN_KEY) as client:
        strategies = [
            md.control.MemoryStrategy(strategy_id="facts", type=md.control.STRATEGY_TYPE_SEMANTIC),
        ]
        return client.create_memory(unique("mcp"), strategies=strategies).memory_id


def key_for(memd: Memd, memory_id: str, actor: str) -> str:
    return memd.create_key(memories=memory_id, actors=actor, actions=("read", "write")).secret


@asynccontextmanager
async def over_http(
    memd: Memd, key: str | None, mode: str = "auto", **scope: str
) -> AsyncIterator[Client]:
    query = "&".join(f"{name}={quote(value)}" for name, value in scope.items())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = create_mcp_http_client(headers=headers)
    async with http, Client(
        streamable_http_client(f"{memd.http}/mcp?{query}", http_client=http), mode=mode
    ) as client:
        yield client


@asynccontextmanager
async def over_stdio(memd: Memd, key: str, *flags: str, mode: str = "auto") -> AsyncIterator[Client]:
    command = StdioServerParameters(
        command=_binary("MEMCTL_BIN", "memctl"),
        args=["--endpoint", memd.grpc, "--api-key", key, "mcp", *flags],
    )
    async with Client(command, mode=mode) as client:
        yield client


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await asyncio.sleep(0.3)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A successful call's structured result (and its text, under "_text")."""
    result = await client.call_tool(tool, arguments)
    text = "\n".join(block.text for block in result.content if block.type == "text")
    assert not result.is_error, f"{tool} failed: {text}"
    structured = dict(result.structured_content or {})
    structured["_text"] = text
    return structured


async def search(client: Client, query: str, expected: int) -> dict[str, Any]:
    """search_history's result once `expected` events match: events are indexed for search
    in the background, a moment after they are stored."""

    async def found() -> dict[str, Any] | None:
        hits = await call(client, "search_history", query=query, mode="keyword")
        return hits if len(hits["events"]) >= expected else None

    hits = await eventually(found)
    assert len(hits["events"]) == expected
    return hits


async def error_of(client: Client, tool: str, **arguments: Any) -> str:
    """The error text of a call that must fail, with no data in it."""
    result = await client.call_tool(tool, arguments)
    text = "\n".join(block.text for block in result.content if block.type == "text")
    assert result.is_error, f"{tool} should have failed, returned {text}"
    assert set((result.structured_content or {}).keys()) <= {"error"}
    return text


def test_every_tool_and_resource_over_streamable_http(memd: Memd, memory_id: str) -> None:
    key = key_for(memd, memory_id, "alice")

    async def scenario() -> None:
        async with over_http(memd, key, memory=memory_id, actor="alice") as client:
            # The SDK's default discovers the stateless 2026-07-28 protocol.
            assert client.protocol_version == "2026-07-28"
            tools = (await client.list_tools()).tools
            assert {t.name for t in tools} == TOOLS
            for tool in tools:
                assert tool.description and len(tool.description) > 40
                properties = tool.input_schema["properties"]
                # Where a host works comes from its configuration, never from the model.
                assert not {"memory_id", "actor_id", "memory", "actor"} & set(properties)
                for name, schema in properties.items():
                    assert schema.get("description"), f"{tool.name}.{name} has no description"

            stored = await call(client, "remember", text="I am allergic to peanuts.", speaker="Alice")
            assert stored["event_id"] and stored["session_id"].startswith("mcp-")
            await call(client, "remember", text="Noted: no peanuts in any recipe.", role="assistant")

            hits = await search(client, "peanuts", 2)
            assert "peanuts" in hits["_text"]

            async def recalled() -> dict[str, Any] | None:
                found = await call(client, "recall", query="What is Alice allergic to?")
                return found if any("peanut" in r["text"] for r in found["records"]) else None

            recall = await eventually(recalled)
            record = next(r for r in recall["records"] if "peanut" in r["text"])
            assert record["actor_id"] == "alice" and stored["event_id"] in record["source_event_ids"]
            assert record["memory_record_id"] in recall["_text"]

            context = await call(client, "get_context", query="planning dinner", token_budget=800)
            assert context["session_id"] == stored["session_id"]
            assert "peanuts" in context["_text"] and context["tokens_used"] > 0

            sessions = await call(client, "list_sessions")
            assert [(s["session_id"], s["state"]) for s in sessions["sessions"]] == [
                (stored["session_id"], "ACTIVE")
            ]

            listed = (await client.list_resources()).resources
            uris = {str(r.uri) for r in listed}
            assert f"memd://{memory_id}/namespaces" in uris
            namespaces = json.loads(
                (await client.read_resource(f"memd://{memory_id}/namespaces")).contents[0].text
            )
            namespace = next(n for n in namespaces["namespaces"] if n["records"] > 0)["namespace"]
            records_uri = f"memd://{memory_id}/records?namespace={quote(namespace, safe='')}"
            assert records_uri in uris
            records = json.loads((await client.read_resource(records_uri)).contents[0].text)
            assert record["memory_record_id"] in {r["memory_record_id"] for r in records["records"]}
            one = json.loads(
                (await client.read_resource(f"memd://{memory_id}/records/{record['memory_record_id']}"))
                .contents[0]
                .text
            )
            assert one["text"] == record["text"]
            templates = (await client.list_resource_templates()).resource_templates
            assert len(templates) == 2

            forgot = await call(client, "forget", memory_record_id=record["memory_record_id"])
            assert forgot["deleted"] == record["memory_record_id"]
            after = await call(client, "recall", query="What is Alice allergic to?")
            assert record["memory_record_id"] not in {r["memory_record_id"] for r in after["records"]}
            with pytest.raises(MCPError):
                await client.read_resource(f"memd://{memory_id}/records/{record['memory_record_id']}")

    asyncio.run(scenario())


def test_every_tool_over_stdio_with_memctl_mcp(memd: Memd, memory_id: str) -> None:
    key = key_for(memd, memory_id, "bob")

    async def scenario() -> None:
        async with over_stdio(memd, key, "--memory", memory_id, "--actor", "bob", "--session", "desk-1") as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            stored = await call(client, "remember", text="My favourite city is Porto.", speaker="Bob")
            assert stored["session_id"] == "desk-1"
            # The host pinned the session: the model cannot write elsewhere.
            assert "PERMISSION_DENIED" in await error_of(
                client, "remember", text="hello", session_id="other-session"
            )
            hits = await search(client, "Porto", 1)
            assert [e["event_id"] for e in hits["events"]] == [stored["event_id"]]
            context = await call(client, "get_context")
            assert "Porto" in context["_text"]
            sessions = await call(client, "list_sessions", limit=5)
            assert [s["session_id"] for s in sessions["sessions"]] == ["desk-1"]

            async def recalled() -> dict[str, Any] | None:
                found = await call(client, "recall", query="favourite city", top_k=3)
                return found if found["records"] else None

            record = (await eventually(recalled))["records"][0]
            assert "Porto" in record["text"]
            await call(client, "forget", memory_record_id=record["memory_record_id"])
            assert "NOT_FOUND" in await error_of(client, "forget", memory_record_id=record["memory_record_id"])
            resources = (await client.list_resources()).resources
            assert f"memd://{memory_id}/namespaces" in {str(r.uri) for r in resources}

    asyncio.run(scenario())


def test_policy_denied_calls_are_mcp_errors_on_both_transports(memd: Memd, memory_id: str) -> None:
    alice_key = key_for(memd, memory_id, "alice")

    async def denied(client: Client) -> None:
        for tool, arguments in [
            ("remember", {"text": "I live in Oslo."}),
            ("recall", {"query": "Oslo"}),
            ("search_history", {"query": "Oslo"}),
            ("get_context", {"query": "Oslo"}),
            ("list_sessions", {}),
        ]:
            assert "PERMISSION_DENIED" in await error_of(client, tool, **arguments), tool
        with pytest.raises(MCPError) as raised:
            await client.read_resource(f"memd://{memory_id}/namespaces")
        assert "PERMISSION_DENIED" in raised.value.message

    async def scenario() -> None:
        # A host configured for carol with a key that only covers alice.
        async with over_http(memd, alice_key, memory=memory_id, actor="carol") as client:
            await denied(client)
        async with over_stdio(memd, alice_key, "--memory", memory_id, "--actor", "carol") as client:
            await denied(client)
        # Another memory entirely: nothing of it is readable, as resources either.
        with md.Client(memd.grpc, api_key=ADMIN_KEY) as admin:
            other = admin.create_memory(unique("other")).memory_id
        async with over_http(memd, alice_key, memory=other, actor="alice") as client:
            assert "PERMISSION_DENIED" in await error_of(client, "search_history", query="x")
            with pytest.raises(MCPError) as raised:
                await client.read_resource(f"memd://{other}/namespaces")
            assert "PERMISSION_DENIED" in raised.value.message
        # Unknown arguments, such as an attempt to pick another actor, are refused by name.
        async with over_http(memd, alice_key, memory=memory_id, actor="alice") as client:
            text = await error_of(client, "remember", text="hi", actor_id="carol")
            assert "INVALID_ARGUMENT" in text and "actor_id" in text
            assert "top_k" in await error_of(client, "recall", query="x", top_k=500)

    asyncio.run(scenario())


def test_scope_from_the_key_policy_and_refusals_before_mcp(memd: Memd, memory_id: str) -> None:
    dana_key = key_for(memd, memory_id, "dana")

    async def scenario() -> None:
        # A key naming one memory and one actor needs no scope in the URL.
        async with over_http(memd, dana_key) as client:
            stored = await call(client, "remember", text="I work night shifts.")
            hits = await search(client, "night shifts", 1)
            assert hits["events"][0]["event_id"] == stored["event_id"]
        # A wide key must say where; a wrong key is refused before any MCP exchange.
        with pytest.raises(Exception) as no_scope:
            async with over_http(memd, ADMIN_KEY) as client:
                await client.list_tools()
        assert "400" in repr(no_scope.value) or "no memory for MCP" in repr(no_scope.value)
        with pytest.raises(Exception) as bad_key:
            async with over_http(memd, "memd_nope_nope", memory=memory_id, actor="dana") as client:
                await client.list_tools()
        assert "401" in repr(bad_key.value) or "unknown or revoked" in repr(bad_key.value)

    asyncio.run(scenario())


def test_handshake_era_hosts_on_both_transports(memd: Memd, memory_id: str) -> None:
    """Hosts that still open with the initialize handshake (protocol 2025-11-25 and before)."""
    key = key_for(memd, memory_id, "erin")

    async def scenario() -> None:
        async with over_http(memd, key, mode="legacy", memory=memory_id, actor="erin") as client:
            assert client.protocol_version != "2026-07-28"
            stored = await call(client, "remember", text="I take the 7:40 train.")
            assert (await search(client, "train", 1))["events"][0]["event_id"] == stored["event_id"]
        async with over_stdio(memd, key, "--memory", memory_id, "--actor", "erin", mode="legacy") as client:
            assert client.protocol_version != "2026-07-28"
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            assert "7:40" in (await call(client, "get_context", session_id=stored["session_id"]))["_text"]

    asyncio.run(scenario())
