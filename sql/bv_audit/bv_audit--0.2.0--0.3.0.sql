/*
 * bv_audit 0.2.0 -> 0.3.0: hardening (issues #17, #18, #27).
 *
 * A fresh install of 0.3.0 runs bv_audit--0.1.0.sql and the upgrade scripts in
 * order.  Each section below names the issue item it fixes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.3.0'" to load this file. \quit


-- ===========================================================================
-- #18 items 9-13: tamper evidence that holds (seal, verify, purge, digests)
--
-- 9.  seal() reads the running transactions before its snapshot and takes
--     the floor of the next seal from them, from the committed records it
--     leaves for the next seal, and from the clock; never from a list read
--     after the snapshot (which missed transactions that ended in between).
-- 10. verify() reports records whose transaction id has not been assigned
--     yet (forged from the future).
-- 11. Links of the chain cover their own metadata; purge() appends a purge
--     link that re-attests what is left of each seal it trimmed, after
--     checking those seals; verify() checks every seal against its entries
--     or its latest purge link, never skipping.
-- 12. Record digests are computed under fixed settings (format 2);
--     seals taken before 0.3.0 keep format 1.
-- 13. Generated SQL refers to whole rows as alias.*, which no column name
--     can shadow; one audit table that cannot be sealed no longer stops
--     the others.
-- ===========================================================================

-- 12. Digests: format 2 (canonical settings) and format 1 (before 0.3.0).
COMMENT ON FUNCTION bv_audit.row_digest(record) IS
'SHA-256 digest of an audit record over (attnum, text) of its non-NULL columns, the text computed under fixed settings (TimeZone UTC, DateStyle ISO, IntervalStyle postgres, extra_float_digits 1, bytea_output hex, lc_monetary C, search_path pg_catalog) whatever the session''s: stable across sessions and across the renames, added columns and widening type changes bv_audit mirrors. The digest of seals of format 2.';

CREATE FUNCTION bv_audit._row_digest_v1(record)
RETURNS bytea
AS 'MODULE_PATHNAME', 'bv_audit_row_digest_v1'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION bv_audit._row_digest_v1(record) IS
'Internal to verify(): the record digest of seals taken before 0.3.0 (format 1), computed under the session''s default (reset) settings as the sealer''s session had them (verify() also accepts the canonical digest for them: the 0.3.0 library computes it even before ALTER EXTENSION UPDATE).';
REVOKE ALL ON FUNCTION bv_audit._row_digest_v1(record) FROM PUBLIC;

-- 11. Links: seals and purges, their format, and what purges leave.
ALTER TABLE bv_audit.seals
    ADD COLUMN kind text NOT NULL DEFAULT 'seal',
    ADD COLUMN format smallint NOT NULL DEFAULT 1,
    ADD COLUMN purged_before timestamptz,
    ADD CONSTRAINT seals_kind_check CHECK (kind IN ('seal', 'purge')),
    ADD CONSTRAINT seals_format_check CHECK (format IN (1, 2));
ALTER TABLE bv_audit.seals ALTER COLUMN format SET DEFAULT 2;
COMMENT ON TABLE bv_audit.seals IS
'The chain of each audit table, one link per row: a seal covers the records written by transactions with xid_lo <= xid < xid_hi; a purge link (xid_lo = xid_hi) records what purge() removed and re-attests what it left of each seal (bv_audit.seal_remainders). chain_digest = sha256(previous chain_digest || link header || batch_digest) (format 2; format 1: without the header).';
COMMENT ON COLUMN bv_audit.seals.kind IS 'seal: covers records; purge: records a purge (see seal_remainders).';
COMMENT ON COLUMN bv_audit.seals.format IS '1: taken before 0.3.0 (digests under the sealer''s settings, header not chained); 2: canonical digests, every column of the link chained.';
COMMENT ON COLUMN bv_audit.seals.purged_before IS 'For a purge link: records older than this were removed.';
COMMENT ON COLUMN bv_audit.seals.row_count IS 'Seal: records covered. Purge: seal entries removed.';
COMMENT ON COLUMN bv_audit.seals.batch_digest IS 'Seal: sha256 over (audit_id, record digest) of the covered records in audit_id order. Purge: sha256 over (seal_no, row_count, digest) of its remainders in seal_no order.';
COMMENT ON COLUMN bv_audit.seals.ts_floor IS 'No record of a transaction with an id from xid_hi on is older than this: the next seal scans records from here on.';

CREATE TABLE bv_audit.seal_remainders (
    tracked_id integer NOT NULL,
    purge_no   integer NOT NULL,
    seal_no    integer NOT NULL,
    row_count  bigint NOT NULL,
    digest     bytea NOT NULL,
    PRIMARY KEY (tracked_id, purge_no, seal_no),
    FOREIGN KEY (tracked_id, purge_no) REFERENCES bv_audit.seals ON DELETE CASCADE
);
COMMENT ON TABLE bv_audit.seal_remainders IS
'What a purge left of each seal whose records it removed: verify() checks such a seal''s remaining entries against its latest remainder instead of its batch_digest. Chained through the purge link''s batch_digest.';
COMMENT ON COLUMN bv_audit.seal_remainders.tracked_id IS 'The tracked table (bv_audit.tracked.id).';
COMMENT ON COLUMN bv_audit.seal_remainders.purge_no IS 'The purge link (bv_audit.seals.seal_no, kind purge).';
COMMENT ON COLUMN bv_audit.seal_remainders.seal_no IS 'The seal trimmed by the purge.';
COMMENT ON COLUMN bv_audit.seal_remainders.row_count IS 'Entries of the seal left after the purge.';
COMMENT ON COLUMN bv_audit.seal_remainders.digest IS 'sha256 over (audit_id, digest) of the entries left, in audit_id order.';
REVOKE ALL ON bv_audit.seal_remainders FROM PUBLIC;
GRANT SELECT ON bv_audit.seal_remainders TO bv_admin;

-- The part of a format-2 link that is chained besides its batch digest:
-- every column but the digests, in a text form that no setting changes.
CREATE FUNCTION bv_audit._link_header(s bv_audit.seals)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.convert_to(pg_catalog.concat_ws('|', 'bv_audit link 2',
               s.tracked_id, s.seal_no, s.kind, s.format, s.xid_lo, s.xid_hi,
               coalesce((extract(epoch FROM s.ts_floor) * 1000000)::text, '-'),
               s.row_count, coalesce(s.first_audit_id::text, '-'), coalesce(s.last_audit_id::text, '-'),
               coalesce((extract(epoch FROM s.purged_before) * 1000000)::text, '-'),
               coalesce((extract(epoch FROM s.sealed_at) * 1000000)::text, '-')), 'UTF8')
$$;
COMMENT ON FUNCTION bv_audit._link_header(bv_audit.seals) IS
'Internal: the metadata of a chain link (format 2) as bytes, chained with its batch digest so that no column of a link can change unnoticed.';
REVOKE ALL ON FUNCTION bv_audit._link_header(bv_audit.seals) FROM PUBLIC;

-- The first seal whose entries (count, and SHA-256 over (audit_id, digest)
-- in audit_id order) match neither its batch digest nor, when a purge
-- trimmed it, its latest remainder; only among the seals given (all when
-- NULL).  Entries filed under a purge link count as a mismatch too.
CREATE FUNCTION bv_audit._seal_entries_mismatch(tid integer, only_seals integer[] DEFAULT NULL)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH agg AS (
        SELECT e.seal_no, count(*) AS cnt,
               pg_catalog.sha256(pg_catalog.string_agg(pg_catalog.int8send(e.audit_id) || e.digest, ''::bytea
                                                       ORDER BY e.audit_id)) AS digest
          FROM bv_audit.seal_entries e
         WHERE e.tracked_id = tid AND (only_seals IS NULL OR e.seal_no = ANY (only_seals))
         GROUP BY e.seal_no),
    rem AS (
        SELECT DISTINCT ON (m.seal_no) m.seal_no, m.row_count, m.digest
          FROM bv_audit.seal_remainders m
         WHERE m.tracked_id = tid AND (only_seals IS NULL OR m.seal_no = ANY (only_seals))
         ORDER BY m.seal_no, m.purge_no DESC)
    SELECT min(x.seal_no)
      FROM bv_audit.seals x
      LEFT JOIN agg ON agg.seal_no = x.seal_no
      LEFT JOIN rem ON rem.seal_no = x.seal_no
     WHERE x.tracked_id = tid AND (only_seals IS NULL OR x.seal_no = ANY (only_seals))
       AND (x.kind <> 'seal' AND agg.seal_no IS NOT NULL
            OR x.kind = 'seal'
               AND (coalesce(agg.cnt, 0), coalesce(agg.digest, pg_catalog.sha256(''::bytea)))
                   IS DISTINCT FROM (coalesce(rem.row_count, x.row_count), coalesce(rem.digest, x.batch_digest)))
$$;
COMMENT ON FUNCTION bv_audit._seal_entries_mismatch(integer, integer[]) IS
'Internal to verify() and purge(): the first seal of a table whose entries no longer match its batch digest (or the remainder its latest purge left), or NULL.';
REVOKE ALL ON FUNCTION bv_audit._seal_entries_mismatch(integer, integer[]) FROM PUBLIC;

-- Appends a purge link to a table's chain: what is left of each seal in
-- trimmed (their entries as they are now), removed entries counted.
CREATE FUNCTION bv_audit._purge_link(tid integer, cutoff timestamptz, removed bigint, trimmed integer[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prev bv_audit.seals;
    link bv_audit.seals;
    next_no integer;
    batch bytea;
BEGIN
    SELECT * INTO prev FROM bv_audit.seals s WHERE s.tracked_id = tid ORDER BY s.seal_no DESC LIMIT 1;
    next_no := coalesce(prev.seal_no, 0) + 1;
    INSERT INTO bv_audit.seals (tracked_id, seal_no, kind, xid_lo, xid_hi, ts_floor, row_count,
                                purged_before, batch_digest, chain_digest)
    VALUES (tid, next_no, 'purge', coalesce(prev.xid_hi, '0'::xid8), coalesce(prev.xid_hi, '0'::xid8),
            coalesce(prev.ts_floor, '-infinity'::timestamptz), removed, cutoff, '\x', '\x');
    INSERT INTO bv_audit.seal_remainders (tracked_id, purge_no, seal_no, row_count, digest)
    SELECT tid, next_no, x.no, count(e.audit_id),
           sha256(coalesce(string_agg(int8send(e.audit_id) || e.digest, ''::bytea ORDER BY e.audit_id), ''::bytea))
      FROM (SELECT DISTINCT u.no FROM unnest(trimmed) AS u(no)) x
      LEFT JOIN bv_audit.seal_entries e ON e.tracked_id = tid AND e.seal_no = x.no
     GROUP BY x.no;
    SELECT sha256(coalesce(string_agg(int4send(m.seal_no) || int8send(m.row_count) || m.digest, ''::bytea
                                      ORDER BY m.seal_no), ''::bytea))
      INTO batch
      FROM bv_audit.seal_remainders m WHERE m.tracked_id = tid AND m.purge_no = next_no;
    UPDATE bv_audit.seals s SET batch_digest = batch
     WHERE s.tracked_id = tid AND s.seal_no = next_no
    RETURNING * INTO link;
    UPDATE bv_audit.seals s
       SET chain_digest = sha256(coalesce(prev.chain_digest, ''::bytea) || bv_audit._link_header(link) || batch)
     WHERE s.tracked_id = tid AND s.seal_no = next_no;
    RETURN next_no;
END
$$;
COMMENT ON FUNCTION bv_audit._purge_link(integer, timestamptz, bigint, integer[]) IS
'Internal to purge(): appends a purge link to a table''s chain, re-attesting what is left of the seals it trimmed.';
REVOKE ALL ON FUNCTION bv_audit._purge_link(integer, timestamptz, bigint, integer[]) FROM PUBLIC;

-- 9, 12, 13. The seal.
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
COMMENT ON FUNCTION bv_audit.seal()
IS 'Extends each audit table''s seal chain over the records of transactions that ended since the previous seal: stores each record''s digest and chains sha256 over them. Writers are never blocked. Returns the number of seals taken; scheduled every 5 minutes through pg_cron. Must run in a read committed transaction.';

-- 10, 11, 12, 13. Verification.
CREATE OR REPLACE FUNCTION bv_audit.verify(tbl regclass)
RETURNS TABLE (ok boolean, seals_checked integer, records_checked bigint,
               problem text, audit_id bigint, seal_no integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET lc_monetary = 'C'
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    s bv_audit.seals;
    prev_chain bytea := ''::bytea;
    last_hi xid8 := '0'::xid8;
    last_format smallint := 1;
    batch bytea;
    bad integer;
    -- No committed record can carry a transaction id from the snapshot's
    -- xmax on (such an id had not been assigned when the snapshot was
    -- taken); this transaction's own records can.
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
    r record;
BEGIN
    seals_checked := 0;
    records_checked := 0;
    -- 1. The chain: numbering, contiguous transaction-id ranges, the digest
    --    of every link (format 2: its metadata too), and each purge link's
    --    remainders.
    FOR s IN SELECT * FROM bv_audit.seals x WHERE x.tracked_id = t.id ORDER BY x.seal_no LOOP
        IF s.seal_no <> seals_checked + 1 OR s.xid_lo <> last_hi OR s.format < last_format
           OR (s.kind = 'seal' AND s.xid_hi <= s.xid_lo)
           OR (s.kind = 'purge' AND (s.xid_hi <> s.xid_lo OR s.format < 2))
           OR s.chain_digest IS DISTINCT FROM
              (CASE WHEN s.format = 1 THEN sha256(prev_chain || s.batch_digest)
                    ELSE sha256(prev_chain || bv_audit._link_header(s) || s.batch_digest) END) THEN
            ok := false; problem := 'seal chain broken: seal missing, reordered or altered';
            seal_no := s.seal_no; audit_id := NULL;
            RETURN NEXT; RETURN;
        END IF;
        IF s.kind = 'purge' THEN
            SELECT sha256(coalesce(string_agg(int4send(m.seal_no) || int8send(m.row_count) || m.digest, ''::bytea
                                              ORDER BY m.seal_no), ''::bytea))
              INTO batch
              FROM bv_audit.seal_remainders m WHERE m.tracked_id = t.id AND m.purge_no = s.seal_no;
            IF batch <> s.batch_digest
               OR EXISTS (SELECT FROM bv_audit.seal_remainders m
                            LEFT JOIN bv_audit.seals x ON x.tracked_id = m.tracked_id AND x.seal_no = m.seal_no
                           WHERE m.tracked_id = t.id AND m.purge_no = s.seal_no
                             AND (x.kind IS DISTINCT FROM 'seal' OR x.seal_no > s.seal_no)) THEN
                ok := false; problem := 'purge record altered: what it left of the seals no longer matches';
                seal_no := s.seal_no; audit_id := NULL;
                RETURN NEXT; RETURN;
            END IF;
        END IF;
        prev_chain := s.chain_digest;
        last_hi := s.xid_hi;
        last_format := s.format;
        seals_checked := seals_checked + 1;
    END LOOP;

    -- 2. Each seal's entries: its batch digest, or what its latest purge
    --    left.  Nothing is skipped after a purge.
    bad := bv_audit._seal_entries_mismatch(t.id);
    IF bad IS NOT NULL THEN
        ok := false; problem := 'seal entries altered: the record digests no longer match the seal';
        seal_no := bad; audit_id := NULL;
        RETURN NEXT; RETURN;
    END IF;

    -- 3. Every record against its entry, in audit_id order: altered,
    --    missing, inside a sealed range without an entry (inserted
    --    afterwards), or carrying a transaction id not assigned yet.
    --    a.* is the audit table's row whatever its columns are called.  A
    --    format-1 entry may hold either digest: 0.2.0's seal() computed it
    --    under its session's settings, or, run with the 0.3.0 library before
    --    ALTER EXTENSION UPDATE, under the canonical ones.
    FOR r IN EXECUTE format(
        'SELECT coalesce(e.audit_id, a.audit_id) AS id, e.seal_no AS seal, '
        '       CASE WHEN a.audit_id IS NULL THEN ''record missing'' '
        '            WHEN a.audit_xid >= $3 AND a.audit_xid IS DISTINCT FROM $4 THEN ''record from the future: its transaction id has not been assigned yet'' '
        '            WHEN e.audit_id IS NULL AND a.audit_xid < $2 THEN ''record not covered by its seal (inserted afterwards)'' '
        '            WHEN e.audit_id IS NULL THEN NULL '
        '            WHEN e.digest IS DISTINCT FROM bv_audit.row_digest(a.*) '
        '                 AND (e.format <> 1 OR e.digest IS DISTINCT FROM bv_audit._row_digest_v1(a.*)) '
        '            THEN ''record altered'' END AS what, '
        '       e.audit_id IS NOT NULL AS sealed '
        '  FROM (SELECT x.audit_id, x.seal_no, x.digest, l.format '
        '          FROM bv_audit.seal_entries x '
        '          JOIN bv_audit.seals l ON l.tracked_id = x.tracked_id AND l.seal_no = x.seal_no '
        '         WHERE x.tracked_id = $1) e '
        '  FULL JOIN bv_audit.%I a ON a.audit_id = e.audit_id '
        ' ORDER BY 1', t.audit_table)
        USING t.id, last_hi, horizon, own
    LOOP
        IF r.what IS NOT NULL THEN
            ok := false; problem := r.what; audit_id := r.id; seal_no := r.seal;
            RETURN NEXT; RETURN;
        END IF;
        IF r.sealed THEN
            records_checked := records_checked + 1;
        END IF;
    END LOOP;
    ok := true; problem := NULL; audit_id := NULL; seal_no := NULL;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION bv_audit.verify(regclass) IS
'Recomputes the seal chain of a table''s audit records (every link''s metadata, purge links and what they left) and every sealed record''s digest; returns ok, or the first broken link, altered, missing or inserted record, or record carrying a transaction id not yet assigned. Independent of session settings. Compare the last link''s chain_digest with a copy kept outside the database to detect a rewritten chain.';

-- 11. Purge: checks the seals it trims, then leaves a purge link.
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
        cutoff := now() - t.retention;
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
'Removes audit records older than each table''s retention: drops whole expired partitions and trims the one straddling the cut-off, then appends a purge link to the table''s seal chain that re-attests what is left of each trimmed seal. Skips (with a WARNING) a table whose trimmed seals no longer match their entries. The only way audit records are ever deleted; scheduled daily through pg_cron.';

-- 11. Seals partly purged before 0.3.0 (their batch digest was no longer
-- checked): a purge link re-attests what is left of them, so that from now
-- on every seal is checked.
DO $$
DECLARE
    t bv_audit.tracked;
    trimmed integer[];
BEGIN
    FOR t IN SELECT * FROM bv_audit.tracked tr WHERE tr.purged_before IS NOT NULL ORDER BY tr.id LOOP
        SELECT array_agg(s.seal_no ORDER BY s.seal_no) INTO trimmed
          FROM bv_audit.seals s
          LEFT JOIN (SELECT e.seal_no, count(*) AS n FROM bv_audit.seal_entries e
                      WHERE e.tracked_id = t.id GROUP BY e.seal_no) e ON e.seal_no = s.seal_no
         WHERE s.tracked_id = t.id AND s.row_count > coalesce(e.n, 0);
        IF trimmed IS NOT NULL THEN
            PERFORM bv_audit._purge_link(t.id, t.purged_before, 0, trimmed);
        END IF;
    END LOOP;
END
$$;

-- ===========================================================================
-- #18 items 1-8: history that is true; #17 item 15: clean errors for bad
-- arguments of bv_audit's non-seal functions.
--   item 1: key-changing UPDATEs are moves (capture.c); enable() after
--           disable() records the rows that vanished meanwhile as D.
--   item 2: ADD COLUMN with a default records the new value of every row.
--   item 3: a new column never shares an audit column with a dropped one.
--   item 4: a key type change rebuilds the history index.
--   item 5: ALTER COLUMN ... TYPE ... USING records the new value of every row.
--   item 6: exclusions follow the column (attnum), not its name.
--   item 7: audit columns never depend on user types (enum -> text,
--           domain -> base type).
--   item 8: a non-superuser cannot disable, drop, rename or replace the
--           capture triggers of a tracked table.
-- ===========================================================================

ALTER TABLE bv_audit.tracked ADD COLUMN exclude_attnums smallint[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN bv_audit.tracked.exclude_attnums IS
'Attribute numbers of the excluded columns: exclusions follow a column through RENAME COLUMN (exclude_columns shows their current names).';
UPDATE bv_audit.tracked tr
   SET exclude_attnums = coalesce((SELECT array_agg(a.attnum ORDER BY a.attnum)
                                     FROM pg_catalog.pg_attribute a
                                    WHERE a.attrelid = tr.relid AND a.attnum > 0 AND NOT a.attisdropped
                                      AND a.attname = ANY (tr.exclude_columns)), '{}')
 WHERE tr.relid IS NOT NULL;

CREATE FUNCTION bv_audit._rewritten_columns(cmd pg_ddl_command)
RETURNS smallint[]
AS 'MODULE_PATHNAME', 'bv_audit_rewritten_columns'
LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION bv_audit._rewritten_columns(pg_ddl_command) IS
'Internal: attribute numbers of the columns an ALTER TABLE changed with ALTER COLUMN ... TYPE ... USING (the event trigger records their new values).';
REVOKE ALL ON FUNCTION bv_audit._rewritten_columns(pg_ddl_command) FROM PUBLIC;

-- The type an audit column stores for a column of type typ: audit tables
-- never depend on a type that can be renamed, altered or dropped.  Domains
-- become their base type; enums, and other types that are neither built in
-- nor arrays of built-in types, are stored as their text (fixed when the
-- record is written, whatever later happens to the type).  foreign_code
-- says whether rendering that text runs functions of a non-built-in type.
CREATE FUNCTION bv_audit._audit_type(typ oid, typmod integer,
                                     OUT audit_type oid, OUT audit_typmod integer, OUT foreign_code boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ty record;
    el oid;
BEGIN
    LOOP
        SELECT t.typtype, t.typbasetype, t.typtypmod, t.typelem, t.typlen INTO ty
          FROM pg_catalog.pg_type t WHERE t.oid = typ;
        EXIT WHEN ty.typtype IS DISTINCT FROM 'd';
        IF typmod = -1 THEN
            typmod := ty.typtypmod;
        END IF;
        typ := ty.typbasetype;
    END LOOP;
    IF ty.typtype = 'e' THEN
        audit_type := 'pg_catalog.text'::regtype; audit_typmod := -1; foreign_code := false;
    ELSIF typ < 16384 THEN
        audit_type := typ; audit_typmod := typmod; foreign_code := false;
    ELSE
        audit_type := 'pg_catalog.text'::regtype; audit_typmod := -1; foreign_code := true;
        -- An array of enums or of domains over built-in types renders with
        -- built-in functions only.
        IF ty.typelem <> 0 AND ty.typlen = -1 THEN
            el := ty.typelem;
            WHILE (SELECT t.typtype = 'd' FROM pg_catalog.pg_type t WHERE t.oid = el) LOOP
                el := (SELECT t.typbasetype FROM pg_catalog.pg_type t WHERE t.oid = el);
            END LOOP;
            foreign_code := NOT (el < 16384 OR (SELECT t.typtype = 'e' FROM pg_catalog.pg_type t WHERE t.oid = el));
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._audit_type(oid, integer) IS
'Internal: the type an audit column stores for a tracked column''s type: domains as their base type, enums and other non-built-in types as text, so that no audit table depends on a user type.';
REVOKE ALL ON FUNCTION bv_audit._audit_type(oid, integer) FROM PUBLIC;

-- The tracking entry of a table, or an error with a hint (NULL: 22004).
CREATE OR REPLACE FUNCTION bv_audit._tracked(tbl regclass, must_be_enabled boolean DEFAULT false)
RETURNS bv_audit.tracked
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a table, e.g. ''public.invoice''.';
    END IF;
    SELECT * INTO t FROM bv_audit.tracked WHERE relid = tbl::oid;
    IF NOT FOUND OR (must_be_enabled AND NOT t.enabled) THEN
        RAISE EXCEPTION 'table "%" is not tracked by bv_audit', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'bv_audit.enable() has not been called on it, or tracking was disabled.',
                  HINT = 'Call bv_audit.enable() on the table first.';
    END IF;
    RETURN t;
END
$$;

-- Move the audit column "name" out of the way of a live column that needs
-- the name, when it holds the history of a dropped column (or of a column
-- no longer mirrored): it becomes <name>_dropped<attnum> (or <name>_old),
-- keeping its values.  Renaming an audit column changes no record digest
-- (digests cover attribute numbers).  Returns whether the name is free now.
CREATE FUNCTION bv_audit._free_audit_name(t bv_audit.tracked, name name)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    holder bv_audit.columns;
    base text;
    target name;
    n integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                    WHERE x.attrelid = t.audit_relid AND x.attname = name AND NOT x.attisdropped) THEN
        RETURN true;
    END IF;
    IF name IN ('audit_id', 'audit_op', 'audit_xid', 'audit_actor', 'audit_ts',
                'audit_app', 'audit_client', 'audit_trace', 'audit_changed') THEN
        RETURN false;
    END IF;
    SELECT * INTO holder FROM bv_audit.columns c WHERE c.tracked_id = t.id AND c.audit_column = name;
    IF holder.src_attnum IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = t.relid AND a.attnum = holder.src_attnum AND NOT a.attisdropped) THEN
        RETURN false;   -- a live column's: not ours to move
    END IF;
    base := left(name, 40) || CASE WHEN holder.src_attnum IS NOT NULL
                                   THEN '_dropped' || holder.src_attnum ELSE '_old' END;
    target := base;
    WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                   WHERE x.attrelid = t.audit_relid AND x.attname = target AND NOT x.attisdropped) LOOP
        n := n + 1;
        target := base || '_' || n;
    END LOOP;
    EXECUTE format('ALTER TABLE bv_audit.%I RENAME COLUMN %I TO %I', t.audit_table, name, target);
    UPDATE bv_audit.columns c SET audit_column = target
     WHERE c.tracked_id = t.id AND c.audit_column = name;
    RETURN true;
END
$$;
COMMENT ON FUNCTION bv_audit._free_audit_name(bv_audit.tracked, name) IS
'Internal: renames the audit column of a dropped (or no longer mirrored) column out of the way of a live column that takes its name.';
REVOKE ALL ON FUNCTION bv_audit._free_audit_name(bv_audit.tracked, name) FROM PUBLIC;

-- Bring an audit table in step with its tracked table: mirror added and
-- renamed columns by attribute number (audit columns carry the live
-- columns' names, so that as_of() rows fit jsonb_populate_record), follow
-- safe type changes, refuse unsafe ones.  Dropped columns keep their audit
-- column.  Exclusions follow the column's attnum.  Returns the attnums of
-- the columns that were added to the mirror.
CREATE FUNCTION bv_audit._sync_columns(t bv_audit.tracked, from_ddl boolean)
RETURNS smallint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
    m bv_audit.columns;
    acol record;
    want record;
    target name;
    n integer;
    added smallint[] := '{}';
    key_retyped boolean := false;
BEGIN
    UPDATE bv_audit.tracked tr
       SET source_schema = ns.nspname, source_table = c.relname
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
     WHERE tr.id = t.id AND c.oid = t.relid
       AND (tr.source_schema, tr.source_table) IS DISTINCT FROM (ns.nspname, c.relname);
    -- Follow a renamed key column.
    UPDATE bv_audit.tracked tr
       SET pk_columns = k.cols
      FROM (SELECT array_agg(pa.attname ORDER BY x.ord) AS cols
              FROM pg_catalog.pg_index i
              CROSS JOIN LATERAL unnest(i.indkey::smallint[]) WITH ORDINALITY AS x(attnum, ord)
              JOIN pg_catalog.pg_attribute pa ON pa.attrelid = i.indrelid AND pa.attnum = x.attnum
             WHERE i.indrelid = t.relid AND i.indisprimary) k
     WHERE tr.id = t.id AND k.cols IS NOT NULL AND k.cols <> tr.pk_columns;
    -- A new primary key (other columns): the history index follows it.
    IF from_ddl AND EXISTS (SELECT 1 FROM bv_audit.tracked tr WHERE tr.id = t.id AND tr.pk_columns <> t.pk_columns)
       AND (SELECT array_agg(x.attnum ORDER BY x.attnum) FROM pg_catalog.pg_attribute x
             WHERE x.attrelid = t.relid AND x.attname = ANY (t.pk_columns))
           IS DISTINCT FROM
           (SELECT array_agg(x.attnum ORDER BY x.attnum) FROM pg_catalog.pg_attribute x
             JOIN bv_audit.tracked tr ON tr.id = t.id
            WHERE x.attrelid = t.relid AND x.attname = ANY (tr.pk_columns)) THEN
        key_retyped := true;
    END IF;
    -- Excluded columns by attnum; their names follow renames.
    UPDATE bv_audit.tracked tr
       SET exclude_columns = coalesce((SELECT array_agg(x.attname ORDER BY x.attnum)
                                         FROM pg_catalog.pg_attribute x
                                        WHERE x.attrelid = t.relid AND x.attnum = ANY (tr.exclude_attnums)
                                          AND NOT x.attisdropped), '{}')
     WHERE tr.id = t.id
    RETURNING * INTO t;

    FOR a IN
        SELECT att.attnum, att.attname, att.atttypid, att.atttypmod, att.attcollation
          FROM pg_catalog.pg_attribute att
         WHERE att.attrelid = t.relid AND att.attnum > 0 AND NOT att.attisdropped
         ORDER BY att.attnum
    LOOP
        SELECT * INTO m FROM bv_audit.columns c
         WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;

        IF a.attnum = ANY (t.exclude_attnums) THEN
            -- Newly excluded: stop copying; the audit column keeps its past.
            DELETE FROM bv_audit.columns c WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;
            CONTINUE;
        END IF;

        IF a.attname IN ('audit_id', 'audit_op', 'audit_xid', 'audit_actor', 'audit_ts',
                         'audit_app', 'audit_client', 'audit_trace', 'audit_changed') THEN
            RAISE EXCEPTION 'column "%" of table %.% collides with an audit metadata column',
                  a.attname, t.source_schema, t.source_table
                USING ERRCODE = 'duplicate_column',
                      DETAIL = 'Audit tables reserve the names audit_id, audit_op, audit_xid, audit_actor, audit_ts, audit_app, audit_client, audit_trace and audit_changed.',
                      HINT = 'Rename the column, or list it in exclude_columns.';
        END IF;

        want := bv_audit._audit_type(a.atttypid, a.atttypmod);
        -- Rendering a non-built-in type as text runs its functions inside
        -- bv_audit's SECURITY DEFINER functions: only types a superuser owns.
        IF want.foreign_code AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_type ty
                  JOIN pg_catalog.pg_roles r ON r.oid = ty.typowner
                 WHERE ty.oid = a.atttypid AND NOT r.rolsuper) THEN
            RAISE EXCEPTION 'column "%" of %.% has a type that bv_audit cannot copy', a.attname, t.source_schema, t.source_table
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = format('Type %s is owned by a role that is not a superuser; bv_audit runs its functions with elevated privileges.', format_type(a.atttypid, a.atttypmod)),
                      HINT = 'List the column in exclude_columns, or have a superuser own the type.';
        END IF;

        IF m.src_attnum IS NULL THEN
            -- A new column.  The audit column of a dropped one with its name
            -- is renamed out of the way (it keeps its history).
            target := a.attname;
            n := 0;
            IF NOT bv_audit._free_audit_name(t, target) THEN
                WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                               WHERE x.attrelid = t.audit_relid AND x.attname = target
                                 AND NOT x.attisdropped) LOOP
                    n := n + 1;
                    target := left(a.attname, 50) || '_' || a.attnum || CASE WHEN n > 1 THEN '_' || n ELSE '' END;
                END LOOP;
            END IF;
            EXECUTE format('ALTER TABLE bv_audit.%I ADD COLUMN %I %s%s', t.audit_table, target,
                           format_type(want.audit_type, want.audit_typmod),
                           -- A built-in collation only: a user's could be dropped with CASCADE.
                           CASE WHEN a.attcollation <> 0 AND a.attcollation < 16384 AND want.audit_type = a.atttypid THEN
                               (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                                  FROM pg_catalog.pg_collation co
                                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                 WHERE co.oid = a.attcollation)
                           ELSE '' END);
            INSERT INTO bv_audit.columns (tracked_id, src_attnum, audit_column)
            VALUES (t.id, a.attnum, target);
            added := added || a.attnum;
            CONTINUE;
        END IF;

        -- A known column: follow a rename.
        IF m.audit_column <> a.attname AND bv_audit._free_audit_name(t, a.attname) THEN
            EXECUTE format('ALTER TABLE bv_audit.%I RENAME COLUMN %I TO %I',
                           t.audit_table, m.audit_column, a.attname);
            UPDATE bv_audit.columns c SET audit_column = a.attname
             WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;
            m.audit_column := a.attname;
        END IF;

        -- Follow a type change when it is safe, refuse it otherwise.  An
        -- audit column created before 0.3.0 with the column's own type is
        -- left as it is.
        SELECT x.atttypid, x.atttypmod INTO acol
          FROM pg_catalog.pg_attribute x
         WHERE x.attrelid = t.audit_relid AND x.attname = m.audit_column AND NOT x.attisdropped;
        IF (acol.atttypid, acol.atttypmod) IS DISTINCT FROM (want.audit_type, want.audit_typmod)
           AND (acol.atttypid, acol.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod) THEN
            IF NOT bv_audit._safe_type_change(acol.atttypid, acol.atttypmod, want.audit_type, want.audit_typmod) THEN
                RAISE EXCEPTION 'cannot change the type of audited column "%" of %.% from % to %',
                      a.attname, t.source_schema, t.source_table,
                      format_type(acol.atttypid, acol.atttypmod), format_type(a.atttypid, a.atttypmod)
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = 'Its audit column holds the history of the column, and this change could lose or alter recorded values.',
                          HINT = 'Add a new column of the new type and migrate the data into it; the old column''s history stays in the audit table.';
            END IF;
            -- The history index names an operator class of the key's type.
            IF a.attname = ANY (t.pk_columns) AND NOT key_retyped
               AND to_regclass(format('bv_audit.%I', t.audit_table || '_history')) IS NOT NULL THEN
                EXECUTE format('DROP INDEX bv_audit.%I', t.audit_table || '_history');
                key_retyped := true;
            END IF;
            EXECUTE format('ALTER TABLE bv_audit.%I ALTER COLUMN %I TYPE %s',
                           t.audit_table, m.audit_column, format_type(want.audit_type, want.audit_typmod));
        END IF;
    END LOOP;
    IF key_retyped THEN
        PERFORM bv_audit._history_index(t, t.history_index);
    END IF;
    RETURN added;
END
$$;
COMMENT ON FUNCTION bv_audit._sync_columns(bv_audit.tracked, boolean) IS
'Internal: mirrors added and renamed columns of a tracked table into its audit table (by attnum; a dropped column''s audit column is renamed out of the way), follows safe type changes (rebuilding the history index for a key column) and refuses unsafe ones (SQLSTATE 0A000); returns the attnums of newly mirrored columns.';
REVOKE ALL ON FUNCTION bv_audit._sync_columns(bv_audit.tracked, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION bv_audit._sync_columns(t bv_audit.tracked)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT NULL::void FROM bv_audit._sync_columns(t, false) $$;

-- The history index: as 0.1.0, but the bloom operator class is chosen by
-- the audit column's type (a domain key is stored as its base type).
CREATE OR REPLACE FUNCTION bv_audit._history_index(t bv_audit.tracked, kind text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cols text;
    bloom_cols text;
    bloom_ok boolean;
    iname name := t.audit_table || '_history';
BEGIN
    SELECT string_agg(format('%I', c.audit_column), ', ' ORDER BY k.ord),
           string_agg(CASE WHEN o.opcname IS NOT NULL
                           THEN format('%I pg_catalog.%I (n_distinct_per_range = 1000, false_positive_rate = 0.01)',
                                       c.audit_column, o.opcname) END, ', ' ORDER BY k.ord),
           bool_and(o.opcname IS NOT NULL)
      INTO cols, bloom_cols, bloom_ok
      FROM unnest(t.pk_columns) WITH ORDINALITY AS k(col, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid AND a.attname = k.col
      JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = a.attnum
      JOIN pg_catalog.pg_attribute aa ON aa.attrelid = t.audit_relid AND aa.attname = c.audit_column
      LEFT JOIN LATERAL (
          SELECT opc.opcname FROM pg_catalog.pg_opclass opc
            JOIN pg_catalog.pg_am am ON am.oid = opc.opcmethod
           WHERE am.amname = 'brin' AND opc.opcname LIKE '%\_bloom\_ops'
             AND opc.opcnamespace = 'pg_catalog'::regnamespace
             AND opc.opcintype = CASE WHEN aa.atttypid = 'pg_catalog.varchar'::regtype
                                      THEN 'pg_catalog.text'::regtype ELSE aa.atttypid END
           LIMIT 1) o ON true;
    IF kind = 'bloom' AND NOT bloom_ok THEN
        kind := 'btree';
    END IF;
    IF to_regclass(format('bv_audit.%I', iname)) IS NOT NULL THEN
        EXECUTE format('DROP INDEX bv_audit.%I', iname);
    END IF;
    IF kind = 'bloom' THEN
        EXECUTE format('CREATE INDEX %I ON bv_audit.%I USING brin (%s) WITH (pages_per_range = 16)',
                       iname, t.audit_table, bloom_cols);
    ELSE
        EXECUTE format('CREATE INDEX %I ON bv_audit.%I (%s, audit_id)', iname, t.audit_table, cols);
    END IF;
    UPDATE bv_audit.tracked tr SET history_index = kind WHERE tr.id = t.id;
    RETURN kind;
END
$$;

-- Record the current value of every row of a tracked table as a 'U' whose
-- audit_changed names the given columns: after DDL that changed stored
-- values without an UPDATE (ADD COLUMN with a default, ALTER COLUMN TYPE
-- ... USING).  only_non_null: only rows where one of them is not NULL.
CREATE FUNCTION bv_audit._record_rows(t bv_audit.tracked, changed smallint[], only_non_null boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cols text;
    src text;
    names text[];
    cond text;
    n bigint;
BEGIN
    SELECT string_agg(format('%I', c.audit_column), ', ' ORDER BY c.src_attnum),
           string_agg(format('s.%I', att.attname), ', ' ORDER BY c.src_attnum)
      INTO cols, src
      FROM bv_audit.columns c
      JOIN pg_catalog.pg_attribute att
        ON att.attrelid = t.relid AND att.attnum = c.src_attnum AND NOT att.attisdropped
     WHERE c.tracked_id = t.id;
    SELECT array_agg(att.attname::text ORDER BY att.attnum),
           string_agg(format('s.%I IS NOT NULL', att.attname), ' OR ')
      INTO names, cond
      FROM pg_catalog.pg_attribute att
     WHERE att.attrelid = t.relid AND att.attnum = ANY (changed) AND NOT att.attisdropped;
    IF names IS NULL OR cols IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('INSERT INTO bv_audit.%I (audit_op, audit_xid, audit_actor, audit_ts, audit_app, '
                   'audit_client, audit_trace, audit_changed, %s) '
                   'SELECT ''U'', pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.now(), '
                   'NULLIF(pg_catalog.current_setting(''application_name''), ''''), '
                   'pg_catalog.inet_client_addr(), bv.trace_context(), $1, %s FROM ONLY %I.%I s WHERE %s',
                   t.audit_table, cols, src, t.source_schema, t.source_table,
                   CASE WHEN only_non_null THEN cond ELSE 'true' END)
        USING names;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION bv_audit._record_rows(bv_audit.tracked, smallint[], boolean) IS
'Internal: records every row of a tracked table as a ''U'' naming the given columns, after DDL that changed stored values without an UPDATE.';
REVOKE ALL ON FUNCTION bv_audit._record_rows(bv_audit.tracked, smallint[], boolean) FROM PUBLIC;

-- Record a 'D' for every key whose last record (after the last TRUNCATE)
-- says it exists while the table has no row with that key: rows deleted
-- while tracking was disabled, keys rewritten by ALTER COLUMN TYPE ... USING.
-- The D carries the last recorded image; audit_changed names what changed
-- (NULL for an unseen delete).
CREATE FUNCTION bv_audit._record_vanished(t bv_audit.tracked, changed text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text;
    join_cond text;
    cols text;
    lcols text;
    n bigint;
BEGIN
    -- The source key is compared in the audit column's type: an enum key is
    -- kept as text, a domain key as its base type (#18 item 7), and a label
    -- renamed since must not make the comparison fail.  NOT EXISTS becomes
    -- an anti-join, hashed where the cast keeps the key index out of use.
    SELECT string_agg(format('a.%I', c.audit_column), ', ' ORDER BY p.ord),
           string_agg(format('s.%I::%s = l.%I', att.attname,
                             pg_catalog.format_type(aa.atttypid, aa.atttypmod), c.audit_column),
                      ' AND ' ORDER BY p.ord)
      INTO keys, join_cond
      FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = t.relid AND att.attname = p.col
      JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = att.attnum
      JOIN pg_catalog.pg_attribute aa
        ON aa.attrelid = pg_catalog.format('bv_audit.%I', t.audit_table)::pg_catalog.regclass
       AND aa.attname = c.audit_column;
    -- The mirrored columns (dropped ones included); not the audit columns
    -- of columns excluded since, whose past values stay where they are.
    SELECT string_agg(format('%I', c.audit_column), ', ' ORDER BY c.src_attnum),
           string_agg(format('l.%I', c.audit_column), ', ' ORDER BY c.src_attnum)
      INTO cols, lcols
      FROM bv_audit.columns c
     WHERE c.tracked_id = t.id;
    IF keys IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format(
        'INSERT INTO bv_audit.%I (audit_op, audit_xid, audit_actor, audit_ts, audit_app, '
        '                         audit_client, audit_trace, audit_changed, %s) '
        'SELECT ''D'', pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.now(), '
        '       NULLIF(pg_catalog.current_setting(''application_name''), ''''), '
        '       pg_catalog.inet_client_addr(), bv.trace_context(), $1, %s '
        '  FROM (SELECT DISTINCT ON (%s) a.* FROM bv_audit.%I a '
        '         WHERE a.audit_op <> ''T'' '
        '           AND a.audit_id > coalesce((SELECT max(x.audit_id) FROM bv_audit.%I x WHERE x.audit_op = ''T''), 0) '
        '         ORDER BY %s, a.audit_id DESC) l '
        ' WHERE l.audit_op <> ''D'' AND NOT EXISTS (SELECT 1 FROM ONLY %I.%I s WHERE %s)',
        t.audit_table, cols, lcols,
        keys, t.audit_table, t.audit_table, keys, t.source_schema, t.source_table, join_cond)
        USING changed;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION bv_audit._record_vanished(bv_audit.tracked, text[]) IS
'Internal: records a ''D'' for every key whose history says it exists while the table has no such row (deleted while tracking was off, or rewritten by a key type change).';
REVOKE ALL ON FUNCTION bv_audit._record_vanished(bv_audit.tracked, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION bv_audit._on_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
    t bv_audit.tracked;
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
        added := bv_audit._sync_columns(t, true);
        SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.id = t.id;
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
COMMENT ON FUNCTION bv_audit._on_ddl() IS
'Event trigger function: after ALTER TABLE on a tracked table, mirrors the change into its audit table (or refuses an unsafe type change), and records the new value of every row when the command changed stored values (ADD COLUMN with a default, ALTER COLUMN TYPE ... USING).';

-- enable(): NULL and out-of-range arguments refused with 22004/22023 (#17
-- item 15), exclusions stored by attnum (#18 item 6), and after disable()
-- the rows that vanished meanwhile recorded as D before the new snapshot
-- (#18 item 1).
CREATE OR REPLACE FUNCTION bv_audit.enable(tbl regclass, exclude_columns text[] DEFAULT '{}',
                                retention interval DEFAULT NULL, history_index text DEFAULT NULL)
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
    IF retention IS NOT NULL AND retention <= interval '0' THEN
        RAISE EXCEPTION 'retention must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', retention),
                  HINT = 'Pass e.g. interval ''7 years'', or NULL to keep records forever.';
    END IF;
    IF history_index IS NOT NULL AND history_index NOT IN ('bloom', 'btree') THEN
        RAISE EXCEPTION 'unknown history index "%"', history_index
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
        PERFORM bv_audit._history_index(t, coalesce(enable.history_index, 'bloom'));
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

    EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
    EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
    PERFORM bv_audit._invalidate(tbl);
    RETURN t.audit_relid;
END
$$;

-- stamp(), changes(), as_of(): NULL arguments refused with 22004 and a
-- missing table with 42P01, instead of broken generated SQL or an empty
-- answer (#17 item 15).
CREATE OR REPLACE FUNCTION bv_audit.stamp(tbl regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
    col record;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the table to stamp, e.g. ''public.invoice''.';
    END IF;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF kind IS NULL THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
            USING ERRCODE = 'undefined_table',
                  HINT = 'Pass an existing table.';
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Audit columns are filled by a row trigger, which only tables have.',
                  HINT = 'Call bv_audit.stamp() on the underlying table.';
    END IF;
    FOR col IN
        SELECT * FROM (VALUES ('created_by', 'pg_catalog.text'::regtype),
                              ('created_at', 'pg_catalog.timestamptz'::regtype),
                              ('updated_by', 'pg_catalog.text'::regtype),
                              ('updated_at', 'pg_catalog.timestamptz'::regtype)) AS v(name, typ)
    LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = col.name AND NOT a.attisdropped
                      AND a.atttypid <> col.typ) THEN
            RAISE EXCEPTION 'column "%" of table % is not of type %', col.name, tbl, col.typ
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = 'bv_audit.stamp() fills created_by/updated_by with text and created_at/updated_at with timestamptz.',
                      HINT = 'Rename or convert the existing column, then call bv_audit.stamp() again.';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = col.name AND NOT a.attisdropped) THEN
            CONTINUE;
        END IF;
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', tbl, col.name, col.typ);
        EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', tbl, col.name,
                       CASE col.name
                           WHEN 'created_by' THEN 'Actor (bv.actor()) who inserted the row; set by bv_audit, cannot be changed.'
                           WHEN 'created_at' THEN 'Transaction time of the insert; set by bv_audit, cannot be changed.'
                           WHEN 'updated_by' THEN 'Actor (bv.actor()) of the last insert or update; set by bv_audit.'
                           ELSE 'Transaction time of the last insert or update; set by bv_audit.' END);
    END LOOP;
    EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_stamp BEFORE INSERT OR UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION bv_audit.stamp_trigger()', tbl);
END
$$;

CREATE OR REPLACE FUNCTION bv_audit.changes(tbl regclass, from_ts timestamptz, to_ts timestamptz DEFAULT now())
RETURNS TABLE (audit_id bigint, operation text, changed_at timestamptz, actor text,
               transaction_id xid8, application_name text, client_addr inet,
               traceparent text, changed_columns text[], row_data jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL THEN
        RAISE EXCEPTION 'time range must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass both ends, e.g. now() - interval ''1 day'' and now().';
    END IF;
    IF from_ts > to_ts THEN
        RAISE EXCEPTION 'time range ends before it starts'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('from %s is after to %s.', from_ts, to_ts),
                  HINT = 'Pass the earlier time first.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT a.audit_id, a.audit_op, a.audit_ts, a.audit_actor, a.audit_xid, a.audit_app, '
        '       a.audit_client, a.audit_trace, a.audit_changed, %s '
        '  FROM bv_audit.%I a WHERE a.audit_ts >= $1 AND a.audit_ts < $2 AND a.audit_op <> ''S'' '
        ' ORDER BY a.audit_id',
        bv_audit._row_expr(t, 'a'), t.audit_table) USING from_ts, to_ts;
END
$$;

CREATE OR REPLACE FUNCTION bv_audit.as_of(tbl regclass, ts timestamptz)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    keys text;
BEGIN
    IF ts IS NULL THEN
        RAISE EXCEPTION 'time must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the time to read the table at, e.g. now() - interval ''1 day''.';
    END IF;
    SELECT string_agg(format('a.%I', c.audit_column), ', ' ORDER BY p.ord) INTO keys
      FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = t.relid AND att.attname = p.col
      JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = att.attnum;
    -- The last record of each row at ts, unless it was a DELETE or a later
    -- TRUNCATE (up to ts) emptied the table.
    RETURN QUERY EXECUTE format(
        'WITH cut AS (SELECT max(x.audit_id) AS id FROM bv_audit.%I x '
        '              WHERE x.audit_op = ''T'' AND x.audit_ts <= $1), '
        '     last AS (SELECT DISTINCT ON (%s) a.* FROM bv_audit.%I a '
        '               WHERE a.audit_ts <= $1 AND a.audit_op <> ''T'' '
        '               ORDER BY %s, a.audit_id DESC) '
        'SELECT %s FROM last a, cut '
        ' WHERE a.audit_op <> ''D'' AND (cut.id IS NULL OR a.audit_id > cut.id) '
        ' ORDER BY %s',
        t.audit_table, keys, t.audit_table, keys, bv_audit._row_expr(t, 'a'), keys) USING ts;
END
$$;

-- #18 item 8: only a superuser can stop capture.  The capture triggers of a
-- tracked, enabled table must stay as enable() made them: a non-superuser
-- (typically the table's owner) who disables (DISABLE TRIGGER, ENABLE
-- REPLICA TRIGGER), drops, renames or replaces one is refused with 42501
-- and the command rolls back.  Not SECURITY DEFINER: it judges the role
-- that runs the command.  Superusers (and bv_audit's own functions, which
-- run as the extension owner) pass.
CREATE FUNCTION bv_audit._capture_intact(relid oid, tracked_id integer)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) = 2
      FROM pg_catalog.pg_trigger tg
     WHERE tg.tgrelid = relid
       AND tg.tgfoid = 'bv_audit.capture_trigger()'::pg_catalog.regprocedure
       AND tg.tgenabled IN ('O', 'A') AND NOT tg.tgisinternal
       AND tg.tgqual IS NULL AND tg.tgattr = ''::pg_catalog.int2vector AND tg.tgnargs = 1
       AND pg_catalog.encode(tg.tgargs, 'escape') = tracked_id::text || '\000'
       AND ((tg.tgname = 'bv_audit_capture' AND tg.tgtype = 29)           -- AFTER ROW INSERT OR UPDATE OR DELETE
            OR (tg.tgname = 'bv_audit_capture_truncate' AND tg.tgtype = 32)) -- AFTER STATEMENT TRUNCATE
$$;
COMMENT ON FUNCTION bv_audit._capture_intact(oid, integer) IS
'Internal: whether a tracked table still has both capture triggers, enabled and as bv_audit.enable() created them.';

CREATE FUNCTION bv_audit._guard_capture()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rels oid[];
    t record;
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        SELECT array_agg(to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))::oid) INTO rels
          FROM pg_catalog.pg_event_trigger_dropped_objects() d
         WHERE d.object_type = 'trigger';
    ELSE
        SELECT array_agg(CASE WHEN c.object_type = 'trigger'
                              THEN (SELECT tg.tgrelid FROM pg_catalog.pg_trigger tg WHERE tg.oid = c.objid)
                              ELSE c.objid END) INTO rels
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.object_type IN ('table', 'trigger');
    END IF;
    FOR t IN SELECT tr.id, tr.relid FROM bv_audit.tracked tr
              WHERE tr.relid = ANY (rels) AND tr.enabled LOOP
        IF NOT bv_audit._capture_intact(t.relid, t.id) THEN
            RAISE EXCEPTION 'only a superuser can stop bv_audit from recording changes of %', t.relid::regclass
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'The command would disable, drop, rename or replace a capture trigger of a tracked table.',
                      HINT = 'Ask a member of bv_admin to call bv_audit.disable() on the table.';
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_capture() IS
'Event trigger function: refuses (42501) a non-superuser''s command that disables, drops, renames or replaces a capture trigger of a tracked table.';

CREATE EVENT TRIGGER bv_audit_guard ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER')
    EXECUTE FUNCTION bv_audit._guard_capture();
CREATE EVENT TRIGGER bv_audit_guard_drop ON sql_drop
    WHEN TAG IN ('DROP TRIGGER')
    EXECUTE FUNCTION bv_audit._guard_capture();

-- #18 item 7 for audit tables made before 0.3.0: audit columns of an enum
-- or domain type (or arrays of them) become text or the base type, so that
-- ALTER TYPE ... RENAME VALUE or DROP ... CASCADE never touches history.
-- The text of every value is kept, and with it every record digest.
DO $$
DECLARE
    t bv_audit.tracked;
    a record;
    key_retyped boolean;
BEGIN
    FOR t IN SELECT * FROM bv_audit.tracked tr
              WHERE to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL LOOP
        key_retyped := false;
        FOR a IN SELECT x.attname, w.audit_type, w.audit_typmod
                   FROM pg_catalog.pg_attribute x
                   JOIN pg_catalog.pg_type ty ON ty.oid = x.atttypid
                   LEFT JOIN pg_catalog.pg_type el ON el.oid = ty.typelem AND ty.typlen = -1
                   CROSS JOIN LATERAL bv_audit._audit_type(x.atttypid, x.atttypmod) w
                  WHERE x.attrelid = t.audit_relid AND x.attnum > 0 AND NOT x.attisdropped
                    AND (ty.typtype IN ('d', 'e') OR el.typtype IN ('d', 'e')) LOOP
            IF a.attname = ANY (t.pk_columns) AND NOT key_retyped
               AND to_regclass(format('bv_audit.%I', t.audit_table || '_history')) IS NOT NULL THEN
                EXECUTE format('DROP INDEX bv_audit.%I', t.audit_table || '_history');
                key_retyped := true;
            END IF;
            EXECUTE format('ALTER TABLE bv_audit.%I ALTER COLUMN %I TYPE %s USING %I::text::%s',
                           t.audit_table, a.attname, format_type(a.audit_type, a.audit_typmod),
                           a.attname, format_type(a.audit_type, a.audit_typmod));
        END LOOP;
        IF key_retyped THEN
            PERFORM bv_audit._history_index(t, t.history_index);
        END IF;
    END LOOP;
END
$$;

-- ===========================================================================
-- #18 item 10: history(), as_of() and changes() do not show records from
-- the future.  No committed record can carry a transaction id from the
-- reader's snapshot's xmax on (such an id had not been assigned when the
-- snapshot was taken), except the reader's own transaction: a record that
-- does was forged, verify() reports it, and the readers leave it out.  Any later redefinition of these functions
-- must keep the audit_xid < horizon condition (tests/regress bv_audit_tamper).
-- ===========================================================================

CREATE OR REPLACE FUNCTION bv_audit.history(tbl regclass, pk jsonb)
RETURNS TABLE (audit_id bigint, operation text, changed_at timestamptz, actor text,
               transaction_id xid8, application_name text, client_addr inet,
               traceparent text, changed_columns text[], row_data jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
    cond text;
    first_key text;
    missing text;
BEGIN
    SELECT string_agg(format('%I', k), ', ') INTO missing
      FROM unnest(t.pk_columns) AS k WHERE NOT pk ? k;
    IF jsonb_typeof(pk) IS DISTINCT FROM 'object' OR missing IS NOT NULL THEN
        RAISE EXCEPTION 'primary key value must be a JSON object with every key column'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The primary key of %s is (%s); missing: %s.', tbl,
                                  array_to_string(t.pk_columns, ', '), coalesce(missing, 'not an object')),
                  HINT = format('Pass e.g. %L.', (SELECT jsonb_object_agg(k, '...') FROM unnest(t.pk_columns) AS k));
    END IF;
    -- Key equality against constants (the key converted to the columns'
    -- types once), so that the history index finds the records; TRUNCATE
    -- records have no key (NULL), which the index finds too.
    SELECT string_agg(format('a.%I = (SELECT k.%I FROM pg_catalog.jsonb_populate_record(NULL::bv_audit.%I, $1) k)',
                             c.audit_column, c.audit_column, t.audit_table), ' AND ' ORDER BY p.ord),
           (array_agg(format('a.%I', c.audit_column) ORDER BY p.ord))[1]
      INTO cond, first_key
      FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
      JOIN bv_audit.columns c ON c.tracked_id = t.id
      JOIN pg_catalog.pg_attribute att
        ON att.attrelid = t.relid AND att.attnum = c.src_attnum AND att.attname = p.col;
    RETURN QUERY EXECUTE format(
        'SELECT a.audit_id, a.audit_op, a.audit_ts, a.audit_actor, a.audit_xid, a.audit_app, '
        '       a.audit_client, a.audit_trace, a.audit_changed, %s '
        '  FROM bv_audit.%I a '
        ' WHERE ((%s) OR (%s IS NULL AND a.audit_op = ''T'')) AND (a.audit_xid < $2 OR a.audit_xid = $3) '
        ' ORDER BY a.audit_id',
        bv_audit._row_expr(t, 'a'), t.audit_table, cond, first_key) USING pk, horizon, own;
END
$$;

CREATE OR REPLACE FUNCTION bv_audit.changes(tbl regclass, from_ts timestamptz, to_ts timestamptz DEFAULT now())
RETURNS TABLE (audit_id bigint, operation text, changed_at timestamptz, actor text,
               transaction_id xid8, application_name text, client_addr inet,
               traceparent text, changed_columns text[], row_data jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL THEN
        RAISE EXCEPTION 'time range must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass both ends, e.g. now() - interval ''1 day'' and now().';
    END IF;
    IF from_ts > to_ts THEN
        RAISE EXCEPTION 'time range ends before it starts'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('from %s is after to %s.', from_ts, to_ts),
                  HINT = 'Pass the earlier time first.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT a.audit_id, a.audit_op, a.audit_ts, a.audit_actor, a.audit_xid, a.audit_app, '
        '       a.audit_client, a.audit_trace, a.audit_changed, %s '
        '  FROM bv_audit.%I a WHERE a.audit_ts >= $1 AND a.audit_ts < $2 AND a.audit_op <> ''S'' '
        '   AND (a.audit_xid < $3 OR a.audit_xid = $4) '
        ' ORDER BY a.audit_id',
        bv_audit._row_expr(t, 'a'), t.audit_table) USING from_ts, to_ts, horizon, own;
END
$$;

CREATE OR REPLACE FUNCTION bv_audit.as_of(tbl regclass, ts timestamptz)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
    keys text;
BEGIN
    IF ts IS NULL THEN
        RAISE EXCEPTION 'time must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the time to read the table at, e.g. now() - interval ''1 day''.';
    END IF;
    SELECT string_agg(format('a.%I', c.audit_column), ', ' ORDER BY p.ord) INTO keys
      FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = t.relid AND att.attname = p.col
      JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = att.attnum;
    -- The last record of each row at ts, unless it was a DELETE or a later
    -- TRUNCATE (up to ts) emptied the table.
    RETURN QUERY EXECUTE format(
        'WITH cut AS (SELECT max(x.audit_id) AS id FROM bv_audit.%I x '
        '              WHERE x.audit_op = ''T'' AND x.audit_ts <= $1 AND (x.audit_xid < $2 OR x.audit_xid = $3)), '
        '     last AS (SELECT DISTINCT ON (%s) a.* FROM bv_audit.%I a '
        '               WHERE a.audit_ts <= $1 AND a.audit_op <> ''T'' AND (a.audit_xid < $2 OR a.audit_xid = $3) '
        '               ORDER BY %s, a.audit_id DESC) '
        'SELECT %s FROM last a, cut '
        ' WHERE a.audit_op <> ''D'' AND (cut.id IS NULL OR a.audit_id > cut.id) '
        ' ORDER BY %s',
        t.audit_table, keys, t.audit_table, keys, bv_audit._row_expr(t, 'a'), keys) USING ts, horizon, own;
END
$$;

-- ===========================================================================
-- #18 audit review: a tracked table keeps a primary key, a new key ends the
-- histories it no longer shows, and a table owner cannot stop capture (or
-- the stamp trigger) through an extension dependency.
--
-- * A tracked table without a primary key (ALTER TABLE ... DROP CONSTRAINT
--   of it, or DROP COLUMN of a key column) had its rows recorded under the
--   old key, and rows with equal old keys hid each other in as_of() and
--   history(): the capture trigger now refuses to write a row of a tracked
--   table without a primary key (55000, capture.c), until one is added.
-- * A primary key on other columns: every key (of the new key columns)
--   that the history says exists and the table no longer has gets a 'D'
--   (audit_changed = the new key columns), so as_of() shows no ghost of a
--   row whose new-key value changed before the key changed.
-- * ALTER TRIGGER <capture or stamp trigger> DEPENDS ON EXTENSION x, then
--   DROP EXTENSION x, dropped the trigger with no DROP TRIGGER command: a
--   capture (or stamp) trigger may not depend on an extension, and the
--   sql_drop guard also follows DROP EXTENSION and DROP OWNED.
-- * The stamp trigger is guarded like the capture triggers: a
--   non-superuser cannot disable, drop, rename or replace it (created_* and
--   updated_* could be forged otherwise).
-- ===========================================================================

CREATE OR REPLACE FUNCTION bv_audit._capture_intact(relid oid, tracked_id integer)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) = 2
      FROM pg_catalog.pg_trigger tg
     WHERE tg.tgrelid = relid
       AND tg.tgfoid = 'bv_audit.capture_trigger()'::pg_catalog.regprocedure
       AND tg.tgenabled IN ('O', 'A') AND NOT tg.tgisinternal
       AND tg.tgqual IS NULL AND tg.tgattr = ''::pg_catalog.int2vector AND tg.tgnargs = 1
       AND pg_catalog.encode(tg.tgargs, 'escape') = tracked_id::text || '\000'
       AND ((tg.tgname = 'bv_audit_capture' AND tg.tgtype = 29)           -- AFTER ROW INSERT OR UPDATE OR DELETE
            OR (tg.tgname = 'bv_audit_capture_truncate' AND tg.tgtype = 32)) -- AFTER STATEMENT TRUNCATE
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                        WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
                          AND d.objid = tg.oid AND d.deptype = 'x')
$$;

-- The stamp trigger of a table, if the table has (or had) one: intact when
-- there is exactly one trigger calling stamp_trigger(), named and shaped as
-- stamp() makes it, enabled, with no extension dependency.
CREATE FUNCTION bv_audit._stamp_intact(relid oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) FILTER (WHERE tg.tgname = 'bv_audit_stamp' AND tg.tgtype = 23  -- BEFORE ROW INSERT OR UPDATE
                              AND tg.tgenabled IN ('O', 'A') AND tg.tgqual IS NULL
                              AND tg.tgattr = ''::pg_catalog.int2vector AND tg.tgnargs = 0
                              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                               WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
                                                 AND d.objid = tg.oid AND d.deptype = 'x')) = 1
           AND count(*) = 1
      FROM pg_catalog.pg_trigger tg
     WHERE tg.tgrelid = relid
       AND (tg.tgfoid = 'bv_audit.stamp_trigger()'::pg_catalog.regprocedure OR tg.tgname = 'bv_audit_stamp')
$$;
COMMENT ON FUNCTION bv_audit._stamp_intact(oid) IS
'Internal: whether a stamped table still has its stamp trigger, enabled and as bv_audit.stamp() created it.';

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
    FOR t IN SELECT tr.id, tr.relid FROM bv_audit.tracked tr
              WHERE tr.relid = ANY (rels) AND tr.enabled LOOP
        IF NOT bv_audit._capture_intact(t.relid, t.id) THEN
            RAISE EXCEPTION 'only a superuser can stop bv_audit from recording changes of %', t.relid::regclass
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'The command would disable, drop, rename or replace a capture trigger of a tracked table.',
                      HINT = 'Ask a member of bv_admin to call bv_audit.disable() on the table.';
        END IF;
    END LOOP;
    FOREACH r IN ARRAY coalesce(stamped, '{}') LOOP
        IF r IS NOT NULL AND NOT bv_audit._stamp_intact(r) THEN
            RAISE EXCEPTION 'only a superuser can stop bv_audit from stamping %', r::regclass
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'The command would disable, drop, rename, replace or tie to an extension the trigger bv_audit_stamp, which fills created_by, created_at, updated_by and updated_at.',
                      HINT = 'Ask a superuser to drop the trigger if the table should no longer be stamped.';
        END IF;
    END LOOP;
END
$$;

DROP EVENT TRIGGER bv_audit_guard_drop;
CREATE EVENT TRIGGER bv_audit_guard_drop ON sql_drop
    WHEN TAG IN ('DROP TRIGGER', 'DROP EXTENSION', 'DROP OWNED')
    EXECUTE FUNCTION bv_audit._guard_capture();

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

-- #18 audit review: the snapshot of enable() reads ONLY the table.  The
-- rows of inheritance children are not the table's (their writes fire the
-- children's triggers, not the parent's, and may repeat the parent's keys):
-- 0.2.0 recorded them as S records that no later change ever ended, so a
-- child row deleted after enable() stayed in as_of() of the parent.
CREATE OR REPLACE FUNCTION bv_audit._snapshot(t bv_audit.tracked)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cols text;
    src text;
    n bigint;
BEGIN
    SELECT string_agg(format('%I', c.audit_column), ', ' ORDER BY c.src_attnum),
           string_agg(format('s.%I', att.attname), ', ' ORDER BY c.src_attnum)
      INTO cols, src
      FROM bv_audit.columns c
      JOIN pg_catalog.pg_attribute att
        ON att.attrelid = t.relid AND att.attnum = c.src_attnum AND NOT att.attisdropped
     WHERE c.tracked_id = t.id;
    EXECUTE format('INSERT INTO bv_audit.%I (audit_op, audit_xid, audit_actor, audit_ts, audit_app, '
                   'audit_client, audit_trace, %s) '
                   'SELECT ''S'', pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.now(), '
                   'NULLIF(pg_catalog.current_setting(''application_name''), ''''), '
                   'pg_catalog.inet_client_addr(), bv.trace_context(), %s FROM ONLY %I.%I s',
                   t.audit_table, cols, src, t.source_schema, t.source_table);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- #18 audit review: enable() after a type change made while tracking was
-- disabled.  The change had no event trigger to refuse it, and enable()
-- then refused forever with a hint that could not apply ("cannot change the
-- type ..."): the table could never be tracked again.  Now the old audit
-- column keeps its history as <name>_retyped<attnum> (still shown by
-- history(), mapped under an attribute number <= -1000 that no column has)
-- and a new audit column of the new type mirrors the column.  A key
-- column's type change is still refused (history() and as_of() follow keys
-- by one audit column).
CREATE OR REPLACE FUNCTION bv_audit._sync_columns(t bv_audit.tracked, from_ddl boolean)
RETURNS smallint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
    m bv_audit.columns;
    acol record;
    want record;
    target name;
    n integer;
    added smallint[] := '{}';
    key_retyped boolean := false;
BEGIN
    UPDATE bv_audit.tracked tr
       SET source_schema = ns.nspname, source_table = c.relname
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
     WHERE tr.id = t.id AND c.oid = t.relid
       AND (tr.source_schema, tr.source_table) IS DISTINCT FROM (ns.nspname, c.relname);
    -- Follow a renamed key column.
    UPDATE bv_audit.tracked tr
       SET pk_columns = k.cols
      FROM (SELECT array_agg(pa.attname ORDER BY x.ord) AS cols
              FROM pg_catalog.pg_index i
              CROSS JOIN LATERAL unnest(i.indkey::smallint[]) WITH ORDINALITY AS x(attnum, ord)
              JOIN pg_catalog.pg_attribute pa ON pa.attrelid = i.indrelid AND pa.attnum = x.attnum
             WHERE i.indrelid = t.relid AND i.indisprimary) k
     WHERE tr.id = t.id AND k.cols IS NOT NULL AND k.cols <> tr.pk_columns;
    -- A new primary key (other columns): the history index follows it.
    IF from_ddl AND EXISTS (SELECT 1 FROM bv_audit.tracked tr WHERE tr.id = t.id AND tr.pk_columns <> t.pk_columns)
       AND (SELECT array_agg(x.attnum ORDER BY x.attnum) FROM pg_catalog.pg_attribute x
             WHERE x.attrelid = t.relid AND x.attname = ANY (t.pk_columns))
           IS DISTINCT FROM
           (SELECT array_agg(x.attnum ORDER BY x.attnum) FROM pg_catalog.pg_attribute x
             JOIN bv_audit.tracked tr ON tr.id = t.id
            WHERE x.attrelid = t.relid AND x.attname = ANY (tr.pk_columns)) THEN
        key_retyped := true;
    END IF;
    -- Excluded columns by attnum; their names follow renames.
    UPDATE bv_audit.tracked tr
       SET exclude_columns = coalesce((SELECT array_agg(x.attname ORDER BY x.attnum)
                                         FROM pg_catalog.pg_attribute x
                                        WHERE x.attrelid = t.relid AND x.attnum = ANY (tr.exclude_attnums)
                                          AND NOT x.attisdropped), '{}')
     WHERE tr.id = t.id
    RETURNING * INTO t;

    FOR a IN
        SELECT att.attnum, att.attname, att.atttypid, att.atttypmod, att.attcollation
          FROM pg_catalog.pg_attribute att
         WHERE att.attrelid = t.relid AND att.attnum > 0 AND NOT att.attisdropped
         ORDER BY att.attnum
    LOOP
        SELECT * INTO m FROM bv_audit.columns c
         WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;

        IF a.attnum = ANY (t.exclude_attnums) THEN
            -- Newly excluded: stop copying; the audit column keeps its past.
            DELETE FROM bv_audit.columns c WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;
            CONTINUE;
        END IF;

        IF a.attname IN ('audit_id', 'audit_op', 'audit_xid', 'audit_actor', 'audit_ts',
                         'audit_app', 'audit_client', 'audit_trace', 'audit_changed') THEN
            RAISE EXCEPTION 'column "%" of table %.% collides with an audit metadata column',
                  a.attname, t.source_schema, t.source_table
                USING ERRCODE = 'duplicate_column',
                      DETAIL = 'Audit tables reserve the names audit_id, audit_op, audit_xid, audit_actor, audit_ts, audit_app, audit_client, audit_trace and audit_changed.',
                      HINT = 'Rename the column, or list it in exclude_columns.';
        END IF;

        want := bv_audit._audit_type(a.atttypid, a.atttypmod);
        -- Rendering a non-built-in type as text runs its functions inside
        -- bv_audit's SECURITY DEFINER functions: only types a superuser owns.
        IF want.foreign_code AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_type ty
                  JOIN pg_catalog.pg_roles r ON r.oid = ty.typowner
                 WHERE ty.oid = a.atttypid AND NOT r.rolsuper) THEN
            RAISE EXCEPTION 'column "%" of %.% has a type that bv_audit cannot copy', a.attname, t.source_schema, t.source_table
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = format('Type %s is owned by a role that is not a superuser; bv_audit runs its functions with elevated privileges.', format_type(a.atttypid, a.atttypmod)),
                      HINT = 'List the column in exclude_columns, or have a superuser own the type.';
        END IF;

        IF m.src_attnum IS NULL THEN
            -- A new column.  The audit column of a dropped one with its name
            -- is renamed out of the way (it keeps its history).
            target := a.attname;
            n := 0;
            IF NOT bv_audit._free_audit_name(t, target) THEN
                WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                               WHERE x.attrelid = t.audit_relid AND x.attname = target
                                 AND NOT x.attisdropped) LOOP
                    n := n + 1;
                    target := left(a.attname, 50) || '_' || a.attnum || CASE WHEN n > 1 THEN '_' || n ELSE '' END;
                END LOOP;
            END IF;
            EXECUTE format('ALTER TABLE bv_audit.%I ADD COLUMN %I %s%s', t.audit_table, target,
                           format_type(want.audit_type, want.audit_typmod),
                           -- A built-in collation only: a user's could be dropped with CASCADE.
                           CASE WHEN a.attcollation <> 0 AND a.attcollation < 16384 AND want.audit_type = a.atttypid THEN
                               (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                                  FROM pg_catalog.pg_collation co
                                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                 WHERE co.oid = a.attcollation)
                           ELSE '' END);
            INSERT INTO bv_audit.columns (tracked_id, src_attnum, audit_column)
            VALUES (t.id, a.attnum, target);
            added := added || a.attnum;
            CONTINUE;
        END IF;

        -- A known column: follow a rename.
        IF m.audit_column <> a.attname AND bv_audit._free_audit_name(t, a.attname) THEN
            EXECUTE format('ALTER TABLE bv_audit.%I RENAME COLUMN %I TO %I',
                           t.audit_table, m.audit_column, a.attname);
            UPDATE bv_audit.columns c SET audit_column = a.attname
             WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;
            m.audit_column := a.attname;
        END IF;

        -- Follow a type change when it is safe, refuse it otherwise.  An
        -- audit column created before 0.3.0 with the column's own type is
        -- left as it is.
        SELECT x.atttypid, x.atttypmod INTO acol
          FROM pg_catalog.pg_attribute x
         WHERE x.attrelid = t.audit_relid AND x.attname = m.audit_column AND NOT x.attisdropped;
        IF (acol.atttypid, acol.atttypmod) IS DISTINCT FROM (want.audit_type, want.audit_typmod)
           AND (acol.atttypid, acol.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod) THEN
            IF NOT bv_audit._safe_type_change(acol.atttypid, acol.atttypmod, want.audit_type, want.audit_typmod)
               AND NOT from_ddl AND NOT a.attname = ANY (t.pk_columns) THEN
                -- The type changed while tracking was disabled (enable()):
                -- the audit column keeps its history under another name and
                -- is no longer filled; a new audit column of the new type
                -- mirrors the column from now on (the snapshot fills it).
                n := 0;
                target := left(m.audit_column, 40) || '_retyped' || a.attnum;
                WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                               WHERE x.attrelid = t.audit_relid AND x.attname = target AND NOT x.attisdropped) LOOP
                    n := n + 1;
                    target := left(m.audit_column, 40) || '_retyped' || a.attnum || '_' || n;
                END LOOP;
                EXECUTE format('ALTER TABLE bv_audit.%I RENAME COLUMN %I TO %I', t.audit_table, m.audit_column, target);
                -- Kept in the mapping (so that history() shows it) under an
                -- attribute number no column has: -1000 and below.
                UPDATE bv_audit.columns c
                   SET src_attnum = (SELECT least(-1000, min(x.src_attnum) - 1) FROM bv_audit.columns x
                                      WHERE x.tracked_id = t.id),
                       audit_column = target
                 WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;
                EXECUTE format('ALTER TABLE bv_audit.%I ADD COLUMN %I %s%s', t.audit_table, a.attname,
                               format_type(want.audit_type, want.audit_typmod),
                               CASE WHEN a.attcollation <> 0 AND a.attcollation < 16384 AND want.audit_type = a.atttypid THEN
                                   (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                                      FROM pg_catalog.pg_collation co
                                      JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                     WHERE co.oid = a.attcollation)
                               ELSE '' END);
                INSERT INTO bv_audit.columns (tracked_id, src_attnum, audit_column)
                VALUES (t.id, a.attnum, a.attname);
                added := added || a.attnum;
                CONTINUE;
            END IF;
            IF NOT bv_audit._safe_type_change(acol.atttypid, acol.atttypmod, want.audit_type, want.audit_typmod)
               AND NOT from_ddl THEN
                RAISE EXCEPTION 'cannot follow the type change of key column "%" of %.% from % to %',
                      a.attname, t.source_schema, t.source_table,
                      format_type(acol.atttypid, acol.atttypmod), format_type(a.atttypid, a.atttypmod)
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = 'The type changed while tracking was disabled; history() and as_of() follow rows by the key''s audit column, which holds the old type.',
                          HINT = format('Change the column back to %s to enable tracking again; the history stays in bv_audit.%I.',
                                        format_type(acol.atttypid, acol.atttypmod), t.audit_table);
            END IF;
            IF NOT bv_audit._safe_type_change(acol.atttypid, acol.atttypmod, want.audit_type, want.audit_typmod) THEN
                RAISE EXCEPTION 'cannot change the type of audited column "%" of %.% from % to %',
                      a.attname, t.source_schema, t.source_table,
                      format_type(acol.atttypid, acol.atttypmod), format_type(a.atttypid, a.atttypmod)
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = 'Its audit column holds the history of the column, and this change could lose or alter recorded values.',
                          HINT = 'Add a new column of the new type and migrate the data into it; the old column''s history stays in the audit table.';
            END IF;
            -- The history index names an operator class of the key's type.
            IF a.attname = ANY (t.pk_columns) AND NOT key_retyped
               AND to_regclass(format('bv_audit.%I', t.audit_table || '_history')) IS NOT NULL THEN
                EXECUTE format('DROP INDEX bv_audit.%I', t.audit_table || '_history');
                key_retyped := true;
            END IF;
            EXECUTE format('ALTER TABLE bv_audit.%I ALTER COLUMN %I TYPE %s',
                           t.audit_table, m.audit_column, format_type(want.audit_type, want.audit_typmod));
        END IF;
    END LOOP;
    IF key_retyped THEN
        PERFORM bv_audit._history_index(t, t.history_index);
    END IF;
    RETURN added;
END
$$;

-- #18 audit review: a retention longer than the calendar ('100000 years')
-- made purge() fail with "timestamp out of range" for every audit table,
-- not only that one (and the pg_cron job with it).  purge() skips such a
-- table (nothing in it can be old enough), and set_retention() refuses
-- retentions that reach before 4713 BC (22023).
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

CREATE OR REPLACE FUNCTION bv_audit.set_retention(tbl regclass, keep interval)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
BEGIN
    IF keep IS NOT NULL AND keep <= interval '0' THEN
        RAISE EXCEPTION 'retention must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', keep),
                  HINT = 'Pass e.g. interval ''7 years'', or NULL to keep records forever.';
    END IF;
    IF keep IS NOT NULL AND keep > now() - '4713-01-01 00:00+00 BC'::timestamptz THEN
        RAISE EXCEPTION 'retention is longer than the calendar'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s; timestamps start in 4713 BC.', keep),
                  HINT = 'Pass NULL to keep records forever.';
    END IF;
    UPDATE bv_audit.tracked tr SET retention = keep WHERE tr.id = t.id;
END
$$;

-- #18 audit review: deleting the newest seal link but not its entries went
-- unnoticed: verify() said ok (its entries were joined to links only), and
-- every later seal() of the table failed on the entries left behind, so
-- nothing of that table was ever sealed again while verify() kept saying
-- ok.  verify() reports entries (and purge remainders) of a seal that is
-- not in the chain as "seal entries altered".
CREATE OR REPLACE FUNCTION bv_audit.verify(tbl regclass)
RETURNS TABLE (ok boolean, seals_checked integer, records_checked bigint,
               problem text, audit_id bigint, seal_no integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET lc_monetary = 'C'
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    s bv_audit.seals;
    prev_chain bytea := ''::bytea;
    last_hi xid8 := '0'::xid8;
    last_format smallint := 1;
    batch bytea;
    bad integer;
    -- No committed record can carry a transaction id from the snapshot's
    -- xmax on (such an id had not been assigned when the snapshot was
    -- taken); this transaction's own records can.
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
    r record;
BEGIN
    seals_checked := 0;
    records_checked := 0;
    -- 1. The chain: numbering, contiguous transaction-id ranges, the digest
    --    of every link (format 2: its metadata too), and each purge link's
    --    remainders.
    FOR s IN SELECT * FROM bv_audit.seals x WHERE x.tracked_id = t.id ORDER BY x.seal_no LOOP
        IF s.seal_no <> seals_checked + 1 OR s.xid_lo <> last_hi OR s.format < last_format
           OR (s.kind = 'seal' AND s.xid_hi <= s.xid_lo)
           OR (s.kind = 'purge' AND (s.xid_hi <> s.xid_lo OR s.format < 2))
           OR s.chain_digest IS DISTINCT FROM
              (CASE WHEN s.format = 1 THEN sha256(prev_chain || s.batch_digest)
                    ELSE sha256(prev_chain || bv_audit._link_header(s) || s.batch_digest) END) THEN
            ok := false; problem := 'seal chain broken: seal missing, reordered or altered';
            seal_no := s.seal_no; audit_id := NULL;
            RETURN NEXT; RETURN;
        END IF;
        IF s.kind = 'purge' THEN
            SELECT sha256(coalesce(string_agg(int4send(m.seal_no) || int8send(m.row_count) || m.digest, ''::bytea
                                              ORDER BY m.seal_no), ''::bytea))
              INTO batch
              FROM bv_audit.seal_remainders m WHERE m.tracked_id = t.id AND m.purge_no = s.seal_no;
            IF batch <> s.batch_digest
               OR EXISTS (SELECT FROM bv_audit.seal_remainders m
                            LEFT JOIN bv_audit.seals x ON x.tracked_id = m.tracked_id AND x.seal_no = m.seal_no
                           WHERE m.tracked_id = t.id AND m.purge_no = s.seal_no
                             AND (x.kind IS DISTINCT FROM 'seal' OR x.seal_no > s.seal_no)) THEN
                ok := false; problem := 'purge record altered: what it left of the seals no longer matches';
                seal_no := s.seal_no; audit_id := NULL;
                RETURN NEXT; RETURN;
            END IF;
        END IF;
        prev_chain := s.chain_digest;
        last_hi := s.xid_hi;
        last_format := s.format;
        seals_checked := seals_checked + 1;
    END LOOP;

    -- 2. Each seal's entries: its batch digest, or what its latest purge
    --    left.  Nothing is skipped after a purge.
    bad := bv_audit._seal_entries_mismatch(t.id);
    IF bad IS NOT NULL THEN
        ok := false; problem := 'seal entries altered: the record digests no longer match the seal';
        seal_no := bad; audit_id := NULL;
        RETURN NEXT; RETURN;
    END IF;

    --    Entries (or remainders) of a seal that is not in the chain: the
    --    newest link was deleted and its entries left behind (seal() then
    --    cannot re-seal those records, and the table is never sealed again).
    SELECT min(x.seal_no) INTO bad
      FROM (SELECT e.seal_no FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id
            UNION ALL
            SELECT m.seal_no FROM bv_audit.seal_remainders m WHERE m.tracked_id = t.id) x
     WHERE NOT EXISTS (SELECT 1 FROM bv_audit.seals l WHERE l.tracked_id = t.id AND l.seal_no = x.seal_no);
    IF bad IS NOT NULL THEN
        ok := false; problem := 'seal entries altered: entries of a seal that is not in the chain';
        seal_no := bad; audit_id := NULL;
        RETURN NEXT; RETURN;
    END IF;

    -- 3. Every record against its entry, in audit_id order: altered,
    --    missing, inside a sealed range without an entry (inserted
    --    afterwards), or carrying a transaction id not assigned yet.
    --    a.* is the audit table's row whatever its columns are called.  A
    --    format-1 entry may hold either digest: 0.2.0's seal() computed it
    --    under its session's settings, or, run with the 0.3.0 library before
    --    ALTER EXTENSION UPDATE, under the canonical ones.
    FOR r IN EXECUTE format(
        'SELECT coalesce(e.audit_id, a.audit_id) AS id, e.seal_no AS seal, '
        '       CASE WHEN a.audit_id IS NULL THEN ''record missing'' '
        '            WHEN a.audit_xid >= $3 AND a.audit_xid IS DISTINCT FROM $4 THEN ''record from the future: its transaction id has not been assigned yet'' '
        '            WHEN e.audit_id IS NULL AND a.audit_xid < $2 THEN ''record not covered by its seal (inserted afterwards)'' '
        '            WHEN e.audit_id IS NULL THEN NULL '
        '            WHEN e.digest IS DISTINCT FROM bv_audit.row_digest(a.*) '
        '                 AND (e.format <> 1 OR e.digest IS DISTINCT FROM bv_audit._row_digest_v1(a.*)) '
        '            THEN ''record altered'' END AS what, '
        '       e.audit_id IS NOT NULL AS sealed '
        '  FROM (SELECT x.audit_id, x.seal_no, x.digest, l.format '
        '          FROM bv_audit.seal_entries x '
        '          JOIN bv_audit.seals l ON l.tracked_id = x.tracked_id AND l.seal_no = x.seal_no '
        '         WHERE x.tracked_id = $1) e '
        '  FULL JOIN bv_audit.%I a ON a.audit_id = e.audit_id '
        ' ORDER BY 1', t.audit_table)
        USING t.id, last_hi, horizon, own
    LOOP
        IF r.what IS NOT NULL THEN
            ok := false; problem := r.what; audit_id := r.id; seal_no := r.seal;
            RETURN NEXT; RETURN;
        END IF;
        IF r.sealed THEN
            records_checked := records_checked + 1;
        END IF;
    END LOOP;
    ok := true; problem := NULL; audit_id := NULL; seal_no := NULL;
    RETURN NEXT;
END
$$;

-- #18 audit review: the chain of a dropped table could not be verified
-- (verify() took the live table only, and DROP TABLE keeps the audit table
-- and goes on sealing it): verify() also takes the audit table.
CREATE OR REPLACE FUNCTION bv_audit.verify(tbl regclass)
RETURNS TABLE (ok boolean, seals_checked integer, records_checked bigint,
               problem text, audit_id bigint, seal_no integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
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
    s bv_audit.seals;
    prev_chain bytea := ''::bytea;
    last_hi xid8 := '0'::xid8;
    last_format smallint := 1;
    batch bytea;
    bad integer;
    -- No committed record can carry a transaction id from the snapshot's
    -- xmax on (such an id had not been assigned when the snapshot was
    -- taken); this transaction's own records can.
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
    r record;
BEGIN
    -- The tracked table, or its audit table (the only name left for the
    -- history of a dropped table).
    SELECT * INTO t FROM bv_audit.tracked x WHERE x.audit_relid = tbl;
    IF NOT FOUND THEN
        t := bv_audit._tracked(tbl);
    END IF;
    seals_checked := 0;
    records_checked := 0;
    -- 1. The chain: numbering, contiguous transaction-id ranges, the digest
    --    of every link (format 2: its metadata too), and each purge link's
    --    remainders.
    FOR s IN SELECT * FROM bv_audit.seals x WHERE x.tracked_id = t.id ORDER BY x.seal_no LOOP
        IF s.seal_no <> seals_checked + 1 OR s.xid_lo <> last_hi OR s.format < last_format
           OR (s.kind = 'seal' AND s.xid_hi <= s.xid_lo)
           OR (s.kind = 'purge' AND (s.xid_hi <> s.xid_lo OR s.format < 2))
           OR s.chain_digest IS DISTINCT FROM
              (CASE WHEN s.format = 1 THEN sha256(prev_chain || s.batch_digest)
                    ELSE sha256(prev_chain || bv_audit._link_header(s) || s.batch_digest) END) THEN
            ok := false; problem := 'seal chain broken: seal missing, reordered or altered';
            seal_no := s.seal_no; audit_id := NULL;
            RETURN NEXT; RETURN;
        END IF;
        IF s.kind = 'purge' THEN
            SELECT sha256(coalesce(string_agg(int4send(m.seal_no) || int8send(m.row_count) || m.digest, ''::bytea
                                              ORDER BY m.seal_no), ''::bytea))
              INTO batch
              FROM bv_audit.seal_remainders m WHERE m.tracked_id = t.id AND m.purge_no = s.seal_no;
            IF batch <> s.batch_digest
               OR EXISTS (SELECT FROM bv_audit.seal_remainders m
                            LEFT JOIN bv_audit.seals x ON x.tracked_id = m.tracked_id AND x.seal_no = m.seal_no
                           WHERE m.tracked_id = t.id AND m.purge_no = s.seal_no
                             AND (x.kind IS DISTINCT FROM 'seal' OR x.seal_no > s.seal_no)) THEN
                ok := false; problem := 'purge record altered: what it left of the seals no longer matches';
                seal_no := s.seal_no; audit_id := NULL;
                RETURN NEXT; RETURN;
            END IF;
        END IF;
        prev_chain := s.chain_digest;
        last_hi := s.xid_hi;
        last_format := s.format;
        seals_checked := seals_checked + 1;
    END LOOP;

    -- 2. Each seal's entries: its batch digest, or what its latest purge
    --    left.  Nothing is skipped after a purge.
    bad := bv_audit._seal_entries_mismatch(t.id);
    IF bad IS NOT NULL THEN
        ok := false; problem := 'seal entries altered: the record digests no longer match the seal';
        seal_no := bad; audit_id := NULL;
        RETURN NEXT; RETURN;
    END IF;

    --    Entries (or remainders) of a seal that is not in the chain: the
    --    newest link was deleted and its entries left behind (seal() then
    --    cannot re-seal those records, and the table is never sealed again).
    SELECT min(x.seal_no) INTO bad
      FROM (SELECT e.seal_no FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id
            UNION ALL
            SELECT m.seal_no FROM bv_audit.seal_remainders m WHERE m.tracked_id = t.id) x
     WHERE NOT EXISTS (SELECT 1 FROM bv_audit.seals l WHERE l.tracked_id = t.id AND l.seal_no = x.seal_no);
    IF bad IS NOT NULL THEN
        ok := false; problem := 'seal entries altered: entries of a seal that is not in the chain';
        seal_no := bad; audit_id := NULL;
        RETURN NEXT; RETURN;
    END IF;

    -- 3. Every record against its entry, in audit_id order: altered,
    --    missing, inside a sealed range without an entry (inserted
    --    afterwards), or carrying a transaction id not assigned yet.
    --    a.* is the audit table's row whatever its columns are called.  A
    --    format-1 entry may hold either digest: 0.2.0's seal() computed it
    --    under its session's settings, or, run with the 0.3.0 library before
    --    ALTER EXTENSION UPDATE, under the canonical ones.
    FOR r IN EXECUTE format(
        'SELECT coalesce(e.audit_id, a.audit_id) AS id, e.seal_no AS seal, '
        '       CASE WHEN a.audit_id IS NULL THEN ''record missing'' '
        '            WHEN a.audit_xid >= $3 AND a.audit_xid IS DISTINCT FROM $4 THEN ''record from the future: its transaction id has not been assigned yet'' '
        '            WHEN e.audit_id IS NULL AND a.audit_xid < $2 THEN ''record not covered by its seal (inserted afterwards)'' '
        '            WHEN e.audit_id IS NULL THEN NULL '
        '            WHEN e.digest IS DISTINCT FROM bv_audit.row_digest(a.*) '
        '                 AND (e.format <> 1 OR e.digest IS DISTINCT FROM bv_audit._row_digest_v1(a.*)) '
        '            THEN ''record altered'' END AS what, '
        '       e.audit_id IS NOT NULL AS sealed '
        '  FROM (SELECT x.audit_id, x.seal_no, x.digest, l.format '
        '          FROM bv_audit.seal_entries x '
        '          JOIN bv_audit.seals l ON l.tracked_id = x.tracked_id AND l.seal_no = x.seal_no '
        '         WHERE x.tracked_id = $1) e '
        '  FULL JOIN bv_audit.%I a ON a.audit_id = e.audit_id '
        ' ORDER BY 1', t.audit_table)
        USING t.id, last_hi, horizon, own
    LOOP
        IF r.what IS NOT NULL THEN
            ok := false; problem := r.what; audit_id := r.id; seal_no := r.seal;
            RETURN NEXT; RETURN;
        END IF;
        IF r.sealed THEN
            records_checked := records_checked + 1;
        END IF;
    END LOOP;
    ok := true; problem := NULL; audit_id := NULL; seal_no := NULL;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION bv_audit.verify(regclass) IS
'Checks the seal chain of a tracked table (or of its audit table, e.g. after DROP TABLE) and every sealed record against it; returns ok or the first problem found.';

-- ===========================================================================
-- #18 audit review: bv_audit must not reveal what its caller cannot SELECT.
-- enable() copies every row of a table into an audit table that bv_admin
-- reads, and history()/as_of()/changes() run as the extension's owner: a
-- member of bv_admin could read any table (bv.jwt_keys, or a table with
-- column grants or row-level security) by enabling it or reading its
-- history.  The caller (the role that called the function: SET ROLE's, else
-- the session user; a SECURITY DEFINER function does not change it) must
-- be able to SELECT every column that is copied (all but the excluded
-- ones), must not be subject to row-level security on the table (history
-- cannot apply policies to past rows), and only a superuser may track a
-- table that belongs to an extension (its internals: keys and secrets would
-- stay in clear in the history after rotation).  42501 otherwise.
-- ===========================================================================
CREATE FUNCTION bv_audit._check_read(tbl regclass, excluded name[], tracking boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                        ELSE pg_catalog.current_setting('role')::name END;
    r record;
    col name;
BEGIN
    SELECT x.rolsuper, x.rolbypassrls INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = caller;
    IF tbl IS NULL OR r.rolsuper OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl) THEN
        RETURN;
    END IF;
    IF tracking AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = tbl
                               AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e') THEN
        RAISE EXCEPTION 'only a superuser can track %, a table of an extension', tbl
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The tables of extensions hold their internal state (keys, secrets); their history would keep it after rotation.',
                  HINT = 'Ask a superuser, if the table really should be tracked.';
    END IF;
    SELECT a.attname INTO col
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname <> ALL (coalesce(excluded, '{}'))
       AND NOT pg_catalog.has_column_privilege(caller, tbl, a.attnum, 'SELECT')
     ORDER BY a.attnum LIMIT 1;
    IF col IS NOT NULL THEN
        RAISE EXCEPTION 'permission denied for column % of %', col, tbl
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s cannot SELECT it, and bv_audit would show its values.', caller),
                  HINT = CASE WHEN tracking THEN 'Exclude the column, or get SELECT on it.'
                              ELSE 'Get SELECT on every column the audit table mirrors.' END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                WHERE c.oid = tbl AND c.relrowsecurity
                  AND (c.relforcerowsecurity OR NOT pg_catalog.pg_has_role(caller, c.relowner, 'USAGE')))
       AND NOT r.rolbypassrls THEN
        RAISE EXCEPTION 'permission denied for %: row-level security applies to %', tbl, caller
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The history of a table cannot apply its row-level security policies to past rows.',
                  HINT = 'Ask a role that bypasses row-level security (or a superuser) to read its history.';
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._check_read(regclass, name[], boolean) IS
'Internal: refuses (42501) to track or show the history of a table whose copied columns the calling role cannot SELECT, whose rows row-level security filters for it, or (tracking, non-superusers) that belongs to an extension.';
REVOKE ALL ON FUNCTION bv_audit._check_read(regclass, name[], boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION bv_audit.enable(tbl regclass, exclude_columns text[] DEFAULT '{}',
                                retention interval DEFAULT NULL, history_index text DEFAULT NULL)
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
    PERFORM bv_audit._check_read(tbl, excl, true);
    IF retention IS NOT NULL AND retention <= interval '0' THEN
        RAISE EXCEPTION 'retention must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', retention),
                  HINT = 'Pass e.g. interval ''7 years'', or NULL to keep records forever.';
    END IF;
    IF history_index IS NOT NULL AND history_index NOT IN ('bloom', 'btree') THEN
        RAISE EXCEPTION 'unknown history index "%"', history_index
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
        PERFORM bv_audit._history_index(t, coalesce(enable.history_index, 'bloom'));
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

    EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
    EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
    PERFORM bv_audit._invalidate(tbl);
    RETURN t.audit_relid;
END
$$;
CREATE OR REPLACE FUNCTION bv_audit.history(tbl regclass, pk jsonb)
RETURNS TABLE (audit_id bigint, operation text, changed_at timestamptz, actor text,
               transaction_id xid8, application_name text, client_addr inet,
               traceparent text, changed_columns text[], row_data jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
    cond text;
    first_key text;
    missing text;
BEGIN
    PERFORM bv_audit._check_read(tbl, t.exclude_columns, false);
    SELECT string_agg(format('%I', k), ', ') INTO missing
      FROM unnest(t.pk_columns) AS k WHERE NOT pk ? k;
    IF jsonb_typeof(pk) IS DISTINCT FROM 'object' OR missing IS NOT NULL THEN
        RAISE EXCEPTION 'primary key value must be a JSON object with every key column'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The primary key of %s is (%s); missing: %s.', tbl,
                                  array_to_string(t.pk_columns, ', '), coalesce(missing, 'not an object')),
                  HINT = format('Pass e.g. %L.', (SELECT jsonb_object_agg(k, '...') FROM unnest(t.pk_columns) AS k));
    END IF;
    -- Key equality against constants (the key converted to the columns'
    -- types once), so that the history index finds the records; TRUNCATE
    -- records have no key (NULL), which the index finds too.
    SELECT string_agg(format('a.%I = (SELECT k.%I FROM pg_catalog.jsonb_populate_record(NULL::bv_audit.%I, $1) k)',
                             c.audit_column, c.audit_column, t.audit_table), ' AND ' ORDER BY p.ord),
           (array_agg(format('a.%I', c.audit_column) ORDER BY p.ord))[1]
      INTO cond, first_key
      FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
      JOIN bv_audit.columns c ON c.tracked_id = t.id
      JOIN pg_catalog.pg_attribute att
        ON att.attrelid = t.relid AND att.attnum = c.src_attnum AND att.attname = p.col;
    RETURN QUERY EXECUTE format(
        'SELECT a.audit_id, a.audit_op, a.audit_ts, a.audit_actor, a.audit_xid, a.audit_app, '
        '       a.audit_client, a.audit_trace, a.audit_changed, %s '
        '  FROM bv_audit.%I a '
        ' WHERE ((%s) OR (%s IS NULL AND a.audit_op = ''T'')) AND (a.audit_xid < $2 OR a.audit_xid = $3) '
        ' ORDER BY a.audit_id',
        bv_audit._row_expr(t, 'a'), t.audit_table, cond, first_key) USING pk, horizon, own;
END
$$;
CREATE OR REPLACE FUNCTION bv_audit.as_of(tbl regclass, ts timestamptz)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
    keys text;
BEGIN
    PERFORM bv_audit._check_read(tbl, t.exclude_columns, false);
    IF ts IS NULL THEN
        RAISE EXCEPTION 'time must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the time to read the table at, e.g. now() - interval ''1 day''.';
    END IF;
    SELECT string_agg(format('a.%I', c.audit_column), ', ' ORDER BY p.ord) INTO keys
      FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = t.relid AND att.attname = p.col
      JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = att.attnum;
    -- The last record of each row at ts, unless it was a DELETE or a later
    -- TRUNCATE (up to ts) emptied the table.
    RETURN QUERY EXECUTE format(
        'WITH cut AS (SELECT max(x.audit_id) AS id FROM bv_audit.%I x '
        '              WHERE x.audit_op = ''T'' AND x.audit_ts <= $1 AND (x.audit_xid < $2 OR x.audit_xid = $3)), '
        '     last AS (SELECT DISTINCT ON (%s) a.* FROM bv_audit.%I a '
        '               WHERE a.audit_ts <= $1 AND a.audit_op <> ''T'' AND (a.audit_xid < $2 OR a.audit_xid = $3) '
        '               ORDER BY %s, a.audit_id DESC) '
        'SELECT %s FROM last a, cut '
        ' WHERE a.audit_op <> ''D'' AND (cut.id IS NULL OR a.audit_id > cut.id) '
        ' ORDER BY %s',
        t.audit_table, keys, t.audit_table, keys, bv_audit._row_expr(t, 'a'), keys) USING ts, horizon, own;
END
$$;
CREATE OR REPLACE FUNCTION bv_audit.changes(tbl regclass, from_ts timestamptz, to_ts timestamptz DEFAULT now())
RETURNS TABLE (audit_id bigint, operation text, changed_at timestamptz, actor text,
               transaction_id xid8, application_name text, client_addr inet,
               traceparent text, changed_columns text[], row_data jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    horizon xid8 := pg_snapshot_xmax(pg_current_snapshot());
    own xid8 := pg_current_xact_id_if_assigned();
BEGIN
    PERFORM bv_audit._check_read(tbl, t.exclude_columns, false);
    IF from_ts IS NULL OR to_ts IS NULL THEN
        RAISE EXCEPTION 'time range must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass both ends, e.g. now() - interval ''1 day'' and now().';
    END IF;
    IF from_ts > to_ts THEN
        RAISE EXCEPTION 'time range ends before it starts'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('from %s is after to %s.', from_ts, to_ts),
                  HINT = 'Pass the earlier time first.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT a.audit_id, a.audit_op, a.audit_ts, a.audit_actor, a.audit_xid, a.audit_app, '
        '       a.audit_client, a.audit_trace, a.audit_changed, %s '
        '  FROM bv_audit.%I a WHERE a.audit_ts >= $1 AND a.audit_ts < $2 AND a.audit_op <> ''S'' '
        '   AND (a.audit_xid < $3 OR a.audit_xid = $4) '
        ' ORDER BY a.audit_id',
        bv_audit._row_expr(t, 'a'), t.audit_table) USING from_ts, to_ts, horizon, own;
END
$$;

REVOKE ALL ON FUNCTION bv_audit._safe_type_change(oid, integer, oid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv_audit.row_digest(record) FROM PUBLIC;


-- #18 audit review: no internal function of bv_audit is executable by
-- PUBLIC (API roles).  The capture guard runs as the role whose command it
-- judges (an event trigger needs no EXECUTE privilege), so it checks the
-- triggers inline instead of calling _capture_intact()/_stamp_intact().
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
    FOR t IN SELECT tr.id, tr.relid FROM bv_audit.tracked tr
              WHERE tr.relid = ANY (rels) AND tr.enabled LOOP
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
REVOKE ALL ON FUNCTION bv_audit._guard_capture() FROM PUBLIC;
REVOKE ALL ON FUNCTION bv_audit._capture_intact(oid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv_audit._stamp_intact(oid) FROM PUBLIC;

-- #18 audit review: NULL and huge arguments (tests/tap/bv_null_args.pl):
-- _purge_link() refuses NULL with 22004 (not a raw 23502), and enable()
-- quotes at most 40 characters of an unknown history index.
CREATE OR REPLACE FUNCTION bv_audit._purge_link(tid integer, cutoff timestamptz, removed bigint, trimmed integer[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prev bv_audit.seals;
    link bv_audit.seals;
    next_no integer;
    batch bytea;
BEGIN
    IF tid IS NULL OR removed IS NULL THEN
        RAISE EXCEPTION 'tracked table id and removed count must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'bv_audit._purge_link() is internal to purge(); call bv_audit.purge().';
    END IF;
    SELECT * INTO prev FROM bv_audit.seals s WHERE s.tracked_id = tid ORDER BY s.seal_no DESC LIMIT 1;
    next_no := coalesce(prev.seal_no, 0) + 1;
    INSERT INTO bv_audit.seals (tracked_id, seal_no, kind, xid_lo, xid_hi, ts_floor, row_count,
                                purged_before, batch_digest, chain_digest)
    VALUES (tid, next_no, 'purge', coalesce(prev.xid_hi, '0'::xid8), coalesce(prev.xid_hi, '0'::xid8),
            coalesce(prev.ts_floor, '-infinity'::timestamptz), removed, cutoff, '\x', '\x');
    INSERT INTO bv_audit.seal_remainders (tracked_id, purge_no, seal_no, row_count, digest)
    SELECT tid, next_no, x.no, count(e.audit_id),
           sha256(coalesce(string_agg(int8send(e.audit_id) || e.digest, ''::bytea ORDER BY e.audit_id), ''::bytea))
      FROM (SELECT DISTINCT u.no FROM unnest(trimmed) AS u(no)) x
      LEFT JOIN bv_audit.seal_entries e ON e.tracked_id = tid AND e.seal_no = x.no
     GROUP BY x.no;
    SELECT sha256(coalesce(string_agg(int4send(m.seal_no) || int8send(m.row_count) || m.digest, ''::bytea
                                      ORDER BY m.seal_no), ''::bytea))
      INTO batch
      FROM bv_audit.seal_remainders m WHERE m.tracked_id = tid AND m.purge_no = next_no;
    UPDATE bv_audit.seals s SET batch_digest = batch
     WHERE s.tracked_id = tid AND s.seal_no = next_no
    RETURNING * INTO link;
    UPDATE bv_audit.seals s
       SET chain_digest = sha256(coalesce(prev.chain_digest, ''::bytea) || bv_audit._link_header(link) || batch)
     WHERE s.tracked_id = tid AND s.seal_no = next_no;
    RETURN next_no;
END
$$;
CREATE OR REPLACE FUNCTION bv_audit.enable(tbl regclass, exclude_columns text[] DEFAULT '{}',
                                retention interval DEFAULT NULL, history_index text DEFAULT NULL)
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
        PERFORM bv_audit._history_index(t, coalesce(enable.history_index, 'bloom'));
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

    EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
    EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.capture_trigger(%L)', tbl, t.id);
    PERFORM bv_audit._invalidate(tbl);
    RETURN t.audit_relid;
END
$$;
