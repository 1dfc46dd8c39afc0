"""The throwaway servers the relay-at-scale tests stand on (``tests/servers.py``): a real
PostgreSQL and a real redis-server start, answer, survive a restart, and go away."""

from __future__ import annotations

import psycopg
import redis

from tests.servers import throwaway_postgres, throwaway_redis


def test_a_throwaway_postgres_answers_keeps_what_it_committed_across_a_crash() -> None:
    with throwaway_postgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n integer PRIMARY KEY)")
            conn.execute("INSERT INTO kept VALUES (1), (2)")
        other = pg.createdb("second")
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("second",)
        pg.stop("immediate")  # a crash
        pg.start()
        with psycopg.connect(pg.tcp_dsn()) as conn:
            assert conn.execute("SELECT n FROM kept ORDER BY n").fetchall() == [(1,), (2,)]


def test_a_throwaway_redis_answers_and_can_be_stopped_and_started() -> None:
    with throwaway_redis() as r:
        client = redis.Redis.from_url(r.url)
        assert client.ping() is True
        client.xadd("net", {"entry": b"\x01\x02"})
        assert client.xlen("net") == 1
        r.stop()
        r.start()  # no persistence: a bus comes back empty
        client = redis.Redis.from_url(r.url)
        assert client.xlen("net") == 0
