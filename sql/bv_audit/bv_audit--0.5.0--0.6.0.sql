/*
 * bv_audit 0.5.0 -> 0.6.0: red-team round 5 (trigger mode).
 *
 * 1. A primary key under a nondeterministic collation (a case-insensitive
 *    ICU collation, the usual way to key users by e-mail) is refused, at
 *    enable() and at DDL that gives a tracked table such a key: an UPDATE
 *    that changed only the case of the key left a ghost row in as_of().
 *    tests/tap/bv_redteam5b_audit.pl.
 *
 * 2. DDL on a type inside a tracked column is recorded: ALTER TYPE ...
 *    RENAME VALUE of an enum used through any nesting (composite, range,
 *    multirange, domain, array, in any combination) records the rows
 *    holding the label, naming every such column; ALTER TYPE ... ADD or
 *    DROP ATTRIBUTE of a composite records every row with a value in a
 *    column using it.  tests/tap/bv_redteam5b_audit.pl.
 *
 * 3. The name of an excluded column that is dropped or renamed away stays
 *    excluded: a column later added under that name is not copied.
 *    tests/tap/bv_redteam5b_audit.pl.
 *
 * 4. Stamp columns of a stamped table: a table owner who is not a
 *    superuser can no longer change their type (with or without USING:
 *    timestamptz to timestamp and back under another TimeZone moved every
 *    created_at), rename or drop them (then ADD COLUMN created_by ...
 *    DEFAULT 'alice' named a forged creator for every row).
 *    tests/pgtap/bv_redteam5b_audit_stamp.sql.
 *
 * 5. #19 WAL mode: enable(..., mode => 'wal') waits until the worker's slot
 *    is consistent (the loss race, ADR 0013); wait_for() polls every 5 ms;
 *    stamp() of a partition whose parent lacks the audit columns is refused
 *    with a hint.  tests/tap/bv_audit_wal_enable_race.pl.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.6.0'" to load this file. \quit

------------------------------------------------------------------------
-- 1 and 3. Keys under nondeterministic collations; excluded names
------------------------------------------------------------------------

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
    key_col text;
    key_coll text;
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
    -- Round 5: a key under a nondeterministic collation has spellings that
    -- differ in bytes but are one row ('Alice' and 'alice' under a
    -- case-insensitive ICU collation): the audit table (built-in
    -- collations only) would keep them apart, and an UPDATE of the case
    -- alone left a ghost row in as_of().
    SELECT format('%I', att.attname), format('%I.%I', cn.nspname, co.collname) INTO key_col, key_coll
      FROM pg_catalog.pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::smallint[], i.indcollation::oid[]) AS k(attnum, coll)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = k.attnum
      JOIN pg_catalog.pg_collation co ON co.oid = k.coll
      JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
     WHERE i.indrelid = t.relid AND i.indisprimary AND NOT co.collisdeterministic
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'primary key column % of %.% uses the nondeterministic collation %',
              key_col, t.source_schema, t.source_table, key_coll
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'bv_audit follows a row by the exact value of its key; under a nondeterministic collation two spellings of one key (such as ''Alice'' and ''alice'') are the same row.',
                  HINT = 'Key the table by a column under a deterministic collation (for example a generated id, with a unique index on the case-insensitive column), then enable tracking.';
    END IF;
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
    -- Excluded columns by attnum; their names follow renames.  Round 5: the
    -- name of an excluded column that was dropped or renamed away stays
    -- excluded, and a column that later takes that name (and is not
    -- mirrored yet) is excluded too: DROP COLUMN card_token, ADD COLUMN
    -- card_token (how a type is changed) must not start copying the secret.
    UPDATE bv_audit.tracked tr
       SET exclude_attnums = coalesce((SELECT array_agg(x.attnum ORDER BY x.attnum)
                                         FROM pg_catalog.pg_attribute x
                                        WHERE x.attrelid = t.relid AND x.attnum > 0 AND NOT x.attisdropped
                                          AND (x.attnum = ANY (tr.exclude_attnums)
                                               OR (x.attname = ANY (tr.exclude_columns)
                                                   AND NOT EXISTS (SELECT 1 FROM bv_audit.columns c
                                                                    WHERE c.tracked_id = tr.id
                                                                      AND c.src_attnum = x.attnum)))), '{}')
     WHERE tr.id = t.id;
    UPDATE bv_audit.tracked tr
       SET exclude_columns = coalesce((SELECT array_agg(x.attname ORDER BY x.attnum)
                                         FROM pg_catalog.pg_attribute x
                                        WHERE x.attrelid = t.relid AND x.attnum = ANY (tr.exclude_attnums)
                                          AND NOT x.attisdropped), '{}')
                             || coalesce((SELECT array_agg(e ORDER BY e)
                                            FROM unnest(tr.exclude_columns) AS e
                                           WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                                                              WHERE x.attrelid = t.relid AND x.attname = e
                                                                AND x.attnum > 0 AND NOT x.attisdropped)), '{}')
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
------------------------------------------------------------------------
-- 2. Types inside tracked columns
------------------------------------------------------------------------

CREATE FUNCTION bv_audit._types_containing(typ oid)
RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE inner_of (outer_type, inner_type) AS (
        -- arrays
        SELECT ty.oid, ty.typelem FROM pg_catalog.pg_type ty
         WHERE ty.typelem <> 0 AND ty.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc
        UNION ALL
        -- domains
        SELECT ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty WHERE ty.typtype = 'd'
        UNION ALL
        -- composites (and row types of tables)
        SELECT ty.oid, a.atttypid
          FROM pg_catalog.pg_type ty
          JOIN pg_catalog.pg_attribute a ON a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE ty.typtype = 'c'
        UNION ALL
        -- ranges and multiranges
        SELECT r.rngtypid, r.rngsubtype FROM pg_catalog.pg_range r
        UNION ALL
        SELECT r.rngmultitypid, r.rngtypid FROM pg_catalog.pg_range r
    ), closure (oid) AS (
        SELECT typ
        UNION
        SELECT i.outer_type FROM closure JOIN inner_of i ON i.inner_type = closure.oid
    )
    SELECT pg_catalog.array_agg(oid) FROM closure
$$;
COMMENT ON FUNCTION bv_audit._types_containing(oid) IS
'Internal: the type and every type that contains it, through arrays, domains, composites, ranges and multiranges, at any depth.';
REVOKE ALL ON FUNCTION bv_audit._types_containing(oid) FROM PUBLIC;

CREATE FUNCTION bv_audit._base_type(typ oid)
RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE chain (oid, base) AS (
        SELECT ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty WHERE ty.oid = typ
        UNION ALL
        SELECT ty.oid, ty.typbasetype FROM chain JOIN pg_catalog.pg_type ty ON ty.oid = chain.base
    )
    SELECT chain.oid FROM chain WHERE chain.base = 0
$$;
COMMENT ON FUNCTION bv_audit._base_type(oid) IS
'Internal: the type under a chain of domains (the type itself when it is not a domain).';
REVOKE ALL ON FUNCTION bv_audit._base_type(oid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION bv_audit._on_alter_type()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    t bv_audit.tracked;
    inside oid[];
    cols smallint[];
    cond text;
BEGIN
    FOR r IN
        -- RENAME VALUE of an enum: the rows holding the new label.
        SELECT c.objid AS changed_type, bv_audit._renamed_enum_label(c.command) AS label
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.command_tag = 'ALTER TYPE' AND c.object_type = 'type'
        UNION ALL
        -- ADD / DROP ATTRIBUTE of a composite (RENAME ATTRIBUTE is a
        -- 'composite type column' and changes no stored text).
        SELECT ty.oid, NULL
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_type ty ON ty.typrelid = c.objid
         WHERE c.command_tag = 'ALTER TYPE' AND c.object_type = 'composite type'
    LOOP
        CONTINUE WHEN r.label IS NULL
                  AND (SELECT ty.typtype FROM pg_catalog.pg_type ty WHERE ty.oid = r.changed_type) <> 'c';
        inside := bv_audit._types_containing(r.changed_type);
        FOR t IN SELECT tr.* FROM bv_audit.tracked tr WHERE tr.enabled AND tr.relid IS NOT NULL LOOP
            -- The mirrored columns whose type is or contains the changed one.
            -- Which rows: those that hold the renamed label (exactly for the
            -- enum itself, a domain over it or an array of either; by its
            -- text inside other types, and every non-NULL value when the
            -- label's text could be quoted there); every non-NULL value
            -- after an attribute change.
            SELECT array_agg(a.attnum ORDER BY a.attnum),
                   string_agg(CASE
                                  WHEN r.label IS NULL THEN format('s.%I IS NOT NULL', a.attname)
                                  WHEN bv_audit._base_type(a.atttypid) = r.changed_type
                                  THEN format('s.%I::text = %L', a.attname, r.label)
                                  WHEN bv_audit._base_type(ty.typelem) = r.changed_type
                                       AND ty.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc
                                  THEN format('%L = ANY (s.%I::text[])', r.label, a.attname)
                                  WHEN r.label ~ '[\s"\\,(){}\[\]]' OR r.label = ''
                                  THEN format('s.%I IS NOT NULL', a.attname)
                                  ELSE format('pg_catalog.strpos(s.%I::text, %L) > 0', a.attname, r.label) END,
                              ' OR ')
              INTO cols, cond
              FROM pg_catalog.pg_attribute a
              JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum = a.attnum
              JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
             WHERE a.attrelid = t.relid AND NOT a.attisdropped AND a.atttypid = ANY (inside);
            CONTINUE WHEN cols IS NULL;
            PERFORM bv_audit._record_rows_where(t, cols, cond, 'U');
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._on_alter_type() IS
'Internal: event trigger on ALTER TYPE; after RENAME VALUE of an enum, records (''U'') every row of a tracked table that holds the renamed label in a column of a type that is or contains the enum, and after ADD or DROP ATTRIBUTE of a composite every row with a value in a column of a type that is or contains it, naming those columns.';

------------------------------------------------------------------------
-- 4. Stamp columns
------------------------------------------------------------------------

CREATE FUNCTION bv_audit._retyped_columns(cmd pg_ddl_command)
RETURNS smallint[]
AS 'MODULE_PATHNAME', 'bv_audit_retyped_columns'
LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION bv_audit._retyped_columns(pg_ddl_command) IS
'Internal: the attribute numbers of the columns an ALTER TABLE changed with ALTER COLUMN ... TYPE, with or without USING.';
REVOKE ALL ON FUNCTION bv_audit._retyped_columns(pg_ddl_command) FROM PUBLIC;

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
    -- A type change of a stamp column, with or without USING, on the named
    -- table or (it recurses) a table inheriting from it.
    WITH RECURSIVE retyped AS (
        SELECT c.objid AS relid, a.attname
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         CROSS JOIN LATERAL pg_catalog.unnest(bv_audit._retyped_columns(c.command)) AS r(attnum)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.objid AND a.attnum = r.attnum
         WHERE c.command_tag = 'ALTER TABLE' AND c.object_type = 'table'
        UNION
        SELECT i.inhrelid, retyped.attname
          FROM retyped JOIN pg_catalog.pg_inherits i ON i.inhparent = retyped.relid
    )
    SELECT x.attname, x.relid INTO col, rel
      FROM retyped x
     WHERE x.attname IN ('created_by', 'created_at', 'updated_by', 'updated_at')
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                    WHERE tg.tgrelid = x.relid AND tg.tgname = 'bv_audit_stamp')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'only a superuser can change the type of the stamp column % of %', col, rel::regclass
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'ALTER COLUMN ... TYPE converts the values the stamp trigger wrote (with USING, or by a cast: timestamptz to timestamp and back moves them by the session''s TimeZone), and no row trigger fires during a table rewrite.',
                  HINT = 'Stamp columns record who created and changed each row; leave them to the stamp trigger.';
    END IF;
    -- A stamp column renamed away or dropped.
    SELECT v.name, x.relid INTO col, rel
      FROM bv_audit._ddl_altered_tables() x
     CROSS JOIN (VALUES ('created_by'::name), ('created_at'), ('updated_by'), ('updated_at')) AS v(name)
     WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                    WHERE tg.tgrelid = x.relid AND tg.tgname = 'bv_audit_stamp')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = x.relid AND a.attname = v.name AND NOT a.attisdropped)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'only a superuser can rename or drop the stamp column % of %', col, rel::regclass
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A stamp column added again under that name would hold whatever its default says for every existing row.',
                  HINT = 'Stamp columns record who created and changed each row; leave them to the stamp trigger.';
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_stamp_rewrite() IS
'Internal: event trigger that refuses a non-superuser''s ALTER COLUMN ... TYPE (with or without USING), RENAME COLUMN or DROP COLUMN of a stamp column (created_by, created_at, updated_by, updated_at) of a stamped table.';

-- DROP COLUMN created_by, ADD COLUMN created_by ... in one ALTER TABLE
-- leaves a column of that name: the drop itself is refused here.
CREATE FUNCTION bv_audit._guard_stamp_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col text;
    rel oid;
BEGIN
    IF pg_catalog.current_setting('is_superuser') = 'on' THEN
        RETURN;
    END IF;
    SELECT d.address_names[3], d.objid INTO col, rel
      FROM pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.object_type = 'table column'
       AND d.address_names[3] IN ('created_by', 'created_at', 'updated_by', 'updated_at')
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                    WHERE tg.tgrelid = d.objid AND tg.tgname = 'bv_audit_stamp')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'only a superuser can rename or drop the stamp column % of %', col, rel::regclass
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A stamp column added again under that name would hold whatever its default says for every existing row.',
                  HINT = 'Stamp columns record who created and changed each row; leave them to the stamp trigger.';
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_stamp_drop() IS
'Internal: event trigger on sql_drop that refuses a non-superuser''s DROP COLUMN of a stamp column of a stamped table.';
REVOKE ALL ON FUNCTION bv_audit._guard_stamp_drop() FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_guard_stamp_drop ON sql_drop
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION bv_audit._guard_stamp_drop();

-- ===========================================================================
-- #19 WAL mode: enable(..., mode => 'wal') waits until the worker's slot is
-- consistent, not merely visible (ADR 0013, "The loss race").
-- ===========================================================================

-- Internal: a running-transactions record now (see wal_context.c).  A slot
-- being created reaches its consistent point only at such records.
CREATE FUNCTION bv_audit._wal_log_running_xacts()
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'bv_audit_wal_log_running_xacts'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION bv_audit._wal_log_running_xacts() IS
'Internal: logs a running-transactions record and returns its position, so that a replication slot being created reaches its consistent point without waiting for the bgwriter.';
REVOKE ALL ON FUNCTION bv_audit._wal_log_running_xacts() FROM PUBLIC;

-- Whether a table can be recorded from the WAL, and the worker's slot ready
-- to decode every transaction that commits from now on.
--
-- The slot is ready when it has a confirmed position: a slot appears in
-- pg_replication_slots as soon as its creation starts, but decodes only the
-- transactions that commit after its consistent point, which it reaches
-- once every transaction running when its creation started has ended.
-- 0.5.0 waited only for the slot to appear: a table enabled meanwhile had
-- its first changes committed before that point, never decoded, and
-- wait_for() (the slot's confirmed position) then said they were recorded.
--
-- While this waits it holds the lock that the worker takes before it drops
-- an unused slot (WAL mode off, no table in it), so the slot cannot vanish
-- between this check and the commit of enable().
CREATE OR REPLACE FUNCTION bv_audit._wal_check(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    slot_ready boolean;
    i integer;
BEGIN
    SELECT x.relpersistence, x.relreplident INTO c FROM pg_catalog.pg_class x WHERE x.oid = tbl;
    IF c.relpersistence <> 'p' THEN
        RAISE EXCEPTION 'table "%" is not logged', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'WAL mode reads changes from the WAL, which has none of an unlogged table.',
                  HINT = format('Use trigger mode (bv_audit.enable(%L, mode => ''trigger'')), or ALTER TABLE %s SET LOGGED.', tbl::text, tbl);
    END IF;
    IF c.relreplident NOT IN ('d', 'f') THEN
        RAISE EXCEPTION 'table "%" does not log its primary key with deletes', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'WAL mode finds the row of a DELETE by the primary key its WAL record carries (REPLICA IDENTITY DEFAULT or FULL).',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY DEFAULT, or use trigger mode.', tbl);
    END IF;
    IF c.relreplident = 'd' AND EXISTS (SELECT FROM pg_catalog.pg_index i
                                         WHERE i.indrelid = tbl AND i.indisprimary AND NOT i.indimmediate) THEN
        RAISE EXCEPTION 'the primary key of table "%" is deferrable', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A deferrable key cannot be the replica identity: deletes and key changes would not log the old key, which WAL mode follows rows by.',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY FULL, or use trigger mode.', tbl);
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'WAL mode needs wal_level = logical'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set wal_level = logical (BitVelocity clusters do) and restart, or use trigger mode.';
    END IF;
    IF current_database() IS DISTINCT FROM current_setting('bv_audit.database', true) THEN
        RAISE EXCEPTION 'WAL mode records tables of database "%" only', left(coalesce(current_setting('bv_audit.database', true), ''), 63)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The bv_audit WAL worker decodes one database, bv_audit.database (bv_audit must be preloaded).',
                  HINT = 'Use trigger mode in this database, or set bv_audit.database and restart.';
    END IF;
    -- The worker drops its slot only under this lock (exclusive, try-only).
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(1652125, 19);
    IF NOT EXISTS (SELECT FROM bv_audit.tracked t WHERE t.wal_lsn IS NOT NULL AND t.wal_until IS NULL)
       AND current_setting('bv_audit.wal_mode', true) IS DISTINCT FROM 'on'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_replication_slots s
                        WHERE s.slot_name = 'bv_audit_wal' AND s.database = current_database()) THEN
        RAISE EXCEPTION 'WAL mode is off in this cluster'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'bv_audit.wal_mode is off: the bv_audit WAL worker keeps no replication slot.',
                  HINT = 'Set bv_audit.wal_mode = on in postgresql.conf and reload (the worker then keeps a slot that decodes all of this database''s WAL), or use trigger mode.';
    END IF;
    -- The worker creates its slot when WAL mode is on; a table must not
    -- switch before the slot is consistent (see above).
    FOR i IN 1..200 LOOP
        SELECT s.confirmed_flush_lsn IS NOT NULL INTO slot_ready
          FROM pg_catalog.pg_replication_slots s
         WHERE s.slot_name = 'bv_audit_wal' AND s.database = current_database();
        EXIT WHEN slot_ready;
        IF slot_ready IS NOT NULL AND pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
            -- The slot waits for every transaction older than it, this one too.
            RAISE EXCEPTION 'the bv_audit WAL worker''s replication slot waits for this transaction to end'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'The slot bv_audit_wal is being created; it is ready once the transactions that were running when its creation started have ended, and this transaction has written already.',
                      HINT = 'Call bv_audit.enable(..., mode => ''wal'') in a transaction that has not written yet, or commit and try again.';
        END IF;
        IF i = 200 THEN
            RAISE EXCEPTION 'the bv_audit WAL worker has no replication slot ready yet'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = CASE WHEN slot_ready IS NULL
                                    THEN 'It creates the slot bv_audit_wal when WAL mode is on; it is not running or cannot create it.'
                                    ELSE 'The slot bv_audit_wal is being created and waits for transactions that started before it to end.' END,
                      HINT = 'Check bv_audit.wal_status(), pg_stat_activity (long transactions) and the server log (max_replication_slots), then try again.';
        END IF;
        IF slot_ready IS NOT NULL THEN
            PERFORM bv_audit._wal_log_running_xacts();
        END IF;
        PERFORM pg_catalog.pg_sleep(0.05);
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_check(regclass) IS
'Internal: refuses a table that WAL mode cannot record (unlogged, deletes not logging the primary key, wal_level below logical) and waits until the WAL worker''s slot decodes every transaction that commits from now on.';
REVOKE ALL ON FUNCTION bv_audit._wal_check(regclass) FROM PUBLIC;

-- ===========================================================================
-- stamp() of a partition whose columns are missing: a clear refusal with a
-- hint, instead of ALTER TABLE's "cannot add column to a partition".
-- ===========================================================================
CREATE OR REPLACE FUNCTION bv_audit.stamp(tbl regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
    col record;
    missing text;
    parent text;
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
    -- A partition takes its columns from its parent: the missing ones are
    -- added there (and reach every partition), not here.
    SELECT string_agg(format('%I', v.name), ', ' ORDER BY v.ord), max(pi.inhparent::regclass::text)
      INTO missing, parent
      FROM (VALUES (1, 'created_by'), (2, 'created_at'), (3, 'updated_by'), (4, 'updated_at')) AS v(ord, name)
      JOIN pg_catalog.pg_class c ON c.oid = tbl AND c.relispartition
      JOIN pg_catalog.pg_inherits pi ON pi.inhrelid = tbl
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = tbl AND a.attname = v.name AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'table % is a partition of %, which lacks the audit columns %', tbl, parent, missing
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'A partition has exactly the columns of its partitioned table: bv_audit.stamp() cannot add them to the partition alone.',
                  HINT = format('Call bv_audit.stamp(%L) on the partitioned table (its trigger reaches every partition), or add the columns to it first.', parent);
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
    -- A partition of a stamped table has the parent's trigger already.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger tg
                    WHERE tg.tgrelid = tbl AND tg.tgname = 'bv_audit_stamp' AND tg.tgparentid <> 0) THEN
        EXECUTE format('CREATE OR REPLACE TRIGGER bv_audit_stamp BEFORE INSERT OR UPDATE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION bv_audit.stamp_trigger()', tbl);
    END IF;
END
$$;


-- ===========================================================================
-- #19 lag: wait_for() polls every 5 ms at most (was 20 ms), now that the
-- worker is woken at each commit of a WAL-mode write.
-- ===========================================================================
CREATE OR REPLACE FUNCTION bv_audit.wait_for(lsn pg_lsn, timeout interval DEFAULT interval '30 seconds')
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz;
    pause double precision := 0.001;
BEGIN
    IF lsn IS NULL OR timeout IS NULL THEN
        RAISE EXCEPTION 'lsn and timeout must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a WAL position, e.g. bv_audit.wait_for(pg_current_wal_insert_lsn()).';
    END IF;
    IF timeout < interval '0' OR timeout > interval '1 day' THEN
        RAISE EXCEPTION 'timeout must lie between 0 and 1 day'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was %s.', timeout),
                  HINT = 'Pass e.g. interval ''30 seconds''.';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bv_audit.wait_for() must run in a read committed transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'Its snapshot would never see the worker''s progress.',
                  HINT = 'Call it in a transaction of its own (read committed, the default).';
    END IF;
    deadline := clock_timestamp() + timeout;
    LOOP
        IF bv_audit._wal_applied() >= lsn THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_catalog.pg_sleep(pause);
        pause := least(pause * 2, 0.005);
    END LOOP;
END
$$;
COMMENT ON FUNCTION bv_audit.wait_for(pg_lsn, interval) IS
'Waits until the history of WAL-mode tables covers every transaction whose commit record starts before lsn (e.g. pg_current_wal_insert_lsn() after a commit); true when it does, false after the timeout. Trigger-mode tables need no wait: their records commit with the change.';
