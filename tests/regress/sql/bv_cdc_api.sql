-- bv_cdc: the configuration API validates everything when it is set.
\set VERBOSITY default

-- a valid sink and route
SELECT bv_cdc.add_sink('regress', 'kafka', '{"bootstrap.servers": "127.0.0.1:9", "compression.type": "lz4", "linger.ms": 10}');
SELECT name, kind, config, paused FROM bv_cdc.sinks;
SELECT bv_cdc.add_route('public.orders', 'regress') > 0 AS added;
SELECT bv_cdc.add_route('app.*', 'regress', 'cdc.{schema}-{table}', include_columns => '{id,total}', operations => '{c,u}') > 0 AS added;
SELECT table_pattern, sink, topic_template, include_columns, exclude_columns, operations
  FROM bv_cdc.routes ORDER BY id;

-- sinks: unknown kind, unknown or invalid librdkafka properties, guarantees
SELECT bv_cdc.add_sink('bad', 'rabbitmq', '{"bootstrap.servers": "x:1"}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "x:1", "no.such.property": "1"}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "x:1", "compression.type": "zip"}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "x:1", "linger.ms": -5}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "x:1", "enable.idempotence": false}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "x:1", "acks": "1"}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"compression.type": "lz4"}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": {"nested": 1}}');
SELECT bv_cdc.add_sink('bad', 'kafka', '[1, 2]');
SELECT bv_cdc.add_sink('Bad Name', 'kafka', '{"bootstrap.servers": "x:1"}');
SELECT bv_cdc.add_sink('regress', 'kafka', '{"bootstrap.servers": "x:1"}');
SELECT bv_cdc.alter_sink('regress', '{"bootstrap.servers": "x:1", "batch.size": "lots"}');
SELECT bv_cdc.alter_sink('missing', '{"bootstrap.servers": "x:1"}');
SELECT count(*) AS sinks FROM bv_cdc.sinks;

-- routes: pattern, sink, template, columns, operations
SELECT bv_cdc.add_route('orders', 'regress');
SELECT bv_cdc.add_route('public.orders', 'nosuch');
SELECT bv_cdc.add_route('public.x', 'regress', 'bad topic {schema}');
SELECT bv_cdc.add_route('public.x', 'regress', 'bv.{db}.{table}');
SELECT bv_cdc.add_route('public.x', 'regress', include_columns => '{a}', exclude_columns => '{b}');
SELECT bv_cdc.add_route('public.x', 'regress', operations => '{c,x}');
SELECT bv_cdc.add_route('public.x', 'regress', operations => '{}');
SELECT bv_cdc.add_route('public.orders', 'regress');
SELECT bv_cdc.drop_route(-1);

-- MQTT and webhook sinks (0.2.0): properties checked when set, secrets by name
SELECT bv_cdc.add_sink('mq', 'mqtt', '{"host": "127.0.0.1", "port": 1883, "max_inflight": 500}');
SELECT bv_cdc.add_sink('bad', 'mqtt', '{"port": 1883}');
SELECT bv_cdc.add_sink('bad', 'mqtt', '{"host": "h", "port": 70000}');
SELECT bv_cdc.add_sink('bad', 'mqtt', '{"host": "h", "qos": 1}');
SELECT bv_cdc.add_sink('bad', 'mqtt', '{"host": "h", "username": "u", "password_secret": "mqtt:nosuch"}');
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "ftp://x/", "secret": "hook:regress"}');
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "https://x/"}');
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "https://x/", "secret": "hook:nosuch"}');
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "https://x/", "secret": "s", "timeout_ms": 0}');
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "https://x/", "secret": "s", "tls_cert_file": "/dev/null"}');
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "https://x/", "secret": "s", "follow_redirects": true}');
SELECT bv_cdc.add_route('public.orders', 'mq') > 0 AS added;
SELECT bv_cdc.add_route('public.lines', 'mq', 'shop/{table}/{key}', options => '{"qos": 2, "retain": true}') > 0 AS added;
SELECT bv_cdc.add_route('public.x', 'mq', 'bv/+/{table}');
SELECT bv_cdc.add_route('public.x', 'mq', options => '{"qos": 3}');
SELECT bv_cdc.add_route('public.x', 'mq', options => '{"retain": "yes"}');
SELECT bv_cdc.add_route('public.x', 'mq', options => '{"on_dead_letter": "hold"}');
SELECT bv_cdc.add_route('public.x', 'regress', options => '{"qos": 1}');
SELECT bv_cdc.add_route('public.x', 'regress', options => '[]');
SELECT table_pattern, sink, topic_template, options FROM bv_cdc.routes WHERE sink = 'mq' ORDER BY id;
SELECT bv_cdc.replay_dead_letters('mq');
SELECT bv_cdc.drop_sink('mq');

-- signatures for receivers written in SQL (the reference HMAC from pgcrypto)
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT bv_cdc.verify_signature('s3cret', 't=' || extract(epoch FROM now())::bigint || ',v1=' ||
       encode(hmac(extract(epoch FROM now())::bigint || '.{"a":1}', 's3cret', 'sha256'), 'hex'),
       '{"a":1}') AS good;
SELECT bv_cdc.verify_signature('s3cret', 't=' || extract(epoch FROM now())::bigint || ',v1=' ||
       encode(hmac(extract(epoch FROM now())::bigint || '.{"a":1}', 's3cret', 'sha256'), 'hex'),
       '{"a":2}') AS changed_body;
SELECT bv_cdc.verify_signature('other', 't=' || extract(epoch FROM now())::bigint || ',v1=' ||
       encode(hmac(extract(epoch FROM now())::bigint || '.{"a":1}', 's3cret', 'sha256'), 'hex'),
       '{"a":1}') AS wrong_secret;
SELECT bv_cdc.verify_signature('s3cret', 't=1000,v1=' || encode(hmac('1000.{"a":1}', 's3cret', 'sha256'), 'hex'),
       '{"a":1}') AS too_old;
SELECT bv_cdc.verify_signature('s3cret', NULL, '{"a":1}') AS no_header;
SELECT bv_cdc.verify_signature('s3cret', 'garbage', '{"a":1}') AS garbage;
SELECT bv_cdc.verify_signature('s3cret', 't=1,v1=00', 'x', -1);


-- issue #27: property values of the wrong JSON type, absurd sizes, missing files
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": true}');
SELECT bv_cdc.add_sink('bad', 'mqtt', '{"host": -1}');
SELECT bv_cdc.add_sink('bad', 'mqtt', '{"host": "h", "port": "1883"}');
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "https://x/", "secret": "s", "timeout_ms": 1.5}');
SELECT bv_cdc.add_sink('bad', 'mqtt', jsonb_build_object('host', repeat('h', 100000)));
SELECT bv_cdc.add_sink('bad', 'kafka', jsonb_build_object('bootstrap.servers', 'x:1', 'client.rack', repeat('x', 5000)));
SELECT bv_cdc.add_sink('bad', 'kafka', (SELECT jsonb_object_agg('p' || i, 'v') FROM generate_series(1, 101) i));
SELECT bv_cdc.add_sink('bad', 'kafka', jsonb_build_object(repeat('k', 200), 'v'));
SELECT bv_cdc.add_sink('bad', 'mqtt', '{"host": "h", "tls_ca_file": "/nonexistent/ca.pem"}');
SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "x:1", "linger.ms": 99999999999999999999}');
SELECT bv_cdc.add_sink(repeat('x', 100000), 'kafka', '{"bootstrap.servers": "x:1"}');

-- issue #27: column lists without NULL elements, one dimension
SELECT bv_cdc.add_route('public.x', 'regress', include_columns => '{a,NULL}');
SELECT bv_cdc.add_route('public.x', 'regress', include_columns => '{{a},{b}}');
SELECT bv_cdc.add_route('public.x', 'regress', exclude_columns => ARRAY['']);
SELECT bv_cdc.add_route('public.x', 'regress', operations => '{c,NULL}');
SELECT bv_cdc.add_route(repeat('x', 10000) || '.y', 'regress');

-- issue #27: tables without replica identity: updates and deletes would be lost
CREATE TABLE public.nokey (a int, b text);
SELECT bv_cdc.add_route('public.nokey', 'regress');
SELECT bv_cdc.add_route('public.no*', 'regress', operations => '{d}');
SELECT bv_cdc.add_route('public.nokey', 'regress', operations => '{c,t}') > 0 AS inserts_only;
ALTER TABLE public.nokey REPLICA IDENTITY FULL;
SELECT bv_cdc.add_route('public.nokey', 'regress', 'nokey_full') > 0 AS with_full_identity;

-- issue #17 item 14: only tables the caller may SELECT; never catalogs or internals
SELECT bv_cdc.add_route('pg_catalog.pg_authid', 'regress');
SELECT bv_cdc.add_route('cron.job', 'regress');
SELECT bv_cdc.add_route('bv.secrets', 'regress');
SELECT bv_cdc.add_route('bv_audit.*', 'regress');
SELECT bv_cdc.snapshot('pg_catalog.pg_authid');
SELECT bv_cdc.snapshot('pg_catalog.pg_class');
SELECT bv_cdc.snapshot('bv.secrets');
SELECT bv_cdc.snapshot(c.reltoastrelid::regclass) IS NULL FROM pg_class c WHERE c.oid = 'public.nokey'::regclass;
SELECT bv_cdc.snapshot('bv_cdc.sinks_pkey');
CREATE TABLE public.hidden_t (id int PRIMARY KEY);
CREATE TABLE public.shown_t (id int PRIMARY KEY);
REVOKE ALL ON public.hidden_t FROM PUBLIC;
GRANT SELECT ON public.shown_t TO bv_admin;
CREATE TABLE public.rls_t (id int PRIMARY KEY, owner text);
ALTER TABLE public.rls_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON public.rls_t USING (owner = current_user);
GRANT SELECT ON public.rls_t TO bv_admin;
SET ROLE bv_admin;
SELECT bv_cdc.add_route('public.rls_t', 'regress');
SELECT bv_cdc.snapshot('public.rls_t');
SELECT bv_cdc.add_route('public.hidden_t', 'regress');
SELECT bv_cdc.add_route('public.*_t', 'regress');
SELECT bv_cdc.snapshot('public.hidden_t');
SELECT bv_cdc.add_route('public.shown_t', 'regress') > 0 AS added;
SELECT bv_cdc.snapshot('public.shown_t') > 0 AS requested;
RESET ROLE;
SELECT table_pattern, created_by FROM bv_cdc.routes WHERE table_pattern = 'public.shown_t';
DELETE FROM bv_cdc.snapshots;

-- issue #17 item 15: every function, NULL in each argument: no XX000, 42601 or
-- raw 23xxx; the calls are rolled back whatever they did
CREATE TEMP TABLE null_calls (call text, sqlstate text);
DO $$
DECLARE
    f record;
    i int;
    args text[];
    st text;
    sample text;
BEGIN
    FOR f IN SELECT p.oid, p.oid::regprocedure::text AS sig, p.proname, string_to_array(p.proargtypes::text, ' ')::oid[] AS types
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'bv_cdc' AND p.prokind = 'f' AND p.pronargs > 0 LOOP
        FOR i IN 0 .. array_length(f.types, 1) LOOP
            args := '{}';
            FOR j IN 1 .. array_length(f.types, 1) LOOP
                sample := CASE f.types[j]
                    WHEN 'text'::regtype THEN quote_literal('regress')
                    WHEN 'jsonb'::regtype THEN quote_literal('{}')
                    WHEN 'integer'::regtype THEN '1'
                    WHEN 'bigint'::regtype THEN '1'
                    WHEN 'boolean'::regtype THEN 'true'
                    WHEN 'regclass'::regtype THEN quote_literal('public.shown_t')
                    ELSE quote_literal('{}') END;
                args := args || CASE WHEN j = i OR i = 0 THEN 'NULL::' || format_type(f.types[j], NULL)
                                     ELSE sample || '::' || format_type(f.types[j], NULL) END;
            END LOOP;
            BEGIN
                EXECUTE format('SELECT bv_cdc.%I(%s)', f.proname, array_to_string(args, ', '));
                RAISE EXCEPTION 'rolled back' USING ERRCODE = 'P0B01';
            EXCEPTION WHEN OTHERS THEN
                st := SQLSTATE;
            END;
            INSERT INTO null_calls VALUES (format('bv_cdc.%s(%s)', f.proname, array_to_string(args, ', ')), st);
        END LOOP;
    END LOOP;
END
$$;
SELECT count(*) > 50 AS many_calls FROM null_calls;
SELECT call, sqlstate FROM null_calls
 WHERE sqlstate IN ('XX000', '42601') OR sqlstate LIKE '23%' ORDER BY call;
SELECT call, sqlstate FROM null_calls
 WHERE sqlstate NOT IN ('P0B01', '22004', '22023', '42704', '42501', '55000', '42809', '0A000', '39P01')
   AND sqlstate NOT LIKE '22%' ORDER BY call;

-- pause, resume, drop
SELECT bv_cdc.pause('regress');
SELECT paused FROM bv_cdc.sinks WHERE name = 'regress';
SELECT bv_cdc.resume('regress');
SELECT paused FROM bv_cdc.sinks WHERE name = 'regress';
SELECT bv_cdc.pause('nosuch');
SELECT bv_cdc.drop_sink('nosuch');

-- the trigger function is only a trigger
SELECT bv_cdc.config_changed();

-- privileges: operators only
SET ROLE bv_service;
SELECT bv_cdc.add_sink('x', 'kafka', '{"bootstrap.servers": "x:1"}');
RESET ROLE;

-- every object is documented
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'bv_cdc' AND c.relkind IN ('r', 'v') AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'bv_cdc' AND obj_description(p.oid, 'pg_proc') IS NULL;

-- dropping the sink drops its routes
SELECT bv_cdc.drop_sink('regress');
SELECT count(*) AS routes FROM bv_cdc.routes;

-- #27 §1: the property tables, as docs/bv_cdc.md's generated table shows them
-- (paste these rows between its markers when they change)
SELECT format('| %s | `%s` | %s | %s | %s | %s |', kind, name, type,
              coalesce(default_value, '-'), coalesce(min || '..' || max, ''),
              CASE WHEN secret THEN 'names a secret' ELSE '' END) AS row
  FROM bv_cdc.sink_properties();
