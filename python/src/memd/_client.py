"""The synchronous client."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, TypeVar, cast

import grpc

from memd import _requests as rq
from memd.errors import FailedPrecondition, from_rpc_error
from memd.v1 import control_pb2 as control
from memd.v1 import control_pb2_grpc as control_grpc
from memd.v1 import memory_pb2 as memory
from memd.v1 import memory_pb2_grpc as memory_grpc

T = TypeVar("T")

#: Watch errors after which reconnecting from the last cursor may succeed.
RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)


class Client:
    """A connection to memd.

    ``Client()`` connects to ``MEMD_ENDPOINT`` (default 127.0.0.1:50051) with ``MEMD_API_KEY``
    (if set); ``Client("https://memd.example:443", api_key="memd_...")`` names them. Methods
    are memd's RPCs in snake_case and return its protobuf messages; listings are iterators over
    every page; failures raise :class:`memd.MemdError` subclasses.
    """

    def __init__(self, endpoint: Optional[str] = None, api_key: Optional[str] = None, *, timeout: Optional[float] = 30.0) -> None:
        address, tls = rq.target(endpoint)
        self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials()) if tls else grpc.insecure_channel(address)
        self._metadata = rq.metadata(api_key)
        self._timeout = timeout
        self._memory = memory_grpc.MemoryServiceStub(self._channel)
        self._control = control_grpc.ControlServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: object) -> T:
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _pages(self, method: Callable[..., object], request: object, items: str) -> Iterator[T]:
        while True:
            reply = self._call(method, request)
            yield from getattr(reply, items)
            token = getattr(reply, "next_page_token")
            if not token:
                return
            setattr(request, "page_token", token)

    # Memories and keys (ControlService).

    def create_memory(
        self,
        name: str,
        *,
        description: str = "",
        strategies: Sequence[control.MemoryStrategy] = (),
        session_policy: Optional[control.SessionPolicy] = None,
        event_expiry_days: int = 0,
        client_token: str = "",
    ) -> control.Memory:
        request = rq.create_memory(
            name, description=description, strategies=strategies, session_policy=session_policy,
            event_expiry_days=event_expiry_days, client_token=client_token,
        )
        return self._call(self._control.CreateMemory, request)

    def get_memory(self, memory_id: str) -> control.Memory:
        return self._call(self._control.GetMemory, control.GetMemoryRequest(memory_id=memory_id))

    def update_memory(self, request: control.UpdateMemoryRequest) -> control.Memory:
        return self._call(self._control.UpdateMemory, request)

    def delete_memory(self, memory_id: str) -> None:
        self._call(self._control.DeleteMemory, control.DeleteMemoryRequest(memory_id=memory_id))

    def list_memories(self) -> Iterator[control.Memory]:
        return self._pages(self._control.ListMemories, control.ListMemoriesRequest(page_size=100), "memories")

    def create_api_key(
        self, name: str, *, memories: Sequence[str], actions: Sequence[str], actors: Sequence[str] = ("*",), namespaces: Sequence[str] = ("*",)
    ) -> control.CreateApiKeyResponse:
        policy = rq.api_key_policy(memories, actions, actors, namespaces)
        return self._call(self._control.CreateApiKey, control.CreateApiKeyRequest(name=name, policy=policy))

    def list_api_keys(self) -> Iterator[control.ApiKey]:
        return self._pages(self._control.ListApiKeys, control.ListApiKeysRequest(page_size=100), "keys")

    def revoke_api_key(self, key_id: str) -> None:
        self._call(self._control.RevokeApiKey, control.RevokeApiKeyRequest(key_id=key_id))

    # Short-term memory.

    def create_event(
        self,
        memory_id: str,
        actor_id: str,
        session_id: str,
        payload: Iterable[rq.PayloadLike],
        *,
        event_timestamp: Optional[_dt.datetime] = None,
        branch: Optional[str] = None,
        root_event_id: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        client_token: str = "",
        extract: bool = True,
    ) -> memory.Event:
        """Appends an event; ``payload`` items may be plain strings (user turns), :func:`memd.turn`
        results, ``{"json": value}`` or ``{"blob": bytes}``. An empty ``session_id`` starts a new
        session (its id is in the returned event)."""
        request = rq.create_event(
            memory_id, actor_id, session_id, payload, event_timestamp=event_timestamp, branch=branch,
            root_event_id=root_event_id, metadata=metadata, client_token=client_token, extract=extract,
        )
        return self._call(self._memory.CreateEvent, request).event

    def get_event(self, memory_id: str, actor_id: str, session_id: str, event_id: str) -> memory.Event:
        request = memory.GetEventRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id, event_id=event_id)
        return self._call(self._memory.GetEvent, request)

    def list_events(
        self, memory_id: str, actor_id: str, session_id: str, *, include_payloads: bool = True,
        newest_first: bool = False, branch: Optional[str] = None, include_parent_branches: bool = False,
    ) -> Iterator[memory.Event]:
        request = rq.list_events(
            memory_id, actor_id, session_id, include_payloads=include_payloads, newest_first=newest_first,
            branch=branch, include_parent_branches=include_parent_branches,
        )
        return self._pages(self._memory.ListEvents, request, "events")

    def delete_event(self, memory_id: str, actor_id: str, session_id: str, event_id: str) -> None:
        request = memory.DeleteEventRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id, event_id=event_id)
        self._call(self._memory.DeleteEvent, request)

    def list_actors(self, memory_id: str) -> Iterator[memory.Actor]:
        return self._pages(self._memory.ListActors, memory.ListActorsRequest(memory_id=memory_id, page_size=100), "actors")

    def delete_actor(self, memory_id: str, actor_id: str) -> None:
        self._call(self._memory.DeleteActor, memory.DeleteActorRequest(memory_id=memory_id, actor_id=actor_id))

    def list_sessions(self, memory_id: str, actor_id: str) -> Iterator[memory.Session]:
        request = memory.ListSessionsRequest(memory_id=memory_id, actor_id=actor_id, page_size=100)
        return self._pages(self._memory.ListSessions, request, "sessions")

    def get_session(self, memory_id: str, actor_id: str, session_id: str) -> memory.Session:
        request = memory.GetSessionRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id)
        return self._call(self._memory.GetSession, request)

    def ping_session(self, memory_id: str, actor_id: str, session_id: str) -> memory.Session:
        """Keeps a session ACTIVE without appending an event."""
        request = memory.PingSessionRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id)
        return self._call(self._memory.PingSession, request)

    def session(self, memory_id: str, actor_id: str, session_id: str = "") -> "Session":
        """A handle on one session (a new one when ``session_id`` is empty)."""
        return Session(self, memory_id, actor_id, session_id)

    # Long-term memory and search.

    def retrieve_memory_records(
        self, memory_id: str, query: str, *, namespace: str = "", top_k: int = 10, strategy_id: str = "",
        mode: int = 0, min_score: float = 0.0, metadata_filters: Sequence[memory.RecordMetadataFilter] = (),
    ) -> List[memory.ScoredMemoryRecord]:
        """Records most relevant to ``query``, best first, with their scores."""
        request = rq.retrieve(
            memory_id, query, namespace=namespace, top_k=top_k, strategy_id=strategy_id, mode=mode,
            min_score=min_score, metadata_filters=metadata_filters,
        )
        return list(self._call(self._memory.RetrieveMemoryRecords, request).memory_records)

    def list_memory_records(self, memory_id: str, namespace: str = "", strategy_id: str = "") -> Iterator[memory.MemoryRecord]:
        request = memory.ListMemoryRecordsRequest(memory_id=memory_id, namespace=namespace, strategy_id=strategy_id, page_size=100)
        return self._pages(self._memory.ListMemoryRecords, request, "memory_records")

    def get_memory_record(self, memory_id: str, memory_record_id: str) -> memory.MemoryRecord:
        request = memory.GetMemoryRecordRequest(memory_id=memory_id, memory_record_id=memory_record_id)
        return self._call(self._memory.GetMemoryRecord, request)

    def get_memory_record_history(self, memory_id: str, memory_record_id: str) -> List[memory.MemoryRecord]:
        request = memory.GetMemoryRecordHistoryRequest(memory_id=memory_id, memory_record_id=memory_record_id)
        return list(self._call(self._memory.GetMemoryRecordHistory, request).memory_records)

    def delete_memory_record(self, memory_id: str, memory_record_id: str) -> None:
        request = memory.DeleteMemoryRecordRequest(memory_id=memory_id, memory_record_id=memory_record_id)
        self._call(self._memory.DeleteMemoryRecord, request)

    def batch_create_memory_records(self, memory_id: str, records: Sequence[memory.MemoryRecordInput]) -> List[memory.BatchItemResult]:
        request = memory.BatchCreateMemoryRecordsRequest(memory_id=memory_id, records=list(records))
        return list(self._call(self._memory.BatchCreateMemoryRecords, request).results)

    def batch_update_memory_records(self, memory_id: str, records: Sequence[memory.MemoryRecordUpdate]) -> List[memory.BatchItemResult]:
        request = memory.BatchUpdateMemoryRecordsRequest(memory_id=memory_id, records=list(records))
        return list(self._call(self._memory.BatchUpdateMemoryRecords, request).results)

    def batch_delete_memory_records(self, memory_id: str, memory_record_ids: Sequence[str]) -> List[memory.BatchItemResult]:
        request = memory.BatchDeleteMemoryRecordsRequest(memory_id=memory_id, memory_record_ids=list(memory_record_ids))
        return list(self._call(self._memory.BatchDeleteMemoryRecords, request).results)

    def search_events(
        self, memory_id: str, actor_id: str, query: str, *, session_ids: Sequence[str] = (), top_k: int = 10, mode: int = 0,
    ) -> List[memory.ScoredEvent]:
        """An actor's past events most relevant to ``query``."""
        request = memory.SearchEventsRequest(memory_id=memory_id, actor_id=actor_id, session_ids=list(session_ids), query=query, top_k=top_k, mode=cast(memory.SearchMode, mode))
        return list(self._call(self._memory.SearchEvents, request).events)

    def get_context(self, memory_id: str, actor_id: str, session_id: str, *, query: str = "", token_budget: int = 0) -> memory.GetContextResponse:
        """What to put in a prompt to resume a session, within ``token_budget`` (default 2000)."""
        request = memory.GetContextRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id, query=query, token_budget=token_budget)
        return self._call(self._memory.GetContext, request)

    def list_memory_extraction_jobs(self, memory_id: str) -> Iterator[memory.ExtractionJob]:
        request = memory.ListMemoryExtractionJobsRequest(memory_id=memory_id, page_size=100)
        return self._pages(self._memory.ListMemoryExtractionJobs, request, "jobs")

    def start_memory_extraction_job(self, memory_id: str, job_id: str) -> memory.ExtractionJob:
        request = memory.StartMemoryExtractionJobRequest(memory_id=memory_id, job_id=job_id)
        return self._call(self._memory.StartMemoryExtractionJob, request)

    # Change streams.

    def watch_sessions(self, memory_id: str, actor_pattern: str = "", cursor: str = "") -> Iterator[memory.SessionChange]:
        """Session transitions as they are committed, forever. After a dropped connection (or
        the server ending a slow stream) it reconnects from the last change it yielded, so
        nothing is missed or repeated; ``change.cursor`` resumes a later call."""
        def open_stream(cursor: str) -> Iterator[memory.SessionChange]:
            request = memory.WatchSessionsRequest(memory_id=memory_id, actor_pattern=actor_pattern, cursor=cursor)
            return self._memory.WatchSessions(request, metadata=self._metadata)

        # The first call starts now, so that "from now" means from this call.
        return self._follow(open_stream, cursor, open_stream(cursor))

    def watch_memory_records(self, memory_id: str, namespace: str = "", cursor: str = "") -> Iterator[memory.MemoryRecordChange]:
        """Long-term record changes as they are committed; resumes like :meth:`watch_sessions`."""
        def open_stream(cursor: str) -> Iterator[memory.MemoryRecordChange]:
            request = memory.WatchMemoryRecordsRequest(memory_id=memory_id, namespace=namespace, cursor=cursor)
            return self._memory.WatchMemoryRecords(request, metadata=self._metadata)

        # The first call starts now, so that "from now" means from this call.
        return self._follow(open_stream, cursor, open_stream(cursor))

    def _follow(self, open_stream: Callable[[str], Iterator[T]], cursor: str, stream: Iterator[T]) -> Iterator[T]:
        delay = 0.2
        while True:
            try:
                for change in stream:
                    cursor = getattr(change, "cursor")
                    delay = 0.2
                    yield change
                return
            except grpc.RpcError as error:
                if error.code() not in RESUMABLE:
                    raise from_rpc_error(error) from None
            finally:
                # grpc's stream objects are also call handles: end this one on the server too.
                getattr(stream, "cancel", lambda: None)()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            stream = open_stream(cursor)


class Session:
    """One session of one actor: append turns, keep it alive, load its context."""

    def __init__(self, client: Client, memory_id: str, actor_id: str, session_id: str = "") -> None:
        self.client = client
        self.memory_id = memory_id
        self.actor_id = actor_id
        #: Empty until the first event when the server generates it.
        self.session_id = session_id

    def add_turn(
        self, text: str, role: rq.RoleLike = "user", *, name: str = "", metadata: Optional[Mapping[str, str]] = None,
        event_timestamp: Optional[_dt.datetime] = None, extract: bool = True,
    ) -> memory.Event:
        """Appends one conversational turn (``role``: user, assistant, tool or other)."""
        event = self.client.create_event(
            self.memory_id, self.actor_id, self.session_id, [rq.turn(text, role, name)],
            metadata=metadata, event_timestamp=event_timestamp, extract=extract,
        )
        self.session_id = event.session_id
        return event

    def events(self, *, newest_first: bool = False, include_payloads: bool = True) -> Iterator[memory.Event]:
        return self.client.list_events(
            self.memory_id, self.actor_id, self._id(), newest_first=newest_first, include_payloads=include_payloads,
        )

    def ping(self) -> memory.Session:
        return self.client.ping_session(self.memory_id, self.actor_id, self._id())

    def state(self) -> memory.Session:
        return self.client.get_session(self.memory_id, self.actor_id, self._id())

    def context(self, query: str = "", token_budget: int = 0) -> memory.GetContextResponse:
        return self.client.get_context(self.memory_id, self.actor_id, self._id(), query=query, token_budget=token_budget)

    def _id(self) -> str:
        if not self.session_id:
            raise FailedPrecondition(grpc.StatusCode.FAILED_PRECONDITION, "the session has no id until its first turn")
        return self.session_id
