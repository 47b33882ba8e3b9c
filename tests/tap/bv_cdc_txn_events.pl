# bv_cdc transaction-boundary events: a Kafka sink with the property
# bv.transaction_topic gets, on that topic, a BEGIN before a transaction's
# first change and an END at its commit with the number of changes per
# table (Debezium's shape), keyed by the transaction id; data events carry
# the same xid, so a consumer can buffer a transaction until its END.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;

my $node = BvTest::new_node('txn_events',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $mock = BvKafka::start_mock($node->basedir);

# The property is validated like any other.
my ($rc, $out, $err) = $node->psql('bitvelocity',
	qq{SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}", "bv.transaction_topic": "no spaces"}')});
like($err, qr/invalid Kafka sink property "bv.transaction_topic"/, 'a bad transaction topic is refused when set');
($rc, $out, $err) = $node->psql('bitvelocity',
	qq{SELECT bv_cdc.add_sink('bad', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}", "bv.nosuch": "x"}')});
like($err, qr/is not a bv_cdc property/, 'an unknown bv. property is refused');

$node->safe_psql(
	'bitvelocity', qq{
CREATE TABLE public.a (id int PRIMARY KEY, v text);
CREATE TABLE public.b (id int PRIMARY KEY, v text);
CREATE TABLE public.c (id int PRIMARY KEY);
SELECT bv_cdc.add_sink('main', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}", "bv.transaction_topic": "bv.transactions"}');
SELECT bv_cdc.add_route('public.a', 'main');
SELECT bv_cdc.add_route('public.b', 'main');
});
ok( $node->poll_query_until(
		'bitvelocity', "SELECT worker_state = 'streaming' FROM bv_cdc.stats WHERE sink = 'main'"),
	'streaming');

my $xid1 = $node->safe_psql(
	'bitvelocity', q{
BEGIN;
INSERT INTO public.a VALUES (1, 'x'), (2, 'y');
INSERT INTO public.b VALUES (1, 'z');
UPDATE public.a SET v = 'w' WHERE id = 1;
INSERT INTO public.c VALUES (1);
SELECT txid_current();
COMMIT;
});
# Not routed at all: no transaction events.
$node->safe_psql('bitvelocity', 'INSERT INTO public.c VALUES (2)');
my $xid2 = $node->safe_psql('bitvelocity', q{BEGIN; DELETE FROM public.b WHERE id = 1; SELECT txid_current(); COMMIT;});

# One transaction's events share a key, so a partition; order by xid across partitions.
my @tx = BvKafka::consume($mock, 'bv.transactions', 4);
@tx = sort { $a->{env}{id} <=> $b->{env}{id} || $a->{partition} <=> $b->{partition} || $a->{offset} <=> $b->{offset} } @tx;
is(scalar(@tx), 4, 'two BEGIN/END pairs, none for the transaction that touched only an unrouted table');
is(join(' ', map { "$_->{env}{status}:$_->{env}{id}" } @tx), "BEGIN:$xid1 END:$xid1 BEGIN:$xid2 END:$xid2",
	'BEGIN then END per transaction, with its xid');
is($tx[0]{key}, $xid1, 'keyed by the transaction id');
is($tx[1]{env}{event_count}, 4, 'END counts the events sent to the sink');
is_deeply([ sort { $a->{data_collection} cmp $b->{data_collection} } @{ $tx[1]{env}{data_collections} } ],
	[ { data_collection => 'public.a', event_count => 3 }, { data_collection => 'public.b', event_count => 1 } ],
	'and per table');
is($tx[0]{env}{event_count}, undef, 'BEGIN has no counts');
is($tx[3]{env}{event_count}, 1, 'the second transaction: one event');
my @a = BvKafka::consume($mock, 'bv.public.a', 3);
is(scalar(grep { $_->{env}{source}{xid} == $xid1 } @a), 3, 'data events carry the same xid');
ok($tx[1]{env}{ts_ms} > 0 && $tx[1]{env}{lsn} =~ m{^[0-9A-F]+/[0-9A-F]+$}, 'END has the commit time and LSN');

BvKafka::stop_mock($mock);
$node->stop;
done_testing();
