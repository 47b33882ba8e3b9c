# Red-team round 3 (bv_audit + bv_core): who a record names as its actor.
#
# bv.actor is a superuser-only setting so that "a user cannot SET bv.actor
# to pass as somebody else" (docs/bv_core.md), and bv_audit records
# bv.actor() as audit_actor.  But bv.actor() falls back to the sub claim of
# request.jwt.claims, a setting any session may set: a role that is not an
# API role at all (an application's login role, a table's owner) writes a
# tracked table as "alice" by setting the claims first.  The record then
# names alice, not the session user who made the change.  PostgREST sets
# the claims only after verifying the token, but nothing tells bv.actor()
# whether that happened.  Since bv_core 0.5.0 the claims count only in
# sessions of bv_authenticator or a superuser (42501 elsewhere), and an
# actor may not hold invisible formatting characters (22023).
# (Earlier text of this finding:) until bv_core trusts
# the claims only from the PostgREST login role (bv_authenticator) or from
# a token verified in the backend (bv._request_admit).
#
# Also: the actor rule ("1 to 256 characters without control characters")
# accepts Unicode format characters such as U+202E RIGHT-TO-LEFT OVERRIDE,
# with which an actor is displayed as another name in audit reports.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;

my $node = BvTest::new_node('red4actor');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

sql(q{
CREATE ROLE app_writer LOGIN;
CREATE TABLE ledger (id int PRIMARY KEY, amount int);
SELECT bv_audit.enable('public.ledger');
GRANT INSERT, UPDATE ON ledger TO app_writer;
});

# control: bv.actor itself is refused to the writer
my ($rc, undef, $err) = $node->psql('bitvelocity', q{SET ROLE app_writer; SET bv.actor = 'alice'});
isnt($rc, 0, 'control: a non-superuser cannot SET bv.actor');

# The writer logs in as itself (a direct SQL login, not PostgREST).
my $as_writer = $node->connstr('bitvelocity') . ' user=app_writer';
sub writer
{
	my ($q) = @_;
	my ($out, $err) = ('', '');
	my $rc = IPC::Run::run([ 'psql', '-X', '-At', '-v', 'VERBOSITY=verbose', '-d', $as_writer, '-c', $q ],
		'>', \$out, '2>', \$err);
	return ($rc, $out, $err);
}

# the writer, without claims, is recorded as itself
($rc) = writer(q{INSERT INTO ledger VALUES (1, 10)});
ok($rc, 'control: the writer inserts');
is(sql('SELECT audit_actor FROM bv_audit.public__ledger WHERE id = 1'), 'app_writer',
	'control: without claims the record names the session user');

# the same writer sets the claims PostgREST would set for alice
my $out;
($rc, $out, $err) = writer(q{SET request.jwt.claims = '{"sub": "alice", "role": "bv_user"}';
	INSERT INTO ledger VALUES (2, 1000000)});
ok(!$rc, 'a direct SQL session that sets request.jwt.claims is refused');
like($err, qr/42501/, 'with 42501');
is(sql('SELECT count(*) FROM bv_audit.public__ledger WHERE audit_actor = \'alice\''), '0',
	'nothing is recorded as alice');

# a bidi override in the sub (even where claims count: a superuser's session)
($rc, undef, $err) = $node->psql('bitvelocity', qq{\\set VERBOSITY verbose
SET request.jwt.claims = '{"sub": "nimda\\u202e"}'; INSERT INTO ledger VALUES (3, 1)});
isnt($rc, 0, 'an actor with a right-to-left override is refused');
like($err, qr/22023/, 'with 22023');
is(sql('SELECT count(*) FROM bv_audit.public__ledger WHERE id = 3'), '0', 'and nothing recorded');
($rc, undef, $err) = $node->psql('bitvelocity', qq{SELECT bv.set_actor(E'ecila\\u202e')});
isnt($rc, 0, 'bv.set_actor refuses it too');

done_testing();
