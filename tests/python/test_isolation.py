"""Tenant isolation through SigV4: a key limited to `acme/*` reaches nothing of `globex/*`
through any REST operation, and requests that are not properly signed are refused."""

from datetime import datetime, timezone

import boto3
import botocore.exceptions
import pytest
from botocore import UNSIGNED
from botocore.config import Config

from conftest import unique, wait_for

NOW = datetime.now(timezone.utc)


def turn(text):
    return {"conversational": {"content": {"text": text}, "role": "USER"}}


def code(err: botocore.exceptions.ClientError) -> str:
    return err.response["Error"]["Code"]


@pytest.fixture
def tenants(memd, data, control, monkeypatch):
    """A memory holding one acme and one globex actor (written by the admin), and clients
    signed with a key that may read and write acme/* only."""
    memory = control.create_memory(name=unique("iso"), eventExpiryDuration=30, memoryStrategies=[
        {"semanticMemoryStrategy": {"name": "facts", "namespaces": ["/users/{actorId}/facts"]}}])["memory"]
    memory_id = memory["id"]
    other = control.create_memory(name=unique("other"), eventExpiryDuration=30)["memory"]
    globex_event = data.create_event(memoryId=memory_id, actorId="globex/bob", sessionId="s", eventTimestamp=NOW,
                                     payload=[turn("I am a pilot based in Zurich.")])["event"]
    data.create_event(memoryId=memory_id, actorId="acme/alice", sessionId="s", eventTimestamp=NOW,
                      payload=[turn("I am a teacher based in Zurich.")])
    globex_record = wait_for(lambda: data.list_memory_records(
        memoryId=memory_id, namespace="/users/globex/bob/facts")["memoryRecordSummaries"])[0]
    wait_for(lambda: data.list_memory_records(memoryId=memory_id, namespace="/users/acme/alice/facts")["memoryRecordSummaries"])
    key = memd.create_key(memories=memory_id, actors="acme/*", namespaces="/users/acme/", actions=("read", "write"))
    for name, value in memd.environment(key).items():
        monkeypatch.setenv(name, value)
    session = boto3.session.Session()
    return {
        "memory_id": memory_id,
        "other_memory_id": other["id"],
        "globex_event": globex_event,
        "globex_record": globex_record["memoryRecordId"],
        "data": session.client("bedrock-agentcore"),
        "control": session.client("bedrock-agentcore-control"),
        "admin": data,
        "key": key,
    }


def test_a_tenant_key_reaches_nothing_of_another_tenant(tenants):
    t = tenants
    data, memory_id = t["data"], t["memory_id"]
    event = t["globex_event"]
    at_globex = dict(memoryId=memory_id, actorId="globex/bob", sessionId="s")
    refused = {
        "CreateEvent": lambda: data.create_event(**at_globex, eventTimestamp=NOW, payload=[turn("x")]),
        "GetEvent": lambda: data.get_event(**at_globex, eventId=event["eventId"]),
        "ListEvents": lambda: data.list_events(**at_globex),
        "DeleteEvent": lambda: data.delete_event(**at_globex, eventId=event["eventId"]),
        "ListSessions": lambda: data.list_sessions(memoryId=memory_id, actorId="globex/bob"),
        "ListEvents (another memory)": lambda: data.list_events(
            memoryId=t["other_memory_id"], actorId="acme/alice", sessionId="s"),
        "CreateMemory": lambda: t["control"].create_memory(name=unique("nope"), eventExpiryDuration=30),
        "GetMemory (another memory)": lambda: t["control"].get_memory(memoryId=t["other_memory_id"]),
        "DeleteMemory": lambda: t["control"].delete_memory(memoryId=memory_id),
    }
    for operation, call in refused.items():
        with pytest.raises(botocore.exceptions.ClientError) as err:
            call()
        assert code(err.value) == "AccessDeniedException", f"{operation}: {err.value}"

    # A record outside the key's scope is not found: its id reveals nothing.
    for operation, call in {
        "GetMemoryRecord": lambda: data.get_memory_record(memoryId=memory_id, memoryRecordId=t["globex_record"]),
        "DeleteMemoryRecord": lambda: data.delete_memory_record(memoryId=memory_id, memoryRecordId=t["globex_record"]),
    }.items():
        with pytest.raises(botocore.exceptions.ClientError) as err:
            call()
        assert code(err.value) in ("AccessDeniedException", "ResourceNotFoundException"), f"{operation}: {err.value}"

    # Listing and searching show only what the key may see.
    actors = [a["actorId"] for a in data.list_actors(memoryId=memory_id)["actorSummaries"]]
    assert actors == ["acme/alice"]
    for kwargs in ({"namespacePath": "/users/"}, {"namespace": "/users/globex/bob/facts"}, {}):
        try:
            found = data.retrieve_memory_records(memoryId=memory_id, searchCriteria={"searchQuery": "pilot Zurich"}, **kwargs)
            assert all("globex" not in r["namespaces"][0] for r in found["memoryRecordSummaries"]), kwargs
        except botocore.exceptions.ClientError as err:
            assert code(err) == "AccessDeniedException", err
        try:
            listed = data.list_memory_records(memoryId=memory_id, **kwargs)
            assert all("globex" not in r["namespaces"][0] for r in listed["memoryRecordSummaries"]), kwargs
        except botocore.exceptions.ClientError as err:
            assert code(err) == "AccessDeniedException", err
    memories = [m["id"] for m in t["control"].list_memories()["memories"]]
    assert memories == [memory_id]

    # Batch writes fail item by item outside the key's namespaces.
    created = data.batch_create_memory_records(memoryId=memory_id, records=[
        {"requestIdentifier": "g", "namespaces": ["/users/globex/bob/facts"], "content": {"text": "planted"}, "timestamp": NOW},
        {"requestIdentifier": "a", "namespaces": ["/users/acme/notes"], "content": {"text": "allowed"}, "timestamp": NOW},
    ])
    assert [r["requestIdentifier"] for r in created["failedRecords"]] == ["g"]
    assert created["failedRecords"][0]["errorCode"] == 403
    assert [r["requestIdentifier"] for r in created["successfulRecords"]] == ["a"]
    deleted = data.batch_delete_memory_records(memoryId=memory_id, records=[{"memoryRecordId": t["globex_record"]}])
    assert not deleted["successfulRecords"]

    # And globex's data is all still there.
    admin = t["admin"]
    assert admin.get_event(**at_globex, eventId=event["eventId"])["event"]["eventId"] == event["eventId"]
    assert admin.get_memory_record(memoryId=memory_id, memoryRecordId=t["globex_record"])


def test_badly_signed_requests_are_refused(tenants, memd):
    memory_id = tenants["memory_id"]
    key = tenants["key"]
    args = dict(memoryId=memory_id, actorId="acme/alice", sessionId="s")

    def client(**kwargs):
        return boto3.session.Session(**kwargs).client("bedrock-agentcore")

    # The same key and request work when signed properly...
    assert client().list_events(**args)["events"]

    # ...but not with a body changed after signing,
    tampering = client()

    def tamper(request, **_):
        # Same length, still valid JSON: only the signature can tell.
        assert b"true" in request.body
        request.body = request.body.replace(b"true", b"null")

    tampering.meta.events.register("before-send.bedrock-agentcore.ListEvents", tamper)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        tampering.list_events(includePayloads=True, **args)
    assert code(err.value) == "InvalidSignatureException"

    # ...nor with the wrong secret, an unknown key id, no signature, or another service name.
    wrong = client(aws_access_key_id=key.key_id, aws_secret_access_key=key.secret + "x")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        wrong.list_events(**args)
    assert code(err.value) == "InvalidSignatureException"
    unknown = client(aws_access_key_id="AKIAUNKNOWN", aws_secret_access_key="whatever")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        unknown.list_events(**args)
    assert code(err.value) == "UnrecognizedClientException"
    unsigned = boto3.session.Session().client("bedrock-agentcore", config=Config(signature_version=UNSIGNED))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        unsigned.list_events(**args)
    assert code(err.value) == "UnrecognizedClientException"
    other_service = client()
    other_service.meta.service_model.metadata["signingName"] = "s3"
    other_service._request_signer._signing_name = "s3"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        other_service.list_events(**args)
    assert code(err.value) == "InvalidSignatureException"

    # A revoked key stops working at once.
    memd.memctl("keys", "revoke", key.key_id)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client().list_events(**args)
    assert code(err.value) == "UnrecognizedClientException"
