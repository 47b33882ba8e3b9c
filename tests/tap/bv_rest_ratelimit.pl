# Issue #17 item 12 over real PostgREST: anonymous rate limits.
#  - Without trusted proxies X-Forwarded-For is ignored (rotating it gains
#    nothing) and anonymous requests share one bucket;
#  - with bv.trusted_proxies the client is the right-most untrusted hop, so
#    a client cannot pick its bucket by writing entries to the left;
#  - the payment webhook (a path of bv.request_routes) has a bucket of its
#    own: an anonymous flood does not throttle it.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

# A burst of 3 and a refill far slower than the test.
my $node = BvTest::new_node('restrl',
	extra_conf => "bv.request_rate = 0.001\nbv.request_burst = 3\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);

# The status of an anonymous catalog read sent with these headers.
sub anon
{
	my (@headers) = @_;
	my ($status) = BvTest::http('GET', "$url/catalog?limit=1", headers => \@headers);
	return $status;
}

# ---- no trusted proxy: forwarded addresses are not believed ----
# (start_postgrest's readiness probes used some of the shared bucket.)
my @seen = map { anon("X-Forwarded-For: 203.0.113.$_") } 1 .. 5;
is(join(',', @seen[3, 4]), '429,429',
	"without trusted proxies, rotating X-Forwarded-For does not escape the limit (@seen)");
is(join(',', @seen), join(',', sort { $a <=> $b } @seen), 'no request passes after the first 429');

# The webhook's bucket is its own: refused for its bad signature (401), not
# throttled by the flood above (429).
my ($status, $body) = BvTest::http('POST', "$url/rpc/payment_webhook", body => '{"id":"evt_1","type":"x"}',
	headers => ['bv-signature: t=1,v1=00']);
isnt($status, '429', "the payment webhook is not throttled by other anonymous traffic ($status)");
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM bv.request_routes WHERE path = '/rpc/payment_webhook'}),
	'1', 'bv_commerce registered the webhook route');

# ---- trusted proxies: the right-most untrusted hop is the client ----
$node->safe_psql('bitvelocity', q{
INSERT INTO bv.trusted_proxies (proxy, description) VALUES ('10.0.0.0/8', 'load balancers');
});
@seen = map { anon("X-Forwarded-For: 198.51.100.$_, 192.0.2.7, 10.1.2.3") } 1 .. 4;
is_deeply(\@seen, [ 200, 200, 200, 429 ],
	'behind a trusted proxy, entries left of the client do not change its bucket');
is(anon('X-Forwarded-For: 192.0.2.7'), 429, 'the same client without the proxy hop: still limited');
is(anon('X-Forwarded-For: 192.0.2.8, 10.9.9.9'), 200, 'another client has its own bucket');
is(anon('X-Forwarded-For: 192.0.2.9, 10.9.9.9', 'X-Forwarded-For: 192.0.2.7, 10.1.2.3'), 429,
	'a repeated header counts once (the last, as PostgREST passes it)');
is(anon('X-Forwarded-For: not-an-address'), 200, 'an unusable address gets a bucket of its own ...');
is(join(',', map { anon("X-Forwarded-For: garbage-$_") } 1 .. 3), '200,200,429', '... shared by all unusable ones');

# The internal steps are not reachable by API roles.
my ($ret, $out, $err) = $node->psql('bitvelocity',
	q{SET ROLE bv_anon; SELECT bv._request_client_address('1.2.3.4')});
like($err, qr/permission denied for function _request_client_address/, 'bv_anon cannot call the address step');

$pgrst->kill_kill;
$node->stop;
done_testing();
