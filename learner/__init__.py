"""The learner: scored episodes -> token-level samples -> policy-gradient steps -> versions.

Reads scored episodes through a small protocol (`learner.loop.ScoredEpisodes`), trains a LoRA
adapter (or full weights), saves each version atomically and publishes it to the gateway's
admin API. Imports nothing heavy here: torch and transformers load inside the modules that
train.
"""
