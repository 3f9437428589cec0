"""The gateway: OpenAI-compatible endpoints, episode capture, feedback, the serving pool."""
