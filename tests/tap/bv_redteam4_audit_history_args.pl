# Red-team round 3 (bv_audit): hostile key values given to history().
# A key value that is not of the key column's type fails inside the
# generated query with PostgreSQL's cast error: SQLSTATE 22P02 / 22003, no
# hint, and the whole client value quoted in the message (and the server
# log), 3,000 characters here.  The bar: a specific SQLSTATE, a message
# quoting at most a short prefix of client data, and a hint.  TODO until
# history() converts the key values itself (22023 or 22P02, a prefix, a
# hint naming the key column's type).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red4hist');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

sql(q{CREATE TABLE acct (id int PRIMARY KEY, v text);
	SELECT bv_audit.enable('public.acct');
	INSERT INTO acct VALUES (1, 'x');});
is(sql(q{SELECT count(*) FROM bv_audit.history('public.acct', '{"id": 1}')}), '1', 'control: history of a row');

for my $case ([ 'letters', q{jsonb_build_object('id', repeat('x', 3000))} ],
	[ 'digits beyond int', q{jsonb_build_object('id', repeat('9', 3000))} ],
	[ 'an object', q{'{"id": {"a": 1}}'::jsonb} ])
{
	my ($name, $key) = @$case;
	my ($rc, undef, $err) = $node->psql('bitvelocity',
		"\\set VERBOSITY verbose\nSELECT count(*) FROM bv_audit.history('public.acct', $key)");
	isnt($rc, 0, "$name: refused");
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	my ($msg) = $err =~ /ERROR:\s+[0-9A-Z]{5}:\s+([^\n]*)/;
	ok(length($msg // '') < 200, "$name: the message quotes a short prefix at most")
	  or diag('message of ' . length($msg // '') . ' characters');
	ok($err =~ /HINT:/, "$name: with a hint");
	ok(defined $state && $state ne 'XX000', "$name: a specific SQLSTATE ($state)");
}

done_testing();
