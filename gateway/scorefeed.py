"""Live reward per version for the controller: a thread that follows the scores topic.

It reads as its own consumer group (it must see every score, not share them with rubric
workers) and keeps only the newest score per (episode, rubric).
"""

from __future__ import annotations

import logging
import threading

from ledger.bus import Bus, BusError
from ledger.ids import new_id
from ledger.records import TOPIC_SCORES, RecordError, Score, parse_record

log = logging.getLogger(__name__)


class ScoreFeed:
    def __init__(self, bus: Bus, registry: object, topic_prefix: str = "") -> None:
        self._bus, self._registry = bus, registry
        self._topic = topic_prefix + TOPIC_SCORES
        self._stop = threading.Event()
        self._seen: dict[tuple[str, str], int] = {}
        self._thread = threading.Thread(target=self._run, name="rlgw-scorefeed", daemon=True)

    def start(self) -> ScoreFeed:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        consumer = self._bus.consumer([self._topic], f"rlgw-gateway-scores-{new_id()}")
        try:
            while not self._stop.is_set():
                try:
                    messages = consumer.poll(500, 0.5)
                except BusError as exc:
                    log.warning("score feed: %s", exc)
                    self._stop.wait(1.0)
                    continue
                for m in messages:
                    try:
                        rec = parse_record(m.value)
                    except RecordError:
                        continue
                    if isinstance(rec, Score):
                        self.apply(rec)
        finally:
            consumer.close()

    def apply(self, score: Score) -> None:
        key = (score.episode_id, score.rubric)
        if self._seen.get(key, -1) > score.feedback_seq:
            return  # an older score than one already applied
        self._seen[key] = score.feedback_seq
        self._registry.observe_score(score.version, f"{score.episode_id}|{score.rubric}", score.total)  # type: ignore[attr-defined]
