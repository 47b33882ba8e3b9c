/*
 * bv_audit 0.6.0 -> 0.7.0: keys whose equality ignores bytes.
 *
 * 1. A primary key column whose type's equality is not equality of the
 *    stored bytes is refused (0A000, with a hint), at enable() and at DDL
 *    that gives a tracked table such a key, in both modes: numeric (1.0 =
 *    1.00), citext ('A' = 'a'), float4/float8 (0 = -0), jsonb, interval
 *    ('1 day' = '24 hours'), ranges, and arrays and composites of such
 *    types.  bv_audit decides "the key changed" and "another row of the
 *    statement took the old key" by the key's bytes (the capture trigger,
 *    WAL mode's claimed keys), while the table's unique index and
 *    history()/as_of() use the type's equality; with such a key an UPDATE
 *    from 1.0 to 1.00 was a move without its D (trigger mode), and in WAL
 *    mode a statement that moved rows in the wrong order wrote the old
 *    key's D after the I of the row that took an equal key: as_of() lost
 *    the row.  The test is the one PostgreSQL uses to allow btree
 *    deduplication: the default btree operator class's "equalimage"
 *    support function (arrays: their element type's).  A key under a
 *    nondeterministic collation keeps the 0.6.0 message.
 *    tests/tap/bv_audit_key_equality.pl.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_audit UPDATE TO '0.7.0'" to load this file. \quit

------------------------------------------------------------------------
-- 1. Keys whose equality ignores bytes
------------------------------------------------------------------------

-- Whether equal values of type typ always have the same bytes: the default
-- btree operator class has an "equalimage" support function (PostgreSQL
-- deduplicates index entries only then); an array is exact when its
-- element type is.  In core that function is btequalimage (always true)
-- or btvarstrequalimage (true under a deterministic collation, which the
-- caller checks: it depends on the column's collation, which SQL cannot
-- pass to it).  Types without a btree operator class cannot be keys.
CREATE FUNCTION bv_audit._key_type_exact(typ oid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base oid := bv_audit._base_type(typ);
    elem oid;
BEGIN
    SELECT t.typelem INTO elem FROM pg_catalog.pg_type t
     WHERE t.oid = base AND t.typelem <> 0
       AND t.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc;
    IF elem IS NOT NULL THEN
        RETURN bv_audit._key_type_exact(elem);
    END IF;
    RETURN EXISTS (
        SELECT 1
          FROM pg_catalog.pg_opclass oc
          JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod AND am.amname = 'btree'
          JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily
                                      AND ap.amproclefttype = oc.opcintype
                                      AND ap.amprocrighttype = oc.opcintype
                                      AND ap.amprocnum = 4
         WHERE oc.opcdefault
           AND (oc.opcintype = base
                OR (oc.opcintype = 'pg_catalog.anyenum'::pg_catalog.regtype
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.oid = base AND t.typtype = 'e'))));
END;
$$;
COMMENT ON FUNCTION bv_audit._key_type_exact(oid) IS
    'Internal: whether equal values of the type (under a deterministic collation) always have equal bytes (the btree equalimage test), so that bv_audit may follow keys of it.';
REVOKE ALL ON FUNCTION bv_audit._key_type_exact(oid) FROM PUBLIC;

-- Refuse a tracked table whose primary key has a column of an inexact type.
CREATE FUNCTION bv_audit._check_key_types(t bv_audit.tracked)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    SELECT format('%I', att.attname) AS col, pg_catalog.format_type(att.atttypid, att.atttypmod) AS typ INTO bad
      FROM pg_catalog.pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::smallint[], i.indcollation::oid[]) WITH ORDINALITY AS k(attnum, coll, ord)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = k.attnum
      LEFT JOIN pg_catalog.pg_collation co ON co.oid = k.coll
     WHERE i.indrelid = t.relid AND i.indisprimary
       AND coalesce(co.collisdeterministic, true)
       AND NOT bv_audit._key_type_exact(att.atttypid)
     ORDER BY k.ord
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'primary key column % of %.% has type % whose equality ignores differences in the stored value',
              bad.col, t.source_schema, t.source_table, bad.typ
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'bv_audit follows a row by the exact value of its key; values of this type can be equal and still differ (such as 1.0 and 1.00, ''A'' and ''a'' in citext, 0 and -0), so an update between them would be recorded as a different row.',
                  HINT = 'Key the table by a column of an exact type (for example a generated bigint or uuid id, with a unique index on this column), then enable tracking.';
    END IF;
END;
$$;
COMMENT ON FUNCTION bv_audit._check_key_types(bv_audit.tracked) IS
    'Internal: refuses (0A000) a tracked table whose primary key has a column whose type''s equality is not byte equality.';
REVOKE ALL ON FUNCTION bv_audit._check_key_types(bv_audit.tracked) FROM PUBLIC;

-- _sync_columns() as in 0.6.0, with the check above after the collation one.
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
    -- 0.7.0: and no key column of a type whose equality ignores bytes.
    PERFORM bv_audit._check_key_types(t);
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
