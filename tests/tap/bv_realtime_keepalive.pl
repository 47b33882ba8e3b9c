# bv_realtime keep-alive (bv_realtime.keepalive): a WebSocket client that
# answers the gateway's pings (python3-websockets does, as browsers do)
# stays connected through several ping intervals; one that does not read
# (so never answers) is closed with 1001 "ping timeout".
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $node = BvTest::new_node('rtkeepalive', extra_conf => "bv_realtime.keepalive = 2\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('ka:*', 'subscribe', 'bv_user')});
my $tok = $rt->token(role => 'bv_user', sub => 'ka');
my $live = $rt->ws(query => "access_token=$tok&topics=ka:1");
my $dead = $rt->ws(query => "access_token=$tok&topics=ka:1", slow => 1);
$rt->wait_for(sub { $dead->closed }, 'the silent client is closed');
is_deeply($dead->closed, { closed => 1001, reason => 'ping timeout' }, 'a client that never answers a ping is closed with 1001');
# the live client has been through at least two ping intervals by now; give it three more
my $until = time() + 7;
$rt->wait_for(sub { $live->closed || time() >= $until }, 'seven seconds');
ok(!$live->closed, 'a client that answers pings stays connected') or diag(explain($live->closed));
$rt->sql("SELECT bv_realtime.send('ka:1', 'still', '{}')");
$rt->wait_for(sub { grep { $_->{event} eq 'still' } $live->messages }, 'delivery after the pings');
ok((grep { $_->{event} eq 'still' } $live->messages), '... and still receives');
$_->stop for ($live, $dead);
done_testing();
