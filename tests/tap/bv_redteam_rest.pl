# Red-team review over real PostgREST: variants of the issue #17 findings
# that the first rounds did not try.
#  - role claims naming roles that are not API roles (a superuser, the
#    objects' owner, pg_* roles, the login itself, case and space variants):
#    always refused with a 4xx, never a 5xx, never served;
#  - tokens with edge values (exp at the leeway's edge, exp/nbf/iat huge or
#    negative, a fractional exp, crit, duplicate header names, kid tricks,
#    NUL and lone surrogates in claims): refused or accepted exactly as
#    bv.jwt_verify() decides, never a 5xx;
#  - API keys: a read key through GET/HEAD on write functions, method
#    override headers, a key revoked between two requests on the same
#    PostgREST connection.
use strict;
use warnings;

use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use Digest::SHA qw(hmac_sha256);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('rtrest');
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity', "INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;

sub sign
{
	my ($header, $claims) = @_;
	my $h = encode_base64url($header);
	my $b = encode_base64url($claims);
	return "$h.$b." . encode_base64url(hmac_sha256("$h.$b", $secret));
}
sub tok { return sign('{"alg":"HS256","typ":"JWT"}', $_[0]); }

sub call
{
	my ($method, $path, %o) = @_;
	my ($status, $body) = BvTest::http($method, "$url$path", %o);
	return ($status, $body);
}

my $orders = sub { $node->safe_psql('bitvelocity', 'SELECT count(*) FROM commerce.orders') };

# ---- role claims that are not API roles ----
$node->safe_psql('bitvelocity', 'CREATE ROLE rt_owner NOLOGIN; GRANT rt_owner TO bv_authenticator');
my @roles = ('postgres', 'bv_authenticator', 'pg_read_all_data', 'pg_write_all_data', 'pg_signal_backend',
	'pg_monitor', 'rt_owner', 'BV_USER', 'bv_user ', ' bv_user', "bv_user\\u0000", 'public', 'PUBLIC',
	'none', 'NONE', 'current_user', 'session_user', '', 'bv_user"; SET ROLE postgres; --');
my @bad;
for my $role (@roles)
{
	my $t = tok(qq({"role":"$role","sub":"alice","exp":$exp}));
	for my $path ('/orders?select=id', '/rpc/order_history?order_id=1')
	{
		my ($s, $b) = call('GET', $path, token => $t);
		push @bad, "role '$role' $path: $s" unless $s =~ /^4\d\d$/;
	}
	my ($s) = call('POST', '/rpc/place_order', token => $t, body => '{"lines":[{"sku":"BOOK-PGI","quantity":1}]}');
	push @bad, "role '$role' place_order: $s" unless $s =~ /^4\d\d$/;
}
# the role as a number, an array, an object, null
for my $role ('1', '["bv_user"]', '{"r":"bv_user"}', 'null', 'true')
{
	my ($s) = call('GET', '/orders?select=id', token => tok(qq({"role":$role,"sub":"alice","exp":$exp})));
	push @bad, "role $role: $s" unless $s =~ /^4\d\d$/;
}
is(join("\n", @bad), '', 'every role claim that is not an API role is a 4xx');
is($orders->(), '0', 'no order was placed with them');

# ---- edge values in tokens ----
my $now = time();
my %want = (
	# exp and the leeway (30 s by default)
	qq({"role":"bv_user","sub":"a","exp":@{[ $now - 40 ]}}) => 401,
	qq({"role":"bv_user","sub":"a","exp":@{[ $now + 60 ]}.5}) => 200,
	qq({"role":"bv_user","sub":"a","exp":1e18}) => 200,
	qq({"role":"bv_user","sub":"a","exp":1e300}) => 200,
	qq({"role":"bv_user","sub":"a","exp":-1e300}) => 401,
	qq({"role":"bv_user","sub":"a","exp":"$exp"}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"nbf":1e300}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"nbf":"0"}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"iat":@{[ $now + 3600 ]}}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"iat":-1}) => 200,
	qq({"role":"bv_user","sub":"a\\u0000b","exp":$exp}) => 401,
	qq({"role":"bv_user","sub":"a\\ud800","exp":$exp}) => 401,
	# bv_core 0.5.0: an actor may not hold invisible formatting characters
	qq({"role":"bv_user","sub":"\\u202eecila","exp":$exp}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"jti":""}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"jti":1}) => 401,
	qq({"role":"bv_user","sub":1,"exp":$exp}) => 401,
	qq({"role":"bv_user","sub":"","exp":$exp}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"role":"bv_admin"}) => 401,
	qq({"role":"bv_user","sub":"a","exp":$exp,"x":{"role":"bv_admin","role":"bv_admin"}}) => 200,
);
my @wrong;
for my $claims (sort keys %want)
{
	my ($s) = call('GET', '/orders?select=id', token => tok($claims));
	push @wrong, "$claims: $s, expected $want{$claims}" unless $s eq $want{$claims} || ($want{$claims} == 401 && $s =~ /^40[013]$/);
}
my %headers = (
	'{"alg":"HS256","crit":[]}' => 401,
	'{"alg":"HS256","crit":["exp"],"exp":1}' => 401,
	'{"alg":"HS256","alg":"HS256"}' => 401,
	'{"alg":"none","alg":"HS256"}' => 401,
	'{"alg":"HS256","kid":"nonexistent"}' => 401,
	'{"alg":"HS256","kid":"postgrest"}' => 200,
	'{"alg":"HS256","kid":"postgrest\\u0000"}' => 401,
	'{"alg":"HS256","kid":"POSTGREST"}' => 401,
	'{"alg":"HS256","kid":["postgrest"]}' => 401,
	'{"alg":"HS256","kid":"postgrest","jku":"http://127.0.0.1:1/jwks"}' => 200,
	'{"alg":"HS256","b64":false}' => 200,
	'{"alg":"hs256"}' => 401,
	'{"alg":"HS256 "}' => 401,
	'{"typ":"JWT"}' => 401,
	'[]' => 401,
);
for my $header (sort keys %headers)
{
	my ($s) = call('GET', '/orders?select=id', token => sign($header, qq({"role":"bv_user","sub":"a","exp":$exp})));
	push @wrong, "header $header: $s, expected $headers{$header}"
	  unless $s eq $headers{$header} || ($headers{$header} == 401 && $s =~ /^40[013]$/);
}
is(join("\n", @wrong), '', 'edge tokens are refused (4xx) or accepted exactly as bv.jwt_verify() decides');

# ---- API keys ----
my $read = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('reader-rt', ARRAY['read'])});
my $write = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('writer-rt', ARRAY['write'])});
my @leaks;
for my $m ('GET', 'HEAD')
{
	my ($s) = call($m, '/rpc/add_to_cart?sku=BOOK-PGI&quantity=1', headers => ["x-api-key: $read"]);
	push @leaks, "$m add_to_cart: $s" if $s =~ /^2/;
	($s) = call($m, '/rpc/place_order?lines=%5B%7B%22sku%22%3A%22BOOK-PGI%22%2C%22quantity%22%3A1%7D%5D',
		headers => ["x-api-key: $read"]);
	push @leaks, "$m place_order: $s" if $s =~ /^2/;
}
for my $h ('X-HTTP-Method-Override: GET', 'X-HTTP-Method: GET', 'X-Method-Override: GET')
{
	my ($s) = call('POST', '/rpc/add_to_cart', headers => ["x-api-key: $read", $h], body => '{"sku":"BOOK-PGI","quantity":1}');
	push @leaks, "POST with $h: $s" if $s !~ /^403$/;
}
my ($s) = call('POST', '/rpc/add_to_cart', headers => ["x-api-key:  $read  "], body => '{"sku":"BOOK-PGI","quantity":1}');
push @leaks, "padded read key: $s" if $s =~ /^2/;
is(join("\n", @leaks), '', 'a read key writes through no method, override header or padding');
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM commerce.carts WHERE customer_id = 'reader-rt'}), '0',
	'the read key created no cart');

# A key revoked between two requests (PostgREST keeps its connections).
($s) = call('GET', '/orders?select=id', headers => ["x-api-key: $write"]);
is($s, '200', 'the write key reads');
$node->safe_psql('bitvelocity', q{SELECT bv.api_key_revoke(id) FROM bv.api_key_list('writer-rt')});
($s) = call('GET', '/orders?select=id', headers => ["x-api-key: $write"]);
is($s, '401', 'revoked: the next request is refused');
# A key expiring: refused once its time has passed.
my $short = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('short-rt', ARRAY['read'], clock_timestamp() + interval '2 seconds')});
($s) = call('GET', '/orders?select=id', headers => ["x-api-key: $short"]);
is($s, '200', 'a key about to expire reads');
$node->poll_query_until('bitvelocity', q{SELECT bool_and(expires_at < clock_timestamp()) FROM bv.api_key_list('short-rt')});
($s) = call('GET', '/orders?select=id', headers => ["x-api-key: $short"]);
is($s, '401', 'an expired key is refused');

$pgrst->kill_kill;
$node->stop;
done_testing();
