-- Red-team review: purge() removed records that no seal covered yet.  With
-- a retention shorter than the time to the next seal (or while the seal
-- job did not run), a change's record could be erased before the chain
-- ever attested it.  Now purge() removes sealed records only and warns
-- about the ones it keeps.
\set VERBOSITY terse

CREATE TABLE public.rt_ledger (id int PRIMARY KEY, amount int);
SELECT bv_audit.enable('public.rt_ledger') IS NOT NULL AS enabled;
INSERT INTO public.rt_ledger VALUES (1, 100), (2, 200);
SELECT bv_audit.seal() > 0 AS sealed;
-- A change after the seal: its record is not sealed yet.
UPDATE public.rt_ledger SET amount = 999 WHERE id = 1;
-- The shortest retention bv_admin can set.
SELECT bv_audit.set_retention('public.rt_ledger', '1 microsecond');
SET ROLE bv_admin;
SELECT audit_table, dropped_partitions, deleted_rows FROM bv_audit.purge() WHERE audit_table = 'public__rt_ledger';
RESET ROLE;
-- The sealed records are gone, the unsealed one is kept and verifies.
SELECT audit_op, id, amount FROM bv_audit.public__rt_ledger ORDER BY audit_id;
SELECT ok, problem FROM bv_audit.verify('public.rt_ledger');
-- Once sealed, it goes too.
SELECT bv_audit.seal() > 0 AS sealed;
SELECT audit_table, dropped_partitions, deleted_rows FROM bv_audit.purge() WHERE audit_table = 'public__rt_ledger';
SELECT count(*) AS left_over FROM bv_audit.public__rt_ledger;
SELECT ok, problem FROM bv_audit.verify('public.rt_ledger');

SELECT bv_audit.disable('public.rt_ledger');
DROP TABLE public.rt_ledger;
