# Eight sessions hammer the last 10 units of one SKU: exactly 10 are
# reserved, none oversold, every other attempt is refused with 409 (PT409);
# the stock numbers add up.  Then paid and cancelled orders move the units
# between reserved, sold and available without losing any.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('hammer');
BvTest::create_suite_db($node);

$node->safe_psql('bitvelocity', q{
INSERT INTO commerce.products (slug, name) VALUES ('hot', 'Hot item');
INSERT INTO commerce.skus (product_id, code) SELECT id, 'HOT' FROM commerce.products;
INSERT INTO commerce.prices SELECT id, 'USD', 999 FROM commerce.skus;
INSERT INTO commerce.inventory (sku_id, total) SELECT id, 10 FROM commerce.skus;
CREATE TABLE public.attempts (client int, outcome text);
-- One attempt of one buyer: an order of one unit, or the refusal's SQLSTATE.
CREATE FUNCTION public.try_order(p_client int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', 'buyer-' || p_client)::text, true);
    PERFORM commerce.place_order(NULL, '[{"sku": "HOT", "quantity": 1}]');
    INSERT INTO public.attempts VALUES (p_client, 'ordered');
EXCEPTION WHEN SQLSTATE 'PT409' THEN
    INSERT INTO public.attempts VALUES (p_client, 'PT409');
END $$;
});

my $script = "$PostgreSQL::Test::Utils::tmp_check/order.sql";
PostgreSQL::Test::Utils::append_to_file($script,
	"SET ROLE bv_user;\nSELECT public.try_order(:client_id);\nRESET ROLE;\n");
$node->safe_psql('bitvelocity', 'GRANT INSERT ON public.attempts TO bv_user; GRANT USAGE ON SCHEMA public TO bv_user');

$node->command_ok(
	[ 'pgbench', '-n', '-c', '8', '-j', '8', '-t', '25', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'bitvelocity' ],
	'8 clients x 25 attempts run without errors');

is($node->safe_psql('bitvelocity', "SELECT count(*) FROM public.attempts"),
	'200', 'every attempt was recorded');
is($node->safe_psql('bitvelocity', "SELECT count(*) FROM public.attempts WHERE outcome = 'ordered'"),
	'10', 'exactly 10 orders succeeded');
is($node->safe_psql('bitvelocity', "SELECT count(*) FROM public.attempts WHERE outcome = 'PT409'"),
	'190', 'the other 190 were refused with PT409');
is($node->safe_psql('bitvelocity', "SELECT format('%s/%s/%s', total, reserved, sold) FROM commerce.inventory"),
	'10/10/0', 'inventory: 10 total, 10 reserved, none oversold');
is($node->safe_psql('bitvelocity', "SELECT sum(l.quantity) FROM commerce.order_lines l JOIN commerce.orders o ON o.id = l.order_id WHERE o.status = 'awaiting_payment'"),
	'10', 'the open orders hold exactly the reserved units');

# Pay 4 (as the webhook does), cancel 3, let 3 expire: units move, none vanish.
$node->safe_psql('bitvelocity', q{
SELECT commerce.transition(id, 'paid', 'test') FROM (SELECT id FROM commerce.orders ORDER BY id LIMIT 4) o;
UPDATE commerce.inventory SET reserved = reserved - 4, sold = sold + 4;
SELECT commerce.cancel_order(id) FROM (SELECT id FROM commerce.orders WHERE status = 'awaiting_payment' ORDER BY id LIMIT 3) o;
UPDATE commerce.orders SET reserved_until = now() - interval '1 s' WHERE status = 'awaiting_payment';
SELECT commerce.release_expired_reservations();
});
is($node->safe_psql('bitvelocity', "SELECT format('%s/%s/%s', total, reserved, sold) FROM commerce.inventory"),
	'10/0/4', 'after 4 paid, 3 cancelled, 3 expired: 4 sold, 6 available again');
is($node->safe_psql('bitvelocity', "SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM (SELECT status, count(*) AS n FROM commerce.orders GROUP BY status) s"),
	'paid:4,cancelled:6', 'order states match');

$node->stop;
done_testing();
