# bv_cdc MQTT sinks: envelopes on bv/<schema>/<table>/<key> at QoS 1, the
# qos 0/2 and retain route options, topic templates, and mosquitto stopped
# or killed mid-stream and restarted: every committed row arrives at least
# once, each key's changes in order.  See tests/tools/BvMqtt.pm for why the
# subscriber has a persistent session and the broker persists its state.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;

my $node = BvTest::new_node('mqtt',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\nbv_cdc.retry_max = 2000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $dir = $node->basedir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $b = BvMqtt::start_broker($dir);
# Subscribed at QoS 2, it sees each message at the QoS it was published with.
my $all = BvMqtt::subscribe($b, 'bv/#', qos => 2, id => 'all', persistent => 0, more_topics => ['custom/#']);
ok(BvMqtt::wait_ready($all), 'a subscriber is ready');

my $keys = 20;
sql(qq{
CREATE TABLE public.kv (k int PRIMARY KEY, v int NOT NULL);
CREATE TABLE public.ck (a text, b int, note text, PRIMARY KEY (a, b));
CREATE TABLE public.q0 (k int PRIMARY KEY, v int);
CREATE TABLE public.q2 (k int PRIMARY KEY, v int);
CREATE TABLE public.ret (k int PRIMARY KEY, v int);
CREATE TABLE public.tpl (k int PRIMARY KEY, v int);
CREATE PROCEDURE public.work(n int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n LOOP
        UPDATE public.kv SET v = v + 1 WHERE k = i % $keys;
        COMMIT;
        PERFORM pg_sleep(0.0005);    -- a steady stream: commits go on during the kill
    END LOOP;
END \$\$;
SELECT bv_cdc.add_sink('mq', 'mqtt', '{"host": "127.0.0.1", "port": $b->{port}, "keepalive_s": 5}');
SELECT bv_cdc.add_route('public.kv', 'mq');
SELECT bv_cdc.add_route('public.ck', 'mq');
SELECT bv_cdc.add_route('public.q0', 'mq', options => '{"qos": 0}');
SELECT bv_cdc.add_route('public.q2', 'mq', options => '{"qos": 2}');
SELECT bv_cdc.add_route('public.ret', 'mq', options => '{"retain": true}');
SELECT bv_cdc.add_route('public.tpl', 'mq', 'custom/{schema}/{table}');
});
ok(poll("SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'mq'"),
	'the worker streams to the MQTT sink');

sub of_topic { my $re = shift; return grep { $_->{topic} =~ $re } @_; }

# ---- 1. the envelope, on bv/<schema>/<table>/<key>, QoS 1 ----
sql("INSERT INTO public.kv VALUES (1, 0)");
sql("UPDATE public.kv SET v = 1 WHERE k = 1");
sql("DELETE FROM public.kv WHERE k = 1");
BvMqtt::wait_until(sub { of_topic(qr{^bv/public/kv/}, BvMqtt::messages($all)) >= 3 });
my @m = of_topic(qr{^bv/public/kv/}, BvMqtt::messages($all));
is(join(' ', map { $_->{topic} } @m), 'bv/public/kv/1 bv/public/kv/1 bv/public/kv/1', 'topic bv/<schema>/<table>/<key>');
is(join(',', map { $_->{qos} } @m), '1,1,1', 'published at QoS 1 by default');
is(join(',', map { $_->{retain} } @m), '0,0,0', 'not retained by default');
is(join(',', map { $_->{env}{op} } @m), 'c,u,d', 'the payload is the envelope: c, u, d in commit order');
is_deeply($m[0]{env}{key}, { k => 1 }, 'envelope key');
is_deeply($m[1]{env}{after}, { k => 1, v => 1 }, 'envelope after image');
is($m[0]{env}{source}{table}, 'kv', 'envelope source');
like($m[0]{payload}, qr/^\{"op":"c","source":\{"version":"[^"]+","db":"bitvelocity","schema":"public","table":"kv","lsn":"[0-9A-F]+\/[0-9A-F]+","xid":\d+,"ts_us":\d+,"ts_ms":\d+,"seq":1\},"key":\{"k":1\},"before":null,"after":\{"k":1,"v":0\},"unchanged":\[\]\}$/,
	'the same envelope as on Kafka, byte for byte');

# Composite keys: values joined with "/", and "/", "+", "#" percent-encoded.
sql("INSERT INTO public.ck VALUES ('x/y+z#w', 7, 'n'), ('plain', 8, 'n')");
BvMqtt::wait_until(sub { of_topic(qr{^bv/public/ck/}, BvMqtt::messages($all)) >= 2 });
is(join(' ', sort map { $_->{topic} } of_topic(qr{^bv/public/ck/}, BvMqtt::messages($all))),
	'bv/public/ck/plain/8 bv/public/ck/x%2Fy%2Bz%23w/7', 'composite key: joined with /, with / + # percent-encoded');

# ---- 2. qos 0 and 2, retain, a topic template ----
sql("INSERT INTO public.q0 VALUES (1, 0)");
sql("INSERT INTO public.q2 VALUES (1, 0)");
sql("INSERT INTO public.tpl VALUES (1, 0)");
BvMqtt::wait_until(sub { of_topic(qr{^(bv/public/q[02]/|custom/)}, BvMqtt::messages($all)) >= 3 });
my ($q0) = of_topic(qr{^bv/public/q0/1$}, BvMqtt::messages($all));
my ($q2) = of_topic(qr{^bv/public/q2/1$}, BvMqtt::messages($all));
my ($tpl) = of_topic(qr{^custom/}, BvMqtt::messages($all));
is($q0 && $q0->{qos}, 0, 'route option qos 0');
is($q2 && $q2->{qos}, 2, 'route option qos 2');
is($tpl && $tpl->{topic}, 'custom/public/tpl', 'topic template');

sql("INSERT INTO public.ret VALUES (1, 0)");
sql("UPDATE public.ret SET v = 1 WHERE k = 1");
BvMqtt::wait_until(sub { of_topic(qr{^bv/public/ret/1$}, BvMqtt::messages($all)) >= 2 });
my $r = BvMqtt::retained($b, 'bv/public/ret/1');
ok($r && $r->{retain}, 'route option retain: a new subscriber gets the retained message');
is($r && $r->{env}{after}{v}, 1, 'the last change of the key is retained');
is(BvMqtt::retained($b, 'bv/public/kv/1'), undef, 'routes without retain leave nothing retained');

BvMqtt::stop_subscriber($all);

# ---- 3. the broker stopped and killed mid-stream ----
# A persistent subscriber (QoS 1), saved in the broker's state before the
# first kill.
my $sub = BvMqtt::subscribe($b, 'bv/public/kv/#', qos => 1, id => 'ksub');
ok(BvMqtt::wait_ready($sub), 'persistent subscriber ready');
ok(BvMqtt::wait_persisted($b), 'its session is saved by the broker');
sql("INSERT INTO public.kv SELECT k, 0 FROM generate_series(0, $keys - 1) k");

sub events { return sql("SELECT events FROM bv_cdc.stats WHERE sink = 'mq'"); }

sub background_work
{
	my ($n) = @_;
	my ($in, $out, $err) = ('', '', '');
	return IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('bitvelocity'), '-c', "CALL public.work($n)" ],
		\$in, \$out, \$err);
}

# First occurrence of each (key, version) in arrival order; returns the
# number of distinct versions >= the floor of their key, and the keys whose
# versions did not arrive in order (or with a gap) above that floor.
sub check
{
	my ($floor) = @_;
	my (%seen, %order);
	for my $m (BvMqtt::messages($sub))
	{
		next unless $m->{env} && $m->{env}{after};
		my ($k, $v) = ($m->{env}{key}{k}, $m->{env}{after}{v});
		next if $v < ($floor->{$k} // 0) || $seen{"$k:$v"}++;
		push @{ $order{$k} }, $v;
	}
	my @bad = grep {
		my ($k, @v) = ($_, @{ $order{$_} });
		grep { $v[$_] != ($floor->{$k} // 0) + $_ } 0 .. $#v
	} sort { $a <=> $b } keys %order;
	return (scalar(keys %seen), "@bad");
}

sub versions_now
{
	return { map { split /\|/ } split /\n/, sql("SELECT k, v FROM public.kv") };
}

# Expected distinct versions at or above the floor, given the table now.
sub expected
{
	my ($floor) = @_;
	my $now = versions_now();
	my $n = 0;
	$n += $now->{$_} - ($floor->{$_} // 0) + 1 for keys %$now;
	return $n;
}

# 3a. SIGTERM mid-stream: the broker saves what it acknowledged, so every
# committed row must arrive (the worker replays what was not acknowledged).
my $before = events();
my $h = background_work(5000);
ok(poll("SELECT events > $before + 300 FROM bv_cdc.stats WHERE sink = 'mq'"), 'streaming the workload');
BvMqtt::kill_broker($b, 'TERM');
ok(poll("SELECT state = 'down' FROM bv_cdc.stats WHERE sink = 'mq'"), 'broker stopped mid-stream: the sink is down');
my $lsn_down = sql('SELECT pg_current_wal_lsn()');
is(sql("SELECT confirmed_flush_lsn < '$lsn_down' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	't', 'the slot keeps what the broker did not acknowledge');
BvMqtt::restart_broker($b);
$h->finish;
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'mq'"), 'the worker reconnects');
my $want = expected({});
BvMqtt::wait_until(sub { (check({}))[0] >= $want });
my ($got, $bad) = check({});
is($got, $want, "stop mid-stream: every committed row delivered at least once ($want)");
is($bad, '', 'stop mid-stream: each key in order, no gap');

# 3b. kill -9 mid-stream.  mosquitto may lose what it acknowledged but had
# not forwarded yet (it does not persist before PUBACK); what the worker
# promises is checked exactly: every row committed after the kill arrives.
$before = events();
$h = background_work(5000);
ok(poll("SELECT events > $before + 300 FROM bv_cdc.stats WHERE sink = 'mq'"), 'streaming again');
BvMqtt::kill_broker($b, 'KILL');
my $floor = versions_now();    # rows committed later cannot have been acknowledged
ok(poll("SELECT state = 'down' FROM bv_cdc.stats WHERE sink = 'mq'"), 'broker killed mid-stream: the sink is down');
BvMqtt::restart_broker($b);
$h->finish;
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'mq'"), 'the worker reconnects after the kill');
$_++ for values %$floor;
$want = expected($floor);
cmp_ok($want, '>', 500, "rows were committed after the kill ($want)");
BvMqtt::wait_until(sub { (check($floor))[0] >= $want });
($got, $bad) = check($floor);
is($got, $want, "kill -9 mid-stream: every row committed after the kill delivered ($want)");
is($bad, '', 'kill -9 mid-stream: each key in order after the kill');
my ($all_got) = check({});
diag('rows committed before the kill and lost by the killed broker: ' . (expected({}) - $all_got));

# 3c. kill -9 with nothing in flight, rows committed while the broker is
# dead: all arrive.
my $lsn = sql('SELECT pg_current_wal_lsn()');
ok(poll("SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"), 'caught up');
BvMqtt::wait_until(sub { (check({}))[0] >= $all_got }) ;
BvMqtt::kill_broker($b, 'KILL');
sql('CALL public.work(200)');
ok(poll("SELECT state = 'down' FROM bv_cdc.stats WHERE sink = 'mq'"), 'broker dead: the sink is down');
BvMqtt::restart_broker($b);
$want = $all_got + 200;
BvMqtt::wait_until(sub { (check({}))[0] >= $want });
($got) = check({});
is($got, $want, 'kill -9, rows committed while the broker is dead: all delivered');
ok(poll("SELECT state = 'up' AND inflight = 0 FROM bv_cdc.stats WHERE sink = 'mq'"), 'nothing left in flight');

BvMqtt::stop_subscriber($sub);
BvMqtt::stop_broker($b);
$node->stop;
done_testing();
