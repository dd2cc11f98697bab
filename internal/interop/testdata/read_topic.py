"""Reads an ecst state topic with confluent-kafka-python alone, no ecst code.

    python read_topic.py BOOTSTRAP TOPIC REGISTRY_URL

Reads every partition from the beginning to its end (read_committed, the
librdkafka default) and prints one JSON line per record:

    {"key": ..., "partition": ..., "offset": ..., "headers": [[name, value], ...],
     "schema_id": ... or null, "value": {...} or null}

The value goes through AvroDeserializer against the registry, as any
consumer of the topic would decode it; a tombstone prints "value": null.
Timestamps print as RFC 3339. Exits non-zero on any error, with the reason
on stderr.
"""

import datetime
import json
import struct
import sys
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(v):
    """Makes an Avro-decoded value printable as JSON."""
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return v


def main():
    bootstrap, topic, registry_url = sys.argv[1:4]
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "ecst-interop-" + str(uuid.uuid4()),
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "error_cb": fail,
    })
    meta = consumer.list_topics(topic, timeout=30)
    tmeta = meta.topics[topic]
    if tmeta.error is not None:
        raise KafkaException(tmeta.error)
    partitions = sorted(tmeta.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    pending = set(partitions)
    while pending:
        msg = consumer.poll(30)
        if msg is None:
            raise SystemExit("no message and no end of partition within 30 s; still waiting on partitions %s" % sorted(pending))
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
                continue
            raise KafkaException(err)
        raw = msg.value()
        schema_id = None
        if raw is not None and len(raw) >= 5 and raw[0] == 0:
            schema_id = struct.unpack(">I", raw[1:5])[0]
        value = deserialize(raw, SerializationContext(topic, MessageField.VALUE, msg.headers()))
        key = msg.key()
        print(json.dumps({
            "key": None if key is None else key.decode("utf-8"),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "headers": [[k, None if v is None else v.decode("utf-8")] for k, v in (msg.headers() or [])],
            "schema_id": schema_id,
            "value": plain(value),
        }), flush=True)
    consumer.close()


def fail(err):
    # librdkafka reports most errors as transient and retries; an all-brokers-down is not.
    if err.code() == KafkaError._ALL_BROKERS_DOWN:
        raise KafkaException(err)
    print("librdkafka:", err, file=sys.stderr)


if __name__ == "__main__":
    main()
