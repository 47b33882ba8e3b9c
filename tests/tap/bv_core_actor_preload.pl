# bv_core preloaded: the actor and trace context as PostgREST requests see
# them, replaying PostgREST's per-request prelude as bv_authenticator.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;

my $node = BvTest::new_node('actor');
BvTest::create_suite_db($node);

like($node->safe_psql('bitvelocity', 'SHOW shared_preload_libraries'),
	qr/\bbv_core\b/, 'bv_core is preloaded');

# Preloaded, the settings exist in a new session before any bv function ran.
is($node->safe_psql('bitvelocity', 'SHOW bv.actor'), '',
	'bv.actor is defined at session start');

my $tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

# One PostgREST request: the prelude, then a query, in one transaction.
sub request
{
	my (%r) = @_;
	my $mode = $r{read_only} ? 'READ ONLY' : 'READ WRITE';
	my $headers = $r{headers} // '{}';
	return <<"SQL";
BEGIN ISOLATION LEVEL READ COMMITTED $mode;
SELECT set_config('search_path', 'bv', true),
       set_config('role', '$r{role}', true),
       set_config('request.jwt.claims', '$r{claims}', true),
       set_config('request.method', 'GET', true),
       set_config('request.path', '/rpc/whoami', true),
       set_config('request.headers', '$headers', true) \\gset
$r{query};
COMMIT;
SQL
}

my @as_authenticator = (extra_params => [ '-U', 'bv_authenticator' ]);

# 1. A signed-in user: the "sub" claim is the actor, even in a READ ONLY
#    transaction (GET), and current_user is the role from the token.
my $out = $node->safe_psql(
	'bitvelocity',
	request(
		role => 'bv_user',
		claims => '{"role":"bv_user","sub":"user-42"}',
		headers => qq({"traceparent":"$tp"}),
		read_only => 1,
		query => "SELECT bv.actor(), current_user, bv.trace_context()"),
	@as_authenticator);
is($out, "user-42|bv_user|$tp", 'user request: actor from sub, trace from header');

# 2. An anonymous request (no sub): the login role is the actor.
$out = $node->safe_psql(
	'bitvelocity',
	request(
		role => 'bv_anon',
		claims => '{"role":"bv_anon"}',
		query => "SELECT bv.actor(), current_user, bv.trace_context() IS NULL"),
	@as_authenticator);
is($out, 'bv_authenticator|bv_anon|t', 'anonymous request: session_user is the actor');

# 3. A service acting for a user: bv.set_actor() wins over the claim.
$out = $node->safe_psql(
	'bitvelocity',
	request(
		role => 'bv_service',
		claims => '{"role":"bv_service","sub":"svc-billing"}',
		query => "SELECT bv.set_actor('user-7'); SELECT bv.actor()"),
	@as_authenticator);
is((split /\n/, $out)[-1], 'user-7', 'service request: bv.set_actor wins over sub');

# 4. A user cannot name another actor, neither by SET nor by the function.
my ($ret, $stdout, $stderr) = $node->psql(
	'bitvelocity',
	request(
		role => 'bv_user',
		claims => '{"role":"bv_user","sub":"mallory"}',
		query => "SELECT set_config('bv.actor', 'alice', true)"),
	@as_authenticator);
like($stderr, qr/permission denied to set parameter "bv.actor"/,
	'user request: setting bv.actor is refused');
($ret, $stdout, $stderr) = $node->psql(
	'bitvelocity',
	request(
		role => 'bv_user',
		claims => '{"role":"bv_user","sub":"mallory"}',
		query => "SELECT bv.set_actor('alice')"),
	@as_authenticator);
like($stderr, qr/permission denied for function set_actor/,
	'user request: bv.set_actor is refused');

# 5. Requests on one pooled connection do not leak into each other: the
#    claims and the actor set by one request are gone in the next.
$out = $node->safe_psql(
	'bitvelocity',
	request(
		role => 'bv_service',
		claims => '{"role":"bv_service","sub":"svc-a"}',
		query => "SELECT bv.set_actor('user-1'); SELECT bv.actor()")
	  . request(
		role => 'bv_user',
		claims => '{"role":"bv_user","sub":"user-2"}',
		query => "SELECT bv.actor()")
	  . request(
		role => 'bv_anon',
		claims => '{"role":"bv_anon"}',
		query => "SELECT bv.actor(), bv.trace_context() IS NULL"),
	@as_authenticator);
is( join(',', split /\n/, $out),
	'user-1,user-1,user-2,bv_authenticator|t',
	'consecutive requests on one connection are independent');

# 6. Audit triggers ask for the actor once per row: many rows of one
#    statement all see the request's actor.
$node->safe_psql('bitvelocity',
	"CREATE TABLE public.t (id int); GRANT INSERT, SELECT ON public.t TO bv_user");
$out = $node->safe_psql(
	'bitvelocity',
	request(
		role => 'bv_user',
		claims => '{"role":"bv_user","sub":"bulk-writer"}',
		query => "SELECT count(*) FILTER (WHERE bv.actor() = 'bulk-writer') FROM generate_series(1, 10000)"),
	@as_authenticator);
is($out, '10000', 'the actor is stable across 10000 calls in one statement');

# 7. The session user's name is cached by bv.actor(); a rename of that role
#    by another session is seen by the next statement of the first.
$node->safe_psql('bitvelocity', 'CREATE ROLE bv_renamee LOGIN IN ROLE bv_user');
my ($in, $live_out, $live_err) = ('', '', '');
my $timer = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
my $live = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-U', 'bv_renamee',
		'-h', $node->host, '-p', $node->port, '-d', 'bitvelocity', '-f', '-'
	],
	'<', \$in, '>', \$live_out, '2>', \$live_err, $timer);
$in .= "SELECT 'before:' || bv.actor();\n";
$live->pump until $live_out =~ /before:(\S+)/ || $timer->is_expired;
is($1, 'bv_renamee', 'a session without claims: its login role is the actor');
$node->safe_psql('bitvelocity', 'ALTER ROLE bv_renamee RENAME TO bv_renamed');
$in .= "SELECT 'after:' || bv.actor();\n";
$live->pump until $live_out =~ /after:(\S+)/ || $timer->is_expired;
is($1, 'bv_renamed', 'the renamed login role is the actor in the live session');
$in .= "\\q\n";
$live->finish;
is($live_err, '', 'the live session had no errors');

$node->stop;
done_testing();
