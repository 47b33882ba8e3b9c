# Red-team round 3 (bv_audit): ALTER TYPE ... RENAME VALUE on an enum used
# by a tracked table.  bv_audit stores enums as text, fixed when the record
# is written (docs/bv_audit.md, "No dependency on user types"), so that a
# rename "does not change history".  But the rename changes what every
# live row says: the owner of the type (here the table's owner, not a
# superuser) swaps 'unpaid' and 'paid' in three statements, every invoice
# now reads 'paid', and there is no record: as_of(now()) still says
# 'unpaid', and the history shows no change (promise 1).  The failing checks
# (Since 0.5.0 an event trigger on ALTER TYPE records a U of every row that
# holds the renamed label.)  The checks were TODO until an event trigger on
# ALTER TYPE either records a U of every
# row of tracked tables whose column uses the enum (value renamed) or
# refuses the rename for non-superusers, as the stamp guard does.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red4enum');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

sql(q{
CREATE ROLE app_owner LOGIN;
GRANT CREATE ON SCHEMA public TO app_owner;
SET ROLE app_owner;
CREATE TYPE inv_status AS ENUM ('unpaid', 'paid');
CREATE TABLE invoice (id int PRIMARY KEY, status inv_status);
RESET ROLE;
SELECT bv_audit.enable('public.invoice');
SET ROLE app_owner;
INSERT INTO invoice VALUES (1, 'unpaid');
});
is(sql(q{SELECT r->>'status' FROM bv_audit.as_of('public.invoice', now()) r}), 'unpaid', 'control: as_of() says unpaid');

my ($rc, undef, $err) = $node->psql('bitvelocity', q{SET ROLE app_owner;
	ALTER TYPE inv_status RENAME VALUE 'unpaid' TO 'tmp';
	ALTER TYPE inv_status RENAME VALUE 'paid' TO 'unpaid';
	ALTER TYPE inv_status RENAME VALUE 'tmp' TO 'paid';});
my $now = sql('SELECT status FROM invoice WHERE id = 1');
is($rc, 0, 'the owner may rename the labels') or diag($err);
is(sql(q{SELECT string_agg(operation || ':' || (row_data->>'status'), ' ' ORDER BY audit_id)
	FROM bv_audit.history('public.invoice', '{"id": 1}')}), 'I:unpaid U:tmp U:paid',
	'each rename that changed what the invoice says is recorded');
is(sql(q{SELECT r->>'status' FROM bv_audit.as_of('public.invoice', now()) r}), $now,
	'as_of(now()) agrees with the table');

done_testing();
