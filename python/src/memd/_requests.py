"""Request messages built from plain Python arguments, shared by Client and AsyncClient."""

from __future__ import annotations

import datetime as _dt
import os
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union, cast

from google.protobuf.timestamp_pb2 import Timestamp

from memd.v1 import control_pb2 as control
from memd.v1 import memory_pb2 as memory

DEFAULT_ENDPOINT = "127.0.0.1:50051"

#: A role by name ("user", "assistant", "tool", "other") or as the enum value.
RoleLike = Union[str, int]
#: A payload item, a plain string (a user turn), or a dict ``{"json": ...}`` / ``{"blob": bytes}``.
PayloadLike = Union[memory.PayloadItem, str, Mapping[str, object]]

_ROLES: Dict[str, memory.Role] = {
    "user": memory.ROLE_USER,
    "assistant": memory.ROLE_ASSISTANT,
    "tool": memory.ROLE_TOOL,
    "other": memory.ROLE_OTHER,
}


def target(endpoint: Optional[str]) -> Tuple[str, bool]:
    """``host:port`` and whether to use TLS, from an endpoint such as
    ``http://127.0.0.1:50051``, ``https://memd.example:443`` or ``127.0.0.1:50051``
    (default: ``MEMD_ENDPOINT``, else 127.0.0.1:50051)."""
    endpoint = endpoint or os.environ.get("MEMD_ENDPOINT") or DEFAULT_ENDPOINT
    if endpoint.startswith("https://"):
        return endpoint[len("https://") :].rstrip("/"), True
    if endpoint.startswith("http://"):
        return endpoint[len("http://") :].rstrip("/"), False
    return endpoint, False


def metadata(api_key: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """Call metadata carrying the API key (default: ``MEMD_API_KEY``), if any."""
    key = api_key if api_key is not None else os.environ.get("MEMD_API_KEY")
    return (("authorization", f"Bearer {key}"),) if key else ()


def role(value: RoleLike) -> memory.Role:
    if isinstance(value, int):
        return cast(memory.Role, value)
    try:
        return _ROLES[value.lower()]
    except KeyError:
        raise ValueError(f"role must be one of {sorted(_ROLES)}, not {value!r}") from None


def turn(text: str, role_: RoleLike = "user", name: str = "") -> memory.PayloadItem:
    """A conversational turn: ``turn("I live in Lisbon.")``, ``turn("Noted.", "assistant")``.
    ``name`` is who spoke (records then name them instead of saying "I")."""
    return memory.PayloadItem(conversational=memory.Conversational(role=role(role_), text=text, name=name))


def payload_item(item: PayloadLike) -> memory.PayloadItem:
    if isinstance(item, memory.PayloadItem):
        return item
    if isinstance(item, str):
        return turn(item)
    if "json" in item:
        import json

        value = item["json"]
        return memory.PayloadItem(json=value if isinstance(value, str) else json.dumps(value))
    if "blob" in item:
        blob = item["blob"]
        if not isinstance(blob, (bytes, bytearray)):
            raise TypeError("a blob payload item holds bytes")
        return memory.PayloadItem(blob=bytes(blob))
    raise ValueError("a payload item is a PayloadItem, a string, {'json': ...} or {'blob': bytes}")


def timestamp(value: Optional[_dt.datetime]) -> Optional[Timestamp]:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (e.g. datetime.now(timezone.utc))")
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(_dt.timezone.utc))
    return ts


def create_event(
    memory_id: str,
    actor_id: str,
    session_id: str,
    payload: Iterable[PayloadLike],
    *,
    event_timestamp: Optional[_dt.datetime] = None,
    branch: Optional[str] = None,
    root_event_id: Optional[str] = None,
    metadata: Optional[Mapping[str, str]] = None,
    client_token: str = "",
    extract: bool = True,
) -> memory.CreateEventRequest:
    return memory.CreateEventRequest(
        memory_id=memory_id,
        actor_id=actor_id,
        session_id=session_id,
        event_timestamp=timestamp(event_timestamp),
        payload=[payload_item(p) for p in payload],
        branch=memory.Branch(name=branch or "", root_event_id=root_event_id or "") if branch else None,
        metadata=dict(metadata or {}),
        client_token=client_token,
        extraction_mode=memory.EXTRACTION_MODE_EXTRACT if extract else memory.EXTRACTION_MODE_SKIP,
    )


def search_criteria(
    query: str,
    *,
    top_k: int = 10,
    strategy_id: str = "",
    mode: int = 0,
    min_score: float = 0.0,
    metadata_filters: Sequence[memory.RecordMetadataFilter] = (),
) -> memory.SearchCriteria:
    return memory.SearchCriteria(
        search_query=query,
        top_k=top_k,
        strategy_id=strategy_id,
        mode=cast(memory.SearchMode, mode),
        min_score=min_score,
        metadata_filters=list(metadata_filters),
    )


def api_key_policy(
    memories: Sequence[str],
    actions: Sequence[str],
    actors: Sequence[str] = ("*",),
    namespaces: Sequence[str] = ("*",),
) -> control.ApiKeyPolicy:
    names = {"read": control.ApiKeyPolicy.ACTION_READ, "write": control.ApiKeyPolicy.ACTION_WRITE, "admin": control.ApiKeyPolicy.ACTION_ADMIN}
    try:
        action_values = [names[a.lower()] for a in actions]
    except KeyError as missing:
        raise ValueError(f"actions are read, write and admin, not {missing}") from None
    return control.ApiKeyPolicy(
        memory_ids=list(memories),
        actor_patterns=list(actors),
        namespace_prefixes=list(namespaces),
        actions=action_values,
    )


def list_events(
    memory_id: str, actor_id: str, session_id: str, *, include_payloads: bool = True, newest_first: bool = False,
    branch: Optional[str] = None, include_parent_branches: bool = False,
) -> memory.ListEventsRequest:
    event_filter = None
    if branch is not None:
        event_filter = memory.EventFilter(branch=memory.BranchFilter(name=branch, include_parent_branches=include_parent_branches))
    return memory.ListEventsRequest(
        memory_id=memory_id, actor_id=actor_id, session_id=session_id, include_payloads=include_payloads,
        filter=event_filter, page_size=100, newest_first=newest_first,
    )


def retrieve(
    memory_id: str, query: str, *, namespace: str = "", top_k: int = 10, strategy_id: str = "", mode: int = 0,
    min_score: float = 0.0, metadata_filters: Sequence[memory.RecordMetadataFilter] = (),
) -> memory.RetrieveMemoryRecordsRequest:
    criteria = search_criteria(query, top_k=top_k, strategy_id=strategy_id, mode=mode, min_score=min_score, metadata_filters=metadata_filters)
    return memory.RetrieveMemoryRecordsRequest(memory_id=memory_id, namespace=namespace, search_criteria=criteria, page_size=top_k)


def create_memory(
    name: str, *, description: str = "", strategies: Sequence[control.MemoryStrategy] = (),
    session_policy: Optional[control.SessionPolicy] = None, event_expiry_days: int = 0, client_token: str = "",
) -> control.CreateMemoryRequest:
    return control.CreateMemoryRequest(
        name=name, description=description, strategies=list(strategies), session_policy=session_policy,
        event_expiry_days=event_expiry_days, client_token=client_token,
    )
