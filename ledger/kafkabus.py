"""The production bus: Apache Kafka (or any Kafka-protocol broker) through kafka-python.

The producer is idempotent with `acks=all`; `publish` sends a batch and waits for every ack,
so it returns only once the records are durable on the broker, and raises `BusUnavailable`
(the recorder spools meanwhile) when the broker is unreachable or slow. Records are keyed
(episode id), so kafka-python's murmur2 partitioner keeps an episode on one partition.
Topics are created on start with the configured partitions and replication; a publish that
finds its topic missing (a broker that came back empty, or was down when this process
started: a gateway starts during a Kafka outage and spools) creates it again.

Consumers join a group with auto-commit off: `commit()` stores the positions handed out by
`poll()`, which callers do after their work is durable (at-least-once).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from kafka.partitioner.default import murmur2

from ledger.bus import BusUnavailable, Message
from ledger.config import LedgerConfig
from ledger.records import TOPICS

log = logging.getLogger(__name__)


class KafkaBus:
    def __init__(self, cfg: LedgerConfig, *, client_id: str = "rlgw") -> None:
        self.cfg = cfg
        self._servers = list(cfg.bootstrap_servers)
        self._client_id = client_id
        self.topics = [cfg.topic_prefix + t for t in TOPICS]
        self._producer: KafkaProducer | None = None
        self._topics_ok = False
        try:
            self.ensure_topics()
            self._topics_ok = True
        except BusUnavailable as exc:  # start anyway: records spool, topics are made on recovery
            log.warning("kafka unavailable at start (%s); records spool until it is back", exc)

    # -- topics --------------------------------------------------------------------------
    def ensure_topics(self, names: Sequence[str] | None = None) -> None:
        """Create the ledger's topics where missing (partitions, replication from config)."""
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self._servers,
                client_id=self._client_id + "-admin",
                request_timeout_ms=self.cfg.request_timeout_ms,
                bootstrap_timeout_ms=self.cfg.request_timeout_ms,  # kafka-python waits 30 s by default
            )
        except KafkaError as exc:
            raise BusUnavailable(f"kafka at {self._servers} unreachable: {exc}") from exc
        try:
            existing = set(admin.list_topics())
            new = [
                NewTopic(t, self.cfg.partitions, self.cfg.replication)
                for t in (names or self.topics)
                if t not in existing
            ]
            if new:
                try:
                    admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass  # another process created it first
                log.info("created topics %s", [t.name for t in new])
        except KafkaError as exc:
            raise BusUnavailable(f"cannot create topics: {exc}") from exc
        finally:
            admin.close()

    # -- producing -----------------------------------------------------------------------
    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            c = self.cfg
            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=self._servers,
                    client_id=self._client_id,
                    acks="all",
                    enable_idempotence=True,
                    compression_type=None if c.compression == "none" else c.compression,
                    linger_ms=c.linger_ms,
                    batch_size=c.batch_bytes,
                    max_block_ms=c.request_timeout_ms,
                    bootstrap_timeout_ms=c.request_timeout_ms,
                    request_timeout_ms=c.request_timeout_ms,
                    delivery_timeout_ms=c.publish_timeout_ms,
                )
            except KafkaError as exc:
                raise BusUnavailable(f"kafka at {self._servers} unreachable: {exc}") from exc
            if importlib.util.find_spec("crc32c") is None:
                log.warning(
                    "kafka-python computes record-batch checksums in pure Python (no 'crc32c' module): "
                    "producing is several times slower; install kafka-python[crc32c]"
                )
        return self._producer

    def publish(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        if not self._topics_ok:  # after a failure: the broker may have come back empty
            self.ensure_topics()
            self._topics_ok = True
        producer = self._get_producer()
        try:
            futures = self._send(producer, topic, items)
            producer.flush(timeout=self.cfg.publish_timeout_ms / 1000)
            for f in futures:
                f.get(timeout=0)
        except (KafkaTimeoutError, KafkaError) as exc:
            self._reset_producer()  # a fresh producer (and idempotence session) for the retry
            self._topics_ok = False
            raise BusUnavailable(f"kafka publish to {topic} failed: {exc!r}") from exc

    @staticmethod
    def _send(producer: KafkaProducer, topic: str, items: Sequence[tuple[str, bytes]]) -> list[Any]:
        """Hand the records to the producer's batches; their futures resolve once acknowledged.

        The partition is the default partitioner's (murmur2 of the key, as the Java client and
        every kafka-python producer choose it), computed here: the partitioner re-reads the
        cluster's partition lists for every record, a quarter of the cost of a send.
        """
        parts = sorted(producer.partitions_for(topic))  # waits for metadata (max_block_ms) if needed
        n = len(parts)
        send = producer.send
        futures = []
        for key, value in items:
            k = key.encode()
            futures.append(send(topic, key=k, value=value, partition=parts[(murmur2(k) & 0x7FFFFFFF) % n]))
        return futures

    def _reset_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception:
                log.debug("closing a failed producer", exc_info=True)
            self._producer = None

    # -- consuming -----------------------------------------------------------------------
    def consumer(self, topics: Sequence[str], group: str) -> KafkaBusConsumer:
        return KafkaBusConsumer(self, list(topics), group)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


class KafkaBusConsumer:
    def __init__(self, bus: KafkaBus, topics: list[str], group: str) -> None:
        c = bus.cfg
        opts: dict[str, Any] = dict(
            bootstrap_servers=bus._servers,
            group_id=group,
            client_id=f"{bus._client_id}-{group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            request_timeout_ms=max(c.request_timeout_ms, c.session_timeout_ms + 5000),
            bootstrap_timeout_ms=c.request_timeout_ms,
        )
        try:
            self._consumer = KafkaConsumer(*topics, **opts)
        except KafkaError as exc:
            raise BusUnavailable(f"kafka at {bus._servers} unreachable: {exc}") from exc

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        try:
            got = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise BusUnavailable(f"kafka poll failed: {exc!r}") from exc
        out: list[Message] = []
        for tp, records in got.items():
            for r in records:
                key = r.key.decode() if r.key else ""
                out.append(Message(tp.topic, tp.partition, r.offset, key, r.value))
        return out

    def commit(self) -> None:
        try:
            self._consumer.commit()
        except KafkaError as exc:
            raise BusUnavailable(f"kafka commit failed: {exc!r}") from exc

    def close(self) -> None:
        self._consumer.close(autocommit=False)
