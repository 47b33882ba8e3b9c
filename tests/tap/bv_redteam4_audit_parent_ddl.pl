# Red-team round 3 (bv_audit): ALTER TABLE on the *parent* of a tracked
# table.  Partitioned tables cannot be tracked, so a user tracks each
# partition (docs/bv_audit.md); inheritance children are tracked one by
# one.  An ALTER TABLE on the parent recurses into the children, but the
# event trigger bv_audit_ddl only sees the parent (pg_event_trigger_ddl_
# commands() reports the command once, with the parent's oid), so nothing
# of "Schema changes" applies to the tracked child:
#
#   1. ALTER COLUMN ... TYPE ... USING through the parent rewrites every
#      value of the tracked child with no record (promise 1: no change
#      commits without its record); as_of() keeps showing the old values.
#   2. A type change that does not keep the values (text -> int) is not
#      refused (0A000) through the parent.
#   3. RENAME COLUMN through the parent does not rename the audit column.
#   4. ADD COLUMN through the parent leaves the audit table without the
#      column: every later write of the tracked child fails ("out of step")
#      until an admin runs enable() again.
#   5. The stamp guard (bv_audit_guard_stamp, 0.4.0) is bypassed: the
#      non-superuser owner rewrites created_by of a stamped child with
#      ALTER TABLE parent ALTER COLUMN created_by TYPE text USING 'forged'.
#
# All done by the tables' owner, a non-superuser.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red4audit');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub try_sql
{
	my ($q) = @_;
	my ($rc, $out, $err) = $node->psql('bitvelocity', $q);
	return ($rc, $out, $err);
}

sql(q{
CREATE ROLE app_owner LOGIN;
GRANT CREATE ON SCHEMA public TO app_owner;
SET ROLE app_owner;
CREATE TABLE pt (id int, k int, a text, b text, primary key (id, k)) PARTITION BY LIST (k);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES IN (1);
CREATE TABLE ih (id int primary key, a text);
CREATE TABLE ihc (id int primary key, a text);
ALTER TABLE ihc INHERIT ih;
RESET ROLE;
SELECT bv_audit.enable('public.pt1');
SELECT bv_audit.stamp('public.ihc');
SELECT bv_audit.enable('public.ihc');
SET ROLE app_owner;
INSERT INTO pt VALUES (1, 1, 'orig', 'b');
INSERT INTO ihc VALUES (1, 'orig');
});

# Control: the same rewrite on the tracked table itself is recorded.
sql(q{SET ROLE app_owner; CREATE TABLE solo (id int primary key, b text); INSERT INTO solo VALUES (1, 'x');
	RESET ROLE; SELECT bv_audit.enable('public.solo')});
my $own = sql(q{SET ROLE app_owner; ALTER TABLE solo ALTER COLUMN b TYPE text USING b || '!'; RESET ROLE;
	SELECT count(*) FROM bv_audit.public__solo WHERE audit_op = 'U' AND audit_changed = '{b}'});
is($own, '1', 'control: ALTER ... USING on the tracked table itself is recorded');

# 1. USING through the partitioned parent
sql(q{SET ROLE app_owner; ALTER TABLE pt ALTER COLUMN a TYPE text USING 'rewritten'});
is(sql('SELECT a FROM pt1'), 'rewritten', 'the owner rewrote the partition through its parent');
is(sql(q{SELECT count(*) FROM bv_audit.public__pt1 WHERE audit_op = 'U' AND a = 'rewritten'}),
	'1', 'the rewrite through the parent is recorded');
is(sql(q{SELECT r->>'a' FROM bv_audit.as_of('public.pt1', now()) r}),
	'rewritten', 'as_of() shows the value the table holds');

# 1b. the same through an inheritance parent
sql(q{SET ROLE app_owner; ALTER TABLE ih ALTER COLUMN a TYPE text USING 'inh-rewritten'});
is(sql('SELECT a FROM ihc'), 'inh-rewritten', 'the owner rewrote the child through its inheritance parent');
is(sql(q{SELECT count(*) FROM bv_audit.public__ihc WHERE a = 'inh-rewritten'}),
	'1', 'the rewrite through the inheritance parent is recorded');

# 2. a type change that loses the values, refused on the table itself
my ($rc, undef, $err) = try_sql(q{SET ROLE app_owner; ALTER TABLE solo ALTER COLUMN b TYPE int USING length(b)});
isnt($rc, 0, 'control: text -> int on a tracked table itself is refused');
($rc, undef, $err) = try_sql(q{SET ROLE app_owner; ALTER TABLE pt ALTER COLUMN b TYPE int USING length(b)});
isnt($rc, 0, 'text -> int through the parent is refused as well');

# 3. RENAME COLUMN through the parent
sql(q{SET ROLE app_owner; ALTER TABLE pt RENAME COLUMN a TO z});
is( sql(q{SELECT count(*) FROM information_schema.columns
	WHERE table_schema = 'bv_audit' AND table_name = 'public__pt1' AND column_name = 'z'}),
	'1', 'the audit column follows the rename through the parent');

# 4. ADD COLUMN through the parent: writers of the partition must go on
sql(q{SET ROLE app_owner; ALTER TABLE pt ADD COLUMN c int});
($rc, undef, $err) = try_sql(q{SET ROLE app_owner; INSERT INTO pt VALUES (2, 1, 'x', 1, 5)});
is($rc, 0, 'a write after ADD COLUMN through the parent succeeds') or diag($err);
is(sql(q{SELECT count(*) FROM information_schema.columns
	WHERE table_schema = 'bv_audit' AND table_name = 'public__pt1' AND column_name = 'c'}),
	'1', 'the audit table has the added column');

# 5. forging the stamp columns of a stamped child through its parent
($rc, undef, $err) = try_sql(q{SET ROLE app_owner; ALTER TABLE ihc ALTER COLUMN created_by TYPE text USING 'forged'});
isnt($rc, 0, 'control: the stamp guard refuses the rewrite on the stamped table');
like($err, qr/only a superuser/, 'control: with a permission error');
sql(q{SET ROLE app_owner; ALTER TABLE ih ADD COLUMN created_by text});
($rc, undef, $err) = try_sql(q{SET ROLE app_owner; ALTER TABLE ih ALTER COLUMN created_by TYPE text USING 'forged'});
isnt($rc, 0, 'the stamp guard refuses the rewrite through the inheritance parent');
isnt(sql('SELECT created_by FROM ihc'), 'forged', 'created_by is not forged');

# 6. stamp() of a partition whose parent lacks the audit columns: refused
#    with bv_audit's own error and a hint (was ALTER TABLE's raw 42809
#    "cannot add column to a partition", no hint); once the parent is
#    stamped, the partition has the columns and stamping it works.
($rc, undef, $err) = try_sql(q{\set VERBOSITY verbose
SELECT bv_audit.stamp('public.pt1')});
isnt($rc, 0, 'stamp() of a partition is refused');
like($err, qr/ERROR:  42809: table public\.pt1 is a partition of public\.pt, which lacks the audit columns created_by, created_at, updated_by, updated_at/,
	'with a message naming the partition, its parent and the missing columns');
like($err, qr/HINT:  Call bv_audit\.stamp\('public\.pt'\) on the partitioned table/,
	'with a hint: stamp the partitioned table');
unlike($err, qr/cannot add column to a partition/, 'not ALTER TABLE\'s raw error');
sql(q{SELECT bv_audit.stamp('public.pt'); SELECT bv_audit.stamp('public.pt1')});
is(sql(q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.pt1'::regclass
	AND attname IN ('created_by', 'created_at', 'updated_by', 'updated_at') AND NOT attisdropped}),
	'4', 'after the parent is stamped, stamp() of the partition succeeds');

done_testing();
