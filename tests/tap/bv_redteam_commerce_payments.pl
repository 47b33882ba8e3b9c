# Red-team round 3, bv_commerce payments: provider events that arrive out of
# order or twice must not change a payment that succeeded.
#  - payment.failed (an earlier failed attempt) delivered after
#    payment.succeeded used to mark the captured payment "failed" while the
#    order stayed paid; a later cancellation then recorded a refund tied to
#    no payment;
#  - payment.succeeded for the same payment under a second event id used to
#    record a full refund of money received once (the order stayed paid).
#  - a seeded randomized sequence of signed events per order (succeeded,
#    failed, duplicates, replays) against a model: a payment is succeeded iff
#    a succeeded event was applied, the order is paid iff so, and nothing is
#    refunded for an order that was paid in time.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_REDTEAM_SEED} // (time() % 100000);
diag("seed $seed (rerun with BV_REDTEAM_SEED=$seed)");
srand($seed);

my $node = BvTest::new_node('payred');
BvTest::create_suite_db($node);
sub q1 { return $node->safe_psql('bitvelocity', $_[0]); }
q1(q{
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT bv.secret_set('commerce.payment_webhook', 'whsec-redteam-0123456789abcdef');
INSERT INTO commerce.products (slug, name) VALUES ('mug', 'Mug');
INSERT INTO commerce.skus (product_id, code) SELECT id, 'MUG' FROM commerce.products;
INSERT INTO commerce.prices SELECT id, 'USD', 1200 FROM commerce.skus;
INSERT INTO commerce.inventory (sku_id, total) SELECT id, 1000 FROM commerce.skus;
CREATE FUNCTION public.sign(body text) RETURNS text LANGUAGE sql AS $$
  SELECT format('t=%s,v1=%s', extract(epoch from now())::bigint,
                encode(hmac(extract(epoch from now())::bigint || '.' || body,
                            'whsec-redteam-0123456789abcdef', 'sha256'), 'hex')) $$;
-- an order placed by a customer, as PostgREST would run it; returns its id
CREATE FUNCTION public.new_order(who text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE o jsonb;
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', who)::text, true);
    SET LOCAL ROLE bv_user;
    o := commerce.place_order(NULL, '[{"sku": "MUG", "quantity": 1}]');
    RESET ROLE;
    RETURN (o->>'id')::bigint;
END $$;
CREATE FUNCTION public.event(evt text, typ text, ord bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE b text;
BEGIN
    b := format('{"id": "%s", "type": "%s", "data": {"payment_ref": "%s", "amount_minor": 1200, "currency": "USD"}}',
                evt, typ, (SELECT provider_ref FROM commerce.payments WHERE order_id = ord));
    RETURN commerce.handle_payment_webhook(b, public.sign(b));
END $$;
CREATE FUNCTION public.state(ord bigint) RETURNS text LANGUAGE sql AS $$
  SELECT format('%s/%s/%s', o.status, p.status,
                (SELECT coalesce(sum(amount_minor), 0) FROM commerce.refunds r WHERE r.order_id = o.id))
    FROM commerce.orders o JOIN commerce.payments p ON p.order_id = o.id WHERE o.id = ord $$;
});

# ---- failed after succeeded ----
my $o = q1("SELECT public.new_order('alice')");
like(q1("SELECT public.event('evt_a1', 'payment.succeeded', $o)"), qr/order paid/, 'payment.succeeded pays the order');
like(q1("SELECT public.event('evt_a0', 'payment.failed', $o)"), qr/ignored: payment already succeeded/,
	'payment.failed after payment.succeeded is stored and ignored');
is(q1("SELECT public.state($o)"), 'paid/succeeded/0', 'the captured payment stays succeeded');
q1("SELECT set_config('request.jwt.claims', '{\"role\":\"bv_user\",\"sub\":\"alice\"}', true); SET LOCAL ROLE bv_user; SELECT commerce.cancel_order($o, 'changed my mind')");
is(q1("SELECT count(*) FROM commerce.refunds r JOIN commerce.payments p ON p.id = r.payment_id WHERE r.order_id = $o AND p.status = 'succeeded'"),
	'1', 'cancelling the paid order refunds the captured payment (refund tied to it)');
is(q1("SELECT count(*) FROM commerce.refunds WHERE order_id = $o AND payment_id IS NULL"), '0', 'no refund tied to no payment');

# ---- succeeded twice under two event ids ----
$o = q1("SELECT public.new_order('bob')");
q1("SELECT public.event('evt_b1', 'payment.succeeded', $o)");
like(q1("SELECT public.event('evt_b2', 'payment.succeeded', $o)"), qr/ignored: payment already succeeded/,
	'a second payment.succeeded event for the same payment is ignored');
is(q1("SELECT public.state($o)"), 'paid/succeeded/0', 'nothing refunded for money received once');
like(q1("SELECT public.event('evt_b1', 'payment.succeeded', $o)"), qr/duplicate/, 'the same event id is still a duplicate');

# ---- a payment that really arrives late is still refunded ----
$o = q1("SELECT public.new_order('carol')");
q1("UPDATE commerce.orders SET reserved_until = now() - interval '1 second' WHERE id = $o; SELECT commerce.release_expired_reservations()");
like(q1("SELECT public.event('evt_c1', 'payment.succeeded', $o)"), qr/refunded: order was cancelled/, 'a payment after expiry is refunded');
is(q1("SELECT public.state($o)"), 'cancelled/succeeded/1200', 'the late payment is refunded once');
like(q1("SELECT public.event('evt_c2', 'payment.succeeded', $o)"), qr/ignored/, 'and not twice');
is(q1("SELECT public.state($o)"), 'cancelled/succeeded/1200', 'one refund of the late payment');

# ---- a failed attempt, then success ----
$o = q1("SELECT public.new_order('dave')");
like(q1("SELECT public.event('evt_d0', 'payment.failed', $o)"), qr/payment failed/, 'a failed attempt is recorded');
like(q1("SELECT public.event('evt_d1', 'payment.succeeded', $o)"), qr/order paid/, 'a later success pays the order');
is(q1("SELECT public.state($o)"), 'paid/succeeded/0', 'paid after a failed attempt');

# ---- seeded random event sequences against a model ----
my $bad = 0;
for my $round (1 .. 25)
{
	my $ord = q1("SELECT public.new_order('rand$round')");
	my ($paid, $n) = (0, 0);
	my @sent;
	for my $step (1 .. 1 + int(rand(6)))
	{
		my $r = rand();
		my ($id, $type);
		if ($r < 0.2 && @sent) { ($id, $type) = @{ $sent[ int(rand(@sent)) ] }; }    # a replay
		else
		{
			$id = "evt_r${round}_" . $n++;
			$type = rand() < 0.5 ? 'payment.succeeded' : 'payment.failed';
			push @sent, [ $id, $type ];
		}
		q1("SELECT public.event('$id', '$type', $ord)");
		$paid = 1 if $type eq 'payment.succeeded';
	}
	my $want = $paid ? 'paid/succeeded/0' : q1("SELECT 'awaiting_payment/' || CASE WHEN EXISTS (SELECT 1 FROM commerce.webhook_events WHERE event_id LIKE 'evt_r${round}\\_%' AND type = 'payment.failed') THEN 'failed' ELSE 'pending' END || '/0'");
	my $got = q1("SELECT public.state($ord)");
	if ($got ne $want) { $bad++; diag("seed $seed round $round: $got, model $want"); }
}
is($bad, 0, "random event sequences agree with the model (seed $seed)");

$node->stop;
done_testing();
