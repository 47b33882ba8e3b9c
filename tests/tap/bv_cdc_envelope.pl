# bv_cdc: exact envelopes, keys and headers for inserts, updates, deletes,
# truncates, a primary key change, unchanged TOAST values, NULLs and the
# common types, as a Kafka consumer (kcat) sees them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;
use JSON::PP;

my $node = BvTest::new_node('envelope',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\n");
my $mock = BvKafka::start_mock($node->basedir);

# Preloaded everywhere: without the extension the worker waits, harmlessly.
$node->safe_psql('postgres', 'CREATE DATABASE bitvelocity');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'bv_cdc'"),
	'the worker runs before the extension exists');
ok($node->log_contains('bv_cdc is waiting: extension "bv_cdc" is not installed'),
	'it says once that it waits for the extension');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots"),
	'0', 'and creates no slot meanwhile');

$node->safe_psql('bitvelocity', qq{CREATE EXTENSION "$_" CASCADE}) for ('pg_cron', BvTest::extensions());
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');

$node->safe_psql(
	'bitvelocity', qq{
CREATE TABLE public.types (
    id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric(20,5), f8 float8,
    b boolean, t text, ts timestamptz, d date, j jsonb, u uuid, arr int[],
    by bytea, big text);
ALTER TABLE public.types ALTER big SET STORAGE EXTERNAL;
CREATE TABLE public.full_ri (id int PRIMARY KEY, v text);
ALTER TABLE public.full_ri REPLICA IDENTITY FULL;
SELECT bv_cdc.add_sink('main', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}"}');
SELECT bv_cdc.add_route('public.*', 'main');
});

ok( $node->poll_query_until(
		'bitvelocity', "SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'main'"),
	'the worker streams to the sink once the configuration is committed');
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'bv_cdc' AND plugin = 'wal2json'"),
	'the worker created its wal2json slot');

my $big = $node->safe_psql('bitvelocity',
	"SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i");
my $tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

$node->safe_psql(
	'bitvelocity', qq{
INSERT INTO public.types VALUES
  (1, 32767, 9223372036854775807, 123456789012345.12345, 1.5, true, 'tab\there "q"',
   '2026-01-02 03:04:05.678+00', '2026-01-02', '{"a": [1, 2]}',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}', '\\x01ff', '$big');
});
$node->safe_psql('bitvelocity', "UPDATE public.types SET t = 'changed' WHERE id = 1");
$node->safe_psql('bitvelocity', "UPDATE public.types SET id = 2 WHERE id = 1");
$node->safe_psql(
	'bitvelocity', qq{
BEGIN;
SET LOCAL bv.traceparent = '$tp';
DELETE FROM public.types WHERE id = 2;
COMMIT;
});
$node->safe_psql('bitvelocity', "INSERT INTO public.types (id) VALUES (3)");
$node->safe_psql('bitvelocity', "TRUNCATE public.types");
$node->safe_psql('bitvelocity', "BEGIN; INSERT INTO public.full_ri VALUES (1, 'old'); UPDATE public.full_ri SET v = 'new'; DELETE FROM public.full_ri; COMMIT");

my @msgs = BvKafka::in_commit_order(BvKafka::consume($mock, 'bv.public.types', 7));
is(scalar @msgs, 7, 'seven events on topic bv.public.types');

# source.version is the version of the bv_cdc library that wrote the envelope.
my $version = $node->safe_psql('bitvelocity', "SELECT default_version FROM pg_available_extensions WHERE name = 'bv_cdc'");
my $src = '"source":{"version":"' . $version . '","db":"bitvelocity","schema":"public","table":"types","lsn":"LSN","xid":XID,"ts_us":TS,"ts_ms":TS';
sub row
{
	my ($id, $t, $with_big) = @_;
	return qq{"id":$id,"i2":32767,"i8":9223372036854775807,"n":123456789012345.12345,"f8":1.5,"b":true,"t":$t,"ts":"2026-01-02 03:04:05.678+00","d":"2026-01-02","j":"{\\"a\\": [1, 2]}","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","arr":"{1,2,3}","by":"01ff"}
	  . ($with_big ? qq{,"big":"$big"} : '');
}
my $row1 = row(1, '"tab\\there \\"q\\""', 1);
my $row1_changed = row(1, '"changed"', 0);
my $row2 = row(2, '"changed"', 0);
my @expected = (
	qq({"op":"c",$src,"seq":1},"key":{"id":1},"before":null,"after":{$row1},"unchanged":[]}),
	qq({"op":"u",$src,"seq":1},"key":{"id":1},"before":null,"after":{$row1_changed},"unchanged":["big"]}),
	qq({"op":"d",$src,"seq":1},"key":{"id":1},"before":{"id":1},"after":null,"unchanged":[]}),
	qq({"op":"c",$src,"seq":1},"key":{"id":2},"before":null,"after":{$row2},"unchanged":["big"]}),
	qq({"op":"d",$src,"seq":1},"key":{"id":2},"before":{"id":2},"after":null,"unchanged":[]}),
	qq({"op":"c",$src,"seq":1},"key":{"id":3},"before":null,"after":{"id":3,"i2":null,"i8":null,"n":null,"f8":null,"b":null,"t":null,"ts":null,"d":null,"j":null,"u":null,"arr":null,"by":null,"big":null},"unchanged":[]}),
	qq({"op":"t",$src,"seq":1},"key":null,"before":null,"after":null,"unchanged":[]}),
);
my @names = (
	'insert with every common type',
	'update: unchanged TOAST column listed in "unchanged", absent from "after"',
	'primary key change: delete of the old key',
	'primary key change: create of the new key (unchanged TOAST after a key change)',
	'delete: the key as before image',
	'insert with NULLs',
	'truncate');
for my $i (0 .. $#expected)
{
	is(BvKafka::normalized($msgs[$i]{payload}), $expected[$i], "envelope: $names[$i]");
}

# Keys, partitions and headers.
is($msgs[0]{key}, '{"id":1}', 'message key is the primary key as JSON');
is($msgs[0]{partition}, $msgs[1]{partition}, "one row's changes share a partition");
is($msgs[0]{headers}{op}, 'c', 'header op');
is($msgs[0]{headers}{table}, 'public.types', 'header table');
is($msgs[0]{headers}{lsn}, $msgs[0]{env}{source}{lsn}, 'header lsn = source.lsn');
is($msgs[0]{headers}{xid}, $msgs[0]{env}{source}{xid}, 'header xid = source.xid');
ok(!exists $msgs[0]{headers}{traceparent}, 'no traceparent header without a trace context');
is($msgs[4]{headers}{traceparent}, $tp, "the writer's traceparent travels in the header");
is($msgs[6]{key}, '', 'truncate has no key');

# The commit timestamp is the real one.
my $now_ms = $node->safe_psql('bitvelocity', "SELECT (extract(epoch FROM now()) * 1000)::bigint");
ok(abs($now_ms - $msgs[0]{env}{source}{ts_ms}) < 120_000, 'source.ts_ms is the commit time');
ok($msgs[1]{env}{source}{xid} > $msgs[0]{env}{source}{xid}, 'xids grow with commits');
cmp_ok(BvKafka::lsn_num($msgs[1]{env}{source}{lsn}), '>', BvKafka::lsn_num($msgs[0]{env}{source}{lsn}), 'LSNs grow with commits');

# REPLICA IDENTITY FULL: before images of updates and deletes.
my @full = BvKafka::in_commit_order(BvKafka::consume($mock, 'bv.public.full_ri', 3));
is(join(' | ', map { $_->{env}{op} . ' ' . JSON::PP->new->canonical->encode([ $_->{env}{before}, $_->{env}{after} ]) } @full),
	'c [null,{"id":1,"v":"old"}] | u [{"id":1,"v":"old"},{"id":1,"v":"new"}] | d [{"id":1,"v":"new"},null]',
	'replica identity full: before images, positions 1-3 in one transaction');
is(join(',', map { $_->{env}{source}{seq} } @full), '1,2,3', 'seq is the position in the transaction');

# The slot advances past what Kafka acknowledged, and the stats say so.
my $lsn = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');
ok( $node->poll_query_until(
		'bitvelocity', "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'the slot confirms everything once acknowledged (heartbeat advances it past idle WAL)');
is($node->safe_psql('bitvelocity', "SELECT events, errors, inflight, lag_ms FROM bv_cdc.stats"),
	'10|0|0|0', 'stats: 10 events acknowledged, no errors, nothing in flight');
like($node->safe_psql('postgres', "SELECT wait_event_type FROM pg_stat_activity WHERE backend_type = 'bv_cdc'"),
	qr/^(Extension|)$/, 'the worker waits on an extension wait event');

BvKafka::stop_mock($mock);
$node->stop;
done_testing();
