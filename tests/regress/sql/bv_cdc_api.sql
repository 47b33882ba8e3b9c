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
SELECT bv_cdc.add_sink('bad', 'webhook', '{"url": "https://x/", "secret": "s", "tls_cert_file": "/c.pem"}');
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
