"""The production bus: Apache Kafka (or any Kafka-protocol broker) through kafka-python.

The producer is idempotent with `acks=all`; `publish` sends a batch and waits for every ack,
so it returns only once the records are durable on the broker, and raises `BusUnavailable`
(the recorder spools meanwhile) when the broker is unreachable or slow. Records are keyed
(episode id) and go to the partition kafka-python's default partitioner would pick (murmur2 of
the key, as the Java client), so an episode stays on one partition whichever client wrote it.
Topics are created on start with the configured partitions and replication; a publish that
finds its topic missing (a broker that came back empty, or was down when this process
started: a gateway starts during a Kafka outage and spools) creates it again.

Size: the producer sends records up to `max_record_bytes` and creates topics that accept them.
A record over the limit (refused by the producer, or by a broker whose limit is lower) can
never be published: `publish` sends the rest and raises `BusRejected` naming it, instead of
`BusUnavailable`, which would have the recorder retry it, and everything behind it, forever.

Consumers (ledger/kafkaconsumer.py) join a group and commit by hand, after the work.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)
from kafka.partitioner.default import murmur2

from ledger.bus import BusRejected, BusUnavailable
from ledger.config import LedgerConfig
from ledger.kafkaconsumer import KafkaBusConsumer
from ledger.records import TOPICS

log = logging.getLogger(__name__)

# errors about the record itself: sending it again cannot succeed
RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)


class KafkaBus:
    def __init__(self, cfg: LedgerConfig, *, client_id: str = "rlgw") -> None:
        self.cfg = cfg
        self.servers = list(cfg.bootstrap_servers)
        self.client_id = client_id
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
                bootstrap_servers=self.servers,
                client_id=self.client_id + "-admin",
                request_timeout_ms=self.cfg.request_timeout_ms,
                bootstrap_timeout_ms=self.cfg.request_timeout_ms,  # kafka-python waits 30 s by default
            )
        except KafkaError as exc:
            raise BusUnavailable(f"kafka at {self.servers} unreachable: {exc}") from exc
        try:
            existing = set(admin.list_topics())
            new = [
                NewTopic(
                    t,
                    self.cfg.partitions,
                    self.cfg.replication,
                    topic_configs={"max.message.bytes": str(self.cfg.max_record_bytes)},
                )
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
                    bootstrap_servers=self.servers,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=True,
                    compression_type=None if c.compression == "none" else c.compression,
                    linger_ms=c.linger_ms,
                    batch_size=c.batch_bytes,
                    max_request_size=c.max_record_bytes,
                    max_block_ms=c.request_timeout_ms,
                    bootstrap_timeout_ms=c.request_timeout_ms,
                    request_timeout_ms=c.request_timeout_ms,
                    delivery_timeout_ms=c.publish_timeout_ms,
                )
            except KafkaError as exc:
                raise BusUnavailable(f"kafka at {self.servers} unreachable: {exc}") from exc
            _warn_without_crc32c()
        return self._producer

    def publish(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        if not self._topics_ok:  # after a failure: the broker may have come back empty
            self.ensure_topics()
            self._topics_ok = True
        producer = self._get_producer()
        rejected: dict[int, str] = {}
        try:
            futures = self._send(producer, topic, items, rejected)
            producer.flush(timeout=self.cfg.publish_timeout_ms / 1000)
        except KafkaError as exc:
            raise self._unavailable(topic, exc) from exc
        refused_by_broker = False
        for i, future in futures:  # all done after flush()
            if future.failed():
                if not isinstance(future.exception, RECORD_ERRORS):
                    raise self._unavailable(topic, future.exception) from future.exception
                rejected[i] = f"the broker refused it: {future.exception}"
                refused_by_broker = True
        if refused_by_broker:
            self._reset_producer()  # its idempotence session saw a failed batch
        if rejected:
            raise BusRejected(rejected)

    def _unavailable(self, topic: str, exc: Exception) -> BusUnavailable:
        self._reset_producer()  # a fresh producer (and idempotence session) for the retry
        self._topics_ok = False
        return BusUnavailable(f"kafka publish to {topic} failed: {exc!r}")

    @staticmethod
    def _send(
        producer: KafkaProducer, topic: str, items: Sequence[tuple[str, bytes]], rejected: dict[int, str]
    ) -> list[tuple[int, Any]]:
        """Hand the records to the producer's batches; their futures resolve once acknowledged.
        A record over the producer's size limit goes into `rejected` instead.

        The partition is the default partitioner's (murmur2 of the key, as the Java client and
        every kafka-python producer choose it), computed here: the partitioner re-reads the
        cluster's partition lists for every record, about a third of what a send costs.
        """
        parts = sorted(producer.partitions_for(topic))  # waits for metadata (max_block_ms) if needed
        n = len(parts)
        send = producer.send
        futures = []
        for i, (key, value) in enumerate(items):
            k = key.encode()
            try:
                futures.append(
                    (i, send(topic, key=k, value=value, partition=parts[(murmur2(k) & 0x7FFFFFFF) % n]))
                )
            except MessageSizeTooLargeError as exc:
                rejected[i] = str(exc)
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


@functools.cache  # once per process: a producer is made again after every failure
def _warn_without_crc32c() -> None:
    if importlib.util.find_spec("crc32c") is None:
        log.warning(
            "kafka-python computes record-batch checksums in pure Python (no 'crc32c' module): "
            "producing is several times slower; install kafka-python[crc32c]"
        )
