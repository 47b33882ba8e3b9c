# Red-team round 7 (bv_realtime 0.5.0): a deferred trigger escapes the
# role lock and runs as the bootstrap superuser.
#
# Finding 2 (critical: a table owner becomes superuser).  A handler call
# (bv_realtime.handler_call() in the pool's backends, rt_handler_call() in
# the worker) switches to the client's role with set_config('role', ..,
# true), locks it (rt_role_lock: SECURITY_LOCAL_USERID_CHANGE), calls the
# handler, then unlocks (rt_role_unlock) BEFORE the transaction commits.
# The role setting itself lasts until the end of the top-level
# transaction.  Deferred constraint triggers fire at commit
# (AfterTriggerFireDeferred, before the settings are reset): as the client's
# role, with the lock already gone.  The trigger function of a table the
# handler writes (written by that table's owner, any role with CREATE on
# the database) then runs RESET ROLE and is the session user: the
# bootstrap superuser.
#   1. tabown owns evil.items with a CONSTRAINT TRIGGER ... DEFERRABLE
#      INITIALLY DEFERRED whose function does RESET ROLE; ALTER ROLE tabown
#      SUPERUSER;
#   2. a topic's handler (here app.h, a bv_admin-style handler) inserts a
#      row into evil.items for the client (tabown grants INSERT);
#   3. any client's call of that handler: tabown is a superuser.
# Expected: the role stays locked until the transaction has committed (or
# the call's own deferred triggers fire before the unlock: SET CONSTRAINTS
# ALL IMMEDIATE inside the lock), and no code of another role ever runs as
# the superuser.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;

my $node = BvTest::new_node('red7defer');
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);

$node->safe_psql('bitvelocity', q{
CREATE ROLE tabown LOGIN;
GRANT CREATE ON DATABASE bitvelocity TO tabown;
SET ROLE tabown;
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (who text, sess text, super boolean);
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE TABLE evil.items (id int, who text);
GRANT INSERT ON evil.items TO PUBLIC;
CREATE FUNCTION evil.later() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  BEGIN
    RESET ROLE;
  EXCEPTION WHEN OTHERS THEN
    INSERT INTO evil.calls VALUES (current_user, session_user, false);
    RETURN NULL;
  END;
  INSERT INTO evil.calls VALUES (current_user, session_user,
      (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user));
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'ALTER ROLE tabown SUPERUSER';
  END IF;
  RETURN NULL;
END $f$;
CREATE CONSTRAINT TRIGGER later AFTER INSERT ON evil.items
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil.later();
RESET ROLE;
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO bv_user;
-- an ordinary handler: records the client's message in a table
CREATE FUNCTION app.h(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.items VALUES ((payload ->> 'n')::int, current_user);
    RETURN jsonb_build_object('ok', true);
END $$;
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, handler) VALUES
  ('h:items', 'publish', 'bv_user', 'app.h(text,text,jsonb)');
});
is($node->safe_psql('bitvelocity', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f', 'control: tabown is no superuser');

# 1. as the pool's backends call it
my $r = $node->safe_psql('bitvelocity', q{SELECT status FROM bv_realtime.handler_call('app.h(text,text,jsonb)', 'bv_user',
  '{"sub":"u1","role":"bv_user"}', 'h:items', 'e', '{"n":1}', 5000)});
is($r, '200', 'control: the handler call succeeded');
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM evil.calls}), '1', 'control: the deferred trigger ran (at commit)');
{
	is($node->safe_psql('bitvelocity', q{SELECT coalesce(string_agg(who || '/' || super, ','), '') FROM evil.calls WHERE super}), '',
		'the deferred trigger could not RESET ROLE to the superuser');
	is($node->safe_psql('bitvelocity', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f',
		'tabown is still no superuser after a handler_call()');
}

# 2. end to end: a WebSocket client's message (default pool)
$node->safe_psql('bitvelocity', q{ALTER ROLE tabown NOSUPERUSER; TRUNCATE evil.calls});
my $J = JSON::PP->new->canonical->ascii;
my $c = $rt->ws(query => 'access_token=' . $rt->token(role => 'bv_user', sub => 'u2'),
	send => [ $J->encode({ type => 'broadcast', topic => 'h:items', event => 'e', ref => 'r1', payload => { n => 2 } }) ]);
ok($rt->wait_for(sub { grep { ($_->{type} // '') eq 'reply' && ($_->{ref} // '') eq 'r1' } $c->frames }, 'reply'),
	'control: the client got its reply');
my ($rep) = grep { ($_->{type} // '') eq 'reply' && ($_->{ref} // '') eq 'r1' } $c->frames;
is($rep->{status}, 200, 'control: status 200');
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM evil.calls}), '1', 'control: the deferred trigger ran');
{
	is($node->safe_psql('bitvelocity', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f',
		'tabown is still no superuser after a WebSocket client called the handler');
}
# 3. the same escape through a WITH HOLD cursor: its query is run to the end
# at commit (PreCommit_Portals), also after the unlock
$node->safe_psql('bitvelocity', q{ALTER ROLE tabown NOSUPERUSER; TRUNCATE evil.calls;
SET ROLE tabown;
CREATE FUNCTION evil.held(n int) RETURNS int LANGUAGE plpgsql AS $f$
BEGIN
  IF n = 2 THEN
    BEGIN
      RESET ROLE;
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO evil.calls VALUES (current_user, session_user, false);
      RETURN n;
    END;
    INSERT INTO evil.calls VALUES (current_user, session_user,
        (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user));
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
      EXECUTE 'ALTER ROLE tabown SUPERUSER';
    END IF;
  END IF;
  RETURN n;
END $f$;
GRANT EXECUTE ON FUNCTION evil.held(int) TO PUBLIC;
RESET ROLE;
CREATE FUNCTION app.h2(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE x int;
BEGIN
    EXECUTE 'DECLARE red7held CURSOR WITH HOLD FOR SELECT evil.held(i) FROM generate_series(1, 2) i';
    EXECUTE 'FETCH 1 FROM red7held' INTO x;
    RETURN jsonb_build_object('first', x);
END $$;
});
$r = $node->safe_psql('bitvelocity', q{SELECT status || ' ' || coalesce(message, '') FROM bv_realtime.handler_call('app.h2(text,text,jsonb)', 'bv_user',
  '{"sub":"u3","role":"bv_user"}', 'h:items', 'e', '{}', 5000)});
like($r, qr/^200/, 'control: the cursor handler call succeeded') or diag $r;
is($node->safe_psql('bitvelocity', q{SELECT count(*) FROM evil.calls}), '0', 'the held cursor was closed before the commit, its rest never ran');
{
	is($node->safe_psql('bitvelocity', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'tabown'}), 'f',
		'tabown is still no superuser after a handler left a WITH HOLD cursor');
}
diag 'calls: ' . $node->safe_psql('bitvelocity', q{SELECT string_agg(who || '/' || sess || '/' || super, ',') FROM evil.calls});
$c->stop;
done_testing();
