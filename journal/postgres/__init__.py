"""The journal on PostgreSQL, for teams running workers on many hosts: `PostgresJournal`.

An optional part: it needs psycopg (`pip install 'runjournal[postgres]'`), imported only when a
journal names a `postgresql://` URL (journal/stores.py).
"""

from runjournal.journal.postgres.connection import KILL_CHANNEL
from runjournal.journal.postgres.store import PostgresJournal

__all__ = ["KILL_CHANNEL", "PostgresJournal"]
