/*
 * bv_audit 0.1.0: audit columns, mirrored audit tables, change history,
 * retention and tamper evidence.  See docs/bv_audit.md for the model and
 * docs/adr/0010-audit-tamper-evidence.md for the seal.
 *
 * Layout.  Every tracked table gets one audit table in schema bv_audit,
 * partitioned by month on audit_ts, that starts with nine metadata columns
 * and then mirrors the tracked table's columns (minus the excluded ones).
 * bv_audit.tracked and bv_audit.columns describe the tracking; they name
 * tables by OID while the table exists and keep its last schema-qualified
 * name for after it is dropped.
 *
 * Security.  The administrative functions are SECURITY DEFINER (they create
 * and alter tables in schema bv_audit, which only the extension owner may),
 * run with search_path = pg_catalog, pg_temp, schema-qualify everything and
 * build dynamic SQL only through format('%I'/'%L').  EXECUTE on them is
 * revoked from PUBLIC and granted to bv_admin.  Audit tables are readable by
 * bv_admin only and append-only for every role (see guard.c).
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION bv_audit" to load this file. \quit

COMMENT ON SCHEMA bv_audit IS
'BitVelocity audit: audit columns, mirrored append-only audit tables partitioned by month, change history, retention and sealing.';

-- Writers' triggers resolve bv_audit's tables by name when they build their
-- per-table state, so every role needs USAGE (not more) on the schema.
GRANT USAGE ON SCHEMA bv_audit TO PUBLIC;

CREATE SEQUENCE bv_audit.audit_id_seq AS bigint;
COMMENT ON SEQUENCE bv_audit.audit_id_seq IS
'Ids of audit records, shared by all audit tables: a total order of the records that each seal chains over.';
GRANT USAGE ON SEQUENCE bv_audit.audit_id_seq TO PUBLIC;

CREATE TABLE bv_audit.tracked (
    id              serial PRIMARY KEY,
    relid           oid UNIQUE,
    source_schema   name NOT NULL,
    source_table    name NOT NULL,
    audit_table     name NOT NULL UNIQUE,
    audit_relid     regclass NOT NULL,
    pk_columns      name[] NOT NULL,
    exclude_columns name[] NOT NULL DEFAULT '{}',
    history_index   text NOT NULL DEFAULT 'bloom' CHECK (history_index IN ('bloom', 'btree')),
    retention       interval CHECK (retention > interval '0'),
    purged_before   timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    enabled_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    disabled_at     timestamptz,
    dropped_at      timestamptz
);
COMMENT ON TABLE bv_audit.tracked IS
'Tables whose changes bv_audit records (or once recorded), one row each; kept after disable() and DROP TABLE so that their history stays readable.';
COMMENT ON COLUMN bv_audit.tracked.relid IS 'OID of the tracked table; NULL once it has been dropped.';
COMMENT ON COLUMN bv_audit.tracked.source_schema IS 'Schema of the tracked table (its last name, kept after DROP TABLE).';
COMMENT ON COLUMN bv_audit.tracked.source_table IS 'Name of the tracked table (its last name, kept after DROP TABLE).';
COMMENT ON COLUMN bv_audit.tracked.audit_table IS 'Name of the audit table in schema bv_audit.';
COMMENT ON COLUMN bv_audit.tracked.audit_relid IS 'The audit table.';
COMMENT ON COLUMN bv_audit.tracked.pk_columns IS 'Primary key columns of the tracked table when tracking began; history() and as_of() identify rows by them.';
COMMENT ON COLUMN bv_audit.tracked.exclude_columns IS 'Columns whose values are never copied into the audit table (secrets).';
COMMENT ON COLUMN bv_audit.tracked.history_index IS 'Index that history() finds a row''s records by: bloom (BRIN bloom filters on the key columns, cheap to write) or btree (key columns and audit_id, faster to read). Set with enable().';
COMMENT ON COLUMN bv_audit.tracked.retention IS 'How long records are kept; NULL keeps them forever. Set with set_retention().';
COMMENT ON COLUMN bv_audit.tracked.purged_before IS 'Records older than this have been removed by purge().';
COMMENT ON COLUMN bv_audit.tracked.enabled IS 'Whether changes are being recorded now.';
COMMENT ON COLUMN bv_audit.tracked.enabled_at IS 'When tracking was last enabled.';
COMMENT ON COLUMN bv_audit.tracked.disabled_at IS 'When tracking was last disabled.';
COMMENT ON COLUMN bv_audit.tracked.dropped_at IS 'When the tracked table was dropped.';

CREATE TABLE bv_audit.columns (
    tracked_id   integer NOT NULL REFERENCES bv_audit.tracked ON DELETE CASCADE,
    src_attnum   smallint NOT NULL,
    audit_column name NOT NULL,
    PRIMARY KEY (tracked_id, src_attnum)
);
COMMENT ON TABLE bv_audit.columns IS
'Which audit table column mirrors which column (by attribute number) of a tracked table; follows RENAME COLUMN, outlives DROP COLUMN.';
COMMENT ON COLUMN bv_audit.columns.tracked_id IS 'The tracked table (bv_audit.tracked.id).';
COMMENT ON COLUMN bv_audit.columns.src_attnum IS 'Attribute number of the column in the tracked table.';
COMMENT ON COLUMN bv_audit.columns.audit_column IS 'Name of the mirroring column in the audit table.';

GRANT SELECT ON bv_audit.tracked, bv_audit.columns TO PUBLIC;

CREATE TABLE bv_audit.seals (
    tracked_id   integer NOT NULL REFERENCES bv_audit.tracked ON DELETE CASCADE,
    seal_no      integer NOT NULL,
    xid_lo       xid8 NOT NULL,
    xid_hi       xid8 NOT NULL,
    ts_floor     timestamptz NOT NULL,
    row_count    bigint NOT NULL,
    first_audit_id bigint,
    last_audit_id  bigint,
    batch_digest bytea NOT NULL,
    chain_digest bytea NOT NULL,
    sealed_at    timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (tracked_id, seal_no)
);
COMMENT ON TABLE bv_audit.seals IS
'The seal chain of each audit table: seal n covers the records written by transactions with xid_lo <= xid < xid_hi; chain_digest = sha256(previous chain_digest || batch_digest).';
COMMENT ON COLUMN bv_audit.seals.tracked_id IS 'The tracked table (bv_audit.tracked.id).';
COMMENT ON COLUMN bv_audit.seals.seal_no IS 'Position in the chain, from 1.';
COMMENT ON COLUMN bv_audit.seals.xid_lo IS 'Lowest transaction id covered (the previous seal''s xid_hi).';
COMMENT ON COLUMN bv_audit.seals.xid_hi IS 'The oldest transaction still running when the seal was taken; every record of an older transaction was final.';
COMMENT ON COLUMN bv_audit.seals.ts_floor IS 'Start of the oldest transaction running at the seal: no later seal covers a record older than this.';
COMMENT ON COLUMN bv_audit.seals.row_count IS 'Records covered.';
COMMENT ON COLUMN bv_audit.seals.first_audit_id IS 'Lowest audit_id covered.';
COMMENT ON COLUMN bv_audit.seals.last_audit_id IS 'Highest audit_id covered.';
COMMENT ON COLUMN bv_audit.seals.batch_digest IS 'sha256 over (audit_id, record digest) of the covered records in audit_id order.';
COMMENT ON COLUMN bv_audit.seals.chain_digest IS 'sha256(previous chain_digest || batch_digest): the head of the chain; publish it outside the database.';
COMMENT ON COLUMN bv_audit.seals.sealed_at IS 'When the seal was taken.';

CREATE TABLE bv_audit.seal_entries (
    tracked_id integer NOT NULL,
    seal_no    integer NOT NULL,
    audit_id   bigint NOT NULL,
    audit_ts   timestamptz NOT NULL,
    digest     bytea NOT NULL,
    PRIMARY KEY (tracked_id, audit_id),
    FOREIGN KEY (tracked_id, seal_no) REFERENCES bv_audit.seals ON DELETE CASCADE
);
COMMENT ON TABLE bv_audit.seal_entries IS
'The digest of every sealed audit record, so that verify() can name the first altered or missing record.';
COMMENT ON COLUMN bv_audit.seal_entries.tracked_id IS 'The tracked table (bv_audit.tracked.id).';
COMMENT ON COLUMN bv_audit.seal_entries.seal_no IS 'The seal that covers the record.';
COMMENT ON COLUMN bv_audit.seal_entries.audit_id IS 'The record.';
COMMENT ON COLUMN bv_audit.seal_entries.audit_ts IS 'The record''s audit_ts, so that purge() removes entries with their records.';
COMMENT ON COLUMN bv_audit.seal_entries.digest IS 'bv_audit.row_digest() of the record when it was sealed.';

REVOKE ALL ON bv_audit.seals, bv_audit.seal_entries FROM PUBLIC;
GRANT SELECT ON bv_audit.seals, bv_audit.seal_entries TO bv_admin;

-- ---------------------------------------------------------------------------
-- C functions
-- ---------------------------------------------------------------------------

CREATE FUNCTION bv_audit.stamp_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bv_audit_stamp_trigger'
LANGUAGE C;
COMMENT ON FUNCTION bv_audit.stamp_trigger() IS
'BEFORE INSERT OR UPDATE row trigger installed by stamp(): sets created_* on INSERT (kept from the old row on UPDATE) and updated_* from bv.actor() and the transaction time.';

CREATE FUNCTION bv_audit.capture_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bv_audit_capture_trigger'
LANGUAGE C;
COMMENT ON FUNCTION bv_audit.capture_trigger() IS
'AFTER row (INSERT, UPDATE, DELETE) and AFTER TRUNCATE trigger installed by enable(): writes the audit record.';

CREATE FUNCTION bv_audit.append_only_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bv_audit_append_only_trigger'
LANGUAGE C;
COMMENT ON FUNCTION bv_audit.append_only_trigger() IS
'BEFORE UPDATE/DELETE/TRUNCATE trigger of every audit table: refuses them (SQLSTATE 42501); only purge() may delete.';

CREATE FUNCTION bv_audit._purge_delete(audit regclass, cutoff timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'bv_audit_purge_delete'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION bv_audit._purge_delete(regclass, timestamptz) IS
'Internal to purge(): deletes the records of one audit table or partition older than cutoff, past the append-only guard.';
REVOKE ALL ON FUNCTION bv_audit._purge_delete(regclass, timestamptz) FROM PUBLIC;

CREATE FUNCTION bv_audit._invalidate(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'bv_audit_invalidate'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION bv_audit._invalidate(regclass) IS
'Internal: makes every session rebuild its cached trigger state for the table after this transaction commits.';
REVOKE ALL ON FUNCTION bv_audit._invalidate(regclass) FROM PUBLIC;

CREATE FUNCTION bv_audit.row_digest(record)
RETURNS bytea
AS 'MODULE_PATHNAME', 'bv_audit_row_digest'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION bv_audit.row_digest(record) IS
'SHA-256 digest of an audit record over (attnum, text) of its non-NULL columns: stable across the renames, added columns and widening type changes bv_audit mirrors.';

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------

-- The tracking entry of a table, or an error with a hint.
CREATE FUNCTION bv_audit._tracked(tbl regclass, must_be_enabled boolean DEFAULT false)
RETURNS bv_audit.tracked
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
BEGIN
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
COMMENT ON FUNCTION bv_audit._tracked(regclass, boolean) IS
'Internal: the bv_audit.tracked row of a table; raises 55000 when it is not tracked.';
REVOKE ALL ON FUNCTION bv_audit._tracked(regclass, boolean) FROM PUBLIC;

-- Is changing an audit column from one type to another loss-free, and does
-- it keep the text form of every value (which the record digests cover)?
CREATE FUNCTION bv_audit._safe_type_change(old_type oid, old_typmod integer,
                                           new_type oid, new_typmod integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN old_type = new_type THEN
            old_typmod = new_typmod
            OR new_typmod = -1
            OR (old_typmod <> -1
                AND old_type IN ('pg_catalog.varchar'::regtype, 'pg_catalog.bpchar'::regtype,
                                 'pg_catalog.bit'::regtype, 'pg_catalog.varbit'::regtype)
                AND new_typmod >= old_typmod
                AND old_type <> 'pg_catalog.bpchar'::regtype)
            OR (old_typmod <> -1 AND old_type = 'pg_catalog.numeric'::regtype
                AND ((new_typmod - 4) & 65535) = ((old_typmod - 4) & 65535)
                AND ((new_typmod - 4) >> 16) >= ((old_typmod - 4) >> 16))
        ELSE
            format('%s > %s', old_type::regtype, new_type::regtype) IN (
                'smallint > integer', 'smallint > bigint', 'smallint > numeric',
                'integer > bigint', 'integer > numeric', 'bigint > numeric',
                'character varying > text', 'text > character varying')
            AND (new_type <> 'pg_catalog.numeric'::regtype OR new_typmod = -1)
            AND (new_type <> 'pg_catalog.varchar'::regtype OR new_typmod = -1)
    END
$$;
COMMENT ON FUNCTION bv_audit._safe_type_change(oid, integer, oid, integer) IS
'Internal: whether an audit column may follow a type change of its tracked column (widening integer/numeric/varchar changes that keep every value and its text).';

-- Create the monthly partition of an audit table that holds "month".
-- Returns whether it was created.
CREATE FUNCTION bv_audit._create_partition(t bv_audit.tracked, month date)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo timestamptz := date_trunc('month', month)::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', month) + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part name := t.audit_table || '_p' || to_char(month, 'YYYYMM');
    clash boolean;
BEGIN
    IF to_regclass(format('bv_audit.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF t.purged_before IS NOT NULL AND hi <= t.purged_before THEN
        RETURN false;   -- already past retention
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM bv_audit.%I WHERE audit_ts >= $1 AND audit_ts < $2)',
                   t.audit_table || '_default')
        INTO clash USING lo, hi;
    IF clash THEN
        RAISE WARNING 'partition % of audit table % not created', part, t.audit_table
            USING DETAIL = 'Its default partition already holds records of that month.',
                  HINT = 'Records stay in the default partition; purge() trims it. Keep the partition job scheduled.';
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE bv_audit.%I PARTITION OF bv_audit.%I FOR VALUES FROM (%L) TO (%L)',
                   part, t.audit_table, lo, hi);
    EXECUTE format('CREATE TRIGGER bv_audit_append_only_truncate BEFORE TRUNCATE ON bv_audit.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION bv_audit.append_only_trigger()', part);
    EXECUTE format('REVOKE ALL ON bv_audit.%I FROM PUBLIC', part);
    EXECUTE format('COMMENT ON TABLE bv_audit.%I IS %L', part,
                   format('Audit records of %I.%I written in %s (UTC); append-only.',
                          t.source_schema, t.source_table, to_char(month, 'YYYY-MM')));
    RETURN true;
END
$$;
COMMENT ON FUNCTION bv_audit._create_partition(bv_audit.tracked, date) IS
'Internal: creates the monthly partition of an audit table holding the given month, unless it exists.';
REVOKE ALL ON FUNCTION bv_audit._create_partition(bv_audit.tracked, date) FROM PUBLIC;

-- Bring an audit table in step with its tracked table: mirror added and
-- renamed columns, follow safe type changes, refuse unsafe ones.  Dropped
-- columns keep their audit column.
CREATE FUNCTION bv_audit._sync_columns(t bv_audit.tracked)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
    m bv_audit.columns;
    acol record;
    target name;
    n integer;
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

    FOR a IN
        SELECT att.attnum, att.attname, att.atttypid, att.atttypmod, att.attcollation
          FROM pg_catalog.pg_attribute att
         WHERE att.attrelid = t.relid AND att.attnum > 0 AND NOT att.attisdropped
         ORDER BY att.attnum
    LOOP
        SELECT * INTO m FROM bv_audit.columns c
         WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;

        IF a.attname = ANY (t.exclude_columns) THEN
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

        -- The type's functions run inside bv_audit's SECURITY DEFINER
        -- functions (seal() renders every value): only types a superuser
        -- owns (built-in or installed by one) may be mirrored.
        IF EXISTS (SELECT 1
                     FROM pg_catalog.pg_type ty
                     LEFT JOIN pg_catalog.pg_type el ON el.oid = ty.typelem AND ty.typlen = -1 AND ty.typelem <> 0
                     LEFT JOIN pg_catalog.pg_type bt ON bt.oid = ty.typbasetype AND ty.typtype = 'd'
                     JOIN pg_catalog.pg_roles r ON r.oid IN (ty.typowner, coalesce(el.typowner, ty.typowner),
                                                             coalesce(bt.typowner, ty.typowner))
                    WHERE ty.oid = a.atttypid AND NOT r.rolsuper) THEN
            RAISE EXCEPTION 'column "%" of %.% has a type that bv_audit cannot copy', a.attname, t.source_schema, t.source_table
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = format('Type %s is owned by a role that is not a superuser; bv_audit runs its functions with elevated privileges.', format_type(a.atttypid, a.atttypmod)),
                      HINT = 'List the column in exclude_columns, or have a superuser own the type.';
        END IF;

        IF m.src_attnum IS NULL THEN
            -- A new column.  Its name may be taken by the audit column of a
            -- dropped one, which keeps its history: then add a suffix.
            target := a.attname;
            n := 0;
            WHILE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                           WHERE x.attrelid = t.audit_relid AND x.attname = target
                             AND NOT x.attisdropped) LOOP
                n := n + 1;
                target := left(a.attname, 50) || '_' || a.attnum || CASE WHEN n > 1 THEN '_' || n ELSE '' END;
            END LOOP;
            EXECUTE format('ALTER TABLE bv_audit.%I ADD COLUMN %I %s%s', t.audit_table, target,
                           format_type(a.atttypid, a.atttypmod),
                           CASE WHEN a.attcollation <> 0 THEN
                               (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                                  FROM pg_catalog.pg_collation co
                                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                 WHERE co.oid = a.attcollation)
                           ELSE '' END);
            INSERT INTO bv_audit.columns (tracked_id, src_attnum, audit_column)
            VALUES (t.id, a.attnum, target);
            CONTINUE;
        END IF;

        -- A known column: follow a rename.
        IF m.audit_column <> a.attname
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                            WHERE x.attrelid = t.audit_relid AND x.attname = a.attname
                              AND NOT x.attisdropped) THEN
            EXECUTE format('ALTER TABLE bv_audit.%I RENAME COLUMN %I TO %I',
                           t.audit_table, m.audit_column, a.attname);
            UPDATE bv_audit.columns c SET audit_column = a.attname
             WHERE c.tracked_id = t.id AND c.src_attnum = a.attnum;
            m.audit_column := a.attname;
        END IF;

        -- Follow a type change when it is safe, refuse it otherwise.
        SELECT x.atttypid, x.atttypmod INTO acol
          FROM pg_catalog.pg_attribute x
         WHERE x.attrelid = t.audit_relid AND x.attname = m.audit_column AND NOT x.attisdropped;
        IF (acol.atttypid, acol.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod) THEN
            IF NOT bv_audit._safe_type_change(acol.atttypid, acol.atttypmod, a.atttypid, a.atttypmod) THEN
                RAISE EXCEPTION 'cannot change the type of audited column "%" of %.% from % to %',
                      a.attname, t.source_schema, t.source_table,
                      format_type(acol.atttypid, acol.atttypmod), format_type(a.atttypid, a.atttypmod)
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = 'Its audit column holds the history of the column, and this change could lose or alter recorded values.',
                          HINT = 'Add a new column of the new type and migrate the data into it; the old column''s history stays in the audit table.';
            END IF;
            EXECUTE format('ALTER TABLE bv_audit.%I ALTER COLUMN %I TYPE %s',
                           t.audit_table, m.audit_column, format_type(a.atttypid, a.atttypmod));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._sync_columns(bv_audit.tracked) IS
'Internal: mirrors added and renamed columns of a tracked table into its audit table, follows safe type changes and refuses unsafe ones (SQLSTATE 0A000).';
REVOKE ALL ON FUNCTION bv_audit._sync_columns(bv_audit.tracked) FROM PUBLIC;

-- Record the current rows of a table as operation 'S' (snapshot), so that
-- history starts complete when tracking (re)starts.
CREATE FUNCTION bv_audit._snapshot(t bv_audit.tracked)
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
                   'pg_catalog.inet_client_addr(), bv.trace_context(), %s FROM %I.%I s',
                   t.audit_table, cols, src, t.source_schema, t.source_table);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION bv_audit._snapshot(bv_audit.tracked) IS
'Internal: records every current row of a tracked table as an ''S'' (snapshot) record.';
REVOKE ALL ON FUNCTION bv_audit._snapshot(bv_audit.tracked) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Audit columns
-- ---------------------------------------------------------------------------

CREATE FUNCTION bv_audit.stamp(tbl regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
    col record;
BEGIN
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
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
COMMENT ON FUNCTION bv_audit.stamp(regclass) IS
'Adds created_by, created_at, updated_by, updated_at (where missing) to a table and installs the C trigger that fills them; created_* cannot be forged on UPDATE. Idempotent.';

-- ---------------------------------------------------------------------------
-- Tracking
-- ---------------------------------------------------------------------------

-- The index history() finds the records of one row by, on the audit table
-- (and so on every partition).  Every audited write pays for it:
--   bloom  BRIN with a bloom filter per key column and per 16 pages: an
--          insert into the range being filled costs two page reads and
--          nothing else, whatever the key; a lookup reads the filters and
--          the ranges whose filter matches (about 1% false positives) plus
--          the ranges not yet summarized (seal() summarizes them).
--   btree  (key columns, audit_id): a lookup reads only the row's records,
--          but an insert descends the tree at a random place when keys are
--          updated in random order (docs/performance.md).
-- Key types without a bloom operator class get btree.
CREATE FUNCTION bv_audit._history_index(t bv_audit.tracked, kind text)
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
      LEFT JOIN LATERAL (
          SELECT opc.opcname FROM pg_catalog.pg_opclass opc
            JOIN pg_catalog.pg_am am ON am.oid = opc.opcmethod
           WHERE am.amname = 'brin' AND opc.opcname LIKE '%\_bloom\_ops'
             AND opc.opcnamespace = 'pg_catalog'::regnamespace
             AND opc.opcintype = CASE WHEN a.atttypid = 'pg_catalog.varchar'::regtype
                                      THEN 'pg_catalog.text'::regtype ELSE a.atttypid END
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
COMMENT ON FUNCTION bv_audit._history_index(bv_audit.tracked, text) IS
'Internal: (re)creates the index history() uses on an audit table, bloom (BRIN) or btree, and returns the kind built (btree when a key type has no bloom operator class).';
REVOKE ALL ON FUNCTION bv_audit._history_index(bv_audit.tracked, text) FROM PUBLIC;

CREATE FUNCTION bv_audit.enable(tbl regclass, exclude_columns text[] DEFAULT '{}',
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
BEGIN
    IF history_index IS NOT NULL AND history_index NOT IN ('bloom', 'btree') THEN
        RAISE EXCEPTION 'unknown history index "%"', history_index
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'history_index is bloom (the default: cheap to write) or btree (faster history() on large tables).',
                  HINT = 'Pass ''bloom'' or ''btree'', or leave it out.';
    END IF;
    SELECT c.relkind, c.relname, ns.nspname, c.relpersistence INTO rel
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
     WHERE c.oid = tbl;
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
                audit_id      bigint NOT NULL DEFAULT pg_catalog.nextval('bv_audit.audit_id_seq'),
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
                                      pk_columns, exclude_columns, retention)
        VALUES (tbl, rel.nspname, rel.relname, aname, format('bv_audit.%I', aname)::regclass,
                pk, excl, retention)
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
COMMENT ON FUNCTION bv_audit.enable(regclass, text[], interval, text) IS
'Starts recording every change of a table (which needs a primary key) into its audit table, bv_audit.<schema>__<table>, and returns it. Excluded columns are never copied. history_index: bloom (default; BRIN bloom filters on the key, cheapest writes) or btree (key and audit_id; fastest history() on large tables). Calling it again updates the exclusions and retention (and the history index when given) and re-syncs the columns; after disable() it records a fresh snapshot.';

CREATE FUNCTION bv_audit.disable(tbl regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS bv_audit_capture ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS bv_audit_capture_truncate ON %s', tbl);
    UPDATE bv_audit.tracked tr SET enabled = false, disabled_at = now()
     WHERE tr.id = t.id AND tr.enabled;
    PERFORM bv_audit._invalidate(tbl);
END
$$;
COMMENT ON FUNCTION bv_audit.disable(regclass) IS
'Stops recording changes of a table; its audit table and history are kept.';

CREATE FUNCTION bv_audit.audit_table(tbl regclass)
RETURNS regclass
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (bv_audit._tracked(tbl)).audit_relid $$;
COMMENT ON FUNCTION bv_audit.audit_table(regclass) IS
'The audit table of a tracked table.';

-- ---------------------------------------------------------------------------
-- Reading history
-- ---------------------------------------------------------------------------

-- The columns of an audit record as (name, value) pairs in jsonb, by the
-- tracked table's current column names where they still exist.
CREATE FUNCTION bv_audit._row_expr(t bv_audit.tracked, alias text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce('pg_catalog.jsonb_build_object(' ||
                    string_agg(format('%L, %I.%I', c.audit_column, alias, c.audit_column), ', '
                               ORDER BY c.src_attnum) || ')', '''{}''::jsonb')
      FROM bv_audit.columns c
     WHERE c.tracked_id = t.id
$$;
COMMENT ON FUNCTION bv_audit._row_expr(bv_audit.tracked, text) IS
'Internal: SQL expression building the jsonb row image of an audit record.';
REVOKE ALL ON FUNCTION bv_audit._row_expr(bv_audit.tracked, text) FROM PUBLIC;

CREATE FUNCTION bv_audit.history(tbl regclass, pk jsonb)
RETURNS TABLE (audit_id bigint, operation text, changed_at timestamptz, actor text,
               transaction_id xid8, application_name text, client_addr inet,
               traceparent text, changed_columns text[], row_data jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
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
        ' WHERE (%s) OR (%s IS NULL AND a.audit_op = ''T'') '
        ' ORDER BY a.audit_id',
        bv_audit._row_expr(t, 'a'), t.audit_table, cond, first_key) USING pk;
END
$$;
COMMENT ON FUNCTION bv_audit.history(regclass, jsonb) IS
'Every recorded version of one row, identified by its primary key as JSON (e.g. ''{"id": 42}''), oldest first, with who/when/where and the changed columns; TRUNCATE records of the table are included. row_data is the row after INSERT/UPDATE and before DELETE.';

CREATE FUNCTION bv_audit.changes(tbl regclass, from_ts timestamptz, to_ts timestamptz DEFAULT now())
RETURNS TABLE (audit_id bigint, operation text, changed_at timestamptz, actor text,
               transaction_id xid8, application_name text, client_addr inet,
               traceparent text, changed_columns text[], row_data jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
BEGIN
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
COMMENT ON FUNCTION bv_audit.changes(regclass, timestamptz, timestamptz) IS
'Who changed what, when: every change (I, U, D, T) of a table in [from_ts, to_ts), in order, with the row image and the changed columns.';

CREATE FUNCTION bv_audit.as_of(tbl regclass, ts timestamptz)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    keys text;
BEGIN
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
COMMENT ON FUNCTION bv_audit.as_of(regclass, timestamptz) IS
'The rows of a tracked table as they were at ts (as JSON, one per row; use jsonb_populate_record to get typed rows). Exact from the moment tracking was enabled; earlier times return nothing.';

-- ---------------------------------------------------------------------------
-- Partitions and retention
-- ---------------------------------------------------------------------------

CREATE FUNCTION bv_audit.create_partitions(months_ahead integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
    m integer;
    created integer := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', coalesce(months_ahead::text, 'NULL')),
                  HINT = 'Pass how many months after the current one should have partitions.';
    END IF;
    FOR t IN SELECT * FROM bv_audit.tracked tr
              WHERE to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL
              ORDER BY tr.id LOOP
        FOR m IN 0..months_ahead LOOP
            IF bv_audit._create_partition(t, (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => m))::date) THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION bv_audit.create_partitions(integer) IS
'Creates the monthly partitions of every audit table from the current month to months_ahead months ahead (UTC) and returns how many it created; scheduled daily through pg_cron.';

CREATE FUNCTION bv_audit.set_retention(tbl regclass, keep interval)
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
    UPDATE bv_audit.tracked tr SET retention = keep WHERE tr.id = t.id;
END
$$;
COMMENT ON FUNCTION bv_audit.set_retention(regclass, interval) IS
'How long the audit records of a table are kept (NULL: forever); purge() removes older ones.';

CREATE FUNCTION bv_audit.purge()
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
BEGIN
    -- One purge at a time; writers are not blocked (DROP of an old partition
    -- takes its lock only, and writers only write the current month's).
    PERFORM pg_advisory_xact_lock(hashtext('bv_audit.purge'));
    FOR t IN SELECT * FROM bv_audit.tracked tr
              WHERE tr.retention IS NOT NULL
                AND to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL
              ORDER BY tr.id LOOP
        cutoff := now() - t.retention;
        dropped := 0;
        deleted := 0;
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
        UPDATE bv_audit.tracked tr SET purged_before = cutoff WHERE tr.id = t.id;
        audit_table := t.audit_table;
        dropped_partitions := dropped;
        deleted_rows := deleted;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit.purge() IS
'Removes audit records older than each table''s retention: drops whole expired partitions and trims the one straddling the cut-off. The only way audit records are ever deleted; scheduled daily through pg_cron.';

-- ---------------------------------------------------------------------------
-- Tamper evidence (docs/adr/0010-audit-tamper-evidence.md)
-- ---------------------------------------------------------------------------

CREATE FUNCTION bv_audit.seal()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
    hi xid8;
    floor_ts timestamptz;
    prev bv_audit.seals;
    lo xid8;
    lo_ts timestamptz;
    next_no integer;
    n bigint;
    batch bytea;
    sealed integer := 0;
BEGIN
    -- Serialise sealers (not writers): each chain must grow one link at a time.
    PERFORM pg_advisory_xact_lock(hashtext('bv_audit.seal'));
    -- Every transaction older than hi has ended, so the records it wrote
    -- are final; transactions from hi on are left for the next seal.
    hi := pg_snapshot_xmin(pg_current_snapshot());
    SELECT least(min(a.xact_start), now()) INTO floor_ts FROM pg_catalog.pg_stat_activity a;
    SELECT least(floor_ts, min(p.prepared)) INTO floor_ts FROM pg_catalog.pg_prepared_xacts p;

    FOR t IN SELECT * FROM bv_audit.tracked tr
              WHERE to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL
              ORDER BY tr.id LOOP
        SELECT * INTO prev FROM bv_audit.seals s WHERE s.tracked_id = t.id
         ORDER BY s.seal_no DESC LIMIT 1;
        lo := coalesce(prev.xid_hi, '0'::xid8);
        lo_ts := coalesce(prev.ts_floor, '-infinity'::timestamptz);
        next_no := coalesce(prev.seal_no, 0) + 1;
        IF hi <= lo THEN
            CONTINUE;
        END IF;
        INSERT INTO bv_audit.seals (tracked_id, seal_no, xid_lo, xid_hi, ts_floor, row_count,
                                    batch_digest, chain_digest)
        VALUES (t.id, next_no, lo, hi, floor_ts, 0, '\x', '\x');
        EXECUTE format('INSERT INTO bv_audit.seal_entries (tracked_id, seal_no, audit_id, audit_ts, digest) '
                       'SELECT $1, $2, a.audit_id, a.audit_ts, bv_audit.row_digest(a) '
                       '  FROM bv_audit.%I a '
                       ' WHERE a.audit_xid >= $3 AND a.audit_xid < $4 AND a.audit_ts >= $5',
                       t.audit_table)
            USING t.id, next_no, lo, hi, lo_ts;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
            -- Nothing new: no link; the next seal starts from the same place.
            DELETE FROM bv_audit.seals s WHERE s.tracked_id = t.id AND s.seal_no = next_no;
            CONTINUE;
        END IF;
        SELECT sha256(coalesce(string_agg(int8send(e.audit_id) || e.digest, ''::bytea ORDER BY e.audit_id), ''::bytea))
          INTO batch
          FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.seal_no = next_no;
        UPDATE bv_audit.seals s
           SET row_count = n,
               first_audit_id = (SELECT min(e.audit_id) FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.seal_no = next_no),
               last_audit_id = (SELECT max(e.audit_id) FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.seal_no = next_no),
               batch_digest = batch,
               chain_digest = sha256(coalesce(prev.chain_digest, ''::bytea) || batch)
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
    END LOOP;
    RETURN sealed;
END
$$;
COMMENT ON FUNCTION bv_audit.seal()
IS 'Extends each audit table''s seal chain over the records of transactions that ended since the previous seal: stores each record''s digest and chains sha256 over them. Writers are never blocked. Returns the number of seals taken; scheduled every 5 minutes through pg_cron.';

CREATE FUNCTION bv_audit.verify(tbl regclass)
RETURNS TABLE (ok boolean, seals_checked integer, records_checked bigint,
               problem text, audit_id bigint, seal_no integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked := bv_audit._tracked(tbl);
    s bv_audit.seals;
    prev_chain bytea := ''::bytea;
    batch bytea;
    cnt bigint;
    last_hi xid8 := '0'::xid8;
    r record;
BEGIN
    seals_checked := 0;
    records_checked := 0;
    -- 1. The chain of seals, and each seal's entries.
    FOR s IN SELECT * FROM bv_audit.seals x WHERE x.tracked_id = t.id ORDER BY x.seal_no LOOP
        IF s.seal_no <> seals_checked + 1 OR s.xid_lo <> last_hi
           OR s.chain_digest <> sha256(prev_chain || s.batch_digest) THEN
            ok := false; problem := 'seal chain broken: seal missing, reordered or altered';
            seal_no := s.seal_no; audit_id := NULL;
            RETURN NEXT; RETURN;
        END IF;
        SELECT count(*), sha256(coalesce(string_agg(int8send(e.audit_id) || e.digest, ''::bytea ORDER BY e.audit_id), ''::bytea))
          INTO cnt, batch
          FROM bv_audit.seal_entries e WHERE e.tracked_id = t.id AND e.seal_no = s.seal_no;
        -- Purge removes the entries of removed records; a partly purged seal
        -- can only be checked record by record.
        IF batch <> s.batch_digest AND NOT (t.purged_before IS NOT NULL AND cnt < s.row_count) THEN
            ok := false; problem := 'seal entries altered: the record digests no longer match the seal';
            seal_no := s.seal_no; audit_id := NULL;
            RETURN NEXT; RETURN;
        END IF;
        prev_chain := s.chain_digest;
        last_hi := s.xid_hi;
        seals_checked := seals_checked + 1;
    END LOOP;

    -- 2. Every sealed record against its digest, in audit_id order.
    FOR r IN EXECUTE format(
        'SELECT coalesce(e.audit_id, a.audit_id) AS id, e.seal_no AS seal, '
        '       CASE WHEN a.audit_id IS NULL THEN ''record missing'' '
        '            WHEN e.audit_id IS NULL THEN ''record not covered by its seal (inserted afterwards)'' '
        '            WHEN e.digest <> bv_audit.row_digest(a) THEN ''record altered'' END AS what '
        '  FROM (SELECT * FROM bv_audit.seal_entries x WHERE x.tracked_id = $1) e '
        '  FULL JOIN (SELECT * FROM bv_audit.%I y WHERE y.audit_xid < $2 '
        '               AND ($3::timestamptz IS NULL OR y.audit_ts >= $3)) a '
        '    ON a.audit_id = e.audit_id '
        ' ORDER BY 1', t.audit_table)
        USING t.id, last_hi, t.purged_before
    LOOP
        IF r.what IS NOT NULL THEN
            ok := false; problem := r.what; audit_id := r.id; seal_no := r.seal;
            RETURN NEXT; RETURN;
        END IF;
        records_checked := records_checked + 1;
    END LOOP;
    ok := true; problem := NULL; audit_id := NULL; seal_no := NULL;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION bv_audit.verify(regclass) IS
'Recomputes the seal chain of a table''s audit records and every sealed record''s digest; returns ok, or the first altered, missing or inserted record. Compare the last seal''s chain_digest with a copy kept outside the database to detect a rewritten chain.';

-- ---------------------------------------------------------------------------
-- Schema changes
-- ---------------------------------------------------------------------------

CREATE FUNCTION bv_audit._on_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
    t bv_audit.tracked;
BEGIN
    FOR cmd IN SELECT DISTINCT c.objid FROM pg_event_trigger_ddl_commands() c
                WHERE c.command_tag = 'ALTER TABLE' AND c.object_type IN ('table', 'table column')
    LOOP
        SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.relid = cmd.objid AND tr.enabled;
        IF FOUND THEN
            PERFORM bv_audit._sync_columns(t);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._on_ddl() IS
'Event trigger function: after ALTER TABLE on a tracked table, mirrors the change into its audit table (or refuses an unsafe type change).';
REVOKE ALL ON FUNCTION bv_audit._on_ddl() FROM PUBLIC;

CREATE FUNCTION bv_audit._on_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE bv_audit.tracked tr
       SET relid = NULL, enabled = false, dropped_at = now(),
           disabled_at = coalesce(tr.disabled_at, now())
      FROM pg_event_trigger_dropped_objects() d
     WHERE d.object_type = 'table' AND d.objid = tr.relid;
END
$$;
COMMENT ON FUNCTION bv_audit._on_drop() IS
'Event trigger function: when a tracked table is dropped, keeps its audit table and marks it dropped in bv_audit.tracked.';
REVOKE ALL ON FUNCTION bv_audit._on_drop() FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION bv_audit._on_ddl();
CREATE EVENT TRIGGER bv_audit_drop ON sql_drop WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION bv_audit._on_drop();

-- ---------------------------------------------------------------------------
-- Scheduling
-- ---------------------------------------------------------------------------

CREATE FUNCTION bv_audit.schedule_jobs()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'bv_audit''s partition, purge and seal jobs run through pg_cron.',
                  HINT = 'CREATE EXTENSION pg_cron in the database named by cron.database_name, then call bv_audit.schedule_jobs(); or run the three functions from another scheduler.';
    END IF;
    PERFORM cron.schedule('bv_audit-partitions', '17 2 * * *', 'SELECT bv_audit.create_partitions()');
    PERFORM cron.schedule('bv_audit-purge', '37 2 * * *', 'SELECT * FROM bv_audit.purge()');
    PERFORM cron.schedule('bv_audit-seal', '*/5 * * * *', 'SELECT bv_audit.seal()');
END
$$;
COMMENT ON FUNCTION bv_audit.schedule_jobs() IS
'Schedules bv_audit''s pg_cron jobs (daily partitions and purge, a seal every 5 minutes); idempotent. Called at install when pg_cron is present.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM bv_audit.schedule_jobs();
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- Privileges: administration by bv_admin
-- ---------------------------------------------------------------------------

REVOKE ALL ON FUNCTION bv_audit.stamp(regclass), bv_audit.enable(regclass, text[], interval, text),
    bv_audit.disable(regclass), bv_audit.audit_table(regclass),
    bv_audit.history(regclass, jsonb), bv_audit.changes(regclass, timestamptz, timestamptz),
    bv_audit.as_of(regclass, timestamptz), bv_audit.create_partitions(integer),
    bv_audit.set_retention(regclass, interval), bv_audit.purge(), bv_audit.seal(),
    bv_audit.verify(regclass), bv_audit.schedule_jobs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv_audit.stamp(regclass), bv_audit.enable(regclass, text[], interval, text),
    bv_audit.disable(regclass), bv_audit.audit_table(regclass),
    bv_audit.history(regclass, jsonb), bv_audit.changes(regclass, timestamptz, timestamptz),
    bv_audit.as_of(regclass, timestamptz), bv_audit.create_partitions(integer),
    bv_audit.set_retention(regclass, interval), bv_audit.purge(), bv_audit.seal(),
    bv_audit.verify(regclass) TO bv_admin;
