# bv_cdc routes and configuration changes: column include/exclude, operation
# filters, topic templates and patterns; routes added and dropped, sinks
# paused and resumed, all applied on commit without a restart; stats.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;

my $node = BvTest::new_node('routes',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $mock = BvKafka::start_mock($node->basedir);

$node->safe_psql(
	'bitvelocity', qq{
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, total int, secret text, note text);
CREATE TABLE app.order_lines (id int PRIMARY KEY, qty int);
CREATE TABLE app.users (id int PRIMARY KEY, email text, password text);
CREATE TABLE public.other (id int PRIMARY KEY);
SELECT bv_cdc.add_sink('main', 'kafka', '{"bootstrap.servers": "$mock->{bootstrap}", "compression.type": "lz4"}');
SELECT bv_cdc.add_route('app.order*', 'main', 'shop-{table}', include_columns => '{id,total}', operations => '{c,d}');
SELECT bv_cdc.add_route('app.users', 'main', 'bv.{schema}.{table}', exclude_columns => '{password}');
});
ok( $node->poll_query_until(
		'bitvelocity', "SELECT worker_state = 'streaming' FROM bv_cdc.stats WHERE sink = 'main'"),
	'streaming');
my $worker = $node->safe_psql('bitvelocity', 'SELECT pid FROM bv_cdc.worker()');

$node->safe_psql(
	'bitvelocity', q{
INSERT INTO app.orders VALUES (1, 100, 's3cret', 'n');
UPDATE app.orders SET total = 200 WHERE id = 1;
DELETE FROM app.orders WHERE id = 1;
INSERT INTO app.order_lines VALUES (7, 3);
INSERT INTO app.users VALUES (1, 'a@example.com', 'hash');
INSERT INTO public.other VALUES (1);
});

my @orders = BvKafka::in_commit_order(BvKafka::consume($mock, 'shop-orders', 2));
is(join(' ', map { $_->{env}{op} } @orders), 'c d', 'operations filter: c and d published, u not');
is(BvKafka::normalized($orders[0]{payload}) =~ s/"source":\{[^}]*\}/SRC/r,
	'{"op":"c",SRC,"key":{"id":1},"before":null,"after":{"id":1,"total":100},"unchanged":[]}',
	'include_columns: only id and total');
my @lines = BvKafka::consume($mock, 'shop-order_lines', 1);
is($lines[0]{env}{after}{qty}, undef, 'the pattern app.order* matches order_lines; its columns are filtered too');
is($lines[0]{env}{key}{id}, 7, 'and the key is complete');
my @users = BvKafka::consume($mock, 'bv.app.users', 1);
is(join(',', sort keys %{ $users[0]{env}{after} }), 'email,id', 'exclude_columns: no password');

# A route added later applies from its commit on, without a restart.
$node->safe_psql('bitvelocity', "INSERT INTO public.other VALUES (2)");
$node->safe_psql('bitvelocity', "SELECT bv_cdc.add_route('public.*', 'main', 'other')");
ok($node->poll_query_until('bitvelocity', "SELECT state = 'streaming' FROM bv_cdc.worker()"), 'reloaded');
$node->safe_psql('bitvelocity', "INSERT INTO public.other VALUES (3)");
my @other = BvKafka::consume($mock, 'other', 1);
is(join(',', map { $_->{env}{key}{id} } @other), '3', 'a new route applies to changes after its commit');
is($node->safe_psql('bitvelocity', 'SELECT pid FROM bv_cdc.worker()'), $worker, 'without restarting the worker');
ok($node->log_contains('bv_cdc applied a configuration change'), 'the reload is logged');

# A route change that rolls back changes nothing.
$node->safe_psql('bitvelocity', "BEGIN; SELECT bv_cdc.drop_sink('main'); ROLLBACK;");
is($node->safe_psql('bitvelocity', "SELECT count(*) FROM bv_cdc.routes"), '3', 'rolled back');

# Pause: the worker stops reading; nothing is lost; resume catches up.
$node->safe_psql('bitvelocity', "SELECT bv_cdc.pause('main')");
ok($node->poll_query_until('bitvelocity', "SELECT state = 'paused' FROM bv_cdc.worker()"), 'paused on commit');
ok($node->poll_query_until('bitvelocity', "SELECT state = 'paused' FROM bv_cdc.stats WHERE sink = 'main'"),
	'stats say paused');
$node->safe_psql('bitvelocity', "INSERT INTO public.other SELECT generate_series(10, 19)");
my $lsn = $node->safe_psql('bitvelocity', 'SELECT pg_current_wal_lsn()');
sleep(2);    # give a paused worker the chance to misbehave
is( $node->safe_psql('bitvelocity', "SELECT confirmed_flush_lsn < '$lsn' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	't', 'while paused the slot keeps the changes');
cmp_ok(scalar(BvKafka::read_topic($mock, 'other')), '==', 1, 'and nothing is produced');
cmp_ok($node->safe_psql('bitvelocity', 'SELECT lag_bytes FROM bv_cdc.stats'), '>', 0, 'lag_bytes shows the retained WAL');
$node->safe_psql('bitvelocity', "SELECT bv_cdc.resume('main')");
@other = BvKafka::consume($mock, 'other', 11);
is(scalar(@other), 11, 'resumed: the paused changes arrive');
ok( $node->poll_query_until(
		'bitvelocity', "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	'and the slot advances');

# Altering the sink replaces its producer; dropping it stops its routes.
$node->safe_psql('bitvelocity',
	"SELECT bv_cdc.alter_sink('main', '{\"bootstrap.servers\": \"$mock->{bootstrap}\", \"linger.ms\": 1}')");
$node->safe_psql('bitvelocity', "INSERT INTO public.other VALUES (100)");
@other = BvKafka::consume($mock, 'other', 12);
is(scalar(@other), 12, 'after alter_sink changes still flow');
is($node->safe_psql('bitvelocity', "SELECT events >= 16 AND errors = 0 AND bytes > 0 FROM bv_cdc.stats WHERE sink = 'main'"),
	't', 'stats count acknowledged events and bytes');

BvKafka::stop_mock($mock);
$node->stop;
done_testing();
