"""boto3 against memd: every AgentCore Memory operation memd implements, its paginators and
waiters, and the modelled exceptions."""

from datetime import datetime, timedelta, timezone

import boto3
import botocore.exceptions
import pytest

from conftest import unique, wait_for

NOW = datetime.now(timezone.utc)


def turn(text, role="USER"):
    return {"conversational": {"content": {"text": text}, "role": role}}


@pytest.fixture
def memory(control):
    memory = control.create_memory(
        name=unique("boto"),
        eventExpiryDuration=30,
        memoryStrategies=[
            {"semanticMemoryStrategy": {"name": "facts", "namespaces": ["/users/{actorId}/facts"]}},
            {"userPreferenceMemoryStrategy": {"name": "prefs", "namespaces": ["/users/{actorId}/preferences"]}},
        ],
    )["memory"]
    yield memory
    try:
        control.delete_memory(memoryId=memory["id"])
    except control.exceptions.ResourceNotFoundException:
        pass


def test_control_plane_lifecycle(control):
    name = unique("lifecycle")
    created = control.create_memory(
        name=name,
        description="a memory for the lifecycle test",
        eventExpiryDuration=45,
        memoryStrategies=[
            {"semanticMemoryStrategy": {"name": "facts", "namespaces": ["support/{actorId}/facts"]}},
            {"summaryMemoryStrategy": {"name": "summaries"}},
            {"episodicMemoryStrategy": {"name": "episodes"}},
        ],
    )["memory"]
    memory_id = created["id"]
    assert created["status"] == "ACTIVE"
    assert created["arn"] == f"arn:aws:bedrock-agentcore:eu-west-1:000000000000:memory/{memory_id}"
    assert {s["type"] for s in created["strategies"]} == {"SEMANTIC", "SUMMARIZATION", "EPISODIC"}
    # Ids follow the model's patterns, so client-side validation never rejects them.
    assert memory_id.startswith(name + "-") and len(memory_id) == len(name) + 11
    for strategy in created["strategies"]:
        assert strategy["status"] == "ACTIVE"
        assert strategy["strategyId"].startswith(strategy["name"] + "-")

    control.get_waiter("memory_created").wait(memoryId=memory_id, WaiterConfig={"Delay": 1})
    fetched = control.get_memory(memoryId=created["arn"])["memory"]
    assert fetched["id"] == memory_id
    assert fetched["eventExpiryDuration"] == 45
    assert fetched["description"] == "a memory for the lifecycle test"
    facts = next(s for s in fetched["strategies"] if s["name"] == "facts")
    assert facts["namespaces"] == ["support/{actorId}/facts"]

    ids = [m["id"] for page in control.get_paginator("list_memories").paginate(PaginationConfig={"PageSize": 1}) for m in page["memories"]]
    assert memory_id in ids

    summaries = next(s for s in fetched["strategies"] if s["name"] == "summaries")
    updated = control.update_memory(
        memoryId=memory_id,
        description="changed",
        eventExpiryDuration=60,
        memoryStrategies={
            "addMemoryStrategies": [{"userPreferenceMemoryStrategy": {"name": "prefs"}}],
            "modifyMemoryStrategies": [{"memoryStrategyId": facts["strategyId"], "description": "facts about users"}],
            "deleteMemoryStrategies": [{"memoryStrategyId": summaries["strategyId"]}],
        },
    )["memory"]
    assert updated["description"] == "changed"
    assert updated["eventExpiryDuration"] == 60
    names = {s["name"]: s for s in updated["strategies"]}
    assert set(names) == {"facts", "episodes", "prefs"}
    assert names["facts"]["description"] == "facts about users"
    assert names["facts"]["strategyId"] == facts["strategyId"], "modify keeps the id"

    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.update_memory(
            memoryId=memory_id,
            memoryStrategies={"deleteMemoryStrategies": [{"memoryStrategyId": "nope-0123456789"}]},
        )

    deleted = control.delete_memory(memoryId=memory_id)
    assert (deleted["memoryId"], deleted["status"]) == (memory_id, "DELETING")
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.get_memory(memoryId=memory_id)


def test_create_memory_is_idempotent_with_its_client_token(control):
    name = unique("idem")
    first = control.create_memory(name=name, eventExpiryDuration=30, clientToken="token-" + name)["memory"]
    again = control.create_memory(name=name, eventExpiryDuration=30, clientToken="token-" + name)["memory"]
    assert again["id"] == first["id"]
    with pytest.raises(control.exceptions.ConflictException):
        control.create_memory(name=name, eventExpiryDuration=31, clientToken="token-" + name)


def test_fields_memd_cannot_honour_are_validation_errors(control, memory):
    with pytest.raises(control.exceptions.ValidationException) as err:
        control.create_memory(
            name=unique("kms"),
            eventExpiryDuration=30,
            encryptionKeyArn="arn:aws:kms:eu-west-1:123456789012:key/abc",
        )
    assert "encryptionKeyArn" in str(err.value)
    with pytest.raises(control.exceptions.ValidationException) as err:
        control.create_memory(
            name=unique("schema"),
            eventExpiryDuration=30,
            memoryStrategies=[{"semanticMemoryStrategy": {"name": "s", "memoryRecordSchema": {"metadataSchema": [{"key": "k"}]}}}],
        )
    assert "memoryRecordSchema" in str(err.value)
    data = boto3.client("bedrock-agentcore")
    with pytest.raises(data.exceptions.ValidationException) as err:
        data.create_event(
            memoryId=memory["id"], actorId="a", sessionId="s", eventTimestamp=NOW,
            payload=[turn("hi")], extractionConfig={"namespaceVariables": {"team": "x"}},
        )
    assert "extractionConfig" in str(err.value)


def test_events_round_trip_with_every_payload_kind(data, memory):
    memory_id = memory["id"]
    event = data.create_event(
        memoryId=memory_id,
        actorId="acme/user-1",
        sessionId="s1",
        eventTimestamp=NOW,
        payload=[
            turn("I live in Lisbon."),
            turn("Noted!", "ASSISTANT"),
            {"blob": {"checkpoint": [1, 2, {"deep": None}]}},
            {"json": {"content": {"tool": "search", "hits": 3}}},
        ],
        metadata={"topic": {"stringValue": "home"}},
    )["event"]
    assert event["actorId"] == "acme/user-1"
    assert "#" in event["eventId"]
    got = data.get_event(memoryId=memory_id, actorId="acme/user-1", sessionId="s1", eventId=event["eventId"])["event"]
    assert got["payload"] == event["payload"]
    assert got["payload"][2]["blob"] == {"checkpoint": [1, 2, {"deep": None}]}
    assert got["payload"][3]["json"]["content"] == {"tool": "search", "hits": 3}
    assert got["metadata"] == {"topic": {"stringValue": "home"}}
    assert abs(got["eventTimestamp"] - NOW) < timedelta(milliseconds=1)

    deleted = data.delete_event(memoryId=memory_id, actorId="acme/user-1", sessionId="s1", eventId=event["eventId"])
    assert deleted["eventId"] == event["eventId"]
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_event(memoryId=memory_id, actorId="acme/user-1", sessionId="s1", eventId=event["eventId"])


def test_list_events_pages_newest_first_and_filters(data, memory):
    memory_id = memory["id"]
    ids = []
    for i in range(5):
        ids.append(
            data.create_event(
                memoryId=memory_id, actorId="u1", sessionId="s1",
                eventTimestamp=NOW + timedelta(seconds=i), payload=[turn(f"message {i}")],
                metadata={"parity": {"stringValue": "even" if i % 2 == 0 else "odd"}},
                extractionMode="SKIP",
            )["event"]["eventId"]
        )
    pages = list(data.get_paginator("list_events").paginate(
        memoryId=memory_id, actorId="u1", sessionId="s1", PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    listed = [e["eventId"] for p in pages for e in p["events"]]
    assert listed == ids[::-1], "most recent first, every event once"

    odd = data.list_events(
        memoryId=memory_id, actorId="u1", sessionId="s1",
        filter={"eventMetadata": [{"left": {"metadataKey": "parity"}, "operator": "EQUALS_TO",
                                    "right": {"metadataValue": {"stringValue": "odd"}}}]},
    )["events"]
    assert [e["eventId"] for e in odd] == [ids[3], ids[1]]
    bare = data.list_events(memoryId=memory_id, actorId="u1", sessionId="s1", includePayloads=False)["events"]
    assert all(not e["payload"] for e in bare)


def test_branches_fork_from_a_root_event(data, memory):
    memory_id = memory["id"]
    root = data.create_event(memoryId=memory_id, actorId="u2", sessionId="s", eventTimestamp=NOW,
                             payload=[turn("Plan a trip")])["event"]
    data.create_event(memoryId=memory_id, actorId="u2", sessionId="s", eventTimestamp=NOW + timedelta(seconds=1),
                      payload=[turn("To Rome", "ASSISTANT")])
    fork = data.create_event(
        memoryId=memory_id, actorId="u2", sessionId="s", eventTimestamp=NOW + timedelta(seconds=2),
        payload=[turn("To Oslo instead", "ASSISTANT")],
        branch={"name": "alt", "rootEventId": root["eventId"]},
    )["event"]
    assert fork["branch"] == {"name": "alt", "rootEventId": root["eventId"]}
    alt_only = data.list_events(memoryId=memory_id, actorId="u2", sessionId="s",
                                filter={"branch": {"name": "alt"}})["events"]
    assert [e["eventId"] for e in alt_only] == [fork["eventId"]]
    with_parent = data.list_events(memoryId=memory_id, actorId="u2", sessionId="s",
                                   filter={"branch": {"name": "alt", "includeParentBranches": True}})["events"]
    assert {e["eventId"] for e in with_parent} == {fork["eventId"], root["eventId"]}
    main = data.list_events(memoryId=memory_id, actorId="u2", sessionId="s",
                            filter={"branch": {"name": "main"}})["events"]
    assert fork["eventId"] not in {e["eventId"] for e in main} and len(main) == 2


def test_client_token_makes_create_event_idempotent(data, memory):
    args = dict(memoryId=memory["id"], actorId="u3", sessionId="s", eventTimestamp=NOW, payload=[turn("once")])
    first = data.create_event(clientToken="tok-1", **args)["event"]
    again = data.create_event(clientToken="tok-1", **args)["event"]
    assert again["eventId"] == first["eventId"]
    with pytest.raises(data.exceptions.ConflictException):
        data.create_event(clientToken="tok-1", **{**args, "payload": [turn("different")]})


def test_actors_and_sessions_paginate(data, memory):
    memory_id = memory["id"]
    for actor in ("p1", "p2", "p3"):
        for session in ("a", "b"):
            data.create_event(memoryId=memory_id, actorId=actor, sessionId=session, eventTimestamp=NOW,
                              payload=[turn("hello")], extractionMode="SKIP")
    actors = [a["actorId"] for p in data.get_paginator("list_actors").paginate(
        memoryId=memory_id, PaginationConfig={"PageSize": 2}) for a in p["actorSummaries"]]
    assert {"p1", "p2", "p3"} <= set(actors)
    sessions = [s for p in data.get_paginator("list_sessions").paginate(
        memoryId=memory_id, actorId="p2", PaginationConfig={"PageSize": 1}) for s in p["sessionSummaries"]]
    assert sorted(s["sessionId"] for s in sessions) == ["a", "b"]
    assert all(s["actorId"] == "p2" and s["createdAt"] for s in sessions)


def test_extraction_makes_records_that_retrieve_finds(data, memory):
    memory_id = memory["id"]
    data.create_event(memoryId=memory_id, actorId="maria", sessionId="s1", eventTimestamp=NOW,
                      payload=[turn("I work as a nurse in Porto."), turn("I prefer tea over coffee.")])
    found = wait_for(lambda: data.retrieve_memory_records(
        memoryId=memory_id, namespace="/users/maria/facts",
        searchCriteria={"searchQuery": "what is her job", "topK": 5})["memoryRecordSummaries"])
    assert any("nurse" in r["content"]["text"] for r in found)
    record = found[0]
    assert record["memoryRecordId"].startswith("mem-") and 40 <= len(record["memoryRecordId"]) <= 50
    assert record["namespaces"] == ["/users/maria/facts"]
    assert record["score"] > 0
    prefs = wait_for(lambda: data.retrieve_memory_records(
        memoryId=memory_id, namespacePath="/users/maria",
        searchCriteria={"searchQuery": "tea", "memoryStrategyId": next(
            s["strategyId"] for s in memory["strategies"] if s["name"] == "prefs")})["memoryRecordSummaries"])
    assert all(r["namespaces"] == ["/users/maria/preferences"] for r in prefs)
    listed = [r for p in data.get_paginator("list_memory_records").paginate(
        memoryId=memory_id, namespacePath="/users/maria/") for r in p["memoryRecordSummaries"]]
    assert {r["namespaces"][0] for r in listed} == {"/users/maria/facts", "/users/maria/preferences"}
    got = data.get_memory_record(memoryId=memory_id, memoryRecordId=record["memoryRecordId"])["memoryRecord"]
    assert got["content"] == record["content"]
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_memory_record(memoryId=memory_id, memoryRecordId=record["memoryRecordId"], namespace="/elsewhere")
    data.delete_memory_record(memoryId=memory_id, memoryRecordId=record["memoryRecordId"])
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_memory_record(memoryId=memory_id, memoryRecordId=record["memoryRecordId"])


def test_batch_record_writes(data, memory):
    memory_id = memory["id"]
    created = data.batch_create_memory_records(
        memoryId=memory_id,
        records=[
            {"requestIdentifier": "r1", "namespaces": ["/kb/products"], "content": {"text": "The X100 router supports WPA3."},
             "timestamp": NOW, "metadata": {"source": {"stringValue": "manual"}}},
            {"requestIdentifier": "r2", "namespaces": ["/kb/products"], "content": {"text": "The X200 has two antennas."},
             "timestamp": NOW},
            {"requestIdentifier": "r3", "namespaces": ["/kb/products"], "content": {"text": "bad"}, "timestamp": NOW,
             "memoryStrategyId": "no-such-strategy"},
        ],
    )
    assert [r["requestIdentifier"] for r in created["successfulRecords"]] == ["r1", "r2"]
    assert [r["requestIdentifier"] for r in created["failedRecords"]] == ["r3"]
    assert created["failedRecords"][0]["status"] == "FAILED" and created["failedRecords"][0]["errorCode"] >= 400
    ids = [r["memoryRecordId"] for r in created["successfulRecords"]]

    hits = wait_for(lambda: data.retrieve_memory_records(
        memoryId=memory_id, namespace="/kb/products",
        searchCriteria={"searchQuery": "WPA3 router", "metadataFilters": [
            {"left": {"metadataKey": "source"}, "operator": "EQUALS_TO",
             "right": {"metadataValue": {"stringValue": "manual"}}}]})["memoryRecordSummaries"])
    assert [h["memoryRecordId"] for h in hits] == [ids[0]]
    assert hits[0]["metadata"] == {"source": {"stringValue": "manual"}}

    updated = data.batch_update_memory_records(
        memoryId=memory_id,
        records=[{"memoryRecordId": ids[1], "timestamp": NOW, "content": {"text": "The X200 has four antennas."}}],
    )
    assert [r["memoryRecordId"] for r in updated["successfulRecords"]] == [ids[1]]
    text = data.get_memory_record(memoryId=memory_id, memoryRecordId=ids[1])["memoryRecord"]["content"]["text"]
    assert text == "The X200 has four antennas."

    deleted = data.batch_delete_memory_records(
        memoryId=memory_id,
        records=[{"memoryRecordId": ids[0]}, {"memoryRecordId": ids[1], "namespace": "/elsewhere"}],
    )
    assert [r["memoryRecordId"] for r in deleted["successfulRecords"]] == [ids[0]]
    assert [r["memoryRecordId"] for r in deleted["failedRecords"]] == [ids[1]]
    assert deleted["failedRecords"][0]["errorCode"] == 404
    remaining = data.list_memory_records(memoryId=memory_id, namespace="/kb/products")["memoryRecordSummaries"]
    assert [r["memoryRecordId"] for r in remaining] == [ids[1]]


def test_not_found_and_validation_errors_are_modelled(data, memory):
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.list_events(memoryId="missing-0123456789", actorId="u", sessionId="s")
    # A session or actor without events is an empty list, as in AgentCore.
    assert data.list_events(memoryId=memory["id"], actorId="nobody", sessionId="s")["events"] == []
    assert data.list_sessions(memoryId=memory["id"], actorId="nobody")["sessionSummaries"] == []
    with pytest.raises(data.exceptions.ValidationException) as err:
        data.get_event(memoryId=memory["id"], actorId="u", sessionId="s", eventId="not-an-event-id")
    assert "eventId" in str(err.value)
    with pytest.raises(data.exceptions.ValidationException) as err:
        data.create_event(memoryId=memory["id"], actorId="bad actor!", sessionId="s", eventTimestamp=NOW,
                          payload=[turn("x")])
    assert "actorId" in str(err.value)
    with pytest.raises(data.exceptions.ValidationException):
        data.retrieve_memory_records(memoryId=memory["id"], namespace="/a", namespacePath="/a",
                                     searchCriteria={"searchQuery": "x"})


def test_extraction_jobs_list_and_redrive(memd, monkeypatch):
    """A strategy whose LLM endpoint is down: its job fails, is listed, and is re-driven."""
    from conftest import Memd

    server = Memd(extra_env={
        "MEMD_LLM_BASE_URL": f"http://127.0.0.1:{_closed_port()}/v1",
        "MEMD_LLM_MODEL": "local-model",
        "MEMD_EXTRACTION_MAX_ATTEMPTS": "1",
    })
    try:
        for name, value in server.environment(server.create_key()).items():
            monkeypatch.setenv(name, value)
        control = boto3.client("bedrock-agentcore-control")
        data = boto3.client("bedrock-agentcore")
        memory = control.create_memory(name=unique("jobs"), eventExpiryDuration=30, memoryStrategies=[{
            "customMemoryStrategy": {"name": "custom", "configuration": {"semanticOverride": {
                "extraction": {"appendToPrompt": "Only facts about pets.", "modelId": "local-model"}}}}}])["memory"]
        assert memory["strategies"][0]["type"] == "CUSTOM"
        assert memory["strategies"][0]["configuration"]["type"] == "SEMANTIC_OVERRIDE"
        data.create_event(memoryId=memory["id"], actorId="u", sessionId="s", eventTimestamp=NOW,
                          payload=[turn("My dog is called Rex.")])
        jobs = wait_for(lambda: data.list_memory_extraction_jobs(
            memoryId=memory["id"], filter={"status": "FAILED"})["jobs"], timeout=60)
        job = jobs[0]
        assert job["status"] == "FAILED" and job["failureReason"]
        assert job["actorId"] == "u" and job["sessionId"] == "s"
        assert job["messages"]["messagesList"][0]["eventId"]
        assert data.start_memory_extraction_job(memoryId=memory["id"], extractionJob={"jobId": job["jobID"]})["jobId"] == job["jobID"]
        with pytest.raises(data.exceptions.ResourceNotFoundException):
            data.start_memory_extraction_job(memoryId=memory["id"], extractionJob={"jobId": "no-such-job"})
    finally:
        server.close()


def _closed_port():
    from conftest import free_port
    return free_port()
