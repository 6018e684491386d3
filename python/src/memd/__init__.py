"""memd: the Python client of memd, the self-hosted memory service for AI agents.

    import memd

    client = memd.Client()                      # MEMD_ENDPOINT / MEMD_API_KEY, or arguments
    session = client.session(memory_id, "alice")
    session.add_turn("I moved to Lisbon last year.")
    for hit in client.retrieve_memory_records(memory_id, "where does alice live"):
        print(hit.score, hit.memory_record.text)

Messages are memd's protobuf messages (``memd.v1.memory_pb2``, ``memd.v1.control_pb2``).
"""

from memd._aio import AsyncClient, AsyncSession
from memd._client import Client, Session
from memd._requests import api_key_policy, turn
from memd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MemdError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from memd.v1 import control_pb2 as control
from memd.v1 import memory_pb2 as pb

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncSession",
    "Client",
    "FailedPrecondition",
    "InvalidArgument",
    "MemdError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Session",
    "Unauthenticated",
    "Unavailable",
    "api_key_policy",
    "control",
    "pb",
    "turn",
]
