# Issue #17, attack review over real PostgREST: what the first round of
# fixes left open, kept as regression tests.
#  - The payment webhook's own bucket was drained by unsigned requests to
#    the webhook itself; refused and signed calls now have separate buckets
#    (bv.request_routes.self_limited, bv._route_limit()).
#  - request.path is the raw path: a percent-encoded path reached a route
#    but escaped its bucket; routes are matched on the decoded path.
#  - Behind a trusted proxy one client had many buckets: every address of
#    its IPv6 /64, and its IPv4 address in IPv4-mapped form; a proxy hop
#    written in IPv4-mapped form was not recognised as the proxy.
#  - bv_service could drain anybody's request bucket (sub:alice, the
#    webhook's) with bv.rate_limit(): admission buckets now live in a key
#    space of their own (bv._request_bucket()).
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

# A burst of 3 and a refill far slower than the test.
my $node = BvTest::new_node('atkrest', extra_conf => "bv.request_rate = 0.001\nbv.request_burst = 3\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity', "INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my $wh_secret = 'whsec_' . join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 32;
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('commerce.payment_webhook', '$wh_secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);

sub status
{
	my ($method, $path, %o) = @_;
	my ($s) = BvTest::http($method, "$url$path", %o);
	return $s;
}

# ---- the webhook: unsigned floods do not throttle signed events ----
my @unsigned = map {
	status('POST', '/rpc/payment_webhook', body => qq({"id":"evt_u$_","type":"x"}),
		headers => ['bv-signature: t=1,v1=00'])
} 1 .. 5;
is(join(',', @unsigned), '401,401,401,429,429', 'unsigned webhook calls: refused, then throttled in their own bucket');
my $signed = sub {
	my ($event) = @_;
	my $t = time();
	return status('POST', '/rpc/payment_webhook', body => $event,
		headers => [ "bv-signature: t=$t,v1=" . hmac_sha256_hex("$t.$event", $wh_secret) ]);
};
is($signed->('{"id":"evt_s1","type":"x.other"}'), '200', 'a signed event after the unsigned flood: 200, not 429');
is(join(',', map { $signed->(qq({"id":"evt_s$_","type":"x.other"})) } 2 .. 4), '200,200,429',
	'signed events have a limit of their own');
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM commerce.webhook_events}), '3',
	'exactly the admitted signed events were stored');

# Without its route row (an operator removed it), a route falls back to
# the default limits instead of failing.
{
	my ($ret, $out, $err) = $node->psql('bitvelocity', q{BEGIN; DELETE FROM bv.request_routes;
	  SELECT set_config('request.method', 'POST', true);
	  SELECT bv._route_limit('/rpc/removed_route', 'refused') IS NULL;
	  ROLLBACK;});
	is($err, '', 'a self-limited route without its row in bv.request_routes: the default limits, no error');
}

# ---- routes are matched on the decoded path ----
$node->safe_psql('bitvelocity', q{INSERT INTO bv.request_routes (path, rate, burst) VALUES ('/catalog', 0.001, 1)});
is(status('GET', '/catalog?limit=1'), '200', 'a route with burst 1: the first request passes');
is(status('GET', '/%63atalog?limit=1'), '429', 'the same route percent-encoded: still its bucket (429)');
like(status('GET', '/rpc/payment%5Fwebhook'), qr/^4/, 'an encoded path to a self-limited route: a 4xx, not 500');
$node->safe_psql('bitvelocity', q{DELETE FROM bv.request_routes WHERE path = '/catalog'});
is($node->safe_psql('bitvelocity', q{SELECT bv._request_path_decode('/a%2Fb%zz%'), bv._request_path_decode('/%ff'), bv._request_path_decode('/%00')}),
	'/a/b%zz%|/%ff|/%00', 'undecodable escapes are kept');

# ---- one client, one bucket behind a trusted proxy ----
$node->safe_psql('bitvelocity', q{INSERT INTO bv.trusted_proxies (proxy) VALUES ('10.0.0.0/8')});
sub anon { return status('GET', '/catalog?limit=1', headers => [ "X-Forwarded-For: $_[0]" ]); }
is(join(',', map { anon("2001:db8:1:2::$_, 10.0.0.1") } 1 .. 3), '200,200,200', 'an IPv6 client: its burst');
is(anon('2001:db8:1:2:ffff::9, 10.0.0.1'), '429', 'another address of the same /64: the same bucket');
is(anon('2001:db8:1:3::1, 10.0.0.1'), '200', 'another /64: another client');
is(join(',', map { anon('::ffff:192.0.2.50, 10.0.0.1') } 1 .. 3), '200,200,200', 'an IPv4-mapped client: its burst');
is(anon('192.0.2.50, 10.0.0.1'), '429', 'the same client in IPv4 form: the same bucket');
is(join(',', map { anon('192.0.2.60, ::ffff:10.0.0.1') } 1 .. 3), '200,200,200',
	'a proxy hop in IPv4-mapped form is the trusted proxy ...');
is(anon('192.0.2.60, 10.0.0.2'), '429', '... so the client behind it is the same bucket');
is($node->safe_psql('bitvelocity',
		q{SELECT bv._request_client_address('::FFFF:C000:0233, 10.0.0.1'), bv._request_client_address('2001:DB8:0:0:1::7, 10.1.1.1')}),
	'192.0.2.51|2001:db8::/64', 'normalised forms');
$node->safe_psql('bitvelocity', q{INSERT INTO bv.trusted_proxies (proxy) VALUES ('::ffff:172.16.0.0/108')});
is($node->safe_psql('bitvelocity',
		q{SELECT bv._request_client_address('192.0.2.70, 172.16.0.1'), bv._request_client_address('192.0.2.71, ::ffff:172.16.0.1')}),
	'192.0.2.70|192.0.2.71', 'a proxy listed in IPv4-mapped form is recognised in both forms');
$node->safe_psql('bitvelocity', q{DELETE FROM bv.trusted_proxies});

# ---- a service cannot drain request buckets with bv.rate_limit() ----
my $alice = BvTest::jwt_hs256($secret, sprintf('{"role":"bv_user","sub":"alice","exp":%d}', time() + 600));
$node->safe_psql('bitvelocity', q{SET ROLE bv_service;
SELECT count(*) FROM generate_series(1, 10), LATERAL (SELECT bv.rate_limit('sub:alice', 0.001, 1),
  bv.rate_limit_retry_after('sub:alice', 0.001, 1)) x});
is(status('GET', '/orders', token => $alice), '200',
	'bv.rate_limit(\'sub:alice\') by a service does not throttle alice\'s requests');

# The new internal steps are not reachable by API roles.
for my $f (q{bv._route_limit('/rpc/payment_webhook', 'authenticated')}, q{bv._request_path_decode('/x')},
	q{bv._request_bucket('sub:alice', 1, 1)})
{
	my ($ret, $out, $err) = $node->psql('bitvelocity', "SET ROLE bv_anon; SELECT $f");
	like($err, qr/permission denied for function/, "bv_anon cannot call $f");
}

$pgrst->kill_kill;
$node->stop;
done_testing();
