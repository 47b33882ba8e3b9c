# Issue #17 over real PostgREST (which verifies tokens itself, with its own
# secret): bv.pre_request() applies bv_core's rules to every request.
#   item 8   tokens bv.jwt_verify refuses (no exp, exp 1e309, duplicate
#            claims, deep nesting, revoked jti) are refused over REST too;
#   item 9   an authenticated token without "sub" is refused;
#   item 10  API-key scopes decide the methods; one credential only;
#   item 11  writes to the read-only views: 401/403, never 500;
#   item 13  the payment webhook without its secret: a generic 503;
#   item 15  bad arguments: 22023/22004 with a hint, short messages, a signed
#            webhook with a huge event id refused before it is stored.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use Encode;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('restsec');
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));

# PostgREST's secret is also a key of bv.jwt_keys (tools/peers/postgrest.sh
# does the same for `make run`).
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my $jwt = sub { BvTest::jwt_hs256($secret, $_[0]) };
my $alice = $jwt->(qq({"role":"bv_user","sub":"alice","exp":$exp}));

# Bodies over curl's argument limit go through a file (curl reads "@file").
my $n_file = 0;
sub file_body
{
	my ($text) = @_;
	my $f = "$PostgreSQL::Test::Utils::tmp_check/body_" . ++$n_file . '.json';
	open my $fh, '>', $f or die "cannot write $f: $!";
	print $fh $text;
	close $fh;
	return "\@$f";
}

# A member of a JSON object answer (undef for any other answer).
sub field
{
	my ($json, $name) = @_;
	return ref $json eq 'HASH' ? $json->{$name} : undef;
}

sub call
{
	my ($method, $path, %o) = @_;
	my ($status, $body) = BvTest::http($method, "$url$path", %o);
	my $json = eval { decode_json($body) };
	return ($status, $json // $body);
}

my ($status, $body) = call('GET', '/orders', token => $alice);
is($status, '200', 'a valid token: 200');

# ---- item 8: bv_core's claim policy on the REST entry point ----
my $deep = ('[' x 3000) . (']' x 3000);
my %refused = (
	'no exp' => '{"role":"bv_user","sub":"alice"}',
	'exp 1e309' => '{"role":"bv_user","sub":"alice","exp":1e309}',
	'duplicate sub' => qq({"role":"bv_user","sub":"bob","sub":"alice","exp":$exp}),
	'duplicate role' => qq({"role":"bv_anon","role":"bv_user","sub":"alice","exp":$exp}),
	'3000-deep nesting' => qq({"role":"bv_user","sub":"alice","exp":$exp,"x":$deep}),
	'expired' => sprintf('{"role":"bv_user","sub":"alice","exp":%d}', time() - 3600),
	'exp as a string' => qq({"role":"bv_user","sub":"alice","exp":"$exp"}));
for my $case (sort keys %refused)
{
	($status, $body) = call('GET', '/orders', token => $jwt->($refused{$case}));
	is($status, '401', "token with $case: 401");
}
$node->safe_psql('bitvelocity', q{SELECT bv.jwt_revoke('jti-gone', now() + interval '1 hour', 'test')});
($status, $body) = call('GET', '/orders',
	token => $jwt->(qq({"role":"bv_user","sub":"alice","jti":"jti-gone","exp":$exp})));
is($status, '401', 'revoked jti: 401');
like(field($body, 'details'), qr/revoked/, 'revoked jti: the detail says so');
# A multibyte jti: revoked by its exact bytes, refused over REST too.
my $mb_jti = "jti-\x{fc}ber-\x{1F600}";
my $mb_jti_utf8 = Encode::encode('UTF-8', $mb_jti);
$node->safe_psql('bitvelocity', "SELECT bv.jwt_revoke('$mb_jti_utf8', now() + interval '1 hour', 'test')");
($status, $body) = call('GET', '/orders',
	token => $jwt->(qq({"role":"bv_user","sub":"alice","jti":"$mb_jti_utf8","exp":$exp})));
is($status, '401', 'revoked multibyte jti: 401');

# Two Authorization headers: PostgREST verifies the first, request.headers
# keeps the last; they must agree.
my $bob = $jwt->(qq({"role":"bv_user","sub":"bob","exp":$exp}));
($status, $body) = call('GET', '/orders', headers => [ "Authorization: Bearer $alice", "Authorization: Bearer $bob" ]);
is($status, '400', 'two different bearer tokens: 400');
like(field($body, 'message'), qr/ambiguous credentials/, 'two bearer tokens: the message says why');

# ---- item 9: an authenticated role acts for a subject ----
my $nosub = $jwt->(qq({"role":"bv_user","exp":$exp}));
($status, $body) = call('POST', '/rpc/place_order', token => $nosub,
	body => '{"lines":[{"sku":"BOOK-PGI","quantity":1}]}');
is($status, '401', 'bv_user token without sub: place_order refused with 401');
like(field($body, 'message'), qr/token without a subject/, 'token without sub: the message says why');
($status) = call('GET', '/orders', token => $nosub);
is($status, '401', 'bv_user token without sub: listing orders refused');
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM commerce.orders WHERE customer_id = 'bv_authenticator'}),
	'0', 'no order owned by the authenticator');
($status) = call('GET', '/catalog?limit=1', token => $jwt->(qq({"role":"bv_anon","exp":$exp})));
is($status, '200', 'an anonymous token needs no sub');

# ---- item 10: API-key scopes and one credential ----
my $read_key = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('reader-1', ARRAY['read'])});
my $write_key = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('writer-1', ARRAY['read', 'write'])});
my $orders_before = $node->safe_psql('bitvelocity', 'SELECT count(*) FROM commerce.orders');
($status, $body) = call('POST', '/rpc/place_order', headers => ["x-api-key: $read_key"],
	body => '{"lines":[{"sku":"BOOK-PGI","quantity":1}]}');
is($status, '403', 'a read key cannot place an order: 403');
like(field($body, 'message'), qr/scopes do not allow writes/, 'read key: the message says why');
($status) = call('POST', '/rpc/add_to_cart', headers => ["x-api-key: $read_key"],
	body => '{"sku":"BOOK-PGI","quantity":1}');
is($status, '403', 'a read key cannot add to a cart: 403');
($status) = call('GET', '/rpc/add_to_cart?sku=BOOK-PGI&quantity=1', headers => ["x-api-key: $read_key"]);
isnt($status, '200', "a read key cannot add to a cart with GET either ($status)");
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM commerce.carts WHERE customer_id = 'reader-1'}),
	'0', 'the read key created no cart');
($status, $body) = call('POST', '/rpc/place_order', headers => ["x-api-key: $write_key"],
	body => '{"lines":[{"sku":"BOOK-PGI","quantity":1}]}');
is($status, '200', 'a write key places an order');
my $wk_order = field($body, 'id') // 0;
($status) = call('POST', '/rpc/cancel_order', headers => ["x-api-key: $read_key"],
	body => qq({"order_id":$wk_order}));
is($status, '403', 'a read key cannot cancel: 403');
($status, $body) = call('GET', '/orders?select=id', headers => ["x-api-key: $read_key"]);
is($status, '200', 'a read key reads');
is($node->safe_psql('bitvelocity', 'SELECT count(*) FROM commerce.orders'), $orders_before + 1,
	'only the write key placed an order');

my $anon_token = $jwt->(qq({"role":"bv_anon","exp":$exp}));
($status, $body) = call('GET', '/orders', token => $anon_token, headers => ["x-api-key: $write_key"]);
is($status, '401', 'a bearer token without sub plus an API key: 401');
like(field($body, 'message'), qr/both a bearer token and an API key/, 'two credentials: the message says why');
($status) = call('GET', '/orders', token => $alice, headers => ["x-api-key: $write_key"]);
is($status, '401', 'a bearer token plus an API key: 401');

# ---- item 11: no 500 for writes to the API's views ----
# Each view with one of its own columns (an unknown column would be refused
# by PostgREST before PostgreSQL sees the request).
my %column = (catalog => [ sku => '"BOOK-PGI"' ], orders => [ id => 1 ],
	order_lines => [ order_id => 1 ], payments => [ order_id => 1 ]);
my @five;
for my $view (sort keys %column)
{
	my ($col, $value) = @{ $column{$view} };
	(my $filter = $value) =~ s/"//g;
	for my $method ('POST', 'PATCH', 'PUT', 'DELETE')
	{
		for my $who ([ anon => undef ], [ alice => $alice ])
		{
			my $path = "/$view" . ($method eq 'POST' ? '' : "?$col=eq.$filter");
			($status, $body) = call($method, $path, token => $who->[1],
				$method eq 'DELETE' ? () : (body => qq({"$col":$value})));
			push @five, "$method /$view as $who->[0]: $status" if $status !~ /^4\d\d$/;
		}
	}
}
is(join("\n", @five), '', 'every write to a view is a 4xx');
($status, $body) = call('POST', '/order_lines', token => $alice, body => '{"order_id":1}');
is($status, '403', 'POST /order_lines: 403');
like(field($body, 'message'), qr/permission denied for view order_lines/, 'POST /order_lines: a clear message');
($status) = call('PATCH', '/catalog?sku=eq.BOOK-PGI', body => '{"amount_minor":1}');
is($status, '401', 'anonymous PATCH /catalog: 401');
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM commerce.prices WHERE amount_minor = 1}), '0',
	'no price changed');

# ---- item 13: the webhook before its secret is set ----
my $log_offset = -s $node->logfile;
($status, $body) = call('POST', '/rpc/payment_webhook', body => '{"id":"evt_0","type":"x"}',
	headers => [ 't=1,v1=00' ]);
is($status, '503', 'webhook without a configured secret: 503');
unlike(encode_json($body), qr/secret|bv\.secrets|payment_webhook/i,
	'the answer names neither bv.secrets nor the secret');
# (The backend writes the LOG line before it answers.)
like(PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset),
	qr/secret "commerce\.payment_webhook" is not set/, 'the server log says which secret is missing');

# ---- item 15: bad arguments ----
($status, $body) = call('POST', '/rpc/add_to_cart', token => $alice,
	body => '{"sku":"BOOK-PGI","quantity":1,"currency":"USDX"}');
is($status, '400', 'a four-letter currency: 400');
is(field($body, 'code'), '22023', 'a four-letter currency: 22023, not 22001');
ok(field($body, 'hint'), 'a four-letter currency: with a hint');
my $huge = 'X' x 1_000_000;
($status, $body) = call('POST', '/rpc/add_to_cart', token => $alice,
	body => file_body(qq({"sku":"$huge","quantity":1})));
is($status, '404', 'a 1 MB SKU: 404');
cmp_ok(length(encode_json($body)), '<', 1000, 'a 1 MB SKU is not echoed');
($status, $body) = call('POST', '/rpc/place_order', token => $alice,
	body => file_body(qq({"lines":[{"sku":"$huge","quantity":1}]})));
cmp_ok(length(encode_json($body)), '<', 1000, "place_order with a 1 MB SKU: a short answer ($status)");
($status, $body) = call('POST', '/rpc/place_order', token => $alice,
	body => file_body(qq({"lines":[{"sku":"$huge","quantity":0}]})));
is($status, '400', 'an invalid line with a 1 MB SKU: 400');
cmp_ok(length(encode_json($body)), '<', 1000, 'an invalid line is not echoed in full');
($status, $body) = call('POST', '/rpc/cancel_order', token => $alice, body => '{"order_id":null}');
is(field($body, 'code'), '22004', 'cancel_order(NULL): 22004');

my $wh_secret = 'whsec_' . join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 32;
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('commerce.payment_webhook', '$wh_secret')");
my $signed = sub {
	my ($event) = @_;
	my $t = time();
	return call('POST', '/rpc/payment_webhook', body => file_body($event),
		headers => [ "bv-signature: t=$t,v1=" . hmac_sha256_hex("$t.$event", $wh_secret) ]);
};
my $event_with_id = sub {
	sprintf('{"id":"%s","type":"payment.succeeded","data":{"payment_ref":"p","amount_minor":1,"currency":"USD"}}', $_[0]);
};
($status, $body) = $signed->($event_with_id->('e' x 1_000_000));
is($status, '413', 'a signed webhook with a 1 MB event id: 413 (the body is too large)');
like(field($body, 'message'), qr/webhook body too large/, 'a 1 MB body: the message says why, not "index row requires"');
($status, $body) = $signed->($event_with_id->('e' x 100_000));
is($status, '400', 'a signed webhook with a 100 kB event id: 400');
is(field($body, 'code'), '22023', 'a 100 kB event id: 22023, not 54000');
cmp_ok(length(encode_json($body)), '<', 1000, 'the event id is not echoed');
($status, $body) = $signed->('{"id":"evt_x","type":"payment.succeeded","data":{"payment_ref":"p","amount_minor":"lots","currency":"USD"}}');
is(field($body, 'code'), '22023', 'a non-numeric amount: 22023, not 22P02');
is($node->safe_psql('bitvelocity', 'SELECT count(*) FROM commerce.webhook_events'), '0', 'nothing stored');

$pgrst->kill_kill;
$node->stop;
done_testing();
