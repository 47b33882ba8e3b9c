# bv_commerce over real HTTP through PostgREST: anonymous catalog browse, an
# order placed with a JWT, idempotent retry, conflicting key reuse, another
# customer's order invisible, oversell, staff-only actions, and the payment
# webhook (bad signature refused with nothing changed; a valid one pays).
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvKafka;

my $node = BvTest::new_node('shop');
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));

# Order changes stream to Kafka (the mock broker) through bv_cdc.
my $mock = BvKafka::start_mock($PostgreSQL::Test::Utils::tmp_check);
$node->safe_psql('bitvelocity', qq{
SELECT bv_cdc.add_sink('shop', 'kafka', jsonb_build_object('bootstrap.servers', '$mock->{bootstrap}'));
SELECT bv_cdc.add_route('commerce.orders', 'shop');
});
# The worker creates its slot once it sees the extension; changes made
# before that are not streamed (bv_cdc.snapshot() is for those).
ok($node->poll_query_until('bitvelocity',
		"SELECT worker_state = 'streaming' AND state = 'up' FROM bv_cdc.stats WHERE sink = 'shop'"),
	'bv_cdc streams to the Kafka mock');

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
# bv.pre_request() verifies every bearer token again with bv.jwt_verify():
# PostgREST's secret is a key of bv.jwt_keys (as make run registers it).
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my $token = sub {
	my ($role, $sub) = @_;
	return BvTest::jwt_hs256($secret, qq({"role":"$role","sub":"$sub","exp":$exp}));
};
my $alice = $token->('bv_user', 'alice');
my $bob = $token->('bv_user', 'bob');
my $staff = $token->('bv_service', 'staff-1');

sub call
{
	my ($method, $path, %o) = @_;
	my @headers = @{ $o{headers} // [] };
	push @headers, "Idempotency-Key: $o{key}" if $o{key};
	my ($status, $body) = BvTest::http($method, "$url$path",
		token => $o{token}, headers => \@headers, body => $o{body});
	my $json = eval { decode_json($body) };
	return ($status, $json // $body);
}

# Anonymous catalog browse.
my ($status, $body) = call('GET', '/catalog?sku=eq.BOOK-PGI&select=sku,currency,amount_minor,available');
is($status, '200', 'anonymous catalog: 200');
is_deeply($body, [ { sku => 'BOOK-PGI', currency => 'USD', amount_minor => 4900, available => 10 } ],
	'anonymous catalog: price in minor units and stock');
($status) = call('GET', '/orders');
is($status, '401', 'anonymous callers cannot list orders');

# Place an order with a JWT and an idempotency key.
my $order_body = '{"lines":[{"sku":"BOOK-PGI","quantity":2}],"shipping_address":{"city":"Oslo"}}';
($status, my $order) = call('POST', '/rpc/place_order', token => $alice, key => 'k-1', body => $order_body);
is($status, '200', 'place_order: 200');
is($order->{status}, 'awaiting_payment', 'place_order: awaiting payment');
is($order->{total_minor}, 9800, 'place_order: total in minor units');

# Retry with the same key: the same order, nothing reserved twice.
($status, $body) = call('POST', '/rpc/place_order', token => $alice, key => 'k-1', body => $order_body);
is($status, '200', 'idempotent retry: 200');
is_deeply($body, $order, 'idempotent retry: the same order');
is($node->safe_psql('bitvelocity', "SELECT count(*) FROM commerce.orders WHERE customer_id = 'alice'"),
	'1', 'idempotent retry: one order in the database');

# The same key for another request: 409.
($status, $body) = call('POST', '/rpc/place_order', token => $alice, key => 'k-1',
	body => '{"lines":[{"sku":"BOOK-PGI","quantity":1}]}');
is($status, '409', 'key reused for another request: 409');
like($body->{message}, qr/already used for a different request/, 'key reuse: says why');

# Another customer's order: invisible.
($status, $body) = call('GET', "/orders?id=eq.$order->{id}", token => $bob);
is($status, '200', 'bob lists orders: 200');
is_deeply($body, [], "bob does not see alice's order");
($status) = call('POST', '/rpc/cancel_order', token => $bob, body => qq({"order_id":$order->{id}}));
is($status, '404', "bob cancelling alice's order: 404");
($status, $body) = call('GET', "/orders?id=eq.$order->{id}&select=id,status", token => $alice);
is_deeply($body, [ { id => $order->{id}, status => 'awaiting_payment' } ], 'alice sees her order');

# Oversell: 409 with the numbers.
($status, $body) = call('POST', '/rpc/place_order', token => $bob,
	body => '{"lines":[{"sku":"BOOK-PGI","quantity":9}]}');
is($status, '409', 'oversell: 409');
is($body->{details}, '9 requested, 8 available.', 'oversell: details give the numbers');

# Bad input: 400; staff-only action by a customer: 403.
($status, $body) = call('POST', '/rpc/place_order', token => $bob,
	body => '{"lines":[{"sku":"BOOK-PGI","quantity":0}]}');
is($status, '400', 'invalid quantity: 400');
($status) = call('POST', '/rpc/ship_order', token => $alice, body => qq({"order_id":$order->{id}}));
is($status, '403', 'a customer cannot ship: 403');
($status, $body) = call('POST', '/rpc/ship_order', token => $staff, body => qq({"order_id":$order->{id}}));
is($status, '409', 'shipping an unpaid order: 409');
like($body->{hint}, qr/Allowed next states: paid, cancelled/, 'the hint lists the allowed states');

# The payment webhook, signed as the provider signs it.
my $wh_secret = 'whsec_' . join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 32;
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('commerce.payment_webhook', '$wh_secret')");
my $event = sprintf('{"id":"evt_1","type":"payment.succeeded","data":{"payment_ref":"%s","amount_minor":9800,"currency":"USD"}}',
	$order->{payment_ref});
my $sign = sub {
	my ($key, $t, $payload) = @_;
	return "bv-signature: t=$t,v1=" . hmac_sha256_hex("$t.$payload", $key);
};
my $snapshot = sub {
	$node->safe_psql('bitvelocity', "SELECT status FROM commerce.orders WHERE id = $order->{id}")
	  . '|' . $node->safe_psql('bitvelocity', 'SELECT count(*) FROM commerce.webhook_events');
};
my $before = $snapshot->();

($status, $body) = call('POST', '/rpc/payment_webhook', body => $event,
	headers => [ $sign->('wrong-secret', time(), $event) ]);
is($status, '401', 'webhook signed with the wrong secret: 401');
($status) = call('POST', '/rpc/payment_webhook', body => $event,
	headers => [ $sign->($wh_secret, time() - 3600, $event) ]);
is($status, '401', 'webhook with an old timestamp: 401');
(my $tampered = $event) =~ s/9800/9801/;
($status) = call('POST', '/rpc/payment_webhook', body => $tampered,
	headers => [ $sign->($wh_secret, time(), $event) ]);
is($status, '401', 'webhook with a changed body: 401');
($status) = call('POST', '/rpc/payment_webhook', body => $event);
is($status, '401', 'webhook without a signature: 401');
is($snapshot->(), $before, 'refused webhooks changed nothing');

($status, $body) = call('POST', '/rpc/payment_webhook', body => $event,
	headers => [ $sign->($wh_secret, time(), $event) ]);
is($status, '200', 'valid webhook: 200');
is($body->{outcome}, 'order paid', 'valid webhook: the order is paid');
($status, $body) = call('POST', '/rpc/payment_webhook', body => $event,
	headers => [ $sign->($wh_secret, time(), $event) ]);
is($body->{outcome}, 'duplicate', 'the same event again: recognised, not applied twice');
is($node->safe_psql('bitvelocity',
		"SELECT format('%s/%s/%s', total, reserved, sold) FROM commerce.inventory i JOIN commerce.skus s ON s.id = i.sku_id WHERE s.code = 'BOOK-PGI'"),
	'10/0/2', 'paid units moved from reserved to sold');
($status, $body) = call('GET', "/rpc/order_history?order_id=$order->{id}", token => $alice);
is_deeply([ map { "$_->{to_status}:$_->{actor}" } @$body ],
	[ 'pending:alice', 'awaiting_payment:alice', 'paid:payment-provider' ],
	'history: who moved the order, over REST');

# The payment reached Kafka: an update of the order to "paid", keyed by the
# order's primary key, attributed to the provider in its headers' trace.
my @paid;
my $wait_until = time() + $PostgreSQL::Test::Utils::timeout_default;
while (!@paid && time() < $wait_until)
{
	@paid = grep {
		      $_->{env}
		  && $_->{env}{op} eq 'u'
		  && ($_->{env}{after}{id} // -1) == $order->{id}
		  && ($_->{env}{after}{status} // '') eq 'paid'
	} BvKafka::consume($mock, 'bv.commerce.orders', 1, 5);
}
ok(scalar(@paid) >= 1, 'the paid order appears on Kafka topic bv.commerce.orders');
is($paid[0]{env}{after}{updated_by}, 'payment-provider', 'the Kafka message carries the audit actor')
  if @paid;

BvKafka::stop_mock($mock);
$pgrst->kill_kill;
$node->stop;
done_testing();
