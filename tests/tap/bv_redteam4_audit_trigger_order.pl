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
# table.  TODO until bv_audit refuses or repairs it; suggested fix, in the C
# trigger (capture.c): before writing an I/U record, check whether the
# tuple's xmax is an update or delete by the current transaction
# (HeapTupleHeaderGetUpdateXid, not HEAP_XMAX_IS_LOCKED_ONLY,
# TransactionIdIsCurrentTransactionId); then a later version's record
# already exists and this one is stale: raise (55000, hint: name the trigger
# so it sorts after bv_audit_capture, or make it a BEFORE trigger), or skip
# the stale record for a deleted row and re-record the live version.
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

sql(q{SET ROLE app_owner; INSERT INTO orders VALUES (1, 'pending')});
is(sql('SELECT status FROM orders WHERE id = 1'), 'approved', 'the table says approved');
TODO:
{
	local $TODO = 'bv_audit: an AFTER trigger sorting before bv_audit_capture inverts the history';
	is(sql(q{SELECT r->>'status' FROM bv_audit.as_of('public.orders', now()) r WHERE (r->>'id')::int = 1}),
		'approved', 'as_of(now()) agrees with the table');
	is(sql(q{SELECT string_agg(operation || ':' || (row_data->>'status'), ' ' ORDER BY audit_id)
		FROM bv_audit.history('public.orders', '{"id": 1}')}),
		'I:pending U:approved', 'history: the insert, then the update');
}

sql(q{SET ROLE app_owner; INSERT INTO orders VALUES (2, 'spam')});
is(sql('SELECT count(*) FROM orders WHERE id = 2'), '0', 'the row is gone');
TODO:
{
	local $TODO = 'bv_audit: a row deleted by such a trigger stays in as_of() (ghost row)';
	is(sql(q{SELECT count(*) FROM bv_audit.as_of('public.orders', now()) r WHERE (r->>'id')::int = 2}),
		'0', 'as_of(now()) shows no ghost row');
}

done_testing();
