# bv_graphql attacked through real PostgREST: a mutation sent with GET
# changes nothing, a nested page bomb is refused before it runs (it used to
# get the server OOM-killed), a filter bomb in variables is refused, and
# every error is a GraphQL error (HTTP 200, errors[] with extensions.code)
# rather than an HTTP error carrying SQL internals.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('graphql_red');
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $tok = BvTest::jwt_hs256($secret, '{"role":"bv_user","sub":"alice","exp":' . (time() + 600) . '}');
my $json = JSON::PP->new->canonical;

sub post
{
	my ($body) = @_;
	my ($status, $out) = BvTest::http('POST', "$url/rpc/graphql", token => $tok, body => $body);
	return ($status, eval { decode_json($out) } // { raw => $out });
}

# ---------- a mutation through GET changes nothing ----------
$node->safe_psql('bitvelocity', q{
INSERT INTO commerce.addresses (customer_id, name, line1, city, postal_code, country)
VALUES ('alice', 'Alice', '1 Main St', 'Oslo', '0150', 'NO')});
my $before = $node->safe_psql('bitvelocity', 'SELECT count(*) FROM commerce.addresses');
my $m = 'mutation { deleteFromAddressesCollection(atMost: 10) { affectedCount } }';
(my $q = $m) =~ s/([^A-Za-z0-9])/sprintf('%%%02X', ord $1)/ge;
my ($status, $body) = BvTest::http('GET', "$url/rpc/graphql?query=$q", token => $tok);
isnt($body // '', '', 'GET /rpc/graphql with a mutation answers');
is($node->safe_psql('bitvelocity', 'SELECT count(*) FROM commerce.addresses'), $before,
	'GET /rpc/graphql with a mutation deleted nothing');
unlike($body, qr/commerce\.|read-only transaction|DELETE/, 'and its answer names no SQL internals');

# ---------- nested pages multiply: refused before anything runs ----------
my $bomb = '{ productsCollection(first: 1000) { edges { node { skusCollection(first: 1000) { edges { node { code } } } } } } }';
my $r;
($status, $r) = post($json->encode({ query => $bomb }));
is($status, '200', 'nested page bomb: HTTP 200');
is($r->{errors}[0]{extensions}{code}, 'GRAPHQL_VALIDATION_FAILED', 'nested page bomb: a validation error');
like($r->{errors}[0]{message}, qr/bv_graphql\.max_records/, 'nested page bomb: names the limit');
ok(!exists $r->{data}, 'nested page bomb: no data');

# ---------- a filter bomb in variables ----------
my $f = { or => [ map { {} } 1 .. 6000 ] };
($status, $r) = post($json->encode({ query => 'query($f: SkusFilter) { skusCollection(filter: $f) { totalCount } }',
		variables => { f => $f } }));
is($r->{errors}[0]{extensions}{code}, 'GRAPHQL_VALIDATION_FAILED', 'filter bomb in variables: refused');

# ---------- error shapes ----------
($status, $r) = post($json->encode({ query => '{ productsCollection { ' }));
is($status, '200', 'syntax error: HTTP 200');
is($r->{errors}[0]{extensions}{code}, 'GRAPHQL_PARSE_FAILED', 'syntax error: GRAPHQL_PARSE_FAILED');
ok($r->{errors}[0]{locations}[0]{line}, 'syntax error: has a location');
($status, $r) = post($json->encode({ query => '{ productsCollection { totalCount } }', variables => undef }));
ok(defined $r->{data}{productsCollection}{totalCount}, '"variables": null is accepted');
($status, $r) = post($json->encode({ query => '{ productsCollection(first: -5) { totalCount } }' }));
is($r->{errors}[0]{extensions}{code}, 'GRAPHQL_VALIDATION_FAILED', 'negative first: a validation error');
($status, $r) = post($json->encode({ query => 'query { node(nodeId: "WyJjb21tZXJjZSIsICJza3VzIiwgIngiXQ==") { nodeId } }' }));
is($status, '200', 'a nodeId with a key of the wrong type: HTTP 200');
ok($r->{errors}[0]{extensions}{code}, 'a nodeId with a key of the wrong type: an error with a code');
unlike($json->encode($r), qr/commerce\.skus|STATEMENT|SELECT /, 'and no SQL text in it');

$pgrst->kill_kill;
$node->stop;
done_testing();
