# Issue #17, attack review: no HTTP 5xx for anything a client can send to
# the REST API (every api function and view, every method, credential and
# content negotiation header, hostile bodies and huge headers).  The
# payment webhook's 503 (secret not set) is exercised elsewhere; here the
# secret is set.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('atksweep', extra_conf => "bv.request_rate = 100000\nbv.request_burst = 100000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity', "INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my $wh_secret = 'whsec_' . join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 32;
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('commerce.payment_webhook', '$wh_secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 3600;
my $jwt = sub { BvTest::jwt_hs256($secret, $_[0]) };
my $read_key = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('reader-1', ARRAY['read'])});
my $write_key = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('writer-1', ARRAY['read', 'write'])});
my $svc_key = $node->safe_psql('bitvelocity', q{SELECT bv.api_key_create('svc-1', ARRAY['service'])});

my %who = (
	anon => [],
	alice => [ token => $jwt->(qq({"role":"bv_user","sub":"alice","exp":$exp})) ],
	service => [ token => $jwt->(qq({"role":"bv_service","sub":"svc","exp":$exp})) ],
	admin => [ token => $jwt->(qq({"role":"bv_admin","sub":"adm","exp":$exp})) ],
	read_key => [ headers => ["x-api-key: $read_key"] ],
	write_key => [ headers => ["x-api-key: $write_key"] ],
	svc_key => [ headers => ["x-api-key: $svc_key"] ]);

# A real order of alice's, for the functions that take an order id.
my (undef, $ob) = BvTest::http('POST', "$url/rpc/place_order", @{ $who{alice} },
	body => '{"lines":[{"sku":"BOOK-PGI","quantity":1}]}');
my $oid = eval { decode_json($ob)->{id} } // 1;

# Every function and view of schema api, whichever extensions published
# them (bv_commerce, bv_ml, ...).
my @functions = split /\n/, $node->safe_psql('bitvelocity',
	q{SELECT DISTINCT p.proname FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace ORDER BY 1});
my @views = split /\n/, $node->safe_psql('bitvelocity',
	q{SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'api'::regnamespace AND c.relkind IN ('v', 'r', 'm', 'f', 'p') ORDER BY 1});
note("api functions: @functions; views: @views");
cmp_ok(scalar(@functions), '>=', 9, 'the sweep sees the api functions');
my @bodies = ('{}', '[]', 'null', '"s"', '1', '{"x":1}', '[{}]', '[{"order_id":1},{"order_id":2}]',
	qq({"order_id":$oid}), '{"order_id":"x"}', '{"order_id":1e30}', '{"order_id":-1}', '{"order_id":null}',
	sprintf('{"order_id":%d,"reason":"%s"}', $oid, 'r' x 600), sprintf('{"order_id":%d,"tracking_code":"%s"}', $oid, 't' x 200),
	qq({"order_id":$oid,"amount_minor":-1}), qq({"order_id":$oid,"amount_minor":9223372036854775807}),
	qq({"order_id":$oid,"amount_minor":1.5}),
	'{"sku":null,"quantity":null}', '{"sku":"BOOK-PGI","quantity":2147483648}', '{"sku":"BOOK-PGI","quantity":-2147483648}',
	'{"sku":"BOOK-PGI","quantity":1,"currency":"\u0000"}', '{"sku":"BOOK-PGI","quantity":1,"currency":"€€€"}',
	'{"sku":"' . ('\ud83d\ude00' x 100) . '","quantity":1}',
	'{"lines":"x"}', '{"lines":[null]}', '{"lines":[[]]}', '{"lines":[{"sku":"BOOK-PGI","quantity":1e10}]}',
	'{"lines":[{"sku":"BOOK-PGI","quantity":"1"}]}', '{"lines":[{"sku":{"a":1},"quantity":1}]}',
	'{"lines":' . ('[' x 200) . (']' x 200) . '}',
	'{"lines":[' . join(',', map { '{"sku":"BOOK-PGI","quantity":1}' } 1 .. 150) . ']}',
	'{"cart_id":-1}', '{"cart_id":1,"lines":[]}', '{"shipping_address":"x","lines":[{"sku":"BOOK-PGI","quantity":1}]}',
	'{"shipping_address":{"a":"' . ('x' x 5000) . '"},"lines":[{"sku":"BOOK-PGI","quantity":1}]}',
	'{"id":"evt","type":"payment.succeeded","data":{"payment_ref":"p","amount_minor":1e400,"currency":"USD"}}',
	'{"model":"nosuch","features":{}}', '{"model":null,"features":null}', '{"model":"' . ('m' x 5000) . '","features":[]}',
	'{"model":"m","features":{"x":1e400}}', '{"model":"m","features":{"x":"NaN"}}', '{"model":"m","features":' . ('[' x 100) . (']' x 100) . '}');
my @five;
for my $w (sort keys %who)
{
	for my $f (@functions)
	{
		# hostile bodies with the credentials that reach the functions' code
		for my $b ($w =~ /^(alice|service|write_key|anon)$/ ? @bodies : @bodies[0 .. 8])
		{
			my ($s, $r) = BvTest::http('POST', "$url/rpc/$f", @{ $who{$w} }, body => $b);
			push @five, "$w POST /rpc/$f " . substr($b, 0, 60) . ": $s " . substr($r, 0, 200) if $s !~ /^[1-4]/;
		}
		for my $q ('', '?order_id=1', '?order_id=abc', '?sku=x&quantity=1', '?lines=x', '?x=1')
		{
			my ($s, $r) = BvTest::http('GET', "$url/rpc/$f$q", @{ $who{$w} });
			push @five, "$w GET /rpc/$f$q: $s " . substr($r, 0, 200) if $s !~ /^[1-4]/;
		}
	}
	for my $v (@views)
	{
		for my $m ('GET', 'HEAD', 'POST', 'PATCH', 'PUT', 'DELETE', 'OPTIONS')
		{
			for my $q ('', '?id=eq.1', '?select=nosuch', '?order=id.desc&limit=-1', '?limit=99999999999999999999',
				'?offset=-5', '?id=in.(1,2,x)', '?or=(id.eq.1,id.eq.x)', '?sku=like.*' . ('%' x 100))
			{
				my ($s, $r) = BvTest::http($m, "$url/$v$q", @{ $who{$w} },
					$m =~ /POST|PATCH|PUT/ ? (body => '{"id":1}') : ());
				push @five, "$w $m /$v$q: $s " . substr($r, 0, 200) if $s !~ /^[1-4]/;
			}
		}
	}
	for my $h ('Accept: text/csv', 'Accept: application/octet-stream', 'Accept: application/vnd.pgrst.object+json',
		'Accept: application/vnd.pgrst.plan+json', 'Prefer: tx=rollback', 'Prefer: params=single-object',
		'Prefer: count=exact', 'Range: 5-1', 'Range: -1--5', 'Content-Type: text/csv', 'Content-Type: application/x-www-form-urlencoded',
		'Accept-Profile: bv', 'Content-Profile: commerce', 'Accept-Profile: pg_catalog')
	{
		for my $p ('/rpc/add_to_cart', '/rpc/order_history', '/catalog', '/orders')
		{
			my @o = @{ $who{$w} };
			my %o = @o;
			my @hdrs = (@{ $o{headers} // [] }, $h);
			my ($s, $r) = BvTest::http($p =~ /rpc/ ? 'POST' : 'GET', "$url$p", %o, headers => \@hdrs,
				$p =~ /rpc/ ? (body => '{"sku":"BOOK-PGI","quantity":1,"order_id":1}') : ());
			push @five, "$w $h $p: $s " . substr($r, 0, 200) if $s !~ /^[1-4]/;
		}
	}
}
# Huge and odd headers.
for my $h ('x-api-key: ' . ('k' x 20000), 'Authorization: Bearer ' . ('a' x 20000), 'X-Forwarded-For: ' . ('1.2.3.4, ' x 2000),
	'traceparent: ' . ('0' x 10000), 'Idempotency-Key: ' . ('i' x 10000), "x-api-key: bvk_\x{7f}", 'bv-signature: ' . ('v1=' x 5000))
{
	my ($s, $r) = BvTest::http('POST', "$url/rpc/add_to_cart", headers => [$h], body => '{"sku":"BOOK-PGI","quantity":1}');
	push @five, substr($h, 0, 40) . "...: $s " . substr($r, 0, 200) if $s !~ /^[1-4]/;
}
my $ev = '{"id":"evt_ok","type":"payment.succeeded","data":{"payment_ref":"nope","amount_minor":1,"currency":"USD"}}';
my $t = time();
for my $sig ("t=$t,v1=" . hmac_sha256_hex("$t.$ev", $wh_secret), "t=$t,v1=" . hmac_sha256_hex("$t.$ev", $wh_secret) . ',v1=zz',
	"t=99999999999999999999,v1=00", "t=-1,v1=00", "t=$t", 'v1=00,t=1', "t=$t,v1=" . ('0' x 64) . (',v1=00' x 1000))
{
	my ($s, $r) = BvTest::http('POST', "$url/rpc/payment_webhook", headers => ["bv-signature: $sig"], body => $ev);
	push @five, "webhook sig " . substr($sig, 0, 40) . ": $s " . substr($r, 0, 200) if $s !~ /^[1-4]/;
}
# Tokens PostgREST accepts or not: never a 5xx, and never admitted.
my @admitted;
for my $c (
	'{"role":"postgres","sub":"a"}', '{"role":"bv_authenticator","sub":"a"}', '{"role":"pg_read_server_files","sub":"a"}',
	'{"role":"pg_monitor","sub":"a"}', '{"role":"nosuchrole","sub":"a"}', '{"role":"","sub":"a"}', '{"role":"BV_USER","sub":"a"}',
	'{"role":["bv_user"],"sub":"a"}', '{"role":null,"sub":"a"}', '{"role":"bv_user"}', '{"role":"bv_user","sub":""}',
	'{"role":"bv_user","sub":42}', '{"role":"bv_user","sub":{"id":"a"}}', '{"role":"bv_user","sub":null}',
	'{"role":"bv_user","sub":"' . ('s' x 5000) . '"}', '{"role":"bv_user","sub":"a\u0001b"}',
	'{"role":"bv_service","sub":"a","nbf":' . (time() + 3600) . '}', '{"role":"bv_user","sub":"a","iat":' . (time() + 3600) . '}',
	'{"role":"bv_user","sub":"a","jti":""}', '{"role":"bv_user","sub":"a","jti":42}', '{"role":"bv_user","sub":"a","jti":"' . ('j' x 300) . '"}')
{
	(my $claims = $c) =~ s/\}$/,"exp":$exp}/;
	for my $path ('/orders', '/rpc/add_to_cart')
	{
		my ($s, $r) = BvTest::http($path =~ /rpc/ ? 'POST' : 'GET', "$url$path", token => $jwt->($claims),
			$path =~ /rpc/ ? (body => '{"sku":"BOOK-PGI","quantity":1}') : ());
		push @admitted, "$path with " . substr($claims, 0, 80) . ": $s" if $s !~ /^4\d\d$/;
	}
}
for my $c ('{"role":"bv_user","sub":"a"}', '{"role":"bv_user","sub":"a","exp":"' . $exp . '"}',
	'{"role":"bv_user","sub":"a","exp":1e309}', '{"role":"bv_user","sub":"a","exp":null}',
	qq({"role":"bv_user","sub":"b","sub":"a","exp":$exp}), qq({"role":"bv_anon","role":"bv_user","sub":"a","exp":$exp}))
{
	my ($s) = BvTest::http('GET', "$url/orders", token => $jwt->($c));
	push @admitted, "/orders with " . substr($c, 0, 80) . ": $s" if $s !~ /^4\d\d$/;
}
is(join("\n", @admitted), '', 'tokens for non-API roles, without a usable sub or jti, not yet valid, without a usable exp, or with duplicate claims: 4xx');
is(join("\n", @five), '', 'no request ends in a 5xx (or no answer)');
my ($ok) = BvTest::http('GET', "$url/catalog?limit=1");
is($ok, '200', 'the API still answers');

$pgrst->kill_kill;
$node->stop;
done_testing();
