"""Tests for the suite's own PostgreSQL server (tests/postgres.py, the fixtures `postgres_cluster`
and `pg_url`): reached on its Unix socket only, a database of each module's own, and its URLs."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import psycopg
import pytest
from postgres import Cluster, socket_url


def test_the_server_answers_on_its_socket_and_listens_on_no_tcp_port(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        listen_addresses, database, server_address = conn.execute(
            "SELECT current_setting('listen_addresses'), current_database(), inet_server_addr()"
        ).fetchone() or (None, None, None)
        (show,) = conn.execute("SHOW listen_addresses").fetchone() or (None,)
    assert listen_addresses == show == ""
    assert database != "postgres"
    assert server_address is None  # NULL on a Unix socket, an address on TCP


def test_the_module_database_starts_empty(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    assert tables == []


def test_databases_are_distinct(postgres_cluster: Cluster) -> None:
    named = f"distinct_{uuid.uuid4().hex[:8]}"
    urls = [postgres_cluster.create_database(), postgres_cluster.create_database(named)]
    names = [psycopg.conninfo.conninfo_to_dict(url)["dbname"] for url in urls]
    try:
        assert names[1] == named
        assert names[0] != names[1]
        with psycopg.connect(urls[0]) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with psycopg.connect(urls[1]) as conn:
            found = conn.execute("SELECT to_regclass('only_here')").fetchone()
        assert found == (None,)
    finally:
        for name in names:
            postgres_cluster.drop_database(str(name))


def test_the_server_clock(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        (now,) = conn.execute("SELECT now()").fetchone() or (None,)
    assert isinstance(now, datetime.datetime)
    assert now.tzinfo is not None
    assert abs(now - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("socket_dir", "dbname"),
    [("/tmp/runjournal-pg-x/socket", "plain"), ("/tmp/a b,c%d?e&f=g/s", "it's/a db?")],
)
def test_a_socket_url_says_what_libpq_reads(socket_dir: str, dbname: str) -> None:
    url = socket_url(Path(socket_dir), dbname)
    assert url.startswith("postgresql://postgres@/")
    assert psycopg.conninfo.conninfo_to_dict(url) == {
        "user": "postgres",
        "dbname": dbname,
        "host": socket_dir,
        "port": "5432",
    }
