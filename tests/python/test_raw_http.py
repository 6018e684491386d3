"""What boto3 never sends: malformed, oversized and unknown requests straight over HTTP. Each
gets an AWS-shaped error naming what is wrong, and memd keeps serving."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import Memd, unique


@pytest.fixture
def api(memd, control):
    memory_id = control.create_memory(name=unique("raw"), eventExpiryDuration=30)["memory"]["id"]
    key = memd.create_key()
    session = requests.Session()
    # The REST API also takes memd's Bearer keys, like gRPC.
    session.headers["authorization"] = f"Bearer {key.secret}"
    return memd.http, memory_id, session


def error(response):
    body = response.json()
    assert response.headers["x-amzn-errortype"] == body["__type"]
    return response.status_code, body["__type"], body["message"]


def test_bad_bodies_are_validation_errors(api):
    base, memory_id, http = api
    url = f"{base}/memories/{memory_id}/events"
    cases = {
        "{": "body",
        json.dumps({"actorId": "a", "payload": [], "encryption": 1}): "encryption",
        json.dumps({"actorId": "a", "payload": [{"conversational": {"content": {"text": "x"}, "role": "KING"}}]}): "payload[0].conversational.role",
        json.dumps({"actorId": "a", "payload": [{"blob": 1, "json": {"content": 2}}]}): "payload[0]",
        json.dumps({"actorId": "a", "eventTimestamp": 1e300, "payload": []}): "eventTimestamp",
        json.dumps({"actorId": 7}): "actorId",
        '{"actorId": "a", "payload": [{"blob": ' + "[" * 300 + "]" * 300 + "}]}": "body",
    }
    for body, field in cases.items():
        status, code, message = error(http.post(url, data=body, headers={"content-type": "application/json"}))
        assert (status, code) == (400, "ValidationException"), (body[:80], message)
        assert field in message, (field, message)
    status, code, message = error(http.post(url, data=b"x" * (13 << 20)))
    assert (status, code) == (400, "ValidationException") and "MiB" in message
    # Nothing was written, and the server still answers.
    listed = http.post(f"{base}/memories/{memory_id}/actor/a/sessions", data="{}")
    assert listed.status_code == 200 and listed.json()["sessionSummaries"] == []


def test_unknown_operations_and_missing_credentials(api, memd):
    base, memory_id, http = api
    status, code, _ = error(http.get(f"{base}/memories/{memory_id}/events"))
    assert (status, code) == (404, "UnknownOperationException")
    status, code, _ = error(http.post(f"{base}/not-agentcore"))
    assert (status, code) == (404, "UnknownOperationException")
    status, code, _ = error(requests.post(f"{base}/memories/", data="{}"))
    assert (status, code) == (403, "UnrecognizedClientException")
    status, code, _ = error(requests.post(f"{base}/memories/", data="{}", headers={"authorization": "AWS4-HMAC-SHA256 nonsense"}))
    assert (status, code) == (400, "IncompleteSignatureException")
    ok = http.post(f"{base}/memories/", data="{}")
    assert ok.status_code == 200 and memory_id in [m["id"] for m in ok.json()["memories"]]


def test_rest_requests_are_counted_in_metrics():
    server = Memd(metrics=True)
    try:
        key = server.create_key()
        headers = {"authorization": f"Bearer {key.secret}"}
        assert requests.post(f"{server.http}/memories/", data="{}", headers=headers).status_code == 200
        assert requests.get(f"{server.http}/memories/missing-0123456789/details", headers=headers).status_code == 404
        scrape = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
        assert 'memd_rest_requests_total{code="OK",operation="ListMemories"} 1' in scrape, scrape
        assert 'memd_rest_requests_total{code="ResourceNotFoundException",operation="GetMemory"} 1' in scrape
        assert "memd_rest_request_duration_seconds_bucket" in scrape
    finally:
        server.close()


def test_a_flooding_key_is_throttled_over_rest_and_counted():
    server = Memd(
        extra_env={"MEMD_KEY_REQUESTS_PER_SECOND": "2", "MEMD_KEY_REQUEST_BURST": "3"},
        metrics=True,
    )
    try:
        noisy, quiet = server.create_key(), server.create_key()

        def call(_):
            return requests.post(f"{server.http}/memories/", data="{}", headers={"authorization": f"Bearer {noisy.secret}"})

        # All at once: a refusal is held for its retry delay before it is sent, so one call
        # after another would find the bucket refilled each time.
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(call, range(20)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) >= 3 and 429 in codes, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert error(refused)[:2] == (429, "ThrottledException")
        assert int(refused.headers["memd-retry-after-ms"]) > 0 and int(refused.headers["retry-after"]) >= 1
        assert "key_requests_per_second" in error(refused)[2]
        # Another key is not held back by the flood.
        calm = requests.post(f"{server.http}/memories/", data="{}", headers={"authorization": f"Bearer {quiet.secret}"})
        assert calm.status_code == 200
        scrape = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
        assert f'memd_quota_refusals_total{{key_id="{noisy.key_id}",limit="requests"}}' in scrape, scrape
        assert f'key_id="{quiet.key_id}"' not in scrape
    finally:
        server.close()


def test_mcp_over_http_refuses_a_flooding_key_with_its_delay():
    server = Memd(extra_env={"MEMD_KEY_REQUESTS_PER_SECOND": "1", "MEMD_KEY_REQUEST_BURST": "1"})
    try:
        noisy = server.create_key()
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }

        def call(_):
            return requests.post(
                f"{server.http}/mcp",
                json=initialize,
                headers={"authorization": f"Bearer {noisy.secret}", "accept": "application/json, text/event-stream"},
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(call, range(8)))
        refused = [r for r in responses if r.status_code == 429]
        assert refused, [r.status_code for r in responses]
        assert "key_requests_per_second" in refused[0].json()["error"]["message"]
        assert int(refused[0].headers["memd-retry-after-ms"]) > 0 and int(refused[0].headers["retry-after"]) >= 1
    finally:
        server.close()
