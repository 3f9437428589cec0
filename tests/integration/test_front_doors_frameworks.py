"""Agent frameworks through the gateway, as a new user points them at it: the OpenAI Agents SDK
(its default Responses model and a chat-completions model), langchain-openai and pydantic-ai,
each running a tool loop against the fake replica (which calls the first tool offered until it
gets the tool's result, then answers). Every model call is recorded with token ids."""

from __future__ import annotations

import asyncio

import pytest
from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner, function_tool
from agents.models.openai_provider import OpenAIProvider as AgentsProvider
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import SecretStr
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider as PydanticProvider

from tests.fixtures.upstream import GatewayServer, recorded_turns

pytestmark = pytest.mark.integration

ANSWER = "echo[fake-base#0]: find x"


def lookup(q: str) -> str:
    """Look something up."""
    return f"{q} is 42"


def async_client(gw: GatewayServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.url, api_key="unused", max_retries=0)


def _tool_loop_recorded(gw: GatewayServer) -> None:
    one, two = recorded_turns(gw, want=2)
    assert one.choices[0].message["tool_calls"][0]["function"]["name"] == "lookup"
    assert two.request["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_fake_0",
        "content": "x is 42",
    }
    assert one.tokens_recorded and two.tokens_recorded


@pytest.mark.parametrize(
    "responses", [True, False], ids=["default-responses-model", "chat-completions-model"]
)
def test_openai_agents_sdk_tool_loop(gateway: GatewayServer, responses: bool) -> None:
    agent = Agent(name="finder", instructions="Use the tool.", tools=[function_tool(lookup)], model="rlgw")
    provider = AgentsProvider(openai_client=async_client(gateway), use_responses=responses)
    if not responses:
        agent.model = OpenAIChatCompletionsModel(model="rlgw", openai_client=async_client(gateway))
    config = RunConfig(model_provider=provider, tracing_disabled=True)
    result = asyncio.run(Runner.run(agent, "find x", run_config=config))
    assert result.final_output == ANSWER
    _tool_loop_recorded(gateway)
    api = recorded_turns(gateway, want=2)[0].metadata.get("rlgw_door", {}).get("api")
    assert api == ("responses" if responses else None)


@pytest.mark.parametrize("responses", [False, True], ids=["chat", "responses"])
def test_langchain_openai_invoke_stream_and_bind_tools(gateway: GatewayServer, responses: bool) -> None:
    key = SecretStr("unused")
    llm = ChatOpenAI(
        base_url=gateway.url, api_key=key, model="rlgw", max_retries=0, use_responses_api=responses
    )
    assert llm.invoke("hello").text == "echo[fake-base#0]: hello"
    assert "".join(chunk.text for chunk in llm.stream("streamed")) == "echo[fake-base#0]: streamed"
    ask = HumanMessage("find x")
    called = llm.bind_tools([lookup]).invoke([ask])
    [call] = called.tool_calls
    assert call["name"] == "lookup" and call["args"] == {"q": "x"}
    answer = llm.bind_tools([lookup]).invoke([ask, called, ToolMessage("x is 42", tool_call_id=call["id"])])
    assert answer.text == ANSWER
    turns = recorded_turns(gateway, want=4)
    assert len(turns) == 4 and all(t.tokens_recorded for t in turns)
    assert turns[3].request["messages"][-1]["role"] == "tool"


@pytest.mark.parametrize("model_kind", [OpenAIChatModel, OpenAIResponsesModel], ids=["chat", "responses"])
def test_pydantic_ai_tool_loop(gateway: GatewayServer, model_kind: type) -> None:
    model = model_kind("rlgw", provider=PydanticProvider(openai_client=async_client(gateway)))
    agent = PydanticAgent(model, tools=[lookup], instructions="Use the tool.")
    result = agent.run_sync("find x")
    assert result.output == ANSWER
    _tool_loop_recorded(gateway)
