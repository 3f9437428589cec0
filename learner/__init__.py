"""The learner: scored episodes -> token-level samples -> policy-gradient steps -> versions.

Reads scored episodes through the ledger's `ScoredReads` seam (`ledger.reads`), trains a LoRA
adapter (or full weights), saves each version atomically and publishes it to the gateway's
admin API. Imports nothing heavy here: torch and transformers load inside the modules that
train.
"""
