# Red-team round 7 (bv_realtime): a temporary type left in the gateway
# worker's session by a table owner's RLS policy must not run the owner's
# code as the bootstrap superuser.
#
# The worker checks table changes as each subscriber, in its own long-lived
# session; the table's RLS policy (the owner's code) runs as the subscriber
# and may create temporary objects, which commit and stay in the worker's
# session.  PostgreSQL looks data type names up in the temporary schema
# first unless search_path lists pg_temp; the worker's own SQL, run as the
# superuser, names types without a schema ("(c ->> 'exp')::numeric" in the
# token check).  The worker pins search_path = pg_catalog, pg_temp
# (worker.c), so pg_catalog.numeric wins: checked here, the promise holds.
# (The handler pool's backends do not pin it: finding 1,
# tap/bv_redteam7_realtime_pool_state.)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $node = BvTest::new_node('red7ttype');
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
CREATE FUNCTION evil.pwn(numeric) RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE s boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
  INSERT INTO evil.calls VALUES (current_user, session_user || '@' || current_setting('application_name'), s);
  IF s THEN
    EXECUTE 'ALTER ROLE tabown SUPERUSER';
  END IF;
  RETURN true;
END $f$;
GRANT EXECUTE ON FUNCTION evil.pwn(numeric) TO PUBLIC;
CREATE FUNCTION evil.plant() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  IF pg_catalog.to_regtype('pg_temp.numeric') IS NULL THEN
    CREATE DOMAIN pg_temp.numeric AS pg_catalog.numeric CHECK (evil.pwn(VALUE));
  END IF;
  RETURN true;
END $f$;
CREATE TABLE evil.items (id int PRIMARY KEY, owner text);
ALTER TABLE evil.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON evil.items FOR SELECT USING (evil.plant());
GRANT SELECT ON evil.items TO bv_user;
});
is($rt->sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f', 'control: tabown is no superuser');
$rt->sql(q{SELECT bv_realtime.enable_table('evil.items')});

my $sub = $rt->ws(query => 'access_token=' . $rt->token(role => 'bv_user', sub => 'u1') . '&topics=table:evil.items');
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'subscribed' } $sub->frames }, 'subscribed');
# tabown's own session: nothing of it runs as a superuser
$node->safe_psql('bitvelocity', q{INSERT INTO evil.items VALUES (1, 'u1')}, extra_params => [ '-U', 'tabown' ]);
$rt->wait_for(sub { $sub->messages >= 1 }, 'the change was checked under the policy and delivered');
is(scalar($sub->messages), 1, 'control: the subscriber got the row (the policy ran in the gateway)');

# any later client: its token is verified by the worker
my $next = $rt->ws(query => 'access_token=' . $rt->token(role => 'bv_user', sub => 'u2') . '&topics=table:evil.items');
$rt->wait_for(sub { (grep { ($_->{type} // '') eq 'subscribed' } $next->frames) || $next->closed }, 'the next client is answered');
is($rt->sql(q{SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE t.typname = 'numeric' AND n.nspname LIKE 'pg\\_temp\\_%'}), '0', 'the temporary type numeric the policy created is gone after its transaction (0.5.0 discards temporary objects of client-run code)');
{
	is($rt->sql(q{SELECT count(*) FROM evil.calls WHERE super}), '0', 'no function of the table owner ran as a superuser');
	is($rt->sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f', 'the table owner did not become a superuser');
	ok(scalar(grep { ($_->{type} // '') eq 'subscribed' } $next->frames), 'the next client is served normally');
}
diag 'calls: ' . $rt->sql(q{SELECT string_agg(who || '/' || sess || '/' || super, ',') FROM evil.calls});
$_->stop for ($sub, $next);
done_testing();
