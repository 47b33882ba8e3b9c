# The request context through real PostgREST over HTTP: the actor from the
# verified token's "sub", the login role for anonymous calls, bv.set_actor()
# for services, the traceparent header, and refusals.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('pgrst');
BvTest::create_suite_db($node);

# A test API (its own schema; bv_commerce owns "api"): who the database
# thinks is calling.
$node->safe_psql('bitvelocity', q{
CREATE SCHEMA whoami_api;
GRANT USAGE ON SCHEMA whoami_api TO bv_anon;
CREATE FUNCTION whoami_api.whoami() RETURNS json LANGUAGE sql STABLE
AS $$ SELECT json_build_object('actor', bv.actor(), 'role', current_user,
                               'trace', bv.trace_context()) $$;
GRANT EXECUTE ON FUNCTION whoami_api.whoami() TO bv_anon;
CREATE FUNCTION whoami_api.act_for(user_id text) RETURNS text LANGUAGE plpgsql
AS $$ BEGIN PERFORM bv.set_actor(user_id); RETURN bv.actor(); END $$;
REVOKE ALL ON FUNCTION whoami_api.act_for(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whoami_api.act_for(text) TO bv_service;
});

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
# bv.pre_request() verifies every bearer token again with bv.jwt_verify():
# PostgREST's secret is a key of bv.jwt_keys (as make run registers it).
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret,
	schemas => 'whoami_api');
my $exp = time() + 600;
my $token = sub {
	my ($role, $sub) = @_;
	BvTest::jwt_hs256($secret,
		qq({"role":"$role","exp":$exp) . (defined $sub ? qq(,"sub":$sub) : '') . '}');
};
my $tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

my ($status, $body) = BvTest::http('GET', "$url/rpc/whoami");
is($status, '200', 'anonymous GET: 200');
is_deeply(decode_json($body),
	{ actor => 'bv_authenticator', role => 'bv_anon', trace => undef },
	'anonymous GET: the login role is the actor');

($status, $body) = BvTest::http('GET', "$url/rpc/whoami",
	token => $token->('bv_user', '"user-42"'),
	headers => ["traceparent: $tp"]);
is($status, '200', 'user GET: 200');
is_deeply(decode_json($body),
	{ actor => 'user-42', role => 'bv_user', trace => $tp },
	'user GET: actor from sub, role from the token, trace from the header');

($status, $body) = BvTest::http('POST', "$url/rpc/act_for",
	token => $token->('bv_service', '"svc-billing"'),
	body => '{"user_id":"user-7"}');
is($status, '200', 'service POST: 200');
is(decode_json($body), 'user-7', 'service POST: bv.set_actor wins over sub');

($status, $body) = BvTest::http('POST', "$url/rpc/act_for",
	token => $token->('bv_user', '"mallory"'),
	body => '{"user_id":"alice"}');
is($status, '403', 'user POST to a service function: 403');

my $forged = $token->('bv_service', '"svc"');
$forged =~ s/.$/($& eq 'A') ? 'B' : 'A'/e;
($status) = BvTest::http('GET', "$url/rpc/whoami", token => $forged);
is($status, '401', 'tampered signature: 401');

# PostgREST itself refuses a non-string "sub" (401); a string that is no
# usable actor (a newline would forge log lines) reaches bv.actor(), which
# refuses it rather than falling back to the login role.
($status) = BvTest::http('GET', "$url/rpc/whoami",
	token => $token->('bv_user', '12345'));
is($status, '401', 'numeric sub: refused by PostgREST');
($status, $body) = BvTest::http('GET', "$url/rpc/whoami",
	token => $token->('bv_user', '"evil\\nINFO forged"'));
is($status, '400', 'sub with a control character: 400, not a silent fall-back');
like(decode_json($body)->{message}, qr/invalid actor in the "sub" claim/,
	'sub with a control character: the message says why');

$pgrst->kill_kill;
$node->stop;
done_testing();
