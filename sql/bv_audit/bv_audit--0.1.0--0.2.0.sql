/*
 * bv_audit 0.1.0 -> 0.2.0: audit ids from shared memory.
 *
 * audit_id values come from bv_audit.next_audit_id() (audit_id.c): when
 * bv_audit is in shared_preload_libraries, backends take ids one by one
 * from a block of the sequence held in shared memory, and the sequence
 * advances by a block (1,024 ids) per nextval().  Ids stay unique and
 * increasing; they are no longer dense.  Every existing audit table, and
 * every audit table enable() creates from now on, takes its default from
 * bv_audit.next_audit_id(): a plain nextval() would hand out an id lower
 * than ids still waiting in the shared block.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.2.0'" to load this file. \quit

CREATE FUNCTION bv_audit.next_audit_id()
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'bv_audit_next_audit_id';
COMMENT ON FUNCTION bv_audit.next_audit_id() IS
'A new audit_id: unique and increasing across every audit table of the database; taken from a block of bv_audit.audit_id_seq held in shared memory when bv_audit is preloaded, else one nextval(). The default of every audit table''s audit_id.';
REVOKE ALL ON FUNCTION bv_audit.next_audit_id() FROM PUBLIC;

ALTER SEQUENCE bv_audit.audit_id_seq INCREMENT BY 1024;
COMMENT ON SEQUENCE bv_audit.audit_id_seq IS
'Blocks of audit_id values, 1,024 per nextval(), handed out by bv_audit.next_audit_id(): a total order of the records of all audit tables that each seal chains over. Do not call nextval() on it yourself.';

-- The audit tables that exist (partitions follow their parent).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT tr.audit_table FROM bv_audit.tracked tr
              WHERE to_regclass(format('bv_audit.%I', tr.audit_table)) IS NOT NULL LOOP
        EXECUTE format('ALTER TABLE bv_audit.%I ALTER COLUMN audit_id SET DEFAULT bv_audit.next_audit_id()',
                       t.audit_table);
    END LOOP;
END
$$;

-- enable(): new audit tables take the same default (one line differs from 0.1.0).
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
