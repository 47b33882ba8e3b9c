# Red-team round 5: code that the gateway runs as a client could become the
# superuser.  The bv_realtime worker's session user is the bootstrap
# superuser; it switches to the client's role (set_config('role', ...)) to
# run a grant's check function, a handler, or a table's RLS policies, and
# all of these are written by roles other than the client (a check function
# or handler by whoever bv_admin names, a policy by the table's owner).
# Under SET ROLE, such code could RESET ROLE (or SET ROLE to any role) and
# act as the superuser: here a non-superuser makes itself one.  The worker
# now forbids role changes after the switch, as inside a SECURITY DEFINER
# function.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;

my $J = JSON::PP->new->canonical;
my $node = BvTest::new_node('red5rtrole');
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{
CREATE ROLE r5_app NOLOGIN;
CREATE SCHEMA r5 AUTHORIZATION r5_app;
GRANT USAGE ON SCHEMA r5 TO PUBLIC;
SET ROLE r5_app;
CREATE FUNCTION r5.check(topic text, action text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'RESET ROLE';
    EXECUTE 'ALTER ROLE r5_app SUPERUSER';
    RETURN true;
END $$;
CREATE FUNCTION r5.handler(topic text, event text, payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('role', 'none', true);
    EXECUTE 'ALTER ROLE r5_app CREATEROLE';
    RETURN '{"done": true}';
END $$;
CREATE FUNCTION r5.plain(topic text, event text, payload jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('as', current_user::text) $$;
RESET ROLE;
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, check_function) VALUES
  ('r5e:*', 'subscribe', 'bv_user', 'r5.check(text,text)');
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, handler) VALUES
  ('r5h:*', 'subscribe', 'bv_user', NULL),
  ('r5h:*', 'publish', 'bv_user', 'r5.handler(text,text,jsonb)'),
  ('r5p:*', 'subscribe', 'bv_user', NULL),
  ('r5p:*', 'publish', 'bv_user', 'r5.plain(text,text,jsonb)');
});
sub tok { return $rt->token(role => 'bv_user', sub => $_[0]); }
sub of_type { my ($type, @f) = @_; return grep { ($_->{type} // '') eq $type } @f; }
sub ws
{
	my ($sub, $topics, @send) = @_;
	return $rt->ws(query => 'access_token=' . tok($sub) . "&topics=$topics", send => [ map { ref $_ ? $J->encode($_) : $_ } @send ]);
}
sub attr { return $rt->sql("SELECT $_[0] FROM pg_roles WHERE rolname = 'r5_app'"); }

# a check function that resets the role at join
my $c = ws('bob', 'r5e:x');
$rt->wait_for(sub { scalar($c->frames) >= 2 }, 'the join was answered');
is(scalar(of_type('subscribed', $c->frames)), 0, 'the join whose check function failed is refused');
is(attr('rolsuper'), 'f', 'the check function could not RESET ROLE to the superuser');
$c->stop;

# a handler that resets the role
my $h = ws('bob', 'r5h:x', { type => 'broadcast', topic => 'r5h:x', event => 'go', ref => 'r1', payload => {} });
$rt->wait_for(sub { scalar(of_type('reply', $h->frames)) >= 1 }, 'the handler call was answered');
my ($reply) = of_type('reply', $h->frames);
is($reply->{status}, 403, 'the handler that changed the role is refused (42501: 403)');
is(attr('rolcreaterole'), 'f', 'the handler could not act as the superuser');
$h->stop;

# control: a plain handler still runs, as the client's role
my $p = ws('bob', 'r5p:x', { type => 'broadcast', topic => 'r5p:x', event => 'go', ref => 'r2', payload => {} });
$rt->wait_for(sub { scalar(of_type('reply', $p->frames)) >= 1 }, 'the plain handler answered');
my ($ok) = of_type('reply', $p->frames);
is($ok->{status}, 200, 'control: a handler that changes no role answers 200');
is($ok->{result}{as}, 'bv_user', 'control: ... and runs as the client\'s role');
$p->stop;

done_testing();
