"""The Celery broker's transport: kombu's Redis transport, surviving a broker restart, and
publishing without building a Redis client each time.

When the broker connection drops while the worker holds unacknowledged messages (a task
waiting for its countdown: a hub delivery's or an agent run's retry; a prefetched task),
kombu closes the channel and tries to put those messages back on their queue
(``QoS.restore_unacked``). By then Celery has released the connection, so kombu 5.7 fails
building a Redis client for it (``AttributeError: 'NoneType' object has no attribute
'hostname'``) and Celery treats that as an "Unrecoverable error": the worker exits, and
nothing restarts it. Reproduced with one task sent with ``countdown=120`` and the Redis
server restarted (tests/e2e/test_faults.py).

Here that restore is skipped when the channel has no connection left to do it with (Redis
is unreachable at that moment anyway), with a warning, and the worker reconnects as it does
for any other broker loss. Nothing accepted is lost by that: if Redis kept its data, the
messages stay in kombu's ``unacked`` hash and come back through ``restore_visible`` after
the visibility timeout; if it did not (no persistence), they were gone with it either way,
and the database's sweeps queue again what they were for (``chat.tasks.sweep_stuck_runs``
and ``relay_unsent_runs`` for runs, ``hub.tasks.sweep_deliveries`` for deliveries).

kombu builds a new ``redis.Redis`` for every command it sends outside the worker's event
loop (``Channel.conn_or_acquire``): every task published from a web process (a run handed
to a worker, a delivery routed). Building one costs more than the command (~210 us against
~160 us for an LPUSH, on the slow night of docs/benchmarks.md's "Fifth round"; the web
process's profile of the 202 path showed it). The channel keeps the one it built and hands
it out again while its connection pool is the same; a pool kombu drops (a lost connection,
a fork) gets a new client. A ``redis.Redis`` is safe to share between threads (each
command takes a connection from the pool).
"""

import logging

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client=None):
        connection = self.channel.connection
        if client is None and (connection is None or connection.client is None):
            logger.warning(
                "broker connection already released: %d unacknowledged message(s) left to the "
                "visibility timeout and the sweeps",
                len(self._delivered),
            )
            self._delivered.clear()
            return None
        return super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client: tuple | None = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        kept = self._sync_client
        if kept is None or kept[0] is not pool:
            kept = self._sync_client = (pool, super()._create_client())
        return kept[1]


class Transport(kombu_redis.Transport):
    Channel = Channel
