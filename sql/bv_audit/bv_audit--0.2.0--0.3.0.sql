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

-- The digest of a sequence of seal entries (a seal's batch, a remainder).
-- The first seal whose entries match neither its batch digest nor, when a
-- purge trimmed it, its latest remainder; only among the seals given (all
-- when NULL).
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
            -- One scan: the records of [lo, hi) are sealed, the oldest of
            -- those from hi on bounds the next seal (case a).  a.* is the
            -- audit table's row whatever its columns are called.
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
                '        (SELECT max(i.audit_id) FROM ins i), (SELECT min(s.ts) FROM scan s WHERE s.xid >= $4)',
                t.audit_table)
                INTO n, first_id, last_id, rec_floor
                USING t.id, next_no, lo, hi, lo_ts;
            IF n = 0 THEN
                -- Nothing new: no link; the next seal starts from the same place.
                DELETE FROM bv_audit.seals s WHERE s.tracked_id = t.id AND s.seal_no = next_no;
                CONTINUE;
            END IF;
            SELECT sha256(string_agg(int8send(e.audit_id) || e.digest, ''::bytea ORDER BY e.audit_id))
              INTO batch
              FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.seal_no = next_no;
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
    FOR t IN SELECT * FROM bv_audit.tracked ORDER BY id LOOP
        SELECT array_agg(s.seal_no ORDER BY s.seal_no) INTO trimmed
          FROM bv_audit.seals s
         WHERE s.tracked_id = t.id
           AND s.row_count > (SELECT count(*) FROM bv_audit.seal_entries e
                               WHERE e.tracked_id = s.tracked_id AND e.seal_no = s.seal_no);
        IF trimmed IS NOT NULL THEN
            PERFORM bv_audit._purge_link(t.id, t.purged_before, 0, trimmed);
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
