"""LangGraph with langgraph-checkpoint-aws's AgentCore saver and store, on memd."""

import operator
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph_checkpoint_aws import AgentCoreMemorySaver, AgentCoreMemoryStore

from conftest import REGION, Memd, unique, wait_for


class State(TypedDict):
    steps: Annotated[list[str], operator.add]
    turns: int


def build(checkpointer):
    def think(state: State):
        return {"steps": [f"thought {state.get('turns', 0) + 1}"]}

    def act(state: State):
        return {"steps": ["acted"], "turns": state.get("turns", 0) + 1}

    graph = StateGraph(State)
    graph.add_node("think", think)
    graph.add_node("act", act)
    graph.add_edge(START, "think")
    graph.add_edge("think", "act")
    graph.add_edge("act", END)
    return graph.compile(checkpointer=checkpointer)


def test_checkpoints_survive_a_memd_restart(monkeypatch):
    server = Memd()
    try:
        for name, value in server.environment(server.create_key()).items():
            monkeypatch.setenv(name, value)
        import boto3

        memory_id = boto3.session.Session().client("bedrock-agentcore-control").create_memory(
            name=unique("graph"), eventExpiryDuration=30)["memory"]["id"]
        config = {"configurable": {"thread_id": "thread-1", "actor_id": "agent-user"}}

        graph = build(AgentCoreMemorySaver(memory_id, region_name=REGION))
        graph.invoke({"steps": [], "turns": 0}, config)
        second = graph.invoke({"steps": []}, config)
        assert second["turns"] == 2
        assert second["steps"] == ["thought 1", "acted", "thought 2", "acted"]
        history = list(graph.get_state_history(config))
        assert len(history) >= 4

        server.restart()
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

        restored = build(AgentCoreMemorySaver(memory_id, region_name=REGION))
        state = restored.get_state(config)
        assert state.values == second, "the state comes back from memd after a restart"
        third = restored.invoke({"steps": []}, config)
        assert third["turns"] == 3
        assert len(list(restored.get_state_history(config))) > len(history)
        other = restored.get_state({"configurable": {"thread_id": "thread-2", "actor_id": "agent-user"}})
        assert not other.values, "threads do not share state"
    finally:
        server.close()


def test_store_puts_messages_and_searches_long_term_memory(aws_env, control):
    memory_id = control.create_memory(name=unique("store"), eventExpiryDuration=30, memoryStrategies=[
        {"semanticMemoryStrategy": {"name": "facts", "namespaces": ["/users/{actorId}/facts"]}}])["memory"]["id"]
    store = AgentCoreMemoryStore(memory_id=memory_id, region_name=REGION)
    store.put(("lena", "chat-1"), "m1", {"message": HumanMessage("I moved to Vienna last year.")})
    store.put(("lena", "chat-1"), "m2", {"message": AIMessage("Welcome to Vienna!")})
    found = wait_for(lambda: store.search(("users", "lena", "facts"), query="where does lena live"))
    assert any("Vienna" in item.value["content"] for item in found), [i.value for i in found]
    item = store.get(("users", "lena", "facts"), found[0].key)
    assert item is not None and item.value["content"] == found[0].value["content"]
    # (The package's store does not implement delete: it logs a warning and does nothing.)
