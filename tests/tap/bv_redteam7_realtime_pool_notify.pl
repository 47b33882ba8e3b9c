# Red-team round 7 (bv_realtime 0.5.0): a LISTEN left in a handler pool
# backend grows the gateway's memory with every NOTIFY on that channel.
#
# Finding 1, consequence (medium: gateway memory without bound).  A
# handler's LISTEN commits with its call and the pool's backend listens
# for ever (tap/bv_redteam7_realtime_pool_state).  The backend forwards
# each notification to its client, the gateway worker, which reads the
# socket (PQconsumeInput in rt_pool_service) but never takes them
# (handler_pool.c has no PQnotifies): libpq keeps every one in the worker's
# memory.  Then any role may NOTIFY that channel: 3000 notifications of
# 7 kB (21 MB) are measured here in the worker's resident memory.
# Expected: the worker's memory does not grow with notifications (no LISTEN
# survives a call, or the pool drains PQnotifies).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;

my $J = JSON::PP->new->canonical->ascii;
my $node = BvTest::new_node('red7notify');
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO bv_user;
CREATE FUNCTION app.h(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'LISTEN red7flood'; RETURN jsonb_build_object('pid', pg_backend_pid()); END $$;
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, handler) VALUES ('h:listen', 'publish', 'bv_user', 'app.h(text,text,jsonb)');
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('news', 'subscribe', 'bv_user');
});
my $c = $rt->ws(query => 'access_token=' . $rt->token(role => 'bv_user', sub => 'u1') . '&topics=news',
	send => [ $J->encode({ type => 'broadcast', topic => 'h:listen', event => 'e', ref => 'l', payload => {} }) ]);
ok($rt->wait_for(sub { grep { ($_->{type} // '') eq 'reply' && ($_->{ref} // '') eq 'l' } $c->frames }, 'reply'), 'control: the LISTEN call was answered');
my $wpid = $rt->sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bv_realtime gateway' OR backend_type LIKE 'bv_realtime%' ORDER BY backend_start LIMIT 1});
ok($wpid =~ /^\d+$/, 'control: the gateway worker\'s pid') or diag "pid: $wpid";
my $rss = sub { open(my $f, '<', "/proc/$wpid/status") or return -1; while (<$f>) { return $1 if /^VmRSS:\s+(\d+)/; } return -1; };
my $before = $rss->();
# 3000 distinct 7 kB notifications
for my $b (1 .. 3)
{
	$node->safe_psql('bitvelocity', qq{SELECT pg_notify('red7flood', $b * 10000 + i || repeat('x', 7000)) FROM generate_series(1, 1000) i});
}
ok($rt->wait_for(sub { $rt->sql(q{SELECT pg_notification_queue_usage() = 0}) eq 't' }, 'the listening backend took them'), 'control: the pool backend forwarded the notifications');
# a delivery: the worker has gone round its loop since
$rt->sql(q{SELECT bv_realtime.send('news', 'after', '{}')});
ok($rt->wait_for(sub { grep { ($_->{event} // '') eq 'after' } $c->frames }, 'delivered'), 'control: the gateway delivers after the flood');
my $after = $rss->();
diag "gateway worker $wpid VmRSS before $before kB, after $after kB";
{
	cmp_ok($after - $before, '<', 8000, 'the gateway worker did not keep 21 MB of notifications');
}
$c->stop;
done_testing();
