# Red-team round 7 (bv_realtime 0.5.0): session state left in the handler
# pool's backends by one client's handler call, seen by the next client's.
#
# The pool's backends are long-lived sessions of the bootstrap superuser;
# every handler call runs there through bv_realtime.handler_call(), as
# the client, in a subtransaction.  0.5.0 undoes settings (a GUC nest
# level): checked below, it holds.  It does not undo other session state
# that code run as the client creates (a handler, or an RLS policy or
# trigger of a table a handler touches): it commits with the
# subtransaction and stays in the backend for every later client:
#   - temporary tables: client A's pg_temp table is the first match of an
#     unqualified table name in client B's handler (B reads A's rows,
#     writes into A's table);
#   - session advisory locks (pg_advisory_lock): held by the pool's
#     backend for ever, every other caller of that key waits;
#   - LISTEN: the backend listens for ever; the gateway never reads the
#     notifications (handler_pool.c has no PQnotifies), libpq queues
#     each one in the gateway's memory: anyone's NOTIFY on that channel
#     grows the gateway without bound;
#   - prepared statements and WITH HOLD cursors;
#   - temporary types: the backends keep the default search_path, so type
#     names resolve in pg_temp first; handler_call() casts the payload with
#     an unqualified "$3::jsonb" after switching to the client: alice's
#     pg_temp.jsonb domain's CHECK runs on every later client's payload,
#     as that client (reads them all, or refuses them).
# Expected: a call leaves the backend as it found it (DISCARD ALL-like
# cleanup after each call, or refusing such statements in handler code).
#
# The pool's backends run handler_call() in autocommit statements, one per
# call; this test does the same from one psql session (the same backend for
# both clients), so no timing or pool placement is involved.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use JSON::PP;

my $node = BvTest::new_node('red7pool');
BvTest::create_suite_db($node);

$node->safe_psql('bitvelocity', q{
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO bv_user;
CREATE TABLE app.notes (who text, v text);
GRANT SELECT, INSERT ON app.notes TO bv_user;
-- what a temporary type's check sees of later calls
CREATE TABLE app.spied (who text, v text);
GRANT INSERT ON app.spied TO PUBLIC;
CREATE FUNCTION app.spy(v jsonb) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO app.spied VALUES (current_setting('request.jwt.claims', true)::pg_catalog.jsonb ->> 'sub', v::pg_catalog.text);
  RETURN true;
END $f$;
GRANT EXECUTE ON FUNCTION app.spy(jsonb) TO PUBLIC;
-- 'plant': leave state behind; 'probe': report what is there
CREATE FUNCTION app.h(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    me text := current_setting('request.jwt.claims')::pg_catalog.jsonb ->> 'sub';
    r jsonb;
BEGIN
    IF event = 'plant' THEN
        PERFORM pg_catalog.set_config('evil.x', 'secret-of-' || me, false);
        CREATE TEMP TABLE notes (who text, v text);
        GRANT ALL ON pg_temp.notes TO PUBLIC;
        INSERT INTO pg_temp.notes VALUES (me, 'planted');
        PERFORM pg_catalog.pg_advisory_lock(424242);
        -- type names are looked up in pg_temp first (the pool's backends
        -- keep the default search_path): handler_call()'s "$3::jsonb"
        CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (app.spy(VALUE));
        EXECUTE 'LISTEN red7chan';
        BEGIN EXECUTE 'PREPARE red7ps AS SELECT 1'; EXCEPTION WHEN OTHERS THEN NULL; END;
        BEGIN EXECUTE 'DECLARE red7cur CURSOR WITH HOLD FOR SELECT 1'; EXCEPTION WHEN OTHERS THEN NULL; END;
        RETURN jsonb_build_object('pid', pg_backend_pid());
    END IF;
    -- the probing client's own write, by an unqualified name as handlers
    -- written for search_path = "$user", public do
    INSERT INTO notes VALUES (me, payload ->> 'v');
    SELECT jsonb_build_object(
        'pid', pg_backend_pid(),
        'guc', current_setting('evil.x', true),
        'temp', (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_my_temp_schema()),
        'seen', (SELECT string_agg(who || ':' || v, ',' ORDER BY who) FROM notes),
        'locks', (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
        'listen', (SELECT count(*) FROM pg_catalog.pg_listening_channels()),
        'prepared', (SELECT count(*) FROM pg_catalog.pg_prepared_statements),
        'cursors', (SELECT count(*) FROM pg_catalog.pg_cursors)) INTO r;
    RETURN r;
END $$;
-- a handler written for its own schema: unqualified names resolve in
-- pg_temp first, then app
ALTER FUNCTION app.h(text, text, jsonb) SET search_path = app, pg_catalog;
});

my $call = sub {
	my ($sub, $event, $payload) = @_;
	$payload = defined $payload ? "'$payload'" : 'NULL';
	return "SELECT status || '|' || coalesce(result, message) FROM bv_realtime.handler_call("
	  . "'app.h(pg_catalog.text,pg_catalog.text,pg_catalog.jsonb)', 'bv_user', '{\"sub\":\"$sub\",\"role\":\"bv_user\"}', 't', '$event', $payload, 5000);";
};
# one session = one pool backend: alice's call, then bob's
my $out = $node->safe_psql('bitvelocity', $call->('alice', 'plant') . $call->('bob', 'probe', '{"v":"bob-private"}'));
my ($plant, $probe) = split /\n/, $out;
like($plant, qr/^200\|/, 'control: the planting call succeeded') or diag $out;
like($probe, qr/^200\|/, 'control: the probing call succeeded') or diag $out;
my ($pj) = $probe =~ /^200\|(.*)$/;
my $p = JSON::PP->new->decode($pj // '{}');

is($p->{guc} // '', '', 'a custom setting made with set_config(.., false) does not reach the next client');

{
	is($p->{temp}, 0, "no temporary table of alice's in bob's call");
	is($p->{seen} // '', 'bob:bob-private', "bob's unqualified table name resolves to app.notes, not to alice's temp table (bob's row went to alice)");
	is($p->{locks}, 0, "no session advisory lock of alice's held during bob's call");
	is($p->{listen}, 0, "the backend no longer listens on alice's channel");
	is($p->{prepared}, 0, "no prepared statement of alice's");
	is($p->{cursors}, 0, "no WITH HOLD cursor of alice's");
	is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM app.notes WHERE who = 'bob'}), '1',
		"bob's note reached app.notes");
	is($node->safe_psql('bitvelocity', q{SELECT coalesce(string_agg(who || ' ' || v, ','), '') FROM app.spied}), '',
		"alice's temporary type jsonb did not see bob's payload (handler_call()'s \$3::jsonb resolved in pg_temp)");
}
diag "probe: $pj";
done_testing();
