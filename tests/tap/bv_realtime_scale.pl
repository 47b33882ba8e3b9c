# bv_realtime at scale and across a server restart, with real clients
# (python3-websockets): 1,000 concurrent WebSocket connections each receive
# one broadcast and close (kept light: one process, one message); then the
# whole server restarts: the gateway comes back on its own, the history
# survived, and a client resuming from a position before the restart gets
# what was sent before and while it was down, then live messages.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $node = BvTest::new_node('rtscale', extra_conf => "bv_realtime.keepalive = 120\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('many:*', 'subscribe', 'bv_user')});
# One token for every connection: without a sub claim, so that the per-user
# limit (bv_realtime.max_connections_per_user, default 100; tested in
# bv_realtime_user_limit) does not apply; 1,000 users would be 1,000 subs.
my $tok = $rt->token(role => 'bv_user');

# ---- 1,000 concurrent connections ----
my $N = 1000;
my $out = "$PostgreSQL::Test::Utils::tmp_check/many.out";
my $h = IPC::Run::start([ '/usr/bin/python3', "$ENV{BV_SRC}/tests/tools/bv_realtime_many.py",
		"ws://$rt->{base}/socket?access_token=$tok&topics=many:1", $N, $out, '--timeout', $PostgreSQL::Test::Utils::timeout_default ],
	'<', \undef, '>', "$out.log", '2>&1');
$rt->wait_for(sub { BvRealtime::slurp_file_lines($out) =~ /^ready/m }, "$N clients subscribed")
  or diag(BvRealtime::slurp_file_lines("$out.log"));
my ($conns, $subs) = split /\|/, $rt->sql('SELECT connections, subscriptions FROM bv_realtime.stats');
is($conns, $N, "$N connections held at once");
is($subs, $N, "$N subscriptions");
$rt->sql(q{SELECT bv_realtime.send('many:1', 'hello', '{"to": "everyone"}')});
$rt->wait_for(sub { BvRealtime::slurp_file_lines($out) =~ /^distinct/m }, 'the clients report');
my $report = BvRealtime::slurp_file_lines($out);
like($report, qr/^received $N$/m, "each of the $N connections received the broadcast");
like($report, qr/^distinct 1$/m, '... the same message (one position)');
$h->finish;
$rt->wait_for(sub { $rt->sql('SELECT connections FROM bv_realtime.stats') == 0 }, 'all closed');
is($rt->sql('SELECT connections FROM bv_realtime.stats'), '0', 'after they close, no connection is left');

# ---- server restart ----
$rt->sql(q{SELECT bv_realtime.send('many:2', 'e', '{"k": 1}')});
my $before = $rt->sql(q{SELECT commit_lsn || '-' || seq FROM bv_realtime.messages WHERE topic = 'many:2'});
$rt->sql(q{SELECT bv_realtime.send('many:2', 'e', '{"k": 2}')});
my $pid = $rt->sql('SELECT worker_pid FROM bv_realtime.stats');
my $live = $rt->ws(query => "access_token=$tok&topics=many:2");
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'subscribed' } $live->frames }, 'a client is connected');
$node->restart;
$rt->wait_for(sub { $live->closed || !$live->running }, 'the client saw the server go');
ok(1, 'the server restarted');
$node->safe_psql('bitvelocity', q{SELECT bv_realtime.send('many:2', 'e', '{"k": 3}')});
$node->poll_query_until('bitvelocity', "SELECT state = 'running' AND worker_pid <> $pid FROM bv_realtime.stats")
  or die 'the gateway did not come back';
pass('the gateway came back after the restart');
my $again = $rt->ws(query => "access_token=$tok&topics=many:2&last_id=$before");
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'subscribed' } $again->frames }, 'resumed');
$rt->sql(q{SELECT bv_realtime.send('many:2', 'e', '{"k": 4}')});
$rt->wait_for(sub { $again->messages >= 3 }, 'the resuming client catches up');
is(join(',', map { $_->{payload}{k} } $again->messages), '2,3,4',
	'after the restart: the message sent before it, the one sent while the gateway was down, then live, without gaps');
$_->stop for ($live, $again);
done_testing();
