"""The bedrock-agentcore SDK, unmodified, against memd: MemoryClient and
MemorySessionManager / MemorySession."""

from bedrock_agentcore.memory import MemoryClient
from bedrock_agentcore.memory.constants import ConversationalMessage, MessageRole
from bedrock_agentcore.memory.session import MemorySessionManager

from conftest import REGION, unique, wait_for


def test_memory_client_end_to_end(aws_env):
    client = MemoryClient(region_name=REGION)
    memory = client.create_memory_and_wait(
        name=unique("sdk"),
        strategies=[
            {"semanticMemoryStrategy": {"name": "facts", "namespaces": ["/users/{actorId}/facts"]}},
            {"userPreferenceMemoryStrategy": {"name": "prefs", "namespaces": ["/users/{actorId}/preferences"]}},
        ],
        event_expiry_days=30,
        poll_interval=1,
    )
    memory_id = memory["id"]
    assert memory["status"] == "ACTIVE"
    assert {s["name"] for s in client.get_memory_strategies(memory_id)} == {"facts", "prefs"}

    first = client.create_event(
        memory_id=memory_id, actor_id="dana", session_id="trip",
        messages=[("I live in Berlin. I prefer window seats.", "USER"), ("Got it.", "ASSISTANT")],
    )
    client.save_conversation(
        memory_id=memory_id, actor_id="dana", session_id="trip",
        messages=[("Find me a restaurant for tonight.", "USER"), ("How about Lucky Leek?", "ASSISTANT")],
    )
    events = client.list_events(memory_id=memory_id, actor_id="dana", session_id="trip")
    assert len(events) == 2
    turns = client.get_last_k_turns(memory_id=memory_id, actor_id="dana", session_id="trip", k=4)
    texts = [m["content"]["text"] for turn in turns for m in turn]
    assert "Find me a restaurant for tonight." in texts and "Got it." in texts

    forked = client.fork_conversation(
        memory_id=memory_id, actor_id="dana", session_id="trip", root_event_id=first["eventId"],
        branch_name="alt", new_messages=[("Actually, book a hotel instead.", "USER")],
    )
    assert forked["branch"]["name"] == "alt"
    branches = {b["name"] for b in client.list_branches(memory_id=memory_id, actor_id="dana", session_id="trip")}
    assert "alt" in branches
    alt = client.list_events(memory_id=memory_id, actor_id="dana", session_id="trip", branch_name="alt")
    assert [e["eventId"] for e in alt] == [forked["eventId"]]

    found = wait_for(lambda: client.retrieve_memories(
        memory_id=memory_id, namespace="/users/dana/facts", query="where does she live", top_k=5))
    assert any("Berlin" in r["content"]["text"] for r in found)
    prefs = wait_for(lambda: client.retrieve_memories(
        memory_id=memory_id, namespace_path="/users/dana/preferences", query="seats", top_k=5))
    assert any("window seats" in r["content"]["text"] for r in prefs)

    client.delete_memory_and_wait(memory_id=memory_id, poll_interval=1)
    assert memory_id not in {m.get("id", m.get("memoryId")) for m in client.list_memories()}


def test_session_manager_turns_and_long_term_search(aws_env, control):
    memory = control.create_memory(name=unique("sessions"), eventExpiryDuration=30, memoryStrategies=[
        {"semanticMemoryStrategy": {"name": "facts", "namespaces": ["support/{actorId}/facts"]}}])["memory"]
    manager = MemorySessionManager(memory_id=memory["id"], region_name=REGION)
    session = manager.create_memory_session(actor_id="erik", session_id="ticket-42")
    session.add_turns(messages=[
        ConversationalMessage("My router model is X200 and I work as an electrician.", MessageRole.USER),
        ConversationalMessage("Thanks, checking the X200 manual.", MessageRole.ASSISTANT),
    ])
    session.add_turns(messages=[ConversationalMessage("It keeps dropping Wi-Fi.", MessageRole.USER)])
    turns = session.get_last_k_turns(k=2)
    assert sum(len(t) for t in turns) == 3
    assert [s["sessionId"] for s in manager.list_actor_sessions(actor_id="erik")] == ["ticket-42"]

    records = wait_for(lambda: session.search_long_term_memories(
        query="what does erik do for work", namespace="support/erik/facts", top_k=3))
    assert any("electrician" in r["content"]["text"] for r in records)
    listed = manager.list_long_term_memory_records(namespace_path="support/erik")
    assert listed and all(r["namespaces"] == ["support/erik/facts"] for r in listed)
