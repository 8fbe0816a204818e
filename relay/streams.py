"""Translate the ``[[nats.streams]]`` and ``[[nats.consumers]]`` config into nats-py's API types.

The publisher provisions exactly these at start-up (create, or update when they differ).
"""

from __future__ import annotations

from collections.abc import Sequence

from nats.js import api

from relay.config import ConsumerConfig, StreamConfig


def stream_configs(streams: Sequence[StreamConfig]) -> list[api.StreamConfig]:
    return [
        api.StreamConfig(
            name=s.name,
            subjects=list(s.subjects),
            storage=api.StorageType(s.storage),
            retention=api.RetentionPolicy(s.retention),
            max_age=float(s.max_age_secs),
            max_bytes=s.max_bytes,
            max_msg_size=s.max_msg_size,
            discard=api.DiscardPolicy(s.discard),
            num_replicas=s.num_replicas,
            duplicate_window=float(s.duplicate_window_secs),
        )
        for s in streams
    ]


def consumer_configs(consumers: Sequence[ConsumerConfig]) -> list[tuple[str, api.ConsumerConfig]]:
    return [
        (
            c.stream,
            api.ConsumerConfig(
                name=c.name,
                durable_name=c.name if c.durable else None,
                ack_policy=api.AckPolicy(c.ack_policy),
                ack_wait=float(c.ack_wait_secs),
                max_deliver=c.max_deliver,
                deliver_policy=api.DeliverPolicy(c.deliver_policy),
                max_ack_pending=c.max_ack_pending,
                filter_subject=c.filter_subject,
            ),
        )
        for c in consumers
    ]
