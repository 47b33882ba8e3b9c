-- bv_audit WAL mode (#19): enable(..., mode => 'wal'), wait_for(),
-- wal_status(), switching modes, and the errors of each.
\set SHOW_CONTEXT never

CREATE TABLE public.wl (id int PRIMARY KEY, qty int, memo text, secret text);
INSERT INTO public.wl VALUES (1, 1, 'one', 's1'), (2, 2, 'two', 's2');

-- WAL mode is off by default (no slot decodes the WAL): refused, with how
-- to turn it on.  Then on, as an operator would.
SELECT bv_audit.enable('public.wl', mode => 'wal');
SELECT count(*) AS slots_while_off FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal';
ALTER SYSTEM SET bv_audit.wal_mode = on;
SELECT pg_reload_conf();
DO $$
BEGIN
    -- the worker creates its slot once it has read the new setting
    FOR i IN 1..600 LOOP
        EXIT WHEN EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal');
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT count(*) AS slots_while_on FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal';

-- Arguments.
SELECT bv_audit.enable('public.wl', mode => 'bogus');
SELECT bv_audit.enable('public.wl', mode => repeat('x', 500));
SELECT bv_audit.enable('public.wl', history_index => 'bloom', mode => 'wal');

-- Tables WAL mode cannot record.
CREATE UNLOGGED TABLE public.wl_unlogged (id int PRIMARY KEY);
SELECT bv_audit.enable('public.wl_unlogged', mode => 'wal');
CREATE TABLE public.wl_noident (id int PRIMARY KEY);
ALTER TABLE public.wl_noident REPLICA IDENTITY NOTHING;
SELECT bv_audit.enable('public.wl_noident', mode => 'wal');
CREATE TABLE public.wl_deferred (id int PRIMARY KEY DEFERRABLE);
SELECT bv_audit.enable('public.wl_deferred', mode => 'wal');
ALTER TABLE public.wl_deferred REPLICA IDENTITY FULL;
SELECT bv_audit.enable('public.wl_deferred', mode => 'wal') IS NOT NULL AS deferred_key_with_full_identity;

-- A table with rows: its snapshot is the baseline; no row trigger.
SELECT bv_audit.enable('public.wl', exclude_columns => '{secret}', mode => 'wal');
SELECT mode, history_index, wal_lsn IS NOT NULL AS has_switch_point, wal_until FROM bv_audit.tracked
 WHERE source_table = 'wl';
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.wl'::regclass ORDER BY 1;

BEGIN;
SELECT bv.set_actor('clerk-1');
SELECT set_config('bv.traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', true) IS NOT NULL AS traced;
INSERT INTO public.wl VALUES (3, 3, 'three', 's3');
UPDATE public.wl SET qty = qty + 10, secret = 'changed' WHERE id = 1;
UPDATE public.wl SET id = 20 WHERE id = 2;
DELETE FROM public.wl WHERE id = 3;
COMMIT;
COPY public.wl FROM stdin;
4	4	four	s4
\.
SELECT bv_audit.wait_for(pg_current_wal_insert_lsn());
SELECT audit_op, audit_actor, audit_trace IS NOT NULL AS traced, audit_changed, id, qty, memo
  FROM bv_audit.public__wl ORDER BY audit_id;
-- The reading functions work unchanged.
SELECT operation, actor, row_data FROM bv_audit.history('public.wl', '{"id": 1}') ORDER BY audit_id;
SELECT j FROM bv_audit.as_of('public.wl', now()) j ORDER BY j->>'id';
SELECT slot_name, worker_pid IS NOT NULL AS running, lag_bytes >= 0 AS lag_known, wal_tables
  FROM bv_audit.wal_status();

-- DDL follows as in trigger mode; what would stop the WAL from carrying
-- the table's changes is refused.
ALTER TABLE public.wl ADD COLUMN note text DEFAULT 'n';
ALTER TABLE public.wl RENAME COLUMN memo TO label;
ALTER TABLE public.wl SET UNLOGGED;
ALTER TABLE public.wl REPLICA IDENTITY NOTHING;
UPDATE public.wl SET label = 'ONE' WHERE id = 1;
SELECT bv_audit.wait_for(pg_current_wal_insert_lsn());
SELECT audit_op, audit_changed, id, label, note FROM bv_audit.public__wl
 WHERE audit_id > (SELECT max(audit_id) FROM bv_audit.public__wl WHERE audit_op = 'I' AND id = 4) ORDER BY audit_id;

-- The marker is guarded like the capture triggers.
CREATE ROLE wl_owner;
ALTER TABLE public.wl OWNER TO wl_owner;
SET ROLE wl_owner;
DROP TRIGGER bv_audit_wal ON public.wl;
ALTER TABLE public.wl DISABLE TRIGGER bv_audit_wal;
RESET ROLE;

-- Back to trigger mode: the capture triggers record from the switch on.
SELECT bv_audit.enable('public.wl', mode => 'trigger');
SELECT mode, wal_until IS NOT NULL AS window_closed FROM bv_audit.tracked WHERE source_table = 'wl';
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.wl'::regclass ORDER BY 1;
UPDATE public.wl SET qty = 0 WHERE id = 4;
SELECT audit_op, id, qty FROM bv_audit.public__wl ORDER BY audit_id DESC LIMIT 1;
-- Left out, the mode stays.
SELECT bv_audit.enable('public.wl') IS NOT NULL AS again;
SELECT mode FROM bv_audit.tracked WHERE source_table = 'wl';

-- Values are converted by their audit column's type (the C worker, ADR
-- 0013 amendment): a bytea key (wal2json writes bare hex; 0.4.0 missed the
-- key's last record, so the UPDATE named every column), a numeric whose
-- scale changes (compared by stored value, as trigger mode compares), a
-- jsonb document and an array.
CREATE TABLE public.wl_types (k bytea PRIMARY KEY, n numeric, j jsonb, a int[], t text);
INSERT INTO public.wl_types VALUES ('\x0102', 1.0, '{"x": [1, "two"]}', '{1,2}', E'quote " back \\ tab\t');
SELECT bv_audit.enable('public.wl_types', mode => 'wal') IS NOT NULL AS enabled;
UPDATE public.wl_types SET n = 1.00 WHERE k = '\x0102';
UPDATE public.wl_types SET j = '"text"', a = '{3}' WHERE k = '\x0102';
UPDATE public.wl_types SET k = '\xff' WHERE k = '\x0102';
DELETE FROM public.wl_types WHERE k = '\xff';
SELECT bv_audit.wait_for(pg_current_wal_insert_lsn());
SELECT audit_op, audit_changed, k, n, j, a, t FROM bv_audit.public__wl_types ORDER BY audit_id;
SELECT bv_audit.disable('public.wl_types') IS NOT NULL AS disabled;
DROP TABLE public.wl_types;

-- wait_for(): arguments and isolation.
SELECT bv_audit.wait_for(NULL);
SELECT bv_audit.wait_for('0/0', NULL);
SELECT bv_audit.wait_for('0/0', interval '-1 second');
SELECT bv_audit.wait_for('0/0', interval '2 days');
SELECT bv_audit.wait_for('0/0', interval '0');
SELECT bv_audit.wait_for('FFFFFFFF/FFFFFFFF', interval '10 milliseconds');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT bv_audit.wait_for('0/0');
ROLLBACK;

-- Writers cannot call the worker's functions nor read its state.
SET ROLE bv_user;
SELECT bv_audit.wait_for('0/0');
SELECT * FROM bv_audit.wal_progress;
SELECT bv_audit._wal_apply('bv_audit_wal', 1, false);
RESET ROLE;

SELECT bv_audit.disable('public.wl_deferred');
DROP TABLE public.wl, public.wl_unlogged, public.wl_noident, public.wl_deferred;
DROP ROLE wl_owner;

-- WAL mode off again (the worker drops its slot once no table is in WAL
-- mode).
ALTER SYSTEM RESET bv_audit.wal_mode;
SELECT pg_reload_conf();
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal');
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT count(*) AS slots_after_off FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal';
