# bv_cdc AMQP sinks against a real rabbitmq-server: envelopes and headers
# (persistent, confirmed, message_id = event id), routing-key and exchange
# templates, unroutable messages (mandatory, basic.return) parked in
# bv_cdc.dead_letter or retried per route option, bad configurations
# refused when set, and the broker stopped mid-stream and the worker killed
# mid-stream: every committed row arrives at least once, each key's changes
# in order.  See tests/tools/BvAmqp.pm for how the broker is run.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvAmqp;

my $node = BvTest::new_node('amqp',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\nbv_cdc.retry_max = 2000\nrestart_after_crash = on\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $dir = $node->basedir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

# poll, right after a kill -9 of the worker: the crash restart may end the
# psql that poll_query_until has just started (IPC::Run dies with a broken
# pipe); poll again then.
sub poll_after_crash
{
	for (1 .. 5)
	{
		my $r = eval { poll($_[0]) };
		return $r if defined $r;
		diag("poll interrupted by the crash restart: $@");
	}
	return 0;
}

# A configuration error: its SQLSTATE and message.
sub refused
{
	my ($q) = @_;
	my ($rc, $out, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\n$q");
	return $rc != 0 && $err =~ /ERROR:\s+(\w{5}):\s+(.*)/ ? "$1 $2" : "accepted";
}

# ---- 0. bad configuration refused when set ----
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{}')}), qr/^22023 AMQP sink property "host" is required/,
	'host is required');
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{"host": "h", "port": 70000}')}), qr/^22023 /,
	'port out of range');
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{"host": -1}')}), qr/^22023 /, 'host of the wrong JSON type');
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{"host": "h", "username": "u"}')}),
	qr/^22023 AMQP sink property "username" requires "password_secret"/, 'no password in the configuration');
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{"host": "h", "username": "u", "password_secret": "nope"}')}),
	qr/^42704 secret "nope" does not exist/, 'the password secret must exist');
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{"host": "h", "tls_ca_file": "/nonexistent/ca.pem"}')}),
	qr/^22023 .*tls_ca_file/, 'a missing TLS file is refused');
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{"host": "h", "exchange": "a b"}')}),
	qr/^22023 invalid AMQP exchange template/, 'bad exchange template');
like(refused(q{SELECT bv_cdc.add_sink('x', 'amqp', '{"host": "h", "colour": "red"}')}),
	qr/^22023 unknown amqp sink property "colour"/, 'unknown property');
is(sql(q{SELECT count(*) FROM bv_cdc.sinks}), '0', 'nothing was added');
is(sql(q{SELECT string_agg(name || ':' || coalesce(default_value, '-'), ',' ORDER BY name) FROM bv_cdc.sink_properties() WHERE kind = 'amqp' AND name IN ('port', 'exchange', 'max_inflight')}),
	'exchange:amq.topic,max_inflight:4096,port:5672', 'sink_properties() lists the declared defaults');

# PKI for the TLS listener (section 4): the broker's certificate from a test
# CA, client certificates required.
my $pki = "$dir/pki";
mkdir $pki or die "$pki: $!";
BvTest::make_ca($pki, 'ca', 'BitVelocity test CA');
BvTest::make_ca($pki, 'rogue_ca', 'Rogue CA');
# librabbitmq 0.11 verifies a host name against the certificate's DNS names
# only (an IP address never matches): the sink connects to "localhost".
BvTest::make_cert($pki, 'broker', 'localhost', 'ca', "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
BvTest::make_cert($pki, 'worker', 'bv_cdc', 'ca', "extendedKeyUsage=clientAuth\n");
my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $b = BvAmqp::start_broker($dir, extra => "listeners.ssl.default = $tls_port\n"
	  . "ssl_options.cacertfile = $pki/ca.crt\nssl_options.certfile = $pki/broker.crt\n"
	  . "ssl_options.keyfile = $pki/broker.key\nssl_options.verify = verify_peer\n"
	  . "ssl_options.fail_if_no_peer_cert = true\n");
ok($b->{port}, "rabbitmq-server is up on port $b->{port}");
BvAmqp::bind($b, 'all', 'amq.topic', 'bv.#');
BvAmqp::bind($b, 'custom', 'amq.topic', 'custom.#');
BvAmqp::bind($b, 'byx', 'amq.direct', 'x.public.ex');
my $all = BvAmqp::consume($b, 'all');

my $keys = 20;
sql(qq{
CREATE TABLE public.kv (k int PRIMARY KEY, v int NOT NULL);
CREATE TABLE public.tpl (k int PRIMARY KEY, v int);
CREATE TABLE public.unr (k int PRIMARY KEY, v int);
CREATE TABLE public.ex (k int PRIMARY KEY, v int);
CREATE PROCEDURE public.work(n int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n LOOP
        UPDATE public.kv SET v = v + 1 WHERE k = i % $keys;
        COMMIT;
        PERFORM pg_sleep(0.0005);
    END LOOP;
END \$\$;
SELECT bv_cdc.add_sink('rq', 'amqp', '{"host": "127.0.0.1", "port": $b->{port}, "heartbeat_s": 5}');
SELECT bv_cdc.add_sink('rqx', 'amqp', '{"host": "127.0.0.1", "port": $b->{port}, "exchange": "amq.direct"}');
SELECT bv_cdc.add_route('public.kv', 'rq');
SELECT bv_cdc.add_route('public.tpl', 'rq', 'custom.{schema}.{table}');
SELECT bv_cdc.add_route('public.unr', 'rq', 'nowhere.{table}');
SELECT bv_cdc.add_route('public.ex', 'rqx', 'x.{schema}.{table}');
});
like(refused(q{SELECT bv_cdc.add_route('public.kv', 'rq', 'bv.*.x')}), qr/^22023 invalid AMQP routing key template/,
	'routing key templates without wildcards');
like(refused(q{SELECT bv_cdc.add_route('public.kv', 'rq', 'bv.k2', options => '{"on_return": "drop"}')}),
	qr/^22023 invalid on_return/, 'on_return is dead_letter or retry');
like(refused(q{SELECT bv_cdc.add_route('public.kv', 'rq', 'bv.k3', options => '{"qos": 1}')}),
	qr/^22023 unknown route option "qos" for a amqp sink/, 'MQTT options are not AMQP options');
ok(poll("SELECT bool_and(worker_state = 'streaming' AND state = 'up') FROM bv_cdc.stats WHERE sink IN ('rq', 'rqx')"),
	'the worker streams to both AMQP sinks');

# ---- 1. envelopes and headers ----
sql("INSERT INTO public.kv VALUES (1, 0)");
sql("UPDATE public.kv SET v = 1 WHERE k = 1");
sql("DELETE FROM public.kv WHERE k = 1");
BvAmqp::wait_until(sub { grep({ $_->{rk} eq 'bv.public.kv' } BvAmqp::messages($all)) >= 3 });
my @m = grep { $_->{rk} eq 'bv.public.kv' } BvAmqp::messages($all);
is(scalar(@m), 3, 'three changes, three messages');
is(join(',', map { $_->{body}{op} } @m), 'c,u,d', 'the body is the envelope: c, u, d in commit order');
is(join(',', map { $_->{headers}{op} } @m), 'c,u,d', 'header op');
is($m[0]{headers}{table}, 'public.kv', 'header table');
is($m[0]{headers}{lsn}, $m[0]{body}{source}{lsn}, 'header lsn is the change\'s');
is($m[0]{headers}{xid}, $m[0]{body}{source}{xid}, 'header xid (an integer)');
is($m[0]{headers}{key}, '{"k":1}', 'header key');
ok($m[0]{message_id} && $m[0]{message_id} eq $m[0]{headers}{event_id}, 'message_id is the event id');
is($m[0]{delivery_mode}, 2, 'persistent');
is($m[0]{content_type}, 'application/json', 'content type');
is($m[0]{exchange}, 'amq.topic', 'the default exchange amq.topic');
is_deeply($m[1]{body}{after}, { k => 1, v => 1 }, 'after image');

# traceparent header from the writer's transaction
sql("BEGIN; SET LOCAL bv.traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'; INSERT INTO public.kv VALUES (2, 0); COMMIT;");
BvAmqp::wait_until(sub { grep({ $_->{rk} eq 'bv.public.kv' && $_->{body}{key}{k} == 2 } BvAmqp::messages($all)) });
my ($t) = grep { $_->{rk} eq 'bv.public.kv' && $_->{body}{key}{k} == 2 } BvAmqp::messages($all);
is($t->{headers}{traceparent}, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'traceparent header');
ok(!exists $m[0]{headers}{traceparent}, 'no traceparent header without a trace context');

# routing-key template and exchange template
my $custom = BvAmqp::consume($b, 'custom');
my $byx = BvAmqp::consume($b, 'byx');
sql("INSERT INTO public.tpl VALUES (1, 0)");
sql("INSERT INTO public.ex VALUES (1, 0)");
ok(BvAmqp::wait_until(sub { BvAmqp::messages($custom) >= 1 }), 'routing key template custom.{schema}.{table}');
is((BvAmqp::messages($custom))[0]{rk}, 'custom.public.tpl', 'expanded routing key');
ok(BvAmqp::wait_until(sub { BvAmqp::messages($byx) >= 1 }), 'a sink on another exchange (amq.direct)');
is((BvAmqp::messages($byx))[0]{exchange}, 'amq.direct', 'published to the sink\'s exchange');

# ---- 2. unroutable: dead letter by default, the stream goes on ----
sql("INSERT INTO public.unr SELECT g, 0 FROM generate_series(1, 3) g");
sql("INSERT INTO public.kv VALUES (3, 0)");
ok(poll("SELECT count(*) = 3 FROM bv_cdc.dead_letter WHERE sink = 'rq'"), 'three unroutable messages parked in bv_cdc.dead_letter');
is(sql("SELECT string_agg(DISTINCT reason || '|' || topic || '|' || op || '|' || tbl, ',') FROM bv_cdc.dead_letter WHERE sink = 'rq'"),
	'permanent|nowhere.unr|c|public.unr', 'dead letter rows: reason, routing key, op, table');
like(sql("SELECT last_error FROM bv_cdc.dead_letter WHERE sink = 'rq' LIMIT 1"), qr/^unroutable: 312 NO_ROUTE/,
	'the broker\'s reason');
is(sql("SELECT body::jsonb ->> 'op' FROM bv_cdc.dead_letter WHERE sink = 'rq' ORDER BY id LIMIT 1"), 'c', 'the envelope is kept');
ok(BvAmqp::wait_until(sub { grep { $_->{rk} eq 'bv.public.kv' && $_->{body}{key}{k} == 3 } BvAmqp::messages($all) }),
	'later changes still flow');

# on_return = retry: the sink fails and retries until a queue is bound
sql("CREATE TABLE public.rt (k int PRIMARY KEY, v int); SELECT bv_cdc.add_route('public.rt', 'rq', 'later.{table}', options => '{\"on_return\": \"retry\"}')");
ok(poll("SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'rq'"), 'configuration applied');
sql("INSERT INTO public.rt VALUES (1, 0)");
ok(poll("SELECT last_error LIKE '%returned a message: unroutable: 312 NO_ROUTE%' FROM bv_cdc.stats WHERE sink = 'rq'"),
	'on_return retry: the returned message fails the sink');
BvAmqp::bind($b, 'later', 'amq.topic', 'later.#');
my $later = BvAmqp::consume($b, 'later');
ok(BvAmqp::wait_until(sub { BvAmqp::messages($later) >= 1 }), 'once a queue is bound, the replay delivers it');
is(sql("SELECT count(*) FROM bv_cdc.dead_letter WHERE topic = 'later.rt'"), '0', 'and it was never dead-lettered');

# ---- 3. the broker stopped mid-stream; the worker killed mid-stream ----
# Messages from here on: the reset to v = 0, then the workload.
my $start_index = scalar(BvAmqp::messages($all));
sql("INSERT INTO public.kv SELECT k, 0 FROM generate_series(0, $keys - 1) k ON CONFLICT (k) DO UPDATE SET v = 0");
my %floor = map { $_ => 0 } 0 .. $keys - 1;

sub events { return sql("SELECT events FROM bv_cdc.stats WHERE sink = 'rq'"); }

sub background_work
{
	my ($n) = @_;
	my ($in, $out, $err) = ('', '', '');
	return IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('bitvelocity'), '-c', "CALL public.work($n)" ],
		\$in, \$out, \$err);
}

# First occurrence of each (key, version) since the reset to v = 0, in
# arrival order; the keys whose versions did not arrive in order or with a
# gap.  (A replay from the slot may go back to before the reset: its copies
# are not first occurrences.)
sub check
{
	my (%seen, %order);
	my @all = BvAmqp::messages($all);
	for my $m (@all[$start_index .. $#all])
	{
		next unless $m->{rk} eq 'bv.public.kv' && $m->{body}{after};
		my ($k, $v) = ($m->{body}{key}{k}, $m->{body}{after}{v});
		next if $seen{"$k:$v"}++;
		push @{ $order{$k} }, $v;
	}
	my @bad = grep {
		my @v = @{ $order{$_} };
		grep { $v[$_] != $_ } 0 .. $#v
	} sort { $a <=> $b } keys %order;
	return (scalar(keys %seen), "@bad");
}

sub expected
{
	my $n = 0;
	$n += $_ + 1 for split /\n/, sql("SELECT v FROM public.kv");
	return $n;
}

my $before = events();
my $h = background_work(4000);
ok(poll("SELECT events > $before + 300 FROM bv_cdc.stats WHERE sink = 'rq'"), 'streaming the workload');
BvAmqp::stop_broker($b);
ok(poll("SELECT state IN ('down', 'failed') FROM bv_cdc.stats WHERE sink = 'rq'"), 'broker stopped mid-stream: the sink is down');
my $lsn_down = sql('SELECT pg_current_wal_lsn()');
is(sql("SELECT confirmed_flush_lsn < '$lsn_down' FROM pg_replication_slots WHERE slot_name = 'bv_cdc'"),
	't', 'the slot keeps what the broker did not confirm');
BvAmqp::restart_broker($b);
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'rq'"), 'the worker reconnects');

# kill -9 of the worker while the workload goes on
ok(poll("SELECT events > 0 FROM bv_cdc.stats WHERE sink = 'rq'"), 'streaming after the restart');
my $pid = sql("SELECT pid FROM bv_cdc.worker()");
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid) mid-stream");
$h->finish;
ok(poll_after_crash("SELECT pid <> $pid AND state = 'streaming' FROM bv_cdc.worker()"), 'the worker is back');
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'rq'"), 'and the sink is up');
my $want = expected();
BvAmqp::wait_until(sub { (check())[0] >= $want }, 180);
my ($got, $bad) = check();
is($got, $want, "broker stop and worker kill mid-stream: every committed row delivered at least once ($want)");
is($bad, '', 'each key in order, no gap');
is(sql("SELECT count(*) FROM bv_cdc.dead_letter WHERE tbl = 'public.kv'"), '0', 'nothing routable was dead-lettered');

# ---- 4. TLS with a client certificate ----
BvAmqp::bind($b, 'tls', 'amq.topic', 'tls.#');
my $tlsq = BvAmqp::consume($b, 'tls');
sql(qq{
CREATE TABLE public.tl (k int PRIMARY KEY, v int);
SELECT bv_cdc.add_sink('rt', 'amqp', '{"host": "localhost", "port": $tls_port, "tls_ca_file": "$pki/ca.crt", "tls_cert_file": "$pki/worker.crt", "tls_key_file": "$pki/worker.key"}');
SELECT bv_cdc.add_sink('rrogue', 'amqp', '{"host": "localhost", "port": $tls_port, "tls_ca_file": "$pki/rogue_ca.crt"}');
SELECT bv_cdc.add_route('public.tl', 'rt', 'tls.{table}');
});
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'rt'"), 'TLS with a client certificate: up');
ok(poll("SELECT state = 'failed' FROM bv_cdc.stats WHERE sink = 'rrogue'"), 'a broker certificate from another CA: failed alone');
sql("INSERT INTO public.tl VALUES (1, 0)");
ok(BvAmqp::wait_until(sub { BvAmqp::messages($tlsq) >= 1 }), 'a change published over TLS arrives');

BvAmqp::stop_consumer($_) for ($all, $custom, $byx, $later, $tlsq);
BvAmqp::stop_broker($b);
done_testing();
