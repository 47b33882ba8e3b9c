/*
 * bv_audit 0.4.0 -> 0.5.0: red-team round 3.
 *
 * 1. DDL through a parent.  ALTER TABLE on a partitioned table or an
 *    inheritance parent recurses into its partitions and children, but
 *    pg_event_trigger_ddl_commands() names only the parent, so a tracked
 *    partition or child was not kept in step: ALTER COLUMN ... TYPE ...
 *    USING rewrote its values with no record, a type change that loses
 *    values was not refused, RENAME COLUMN left the audit column behind,
 *    ADD COLUMN made every later write of it fail, and the stamp guard let a
 *    non-superuser owner rewrite created_by through the parent.  The event
 *    triggers now act on the command's table and every table that inherits
 *    from it (bv_audit._ddl_altered_tables()), mapping rewritten columns by
 *    name.  tests/tap/bv_redteam4_audit_parent_ddl.pl.
 *
 * 2. ALTER TYPE ... RENAME VALUE on an enum a tracked table uses changes
 *    what every row holding the label says, without touching a row.  A new
 *    event trigger records those rows ('U', naming the columns).
 *    tests/tap/bv_redteam4_audit_enum.pl.
 *
 *    A key rewritten by USING is recorded as an UPDATE of the key is: a D
 *    of the old key and an I (not a U) of the new one.
 *
 * 3. history() converts the key values itself: a value not of the key
 *    column's type is refused with 22P02, a 40-character prefix and a hint,
 *    not with the cast error of the generated query quoting all of it.
 *    tests/tap/bv_redteam4_audit_history_args.pl.
 *
 * 4. A non-superuser table owner could forge the stamp columns with a
 *    BEFORE row trigger of its own named to fire after bv_audit_stamp
 *    (triggers fire in name order).  Such a trigger is now refused on a
 *    stamped table (CREATE TRIGGER, and ALTER TRIGGER ... RENAME).
 *    tests/tap/bv_redteam_audit_stamp_order.pl.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.5.0'" to load this file. \quit

------------------------------------------------------------------------
-- 1. DDL through a parent
------------------------------------------------------------------------

CREATE FUNCTION bv_audit._ddl_altered_tables()
RETURNS TABLE (relid oid, rewritten smallint[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE cmd AS (
        SELECT c.objid,
               CASE WHEN c.object_type = 'table' THEN bv_audit._rewritten_columns(c.command) END AS attnums
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.command_tag = 'ALTER TABLE' AND c.object_type IN ('table', 'table column')
    ), named AS (
        SELECT DISTINCT cmd.objid, a.attname
          FROM cmd
         CROSS JOIN LATERAL pg_catalog.unnest(cmd.attnums) AS x(attnum)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = cmd.objid AND a.attnum = x.attnum
    ), tree (top, relid) AS (
        SELECT DISTINCT cmd.objid, cmd.objid FROM cmd
        UNION
        SELECT tree.top, i.inhrelid
          FROM tree JOIN pg_catalog.pg_inherits i ON i.inhparent = tree.relid
    )
    SELECT tree.relid,
           coalesce(pg_catalog.array_agg(DISTINCT a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}')
      FROM tree
      LEFT JOIN named n ON n.objid = tree.top
      LEFT JOIN pg_catalog.pg_attribute a
        ON a.attrelid = tree.relid AND a.attname = n.attname AND NOT a.attisdropped
     GROUP BY tree.relid
$$;
COMMENT ON FUNCTION bv_audit._ddl_altered_tables() IS
'Internal, in an ALTER TABLE event trigger: each table the command changed (the named one and every table that inherits from it, as ALTER TABLE recurses) with the attribute numbers, in that table, of the columns a USING expression rewrote.';
REVOKE ALL ON FUNCTION bv_audit._ddl_altered_tables() FROM PUBLIC;

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
    FOR cmd IN SELECT a.relid, a.rewritten FROM bv_audit._ddl_altered_tables() a LOOP
        SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.relid = cmd.relid AND tr.enabled;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        IF t.mode = 'wal' THEN
            -- See 0.4.0: the WAL worker recorded the writers' changes under
            -- the old shape; still logged, deletes still log the key.
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
            PERFORM bv_audit._record_vanished(t, t.pk_columns::text[]);
        END IF;
        -- Columns whose stored values a USING expression rewrote (mirrored ones).
        SELECT coalesce(array_agg(DISTINCT r.attnum), '{}') INTO rewritten
          FROM unnest(cmd.rewritten) AS r(attnum)
          JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = r.attnum;
        SELECT array_agg(att.attname::text ORDER BY att.attnum) INTO key_rewritten
          FROM pg_catalog.pg_attribute att
         WHERE att.attrelid = t.relid AND att.attnum = ANY (rewritten) AND att.attname = ANY (t.pk_columns);
        IF key_rewritten IS NOT NULL THEN
            PERFORM bv_audit._record_vanished(t, key_rewritten);
        END IF;
        IF key_rewritten IS NOT NULL THEN
            -- New keys: their histories begin, as after an UPDATE of the key.
            PERFORM bv_audit._record_rows_where(t, rewritten || added, 'true', 'I');
        ELSIF cardinality(rewritten) > 0 THEN
            PERFORM bv_audit._record_rows(t, rewritten || added, false);
        ELSIF cardinality(added) > 0 THEN
            PERFORM bv_audit._record_rows(t, added, true);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION bv_audit._guard_stamp_rewrite()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col name;
    rel oid;
BEGIN
    IF pg_catalog.current_setting('is_superuser') = 'on' THEN
        RETURN;
    END IF;
    SELECT a.attname, x.relid INTO col, rel
      FROM bv_audit._ddl_altered_tables() x
     CROSS JOIN LATERAL pg_catalog.unnest(x.rewritten) AS r(attnum)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = x.relid AND a.attnum = r.attnum
     WHERE a.attname IN ('created_by', 'created_at', 'updated_by', 'updated_at')
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                    WHERE tg.tgrelid = x.relid AND tg.tgname = 'bv_audit_stamp')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'only a superuser can rewrite the stamp column % of %', col, rel::regclass
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'ALTER COLUMN ... TYPE ... USING (on the table or on a table it inherits from) would replace the values the stamp trigger wrote, and no row trigger fires during a table rewrite.',
                  HINT = 'Stamp columns record who created and changed each row; leave them to the stamp trigger.';
    END IF;
END
$$;

------------------------------------------------------------------------
-- 2. ALTER TYPE ... RENAME VALUE
------------------------------------------------------------------------

CREATE FUNCTION bv_audit._renamed_enum_label(cmd pg_ddl_command)
RETURNS text
AS 'MODULE_PATHNAME', 'bv_audit_renamed_enum_label'
LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION bv_audit._renamed_enum_label(pg_ddl_command) IS
'Internal: the new label of an ALTER TYPE ... RENAME VALUE, NULL for any other command.';
REVOKE ALL ON FUNCTION bv_audit._renamed_enum_label(pg_ddl_command) FROM PUBLIC;

CREATE FUNCTION bv_audit._on_alter_type()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    t bv_audit.tracked;
    cols smallint[];
    names text[];
    cond text;
BEGIN
    FOR r IN SELECT c.objid AS enum_type, bv_audit._renamed_enum_label(c.command) AS label
               FROM pg_catalog.pg_event_trigger_ddl_commands() c
              WHERE c.command_tag = 'ALTER TYPE' AND c.object_type = 'type' LOOP
        CONTINUE WHEN r.label IS NULL;
        FOR t IN SELECT tr.* FROM bv_audit.tracked tr WHERE tr.enabled AND tr.relid IS NOT NULL LOOP
            -- Mirrored columns of the enum, of an array of it or of a domain over it.
            SELECT array_agg(a.attnum ORDER BY a.attnum), array_agg(a.attname::text ORDER BY a.attnum),
                   string_agg(CASE WHEN ty.typelem = r.enum_type
                                   THEN format('%L = ANY (s.%I::text[])', r.label, a.attname)
                                   ELSE format('s.%I::text = %L', a.attname, r.label) END, ' OR ')
              INTO cols, names, cond
              FROM pg_catalog.pg_attribute a
              JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = a.attnum
              JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
             WHERE a.attrelid = t.relid AND NOT a.attisdropped
               AND (a.atttypid = r.enum_type OR ty.typelem = r.enum_type OR ty.typbasetype = r.enum_type);
            CONTINUE WHEN cols IS NULL;
            PERFORM bv_audit._record_rows_where(t, cols, cond, 'U');
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._on_alter_type() IS
'Internal: event trigger on ALTER TYPE; after RENAME VALUE of an enum, records (''U'') every row of a tracked table that holds the renamed label, naming the columns of that enum.';
REVOKE ALL ON FUNCTION bv_audit._on_alter_type() FROM PUBLIC;

-- _record_rows() with a condition of the caller's (built with %I / %L from
-- catalog names and labels, never from client text).
CREATE FUNCTION bv_audit._record_rows_where(t bv_audit.tracked, changed smallint[], cond text, op text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cols text;
    src text;
    names text[];
    n bigint;
BEGIN
    SELECT string_agg(format('%I', c.audit_column), ', ' ORDER BY c.src_attnum),
           string_agg(format('s.%I', att.attname), ', ' ORDER BY c.src_attnum)
      INTO cols, src
      FROM bv_audit.columns c
      JOIN pg_catalog.pg_attribute att
        ON att.attrelid = t.relid AND att.attnum = c.src_attnum AND NOT att.attisdropped
     WHERE c.tracked_id = t.id;
    SELECT array_agg(att.attname::text ORDER BY att.attnum) INTO names
      FROM pg_catalog.pg_attribute att
     WHERE att.attrelid = t.relid AND att.attnum = ANY (changed) AND NOT att.attisdropped;
    IF names IS NULL OR cols IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('INSERT INTO bv_audit.%I (audit_op, audit_xid, audit_actor, audit_ts, audit_app, '
                   'audit_client, audit_trace, audit_changed, %s) '
                   'SELECT %L, pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.now(), '
                   'NULLIF(pg_catalog.current_setting(''application_name''), ''''), '
                   'pg_catalog.inet_client_addr(), bv.trace_context(), $1, %s FROM ONLY %I.%I s WHERE %s',
                   t.audit_table, cols, op, src, t.source_schema, t.source_table, cond)
        USING names;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION bv_audit._record_rows_where(bv_audit.tracked, smallint[], text, text) IS
'Internal: records the rows of a tracked table that meet a condition as op (U, or I for rows under keys a rewrite gave) naming the given columns, after DDL that changed what they say without an UPDATE.';
REVOKE ALL ON FUNCTION bv_audit._record_rows_where(bv_audit.tracked, smallint[], text, text) FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_alter_type ON ddl_command_end
    WHEN TAG IN ('ALTER TYPE')
    EXECUTE FUNCTION bv_audit._on_alter_type();

------------------------------------------------------------------------
-- 3. history(): key values of another type
------------------------------------------------------------------------

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
    state text;
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
    -- The key values converted to the key columns' types here, so that a
    -- value of another type is refused with a short message and a hint,
    -- not by the generated query's cast error quoting all of it (0.5.0).
    BEGIN
        EXECUTE format('SELECT 1 FROM pg_catalog.jsonb_populate_record(NULL::bv_audit.%I, $1)', t.audit_table)
            USING pk;
    EXCEPTION WHEN data_exception THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
        RAISE EXCEPTION 'primary key value does not fit the key columns of %', tbl
            USING ERRCODE = state,
                  DETAIL = format('The value begins %s.', left(pk::text, 40)),
                  HINT = format('The key columns are %s.',
                                (SELECT string_agg(format('%I %s', att.attname,
                                                          pg_catalog.format_type(att.atttypid, att.atttypmod)), ', ' ORDER BY p.ord)
                                   FROM unnest(t.pk_columns) WITH ORDINALITY AS p(col, ord)
                                   JOIN pg_catalog.pg_attribute att ON att.attrelid = t.relid AND att.attname = p.col));
    END;
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

------------------------------------------------------------------------
-- 4. BEFORE row triggers that would fire after the stamp trigger
------------------------------------------------------------------------

CREATE FUNCTION bv_audit._guard_stamp_order()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF pg_catalog.current_setting('is_superuser') = 'on' THEN
        RETURN;
    END IF;
    -- The tables of the created or renamed triggers, and the partitions a
    -- trigger on a partitioned table is cloned into.
    WITH RECURSIVE rels (relid) AS (
        SELECT tg.tgrelid
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_trigger tg ON tg.oid = c.objid
         WHERE c.object_type = 'trigger'
        UNION
        SELECT i.inhrelid FROM rels JOIN pg_catalog.pg_inherits i ON i.inhparent = rels.relid
    )
    SELECT tg.tgname, tg.tgrelid INTO r
      FROM rels
      JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = rels.relid
     WHERE (tg.tgtype & 1) = 1          -- FOR EACH ROW
       AND (tg.tgtype & 2) = 2          -- BEFORE
       AND (tg.tgtype & (4 | 16)) <> 0  -- INSERT or UPDATE
       AND tg.tgname COLLATE "C" > 'bv_audit_stamp'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger s
                    WHERE s.tgrelid = tg.tgrelid AND s.tgname = 'bv_audit_stamp')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'trigger % would fire after the stamp trigger of %', r.tgname, r.tgrelid::regclass
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Triggers fire in name order; a BEFORE row trigger after bv_audit_stamp could overwrite created_by, created_at, updated_by and updated_at.',
                  HINT = 'Give the trigger a name that sorts before "bv_audit_stamp", or have a superuser create it.';
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_stamp_order() IS
'Internal: event trigger that refuses a non-superuser''s BEFORE INSERT or UPDATE row trigger that would fire after bv_audit_stamp on a stamped table (it could rewrite the stamp columns).';
REVOKE ALL ON FUNCTION bv_audit._guard_stamp_order() FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_guard_stamp_order ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER', 'ALTER TRIGGER')
    EXECUTE FUNCTION bv_audit._guard_stamp_order();
