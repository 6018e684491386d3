"""The asyncio client: the agent-facing RPCs of :class:`memd.Client`, awaitable. (Key and
strategy administration stay on the synchronous client.)"""

from __future__ import annotations

import asyncio
import datetime as _dt
from typing import AsyncIterator, Awaitable, Callable, Iterable, List, Mapping, Optional, Sequence, TypeVar, cast

import grpc
import grpc.aio

from memd import _requests as rq
from memd._client import RESUMABLE
from memd.errors import FailedPrecondition, from_rpc_error
from memd.v1 import control_pb2 as control
from memd.v1 import control_pb2_grpc as control_grpc
from memd.v1 import memory_pb2 as memory
from memd.v1 import memory_pb2_grpc as memory_grpc

T = TypeVar("T")


class AsyncClient:
    """Like :class:`memd.Client`, for asyncio: ``async with AsyncClient() as memd: ...``."""

    def __init__(self, endpoint: Optional[str] = None, api_key: Optional[str] = None, *, timeout: Optional[float] = 30.0) -> None:
        address, tls = rq.target(endpoint)
        self._channel = (
            grpc.aio.secure_channel(address, grpc.ssl_channel_credentials()) if tls else grpc.aio.insecure_channel(address)
        )
        self._metadata = rq.metadata(api_key)
        self._timeout = timeout
        self._memory = memory_grpc.MemoryServiceStub(self._channel)
        self._control = control_grpc.ControlServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: object) -> T:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def _pages(self, method: Callable[..., Awaitable[object]], request: object, items: str) -> AsyncIterator[T]:
        while True:
            reply = await self._call(method, request)
            for item in getattr(reply, items):
                yield item
            token = getattr(reply, "next_page_token")
            if not token:
                return
            setattr(request, "page_token", token)

    async def create_memory(
        self, name: str, *, description: str = "", strategies: Sequence[control.MemoryStrategy] = (),
        session_policy: Optional[control.SessionPolicy] = None, event_expiry_days: int = 0, client_token: str = "",
    ) -> control.Memory:
        request = rq.create_memory(
            name, description=description, strategies=strategies, session_policy=session_policy,
            event_expiry_days=event_expiry_days, client_token=client_token,
        )
        return await self._call(self._control.CreateMemory, request)

    async def get_memory(self, memory_id: str) -> control.Memory:
        return await self._call(self._control.GetMemory, control.GetMemoryRequest(memory_id=memory_id))

    async def delete_memory(self, memory_id: str) -> None:
        await self._call(self._control.DeleteMemory, control.DeleteMemoryRequest(memory_id=memory_id))

    def list_memories(self) -> AsyncIterator[control.Memory]:
        return self._pages(self._control.ListMemories, control.ListMemoriesRequest(page_size=100), "memories")

    async def create_event(
        self, memory_id: str, actor_id: str, session_id: str, payload: Iterable[rq.PayloadLike], *,
        event_timestamp: Optional[_dt.datetime] = None, branch: Optional[str] = None, root_event_id: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None, client_token: str = "", extract: bool = True,
    ) -> memory.Event:
        request = rq.create_event(
            memory_id, actor_id, session_id, payload, event_timestamp=event_timestamp, branch=branch,
            root_event_id=root_event_id, metadata=metadata, client_token=client_token, extract=extract,
        )
        return (await self._call(self._memory.CreateEvent, request)).event

    async def get_event(self, memory_id: str, actor_id: str, session_id: str, event_id: str) -> memory.Event:
        request = memory.GetEventRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id, event_id=event_id)
        return await self._call(self._memory.GetEvent, request)

    def list_events(
        self, memory_id: str, actor_id: str, session_id: str, *, include_payloads: bool = True,
        newest_first: bool = False, branch: Optional[str] = None, include_parent_branches: bool = False,
    ) -> AsyncIterator[memory.Event]:
        request = rq.list_events(
            memory_id, actor_id, session_id, include_payloads=include_payloads, newest_first=newest_first,
            branch=branch, include_parent_branches=include_parent_branches,
        )
        return self._pages(self._memory.ListEvents, request, "events")

    def list_sessions(self, memory_id: str, actor_id: str) -> AsyncIterator[memory.Session]:
        request = memory.ListSessionsRequest(memory_id=memory_id, actor_id=actor_id, page_size=100)
        return self._pages(self._memory.ListSessions, request, "sessions")

    async def get_session(self, memory_id: str, actor_id: str, session_id: str) -> memory.Session:
        request = memory.GetSessionRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id)
        return await self._call(self._memory.GetSession, request)

    async def ping_session(self, memory_id: str, actor_id: str, session_id: str) -> memory.Session:
        request = memory.PingSessionRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id)
        return await self._call(self._memory.PingSession, request)

    async def retrieve_memory_records(
        self, memory_id: str, query: str, *, namespace: str = "", top_k: int = 10, strategy_id: str = "",
        mode: int = 0, min_score: float = 0.0, metadata_filters: Sequence[memory.RecordMetadataFilter] = (),
    ) -> List[memory.ScoredMemoryRecord]:
        request = rq.retrieve(
            memory_id, query, namespace=namespace, top_k=top_k, strategy_id=strategy_id, mode=mode,
            min_score=min_score, metadata_filters=metadata_filters,
        )
        return list((await self._call(self._memory.RetrieveMemoryRecords, request)).memory_records)

    def list_memory_records(self, memory_id: str, namespace: str = "", strategy_id: str = "") -> AsyncIterator[memory.MemoryRecord]:
        request = memory.ListMemoryRecordsRequest(memory_id=memory_id, namespace=namespace, strategy_id=strategy_id, page_size=100)
        return self._pages(self._memory.ListMemoryRecords, request, "memory_records")

    async def delete_memory_record(self, memory_id: str, memory_record_id: str) -> None:
        request = memory.DeleteMemoryRecordRequest(memory_id=memory_id, memory_record_id=memory_record_id)
        await self._call(self._memory.DeleteMemoryRecord, request)

    async def batch_create_memory_records(self, memory_id: str, records: Sequence[memory.MemoryRecordInput]) -> List[memory.BatchItemResult]:
        request = memory.BatchCreateMemoryRecordsRequest(memory_id=memory_id, records=list(records))
        return list((await self._call(self._memory.BatchCreateMemoryRecords, request)).results)

    async def search_events(
        self, memory_id: str, actor_id: str, query: str, *, session_ids: Sequence[str] = (), top_k: int = 10, mode: int = 0,
    ) -> List[memory.ScoredEvent]:
        request = memory.SearchEventsRequest(memory_id=memory_id, actor_id=actor_id, session_ids=list(session_ids), query=query, top_k=top_k, mode=cast(memory.SearchMode, mode))
        return list((await self._call(self._memory.SearchEvents, request)).events)

    async def get_context(self, memory_id: str, actor_id: str, session_id: str, *, query: str = "", token_budget: int = 0) -> memory.GetContextResponse:
        request = memory.GetContextRequest(memory_id=memory_id, actor_id=actor_id, session_id=session_id, query=query, token_budget=token_budget)
        return await self._call(self._memory.GetContext, request)

    def watch_sessions(self, memory_id: str, actor_pattern: str = "", cursor: str = "") -> AsyncIterator[memory.SessionChange]:
        """Session transitions as they are committed; reconnects from the last cursor."""
        def open_stream(cursor: str) -> AsyncIterator[memory.SessionChange]:
            request = memory.WatchSessionsRequest(memory_id=memory_id, actor_pattern=actor_pattern, cursor=cursor)
            return self._memory.WatchSessions(request, metadata=self._metadata)

        # The first call starts now, so that "from now" means from this call.
        return self._follow(open_stream, cursor, open_stream(cursor))

    def watch_memory_records(self, memory_id: str, namespace: str = "", cursor: str = "") -> AsyncIterator[memory.MemoryRecordChange]:
        """Record changes as they are committed; reconnects from the last cursor."""
        def open_stream(cursor: str) -> AsyncIterator[memory.MemoryRecordChange]:
            request = memory.WatchMemoryRecordsRequest(memory_id=memory_id, namespace=namespace, cursor=cursor)
            return self._memory.WatchMemoryRecords(request, metadata=self._metadata)

        # The first call starts now, so that "from now" means from this call.
        return self._follow(open_stream, cursor, open_stream(cursor))

    async def _follow(
        self, open_stream: Callable[[str], AsyncIterator[T]], cursor: str, stream: AsyncIterator[T]
    ) -> AsyncIterator[T]:
        delay = 0.2
        while True:
            try:
                async for change in stream:
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
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            stream = open_stream(cursor)

    def session(self, memory_id: str, actor_id: str, session_id: str = "") -> "AsyncSession":
        return AsyncSession(self, memory_id, actor_id, session_id)


class AsyncSession:
    """One session of one actor, for asyncio (see :class:`memd.Session`)."""

    def __init__(self, client: AsyncClient, memory_id: str, actor_id: str, session_id: str = "") -> None:
        self.client = client
        self.memory_id = memory_id
        self.actor_id = actor_id
        self.session_id = session_id

    async def add_turn(self, text: str, role: rq.RoleLike = "user", *, name: str = "") -> memory.Event:
        event = await self.client.create_event(self.memory_id, self.actor_id, self.session_id, [rq.turn(text, role, name)])
        self.session_id = event.session_id
        return event

    async def ping(self) -> memory.Session:
        return await self.client.ping_session(self.memory_id, self.actor_id, self._id())

    async def context(self, query: str = "", token_budget: int = 0) -> memory.GetContextResponse:
        return await self.client.get_context(self.memory_id, self.actor_id, self._id(), query=query, token_budget=token_budget)

    def _id(self) -> str:
        if not self.session_id:
            raise FailedPrecondition(grpc.StatusCode.FAILED_PRECONDITION, "the session has no id until its first turn")
        return self.session_id
