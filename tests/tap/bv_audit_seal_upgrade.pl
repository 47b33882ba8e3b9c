# Seals taken before 0.3.0 stay verifiable after ALTER EXTENSION bv_audit
# UPDATE (issue #18 items 11 and 12): their record digests (format 1) were
# computed under the sealing session's settings, here a database whose
# TimeZone is not UTC; seals partly purged before 0.3.0 (whose batch check
# 0.2.0's verify() skipped) are re-attested by a purge link, so that from
# then on a deleted record and its entry are caught; new seals (format 2)
# continue the same chain.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('seal_upgrade');
my $db = 'bitvelocity';
$node->safe_psql('postgres', "CREATE DATABASE $db");
$node->safe_psql($db, q{
ALTER DATABASE bitvelocity SET TimeZone = 'Asia/Kolkata';
ALTER DATABASE bitvelocity SET DateStyle = 'SQL, DMY';
CREATE EXTENSION pg_cron;
CREATE EXTENSION bv_core CASCADE;
CREATE EXTENSION bv_audit VERSION '0.2.0';
});

# Seal with the 0.2.0 functions until every record is covered.
sub seal_all
{
	my ($tbl) = @_;
	$node->poll_query_until($db, qq{
SELECT bv_audit.seal() >= 0 AND NOT EXISTS (
  SELECT FROM bv_audit.public__$tbl a
   WHERE NOT EXISTS (SELECT FROM bv_audit.seal_entries e WHERE e.audit_id = a.audit_id))})
	  or die "the seal of $tbl did not catch up";
	return;
}

$node->safe_psql($db, q{
CREATE TABLE public.old (id int PRIMARY KEY, at timestamptz, span interval, ratio float8);
SELECT bv_audit.enable('public.old');
INSERT INTO public.old SELECT g, '2026-01-01 00:00+00'::timestamptz + g * interval '1 hour',
                              g * interval '90 minutes', g / 3.0 FROM generate_series(1, 5) g;
UPDATE public.old SET ratio = ratio * 2 WHERE id = 2;
-- Records of 2020 (default partition), sealed with the others, then purged.
INSERT INTO bv_audit.public__old (audit_op, audit_xid, audit_actor, audit_ts, id, at)
SELECT 'I', pg_current_xact_id(), 'importer', ts, 100 + n, ts
  FROM (VALUES (1, '2020-01-10 00:00+00'::timestamptz), (2, '2020-02-10 00:00+00'),
               (3, '2020-03-10 00:00+00')) AS v(n, ts);
});
seal_all('old');
is($node->safe_psql($db, q{SELECT ok FROM bv_audit.verify('public.old')}),
	't', '0.2.0: verify() accepts its own seals');
# This cluster runs the 0.3.0 library, whose row_digest() is canonical
# (also what 0.2.0 seals taken between installing the library and
# ALTER EXTENSION UPDATE hold).  Re-take the seals as the 0.2.0 library
# did, under the session's settings (Asia/Kolkata), with 0.2.0's chaining.
$node->safe_psql($db, q{
CREATE FUNCTION public.digest_as_0_2_0(record) RETURNS bytea
    AS '$libdir/bv_audit', 'bv_audit_row_digest_v1' LANGUAGE C STRICT;
UPDATE bv_audit.seal_entries e SET digest = public.digest_as_0_2_0(a.*)
  FROM bv_audit.public__old a WHERE a.audit_id = e.audit_id;
DO $$
DECLARE
    s record;
    prev bytea := ''::bytea;
    batch bytea;
BEGIN
    FOR s IN SELECT * FROM bv_audit.seals ORDER BY seal_no LOOP
        SELECT sha256(string_agg(int8send(e.audit_id) || e.digest, ''::bytea ORDER BY e.audit_id)) INTO batch
          FROM bv_audit.seal_entries e WHERE e.tracked_id = s.tracked_id AND e.seal_no = s.seal_no;
        UPDATE bv_audit.seals x SET batch_digest = batch, chain_digest = sha256(prev || batch)
         WHERE x.tracked_id = s.tracked_id AND x.seal_no = s.seal_no;
        prev := sha256(prev || batch);
    END LOOP;
END
$$;
DROP FUNCTION public.digest_as_0_2_0(record);
});
cmp_ok( $node->safe_psql($db, q{
SET TimeZone = 'UTC';
SELECT count(*) FROM bv_audit.seal_entries e JOIN bv_audit.public__old a ON a.audit_id = e.audit_id
 WHERE e.digest <> bv_audit.row_digest(a.*)}),
	'>', 0, 'those digests differ from the canonical ones');
$node->safe_psql($db, q{
SELECT bv_audit.set_retention('public.old', now() - '2020-02-01 00:00+00'::timestamptz);
SELECT * FROM bv_audit.purge();
});
is( $node->safe_psql($db, q{
SELECT count(*) FROM bv_audit.seals s
 WHERE s.row_count > (SELECT count(*) FROM bv_audit.seal_entries e
                       WHERE e.tracked_id = s.tracked_id AND e.seal_no = s.seal_no)}),
	'1', '0.2.0: the purge left a seal with fewer entries than records');

$node->safe_psql($db, 'ALTER EXTENSION bv_audit UPDATE');
is($node->safe_psql($db, q{SELECT e.extversion = a.default_version FROM pg_extension e
                            JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'bv_audit'}),
	't', 'updated to the current version (0.3.0 or later)');
is( $node->safe_psql($db, q{
SELECT string_agg(kind || ':' || format, ',' ORDER BY seal_no) FROM bv_audit.seals}),
	'seal:1,purge:2', 'the old seal is format 1; the update re-attested what the old purge left');
is($node->safe_psql($db, q{SELECT ok, problem FROM bv_audit.verify('public.old')}),
	't|', 'format-1 seals verify after the update (digests under the database\'s settings)');

# New seals continue the chain in format 2.
$node->safe_psql($db, q{UPDATE public.old SET span = span * 2 WHERE id = 3});
seal_all('old');
is( $node->safe_psql($db, q{
SELECT string_agg(kind || ':' || format, ',' ORDER BY seal_no) FROM bv_audit.seals}),
	'seal:1,purge:2,seal:2', 'a new seal is format 2, after the old links');
is( $node->safe_psql($db, q{
SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY';
SELECT ok, problem FROM bv_audit.verify('public.old')}),
	't|', 'both formats verify from a session with other settings');

# Tampering with records of the old seal is still caught.
my $victim = $node->safe_psql($db,
	q{SELECT audit_id FROM bv_audit.public__old WHERE id = 2 AND audit_op = 'U'});
$node->safe_psql($db, qq{
SET session_replication_role = replica;
UPDATE bv_audit.public__old SET ratio = 0 WHERE audit_id = $victim;
});
is($node->safe_psql($db, q{SELECT ok, problem, audit_id FROM bv_audit.verify('public.old')}),
	"f|record altered|$victim", 'an altered record under a format-1 seal is named');
$node->safe_psql($db, qq{
SET session_replication_role = replica;
DELETE FROM bv_audit.public__old WHERE audit_id = $victim;
DELETE FROM bv_audit.seal_entries WHERE audit_id = $victim;
});
is( $node->safe_psql($db, q{SELECT ok, problem, seal_no FROM bv_audit.verify('public.old')}),
	'f|seal entries altered: the record digests no longer match the seal|1',
	'a record deleted with its entry from a seal the old purge trimmed is caught');

$node->stop;
done_testing();
