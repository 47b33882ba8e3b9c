# bench/include/audit-setup.sh, sourced by bench/audit.sh and
# bench/audit-instructions.sh after they set ROWS and say(); sets VARIANTS
# and OUT:
# a throw-away cluster with bv_core and bv_audit (synchronous_commit = off,
# shared_buffers = 1GB), one table public.t_<variant> of ROWS rows per
# variant, the variants' triggers, and the pgbench scripts
# $OUT/update_<variant>.sql and $OUT/insert_<variant>.sql.  Defines psql().
# The variants:
#   none      no trigger
#   floor     bv_audit.stamp() + a C AFTER row trigger that does nothing
#             (bench/include/noop_trigger.c): what PostgreSQL charges for
#             bv_audit's trigger structure before a record is written
#   write_floor  bv_audit.stamp() + a C AFTER row trigger that writes each
#             record the cheapest way there is, into a plain table shaped
#             like t_bv_audit's audit table, with its indexes
#             (bench/include/write_floor_trigger.c): a lower bound on what
#             any implementation of bv_audit's record write costs under its
#             trigger structure
#   bv_audit  bv_audit.stamp() + bv_audit.enable() (C triggers)
#   capture   bv_audit.enable() alone: the history without the audit
#             columns, which is all the plpgsql reference does (it fills no
#             audit columns); for comparison with it, like for like
#   plpgsql   a reference PL/pgSQL audit trigger written here, doing what
#             the popular PL/pgSQL audit triggers (supa_audit, audit-trigger
#             91plus) do: to_jsonb(OLD), to_jsonb(NEW) into one log table;
#             the issue's reference, against which the target is judged
#   plpgsql_full  bv_audit's whole job in PL/pgSQL, for comparison only:
#             a PL/pgSQL BEFORE trigger filling the same four audit columns,
#             and an AFTER trigger writing what bv_audit records (the row
#             image after INSERT/UPDATE and before DELETE as jsonb, the
#             row's key, actor, transaction id and time, application name,
#             client address, traceparent, changed columns) into one log
#             table with an index that finds a row's history by its key
#   wal       bv_audit.enable(..., mode => 'wal') (#19): no row trigger; the
#             writer emits one context message per statement and the
#             bv_audit WAL worker writes the records after the commit
VARIANTS="none floor write_floor bv_audit capture plpgsql plpgsql_full wal"
OUT=$BV_BENCH_OUT

say "cluster"
BV_EXTENSIONS="bv_core bv_audit" bv_throwaway_cluster "$OUT/cluster" 55000 >&2
trap 'bv_throwaway_stop "$OUT/cluster"' EXIT
psql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

# shared_buffers = 1GB as in docs/ENVIRONMENT's reference figures: with the
# default 128MB the audit tables' history index (random inserts under
# random-key UPDATEs) would be measured against the disk, not the trigger.
psql -c "ALTER SYSTEM SET synchronous_commit = off" -c "ALTER SYSTEM SET shared_buffers = '1GB'" >/dev/null
"$PGBIN/pg_ctl" restart -D "$OUT/cluster/data" -l "$OUT/cluster/server.log" -w -t 60 -m fast >/dev/null

say "tables: $ROWS rows each"
for v in $VARIANTS; do
    psql <<SQL
CREATE TABLE public.t_$v (id bigint PRIMARY KEY, name text NOT NULL, balance bigint NOT NULL, note text);
INSERT INTO public.t_$v SELECT g, 'name ' || g, g * 10, 'some note text' FROM generate_series(1, $ROWS) g;
CREATE SEQUENCE public.t_${v}_ins START $((ROWS + 1));
SQL
done

# The floors' C triggers, built with PGXS and loaded by path (superuser).
mkdir -p "$OUT/noop"
cp "$BV_TOP/bench/include/noop_trigger.c" "$BV_TOP/bench/include/write_floor_trigger.c" "$OUT/noop/"
printf 'MODULES = noop_trigger write_floor_trigger\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' >"$OUT/noop/Makefile"
make -s -C "$OUT/noop" PG_CONFIG="$PG_CONFIG" >&2 || bv_die "could not build bench/include/noop_trigger.c and write_floor_trigger.c"
psql -o /dev/null -v so="$OUT/noop/noop_trigger.so" <<'SQL'
CREATE FUNCTION public.bench_noop_trigger() RETURNS trigger LANGUAGE c AS :'so', 'bench_noop_trigger';
CREATE TRIGGER bench_noop AFTER INSERT OR UPDATE OR DELETE ON public.t_floor
    FOR EACH ROW EXECUTE FUNCTION public.bench_noop_trigger();
SELECT bv_audit.stamp('public.t_floor') IS NULL AS stamped;
SQL

# The reference PL/pgSQL trigger: one jsonb log table for every table.
psql -o /dev/null <<'SQL'
CREATE TABLE public.ref_audit_log (
    id bigserial PRIMARY KEY,
    table_oid oid NOT NULL,
    op text NOT NULL,
    ts timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL DEFAULT current_user,
    old_record jsonb,
    new_record jsonb
);
CREATE FUNCTION public.ref_audit_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ref_audit_log (table_oid, op, old_record, new_record)
    VALUES (TG_RELID, TG_OP,
            CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;
CREATE TRIGGER ref_audit AFTER INSERT OR UPDATE OR DELETE ON public.t_plpgsql
    FOR EACH ROW EXECUTE FUNCTION public.ref_audit_trigger();
SQL

# bv_audit's job in PL/pgSQL (plpgsql_full).  The trigger's argument names
# the key column, which the popular triggers look up in the catalogs for
# every row instead.
psql -o /dev/null <<'SQL'
CREATE EXTENSION hstore;
ALTER TABLE public.t_plpgsql_full ADD COLUMN created_by text, ADD COLUMN created_at timestamptz,
                                  ADD COLUMN updated_by text, ADD COLUMN updated_at timestamptz;
CREATE TABLE public.ref_full_log (
    id bigserial PRIMARY KEY,
    table_oid oid NOT NULL,
    record_key jsonb NOT NULL,
    op text NOT NULL,
    txid xid8 NOT NULL,
    actor text NOT NULL,
    ts timestamptz NOT NULL,
    app text,
    client inet,
    trace text,
    changed text[],
    record jsonb NOT NULL
);
CREATE INDEX ref_full_log_history ON public.ref_full_log (table_oid, record_key);
CREATE FUNCTION public.ref_full_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    who text := bv.actor();
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.created_by := who;
        NEW.created_at := transaction_timestamp();
    ELSE
        NEW.created_by := OLD.created_by;
        NEW.created_at := OLD.created_at;
    END IF;
    NEW.updated_by := who;
    NEW.updated_at := transaction_timestamp();
    RETURN NEW;
END
$$;
CREATE FUNCTION public.ref_full_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    img jsonb;
    changed text[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        img := to_jsonb(OLD);
    ELSE
        img := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- as the 91plus trigger does: hstore difference, no query
        changed := akeys(hstore(NEW) - hstore(OLD));
    END IF;
    INSERT INTO public.ref_full_log (table_oid, record_key, op, txid, actor, ts, app, client, trace,
                                     changed, record)
    VALUES (TG_RELID, jsonb_build_object(TG_ARGV[0], img -> TG_ARGV[0]), left(TG_OP, 1),
            pg_current_xact_id(), bv.actor(), transaction_timestamp(),
            nullif(current_setting('application_name'), ''), inet_client_addr(), bv.trace_context(),
            changed, img);
    RETURN NULL;
END
$$;
CREATE TRIGGER ref_full_stamp BEFORE INSERT OR UPDATE ON public.t_plpgsql_full
    FOR EACH ROW EXECUTE FUNCTION public.ref_full_stamp();
CREATE TRIGGER ref_full_capture AFTER INSERT OR UPDATE OR DELETE ON public.t_plpgsql_full
    FOR EACH ROW EXECUTE FUNCTION public.ref_full_capture('id');
SQL

psql -o /dev/null <<'SQL'
SELECT bv_audit.stamp('public.t_bv_audit') IS NULL AS stamped;
SELECT bv_audit.enable('public.t_bv_audit') IS NOT NULL AS enabled;
SELECT bv_audit.enable('public.t_capture') IS NOT NULL AS enabled;
SQL
# WAL mode is opt-in: turn it on as an operator would, then wait for the
# worker's slot before the table switches.
psql -o /dev/null -c "ALTER SYSTEM SET bv_audit.wal_mode = on" -c "SELECT pg_reload_conf()"
psql -o /dev/null <<'SQL'
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'bv_audit_wal');
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SQL
psql -o /dev/null <<'SQL'
SELECT bv_audit.enable('public.t_wal', mode => 'wal') IS NOT NULL AS enabled;
SQL

# The write floor's target: the audit table's columns and indexes, no
# partitions, no triggers.
psql -o /dev/null -v so="$OUT/noop/write_floor_trigger.so" <<'SQL'
CREATE TABLE public.write_floor_log (LIKE bv_audit.public__t_bv_audit INCLUDING INDEXES);
DO $$
BEGIN
    IF (SELECT count(*) FROM pg_index WHERE indrelid = 'public.write_floor_log'::regclass) <>
       (SELECT count(*) FROM pg_index WHERE indrelid = 'bv_audit.public__t_bv_audit'::regclass) THEN
        RAISE EXCEPTION 'write_floor_log did not get the audit table''s indexes';
    END IF;
END
$$;
CREATE FUNCTION public.bench_write_floor_trigger() RETURNS trigger LANGUAGE c AS :'so', 'bench_write_floor_trigger';
SELECT bv_audit.stamp('public.t_write_floor') IS NULL AS stamped;
CREATE TRIGGER bench_write_floor AFTER INSERT OR UPDATE OR DELETE ON public.t_write_floor
    FOR EACH ROW EXECUTE FUNCTION public.bench_write_floor_trigger('public.write_floor_log');
VACUUM ANALYZE;
SQL

for v in $VARIANTS; do
    printf '\\set id random(1, %s)\nUPDATE public.t_%s SET balance = balance + 1 WHERE id = :id;\n' \
        "$ROWS" "$v" >"$OUT/update_$v.sql"
    printf "INSERT INTO public.t_%s (id, name, balance, note) VALUES (nextval('public.t_%s_ins'), 'new row', 1, 'some note text');\n" \
        "$v" "$v" >"$OUT/insert_$v.sql"
done

