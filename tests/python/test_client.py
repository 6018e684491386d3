"""The memd Python package (built from ./python) against the real memd binary."""

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pytest

import memd as md
from conftest import ADMIN_KEY, Memd, unique, wait_for


@pytest.fixture
def client(memd):
    with memd_client(memd) as c:
        yield c


def memd_client(server, key=ADMIN_KEY):
    return md.Client(server.grpc, api_key=key)


def facts_memory(client):
    strategy = md.control.MemoryStrategy(strategy_id="facts", type=md.control.STRATEGY_TYPE_SEMANTIC)
    return client.create_memory(unique("py"), strategies=[strategy]).memory_id


def test_the_five_line_script(memd, monkeypatch):
    monkeypatch.setenv("MEMD_ENDPOINT", memd.grpc)
    monkeypatch.setenv("MEMD_API_KEY", ADMIN_KEY)
    client = md.Client()
    memory_id = facts_memory(client)
    client.session(memory_id, "alice").add_turn("I moved to Lisbon last year.", name="Alice")
    hits = wait_for(lambda: client.retrieve_memory_records(memory_id, "where does alice live"))
    assert "Lisbon" in hits[0].memory_record.text and hits[0].score > 0


def test_sessions_turns_context_and_pagination(client):
    memory_id = facts_memory(client)
    session = client.session(memory_id, "bob")
    first = session.add_turn("I am allergic to peanuts.", name="Bob")
    assert session.session_id == first.session_id != ""
    session.add_turn("Noted, no peanuts.", "assistant")
    start = datetime.now(timezone.utc)
    for i in range(150):
        client.create_event(memory_id, "bob", session.session_id, [f"message {i}"],
                            event_timestamp=start + timedelta(milliseconds=i), extract=False)
    events = list(session.events())
    assert len(events) == 152, "pages are followed to the end"
    assert events[-1].payload[0].conversational.text == "message 149"
    assert session.ping().state == md.pb.SESSION_STATE_ACTIVE
    context = wait_for(lambda: [i for i in session.context("allergies", token_budget=500).items if "peanuts" in i.text])
    assert context
    hits = client.search_events(memory_id, "bob", "peanuts")
    assert hits and "peanuts" in hits[0].event.payload[0].conversational.text
    assert [s.session_id for s in client.list_sessions(memory_id, "bob")] == [session.session_id]
    client.create_event(memory_id, "bob", session.session_id, [{"json": {"tool": "x"}}, {"blob": b"\x00\x01"}])
    last = list(session.events(newest_first=True))[0]
    assert last.payload[0].json == '{"tool": "x"}' and last.payload[1].blob == b"\x00\x01"


def test_errors_carry_their_code(memd, client):
    memory_id = facts_memory(client)
    with pytest.raises(md.NotFound):
        client.get_session(memory_id, "nobody", "nothing")
    with pytest.raises(md.InvalidArgument) as err:
        client.create_event(memory_id, "bad actor!", "s", ["x"])
    assert "actor_id" in err.value.details
    client.create_event(memory_id, "carl", "s", ["once"], client_token="t1")
    with pytest.raises(md.AlreadyExists):
        client.create_event(memory_id, "carl", "s", ["different"], client_token="t1")
    key = client.create_api_key("reader", memories=[memory_id], actions=["read"], actors=["acme/*"])
    with memd_client(memd, key.secret) as reader:
        with pytest.raises(md.PermissionDenied):
            reader.create_event(memory_id, "acme/x", "s", ["nope"])
        with pytest.raises(md.PermissionDenied):
            list(reader.list_events(memory_id, "carl", "s"))
    with memd_client(memd, "memd_bogus_key") as stranger, pytest.raises(md.Unauthenticated):
        stranger.get_memory(memory_id)
    with pytest.raises(md.FailedPrecondition):
        client.session(memory_id, "dora").ping()


def test_a_throttled_call_says_how_long_to_wait():
    server = Memd(extra_env={"MEMD_KEY_REQUESTS_PER_SECOND": "2", "MEMD_KEY_REQUEST_BURST": "2"})
    try:
        admin = memd_client(server)
        memory_id = admin.create_memory(unique("quota")).memory_id
        key = admin.create_api_key("busy", memories=[memory_id], actions=["read", "write"])
        with memd_client(server, key.secret) as busy:
            with pytest.raises(md.ResourceExhausted) as err:
                for i in range(20):
                    busy.create_event(memory_id, "ann", "s", [f"turn {i}"])
            assert "key_requests_per_second" in err.value.details
            assert err.value.retry_after is not None and 0 < err.value.retry_after <= 1.0
        # Other failures carry no delay; the operator is not limited.
        with pytest.raises(md.NotFound) as missing:
            admin.get_session(memory_id, "nobody", "nothing")
        assert missing.value.retry_after is None
    finally:
        server.close()


def answers(client, memory_id):
    """Whether memd answers `client` (a cheap read)."""
    try:
        return client.get_memory(memory_id).memory_id == memory_id
    except md.Unavailable:
        return False


def test_watch_streams_resume_after_a_restart():
    server = Memd()
    try:
        client = memd_client(server)
        memory_id = client.create_memory(unique("watch")).memory_id
        changes = []
        stream = client.watch_sessions(memory_id, cursor="0")  # "0": all the log holds
        reader = threading.Thread(target=lambda: [changes.append(c) for c in stream], daemon=True)
        reader.start()
        client.create_event(memory_id, "eve", "s1", ["hello"])
        wait_for(lambda: len(changes) >= 1)
        server.restart()  # the iterator reconnects from its last cursor by itself
        client = memd_client(server)
        # A new channel shares gRPC's connection to the same address, which may still be
        # backing off from the attempts refused while memd was down: the first calls can fail
        # fast with UNAVAILABLE until it reconnects.
        wait_for(lambda: answers(client, memory_id))
        client.create_event(memory_id, "eve", "s2", ["again"])
        client.create_event(memory_id, "eve", "s3", ["and again"])
        wait_for(lambda: len(changes) >= 3, timeout=30)
        assert [c.session_id for c in changes] == ["s1", "s2", "s3"], "nothing missed or repeated"
        # One log behind both streams: a session change's cursor is a position for records too.
        records = client.watch_memory_records(memory_id, cursor=changes[-1].cursor)
        client.batch_create_memory_records(memory_id, [md.pb.MemoryRecordInput(namespace="/kb", text="A fact.")])
        change = next(records)
        assert change.kind == md.pb.RECORD_CHANGE_KIND_CREATED and change.memory_record.text == "A fact."
        with pytest.raises(md.InvalidArgument):
            next(client.watch_sessions(memory_id, cursor="not-a-cursor"))
    finally:
        server.close()


def test_async_client(memd):
    async def scenario():
        async with md.AsyncClient(memd.grpc, api_key=ADMIN_KEY) as client:
            memory = await client.create_memory(unique("aio"), strategies=[
                md.control.MemoryStrategy(strategy_id="facts", type=md.control.STRATEGY_TYPE_SEMANTIC)])
            watch = client.watch_sessions(memory.memory_id, cursor="0")
            first_change = asyncio.ensure_future(watch.__anext__())
            session = client.session(memory.memory_id, "frank")
            await session.add_turn("I work as a carpenter.", name="Frank")
            change = await asyncio.wait_for(first_change, 15)
            assert change.session_id == session.session_id and change.to == md.pb.SESSION_STATE_ACTIVE
            assert (await session.ping()).state == md.pb.SESSION_STATE_ACTIVE
            events = [e async for e in client.list_events(memory.memory_id, "frank", session.session_id)]
            assert len(events) == 1
            for _ in range(100):
                hits = await client.retrieve_memory_records(memory.memory_id, "what is frank's job")
                if hits:
                    break
                await asyncio.sleep(0.2)
            assert "carpenter" in hits[0].memory_record.text
            with pytest.raises(md.NotFound):
                await client.get_memory("missing-0123456789")

    asyncio.run(scenario())
