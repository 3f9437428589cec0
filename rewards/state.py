"""A worker's per-episode state: the records seen so far, and whether they were scored.

An episode is due for scoring once it is closed (EpisodeEnd, feedback with done=True, or idle)
and has turns, and its (feedback count, turn count) differs from what was last scored: so late
feedback re-scores it, and a replayed record changes nothing. A turn after a scored close
reopens the episode (it is scored again when it closes again).
Scored episodes stay `keep_scored_s` for late feedback (as their records' bytes), then are forgotten.
Episodes are keyed by (tenant, episode id): ids are chosen by clients, so two tenants may use
one id, and their records must never merge (nor may one tenant's feedback score another's turns).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ledger.reads import EpisodeAssembly
from ledger.records import Episode, EpisodeEnd, Feedback, Record, Turn, TurnChoice, parse_record


@dataclass
class EpisodeState:
    live: EpisodeAssembly | None
    touched: float
    seen: set[str] = field(default_factory=set)
    closed: bool = False
    scored: tuple[int, int] | None = None  # (feedback count, turn count) last scored
    recovered: bool = False  # merged with the store's copy
    turns: int = 0
    feedback: int = 0
    raw: list[bytes] = field(default_factory=list)  # the records as they came, for `pack`
    episode_id: str = ""
    tenant: str = "default"

    @property
    def episode(self) -> Episode:
        return self._assembly().episode

    def _assembly(self) -> EpisodeAssembly:
        if self.live is None:  # unpack: parse the records again (late feedback, rarely)
            self.live = EpisodeAssembly(self.episode_id, self.tenant, turn=_slim)
            for data in self.raw:
                self.live.add(parse_record(data))
        return self.live

    def add(self, record: Turn | Feedback, raw: bytes | None) -> None:
        """Keep a turn or feedback in the episode (and its bytes, to unpack it later)."""
        assembly = self._assembly()
        self.raw.append(raw if raw is not None else record.to_bytes())
        assembly.add(record)

    def pack(self) -> None:
        """Hold a scored episode as its records' bytes: many small objects slow every GC pass."""
        if self.raw:
            self.live = None

    @property
    def key(self) -> EpisodeKey:
        return self.tenant, self.episode_id

    @property
    def signature(self) -> tuple[int, int]:
        return self.feedback, self.turns

    @property
    def due(self) -> bool:
        return self.closed and self.turns > 0 and self.scored != self.signature


def _slim(turn: Turn) -> Turn:
    """Drop token ids and log-probs: rubrics read text, and the worker holds many episodes."""
    if turn.prompt_token_ids is None and all(c.token_ids is None for c in turn.choices):
        return turn
    choices = [
        TurnChoice(index=c.index, message=c.message, finish_reason=c.finish_reason) for c in turn.choices
    ]
    return turn.model_copy(update={"prompt_token_ids": None, "choices": choices})


EpisodeKey = tuple[str, str]  # (tenant, episode id)


class EpisodeBook:
    def __init__(self) -> None:
        self._states: OrderedDict[EpisodeKey, EpisodeState] = OrderedDict()  # least recently touched first

    def __len__(self) -> int:
        return len(self._states)

    def get(self, episode_id: str, tenant: str = "default") -> EpisodeState | None:
        return self._states.get((tenant, episode_id))

    def apply(self, record: Record, now: float, raw: bytes | None = None) -> EpisodeState | None:
        """Add one record; returns the episode's state (None for records about no episode, and
        for a failed call: it left nothing to score)."""
        eid = getattr(record, "episode_id", None)
        if eid is None or not isinstance(record, Turn | Feedback | EpisodeEnd):
            return None
        key = (record.tenant, eid)
        st = self._states.get(key)
        if st is None:
            st = EpisodeState(None, now, episode_id=eid, tenant=record.tenant)
            self._states[key] = st
        else:
            self._states.move_to_end(key)
            st.touched = now
        if record.id in st.seen:
            return st
        st.seen.add(record.id)
        if isinstance(record, Turn | Feedback):
            st.add(record, raw)
        if isinstance(record, Turn):
            st.turns += 1
            if st.scored is not None:  # a turn after the scored close reopens the episode
                st.closed = False
        elif isinstance(record, Feedback):
            st.feedback += 1
            st.closed = st.closed or record.done
        elif isinstance(record, EpisodeEnd):
            st.closed = True
        return st

    def idle(self, now: float, idle_timeout_s: float) -> list[EpisodeState]:
        """Open episodes untouched for `idle_timeout_s`: closes and returns them."""
        out = []
        for st in self._states.values():
            if now - st.touched < idle_timeout_s:
                break
            if not st.closed:
                st.closed = True
                out.append(st)
        return out

    def due(self) -> list[EpisodeState]:
        return [st for st in self._states.values() if st.due]

    def open_count(self) -> int:
        """Episodes whose records a crash would lose: not closed, or closed and not yet scored."""
        return sum(1 for st in self._states.values() if not st.closed or st.due)

    def forget(self, now: float, keep_scored_s: float) -> int:
        """Drop scored episodes untouched for `keep_scored_s`; returns how many."""
        old = [
            key
            for key, st in self._states.items()
            if now - st.touched >= keep_scored_s and st.closed and not st.due
        ]
        for key in old:
            del self._states[key]
        return len(old)
