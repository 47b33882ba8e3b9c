# Red-team round 3 (bv_audit): an AFTER ROW trigger of the table's owner that
# fires before bv_audit_capture (triggers fire in name order: "a_fix" <
# "bv_audit_capture") and changes the row it was fired for.  Its UPDATE (or
# DELETE) is a nested statement whose own capture runs at once, so its
# record gets the lower audit_id; the outer capture then records the row
# image the nested statement already replaced:
#
#   INSERT (1, 'pending')  -> a_fix: UPDATE ... SET status = 'approved'
#   records: U approved (id n), I pending (id n+1)
#   as_of(now()) says pending; the table says approved.
#
# With a nested DELETE the history ends with the I: as_of() shows a row that
# does not exist (a ghost row).  The owner needs no privilege beyond its own
# table.  Since 0.5.0 the capture trigger refuses to record a row version
# its own transaction already updated or deleted again (55000, with a
# hint), so the statement rolls back; the same trigger named to fire after
# bv_audit_capture is recorded in order.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red4order');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

sql(q{
CREATE ROLE app_owner LOGIN;
GRANT CREATE ON SCHEMA public TO app_owner;
SET ROLE app_owner;
CREATE TABLE orders (id int PRIMARY KEY, status text);
CREATE FUNCTION approve() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending' THEN
        UPDATE orders SET status = 'approved' WHERE id = NEW.id;
    ELSIF NEW.status = 'spam' THEN
        DELETE FROM orders WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER a_fix AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION approve();
RESET ROLE;
SELECT bv_audit.enable('public.orders');
});

sub refused
{
	my ($q, $name) = @_;
	my ($rc, undef, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\nSET ROLE app_owner; $q");
	isnt($rc, 0, "$name: refused");
	like($err, qr/ERROR:\s+55000:.*fires before bv_audit_capture/, "$name: 55000, saying why");
	like($err, qr/HINT:.*BEFORE trigger/, "$name: with a hint");
}

refused(q{INSERT INTO orders VALUES (1, 'pending')}, 'an insert the trigger updates');
refused(q{INSERT INTO orders VALUES (2, 'spam')}, 'an insert the trigger deletes');
is(sql('SELECT count(*) FROM orders'), '0', 'nothing was kept');
is(sql('SELECT count(*) FROM bv_audit.public__orders'), '0', 'nothing was recorded');

# A row lock of the transaction's own is no update: recorded as usual.
sql(q{SET ROLE app_owner; BEGIN; INSERT INTO orders VALUES (3, 'new'); SELECT 1 FROM orders WHERE id = 3 FOR UPDATE;
	UPDATE orders SET status = 'x' WHERE id = 3; COMMIT;});
is(sql(q{SELECT string_agg(operation || ':' || (row_data->>'status'), ' ' ORDER BY audit_id)
	FROM bv_audit.history('public.orders', '{"id": 3}')}), 'I:new U:x', 'a locked then updated row: I, U');

# The same trigger firing after bv_audit_capture: recorded in order.
sql(q{SET ROLE app_owner; ALTER TRIGGER a_fix ON orders RENAME TO z_fix});
sql(q{SET ROLE app_owner; INSERT INTO orders VALUES (1, 'pending')});
is(sql('SELECT status FROM orders WHERE id = 1'), 'approved', 'the table says approved');
is(sql(q{SELECT r->>'status' FROM bv_audit.as_of('public.orders', now()) r WHERE (r->>'id')::int = 1}),
	'approved', 'as_of(now()) agrees with the table');
is(sql(q{SELECT string_agg(operation || ':' || (row_data->>'status'), ' ' ORDER BY audit_id)
	FROM bv_audit.history('public.orders', '{"id": 1}')}),
	'I:pending U:approved', 'history: the insert, then the update');
sql(q{SET ROLE app_owner; INSERT INTO orders VALUES (2, 'spam')});
is(sql('SELECT count(*) FROM orders WHERE id = 2'), '0', 'the row is gone');
is(sql(q{SELECT count(*) FROM bv_audit.as_of('public.orders', now()) r WHERE (r->>'id')::int = 2}),
	'0', 'as_of(now()) shows no ghost row');

done_testing();
