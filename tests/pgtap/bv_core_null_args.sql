-- bv_core's public functions under hostile arguments (issue #17 item 15):
-- every function of schema bv (those without a leading underscore) called
-- with NULL in each argument in turn, then with a 100,000-character value
-- in each text argument, the other arguments plausible.  A NULL gives
-- 22004 or, for STRICT functions and the few documented cases, a result;
-- a bad value gives 22023 or another specific SQLSTATE; never XX000,
-- 42601, 22P02 or a raw 23xxx constraint error; no message, detail or hint
-- repeats more than a short prefix of a client value.  Malformed request
-- claims give 22023, not a raw jsonb syntax error.  Runs as a superuser in
-- one rolled-back transaction; each call runs in its own subtransaction.
BEGIN;
SELECT plan(15);

CREATE TEMP TABLE sweep_target (id integer, owner_id text);
CREATE FUNCTION pg_temp.sample(t regtype) RETURNS text LANGUAGE sql AS $$
SELECT CASE t
    WHEN 'text'::regtype THEN quote_literal('x')
    WHEN 'name'::regtype THEN quote_literal('owner_id') || '::name'
    WHEN 'jsonb'::regtype THEN quote_literal('{"keys": []}') || '::jsonb'
    WHEN 'timestamptz'::regtype THEN 'now() + interval ''1 day'''
    WHEN 'float8'::regtype THEN '1.0::float8'
    WHEN 'bigint'::regtype THEN '1::bigint'
    WHEN 'text[]'::regtype THEN quote_literal('{read}') || '::text[]'
    WHEN 'bytea'::regtype THEN quote_literal('\x00') || '::bytea'
    WHEN 'regclass'::regtype THEN quote_literal('pg_temp.sweep_target') || '::regclass'
END $$;

CREATE TEMP TABLE sweep (fn text, strict boolean, mode text, call text, state text, said text);
DO $d$
DECLARE
    f record;
    i integer;
    j integer;
    mode text;
    args text[];
    call text;
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    FOR f IN
        SELECT p.proname, p.oid::regprocedure::text AS sig, p.proisstrict, p.pronargs,
               p.proargtypes::regtype[] AS types
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'bv_core'
        WHERE p.pronamespace = 'bv'::regnamespace AND p.proname NOT LIKE '\_%' AND p.pronargs > 0
    LOOP
        FOREACH mode IN ARRAY ARRAY['null', 'huge'] LOOP
            FOR i IN 0 .. f.pronargs - 1 LOOP
                CONTINUE WHEN mode = 'huge' AND f.types[i] <> 'text'::regtype;
                args := '{}';
                FOR j IN 0 .. f.pronargs - 1 LOOP
                    args := args || CASE
                        WHEN i <> j THEN pg_temp.sample(f.types[j])
                        WHEN mode = 'null' THEN 'NULL::' || f.types[j]::text
                        ELSE 'repeat(''A'', 100000)' END;
                END LOOP;
                call := format('SELECT bv.%I(%s)', f.proname, array_to_string(args, ', '));
                st := ''; msg := ''; det := ''; hnt := '';
                BEGIN
                    EXECUTE call;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
                END;
                INSERT INTO sweep VALUES (f.sig, f.proisstrict, mode, call, st, concat_ws(' ', msg, det, hnt));
            END LOOP;
        END LOOP;
    END LOOP;
END
$d$;

SELECT cmp_ok((SELECT count(*) FROM sweep WHERE mode = 'null'), '>=', 30::bigint,
              'every argument of every public function was given a NULL');
SELECT cmp_ok((SELECT count(*) FROM sweep WHERE mode = 'huge'), '>=', 15::bigint,
              'every text argument was given 100,000 characters');
SELECT is((SELECT array_agg(call || ' -> ' || state ORDER BY call) FROM sweep
           WHERE state = 'XX000' OR state = '42601' OR state = '22P02' OR state LIKE '23%'),
          NULL, 'no internal, syntax, JSON syntax or raw constraint error');
SELECT is((SELECT array_agg(call || ' -> ' || state ORDER BY call) FROM sweep
           WHERE mode = 'null' AND state <> '' AND state <> '22004'),
          NULL, 'a NULL argument is refused with 22004 when it is refused');
-- The calls that accept a NULL: STRICT functions (NULL result, documented in
-- their comments) and arguments that mean "none" (no expiry, all owners).
SELECT is((SELECT array_agg(DISTINCT fn ORDER BY fn) FROM sweep
           WHERE mode = 'null' AND state = '' AND NOT strict AND fn NOT IN (
               'bv.api_key_create(text,text[],timestamp with time zone)',
               'bv.api_key_list(text)',
               'bv.api_key_verify(text)',
               'bv.jwt_revoke(text,timestamp with time zone,text)',
               'bv.jwt_import_jwks(jsonb,text)')),
          NULL, 'only documented NULL arguments are accepted');
SELECT is((SELECT array_agg(call ORDER BY call) FROM sweep WHERE mode = 'null' AND state = ''
           AND call ~ '^SELECT bv\.(api_key_create|jwt_revoke|jwt_import_jwks)\(NULL'),
          NULL, 'and those only where the argument is optional');
SELECT is((SELECT array_agg(call || ' said ' || length(said) || ' characters' ORDER BY call) FROM sweep
           WHERE mode = 'huge' AND (length(said) > 1000 OR said LIKE '%' || repeat('A', 65) || '%')),
          NULL, 'no message repeats more than a short prefix of a huge argument');

-- Named cases from the review.
SELECT throws_ok($$SELECT bv.secret_set('', 'v')$$, '22023', 'invalid secret name ''''',
                 'bv.secret_set with an empty name: 22023, not 23514');
SELECT throws_ok($$SELECT bv.secret_set(repeat('n', 300), 'v')$$, '22023', NULL,
                 'bv.secret_set with a 300-character name: 22023');
SELECT throws_ok($$SELECT bv.api_key_create(repeat('o', 300), ARRAY['read'])$$, '22023', NULL,
                 'bv.api_key_create with a 300-character owner: 22023, not 23514');
SELECT throws_ok($$SELECT bv.api_key_create('o', ARRAY['read', NULL])$$, '22004', NULL,
                 'bv.api_key_create with a NULL scope: 22004');

-- Malformed request claims: 22023 with a hint, not 22P02.
SET LOCAL request.jwt.claims = '{"sub": "user-1", "scope": "read write"';
SELECT throws_ok($$SELECT bv.current_user_id()$$, '22023', 'request.jwt.claims is not valid JSON',
                 'bv.current_user_id() with malformed claims: 22023');
SELECT throws_ok($$SELECT bv.has_scope('read')$$, '22023', 'request.jwt.claims is not valid JSON',
                 'bv.has_scope() with malformed claims: 22023');
SET LOCAL request.jwt.claims = '{"sub": "user-1", "scope": "read write"}';
SELECT is(ARRAY[bv.current_user_id(), bv.has_scope('write')::text, bv.has_scope('wri')::text, bv.has_scope('')::text],
          ARRAY['user-1', 'true', 'false', 'false'], 'well-formed claims still work');
SET LOCAL request.jwt.claims = '';
SELECT is(ARRAY[bv.current_user_id(), bv.has_scope('read')::text], ARRAY[NULL, 'false'],
          'no claims: anonymous, no scope');

SELECT * FROM finish();
ROLLBACK;
