-- Tamper evidence that holds (issue #18 items 10-12): records from the
-- future, deletions after a purge, digests independent of session settings.
\set SHOW_CONTEXT never

-- Seal until every record of the table is covered (a seal takes only the
-- records of transactions that have ended).
CREATE FUNCTION pg_temp.seal_until_covered(tbl regclass) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    aname name := (SELECT t.audit_table FROM bv_audit.tracked t WHERE t.relid = tbl);
    left_over bigint;
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM bv_audit.seal();
        EXECUTE format('SELECT count(*) FROM bv_audit.%I a WHERE NOT EXISTS '
                       '(SELECT FROM bv_audit.seal_entries e JOIN bv_audit.tracked t ON t.id = e.tracked_id '
                       '  WHERE t.relid = $1 AND e.audit_id = a.audit_id)', aname)
            INTO left_over USING tbl;
        IF left_over = 0 THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END
$$;

-- ---- 10. A forged record with a transaction id not assigned yet ----
CREATE TABLE public.tf (id int PRIMARY KEY, v text);
SELECT bv_audit.enable('public.tf') IS NOT NULL AS enabled;
INSERT INTO public.tf VALUES (1, 'one'), (2, 'two');
SELECT pg_temp.seal_until_covered('public.tf') AS sealed;
SELECT ok, problem FROM bv_audit.verify('public.tf');
-- A superuser writes a record that claims a transaction 10^9 ids ahead.
INSERT INTO bv_audit.public__tf (audit_op, audit_xid, audit_actor, audit_ts, id, v)
VALUES ('U', (pg_current_xact_id()::text::bigint + 1000000000)::text::xid8, 'forger', now(), 1, 'forged');
SELECT ok, problem, audit_id = (SELECT audit_id FROM bv_audit.public__tf WHERE audit_actor = 'forger') AS names_it
  FROM bv_audit.verify('public.tf');
-- history() and as_of() do not show it.
SELECT operation, row_data->>'v' AS v FROM bv_audit.history('public.tf', '{"id": 1}') ORDER BY audit_id;
SELECT j->>'v' AS v FROM bv_audit.as_of('public.tf', now()) j ORDER BY 1;
SELECT count(*) AS forged_changes FROM bv_audit.changes('public.tf', now() - interval '1 hour', now() + interval '1 hour')
 WHERE actor = 'forger';
-- Sealing leaves it outside every seal.
SELECT bv_audit.seal() >= 0 AS sealed;
SELECT count(*) AS forged_sealed FROM bv_audit.seal_entries e
  JOIN bv_audit.public__tf a ON a.audit_id = e.audit_id WHERE a.audit_actor = 'forger';
SET session_replication_role = replica;
DELETE FROM bv_audit.public__tf WHERE audit_actor = 'forger';
RESET session_replication_role;
SELECT ok, problem FROM bv_audit.verify('public.tf');
-- The reader's own transaction's records are not from the future.
BEGIN;
UPDATE public.tf SET v = 'mine' WHERE id = 2;
SELECT operation, row_data->>'v' AS v FROM bv_audit.history('public.tf', '{"id": 2}') ORDER BY audit_id;
-- (its records carry the capture clock: later than now(), the start)
SELECT j->>'v' AS v FROM bv_audit.as_of('public.tf', clock_timestamp()) j ORDER BY 1;
SELECT ok, problem FROM bv_audit.verify('public.tf');
ROLLBACK;

-- ---- 11. Deletions after a purge ----
-- A purge that removed nothing used to switch the seals' batch check off.
CREATE TABLE public.tq (id int PRIMARY KEY, v int);
SELECT bv_audit.enable('public.tq') IS NOT NULL AS enabled;
INSERT INTO public.tq SELECT g, g FROM generate_series(1, 5) g;
SELECT pg_temp.seal_until_covered('public.tq') AS sealed;
SELECT bv_audit.set_retention('public.tq', '100 years');
SELECT audit_table, dropped_partitions, deleted_rows FROM bv_audit.purge() WHERE audit_table = 'public__tq';
SELECT count(*) AS purge_links FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.relid = 'public.tq'::regclass AND s.kind = 'purge';
SELECT ok, problem FROM bv_audit.verify('public.tq');
-- A superuser deletes a sealed record and its seal entry.
SELECT audit_id AS victim FROM bv_audit.public__tq WHERE id = 3 \gset
CREATE TEMP TABLE saved_tq AS SELECT * FROM bv_audit.public__tq WHERE audit_id = :victim;
CREATE TEMP TABLE saved_tq_entry AS SELECT * FROM bv_audit.seal_entries WHERE audit_id = :victim;
SET session_replication_role = replica;
DELETE FROM bv_audit.public__tq WHERE audit_id = :victim;
RESET session_replication_role;
DELETE FROM bv_audit.seal_entries WHERE audit_id = :victim;
SELECT ok, problem, seal_no = (SELECT seal_no FROM saved_tq_entry) AS names_seal FROM bv_audit.verify('public.tq');
INSERT INTO bv_audit.public__tq SELECT * FROM saved_tq;
INSERT INTO bv_audit.seal_entries SELECT * FROM saved_tq_entry;
SELECT ok, problem FROM bv_audit.verify('public.tq');

-- A purge that removes sealed records: old records (2020, in the default
-- partition) sealed with current ones, then purged.
CREATE TABLE public.tp (id int PRIMARY KEY, v int);
SELECT bv_audit.enable('public.tp') IS NOT NULL AS enabled;
INSERT INTO public.tp SELECT g, g FROM generate_series(1, 4) g;
INSERT INTO bv_audit.public__tp (audit_op, audit_xid, audit_actor, audit_ts, id, v)
SELECT 'I', pg_current_xact_id(), 'importer', ts, 100 + n, n
  FROM (VALUES (1, '2020-01-10 00:00+00'::timestamptz), (2, '2020-02-10 00:00+00'),
               (3, '2020-03-10 00:00+00')) AS v(n, ts);
SELECT pg_temp.seal_until_covered('public.tp') AS sealed;
SELECT ok, problem FROM bv_audit.verify('public.tp');
SELECT bv_audit.set_retention('public.tp', now() - '2020-02-01 00:00+00'::timestamptz);
SELECT audit_table, dropped_partitions, deleted_rows FROM bv_audit.purge() WHERE audit_table = 'public__tp';
-- The purge link says how many entries it removed and re-attests what it
-- left of each seal it trimmed.
SELECT s.kind, s.row_count AS removed, s.xid_lo = s.xid_hi AS covers_no_range, s.purged_before IS NOT NULL AS has_cutoff,
       (SELECT count(*) FROM bv_audit.seal_remainders m WHERE m.tracked_id = s.tracked_id AND m.purge_no = s.seal_no) AS remainders
  FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.relid = 'public.tp'::regclass AND s.kind = 'purge';
SELECT ok, problem FROM bv_audit.verify('public.tp');
-- Deleting a record that survived the purge, with its entry, is seen.
SELECT audit_id AS victim FROM bv_audit.public__tp WHERE id = 103 \gset
CREATE TEMP TABLE saved_tp AS SELECT * FROM bv_audit.public__tp WHERE audit_id = :victim;
CREATE TEMP TABLE saved_tp_entry AS SELECT * FROM bv_audit.seal_entries WHERE audit_id = :victim;
SET session_replication_role = replica;
DELETE FROM bv_audit.public__tp WHERE audit_id = :victim;
RESET session_replication_role;
DELETE FROM bv_audit.seal_entries WHERE audit_id = :victim;
SELECT ok, problem FROM bv_audit.verify('public.tp');
-- A purge does not launder it: it leaves the table alone while the seal
-- it would trim does not check out.
SELECT bv_audit.set_retention('public.tp', now() - '2020-03-01 00:00+00'::timestamptz);
SELECT audit_table, dropped_partitions, deleted_rows FROM bv_audit.purge() WHERE audit_table = 'public__tp';
SELECT count(*) AS still_there FROM bv_audit.public__tp WHERE audit_ts < '2021-01-01';
INSERT INTO bv_audit.public__tp SELECT * FROM saved_tp;
INSERT INTO bv_audit.seal_entries SELECT * FROM saved_tp_entry;
SELECT ok, problem FROM bv_audit.verify('public.tp');
SELECT audit_table, dropped_partitions, deleted_rows FROM bv_audit.purge() WHERE audit_table = 'public__tp';
SELECT ok, problem FROM bv_audit.verify('public.tp');
-- Deleting the purge link, or altering what it left, breaks the chain.
BEGIN;
DELETE FROM bv_audit.seals s USING bv_audit.tracked t
 WHERE t.id = s.tracked_id AND t.relid = 'public.tp'::regclass
   AND s.seal_no = (SELECT min(x.seal_no) FROM bv_audit.seals x WHERE x.tracked_id = t.id AND x.kind = 'purge');
SELECT ok, problem FROM bv_audit.verify('public.tp');
ROLLBACK;
BEGIN;
UPDATE bv_audit.seal_remainders m SET row_count = row_count - 1 FROM bv_audit.tracked t
 WHERE t.id = m.tracked_id AND t.relid = 'public.tp'::regclass;
SELECT ok, problem FROM bv_audit.verify('public.tp');
ROLLBACK;
-- Every column of a link is chained: moving a seal's range is seen.
BEGIN;
UPDATE bv_audit.seals s SET ts_floor = ts_floor + interval '1 day' FROM bv_audit.tracked t
 WHERE t.id = s.tracked_id AND t.relid = 'public.tp'::regclass AND s.seal_no = 1;
SELECT ok, problem, seal_no FROM bv_audit.verify('public.tp');
ROLLBACK;
SELECT ok, problem FROM bv_audit.verify('public.tp');

-- ---- 12. Digests do not depend on the session's settings ----
CREATE TABLE public.ts_kinds (id int PRIMARY KEY, at timestamptz, day date, stamp timestamp,
                              span interval, raw bytea, ratio float8, small float4, price money,
                              amount numeric, doc jsonb, moment timetz);
SELECT bv_audit.enable('public.ts_kinds') IS NOT NULL AS enabled;
INSERT INTO public.ts_kinds VALUES
    (1, '2026-03-29 01:30:00.123456+00', '2026-02-28', '2026-02-28 23:59:59.5', '1 year 2 mons 3 days 04:05:06.7',
     '\x00ff5c27'::bytea, 0.1, 0.1, 12.34, 1.50, '{"at": "x", "n": 1.0}', '10:00+05:30'),
    (2, '1999-12-31 23:00-08', '0044-03-15 BC', NULL, '-3 days -00:00:01', ''::bytea, 1e300, -0.0, -1, 0, '[]', NULL);
SELECT bv_audit.row_digest(a.*) AS d1 FROM bv_audit.public__ts_kinds a WHERE a.id = 1 \gset
SET TimeZone = 'Asia/Kolkata';
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = 'sql_standard';
SET bytea_output = 'escape';
SET extra_float_digits = -3;
SELECT bv_audit.row_digest(a.*) = :'d1' AS same_digest FROM bv_audit.public__ts_kinds a WHERE a.id = 1;
SELECT pg_temp.seal_until_covered('public.ts_kinds') AS sealed;
SELECT ok, problem FROM bv_audit.verify('public.ts_kinds');
SET TimeZone = 'America/Los_Angeles';
SET DateStyle = 'German';
SET IntervalStyle = 'iso_8601';
SET bytea_output = 'hex';
SET extra_float_digits = 3;
SELECT ok, problem FROM bv_audit.verify('public.ts_kinds');
SELECT bv_audit.row_digest(a.*) = :'d1' AS same_digest FROM bv_audit.public__ts_kinds a WHERE a.id = 1;
-- The session's settings are its own again after each digest.
SELECT current_setting('TimeZone') AS tz, current_setting('DateStyle') AS ds,
       current_setting('IntervalStyle') AS ist, current_setting('extra_float_digits') AS efd;
RESET TimeZone;
RESET DateStyle;
RESET IntervalStyle;
RESET bytea_output;
RESET extra_float_digits;
-- An altered value is still seen, whatever the settings.
SET session_replication_role = replica;
UPDATE bv_audit.public__ts_kinds SET at = at + interval '1 microsecond' WHERE id = 2;
RESET session_replication_role;
SET TimeZone = 'Asia/Kolkata';
SELECT ok, problem FROM bv_audit.verify('public.ts_kinds');
RESET TimeZone;

-- While a backend does not report its activity (track_activities off), the
-- start times of its transactions are unknown: the floor stays put.
CREATE TABLE public.tt (id int PRIMARY KEY);
SELECT bv_audit.enable('public.tt') IS NOT NULL AS enabled;
INSERT INTO public.tt VALUES (1);
SELECT pg_temp.seal_until_covered('public.tt') AS sealed;
SET track_activities = off;
INSERT INTO public.tt VALUES (2);
SELECT pg_temp.seal_until_covered('public.tt') AS sealed;
RESET track_activities;
SELECT count(*) AS seals, count(DISTINCT s.ts_floor) AS floors
  FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.relid = 'public.tt'::regclass;

-- seal() in a repeatable read transaction could miss records: refused.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT bv_audit.seal();
ROLLBACK;
-- So is purge(), which must see the seals that commit while it waits.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM bv_audit.purge();
ROLLBACK;
