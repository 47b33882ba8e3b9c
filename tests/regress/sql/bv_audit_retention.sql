-- Retention: set_retention(), purge(), partitions created ahead.
\set SHOW_CONTEXT never

CREATE TABLE public.ledger (id int PRIMARY KEY, amount bigint);
SELECT bv_audit.enable('public.ledger') IS NOT NULL AS enabled;
INSERT INTO public.ledger SELECT g, g * 100 FROM generate_series(1, 5) g;

-- Old records, as if written years ago: a partition for January 2020 and
-- records of mid-2020 in the default partition (its month had no partition).
SELECT bv_audit._create_partition(t, '2020-01-15') AS created
  FROM bv_audit.tracked t WHERE t.relid = 'public.ledger'::regclass;
INSERT INTO bv_audit.public__ledger (audit_op, audit_xid, audit_actor, audit_ts, id, amount)
SELECT 'I', '1', 'importer', ts, 100 + n, n
  FROM (VALUES (1, '2020-01-10 00:00+00'::timestamptz), (2, '2020-01-20 00:00+00'),
               (3, '2020-06-01 00:00+00'), (4, '2020-07-01 00:00+00')) AS v(n, ts);
SELECT tableoid::regclass AS partition, count(*) FROM bv_audit.public__ledger
 WHERE audit_ts < '2021-01-01' GROUP BY 1 ORDER BY 1;
-- A partition cannot be created for a month the default partition holds records of.
SELECT bv_audit._create_partition(t, '2020-06-01') AS created
  FROM bv_audit.tracked t WHERE t.relid = 'public.ledger'::regclass;

-- No retention set: purge() leaves everything.
SELECT * FROM bv_audit.purge() WHERE audit_table = 'public__ledger';
SELECT count(*) AS old_records FROM bv_audit.public__ledger WHERE audit_ts < '2021-01-01';

-- Keep what is newer than 2020-06-15: January 2020 is dropped whole, the
-- default partition is trimmed, recent records stay.
SELECT bv_audit.set_retention('public.ledger', now() - '2020-06-15 00:00+00'::timestamptz);
-- purge() removes sealed records only (0.4.0): seal them first.
SELECT bv_audit.seal() > 0 AS sealed;
SELECT * FROM bv_audit.purge() WHERE audit_table = 'public__ledger';
SELECT to_regclass('bv_audit.public__ledger_p202001') AS january_2020;
SELECT audit_ts, id FROM bv_audit.public__ledger WHERE audit_ts < '2021-01-01' ORDER BY audit_ts;
SELECT count(*) AS recent_records FROM bv_audit.public__ledger WHERE audit_ts > now() - interval '1 day';
SELECT purged_before IS NOT NULL AS purged FROM bv_audit.tracked WHERE relid = 'public.ledger'::regclass;
-- Purging is the only deletion, and only through purge(): the guard is back.
DELETE FROM bv_audit.public__ledger WHERE audit_ts < '2021-01-01';
SET ROLE bv_admin;
SELECT bv_audit._purge_delete('bv_audit.public__ledger'::regclass, now());
RESET ROLE;

-- Partitions ahead: create_partitions() fills gaps and is idempotent.
SELECT c.relname AS dropped_ahead
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'bv_audit.public__ledger'::regclass
   AND c.relname = 'public__ledger_p' || to_char(now() AT TIME ZONE 'UTC' + interval '2 months', 'YYYYMM') \gset
DROP TABLE bv_audit.:dropped_ahead;
SELECT bv_audit.create_partitions() >= 1 AS created_missing;
SELECT to_regclass('bv_audit.' || :'dropped_ahead') IS NOT NULL AS recreated;
SELECT bv_audit.create_partitions();
SELECT bv_audit.create_partitions(-1);

-- Refusals.
SELECT bv_audit.set_retention('public.ledger', '-1 day');
SELECT bv_audit.set_retention('public.ledger', '0');
CREATE TABLE public.untracked (id int PRIMARY KEY);
SELECT bv_audit.set_retention('public.untracked', '1 year');
DROP TABLE public.untracked;
-- Retention can be lifted again.
SELECT bv_audit.set_retention('public.ledger', NULL);
SELECT retention FROM bv_audit.tracked WHERE relid = 'public.ledger'::regclass;

-- The jobs are scheduled through pg_cron at install.
SELECT jobname, schedule, command FROM cron.job WHERE jobname LIKE 'bv_audit-%' ORDER BY jobname;
SELECT bv_audit.schedule_jobs();
SELECT count(*) AS jobs FROM cron.job WHERE jobname LIKE 'bv_audit-%';
