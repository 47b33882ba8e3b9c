/*
 * bv_audit 0.3.0 -> 0.4.0: WAL mode (issue #19, ADR 0013).
 *
 * A fresh install of 0.4.0 runs bv_audit--0.1.0.sql and the upgrade scripts
 * in order.  The WAL-mode blocks are marked "#19"; fixes of other issues go
 * in blocks of their own.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.4.0'" to load this file. \quit

-- ===========================================================================
-- #19 WAL mode, part 1: state.
--
-- tracked.mode says how a table is recorded; [wal_lsn, wal_until) is the
-- window of commit LSNs whose changes the WAL worker records for it.
-- wal_progress is the worker's applied position, written in the same
-- transaction as the records it covers; wal_quarantine keeps transactions
-- the worker could not record.
-- ===========================================================================

ALTER TABLE bv_audit.tracked
    ADD COLUMN mode text NOT NULL DEFAULT 'trigger' CHECK (mode IN ('trigger', 'wal')),
    ADD COLUMN wal_lsn pg_lsn,
    ADD COLUMN wal_until pg_lsn;
COMMENT ON COLUMN bv_audit.tracked.mode IS
'How changes are recorded: trigger (C row triggers, in the writer''s transaction) or wal (the bv_audit WAL worker, from the WAL, after the commit). Set with enable(..., mode => ...).';
COMMENT ON COLUMN bv_audit.tracked.wal_lsn IS
'WAL mode: changes of transactions whose commit record starts at or after this position are recorded by the WAL worker (the switch to WAL mode).';
COMMENT ON COLUMN bv_audit.tracked.wal_until IS
'WAL mode: changes committed from this position on are not recorded by the WAL worker (switch back to trigger mode, disable() or DROP TABLE); NULL while in WAL mode.';

CREATE TABLE bv_audit.wal_progress (
    slot_name      name PRIMARY KEY,
    applied_lsn    pg_lsn NOT NULL DEFAULT '0/0',
    applied_xmin   xid8,
    ts_floor       timestamptz,
    applied_at     timestamptz,
    last_commit_ts timestamptz,
    last_lag_ms    double precision,
    records        bigint NOT NULL DEFAULT 0,
    quarantined    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE bv_audit.wal_progress IS
'The WAL worker''s applied position: every transaction whose commit record starts before applied_lsn is recorded; every transaction id below applied_xmin had committed before it. Written with the records it covers.';
REVOKE ALL ON bv_audit.wal_progress FROM PUBLIC;
GRANT SELECT ON bv_audit.wal_progress TO bv_admin;

CREATE TABLE bv_audit.wal_quarantine (
    id             bigserial PRIMARY KEY,
    commit_lsn     pg_lsn NOT NULL,
    xid            bigint,
    error          text NOT NULL,
    changes        jsonb,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bv_audit.wal_quarantine IS
'Transactions of WAL-mode tables the WAL worker could not record (the error, and the decoded changes as wal2json gave them); the worker went on after them.';
REVOKE ALL ON bv_audit.wal_quarantine FROM PUBLIC;
GRANT SELECT ON bv_audit.wal_quarantine TO bv_admin;

-- ===========================================================================
-- #19 WAL mode, part 2: the C side (extensions/bv_audit/wal_*.c).
-- ===========================================================================

CREATE FUNCTION bv_audit.wal_marker_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bv_audit_wal_marker_trigger'
LANGUAGE C;
COMMENT ON FUNCTION bv_audit.wal_marker_trigger() IS
'BEFORE TRUNCATE trigger bv_audit_wal of a WAL-mode table: marks the table for the writer''s hooks and puts the TRUNCATE''s actor into the WAL. Installed by enable(..., mode => ''wal'').';

CREATE FUNCTION bv_audit._wal_flush()
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'bv_audit_wal_flush'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION bv_audit._wal_flush() IS
'Internal: the current WAL insert position, after flushing the WAL up to it.';
REVOKE ALL ON FUNCTION bv_audit._wal_flush() FROM PUBLIC;

CREATE FUNCTION bv_audit._wal_apply(slot name, max_changes integer, force boolean,
                                    OUT records bigint, OUT applied pg_lsn, OUT complete boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_audit_wal_apply'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION bv_audit._wal_apply(name, integer, boolean) IS
'Internal, called by the WAL worker: records one batch of decoded changes of WAL-mode tables and stores the applied position with them.';
REVOKE ALL ON FUNCTION bv_audit._wal_apply(name, integer, boolean) FROM PUBLIC;

-- ===========================================================================
-- #19 WAL mode, part 3: the worker's SQL helpers.
-- ===========================================================================

-- Step 1 of a batch: what the batch may claim once it is done.  In this
-- order: the oldest start of the running transactions (the seal floor),
-- the xmin of a fresh snapshot (every id below it has ended), then the WAL
-- position L, flushed (every commit of those ids lies before it).
CREATE FUNCTION bv_audit._wal_begin(slot name, OUT ts_floor timestamptz, OUT xmin xid8,
                                    OUT applied pg_lsn, OUT upto pg_lsn, OUT any_wal boolean)
RETURNS record
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    untracked boolean;
    prepared boolean;
BEGIN
    SELECT p.applied_lsn INTO applied FROM bv_audit.wal_progress p WHERE p.slot_name = slot;
    IF NOT FOUND THEN
        INSERT INTO bv_audit.wal_progress (slot_name) VALUES (slot) ON CONFLICT DO NOTHING;
        applied := '0/0';
    END IF;
    -- The slot never returns what it confirmed: start there at least.
    SELECT greatest(applied, s.confirmed_flush_lsn) INTO applied
      FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = slot;
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    SELECT least(min(a.xact_start), clock_timestamp()) - interval '1 minute',
           coalesce(bool_or(a.state = 'disabled'), false)
      INTO ts_floor, untracked FROM pg_catalog.pg_stat_activity a;
    prepared := EXISTS (SELECT FROM pg_catalog.pg_prepared_xacts p WHERE p.database = current_database());
    IF untracked OR prepared THEN
        ts_floor := NULL;
    END IF;
    xmin := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    upto := bv_audit._wal_flush();
    any_wal := EXISTS (SELECT FROM bv_audit.tracked t
                        WHERE t.wal_lsn IS NOT NULL AND (t.wal_until IS NULL OR t.wal_until > applied));
END
$$;
COMMENT ON FUNCTION bv_audit._wal_begin(name) IS
'Internal, step 1 of a WAL worker batch: the seal floor, the snapshot xmin and the flushed WAL position the batch may claim, in that order, and whether any table is in WAL mode.';
REVOKE ALL ON FUNCTION bv_audit._wal_begin(name) FROM PUBLIC;

-- Step 2: the decoded changes to record, in order.  kind: B (begin: xid,
-- commit time), M (context message: content), I/U/D/T (a change of a
-- WAL-mode table inside its window: image by audit column, old and new
-- key), C (commit: commit_lsn), Z (the peek stopped at max_changes).
-- Transactions whose commit record starts before "applied" were recorded
-- already and are left out.  Values are wal2json's text; bytea (which
-- wal2json writes as bare hex) gets its \x.
CREATE FUNCTION bv_audit._wal_changes(slot name, upto pg_lsn, max_changes integer, applied pg_lsn)
RETURNS TABLE (kind text, commit_lsn pg_lsn, xid bigint, tracked_id integer, img jsonb,
               oldkey jsonb, newkey jsonb, keychg boolean, content text, commit_ts timestamptz)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 3
SET bytea_output = 'hex'
AS $$
WITH raw AS (
    SELECT c.data::jsonb AS j, row_number() OVER () AS ord
      FROM pg_catalog.pg_logical_slot_peek_changes(slot, upto, max_changes,
               'format-version', '2', 'include-xids', '1', 'include-timestamp', '1',
               'include-lsn', '1', 'include-column-positions', '1', 'include-types', '0',
               'include-transaction', '1', 'filter-tables', 'bv_audit.*',
               'add-msg-prefixes', 'bv_audit') c
), tx AS (
    SELECT r.ord, r.j, r.j ->> 'action' AS action,
           max(CASE WHEN r.j ->> 'action' = 'B' THEN (r.j ->> 'lsn')::pg_lsn END)
               OVER (ORDER BY r.ord) AS clsn
      FROM raw r
), wt AS (
    -- The tables in (or leaving) WAL mode, each with its column map, once:
    -- attnum (as text) -> audit column, and the attnums of bytea columns.
    SELECT t.id AS tid, t.source_schema, t.source_table, t.wal_lsn, t.wal_until, t.pk_columns,
           coalesce(m.colmap, '{}') AS colmap, coalesce(m.byteas, '{}') AS byteas
      FROM bv_audit.tracked t
      LEFT JOIN LATERAL (
          SELECT jsonb_object_agg(c.src_attnum::text, c.audit_column) AS colmap,
                 array_agg(c.src_attnum::text) FILTER (WHERE aa.atttypid = 'bytea'::regtype) AS byteas
            FROM bv_audit.columns c
            JOIN pg_catalog.pg_attribute aa
              ON aa.attrelid = t.audit_relid AND aa.attname = c.audit_column AND NOT aa.attisdropped
           WHERE c.tracked_id = t.id AND c.src_attnum > 0) m ON true
     WHERE t.wal_lsn IS NOT NULL AND (t.wal_until IS NULL OR t.wal_until > applied)
), ch AS (
    SELECT x.ord, x.action, x.clsn, x.j, w.tid, w.pk_columns,
           CASE WHEN x.action IN ('I', 'U') THEN
               (SELECT coalesce(jsonb_object_agg(w.colmap ->> (e ->> 'position'),
                          CASE WHEN (e ->> 'position') = ANY (w.byteas) AND jsonb_typeof(e -> 'value') = 'string'
                               THEN to_jsonb('\x' || (e ->> 'value')) ELSE e -> 'value' END), '{}')
                  FROM jsonb_array_elements(x.j -> 'columns') e
                 WHERE w.colmap ? (e ->> 'position'))
           END AS img
      FROM tx x
      LEFT JOIN wt w
        ON x.action IN ('I', 'U', 'D', 'T')
       AND w.source_schema = x.j ->> 'schema' AND w.source_table = x.j ->> 'table'
       AND x.clsn >= w.wal_lsn AND (w.wal_until IS NULL OR x.clsn < w.wal_until)
     WHERE x.clsn >= applied AND (x.action IN ('B', 'C', 'M') OR w.tid IS NOT NULL)
), keys AS (
    SELECT ch.*,
           CASE WHEN ch.action IN ('U', 'D') THEN
               (SELECT jsonb_object_agg(e ->> 'name', e -> 'value')
                  FROM jsonb_array_elements(ch.j -> 'identity') e
                 WHERE e ->> 'name' = ANY (ch.pk_columns))
           END AS ok,
           CASE WHEN ch.action IN ('I', 'U') THEN
               (SELECT jsonb_object_agg(k, ch.img -> k) FROM unnest(ch.pk_columns::text[]) k)
           END AS nk
      FROM ch
)
SELECT z.kind, z.commit_lsn, z.xid, z.tracked_id, z.img, z.oldkey, z.newkey, z.keychg, z.content, z.commit_ts
  FROM (
    SELECT k.ord, k.action AS kind, k.clsn AS commit_lsn, (k.j ->> 'xid')::bigint AS xid, k.tid AS tracked_id,
           k.img,
           CASE WHEN k.action IN ('U', 'D') THEN coalesce(k.ok, k.nk) END AS oldkey,
           k.nk AS newkey,
           k.action = 'U' AND k.ok IS NOT NULL AND k.ok IS DISTINCT FROM k.nk AS keychg,
           CASE WHEN k.action = 'M' THEN k.j ->> 'content' END AS content,
           CASE WHEN k.action = 'B' THEN (k.j ->> 'timestamp')::timestamptz END AS commit_ts
      FROM keys k
    UNION ALL
    SELECT 9223372036854775807, 'Z', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
     WHERE (SELECT count(*) FROM raw) >= max_changes
  ) z
 ORDER BY z.ord
$$;
COMMENT ON FUNCTION bv_audit._wal_changes(name, pg_lsn, integer, pg_lsn) IS
'Internal, step 2 of a WAL worker batch: the decoded changes of WAL-mode tables (peeked with wal2json, never consumed), transactions below the applied position left out.';
REVOKE ALL ON FUNCTION bv_audit._wal_changes(name, pg_lsn, integer, pg_lsn) FROM PUBLIC;

-- The statements the worker prepares for one audit table:
--   lookup   $1 key (jsonb by key column) -> to_jsonb of the key's last record
--   ins      $1 op, $2 xid8, $3 actor, $4 audit_ts, $5 app, $6 client,
--            $7 trace, $8 audit_changed, $9 last record (jsonb), $10 image
--            (jsonb: the record is $9 overlaid by $10), $11 compute
--            audit_changed between $9 and the record instead of $8
--   changed  $1 last record, $2 image -> the names of the columns that differ
-- Columns are compared as to_jsonb of the audit table's row type, on both
-- sides, over the mirrored columns the table has now, in attnum order.
CREATE FUNCTION bv_audit._wal_sql(tid integer, OUT lookup text, OUT ins text, OUT changed text)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
    cond text;
    cols text;
    rcols text;
    live text[];
    diff text;
BEGIN
    SELECT * INTO STRICT t FROM bv_audit.tracked tr WHERE tr.id = tid;
    SELECT string_agg(format('a.%I = ($1 ->> %L)::%s', p.col, p.col,
                             pg_catalog.format_type(aa.atttypid, aa.atttypmod)), ' AND ' ORDER BY p.ord)
      INTO cond
      FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
      JOIN pg_catalog.pg_attribute aa
        ON aa.attrelid = t.audit_relid AND aa.attname = p.col AND NOT aa.attisdropped;
    SELECT string_agg(format(', %I', c.audit_column), '' ORDER BY c.src_attnum),
           string_agg(format(', r.%I', c.audit_column), '' ORDER BY c.src_attnum),
           array_agg(c.audit_column::text ORDER BY c.src_attnum)
      INTO cols, rcols, live
      FROM bv_audit.columns c
     WHERE c.tracked_id = t.id AND c.src_attnum > 0
       AND (t.relid IS NULL
            OR EXISTS (SELECT FROM pg_catalog.pg_attribute att
                        WHERE att.attrelid = t.relid AND att.attnum = c.src_attnum AND NOT att.attisdropped));
    diff := format('ARRAY(SELECT l.n FROM pg_catalog.unnest(%L::text[]) WITH ORDINALITY AS l(n, o) '
                   'WHERE (x.rj -> l.n) IS DISTINCT FROM (%%s -> l.n) ORDER BY l.o)',
                   coalesce(live, '{}'));
    lookup := format('SELECT pg_catalog.to_jsonb(a.*) FROM bv_audit.%I a WHERE %s ORDER BY a.audit_id DESC LIMIT 1',
                     t.audit_table, coalesce(cond, 'false'));
    ins := format('INSERT INTO bv_audit.%I (audit_op, audit_xid, audit_actor, audit_ts, audit_app, '
                  'audit_client, audit_trace, audit_changed%s) '
                  'SELECT $1, $2, $3, $4, $5, $6, $7, CASE WHEN $11 THEN %s ELSE $8 END%s '
                  'FROM pg_catalog.jsonb_populate_record(NULL::bv_audit.%I, '
                  'coalesce($9, ''{}''::jsonb) || coalesce($10, ''{}''::jsonb)) AS r '
                  'CROSS JOIN LATERAL (SELECT CASE WHEN $11 THEN pg_catalog.to_jsonb(r.*) END AS rj) AS x',
                  t.audit_table, coalesce(cols, ''), format(diff, '$9'), coalesce(rcols, ''), t.audit_table);
    changed := format('SELECT %s FROM pg_catalog.jsonb_populate_record(NULL::bv_audit.%I, '
                      'coalesce($1, ''{}''::jsonb) || coalesce($2, ''{}''::jsonb)) AS r '
                      'CROSS JOIN LATERAL (SELECT pg_catalog.to_jsonb(r.*) AS rj) AS x',
                      format(diff, '$1'), t.audit_table);
END
$$;
COMMENT ON FUNCTION bv_audit._wal_sql(integer) IS
'Internal: the statements the WAL worker prepares for an audit table (last record of a key, insert, changed columns).';
REVOKE ALL ON FUNCTION bv_audit._wal_sql(integer) FROM PUBLIC;

-- Step 4: the applied position, in the transaction of the records.
CREATE FUNCTION bv_audit._wal_end(slot name, pos pg_lsn, complete boolean, new_xmin xid8,
                                  new_floor timestamptz, last_ts timestamptz, n bigint)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE bv_audit.wal_progress p
       SET applied_lsn = greatest(p.applied_lsn, pos),
           applied_xmin = CASE WHEN complete THEN new_xmin ELSE p.applied_xmin END,
           ts_floor = CASE WHEN complete THEN new_floor ELSE p.ts_floor END,
           applied_at = clock_timestamp(),
           last_commit_ts = coalesce(last_ts, p.last_commit_ts),
           -- How long after its commit the batch's last transaction was recorded.
           last_lag_ms = CASE WHEN n > 0 AND last_ts IS NOT NULL
                              THEN extract(epoch FROM clock_timestamp() - last_ts) * 1000
                              ELSE p.last_lag_ms END,
           records = p.records + n
     WHERE p.slot_name = slot
$$;
COMMENT ON FUNCTION bv_audit._wal_end(name, pg_lsn, boolean, xid8, timestamptz, timestamptz, bigint) IS
'Internal, step 4 of a WAL worker batch: stores the applied position in the transaction of the records.';
REVOKE ALL ON FUNCTION bv_audit._wal_end(name, pg_lsn, boolean, xid8, timestamptz, timestamptz, bigint) FROM PUBLIC;

-- A transaction the worker failed to record twice, one at a time: keep it
-- (with the error) in wal_quarantine and move the applied position past it.
CREATE FUNCTION bv_audit._wal_quarantine(slot name, error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    applied pg_lsn;
    upto pg_lsn := bv_audit._wal_flush();
    clsn pg_lsn;
    rows jsonb;
BEGIN
    SELECT greatest(p.applied_lsn, s.confirmed_flush_lsn) INTO applied
      FROM bv_audit.wal_progress p
      LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = p.slot_name
     WHERE p.slot_name = slot FOR UPDATE OF p;
    WITH raw AS (
        SELECT c.data::jsonb AS j, row_number() OVER () AS ord
          FROM pg_catalog.pg_logical_slot_peek_changes(slot, upto, 100000,
                   'format-version', '2', 'include-xids', '1', 'include-lsn', '1',
                   'include-column-positions', '1', 'include-transaction', '1',
                   'filter-tables', 'bv_audit.*', 'add-msg-prefixes', 'bv_audit') c
    ), tx AS (
        SELECT r.j, r.ord, max(CASE WHEN r.j ->> 'action' = 'B' THEN (r.j ->> 'lsn')::pg_lsn END)
                   OVER (ORDER BY r.ord) AS clsn
          FROM raw r
    ), first AS (
        SELECT min(tx.clsn) AS clsn FROM tx WHERE tx.clsn >= applied
    )
    SELECT f.clsn, jsonb_agg(tx.j ORDER BY tx.ord) INTO clsn, rows
      FROM first f JOIN tx ON tx.clsn = f.clsn GROUP BY f.clsn;
    IF clsn IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO bv_audit.wal_quarantine (commit_lsn, xid, error, changes)
    VALUES (clsn, (rows -> 0 ->> 'xid')::bigint, left(error, 2000), rows);
    UPDATE bv_audit.wal_progress p
       SET applied_lsn = clsn + 1, quarantined = p.quarantined + 1, applied_at = clock_timestamp()
     WHERE p.slot_name = slot;
    RAISE WARNING 'bv_audit: the WAL worker could not record the transaction committed at %; it is kept in bv_audit.wal_quarantine', clsn
        USING DETAIL = left(error, 200),
              HINT = 'Inspect bv_audit.wal_quarantine and record its changes by hand if they matter.';
END
$$;
COMMENT ON FUNCTION bv_audit._wal_quarantine(name, text) IS
'Internal: moves the WAL worker past a transaction it could not record, keeping it in bv_audit.wal_quarantine.';
REVOKE ALL ON FUNCTION bv_audit._wal_quarantine(name, text) FROM PUBLIC;

-- ===========================================================================
-- #19 WAL mode, part 4: waiting, status, draining.
-- ===========================================================================

-- How far the history covers the WAL: the stored position, or the slot's
-- confirmed one (the worker advances the slot only past committed records).
CREATE FUNCTION bv_audit._wal_applied()
RETURNS pg_lsn
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- No slot: WAL mode is off and no table is in it (enable() needs the
    -- slot, and the worker drops it only then), so every record is written
    -- by its own transaction and the history covers the whole WAL.
    SELECT CASE WHEN s.slot_name IS NULL THEN pg_catalog.pg_current_wal_insert_lsn()
                ELSE greatest((SELECT p.applied_lsn FROM bv_audit.wal_progress p
                                WHERE p.slot_name = 'bv_audit_wal'),
                              s.confirmed_flush_lsn) END
      FROM (SELECT) AS one
      LEFT JOIN pg_catalog.pg_replication_slots s
             ON s.slot_name = 'bv_audit_wal' AND s.database = pg_catalog.current_database()
$$;
COMMENT ON FUNCTION bv_audit._wal_applied() IS
'Internal: how far the history of WAL-mode tables covers the WAL (stored position or the slot''s confirmed one; the current position when there is no slot, as WAL mode is then unused).';
REVOKE ALL ON FUNCTION bv_audit._wal_applied() FROM PUBLIC;

CREATE FUNCTION bv_audit.wait_for(lsn pg_lsn, timeout interval DEFAULT interval '30 seconds')
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz;
    pause double precision := 0.001;
BEGIN
    IF lsn IS NULL OR timeout IS NULL THEN
        RAISE EXCEPTION 'lsn and timeout must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a WAL position, e.g. bv_audit.wait_for(pg_current_wal_insert_lsn()).';
    END IF;
    IF timeout < interval '0' OR timeout > interval '1 day' THEN
        RAISE EXCEPTION 'timeout must lie between 0 and 1 day'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', timeout),
                  HINT = 'Pass e.g. interval ''30 seconds''.';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bv_audit.wait_for() must run in a read committed transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'Its snapshot would never see the worker''s progress.',
                  HINT = 'Call it in a transaction of its own (read committed, the default).';
    END IF;
    deadline := clock_timestamp() + timeout;
    LOOP
        IF bv_audit._wal_applied() >= lsn THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_catalog.pg_sleep(pause);
        pause := least(pause * 2, 0.02);
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit.wait_for(pg_lsn, interval) IS
'Waits until the history of WAL-mode tables covers every transaction whose commit record starts before lsn (e.g. pg_current_wal_insert_lsn() after a commit); true when it does, false after the timeout. Trigger-mode tables need no wait: their records commit with the change.';
REVOKE ALL ON FUNCTION bv_audit.wait_for(pg_lsn, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_audit.wait_for(pg_lsn, interval) TO bv_admin;

CREATE FUNCTION bv_audit.wal_status(OUT slot_name name, OUT worker_pid integer, OUT applied_lsn pg_lsn,
                                    OUT lag_bytes numeric, OUT lag_ms double precision,
                                    OUT retained_bytes numeric, OUT applied_at timestamptz,
                                    OUT records bigint, OUT quarantined bigint, OUT wal_tables integer)
RETURNS record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'bv_audit_wal'::name,
           (SELECT a.pid FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'bv_audit wal' LIMIT 1),
           bv_audit._wal_applied(),
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), bv_audit._wal_applied()),
           p.last_lag_ms,
           (SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), s.restart_lsn)
              FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = 'bv_audit_wal'),
           p.applied_at, coalesce(p.records, 0), coalesce(p.quarantined, 0),
           (SELECT count(*)::integer FROM bv_audit.tracked t WHERE t.wal_lsn IS NOT NULL AND t.wal_until IS NULL)
      FROM (SELECT 1) one
      LEFT JOIN bv_audit.wal_progress p ON p.slot_name = 'bv_audit_wal'
$$;
COMMENT ON FUNCTION bv_audit.wal_status() IS
'The WAL worker: its pid (NULL when not running), how far the history of WAL-mode tables covers the WAL, the lag behind the WAL insert position (bytes) and of the last recorded transaction behind its commit (ms), the WAL the slot retains, records written, transactions quarantined, tables in WAL mode.';
REVOKE ALL ON FUNCTION bv_audit.wal_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_audit.wal_status() TO bv_admin;

-- Wait until the worker has recorded every transaction committed so far:
-- before DDL on, or a switch away from WAL mode of, a WAL-mode table (the
-- caller holds a lock that keeps new writers of the table out).
CREATE FUNCTION bv_audit._wal_drain(what text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lsn pg_lsn := pg_catalog.pg_current_wal_insert_lsn();
BEGIN
    IF NOT bv_audit.wait_for(lsn, interval '30 seconds') THEN
        RAISE EXCEPTION 'the bv_audit WAL worker has not recorded the changes committed before %', left(what, 64)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The history covers the WAL up to %s, the command started at %s.',
                                  coalesce(bv_audit._wal_applied()::text, 'nothing'), lsn),
                  HINT = 'Check that the worker runs (bv_audit.wal_status()) and try again.';
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_drain(text) IS
'Internal: waits (30 s at most, then 55000) until the WAL worker has recorded every transaction committed so far.';
REVOKE ALL ON FUNCTION bv_audit._wal_drain(text) FROM PUBLIC;

-- Whether a table can be recorded from the WAL: logged, and its deletes
-- carry the primary key (REPLICA IDENTITY DEFAULT or FULL).
CREATE FUNCTION bv_audit._wal_check(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    i integer;
BEGIN
    SELECT x.relpersistence, x.relreplident INTO c FROM pg_catalog.pg_class x WHERE x.oid = tbl;
    IF c.relpersistence <> 'p' THEN
        RAISE EXCEPTION 'table "%" is not logged', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'WAL mode reads changes from the WAL, which has none of an unlogged table.',
                  HINT = format('Use trigger mode (bv_audit.enable(%L, mode => ''trigger'')), or ALTER TABLE %s SET LOGGED.', tbl::text, tbl);
    END IF;
    IF c.relreplident NOT IN ('d', 'f') THEN
        RAISE EXCEPTION 'table "%" does not log its primary key with deletes', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'WAL mode finds the row of a DELETE by the primary key its WAL record carries (REPLICA IDENTITY DEFAULT or FULL).',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY DEFAULT, or use trigger mode.', tbl);
    END IF;
    IF c.relreplident = 'd' AND EXISTS (SELECT FROM pg_catalog.pg_index i
                                         WHERE i.indrelid = tbl AND i.indisprimary AND NOT i.indimmediate) THEN
        RAISE EXCEPTION 'the primary key of table "%" is deferrable', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A deferrable key cannot be the replica identity: deletes and key changes would not log the old key, which WAL mode follows rows by.',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY FULL, or use trigger mode.', tbl);
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'WAL mode needs wal_level = logical'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set wal_level = logical (BitVelocity clusters do) and restart, or use trigger mode.';
    END IF;
    IF current_database() IS DISTINCT FROM current_setting('bv_audit.database', true) THEN
        RAISE EXCEPTION 'WAL mode records tables of database "%" only', left(coalesce(current_setting('bv_audit.database', true), ''), 63)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The bv_audit WAL worker decodes one database, bv_audit.database (bv_audit must be preloaded).',
                  HINT = 'Use trigger mode in this database, or set bv_audit.database and restart.';
    END IF;
    IF NOT EXISTS (SELECT FROM bv_audit.tracked t WHERE t.wal_lsn IS NOT NULL AND t.wal_until IS NULL)
       AND current_setting('bv_audit.wal_mode', true) IS DISTINCT FROM 'on'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_replication_slots s
                        WHERE s.slot_name = 'bv_audit_wal' AND s.database = current_database()) THEN
        RAISE EXCEPTION 'WAL mode is off in this cluster'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'bv_audit.wal_mode is off: the bv_audit WAL worker keeps no replication slot.',
                  HINT = 'Set bv_audit.wal_mode = on in postgresql.conf and reload (the worker then keeps a slot that decodes all of this database''s WAL), or use trigger mode.';
    END IF;
    -- The worker creates its slot when WAL mode is on; a table must
    -- not switch before it exists (its changes would precede the slot).
    FOR i IN 1..200 LOOP
        EXIT WHEN EXISTS (SELECT FROM pg_catalog.pg_replication_slots s
                           WHERE s.slot_name = 'bv_audit_wal' AND s.database = current_database());
        IF i = 200 THEN
            RAISE EXCEPTION 'the bv_audit WAL worker has no replication slot yet'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'It creates the slot bv_audit_wal when bv_audit is installed; it is not running or cannot create it.',
                      HINT = 'Check bv_audit.wal_status() and the server log (max_replication_slots), then try again.';
        END IF;
        PERFORM pg_catalog.pg_sleep(0.05);
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_check(regclass) IS
'Internal: refuses a table that WAL mode cannot record (unlogged, deletes not logging the primary key, wal_level below logical).';
REVOKE ALL ON FUNCTION bv_audit._wal_check(regclass) FROM PUBLIC;

-- ===========================================================================
-- #19 WAL mode, part 5: enable(..., mode), disable(), DDL, the guard, seal().
-- ===========================================================================

DROP FUNCTION bv_audit.enable(regclass, text[], interval, text);

CREATE FUNCTION bv_audit.enable(tbl regclass, exclude_columns text[] DEFAULT '{}',
                                retention interval DEFAULT NULL, history_index text DEFAULT NULL,
                                mode text DEFAULT NULL)
RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel record;
    pk name[];
    bad text;
    t bv_audit.tracked;
    aname name;
    n integer := 0;
    m integer;
    excl name[] := coalesce(exclude_columns, '{}')::name[];
    was_enabled boolean;
    excl_attnums smallint[];
    target text;
    switched boolean := false;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the table to track, e.g. ''public.invoice''.';
    END IF;
    IF array_position(excl, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'exclude_columns must not contain NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'List the names of the columns never to copy, e.g. ''{card_token}''.';
    END IF;
    IF enable.mode IS NOT NULL AND enable.mode NOT IN ('trigger', 'wal') THEN
        RAISE EXCEPTION 'unknown audit mode "%"', left(enable.mode, 40)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'mode is trigger (records written by the writer''s transaction) or wal (written from the WAL by the bv_audit WAL worker, after the commit).',
                  HINT = 'Pass ''trigger'' or ''wal'', or leave it out to keep the table''s mode.';
    END IF;
    PERFORM bv_audit._check_read(tbl, excl, true);
    IF retention IS NOT NULL AND retention <= interval '0' THEN
        RAISE EXCEPTION 'retention must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', retention),
                  HINT = 'Pass e.g. interval ''7 years'', or NULL to keep records forever.';
    END IF;
    IF history_index IS NOT NULL AND history_index NOT IN ('bloom', 'btree') THEN
        RAISE EXCEPTION 'unknown history index "%"', left(history_index, 40)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'history_index is bloom (the default: cheap to write) or btree (faster history() on large tables).',
                  HINT = 'Pass ''bloom'' or ''btree'', or leave it out.';
    END IF;
    SELECT c.relkind, c.relname, ns.nspname, c.relpersistence INTO rel
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
     WHERE c.oid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
            USING ERRCODE = 'undefined_table',
                  HINT = 'Pass an existing table.';
    END IF;
    IF rel.nspname IN ('bv_audit', 'pg_catalog', 'information_schema') OR rel.relpersistence = 't' THEN
        RAISE EXCEPTION 'table "%" cannot be audited', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Audit tables, catalogs and temporary tables are not audited.',
                  HINT = 'Audit ordinary tables only.';
    ELSIF rel.relkind IN ('v', 'm') THEN
        RAISE EXCEPTION '"%" is a view', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'A view stores no rows of its own; its changes happen in its base tables.',
                  HINT = 'Call bv_audit.enable() on the view''s base tables.';
    ELSIF rel.relkind = 'f' THEN
        RAISE EXCEPTION '"%" is a foreign table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Changes to a foreign table happen on the remote server, out of bv_audit''s sight.',
                  HINT = 'Audit the table on the server that owns it.';
    ELSIF rel.relkind = 'p' THEN
        RAISE EXCEPTION '"%" is a partitioned table', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'bv_audit 0.1.0 tracks ordinary tables only.',
                  HINT = 'Call bv_audit.enable() on each partition.';
    ELSIF rel.relkind <> 'r' THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Only tables can be audited.',
                  HINT = 'Pass a table to bv_audit.enable().';
    END IF;

    SELECT array_agg(a.attname ORDER BY k.ord) INTO pk
      FROM pg_catalog.pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = tbl AND i.indisprimary;
    IF pk IS NULL THEN
        RAISE EXCEPTION 'table "%" has no primary key', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The history of a row is found by its primary key.',
                  HINT = format('Add one, e.g. ALTER TABLE %s ADD PRIMARY KEY (...), then call bv_audit.enable() again.', tbl);
    END IF;

    -- #19: the mode.  Writers of the table wait from here to the commit, so
    -- the switch is one point of the WAL: changes committed before it are
    -- recorded the old way, changes committed after it the new way.
    target := coalesce(enable.mode,
                       (SELECT tr.mode FROM bv_audit.tracked tr WHERE tr.relid = tbl::oid), 'trigger');
    IF target = 'wal' THEN
        PERFORM bv_audit._wal_check(tbl);
        IF enable.history_index = 'bloom' THEN
            RAISE EXCEPTION 'WAL mode needs the btree history index'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The WAL worker reads the last record of every updated or deleted row by its key.',
                      HINT = 'Leave history_index out (WAL mode uses btree) or pass ''btree''.';
        END IF;
    END IF;
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);
    IF EXISTS (SELECT FROM bv_audit.tracked tr
                WHERE tr.relid = tbl::oid AND tr.wal_lsn IS NOT NULL AND tr.wal_until IS NULL)
       AND target <> 'wal' THEN
        -- Leaving WAL mode: the worker records everything committed so far
        -- before the triggers take over (records stay in audit_id order).
        PERFORM bv_audit._wal_drain('the switch to trigger mode');
    END IF;

    SELECT string_agg(format('%I', e), ', ') INTO bad
      FROM unnest(excl) AS e
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = tbl AND a.attname = e AND a.attnum > 0 AND NOT a.attisdropped);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'table "%" has no column %', tbl, bad
            USING ERRCODE = 'undefined_column',
                  DETAIL = 'exclude_columns must name columns of the table.',
                  HINT = 'Check the spelling of the excluded columns.';
    END IF;
    SELECT string_agg(format('%I', e), ', ') INTO bad FROM unnest(excl) AS e WHERE e = ANY (pk);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'primary key column % of table "%" cannot be excluded', bad, tbl
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The history of a row is found by its primary key.',
                  HINT = 'Exclude only non-key columns.';
    END IF;

    -- Exclusions follow the column (its attnum) through renames.
    SELECT coalesce(array_agg(a.attnum ORDER BY a.attnum), '{}') INTO excl_attnums
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY (excl);

    SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.relid = tbl::oid FOR UPDATE;
    IF NOT FOUND THEN
        -- 48 bytes leave room for the partition suffixes within NAMEDATALEN.
        aname := rel.nspname || '__' || rel.relname;
        WHILE octet_length(aname) > 48 LOOP
            aname := left(aname, -1);
        END LOOP;
        WHILE EXISTS (SELECT 1 FROM bv_audit.tracked tr WHERE tr.audit_table = aname)
              OR to_regclass(format('bv_audit.%I', aname)) IS NOT NULL LOOP
            n := n + 1;
            aname := rel.nspname || '__' || rel.relname;
            WHILE octet_length(aname) > 42 LOOP
                aname := left(aname, -1);
            END LOOP;
            aname := aname || '_' || n;
        END LOOP;
        EXECUTE format($sql$
            CREATE TABLE bv_audit.%I (
                audit_id      bigint NOT NULL DEFAULT bv_audit.next_audit_id(),
                audit_op      text NOT NULL,
                audit_xid     xid8 NOT NULL,
                audit_actor   text NOT NULL,
                audit_ts      timestamptz NOT NULL,
                audit_app     text,
                audit_client  inet,
                audit_trace   text,
                audit_changed text[]
            ) PARTITION BY RANGE (audit_ts)$sql$, aname);
        EXECUTE format('CREATE TABLE bv_audit.%I PARTITION OF bv_audit.%I DEFAULT',
                       aname || '_default', aname);
        EXECUTE format('CREATE TRIGGER bv_audit_append_only BEFORE UPDATE OR DELETE ON bv_audit.%I '
                       'FOR EACH ROW EXECUTE FUNCTION bv_audit.append_only_trigger()', aname);
        EXECUTE format('CREATE TRIGGER bv_audit_append_only_truncate BEFORE TRUNCATE ON bv_audit.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.append_only_trigger()', aname);
        EXECUTE format('CREATE TRIGGER bv_audit_append_only_truncate BEFORE TRUNCATE ON bv_audit.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.append_only_trigger()', aname || '_default');
        EXECUTE format('REVOKE ALL ON bv_audit.%I, bv_audit.%I FROM PUBLIC', aname, aname || '_default');
        EXECUTE format('GRANT SELECT ON bv_audit.%I TO bv_admin', aname);
        EXECUTE format('COMMENT ON TABLE bv_audit.%I IS %L', aname,
                       format('Audit records of %I.%I (append-only, partitioned by month): the row after INSERT/UPDATE, before DELETE; S = snapshot at enable, T = TRUNCATE.',
                              rel.nspname, rel.relname));
        EXECUTE format('COMMENT ON TABLE bv_audit.%I IS %L', aname || '_default',
                       'Records of months whose partition was missing; purge() trims it.');

        INSERT INTO bv_audit.tracked (relid, source_schema, source_table, audit_table, audit_relid,
                                      pk_columns, exclude_columns, exclude_attnums, retention)
        VALUES (tbl, rel.nspname, rel.relname, aname, format('bv_audit.%I', aname)::regclass,
                pk, excl, excl_attnums, retention)
        RETURNING * INTO t;
        PERFORM bv_audit._sync_columns(t);
        -- The history of one row is found by its key (see _history_index).
        -- No index on audit_ts: monthly partitions prune by time, and every
        -- index is paid for by every audited write.
        PERFORM bv_audit._history_index(t, coalesce(enable.history_index,
                                                     CASE WHEN target = 'wal' THEN 'btree' ELSE 'bloom' END));
        FOR m IN 0..3 LOOP
            PERFORM bv_audit._create_partition(t, (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => m))::date);
        END LOOP;
        PERFORM bv_audit._snapshot(t);
    ELSE
        was_enabled := t.enabled;
        UPDATE bv_audit.tracked tr
           SET exclude_columns = excl,
               exclude_attnums = excl_attnums,
               retention = coalesce(enable.retention, tr.retention),
               enabled = true,
               enabled_at = CASE WHEN tr.enabled THEN tr.enabled_at ELSE now() END
         WHERE tr.id = t.id
        RETURNING * INTO t;
        PERFORM bv_audit._sync_columns(t);
        IF enable.history_index IS NOT NULL AND enable.history_index <> t.history_index THEN
            PERFORM bv_audit._history_index(t, enable.history_index);
        END IF;
        IF NOT was_enabled THEN
            -- Re-enabled: changes made while disabled were not recorded.
            -- Rows deleted meanwhile (or moved to another key) get a D, so
            -- that as_of() shows no ghosts; every row gets an S.
            PERFORM bv_audit._record_vanished(t, NULL);
            PERFORM bv_audit._snapshot(t);
        END IF;
    END IF;

    IF target = 'wal' THEN
        -- #19: no row trigger; the marker tells writers to put their context
        -- into the WAL, and the worker records changes committed from here.
        IF EXISTS (SELECT FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_capture') THEN
            EXECUTE format('DROP TRIGGER bv_audit_capture ON %s', tbl);
        END IF;
        IF EXISTS (SELECT FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_capture_truncate') THEN
            EXECUTE format('DROP TRIGGER bv_audit_capture_truncate ON %s', tbl);
        END IF;
        EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_wal BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.wal_marker_trigger()', tbl);
        IF t.history_index <> 'btree' THEN
            PERFORM bv_audit._history_index(t, 'btree');
        END IF;
        UPDATE bv_audit.tracked tr
           SET mode = 'wal',
               wal_lsn = CASE WHEN tr.wal_lsn IS NOT NULL AND tr.wal_until IS NULL THEN tr.wal_lsn
                              ELSE pg_catalog.pg_current_wal_insert_lsn() END,
               wal_until = NULL
         WHERE tr.id = t.id;
    ELSE
        EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
        EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
        IF EXISTS (SELECT FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_wal') THEN
            EXECUTE format('DROP TRIGGER bv_audit_wal ON %s', tbl);
        END IF;
        UPDATE bv_audit.tracked tr
           SET mode = 'trigger',
               wal_until = CASE WHEN tr.wal_lsn IS NOT NULL AND tr.wal_until IS NULL
                                THEN pg_catalog.pg_current_wal_insert_lsn() ELSE tr.wal_until END
         WHERE tr.id = t.id;
    END IF;
    PERFORM bv_audit._invalidate(tbl);
    RETURN t.audit_relid;
END
$$;
CREATE OR REPLACE FUNCTION bv_audit.disable(tbl regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
BEGIN
    IF t.wal_lsn IS NOT NULL AND t.wal_until IS NULL THEN
        -- #19: writers wait; the worker records what they committed so far.
        EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);
        PERFORM bv_audit._wal_drain('disable()');
        UPDATE bv_audit.tracked tr SET wal_until = pg_catalog.pg_current_wal_insert_lsn()
         WHERE tr.id = t.id;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_capture') THEN
        EXECUTE format('DROP TRIGGER bv_audit_capture ON %s', tbl);
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_capture_truncate') THEN
        EXECUTE format('DROP TRIGGER bv_audit_capture_truncate ON %s', tbl);
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_wal') THEN
        EXECUTE format('DROP TRIGGER bv_audit_wal ON %s', tbl);
    END IF;
    UPDATE bv_audit.tracked tr SET enabled = false, disabled_at = now()
     WHERE tr.id = t.id AND tr.enabled;
    PERFORM bv_audit._invalidate(tbl);
END
$$;
COMMENT ON FUNCTION bv_audit.disable(regclass) IS
'Stops recording changes of a table; its audit table and history are kept. A WAL-mode table''s changes committed before the call are recorded first.';
COMMENT ON FUNCTION bv_audit.enable(regclass, text[], interval, text, text) IS
'Starts recording every change of a table (which needs a primary key) into its audit table, bv_audit.<schema>__<table>, and returns it. Excluded columns are never copied. history_index: bloom (default; BRIN bloom filters on the key, cheapest writes) or btree (key and audit_id; fastest history() on large tables). mode: trigger (the default for a new table: C row triggers write the records in the writer''s transaction) or wal (the bv_audit WAL worker writes them from the WAL after the commit; writers pay one small WAL record per statement; needs the btree history index); left out, a tracked table keeps its mode. Switching modes loses and duplicates nothing. Calling it again updates the exclusions and retention (and the history index when given) and re-syncs the columns; after disable() it records a fresh snapshot.';
REVOKE ALL ON FUNCTION bv_audit.enable(regclass, text[], interval, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_audit.enable(regclass, text[], interval, text, text) TO bv_admin;

-- #19: DDL on a WAL-mode table first lets the worker catch up.
CREATE OR REPLACE FUNCTION bv_audit._on_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
    t bv_audit.tracked;
    old_key smallint[];
    new_key smallint[];
    added smallint[];
    rewritten smallint[];
    key_rewritten text[];
BEGIN
    FOR cmd IN SELECT DISTINCT c.objid FROM pg_event_trigger_ddl_commands() c
                WHERE c.command_tag = 'ALTER TABLE' AND c.object_type IN ('table', 'table column')
    LOOP
        SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.relid = cmd.objid AND tr.enabled;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        IF t.mode = 'wal' THEN
            -- #19: before the command took its locks, the library's
            -- ProcessUtility hook kept the table's writers out and let the
            -- WAL worker record their changes under the old shape
            -- (wal_context.c); the audit table changes only now.
            -- Still logged, and deletes still log the key (or the command
            -- is refused: switch the table to trigger mode first).
            PERFORM bv_audit._wal_check(t.relid::regclass);
        END IF;
        -- The key's columns (by attnum) as the audit columns record them.
        SELECT array_agg(c.src_attnum ORDER BY c.src_attnum) INTO old_key
          FROM bv_audit.columns c
         WHERE c.tracked_id = t.id AND c.audit_column = ANY (t.pk_columns);
        added := bv_audit._sync_columns(t, true);
        SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.id = t.id;
        SELECT array_agg(x.attnum ORDER BY x.attnum) INTO new_key
          FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL unnest(i.indkey::smallint[]) AS x(attnum)
         WHERE i.indrelid = t.relid AND i.indisprimary;
        IF new_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
            -- A primary key on other columns: rows are now followed by it;
            -- the keys of it that the history shows and the table lacks end.
            PERFORM bv_audit._record_vanished(t, t.pk_columns::text[]);
        END IF;
        -- Columns whose stored values a USING expression rewrote (mirrored ones).
        SELECT coalesce(array_agg(DISTINCT r.attnum), '{}') INTO rewritten
          FROM pg_event_trigger_ddl_commands() x
          CROSS JOIN LATERAL unnest(bv_audit._rewritten_columns(x.command)) AS r(attnum)
          JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = r.attnum
         WHERE x.objid = cmd.objid AND x.command_tag = 'ALTER TABLE' AND x.object_type = 'table';
        SELECT array_agg(att.attname::text ORDER BY att.attnum) INTO key_rewritten
          FROM pg_catalog.pg_attribute att
         WHERE att.attrelid = t.relid AND att.attnum = ANY (rewritten) AND att.attname = ANY (t.pk_columns);
        IF key_rewritten IS NOT NULL THEN
            -- Keys changed: the old keys' histories end.
            PERFORM bv_audit._record_vanished(t, key_rewritten);
        END IF;
        IF cardinality(rewritten) > 0 THEN
            PERFORM bv_audit._record_rows(t, rewritten || added, false);
        ELSIF cardinality(added) > 0 THEN
            -- ADD COLUMN: rows got a value (a default) without an UPDATE.
            PERFORM bv_audit._record_rows(t, added, true);
        END IF;
    END LOOP;
END
$$;

-- #19: the guard knows WAL-mode tables (the marker instead of capture triggers).
CREATE OR REPLACE FUNCTION bv_audit._guard_capture()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rels oid[];
    stamped oid[];
    t record;
    r oid;
BEGIN
    IF (SELECT x.rolsuper FROM pg_catalog.pg_roles x WHERE x.rolname = current_user) THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        -- Triggers dropped while their table stays (DROP TRIGGER, or the
        -- cascade of DROP EXTENSION / DROP OWNED).
        SELECT array_agg(to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))::oid),
               array_agg(to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))::oid)
                   FILTER (WHERE d.address_names[3] = 'bv_audit_stamp')
          INTO rels, stamped
          FROM pg_catalog.pg_event_trigger_dropped_objects() d
         WHERE d.object_type = 'trigger';
    ELSE
        SELECT array_agg(CASE WHEN c.object_type = 'trigger'
                              THEN (SELECT tg.tgrelid FROM pg_catalog.pg_trigger tg WHERE tg.oid = c.objid)
                              ELSE c.objid END) INTO rels
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.object_type IN ('table', 'trigger');
        SELECT array_agg(DISTINCT tg.tgrelid) INTO stamped
          FROM pg_catalog.pg_trigger tg
         WHERE tg.tgrelid = ANY (rels)
           AND (tg.tgfoid = 'bv_audit.stamp_trigger()'::pg_catalog.regprocedure OR tg.tgname = 'bv_audit_stamp');
    END IF;
    FOR t IN SELECT tr.id, tr.relid, tr.mode FROM bv_audit.tracked tr
              WHERE tr.relid = ANY (rels) AND tr.enabled LOOP
        -- #19: a WAL-mode table has no capture trigger but its marker.
        IF t.mode = 'wal' THEN
            IF NOT (SELECT count(*) = 1
                      FROM pg_catalog.pg_trigger tg
                     WHERE tg.tgrelid = t.relid AND tg.tgname = 'bv_audit_wal'
                       AND tg.tgfoid = 'bv_audit.wal_marker_trigger()'::pg_catalog.regprocedure
                       AND tg.tgenabled IN ('O', 'A') AND NOT tg.tgisinternal AND tg.tgtype = 34
                       AND tg.tgqual IS NULL AND tg.tgnargs = 0
                       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                        WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
                                          AND d.objid = tg.oid AND d.deptype = 'x'))
               OR EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.relid
                           AND (c.relpersistence <> 'p' OR c.relreplident NOT IN ('d', 'f'))) THEN
                RAISE EXCEPTION 'only a superuser can stop bv_audit from recording changes of %', t.relid::regclass
                    USING ERRCODE = 'insufficient_privilege',
                          DETAIL = 'The command would drop, disable or replace the trigger bv_audit_wal of a table recorded from the WAL, make the table unlogged, or stop its deletes from logging the primary key.',
                          HINT = 'Ask a member of bv_admin to call bv_audit.disable() on the table, or to switch it to trigger mode.';
            END IF;
            CONTINUE;
        END IF;
        IF NOT (SELECT count(*) = 2
                      FROM pg_catalog.pg_trigger tg
                     WHERE tg.tgrelid = t.relid
                       AND tg.tgfoid = 'bv_audit.capture_trigger()'::pg_catalog.regprocedure
                       AND tg.tgenabled IN ('O', 'A') AND NOT tg.tgisinternal
                       AND tg.tgqual IS NULL AND tg.tgattr = ''::pg_catalog.int2vector AND tg.tgnargs = 1
                       AND pg_catalog.encode(tg.tgargs, 'escape') = t.id::text || '\000'
                       AND ((tg.tgname = 'bv_audit_capture' AND tg.tgtype = 29)
                            OR (tg.tgname = 'bv_audit_capture_truncate' AND tg.tgtype = 32))
                       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                        WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
                                          AND d.objid = tg.oid AND d.deptype = 'x')) THEN
            RAISE EXCEPTION 'only a superuser can stop bv_audit from recording changes of %', t.relid::regclass
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'The command would disable, drop, rename or replace a capture trigger of a tracked table.',
                      HINT = 'Ask a member of bv_admin to call bv_audit.disable() on the table.';
        END IF;
    END LOOP;
    FOREACH r IN ARRAY coalesce(stamped, '{}') LOOP
        IF r IS NOT NULL AND NOT (SELECT count(*) FILTER (WHERE tg.tgname = 'bv_audit_stamp' AND tg.tgtype = 23
                                              AND tg.tgenabled IN ('O', 'A') AND tg.tgqual IS NULL
                                              AND tg.tgattr = ''::pg_catalog.int2vector AND tg.tgnargs = 0
                                              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                                               WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
                                                                 AND d.objid = tg.oid AND d.deptype = 'x')) = 1
                           AND count(*) = 1
                      FROM pg_catalog.pg_trigger tg
                     WHERE tg.tgrelid = r
                       AND (tg.tgfoid = 'bv_audit.stamp_trigger()'::pg_catalog.regprocedure OR tg.tgname = 'bv_audit_stamp')) THEN
            RAISE EXCEPTION 'only a superuser can stop bv_audit from stamping %', r::regclass
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'The command would disable, drop, rename, replace or tie to an extension the trigger bv_audit_stamp, which fills created_by, created_at, updated_by and updated_at.',
                      HINT = 'Ask a superuser to drop the trigger if the table should no longer be stamped.';
        END IF;
    END LOOP;
END
$$;

-- #19: seal() seals WAL-mode records only once the worker has written them.
CREATE OR REPLACE FUNCTION bv_audit.seal()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET lc_monetary = 'C'
AS $$
DECLARE
    t bv_audit.tracked;
    run_floor timestamptz;
    untracked boolean;
    prepared boolean;
    hi xid8;
    prev bv_audit.seals;
    link bv_audit.seals;
    lo xid8;
    lo_ts timestamptz;
    next_no integer;
    n bigint;
    first_id bigint;
    last_id bigint;
    rec_floor timestamptz;
    batch bytea;
    sealed integer := 0;
    wal record;
BEGIN
    -- The argument below needs the snapshot of step 2 to be taken after
    -- step 1; a repeatable read transaction took it at its first statement.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bv_audit.seal() must run in a read committed transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = format('This transaction is %s: its snapshot is older than the seal''s look at the running transactions, so records could be missed.',
                                  current_setting('transaction_isolation')),
                  HINT = 'Call bv_audit.seal() in a transaction of its own (read committed, the default).';
    END IF;
    -- Serialise sealers and purges (not writers): each chain grows one link
    -- at a time.
    PERFORM pg_advisory_xact_lock(hashtext('bv_audit.seal'));

    -- Which records can a transaction with an id >= hi (this seal's end)
    -- still hold?  Its records carry its start time as audit_ts.  Any such
    -- transaction T either
    --   a. committed before the snapshot of step 2: its records are visible
    --      to the scan below, which takes their oldest audit_ts (rec_floor);
    --   b. was running at step 1 (it cannot have ended before step 2
    --      without being case a): its xact_start is in pg_stat_activity,
    --      or it is prepared, or its backend does not report activity
    --      (track_activities off: state 'disabled');
    --   c. started after step 1: it started after the clock reading here,
    --      less the time a backend takes between taking its start time and
    --      advertising it (the minute of allowance, also for clock steps).
    -- So the next seal, which covers ids from hi on, finds every record it
    -- must cover at audit_ts >= least(run_floor, rec_floor).  A prepared
    -- transaction, or a backend that does not report activity, does not
    -- advertise its start time: while one exists the floor stays where it
    -- is (it was valid for every id >= lo, so for every id >= hi).
    -- Reading pg_stat_activity after the snapshot (as before 0.3.0) missed
    -- transactions that ended in between: they were in neither list.
    --
    -- 1. The running transactions, first (and freshly: pg_stat_activity is
    --    read once per transaction otherwise).
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    SELECT least(min(a.xact_start), clock_timestamp()) - interval '1 minute',
           coalesce(bool_or(a.state = 'disabled'), false)
      INTO run_floor, untracked FROM pg_catalog.pg_stat_activity a;
    prepared := EXISTS (SELECT FROM pg_catalog.pg_prepared_xacts p WHERE p.database = current_database());
    -- 2. The snapshot: every transaction with an id below hi has ended, so
    --    the records it wrote are final and visible to every later statement.
    hi := pg_snapshot_xmin(pg_current_snapshot());
    -- #19: records of WAL-mode tables are written after their commit, by
    -- the WAL worker.  Every id below its applied_xmin committed before its
    -- applied position and is recorded; later ones may not be yet.  So the
    -- seal ends there, and its floor stays below the start of the
    -- transactions the worker may still record (its ts_floor, taken as
    -- step 1 is here).  Without a stored position nothing is sealed.
    -- Only while a table is in WAL mode or a closed window is not recorded
    -- to its end yet: records of windows the worker has finished are final.
    IF EXISTS (SELECT FROM bv_audit.tracked tr
                WHERE tr.wal_lsn IS NOT NULL
                  AND (tr.wal_until IS NULL
                       OR tr.wal_until > bv_audit._wal_applied())) THEN
        SELECT p.applied_xmin, p.ts_floor INTO wal FROM bv_audit.wal_progress p
         WHERE p.slot_name = 'bv_audit_wal';
        hi := least(hi, coalesce(wal.applied_xmin, '0'::xid8));
        IF wal.ts_floor IS NULL THEN
            prepared := true;
        ELSE
            run_floor := least(run_floor, wal.ts_floor);
        END IF;
    END IF;

    FOR t IN SELECT * FROM bv_audit.tracked tr
              WHERE to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL
              ORDER BY tr.id LOOP
        -- One audit table that cannot be sealed does not stop the others.
        BEGIN
            SELECT * INTO prev FROM bv_audit.seals s WHERE s.tracked_id = t.id
             ORDER BY s.seal_no DESC LIMIT 1;
            -- This seal starts exactly where the last link's coverage ended:
            -- its xid_hi, and the floor it left.
            lo := coalesce(prev.xid_hi, '0'::xid8);
            lo_ts := coalesce(prev.ts_floor, '-infinity'::timestamptz);
            next_no := coalesce(prev.seal_no, 0) + 1;
            IF hi <= lo THEN
                CONTINUE;
            END IF;
            INSERT INTO bv_audit.seals (tracked_id, seal_no, xid_lo, xid_hi, ts_floor, row_count,
                                        batch_digest, chain_digest)
            VALUES (t.id, next_no, lo, hi, lo_ts, 0, '\x', '\x');
            -- One scan: the records of [lo, hi) are sealed and their batch
            -- digest computed, the oldest of those from hi on bounds the
            -- next seal (case a); seal_entries is not read back (it has no
            -- index by seal).  a.* is the audit table's row whatever its
            -- columns are called.
            EXECUTE format(
                'WITH scan AS ('
                '    SELECT a.audit_id AS id, a.audit_ts AS ts, a.audit_xid AS xid,'
                '           CASE WHEN a.audit_xid < $4 THEN bv_audit.row_digest(a.*) END AS d'
                '      FROM bv_audit.%I a WHERE a.audit_xid >= $3 AND a.audit_ts >= $5),'
                ' ins AS ('
                '    INSERT INTO bv_audit.seal_entries (tracked_id, seal_no, audit_id, audit_ts, digest)'
                '    SELECT $1, $2, s.id, s.ts, s.d FROM scan s WHERE s.xid < $4'
                '    RETURNING seal_entries.audit_id)'
                ' SELECT (SELECT count(*) FROM ins), (SELECT min(i.audit_id) FROM ins i),'
                '        (SELECT max(i.audit_id) FROM ins i), (SELECT min(s.ts) FROM scan s WHERE s.xid >= $4),'
                '        (SELECT sha256(string_agg(int8send(s.id) || s.d, ''''::bytea ORDER BY s.id))'
                '           FROM scan s WHERE s.xid < $4)',
                t.audit_table)
                INTO n, first_id, last_id, rec_floor, batch
                USING t.id, next_no, lo, hi, lo_ts;
            IF n = 0 THEN
                -- Nothing new: no link; the next seal starts from the same place.
                DELETE FROM bv_audit.seals s WHERE s.tracked_id = t.id AND s.seal_no = next_no;
                CONTINUE;
            END IF;
            UPDATE bv_audit.seals s
               SET row_count = n, first_audit_id = first_id, last_audit_id = last_id,
                   ts_floor = CASE WHEN prepared OR untracked THEN lo_ts
                                   ELSE greatest(lo_ts, least(run_floor, rec_floor)) END,
                   batch_digest = batch
             WHERE s.tracked_id = t.id AND s.seal_no = next_no
            RETURNING * INTO link;
            UPDATE bv_audit.seals s
               SET chain_digest = sha256(coalesce(prev.chain_digest, ''::bytea)
                                         || bv_audit._link_header(link) || batch)
             WHERE s.tracked_id = t.id AND s.seal_no = next_no;
            sealed := sealed + 1;
            -- A bloom history index (see _history_index) summarizes the ranges
            -- written since the last seal, so that history() skips them where
            -- the key is absent instead of reading them all.  Writers are not
            -- blocked (ShareUpdateExclusiveLock).
            PERFORM pg_catalog.brin_summarize_new_values(i.indexrelid)
               FROM pg_catalog.pg_inherits h
               JOIN pg_catalog.pg_class pc ON pc.oid = h.inhrelid
               JOIN pg_catalog.pg_index i ON i.indrelid = h.inhrelid
               JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_catalog.pg_am am ON am.oid = ic.relam
              WHERE h.inhparent = t.audit_relid AND am.amname = 'brin'
                AND coalesce((to_date(substring(pc.relname FROM '_p([0-9]{6})$'), 'YYYYMM')
                              + interval '1 month')::timestamp AT TIME ZONE 'UTC' > lo_ts, true);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'audit table "%" could not be sealed', t.audit_table
                USING DETAIL = SQLERRM,
                      HINT = 'The other audit tables were sealed; fix the cause and seal again: this table''s chain resumes where it stopped.';
        END;
    END LOOP;
    RETURN sealed;
END
$$;

-- #19: DROP TABLE closes the WAL window at the drop (changes committed
-- before it are still recorded by the worker, under the table's names).
CREATE OR REPLACE FUNCTION bv_audit._on_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE bv_audit.tracked tr
       SET relid = NULL, enabled = false, dropped_at = now(),
           disabled_at = coalesce(tr.disabled_at, now()),
           wal_until = CASE WHEN tr.wal_lsn IS NOT NULL AND tr.wal_until IS NULL
                            THEN pg_catalog.pg_current_wal_insert_lsn() ELSE tr.wal_until END
      FROM pg_event_trigger_dropped_objects() d
     WHERE d.object_type = 'table' AND d.objid = tr.relid;
END
$$;

------------------------------------------------------------------------
-- BEGIN red-team block: who can read the tracking catalog
--
-- bv_audit.tracked and bv_audit.columns were readable by every role (API
-- roles included): any login could list every tracked table of every
-- schema, the names of tables dropped long ago (kept after DROP TABLE),
-- which columns were excluded as secrets, retention periods and the audit
-- table names.  Now a role sees the rows of the tables it owns (is a
-- member of the owner) or holds a privilege on, and bv_admin sees all.
--
-- Row-level security, not a revoke: two readers run as the caller.  The
-- capture trigger builds its per-table state as the writer (who has a
-- privilege on the table it writes, possibly on a column only), and the
-- capture guard (an event trigger) runs as the role whose ALTER TABLE it
-- judges (the owner).  Both keep seeing their table's row; superusers
-- and the SECURITY DEFINER functions (owned by the extension's owner)
-- bypass the policies.
------------------------------------------------------------------------

ALTER TABLE bv_audit.tracked ENABLE ROW LEVEL SECURITY;
ALTER TABLE bv_audit.columns ENABLE ROW LEVEL SECURITY;

CREATE POLICY tracked_visible ON bv_audit.tracked FOR SELECT TO PUBLIC
USING (
    pg_catalog.pg_has_role('bv_admin', 'USAGE')
    OR EXISTS (
        SELECT 1 FROM pg_catalog.pg_class c
         WHERE c.oid = relid
           AND (pg_catalog.pg_has_role(c.relowner, 'MEMBER')
                OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
                OR pg_catalog.has_table_privilege(c.oid, 'DELETE, TRUNCATE, TRIGGER'))));

CREATE POLICY columns_visible ON bv_audit.columns FOR SELECT TO PUBLIC
USING (EXISTS (SELECT 1 FROM bv_audit.tracked t WHERE t.id = tracked_id));

COMMENT ON POLICY tracked_visible ON bv_audit.tracked IS
'A role sees the tracking of the tables it owns or holds a privilege on; bv_admin sees all (dropped tables included).';
COMMENT ON POLICY columns_visible ON bv_audit.columns IS
'The column mapping of the tracked tables the role can see in bv_audit.tracked.';

-- END red-team block
------------------------------------------------------------------------

------------------------------------------------------------------------
-- BEGIN red-team block: purge() removes sealed records only
--
-- purge() removed every record older than the retention, sealed or not:
-- with a retention shorter than the time to the next seal (bv_admin may
-- set one: set_retention('t', '1 second')), or while the seal job was not
-- running, records were deleted without any seal ever covering them, so
-- the chain never attested them (a bv_admin could change a row and erase
-- the record of it before the next seal).  Now the cut-off stops at the
-- oldest record that is not sealed yet, with a WARNING.
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION bv_audit.purge()
RETURNS TABLE (audit_table name, dropped_partitions integer, deleted_rows bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
    cutoff timestamptz;
    part record;
    dropped integer;
    deleted bigint;
    removed bigint;
    trimmed integer[];
    bad integer;
    unsealed timestamptz;
BEGIN
    -- After waiting for a seal, the purge must see what it committed (the
    -- entries it must remove, the link it must follow).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bv_audit.purge() must run in a read committed transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = format('This transaction is %s: it would not see a seal that committed while it waited, and could leave seal entries without their records.',
                                  current_setting('transaction_isolation')),
                  HINT = 'Call bv_audit.purge() in a transaction of its own (read committed, the default).';
    END IF;
    -- One purge at a time; writers are not blocked (DROP of an old partition
    -- takes its lock only, and writers only write the current month's).
    PERFORM pg_advisory_xact_lock(hashtext('bv_audit.purge'));
    -- Purges and seals both append to the chains: one at a time.
    PERFORM pg_advisory_xact_lock(hashtext('bv_audit.seal'));
    FOR t IN SELECT * FROM bv_audit.tracked tr
              WHERE tr.retention IS NOT NULL
                AND to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL
              ORDER BY tr.id LOOP
        -- A retention longer than the calendar (set before set_retention()
        -- refused it, or through enable()): nothing is old enough.
        IF t.retention > now() - '4713-01-01 00:00+00 BC'::timestamptz THEN
            CONTINUE;
        END IF;
        cutoff := now() - t.retention;
        -- Only sealed records are removed (red-team review): a record that
        -- no seal covers yet (the seal job stopped, or a retention shorter
        -- than the time to the next seal) would vanish without ever having
        -- been attested by the chain.  The cut-off stops at the oldest one.
        EXECUTE format('SELECT min(a.audit_ts) FROM bv_audit.%I a '
                       ' WHERE a.audit_ts < $1 AND NOT EXISTS (SELECT 1 FROM bv_audit.seal_entries e '
                       '                                        WHERE e.tracked_id = $2 AND e.audit_id = a.audit_id)',
                       t.audit_table) INTO unsealed USING cutoff, t.id;
        IF unsealed IS NOT NULL THEN
            RAISE WARNING 'audit table "%" keeps records older than its retention that are not sealed yet', t.audit_table
                USING DETAIL = pg_catalog.format('Records from %s on are kept until bv_audit.seal() covers them.', unsealed),
                      HINT = 'Check that the bv_audit-seal job runs; purge() removes them once they are sealed.';
            cutoff := unsealed;
        END IF;
        dropped := 0;
        deleted := 0;
        -- The seals that lose entries must check out first: a purge
        -- re-attests what it leaves of them, and must not launder a
        -- deletion made before it.
        SELECT array_agg(DISTINCT e.seal_no) INTO trimmed
          FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.audit_ts < cutoff;
        IF trimmed IS NOT NULL THEN
            bad := bv_audit._seal_entries_mismatch(t.id, trimmed);
            IF bad IS NOT NULL THEN
                RAISE WARNING 'audit table "%" was not purged: seal % does not match its entries', t.audit_table, bad
                    USING ERRCODE = 'data_corrupted',
                          DETAIL = 'Purging would remove the evidence of records altered or deleted after they were sealed.',
                          HINT = 'Run bv_audit.verify() on the table and investigate; purge() leaves it alone until its seals check out.';
                CONTINUE;
            END IF;
        END IF;
        FOR part IN
            SELECT c.oid, c.relname,
                   to_date(substring(c.relname FROM '_p([0-9]{6})$'), 'YYYYMM') AS month
              FROM pg_catalog.pg_inherits i
              JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = t.audit_relid
        LOOP
            IF part.month IS NOT NULL
               AND ((part.month + interval '1 month')::timestamp AT TIME ZONE 'UTC') <= cutoff THEN
                EXECUTE format('DROP TABLE bv_audit.%I', part.relname);
                dropped := dropped + 1;
            ELSIF part.month IS NULL
                  OR (part.month::timestamp AT TIME ZONE 'UTC') < cutoff THEN
                -- The partition straddling the cut-off, and the default one.
                deleted := deleted + bv_audit._purge_delete(part.oid, cutoff);
            END IF;
        END LOOP;
        DELETE FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.audit_ts < cutoff;
        GET DIAGNOSTICS removed = ROW_COUNT;
        -- The boundary: a link saying what was removed and re-attesting
        -- what is left of each trimmed seal.
        IF removed > 0 OR deleted > 0 OR dropped > 0 THEN
            PERFORM bv_audit._purge_link(t.id, cutoff, removed, coalesce(trimmed, '{}'));
        END IF;
        UPDATE bv_audit.tracked tr SET purged_before = cutoff WHERE tr.id = t.id;
        audit_table := t.audit_table;
        dropped_partitions := dropped;
        deleted_rows := deleted;
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION bv_audit.purge() IS
'Removes audit records older than each table''s retention that a seal covers: drops whole expired partitions and trims the one straddling the cut-off, then appends a purge link to the table''s seal chain that re-attests what is left of each trimmed seal. Records not sealed yet are kept (a WARNING says so) until bv_audit.seal() covers them. Skips (with a WARNING) a table whose trimmed seals no longer match their entries. The only way audit records are ever deleted; scheduled daily through pg_cron.';

-- END red-team block
------------------------------------------------------------------------

------------------------------------------------------------------------
-- BEGIN red-team block: stamp columns cannot be rewritten by DDL
--
-- The stamp trigger makes created_* unforgeable for writers, and the
-- capture guard stops a table's owner from disabling it; but the owner
-- (not a superuser) could still rewrite every stamp with
-- ALTER TABLE t ALTER COLUMN created_by TYPE text USING 'anyone': a table
-- rewrite fires no row trigger.  This guard refuses a type change with
-- USING of a stamp column of a stamped table unless the session's role is
-- a superuser.  It is SECURITY DEFINER (bv_audit._rewritten_columns() is
-- not executable by PUBLIC) and judges the issuer by is_superuser, which
-- follows SET ROLE and SET SESSION AUTHORIZATION, not SECURITY DEFINER
-- (bv_audit's own functions never change a stamp column's type).
------------------------------------------------------------------------

CREATE FUNCTION bv_audit._guard_stamp_rewrite()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    col name;
BEGIN
    IF pg_catalog.current_setting('is_superuser') = 'on' THEN
        RETURN;
    END IF;
    FOR r IN SELECT c.objid, c.command FROM pg_catalog.pg_event_trigger_ddl_commands() c
              WHERE c.command_tag = 'ALTER TABLE' AND c.object_type = 'table'
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                             WHERE tg.tgrelid = c.objid AND tg.tgname = 'bv_audit_stamp') LOOP
        SELECT a.attname INTO col
          FROM pg_catalog.unnest(bv_audit._rewritten_columns(r.command)) AS x(attnum)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = r.objid AND a.attnum = x.attnum
         WHERE a.attname IN ('created_by', 'created_at', 'updated_by', 'updated_at')
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'only a superuser can rewrite the stamp column % of %', col, r.objid::regclass
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'ALTER COLUMN ... TYPE ... USING would replace the values the stamp trigger wrote, and no row trigger fires during a table rewrite.',
                      HINT = 'Stamp columns record who created and changed each row; leave them to the stamp trigger.';
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION bv_audit._guard_stamp_rewrite() IS
'Internal: event trigger that refuses a non-superuser''s ALTER COLUMN ... TYPE ... USING of a stamp column (created_by, created_at, updated_by, updated_at) of a stamped table.';
REVOKE ALL ON FUNCTION bv_audit._guard_stamp_rewrite() FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_guard_stamp ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION bv_audit._guard_stamp_rewrite();

-- END red-team block
------------------------------------------------------------------------
