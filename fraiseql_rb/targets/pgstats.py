"""PostgreSQL statistics for the database and capacity dashboards (§9.2), as DataFrames.

Each function runs ONE read-only query (its SQL is the constant just above it) and returns
its rows as a frame, columns named even when there are no rows, so a dashboard cell can
plot or tabulate it directly. `source` is a database URL (a read-only session with timeouts
is opened and closed, see `postgres.connect`) or an open connection, to share one session
across a dashboard's queries.

The counters behind them are cumulative since the last statistics reset, and the activity
view shows other roles' sessions only in part unless the role has pg_read_all_stats: what a
dashboard shows is what this role may see.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg
from psycopg.rows import tuple_row

from fraiseql_rb.targets import postgres

Source = str | psycopg.Connection


def _frame(source: Source, query: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run one query and keep the column names even for an empty result."""
    if isinstance(source, str):
        with postgres.connect(source) as conn:
            return _frame(conn, query, params)
    with source.cursor(row_factory=tuple_row) as cur:
        cur.execute(query, params)
        columns = [col.name for col in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def _limit(limit: int | None) -> int | None:
    """LIMIT NULL is LIMIT ALL in PostgreSQL: None means every row."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, not {limit!r}")
    return limit


# pg_database_size needs CONNECT on that database (or pg_read_all_stats); a database this role
# may not size shows NULL instead of failing the whole query.
DATABASE_SIZES_SQL = """
SELECT d.datname AS database,
       CASE WHEN has_database_privilege(d.datname, 'CONNECT')
                 OR pg_has_role('pg_read_all_stats', 'MEMBER')
            THEN pg_database_size(d.datname) END AS size_bytes,
       d.datname = current_database() AS current
FROM pg_database d
WHERE d.datallowconn AND NOT d.datistemplate
ORDER BY size_bytes DESC NULLS LAST, database
"""


def database_sizes(source: Source) -> pd.DataFrame:
    """Size on disk of every (non-template) database: database, size_bytes, current."""
    return _frame(source, DATABASE_SIZES_SQL)


# heap is the main fork; toast_bytes is the rest of pg_table_size (TOAST, free-space and
# visibility maps). reltuples is -1 before the first ANALYZE, shown as NULL.
TABLE_SIZES_SQL = """
SELECT n.nspname AS schema, c.relname AS "table",
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_relation_size(c.oid) AS heap_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       pg_table_size(c.oid) - pg_relation_size(c.oid) AS toast_bytes,
       NULLIF(c.reltuples, -1)::bigint AS rows_estimate
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY total_bytes DESC, schema, "table"
LIMIT %(limit)s
"""


def table_sizes(source: Source, limit: int | None = 20) -> pd.DataFrame:
    """The largest tables by total size (heap + indexes + TOAST): what grows the disk."""
    return _frame(source, TABLE_SIZES_SQL, {"limit": _limit(limit)})


INDEX_SIZES_SQL = """
SELECT s.schemaname AS schema, s.relname AS "table", s.indexrelname AS index,
       pg_relation_size(s.indexrelid) AS size_bytes,
       s.idx_scan AS scans,
       i.indisunique AS "unique", i.indisprimary AS "primary"
FROM pg_stat_user_indexes s
JOIN pg_index i ON i.indexrelid = s.indexrelid
ORDER BY size_bytes DESC, schema, index
LIMIT %(limit)s
"""


def index_sizes(source: Source, limit: int | None = 20) -> pd.DataFrame:
    """The largest indexes, with how often each is scanned (a big index never scanned is a
    candidate to drop, unless it enforces uniqueness)."""
    return _frame(source, INDEX_SIZES_SQL, {"limit": _limit(limit)})


CACHE_HIT_BY_DATABASE_SQL = """
SELECT s.datname AS database, s.blks_hit, s.blks_read,
       s.blks_hit::float8 / NULLIF(s.blks_hit + s.blks_read, 0) AS hit_ratio,
       s.datname = current_database() AS current,
       s.stats_reset
FROM pg_stat_database s
JOIN pg_database d ON d.datname = s.datname
WHERE NOT d.datistemplate
ORDER BY s.blks_hit + s.blks_read DESC, database
"""


def cache_hit_by_database(source: Source) -> pd.DataFrame:
    """Shared-buffer hit ratio per database since the last stats reset (NULL before any
    read); below ~0.99 on an OLTP database the working set no longer fits in memory."""
    return _frame(source, CACHE_HIT_BY_DATABASE_SQL)


CACHE_HIT_BY_TABLE_SQL = """
SELECT schemaname AS schema, relname AS "table",
       heap_blks_hit, heap_blks_read,
       coalesce(idx_blks_hit, 0) AS idx_blks_hit, coalesce(idx_blks_read, 0) AS idx_blks_read,
       (heap_blks_hit + coalesce(idx_blks_hit, 0))::float8
         / NULLIF(heap_blks_hit + heap_blks_read
                  + coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0), 0) AS hit_ratio,
       heap_blks_hit::float8 / NULLIF(heap_blks_hit + heap_blks_read, 0) AS heap_hit_ratio,
       idx_blks_hit::float8 / NULLIF(idx_blks_hit + idx_blks_read, 0) AS index_hit_ratio
FROM pg_statio_user_tables
ORDER BY heap_blks_read + coalesce(idx_blks_read, 0) DESC,
         heap_blks_hit + coalesce(idx_blks_hit, 0) DESC, schema, "table"
LIMIT %(limit)s
"""


def cache_hit_by_table(source: Source, limit: int | None = 20) -> pd.DataFrame:
    """Hit ratio per table (heap and indexes), the tables reading most from disk first."""
    return _frame(source, CACHE_HIT_BY_TABLE_SQL, {"limit": _limit(limit)})


VACUUM_STATS_SQL = """
SELECT schemaname AS schema, relname AS "table",
       n_live_tup AS live_tuples, n_dead_tup AS dead_tuples,
       n_dead_tup::float8 / NULLIF(n_live_tup + n_dead_tup, 0) AS dead_ratio,
       n_mod_since_analyze AS modified_since_analyze,
       GREATEST(last_vacuum, last_autovacuum) AS last_vacuumed,
       GREATEST(last_analyze, last_autoanalyze) AS last_analyzed,
       last_vacuum, last_autovacuum, last_analyze, last_autoanalyze,
       vacuum_count, autovacuum_count, analyze_count, autoanalyze_count
FROM pg_stat_user_tables
ORDER BY n_dead_tup DESC, schema, "table"
LIMIT %(limit)s
"""


def vacuum_stats(source: Source, limit: int | None = 20) -> pd.DataFrame:
    """Dead tuples and the last (auto)vacuum and analyze per table, most dead tuples first:
    bloat and stale planner statistics both start here."""
    return _frame(source, VACUUM_STATS_SQL, {"limit": _limit(limit)})


# Client backends only: they are what max_connections limits. Without pg_read_all_stats a
# session of another role shows only its pid, user and database (backend_type, state and
# client address are NULL): such a row with a user and a database is counted as a client
# (background workers have neither; a rare parallel worker may slip in) with state
# `not visible`. Unix-socket clients are `local`.
CONNECTIONS_SQL = """
SELECT coalesce(a.state, 'not visible') AS state,
       coalesce(NULLIF(a.application_name, ''), '(none)') AS application,
       CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr)
            WHEN a.backend_type IS NULL THEN 'not visible' ELSE 'local' END AS client_addr,
       a.usename AS "user", a.datname AS database,
       count(*) AS connections,
       max(EXTRACT(EPOCH FROM now() - a.state_change))::float8 AS longest_in_state_s,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved_connections
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
   OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL AND a.datname IS NOT NULL)
GROUP BY 1, 2, 3, 4, 5
ORDER BY connections DESC, state, application, client_addr
"""


def connections(source: Source) -> pd.DataFrame:
    """Client connections grouped by state, application, client address, user and database,
    each row with `max_connections` so usage against capacity is one division away."""
    return _frame(source, CONNECTIONS_SQL)


# check_postgres 2.25's `bloat` estimate, one row per table and one per index: the size the
# rows need from pg_stats' average widths (`expected_pages`) against `relpages`. It rests on
# fresh statistics (ANALYZE); `ratio` is pages / expected pages (check_postgres' tbloat and
# ibloat, 0 when there is nothing to compare) and `wasted_bytes` the pages beyond it.
BLOAT_SQL = """
WITH constants AS (
    SELECT current_setting('block_size')::numeric AS bs, 23 AS hdr,
           CASE WHEN version() ~ 'mingw32' OR version() ~ '64-bit' THEN 8 ELSE 4 END AS ma
), widths AS (
    SELECT ns.nspname, tbl.relname, c.hdr, c.ma, c.bs,
           SUM((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 2048)) AS datawidth,
           MAX(coalesce(s.null_frac, 0)) AS maxfracsum,
           c.hdr + (SELECT 1 + count(*) / 8 FROM pg_stats s2
                    WHERE s2.null_frac <> 0 AND s2.schemaname = ns.nspname
                      AND s2.tablename = tbl.relname) AS nullhdr
    FROM pg_attribute att
    JOIN pg_class tbl ON att.attrelid = tbl.oid
    JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
    LEFT JOIN pg_stats s ON s.schemaname = ns.nspname AND s.tablename = tbl.relname
                        AND s.inherited = false AND s.attname = att.attname
    CROSS JOIN constants c
    WHERE att.attnum > 0 AND tbl.relkind = 'r'
    GROUP BY 1, 2, 3, 4, 5
), headers AS (
    SELECT nspname, relname, ma, bs,
           (datawidth + (hdr + ma - (CASE WHEN mod(hdr, ma) = 0 THEN ma
                                          ELSE mod(hdr, ma) END)))::numeric AS datahdr,
           (maxfracsum * (nullhdr + ma - (CASE WHEN mod(nullhdr, ma) = 0 THEN ma
                                               ELSE mod(nullhdr, ma) END))) AS nullhdr2
    FROM widths
), rels AS (
    SELECT nn.nspname AS schema, cc.relname AS "table", coalesce(h.bs, 0) AS bs,
           cc.reltuples, cc.relpages,
           coalesce(CEIL((cc.reltuples * ((h.datahdr + h.ma - (CASE WHEN mod(h.datahdr, h.ma) = 0
               THEN h.ma ELSE mod(h.datahdr, h.ma) END)) + h.nullhdr2 + 4))
               / (h.bs - 20::float)), 0) AS otta,
           c2.relname AS index, c2.reltuples AS ituples, c2.relpages AS ipages,
           coalesce(CEIL((c2.reltuples * (h.datahdr - 12)) / (h.bs - 20::float)), 0) AS iotta
    FROM pg_class cc
    JOIN pg_namespace nn ON cc.relnamespace = nn.oid AND nn.nspname <> 'information_schema'
    JOIN headers h ON h.relname = cc.relname AND h.nspname = nn.nspname
    LEFT JOIN pg_index i ON i.indrelid = cc.oid
    LEFT JOIN pg_class c2 ON c2.oid = i.indexrelid
    WHERE cc.relkind = 'r'
), estimates AS (
    SELECT DISTINCT 'table' AS kind, schema, "table", NULL::name AS index,
           greatest(reltuples, 0)::bigint AS tuples, relpages::bigint AS pages,
           otta::bigint AS expected_pages, bs * relpages AS size_bytes,
           CASE WHEN otta = 0 OR relpages = 0 OR relpages = otta THEN 0.0
                ELSE relpages / otta::numeric END AS ratio,
           CASE WHEN relpages < otta THEN 0 ELSE bs * (relpages - otta) END AS wasted_bytes
    FROM rels
    UNION ALL
    SELECT 'index', schema, "table", index, greatest(ituples, 0)::bigint, ipages::bigint,
           iotta::bigint, bs * ipages,
           CASE WHEN iotta = 0 OR ipages = 0 OR ipages = iotta THEN 0.0
                ELSE ipages / iotta::numeric END,
           CASE WHEN ipages < iotta THEN 0 ELSE bs * (ipages - iotta) END
    FROM rels WHERE index IS NOT NULL
)
SELECT kind, schema, "table", index, tuples, pages, expected_pages, size_bytes::bigint,
       round(ratio, 1)::float8 AS ratio, wasted_bytes::bigint
FROM estimates
ORDER BY wasted_bytes DESC, schema, "table", index NULLS FIRST
LIMIT %(limit)s
"""


def bloat(source: Source, limit: int | None = 20) -> pd.DataFrame:
    """Estimated bloat of tables and indexes, most wasted bytes first (check_postgres'
    statistics-based estimate: run ANALYZE first, or stale statistics mislead it)."""
    return _frame(source, BLOAT_SQL, {"limit": _limit(limit)})


# Per user table: autovacuum switched off in its reloptions, its dead-tuple counters, when it
# was vacuumed, and when this database's statistics were last reset (pg_stat_reset() zeroes
# n_dead_tup, so a bloated table can show none).
VACUUM_SETTINGS_SQL = """
SELECT s.schemaname AS schema, s.relname AS "table",
       coalesce(lower(o.value) NOT IN ('false', 'off', 'no', '0'), true)
           AS autovacuum_enabled,
       s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
       GREATEST(s.last_vacuum, s.last_autovacuum) AS last_vacuumed,
       s.vacuum_count + s.autovacuum_count AS vacuums,
       d.stats_reset
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
LEFT JOIN LATERAL (SELECT split_part(opt, '=', 2) AS value
                   FROM unnest(c.reloptions) AS opt
                   WHERE split_part(opt, '=', 1) = 'autovacuum_enabled') o ON true
LEFT JOIN pg_stat_database d ON d.datname = current_database()
ORDER BY autovacuum_enabled, s.n_dead_tup DESC, schema, "table"
"""


def vacuum_settings(source: Source) -> pd.DataFrame:
    """Each user table's autovacuum switch, dead tuples, last vacuum and the stats reset."""
    return _frame(source, VACUUM_SETTINGS_SQL)


# Per user table, for database-maintenance (§7.2): its owner, whether this role may VACUUM,
# ANALYZE and REINDEX it (until PostgreSQL 17: a superuser, the table's owner or the
# database's owner; from 17 also the MAINTAIN privilege), and how old its oldest unfrozen
# transaction ID is against autovacuum_freeze_max_age (past it, autovacuum forces a
# wraparound vacuum). CASE keeps PostgreSQL < 17 from parsing the MAINTAIN privilege.
TABLE_MAINTENANCE_SQL = """
SELECT n.nspname AS schema, c.relname AS "table", c.relkind::text AS kind,
       pg_get_userbyid(c.relowner) AS owner,
       pg_has_role(c.relowner, 'USAGE')
         OR CASE WHEN current_setting('server_version_num')::int >= 170000
                 THEN has_table_privilege(c.oid, 'MAINTAIN')
                 ELSE pg_has_role((SELECT datdba FROM pg_database
                                   WHERE datname = current_database()), 'USAGE') END
           AS may_maintain,
       CASE WHEN c.relkind IN ('r', 'm') THEN age(c.relfrozenxid) END AS xid_age,
       current_setting('autovacuum_freeze_max_age')::bigint AS freeze_max_age,
       current_setting('autovacuum')::bool AS autovacuum_on
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
ORDER BY schema, "table"
"""


def table_maintenance(source: Source) -> pd.DataFrame:
    """Who may maintain each user table, and its transaction-ID age (wraparound)."""
    return _frame(source, TABLE_MAINTENANCE_SQL)


# Table-level locks other sessions hold or wait for on user tables, with the session's state
# and transaction age (NULL for a session of another role without pg_read_all_stats; pg_locks
# itself is visible to every role). VACUUM and ANALYZE take SHARE UPDATE EXCLUSIVE, VACUUM
# FULL ACCESS EXCLUSIVE: whether one of these conflicts is decided by the caller.
RELATION_LOCKS_SQL = """
SELECT l.pid, n.nspname AS schema, c.relname AS "table", l.mode, l.granted,
       coalesce(a.state, 'not visible') AS state, a.usename AS "user",
       a.application_name AS application,
       EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS transaction_age_s,
       EXTRACT(EPOCH FROM now() - a.state_change)::float8 AS state_age_s,
       left(a.query, 200) AS query
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid IS DISTINCT FROM pg_backend_pid()
  AND c.relkind IN ('r', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
ORDER BY schema, "table", l.granted DESC, l.pid
"""


def relation_locks(source: Source) -> pd.DataFrame:
    """Locks other sessions hold (granted) or wait for on user tables."""
    return _frame(source, RELATION_LOCKS_SQL)


# Every other session of this database with a transaction open: how long, in which state, and
# whether it holds back the xmin horizon (VACUUM cannot remove rows deleted after its snapshot
# was taken; REINDEX INDEX CONCURRENTLY waits for every such snapshot older than itself).
# A session of another role without pg_read_all_stats shows as `not visible`, its times NULL.
OPEN_TRANSACTIONS_SQL = """
SELECT pid, usename AS "user", application_name AS application,
       CASE WHEN query = '<insufficient privilege>' THEN 'not visible'
            ELSE coalesce(state, 'not visible') END AS state,
       EXTRACT(EPOCH FROM now() - xact_start)::float8 AS transaction_age_s,
       EXTRACT(EPOCH FROM now() - state_change)::float8 AS state_age_s,
       backend_xmin IS NOT NULL AS holds_xmin, age(backend_xmin)::bigint AS xmin_age,
       left(query, 200) AS query
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND coalesce(datname, current_database()) = current_database()
  AND (xact_start IS NOT NULL OR query = '<insufficient privilege>')
  AND coalesce(backend_type, 'client backend') = 'client backend'
ORDER BY xact_start NULLS LAST, pid
"""


def open_transactions(source: Source) -> pd.DataFrame:
    """Other client sessions inside a transaction (or not visible to this role), oldest
    first."""
    return _frame(source, OPEN_TRANSACTIONS_SQL)


# Where the cluster keeps its files (pg_settings hides data_directory from a role without
# pg_read_all_settings: then NULL), the port to confirm a local data directory belongs to
# this server (postmaster.pid), and how many tablespaces live elsewhere.
DATA_DIRECTORY_SQL = """
SELECT (SELECT setting FROM pg_settings WHERE name = 'data_directory') AS data_directory,
       current_setting('port')::int AS port,
       (SELECT count(*) FROM pg_tablespace
        WHERE spcname NOT IN ('pg_default', 'pg_global'))::int AS other_tablespaces
"""


def data_directory(source: Source) -> pd.DataFrame:
    """One row: the data directory (None when hidden from this role), port, tablespaces."""
    return _frame(source, DATA_DIRECTORY_SQL)


# What else holds back the xmin horizon, so that VACUUM keeps rows other transactions deleted:
# replication slots (a standby's hot_standby_feedback, logical decoding) and prepared
# transactions. Ages are in transactions (age(xid)), as autovacuum counts them.
XMIN_HOLDERS_SQL = """
SELECT 'replication slot' AS kind, slot_name::text AS name,
       age(coalesce(xmin, catalog_xmin))::bigint AS xmin_age, active,
       NULL::timestamptz AS since
FROM pg_replication_slots
WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL
UNION ALL
SELECT 'prepared transaction', gid, age(transaction)::bigint, NULL, prepared
FROM pg_prepared_xacts
WHERE database = current_database()
ORDER BY xmin_age DESC NULLS LAST
"""


def xmin_holders(source: Source) -> pd.DataFrame:
    """Replication slots and prepared transactions holding back VACUUM's cleanup."""
    return _frame(source, XMIN_HOLDERS_SQL)


# Indexes left invalid, e.g. the `<index>_ccnew` copy a REINDEX INDEX CONCURRENTLY leaves
# behind when it is cancelled half-way (lock_timeout, statement_timeout): it costs every write
# and must be dropped (DROP INDEX CONCURRENTLY) before the reindex is retried.
INVALID_INDEXES_SQL = """
SELECT n.nspname AS schema, t.relname AS "table", c.relname AS index,
       pg_relation_size(c.oid) AS size_bytes
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
ORDER BY schema, "table", index
"""


def invalid_indexes(source: Source) -> pd.DataFrame:
    """Invalid indexes on user tables (a cancelled concurrent build or reindex)."""
    return _frame(source, INVALID_INDEXES_SQL)
