# Every function of every BitVelocity extension, called with NULL in each
# argument in turn, and with a 100,000-character value in each text or
# jsonb argument (the other arguments plausible values), ends in a clean
# result or a clear error: never XX000 (internal error), 42601 (a syntax
# error from SQL the function built), a raw 23xxx constraint error or a
# crash.  Each call runs in a subtransaction that is rolled
# back, so calls that succeed change nothing for the next.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('nullargs');
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

# A table for the arguments of type regclass, audited, so that functions
# about audited tables reach past their first checks.
$node->safe_psql($db, q{
CREATE TABLE public.sweep (id integer PRIMARY KEY, note text);
INSERT INTO public.sweep VALUES (1, 'one');
SELECT bv_audit.enable('public.sweep');
});

# One row per call made: function, argument position given NULL, SQLSTATE
# ('' when the call succeeded) and the start of the message.
$node->safe_psql($db, q{
CREATE TABLE public.sweep_result (fn text, arg integer, mode text, state text, message text);

CREATE FUNCTION public.sweep_value(t regtype) RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT CASE
    WHEN t IN ('text'::regtype, 'character varying'::regtype, 'name'::regtype, 'character'::regtype) THEN quote_literal('x')
    WHEN t IN ('integer'::regtype, 'bigint'::regtype, 'smallint'::regtype, 'numeric'::regtype,
               'double precision'::regtype, 'real'::regtype) THEN '1'
    WHEN t = 'boolean'::regtype THEN 'false'
    WHEN t IN ('jsonb'::regtype, 'json'::regtype) THEN quote_literal('{}')
    WHEN t = 'regclass'::regtype THEN quote_literal('public.sweep')
    WHEN t IN ('timestamp with time zone'::regtype, 'timestamp without time zone'::regtype) THEN 'now()'
    WHEN t = 'interval'::regtype THEN quote_literal('1 day')
    WHEN t = 'bytea'::regtype THEN quote_literal('\x00')
    WHEN t = 'uuid'::regtype THEN 'gen_random_uuid()'
    WHEN t = 'inet'::regtype THEN quote_literal('127.0.0.1')
    WHEN t = 'text[]'::regtype THEN quote_literal('{x}')
    WHEN t = 'bigint[]'::regtype OR t = 'integer[]'::regtype THEN quote_literal('{1}')
    WHEN t = 'jsonb[]'::regtype THEN quote_literal('{}')
    ELSE 'NULL'
END || '::' || t::text
$$;

DO $sweep$
DECLARE
    f record;
    i integer;
    mode text;
    args text[];
    call text;
    st text;
    msg text;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure::text AS sig, p.oid, p.pronargs, p.proargtypes::regtype[] AS types,
               p.oid::regproc::text AS name
        FROM pg_depend d
        JOIN pg_extension e ON e.oid = d.refobjid
        JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
        WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
          AND e.extname LIKE 'bv\_%'
          AND p.prokind = 'f'
          AND p.pronargs > 0
          AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype, 'internal'::regtype)
          AND NOT ('internal'::regtype = ANY (p.proargtypes::regtype[]))
        ORDER BY 1
    LOOP
        FOR i, mode IN
            SELECT n, m FROM generate_series(1, f.pronargs) n, unnest(ARRAY['null', 'huge']) m
            WHERE m = 'null' OR (f.types)[n - 1] IN ('text'::regtype, 'jsonb'::regtype)
        LOOP
            SELECT array_agg(CASE WHEN n <> i THEN public.sweep_value((f.types)[n - 1])
                                  WHEN mode = 'null' THEN 'NULL::' || (f.types)[n - 1]::text
                                  WHEN (f.types)[n - 1] = 'jsonb'::regtype
                                  THEN format('jsonb_build_object(%L, repeat(%L, 100000))', repeat('k', 100000), 'v')
                                  ELSE format('repeat(%L, 100000)', 'x') END ORDER BY n)
              INTO args
              FROM generate_series(1, f.pronargs) n;
            call := format('SELECT %s(%s)', f.name, array_to_string(args, ', '));
            BEGIN
                EXECUTE call;
                RAISE SQLSTATE 'BVSW0';
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            END;
            INSERT INTO public.sweep_result
            VALUES (f.sig, i, mode, CASE WHEN st = 'BVSW0' THEN '' ELSE st END, left(msg, 200));
        END LOOP;
    END LOOP;
END
$sweep$;
});

my $calls = $node->safe_psql($db, 'SELECT count(*) FROM public.sweep_result');
cmp_ok($calls, '>', 100, "the sweep made $calls calls");

my $bad = $node->safe_psql($db, q{
SELECT string_agg(format('%s arg %s: %s %s', fn, arg, state, message), E'\n' ORDER BY fn, arg)
FROM public.sweep_result
WHERE mode = 'null' AND (state IN ('XX000', '42601') OR state LIKE '23%')
});
is($bad, '', 'no call with a NULL argument ends in XX000, 42601 or a raw constraint error');

# A 100,000-character text (or a jsonb with such a key and value) in each
# argument: refused as too long, not by a raw type or index limit.
$bad = $node->safe_psql($db, q{
SELECT string_agg(format('%s arg %s: %s %s', fn, arg, state, message), E'\n' ORDER BY fn, arg)
FROM public.sweep_result
WHERE mode = 'huge' AND (state IN ('XX000', '42601', '22001') OR state LIKE '23%'
                         OR (state = '54000' AND message LIKE 'index row%'))
});
is($bad, '', 'no call with a huge argument ends in XX000, 42601, 22001, an index size error or a raw constraint error');

my $long = $node->safe_psql($db, q{
SELECT string_agg(format('%s arg %s (%s)', fn, arg, mode), ', ') FROM public.sweep_result WHERE length(message) >= 200
});
is($long, '', 'error messages stay short (no client value echoed in full)');

ok($node->safe_psql($db, 'SELECT 1') eq '1', 'the server is still up');

done_testing();
