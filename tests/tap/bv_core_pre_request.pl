# bv.pre_request() under PostgREST's per-request prelude, replayed in SQL as
# bv_authenticator: JWT claims (re-verified from the Authorization header),
# x-api-key (role switch, claims, actor), invalid and revoked credentials
# (PT401), malformed request settings (PT400), and the rate limit (PGRST
# with status 429 and a Retry-After header), in READ ONLY (GET)
# transactions too; no API role can call the internal step.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('prerequest',
	extra_conf => "bv.request_rate = 0.01\nbv.request_burst = 3\n");
BvTest::create_suite_db($node);

my $key = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('owner-7', ARRAY['read'])});
like($key, qr/^bvk_[A-Za-z0-9_-]{43}$/, 'an API key was created');
my $svc_key = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('svc-batch', ARRAY['service'])});
$node->safe_psql('bitvelocity', q{SELECT bv.jwt_revoke('revoked-jti', now() + interval '1 hour', 'test')});

# PostgREST's JWT secret is a key of bv.jwt_keys too: pre_request verifies
# the bearer token again with bv.jwt_verify().
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my $exp = time() + 600;
# The claims PostgREST would set, and the headers carrying the token.
sub bearer
{
	my ($claims) = @_;
	my $jwt = BvTest::jwt_hs256($secret, $claims);
	return (claims => $claims, headers => qq({"authorization":"Bearer $jwt"}));
}

# One PostgREST request: the prelude, db-pre-request, the query.
sub request
{
	my (%r) = @_;
	my $mode = $r{read_only} ? 'READ ONLY' : 'READ WRITE';
	my $headers = $r{headers} // '{}';
	return <<"SQL";
\\set VERBOSITY verbose
BEGIN ISOLATION LEVEL READ COMMITTED $mode;
SELECT set_config('search_path', 'public', true),
       set_config('role', '$r{role}', true),
       set_config('request.jwt.claims', '$r{claims}', true),
       set_config('request.method', '$r{method}', true),
       set_config('request.path', '/rpc/whoami', true),
       set_config('request.headers', '$headers', true),
       set_config('request.cookies', '{}', true) \\gset
SELECT bv.pre_request() \\gset
$r{query};
COMMIT;
SQL
}

sub run_request
{
	my ($ret, $out, $err) = $node->psql('bitvelocity', request(@_),
		extra_params => [ '-U', 'bv_authenticator' ]);
	return ($out, $err);
}

my $who = "SELECT current_user, bv.actor(), coalesce(bv.current_user_id(), '-'), bv.has_scope('read')";

# 1. A JWT request (PostgREST verified it and set the role and claims).
my ($out, $err) = run_request(role => 'bv_user', method => 'GET', read_only => 1,
	bearer(qq({"role":"bv_user","sub":"alice","jti":"ok-jti","scope":"read","exp":$exp})), query => $who);
is($out, 'bv_user|alice|alice|t', 'JWT request in a READ ONLY transaction: role, actor, user id, scope');
is($err, '', 'no error');

# 2. An API key: the anonymous request becomes the key's role and owner.
($out, $err) = run_request(role => 'bv_anon', method => 'GET', read_only => 1,
	claims => '{"role":"bv_anon"}', headers => qq({"x-api-key":"$key"}), query => $who);
is($out, 'bv_user|owner-7|owner-7|t', 'API key: role from its scopes, owner as actor and user id');
($out, $err) = run_request(role => 'bv_anon', method => 'POST',
	claims => '{"role":"bv_anon"}', headers => qq({"x-api-key":"$svc_key"}),
	query => "SELECT current_user, bv.actor(), current_setting('request.jwt.claims')::jsonb ->> 'scope'");
is($out, 'bv_service|svc-batch|service', 'a service key acts as bv_service');

# 2b. Scopes decide the methods (#17 item 10): a read key cannot write.
($out, $err) = run_request(role => 'bv_anon', method => 'POST',
	claims => '{"role":"bv_anon"}', headers => qq({"x-api-key":"$key"}), query => $who);
like($err, qr/ERROR:  PT403: the API key's scopes do not allow writes/, 'a read key cannot POST: PT403');
is($out, '', 'the query did not run');
($out, $err) = run_request(role => 'bv_anon', method => 'DELETE',
	claims => '{"role":"bv_anon"}', headers => qq({"x-api-key":"$key"}), query => $who);
like($err, qr/ERROR:  PT403/, 'a read key cannot DELETE: PT403');

# 3. Bad credentials: PT401 (HTTP 401).
($out, $err) = run_request(role => 'bv_anon', method => 'GET', claims => '{"role":"bv_anon"}',
	headers => '{"x-api-key":"bvk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}', query => $who);
like($err, qr/ERROR:  PT401: invalid API key/, 'an unknown API key: PT401');
is($out, '', 'the query did not run');
$node->safe_psql('bitvelocity', q{SELECT bv.api_key_revoke(id) FROM bv.api_keys WHERE owner = 'svc-batch'});
($out, $err) = run_request(role => 'bv_anon', method => 'GET', claims => '{"role":"bv_anon"}',
	headers => qq({"x-api-key":"$svc_key"}), query => $who);
like($err, qr/ERROR:  PT401: invalid API key/, 'a revoked API key: PT401');
($out, $err) = run_request(role => 'bv_user', method => 'GET',
	bearer(qq({"role":"bv_user","sub":"mallory","jti":"revoked-jti","exp":$exp})), query => $who);
like($err, qr/ERROR:  PT401: invalid token\n.*revoked/i, 'a revoked JWT (jti): PT401');
my %alice = bearer(qq({"role":"bv_user","sub":"alice","exp":$exp}));
(my $both = $alice{headers}) =~ s/\}$/,"x-api-key":"$key"}/;
($out, $err) = run_request(role => 'bv_user', method => 'GET',
	claims => $alice{claims}, headers => $both, query => $who);
like($err, qr/ERROR:  PT401: both a bearer token and an API key were sent/, 'two credentials: PT401');
# A token without "sub" plus a key slipped through before (#17 item 10).
my %nosub = bearer(qq({"role":"bv_anon","exp":$exp}));
($both = $nosub{headers}) =~ s/\}$/,"x-api-key":"$key"}/;
($out, $err) = run_request(role => 'bv_anon', method => 'GET',
	claims => $nosub{claims}, headers => $both, query => $who);
like($err, qr/ERROR:  PT401: both a bearer token and an API key were sent/,
	'a token without sub and an API key: PT401');

# 3b. Claims that no token backs (#17 item 8): refused.
($out, $err) = run_request(role => 'bv_user', method => 'GET',
	claims => '{"role":"bv_user","sub":"alice"}', query => $who);
like($err, qr/ERROR:  PT401: claims without a bearer token/, 'claims without a token: PT401');
is($out, '', 'the query did not run');
($out, $err) = run_request(role => 'bv_user', method => 'GET',
	claims => '{"role":"bv_user","sub":"alice"}', headers => $nosub{headers}, query => $who);
like($err, qr/ERROR:  PT400: ambiguous credentials/, 'claims that differ from the token: PT400');
($out, $err) = run_request(role => 'bv_user', method => 'GET',
	bearer(qq({"role":"bv_user","exp":$exp})), query => $who);
like($err, qr/ERROR:  PT401: token without a subject/, 'a bv_user token without sub: PT401 (#17 item 9)');
($out, $err) = run_request(role => 'bv_authenticator', method => 'GET',
	bearer(qq({"role":"bv_authenticator","sub":"x","exp":$exp})), query => $who);
like($err, qr/ERROR:  PT401: token for a role that is not an API role/, 'a token for the login role: PT401');

# 3c. Malformed request settings (#17 item 15): a clean PT400, not 22P02.
for my $bad ([ claims => '{not json', headers => '{}' ], [ claims => '{"role":"bv_anon"}', headers => '[1]' ],
	[ claims => '{"role":"bv_anon"}', headers => '{"x-api-key":7}' ],
	[ claims => '{"role":"bv_anon"}', headers => '{"authorization":{"a":1}}' ])
{
	my %b = @$bad;
	($out, $err) = run_request(role => 'bv_anon', method => 'GET', %b, query => $who);
	like($err, qr/ERROR:  PT400: malformed request context/, "malformed settings ($b{claims} / $b{headers}): PT400");
}

# 4. Rate limit: burst 3, then HTTP 429 with Retry-After (PostgREST's PGRST
#    error: the message and detail are JSON).  "carol" has used no token yet.
my @verdicts;
for my $i (1 .. 4)
{
	($out, $err) = run_request(role => 'bv_user', method => 'GET', read_only => 1,
		bearer(qq({"role":"bv_user","sub":"carol","exp":$exp})), query => 'SELECT 1');
	push @verdicts, ($out eq '1' ? 'ok' : $err);
}
is_deeply([ @verdicts[ 0 .. 2 ] ], [ 'ok', 'ok', 'ok' ], 'the burst of 3 requests passes');
like($verdicts[3], qr/ERROR:  PGRST: \{"code" : "PT429", "message" : "rate limit exceeded"/,
	'the 4th request: PGRST error with code PT429');
like($verdicts[3], qr/DETAIL:  \{"status" : 429, "headers" : \{"Retry-After" : "(\d+)"\}\}/,
	'status 429 and a Retry-After header');
my ($retry) = $verdicts[3] =~ /"Retry-After" : "(\d+)"/;
cmp_ok($retry, '>=', 90, "Retry-After ($retry s) matches 1 / bv.request_rate");
($out, $err) = run_request(role => 'bv_user', method => 'GET', read_only => 1,
	bearer(qq({"role":"bv_user","sub":"dave","exp":$exp})), query => 'SELECT 1');
is($out, '1', 'another user has his own bucket');

# 5. Consecutive requests on one connection do not leak the API key's role.
(undef, $out, $err) = $node->psql('bitvelocity',
	request(role => 'bv_anon', method => 'GET', claims => '{"role":"bv_anon"}',
		headers => qq({"x-api-key":"$key"}), query => 'SELECT current_user')
	  . request(role => 'bv_anon', method => 'GET', claims => '{"role":"bv_anon"}',
		query => "SELECT current_user, coalesce(bv.current_user_id(), '-')"),
	extra_params => [ '-U', 'bv_authenticator' ]);
is(join(',', split /\n/, $out), 'bv_user,bv_anon|-', 'the next request on the connection is anonymous again');

# 6. An API role cannot drain somebody else's bucket directly, nor call
#    the internal step of pre_request (#17 item 7).
my %eve = bearer(qq({"role":"bv_user","sub":"eve","exp":$exp}));
($out, $err) = run_request(role => 'bv_user', method => 'POST', %eve,
	query => q{SELECT bv.rate_limit('sub:alice', 1, 1)});
like($err, qr/42501: permission denied for function rate_limit/, 'bv_user cannot call bv.rate_limit');
for my $role ('bv_anon', 'bv_user', 'bv_service', 'bv_admin')
{
	(undef, $out, $err) = $node->psql('bitvelocity', qq{SET ROLE $role; SELECT * FROM bv._request_admit('bv_user')},
		extra_params => [ '-U', 'bv_authenticator', '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/42501: permission denied for function _request_admit/, "$role cannot call bv._request_admit");
}
(undef, $out, $err) = $node->psql('bitvelocity', q{SELECT bv.pre_request()});
like($err, qr/pre_request\(\) runs only in sessions of bv_authenticator/,
	'pre_request refuses sessions other than PostgREST\'s login');

$node->stop;
done_testing();
