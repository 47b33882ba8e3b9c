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

/*
 * bv_audit 0.6.0 -> 0.7.0, section "red-team round 6b hardening"
 * (findings 2, 7, 5 of tests/tap/bv_redteam6b_audit_*.pl; findings 1 and
 * 10 are fixed in C).  Self-contained: it creates only objects of its own.
 *
 * Finding 2: a WAL-mode table keeps its primary key.  Without one,
 *   REPLICA IDENTITY DEFAULT logs no old key: deletes and key changes were
 *   silently not recorded.  A command that leaves a table in WAL mode
 *   without a primary key (ALTER TABLE ... DROP CONSTRAINT, DROP COLUMN,
 *   DROP INDEX ... CASCADE) is refused for every role (55000); dropping and
 *   adding the key in one ALTER TABLE command stays possible.  Trigger mode
 *   is unchanged: it refuses writes until a key is added again.
 *
 * Finding 7: in WAL mode the worker records a transaction by the mode the
 *   table has at the transaction's commit (its window [wal_lsn, wal_until)
 *   is compared with the commit LSN), and trigger mode records a write when
 *   it happens.  So a transaction that has written a table cannot then
 *   move the table into or out of WAL mode (enable(..., mode => 'wal') of
 *   a table not in it, a switch to trigger mode, disable() of a WAL-mode
 *   table, enable() again after disable() in WAL mode): 55000.  Writes
 *   after such a call in the same transaction are recorded the new way,
 *   exactly once.
 */

-- ===========================================================================
-- Finding 2: the primary key of a WAL-mode table cannot be dropped.
-- ===========================================================================
CREATE FUNCTION bv_audit._guard_wal_key()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad regclass;
BEGIN
    -- Few tables are in WAL mode: check them all (the command may have
    -- reached one through a parent, a cascade or an index).
    SELECT c.oid::regclass INTO bad
      FROM bv_audit.tracked t
      JOIN pg_catalog.pg_class c ON c.oid = t.relid
     WHERE t.enabled AND t.wal_lsn IS NOT NULL AND t.wal_until IS NULL
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'table "%" is recorded from the WAL and must keep a primary key', bad
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Without a primary key its deletes and key changes log no old key, and bv_audit could not record them.',
                  HINT = format('Drop and add the key in one command (ALTER TABLE %s DROP CONSTRAINT ..., ADD PRIMARY KEY (...)), or disable auditing first: bv_audit.disable(%L), or switch the table to trigger mode.', bad, bad::text);
    END IF;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_wal_key() IS
'Event trigger function: refuses a command that leaves a table in WAL mode without a primary key (its deletes and key changes would go unrecorded).';
REVOKE ALL ON FUNCTION bv_audit._guard_wal_key() FROM PUBLIC;

CREATE EVENT TRIGGER bv_audit_guard_wal_key ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'DROP INDEX')
    EXECUTE FUNCTION bv_audit._guard_wal_key();
CREATE EVENT TRIGGER bv_audit_guard_wal_key_drop ON sql_drop
    WHEN TAG IN ('ALTER TABLE', 'DROP INDEX')
    EXECUTE FUNCTION bv_audit._guard_wal_key();

-- ===========================================================================
-- Finding 7: no switch into or out of WAL mode after a write of the table
-- in the same transaction.
-- ===========================================================================
CREATE FUNCTION bv_audit._guard_window()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.relid IS NULL
       OR (NEW.wal_lsn IS NOT DISTINCT FROM OLD.wal_lsn AND NEW.wal_until IS NOT DISTINCT FROM OLD.wal_until) THEN
        RETURN NEW;
    END IF;
    -- INSERT, UPDATE, DELETE, MERGE and COPY FROM hold this lock on the
    -- table to the end of the transaction (or of a rolled-back savepoint).
    IF EXISTS (SELECT FROM pg_catalog.pg_locks l
                WHERE l.locktype = 'relation' AND l.pid = pg_catalog.pg_backend_pid()
                  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname = pg_catalog.current_database())
                  AND l.relation = NEW.relid AND l.mode = 'RowExclusiveLock' AND l.granted) THEN
        RAISE EXCEPTION 'table "%" was written earlier in this transaction', NEW.relid::regclass
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN NEW.wal_until IS NULL
                                THEN 'The WAL worker records the whole transaction once it commits, so the writes made before this call would be recorded twice or as changes of an untracked table.'
                                ELSE 'The WAL worker skips the whole transaction once the table leaves WAL mode in it, so the writes made before this call would not be recorded.' END,
                  HINT = 'Call bv_audit.enable() or bv_audit.disable() before the transaction writes the table, best in a transaction of its own.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION bv_audit._guard_window() IS
'Trigger function on bv_audit.tracked: refuses moving a table into or out of WAL mode in a transaction that has written it.';
REVOKE ALL ON FUNCTION bv_audit._guard_window() FROM PUBLIC;

CREATE TRIGGER bv_audit_guard_window BEFORE UPDATE OF wal_lsn, wal_until ON bv_audit.tracked
    FOR EACH ROW EXECUTE FUNCTION bv_audit._guard_window();

-- ===========================================================================
-- Finding 10: a column that stops being excluded from a WAL-mode table is
-- recorded at once.  An UPDATE that leaves a TOASTed value unchanged does
-- not log it, and the worker takes it from the row's last record, which
-- (written while the column was excluded) has none: the record and as_of()
-- said NULL.  Now the commit of the enable() that ends the exclusion
-- records every row with a value in such a column as a U naming it (as
-- ADD COLUMN ... DEFAULT is recorded); trigger mode records it at the next
-- UPDATE, as before.  Before the exclusions change, the worker records what
-- was committed so far (the table's writers wait for enable() already), so
-- these records follow every earlier one of the table.
-- ===========================================================================
CREATE FUNCTION bv_audit._wal_reinclude_drain()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.relid IS NOT NULL AND OLD.wal_lsn IS NOT NULL AND OLD.wal_until IS NULL
       AND EXISTS (SELECT FROM unnest(OLD.exclude_attnums) AS x(attnum)
                    WHERE x.attnum <> ALL (NEW.exclude_attnums)) THEN
        PERFORM bv_audit._wal_drain('the end of a column''s exclusion');
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_reinclude_drain() IS
'Trigger function on bv_audit.tracked: before a WAL-mode table''s exclusions shrink, waits until the WAL worker has recorded what was committed so far.';
REVOKE ALL ON FUNCTION bv_audit._wal_reinclude_drain() FROM PUBLIC;

CREATE TRIGGER bv_audit_reinclude_drain BEFORE UPDATE OF exclude_attnums ON bv_audit.tracked
    FOR EACH ROW EXECUTE FUNCTION bv_audit._wal_reinclude_drain();

-- At commit (deferred), when the audit table has its columns again.
-- SECURITY DEFINER: the commit runs as the caller of enable() (bv_admin),
-- who may neither read the table nor write its audit table; only enable()
-- can change bv_audit.tracked.
CREATE FUNCTION bv_audit._wal_reinclude()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bv_audit.tracked;
    back smallint[];
BEGIN
    SELECT * INTO t FROM bv_audit.tracked tr WHERE tr.id = NEW.id;
    IF NOT FOUND OR t.relid IS NULL OR NOT t.enabled OR t.wal_lsn IS NULL OR t.wal_until IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(c.src_attnum ORDER BY c.src_attnum) INTO back
      FROM bv_audit.columns c
     WHERE c.tracked_id = t.id AND c.src_attnum = ANY (OLD.exclude_attnums)
       AND c.src_attnum <> ALL (t.exclude_attnums);
    IF back IS NOT NULL THEN
        PERFORM bv_audit._record_rows(t, back, true);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION bv_audit._wal_reinclude() IS
'Deferred trigger function on bv_audit.tracked: at the commit of enable() that ends a WAL-mode table''s exclusion of columns, records every row with a value in them (the WAL does not carry unchanged TOASTed values).';
REVOKE ALL ON FUNCTION bv_audit._wal_reinclude() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER bv_audit_reinclude AFTER UPDATE OF exclude_attnums ON bv_audit.tracked
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.exclude_attnums IS DISTINCT FROM NEW.exclude_attnums)
    EXECUTE FUNCTION bv_audit._wal_reinclude();

-- ===========================================================================
-- Red-team 6b finding 5: a record's time.  Records written by SQL (the
-- snapshot at enable(), rows re-recorded after DDL) take the clock when
-- they are written, as the capture trigger does, not the transaction's
-- start: per key, audit_ts must not go back in audit_id order (the
-- transaction may have started before the last writer of a row recorded
-- it).  docs/bv_audit.md "Time", ADR 0013.
-- ===========================================================================
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
                   'SELECT ''S'', pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.clock_timestamp(), '
                   'NULLIF(pg_catalog.current_setting(''application_name''), ''''), '
                   'pg_catalog.inet_client_addr(), bv.trace_context(), %s FROM ONLY %I.%I s',
                   t.audit_table, cols, src, t.source_schema, t.source_table);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
CREATE OR REPLACE FUNCTION bv_audit._record_rows(t bv_audit.tracked, changed smallint[], only_non_null boolean)
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
                   'SELECT ''U'', pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.clock_timestamp(), '
                   'NULLIF(pg_catalog.current_setting(''application_name''), ''''), '
                   'pg_catalog.inet_client_addr(), bv.trace_context(), $1, %s FROM ONLY %I.%I s WHERE %s',
                   t.audit_table, cols, src, t.source_schema, t.source_table,
                   CASE WHEN only_non_null THEN cond ELSE 'true' END)
        USING names;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
CREATE OR REPLACE FUNCTION bv_audit._record_vanished(t bv_audit.tracked, changed text[])
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
        'SELECT ''D'', pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.clock_timestamp(), '
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
CREATE OR REPLACE FUNCTION bv_audit._record_rows_where(t bv_audit.tracked, changed smallint[], cond text, op text)
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
                   'SELECT %L, pg_catalog.pg_current_xact_id(), bv.actor(), pg_catalog.clock_timestamp(), '
                   'NULLIF(pg_catalog.current_setting(''application_name''), ''''), '
                   'pg_catalog.inet_client_addr(), bv.trace_context(), $1, %s FROM ONLY %I.%I s WHERE %s',
                   t.audit_table, cols, op, src, t.source_schema, t.source_table, cond)
        USING names;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
