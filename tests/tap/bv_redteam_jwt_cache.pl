# Red-team review of bv_core's per-backend key cache: a revocation, a key
# deactivation or a key deletion that commits while another backend is
# rebuilding its cache must reach that backend.
#
# The cache is rebuilt under a snapshot; an invalidation that arrives
# between the snapshot and the end of the rebuild (it is processed when the
# rebuild opens a table) was swallowed by marking the new cache valid at
# the end: that backend (a pooled PostgREST connection) then accepted the
# revoked token, or tokens of the deactivated key, until some other change
# to bv.jwt_keys or bv.jwt_revocations.  The race is made deterministic by
# holding a lock on the table the rebuild opens next.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use Digest::SHA ();
use MIME::Base64 ();

my $node = BvTest::new_node('rtcache');
BvTest::create_suite_db($node);
my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
my $other = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity', qq{
	INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('k1', 'HS256', '$secret'), ('k2', 'HS256', '$other')});
# The verdict of bv.jwt_verify() as a value: the jti, or "refused".
$node->safe_psql('bitvelocity', q{
	CREATE FUNCTION try_verify(t text) RETURNS text LANGUAGE plpgsql AS $$
	BEGIN
		RETURN bv.jwt_verify(t) ->> 'jti';
	EXCEPTION WHEN invalid_authorization_specification THEN
		RETURN 'refused';
	END $$});

sub token
{
	my ($key, $kid, $jti) = @_;
	my $exp = time() + 3600;
	my $head = MIME::Base64::encode_base64url(qq({"alg":"HS256","typ":"JWT","kid":"$kid"}));
	my $body = MIME::Base64::encode_base64url(qq({"sub":"u1","role":"bv_user","exp":$exp,"jti":"$jti"}));
	return "$head.$body." . MIME::Base64::encode_base64url(Digest::SHA::hmac_sha256("$head.$body", $key));
}

# Wait until some backend waits for a lock on the given table.
sub wait_for_lock_wait
{
	my ($table) = @_;
	$node->poll_query_until('bitvelocity',
		"SELECT count(*) > 0 FROM pg_locks WHERE NOT granted AND relation = '$table'::regclass")
	  or die "no backend waited for a lock on $table";
	return;
}

# One round: a fresh session $reader starts verifying $verify_token (its
# first verification builds the cache) and blocks on $table, locked by
# $writer; the writer then commits $change and releases the lock.  Returns
# the reader's verdict on $check_token in its next statement.
sub race
{
	my ($table, $change, $verify_token, $check_token) = @_;
	my $writer = $node->background_psql('bitvelocity');
	$writer->query_safe("BEGIN; LOCK TABLE $table IN ACCESS EXCLUSIVE MODE");
	my $reader = $node->background_psql('bitvelocity', on_error_stop => 0);
	$reader->query_until(qr/started/, "\\echo started\nSELECT bv.jwt_verify('$verify_token') ->> 'jti';\n");
	wait_for_lock_wait($table);
	$writer->query_safe("$change; COMMIT");
	$writer->quit;
	# The reader's first statement ends; its next one must see the commit.
	my $verdict = $reader->query("SELECT try_verify('$check_token')");
	$reader->quit;
	$verdict =~ s/.*\n//s;   # the first statement's output precedes it
	return $verdict;
}

# A revocation committed while the reader builds its cache (it waits on
# bv.jwt_revocations, after reading the keys under its snapshot).
my $t1 = token($secret, 'k1', 'jti-1');
is($node->safe_psql('bitvelocity', "SELECT bv.jwt_verify('$t1') ->> 'jti'"), 'jti-1', 'the token verifies');
is(race('bv.jwt_revocations', "SELECT bv.jwt_revoke('jti-1')", $t1, $t1), 'refused',
	'a revocation committed during a cache rebuild reaches that backend');

# A key deactivated while the reader builds its cache (it waits on
# bv.jwt_keys, after taking its snapshot).
my $t2 = token($other, 'k2', 'jti-2');
is($node->safe_psql('bitvelocity', "SELECT bv.jwt_verify('$t2') ->> 'jti'"), 'jti-2', 'a token of key k2 verifies');
is(race('bv.jwt_keys', "UPDATE bv.jwt_keys SET active = false WHERE kid = 'k2'", token($secret, 'k1', 'jti-3'), $t2),
	'refused', 'a key deactivated during a cache rebuild is dropped by that backend');

# A key deleted the same way.
$node->safe_psql('bitvelocity', "UPDATE bv.jwt_keys SET active = true WHERE kid = 'k2'");
my $t4 = token($other, 'k2', 'jti-4');
is($node->safe_psql('bitvelocity', "SELECT bv.jwt_verify('$t4') ->> 'jti'"), 'jti-4', 'k2 is active again');
is(race('bv.jwt_keys', "DELETE FROM bv.jwt_keys WHERE kid = 'k2'", token($secret, 'k1', 'jti-5'), $t4),
	'refused', 'a key deleted during a cache rebuild is dropped by that backend');

# A backend whose cache is built keeps following changes (no regression).
my $s = $node->background_psql('bitvelocity');
my $t6 = token($secret, 'k1', 'jti-6');
is($s->query_safe("SELECT try_verify('$t6')"), 'jti-6', 'an open session verifies');
$node->safe_psql('bitvelocity', "SELECT bv.jwt_revoke('jti-6')");
is($s->query_safe("SELECT try_verify('$t6')"), 'refused', 'an open session sees a later revocation');
$s->quit;

$node->stop;
done_testing();
