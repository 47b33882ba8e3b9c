# bv_cdc NATS sinks against a real nats-server -js: JetStream envelopes and
# headers (Nats-Msg-Id = the event id), subject templates, core mode, bad
# configurations refused when set or failing alone when they cannot start,
# duplicate suppression after a replay from the slot, and the server
# stopped and the worker killed mid-stream: every committed row is in the
# stream exactly once, each key's changes in order.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvNats;

my $node = BvTest::new_node('nats',
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

sub refused
{
	my ($q) = @_;
	my ($rc, $out, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\n$q");
	return $rc != 0 && $err =~ /ERROR:\s+(\w{5}):\s+(.*)/ ? "$1 $2" : "accepted";
}

# ---- 0. bad configuration refused when set ----
like(refused(q{SELECT bv_cdc.add_sink('x', 'nats', '{}')}), qr/^22023 NATS sink property "host" is required/, 'host is required');
like(refused(q{SELECT bv_cdc.add_sink('x', 'nats', '{"host": "h", "mode": "fast"}')}), qr/^22023 invalid value "fast" for NATS sink property "mode"/, 'mode jetstream or core');
like(refused(q{SELECT bv_cdc.add_sink('x', 'nats', '{"host": "h", "mode": "core", "stream": "S"}')}), qr/^22023 /, 'a stream needs JetStream');
like(refused(q{SELECT bv_cdc.add_sink('x', 'nats', '{"host": "h", "username": "u"}')}), qr/^22023 .*"username" and "password_secret" go together/, 'no password in the configuration');
like(refused(q{SELECT bv_cdc.add_sink('x', 'nats', '{"host": "h", "token_secret": "nope"}')}), qr/^42704 secret "nope" does not exist/, 'the token secret must exist');
like(refused(q{SELECT bv_cdc.add_sink('x', 'nats', '{"host": "h", "creds_file": "/nonexistent/u.creds"}')}), qr/^22023 .*creds_file/, 'a missing credentials file is refused');
like(refused(q{SELECT bv_cdc.add_sink('x', 'nats', '{"host": "h", "max_inflight": 0}')}), qr/^22023 /, 'max_inflight out of range');

my $s = BvNats::start_server($dir);
ok($s->{port}, "nats-server -js is up on port $s->{port}");
BvNats::stream($s, 'BV', 'bv.>');
BvNats::stream($s, 'CORE', 'core.>');

my $keys = 20;
sql(qq{
CREATE TABLE public.kv (k int PRIMARY KEY, v int NOT NULL);
CREATE TABLE public.tpl (k int PRIMARY KEY, v int);
CREATE TABLE public.co (k int PRIMARY KEY, v int);
CREATE TABLE public.dd (k int PRIMARY KEY, v int);
CREATE PROCEDURE public.work(n int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n LOOP
        UPDATE public.kv SET v = v + 1 WHERE k = i % $keys;
        COMMIT;
        PERFORM pg_sleep(0.0005);
    END LOOP;
END \$\$;
SELECT bv_cdc.add_sink('ns', 'nats', '{"host": "127.0.0.1", "port": $s->{port}, "stream": "BV"}');
SELECT bv_cdc.add_sink('nc', 'nats', '{"host": "127.0.0.1", "port": $s->{port}, "mode": "core"}');
SELECT bv_cdc.add_route('public.kv', 'ns');
SELECT bv_cdc.add_route('public.tpl', 'ns', 'bv.custom.{table}');
SELECT bv_cdc.add_route('public.co', 'nc', 'core.{schema}.{table}');
});
like(refused(q{SELECT bv_cdc.add_route('public.kv', 'ns', 'bv.>')}), qr/^22023 invalid NATS subject template/, 'subject templates without wildcards');
like(refused(q{SELECT bv_cdc.add_route('public.kv', 'ns', 'bv..x')}), qr/^22023 invalid NATS subject template/, 'no empty tokens');
ok(poll("SELECT bool_and(worker_state = 'streaming' AND state = 'up') FROM bv_cdc.stats WHERE sink IN ('ns', 'nc')"),
	'the worker streams to both NATS sinks');

# ---- 1. envelopes and headers ----
sql("INSERT INTO public.kv VALUES (1, 0)");
sql("UPDATE public.kv SET v = 1 WHERE k = 1");
sql("DELETE FROM public.kv WHERE k = 1");
BvNats::wait_until(sub { BvNats::count($s, 'BV') >= 3 });
my @m = BvNats::dump($s, 'BV');
is(scalar(@m), 3, 'three changes, three messages in the stream');
is(join(' ', map { $_->{subject} } @m), 'bv.public.kv bv.public.kv bv.public.kv', 'default subject bv.{schema}.{table}');
is(join(',', map { $_->{body}{op} } @m), 'c,u,d', 'the body is the envelope, in commit order');
is(join(',', map { $_->{headers}{op} } @m), 'c,u,d', 'header op');
is($m[0]{headers}{table}, 'public.kv', 'header table');
is($m[0]{headers}{lsn}, $m[0]{body}{source}{lsn}, 'header lsn');
is($m[0]{headers}{xid}, $m[0]{body}{source}{xid}, 'header xid');
is($m[0]{headers}{key}, '{"k":1}', 'header key');
like($m[0]{headers}{'Nats-Msg-Id'}, qr/^[0-9A-F]+-\d+-c-\d+$/, 'Nats-Msg-Id is the event id');
is($m[0]{headers}{'Content-Type'}, 'application/json', 'content type');

sql("INSERT INTO public.tpl VALUES (1, 0)");
BvNats::wait_until(sub { grep { $_->{subject} eq 'bv.custom.tpl' } BvNats::dump($s, 'BV') });
ok((grep { $_->{subject} eq 'bv.custom.tpl' } BvNats::dump($s, 'BV')), 'subject template bv.custom.{table}');

sql("INSERT INTO public.co VALUES (1, 0)");
ok(BvNats::wait_until(sub { BvNats::count($s, 'CORE') >= 1 }), 'core NATS mode publishes (fire and forget)');

# ---- 2. a sink that cannot start fails alone; duplicate suppression after a replay ----
sql(qq{
SELECT bv_cdc.add_sink('bad', 'nats', '{"host": "127.0.0.1", "port": $s->{port}, "stream": "OTHER"}');
SELECT bv_cdc.add_route('public.dd', 'ns');
SELECT bv_cdc.add_route('public.dd', 'bad', 'other.{table}');
});
ok(poll("SELECT state = 'failed' AND last_error LIKE '%OTHER%' FROM bv_cdc.stats WHERE sink = 'bad'"),
	'a sink whose stream does not exist is failed, with the reason');
my $ev0 = sql("SELECT events FROM bv_cdc.stats WHERE sink = 'ns'");
sql("INSERT INTO public.dd SELECT g, 0 FROM generate_series(1, 50) g");
ok(poll("SELECT events >= $ev0 + 50 FROM bv_cdc.stats WHERE sink = 'ns'"), 'the other sink streams on');
is(scalar(grep { $_->{subject} eq 'bv.public.dd' } BvNats::dump($s, 'BV')), 50, '50 changes in the stream');
BvNats::stream($s, 'OTHER', 'other.>');
sql("SELECT bv_cdc.alter_sink('bad', '{\"host\": \"127.0.0.1\", \"port\": $s->{port}, \"stream\": \"OTHER\", \"max_inflight\": 500}')");
ok(BvNats::wait_until(sub { BvNats::count($s, 'OTHER') >= 50 }), 'the repaired sink receives the changes it missed');
ok(poll("SELECT events >= $ev0 + 100 FROM bv_cdc.stats WHERE sink = 'ns'"), 'the replay published the 50 changes to ns again');
my @dd = grep { $_->{subject} eq 'bv.public.dd' } BvNats::dump($s, 'BV');
is(scalar(@dd), 50, 'JetStream dropped the replayed copies: still 50 in the stream');
my %ids = map { $_->{headers}{'Nats-Msg-Id'} => 1 } @dd;
is(scalar(keys %ids), 50, 'one message per event id');

# ---- 3. the server stopped mid-stream; the worker killed mid-stream ----
my $first = BvNats::count($s, 'BV') + 1;    # the reset to v = 0 and later
sql("INSERT INTO public.kv SELECT k, 0 FROM generate_series(0, $keys - 1) k ON CONFLICT (k) DO UPDATE SET v = 0");

sub background_work
{
	my ($n) = @_;
	my ($in, $out, $err) = ('', '', '');
	return IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('bitvelocity'), '-c', "CALL public.work($n)" ],
		\$in, \$out, \$err);
}

# Versions of each key in stream order from the reset on; the number of
# messages, of distinct (key, version), and the keys out of order or with a
# gap or a duplicate.
sub check
{
	my (%seen, %order);
	my $n = 0;
	for my $m (BvNats::dump($s, 'BV'))
	{
		next unless $m->{seq} >= $first && $m->{subject} eq 'bv.public.kv' && $m->{body}{after};
		$n++;
		my ($k, $v) = ($m->{body}{key}{k}, $m->{body}{after}{v});
		$seen{"$k:$v"}++;
		push @{ $order{$k} }, $v;
	}
	my @bad = grep {
		my @v = @{ $order{$_} };
		grep { $v[$_] != $_ } 0 .. $#v
	} sort { $a <=> $b } keys %order;
	return ($n, scalar(keys %seen), "@bad");
}

sub expected
{
	my $n = 0;
	$n += $_ + 1 for split /\n/, sql("SELECT v FROM public.kv");
	return $n;
}

my $before = sql("SELECT events FROM bv_cdc.stats WHERE sink = 'ns'");
my $h = background_work(4000);
ok(poll("SELECT events > $before + 300 FROM bv_cdc.stats WHERE sink = 'ns'"), 'streaming the workload');
BvNats::stop_server($s, 'TERM');
ok(poll("SELECT state IN ('down', 'failed') FROM bv_cdc.stats WHERE sink = 'ns'"), 'server stopped mid-stream: the sink is down');
BvNats::restart_server($s);
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'ns'"), 'the worker reconnects');
my $pid = sql("SELECT pid FROM bv_cdc.worker()");
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid) mid-stream");
$h->finish;
ok(poll_after_crash("SELECT pid <> $pid AND state = 'streaming' FROM bv_cdc.worker()"), 'the worker is back');
my $want = expected();
BvNats::wait_until(sub { (check())[1] >= $want }, 120);
my ($n, $got, $bad) = check();
is($got, $want, "server stop and worker kill mid-stream: every committed row delivered ($want)");
is($n, $want, 'each exactly once in the stream (replays de-duplicated)');
is($bad, '', 'each key in order, no gap');

BvNats::stop_server($s, 'TERM');

# ---- 4. TLS with a client certificate ----
# A second server: TLS only, client certificates required.
my $pki = $node->basedir . '/pki';
mkdir $pki or die "$pki: $!";
BvTest::make_ca($pki, 'ca', 'BitVelocity test CA');
BvTest::make_ca($pki, 'rogue_ca', 'Rogue CA');
BvTest::make_cert($pki, 'server', '127.0.0.1', 'ca', "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
BvTest::make_cert($pki, 'worker', 'bv_cdc', 'ca', "extendedKeyUsage=clientAuth\n");
my $tdir = $node->basedir . '/tls';
mkdir $tdir or die "$tdir: $!";
open my $cf, '>', "$tdir/nats.conf" or die $!;
print $cf "tls {\n  cert_file: \"$pki/server.crt\"\n  key_file: \"$pki/server.key\"\n  ca_file: \"$pki/ca.crt\"\n  verify: true\n}\n";
close $cf;
my $t = BvNats::start_server($tdir, args => [ '-c', "$tdir/nats.conf" ],
	tool_env => { BV_NATS_CA => "$pki/ca.crt", BV_NATS_CERT => "$pki/worker.crt", BV_NATS_KEY => "$pki/worker.key" });
BvNats::stream($t, 'TLS', 'tls.>');
sql(qq{
CREATE TABLE public.tl (k int PRIMARY KEY, v int);
SELECT bv_cdc.add_sink('nt', 'nats', '{"host": "127.0.0.1", "port": $t->{port}, "stream": "TLS", "tls_ca_file": "$pki/ca.crt", "tls_cert_file": "$pki/worker.crt", "tls_key_file": "$pki/worker.key"}');
SELECT bv_cdc.add_sink('nrogue', 'nats', '{"host": "127.0.0.1", "port": $t->{port}, "stream": "TLS", "tls_ca_file": "$pki/rogue_ca.crt"}');
SELECT bv_cdc.add_route('public.tl', 'nt', 'tls.{table}');
});
ok(poll("SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'nt'"), 'TLS with a client certificate: up');
ok(poll("SELECT state = 'failed' FROM bv_cdc.stats WHERE sink = 'nrogue'"), 'a server certificate from another CA: failed');
sql("INSERT INTO public.tl VALUES (1, 0)");
ok(BvNats::wait_until(sub { BvNats::count($t, 'TLS') >= 1 }), 'a change published over TLS is in the stream');
BvNats::stop_server($t, 'TERM');
done_testing();
