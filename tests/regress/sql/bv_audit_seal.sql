-- Tamper evidence: seal() chains digests of audit records, verify() checks them.
\set SHOW_CONTEXT never

CREATE TABLE public.vault (id int PRIMARY KEY, amount bigint NOT NULL);
SELECT bv_audit.enable('public.vault') IS NOT NULL AS enabled;
INSERT INTO public.vault SELECT g, g * 10 FROM generate_series(1, 20) g;
UPDATE public.vault SET amount = amount + 1 WHERE id <= 5;
DELETE FROM public.vault WHERE id = 20;
SELECT max(audit_id) AS last_id, count(*) AS records FROM bv_audit.public__vault \gset

-- Seal until the seal covers every record: a seal takes only records of
-- transactions that have ended, so wait for any concurrent one to finish.
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM bv_audit.seal();
        EXIT WHEN (SELECT max(e.audit_id) FROM bv_audit.seal_entries e
                    JOIN bv_audit.tracked t ON t.id = e.tracked_id
                   WHERE t.relid = 'public.vault'::regclass)
                  = (SELECT max(audit_id) FROM bv_audit.public__vault);
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT sum(s.row_count) = :records AS all_sealed, max(s.last_audit_id) = :last_id AS up_to_last,
       bool_and(length(s.chain_digest) = 32) AS sha256
  FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.relid = 'public.vault'::regclass;
SELECT ok, seals_checked >= 1 AS sealed, records_checked = :records AS all_checked, problem
  FROM bv_audit.verify('public.vault');

-- Sealing again without new records adds nothing to this chain.
SELECT count(*) AS seals FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.relid = 'public.vault'::regclass \gset
SELECT bv_audit.seal() >= 0 AS sealed;
SELECT count(*) = :seals AS no_empty_seal FROM bv_audit.seals s JOIN bv_audit.tracked t ON t.id = s.tracked_id
 WHERE t.relid = 'public.vault'::regclass;

-- A superuser who switches triggers off can change a record; verify() names it.
SELECT audit_id AS victim FROM bv_audit.public__vault WHERE audit_op = 'U' ORDER BY audit_id LIMIT 1 \gset
SET session_replication_role = replica;
UPDATE bv_audit.public__vault SET amount = 999999 WHERE audit_id = :victim;
RESET session_replication_role;
SELECT ok, problem, audit_id = :victim AS names_victim FROM bv_audit.verify('public.vault');
-- Putting the value back restores the proof.
SET session_replication_role = replica;
UPDATE bv_audit.public__vault SET amount = 11 WHERE audit_id = :victim;
RESET session_replication_role;
SELECT ok, problem FROM bv_audit.verify('public.vault');

-- A deleted record is reported missing.
CREATE TEMP TABLE saved AS SELECT * FROM bv_audit.public__vault WHERE audit_id = :victim;
SET session_replication_role = replica;
DELETE FROM bv_audit.public__vault WHERE audit_id = :victim;
RESET session_replication_role;
SELECT ok, problem, audit_id = :victim AS names_victim FROM bv_audit.verify('public.vault');
INSERT INTO bv_audit.public__vault SELECT * FROM saved;
SELECT ok, problem FROM bv_audit.verify('public.vault');

-- A record slipped in among sealed ones (an old transaction id) is reported.
INSERT INTO bv_audit.public__vault (audit_op, audit_xid, audit_actor, audit_ts, id, amount)
VALUES ('U', '3', 'forger', now(), 1, 5);
SELECT ok, problem, audit_id > :last_id AS names_forgery FROM bv_audit.verify('public.vault');
SET session_replication_role = replica;
DELETE FROM bv_audit.public__vault WHERE audit_actor = 'forger';
RESET session_replication_role;
SELECT ok, problem FROM bv_audit.verify('public.vault');

-- A rewritten seal breaks the chain.
UPDATE bv_audit.seals s SET batch_digest = sha256('x')
  FROM bv_audit.tracked t WHERE t.id = s.tracked_id AND t.relid = 'public.vault'::regclass AND s.seal_no = 1;
SELECT ok, problem, seal_no FROM bv_audit.verify('public.vault');

-- Refusals and privileges.
CREATE TABLE public.untracked (id int PRIMARY KEY);
SELECT * FROM bv_audit.verify('public.untracked');
DROP TABLE public.untracked;
SET ROLE bv_user;
SELECT bv_audit.seal();
SELECT * FROM bv_audit.verify('public.vault');
RESET ROLE;
