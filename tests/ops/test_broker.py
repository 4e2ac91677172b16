"""The broker transport (config/broker.py) publishes without building a Redis client for
each command, and builds a new one when kombu drops its pool."""

import secrets

from kombu import Connection

from tests.conftest import TEST_REDIS_URL


def test_a_channel_publishes_through_one_client_until_its_pool_is_dropped(real_stack):
    queue = "broker-test-" + secrets.token_hex(4)
    with Connection(TEST_REDIS_URL, transport="config.broker:Transport") as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second

        channel._put(queue, {"body": "one"})
        channel._put(queue, {"body": "two"})
        kept = channel._create_client()
        channel._disconnect_pools()  # as kombu does after a lost connection or a fork
        channel._put(queue, {"body": "three"})
        renewed = channel._create_client()

        assert renewed is not kept and renewed.connection_pool is channel.pool
        assert [channel._get(queue)["body"] for _ in range(3)] == ["one", "two", "three"]
        channel.client.delete(queue)
