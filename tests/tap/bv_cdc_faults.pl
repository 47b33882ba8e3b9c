# bv_cdc faults of issue #27 §0, each checked where it used to go wrong:
#   1. a sink that cannot start (MQTT host that does not resolve, without
#      routes; MQTT TLS CA file gone, with routes) no longer stops the
#      others: Kafka streams on, the bad sinks are "failed" with their
#      reason, the slot is held for the routed one, which gets every change
#      once it is repaired (ADR 0032);
#   2. "unchanged" comes from the columns the change had, not from today's
#      catalog: ADD COLUMN then an update with an unchanged TOAST value, and
#      changes decoded after a later RENAME/ADD COLUMN (paused sink);
#   3. updates and deletes of a routed table whose replica identity was
#      removed after the route are quarantined, never dropped silently;
#   4. a hung broker (mosquitto frozen with SIGSTOP) is "stalled", and "up"
#      again when it acknowledges.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;
use BvMqtt;
use JSON::PP;

my $node = BvTest::new_node('faults',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\n"
	  . "bv_cdc.retry_max = 1000\nbv_cdc.stall_timeout = 1000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $dir = $node->basedir;
my $mock = BvKafka::start_mock($dir);

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

# ---- 1. one bad sink no longer stops every sink ----

my $ca = "$dir/broker-ca.pem";
open my $fh, '>', $ca or die "$ca: $!";
print $fh "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
close $fh;
chmod 0644, $ca;

sql(qq{
CREATE TABLE public.iso (id int PRIMARY KEY, v text);
SELECT bv_cdc.add_sink('main', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}"}');
SELECT bv_cdc.add_sink('badhost', 'mqtt', '{"host": "bv-cdc-test.invalid", "connect_timeout_ms": 500}');
SELECT bv_cdc.add_sink('badtls', 'mqtt', '{"host": "127.0.0.1", "port": 1, "tls_ca_file": "$ca", "connect_timeout_ms": 500}');
SELECT bv_cdc.add_route('public.iso', 'main');
SELECT bv_cdc.add_route('public.iso', 'badtls');
});
unlink $ca or die "unlink $ca: $!";
ok( !defined eval {
		sql(qq{SELECT bv_cdc.add_sink('again', 'mqtt', '{"host": "h", "tls_ca_file": "$ca"}')});
	},
	'a missing TLS CA file is refused when the sink is added');

ok(poll("SELECT state = 'failed' FROM bv_cdc.stats WHERE sink = 'badtls'"),
	'the MQTT sink whose CA file is gone is failed');
ok(poll("SELECT last_error LIKE '%could not read tls_ca_file%' FROM bv_cdc.stats WHERE sink = 'badtls'"),
	'with the reason, on its own retries');
ok(poll("SELECT state = 'failed' FROM bv_cdc.stats WHERE sink = 'badhost'"),
	'the MQTT sink whose host does not resolve (no routes) is failed');
ok(poll("SELECT state = 'up' AND worker_state = 'streaming' FROM bv_cdc.stats WHERE sink = 'main'"),
	'the Kafka sink is up and the worker streams');

sql("INSERT INTO public.iso VALUES (1, 'one')");
my $after_first = sql('SELECT pg_current_wal_lsn()');
sql("INSERT INTO public.iso SELECT i, 'v' || i FROM generate_series(2, 5) i");
my $end = sql('SELECT pg_current_wal_lsn()');
my @iso = BvKafka::consume($mock, 'bv.public.iso', 5);
is(scalar @iso, 5, 'Kafka gets every change while two MQTT sinks cannot start');
ok(poll("SELECT acked_lsn >= '$after_first' FROM bv_cdc.stats WHERE sink = 'main'"),
	'Kafka acknowledged them');
# Heartbeats would have moved an unheld slot past $end by now.
ok(poll("SELECT count(*) > 0 FROM bv_cdc.stats WHERE sink = 'main' AND last_heartbeat > now() - interval '1 second'"),
	'heartbeats go on');
ok(sql("SELECT confirmed_flush_lsn < '$after_first' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'") eq 't',
	'the slot is held before the first change the failed sink has not got');

# Repair it: a real broker, no TLS.  The held changes are replayed to it.
my $broker = BvMqtt::start_broker($dir);
my $sub = BvMqtt::subscribe($broker, 'bv/#', qos => 1, id => 'iso', persistent => 0);
ok(BvMqtt::wait_ready($sub), 'an MQTT subscriber is ready');
sql(qq{SELECT bv_cdc.alter_sink('badtls', '{"host": "127.0.0.1", "port": $broker->{port}, "keepalive_s": 60}')});
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'badtls'"), 'the repaired sink is up');
my @got = BvMqtt::consume($sub, 5);
is(join(',', sort { $a <=> $b } map { $_->{env}{after}{id} } grep { $_->{env} && $_->{env}{op} eq 'c' } @got),
	'1,2,3,4,5', 'the repaired sink got every change made while it could not start');
ok(poll("SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'and the slot moves on');
is(sql("SELECT state FROM bv_cdc.stats WHERE sink = 'badhost'"), 'failed',
	'the sink without routes stays failed, harmlessly');

# ---- 2. "unchanged" from the change's own columns ----

my $big = sql("SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i");
sql(qq{
CREATE TABLE public.docs (id int PRIMARY KEY, big text, note text);
ALTER TABLE public.docs ALTER big SET STORAGE EXTERNAL;
SELECT bv_cdc.add_route('public.docs', 'main');
});
sql("INSERT INTO public.docs VALUES (1, '$big', 'n0')");
sql("UPDATE public.docs SET note = 'n1' WHERE id = 1");
BvKafka::consume($mock, 'bv.public.docs', 2);
# The worker knows the table's columns now; add one and update at once.
sql("ALTER TABLE public.docs ADD COLUMN extra int; UPDATE public.docs SET note = 'n2' WHERE id = 1;");

# Paused, changes wait in the slot while the table changes shape.
sql("SELECT bv_cdc.pause('main')");
ok(poll("SELECT state = 'paused' FROM bv_cdc.stats WHERE sink = 'main'"), 'main is paused');
sql("UPDATE public.docs SET note = 'n3' WHERE id = 1");
sql("ALTER TABLE public.docs RENAME note TO remark");
sql("ALTER TABLE public.docs ADD COLUMN later text");
sql("UPDATE public.docs SET remark = 'n4' WHERE id = 1");
sql("SELECT bv_cdc.resume('main')");
# An update in a data-modifying CTE (the statement is a SELECT).
sql("WITH u AS (UPDATE public.docs SET remark = 'n5' WHERE id = 1 RETURNING 1) SELECT count(*) FROM u");

my @docs = BvKafka::in_commit_order(BvKafka::consume($mock, 'bv.public.docs', 6));
my $json = JSON::PP->new->canonical;
sub shape
{
	my ($e) = @_;
	return join(',', sort keys %{ $e->{after} }) . ' unchanged=' . $json->encode($e->{unchanged});
}
is(scalar @docs, 6, 'six events on bv.public.docs');
is(shape($docs[1]{env}), 'id,note unchanged=["big"]', 'update: the unchanged TOAST column is listed');
is(shape($docs[2]{env}), 'extra,id,note unchanged=["big"]',
	'update right after ADD COLUMN: the unchanged TOAST column is still listed');
is(shape($docs[3]{env}), 'extra,id,note unchanged=["big"]',
	'update decoded after a later RENAME and ADD COLUMN: no column that did not exist, none under its new name');
is(shape($docs[4]{env}), 'extra,id,later,remark unchanged=["big"]',
	'update after the DDL: the new shape');
is(shape($docs[5]{env}), 'extra,id,later,remark unchanged=["big"]',
	'update in a data-modifying CTE: the unchanged TOAST column is listed');

# ---- 3. no replica identity: quarantined, never silent ----

sql(qq{
CREATE TABLE public.lateid (id int PRIMARY KEY, v text);
CREATE TABLE public.unrouted (a int, b text);
SELECT bv_cdc.add_route('public.lateid', 'main');
INSERT INTO public.lateid VALUES (1, 'a'), (2, 'b');
INSERT INTO public.unrouted VALUES (1, 'x');
});
sql("ALTER TABLE public.lateid REPLICA IDENTITY NOTHING");
sql("UPDATE public.lateid SET v = 'changed' WHERE id = 1");
sql("DELETE FROM public.lateid WHERE id = 2");
sql("UPDATE public.unrouted SET b = 'y'");
sql("INSERT INTO public.lateid VALUES (3, 'after')");
BvKafka::consume($mock, 'bv.public.lateid', 3);
ok(poll("SELECT count(*) = 2 FROM bv_cdc.quarantine WHERE reason LIKE '%public.lateid%'"),
	'the update and the delete wal2json could not decode are quarantined');
is(sql("SELECT string_agg(split_part(reason, ' not published', 1), ' | ' ORDER BY id) FROM bv_cdc.quarantine WHERE reason LIKE '%public.lateid%'"),
	'UPDATE of 1 row(s) of public.lateid | DELETE of 1 row(s) of public.lateid',
	'with the statement kind, row count and table');
is(sql("SELECT count(*) FROM bv_cdc.quarantine WHERE reason LIKE '%unrouted%'"), '0',
	'an unrouted table is none of bv_cdc\'s business');
sql("WITH d AS (DELETE FROM public.lateid WHERE id = 1 RETURNING *) SELECT count(*) FROM d");
ok(poll("SELECT count(*) = 1 FROM bv_cdc.quarantine WHERE reason LIKE 'DELETE of an unknown number of row(s) of public.lateid%'"),
	'a delete in a data-modifying CTE is quarantined too');

# ---- 4. a hung broker is stalled, not up ----

ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'badtls'"), 'the MQTT sink is up');
kill 'STOP', $broker->{pid};
sql("INSERT INTO public.iso SELECT i, 'stall' FROM generate_series(100, 120) i");
ok(poll("SELECT state = 'stalled' AND inflight > 0 FROM bv_cdc.stats WHERE sink = 'badtls'"),
	'a broker that acknowledges nothing for bv_cdc.stall_timeout is stalled');
is(sql("SELECT state FROM bv_cdc.stats WHERE sink = 'main'"), 'up', 'the other sink is not');
kill 'CONT', $broker->{pid};
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'badtls'"), 'up again once it acknowledges');
my @after = BvMqtt::consume($sub, 5 + 21);
is(scalar(grep { $_->{env} && ($_->{env}{after}{v} // '') eq 'stall' } @after) >= 21 ? 1 : 0, 1,
	'every change made while it was frozen arrives');

# ---- 5. (#17 item 14) a wildcard route publishes only what its role may SELECT ----

sql(q{
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO bv_admin;
CREATE TABLE app.open (id int PRIMARY KEY);
GRANT SELECT ON app.open TO bv_admin;
SET ROLE bv_admin;
SELECT bv_cdc.add_route('app.*', 'main');
RESET ROLE;
CREATE TABLE app.closed (id int PRIMARY KEY);
});
sql("INSERT INTO app.closed VALUES (1)");
sql("INSERT INTO app.open VALUES (1)");
is(scalar(BvKafka::consume($mock, 'bv.app.open', 1)), 1, 'a table the route\'s role may SELECT is published');
is(scalar(BvKafka::read_topic($mock, 'bv.app.closed')), 0,
	'a table created later under the pattern, which that role cannot SELECT, is not');
ok($node->log_contains('does not publish app.closed through route'), 'and the worker says why');

BvMqtt::stop_subscriber($sub);
BvMqtt::stop_broker($broker);
BvKafka::stop_mock($mock);
$node->stop;
done_testing();
