# Red-team round 3, bv_core: a single API request must not run for
# minutes.  No API role had a statement_timeout, so an anonymous request to
# anything slow (here a test function that sleeps; in real life an
# unindexed filter on a large view, a deep GraphQL query) held one of
# PostgREST's pooled connections until it finished: a few such requests
# took the API down.  bv_core 0.5.0 gives bv_anon, bv_user and bv_service
# a statement_timeout (10 s, 30 s, 60 s), which PostgREST applies to the
# requests it impersonates them for; an operator's own value is kept.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

sub jbody { my $x = eval { decode_json($_[0]) }; return ref($x) eq 'HASH' ? $x : {}; }

my $node = BvTest::new_node('rest3to');
BvTest::create_suite_db($node);
sub q1 { return $node->safe_psql('bitvelocity', $_[0]); }

# the product's defaults, per role
is(q1(q{SELECT string_agg(r.rolname || '=' || coalesce((SELECT substr(c, 19) FROM pg_db_role_setting s, unnest(s.setconfig) c
        WHERE s.setrole = r.oid AND s.setdatabase = 0 AND c LIKE 'statement\_timeout=%'), 'none'), ' ' ORDER BY r.rolname)
        FROM pg_roles r WHERE r.rolname IN ('bv_anon', 'bv_user', 'bv_service', 'bv_admin', 'bv_authenticator')}),
	'bv_admin=none bv_anon=10s bv_authenticator=none bv_service=60s bv_user=30s',
	'API roles have a statement_timeout (bv_admin and the login none)');

# A slow endpoint (a stand-in for any slow request), as a test fixture.
q1(q{
CREATE FUNCTION api.rt3_sleep(seconds float8) RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT pg_sleep(seconds)::text || 'slept' $$;
GRANT EXECUTE ON FUNCTION api.rt3_sleep(float8) TO bv_anon;
});
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
q1("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my $user = BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"alice","exp":$exp}));

my ($s, $b) = BvTest::http('POST', "$url/rpc/rt3_sleep", body => '{"seconds": 0}');
is($s, '200', 'a quick anonymous request answers');
($s, $b) = BvTest::http('POST', "$url/rpc/rt3_sleep", body => '{"seconds": 11}');
my $j = jbody($b);
is($j->{code} // '', '57014', 'an anonymous request is cancelled by its statement_timeout (57014)')
  or diag("status $s: $b");
isnt($s, '200', '... and does not succeed');
($s, $b) = BvTest::http('POST', "$url/rpc/rt3_sleep", token => $user, body => '{"seconds": 11}');
is($s, '200', 'a signed-in user has a longer limit (30 s)') or diag($b);

# the operator's own value wins (PostgREST reloads role settings on NOTIFY)
q1(q{ALTER ROLE bv_anon SET statement_timeout = '1s'; NOTIFY pgrst, 'reload config'});
my $cancelled = 0;
for (1 .. 100)
{
	($s, $b) = BvTest::http('POST', "$url/rpc/rt3_sleep", body => '{"seconds": 2}');
	$j = jbody($b);
	if (($j->{code} // '') eq '57014') { $cancelled = 1; last; }
	select(undef, undef, undef, 0.2);
}
ok($cancelled, 'an operator\'s ALTER ROLE ... SET statement_timeout applies');
q1(q{ALTER EXTENSION bv_core UPDATE});
is(q1(q{SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setrole = 'bv_anon'::regrole AND s.setdatabase = 0 AND c LIKE 'statement%'}),
	'statement_timeout=1s', 'and is kept');
q1(q{ALTER ROLE bv_anon SET statement_timeout = '10s'});

$pgrst->kill_kill;
$node->stop;
done_testing();
