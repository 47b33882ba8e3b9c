# bv_realtime table changes under row level security, with real clients
# (python3-websockets, curl -N): a seeded randomized workload of inserts,
# updates and deletes on an RLS-protected table, watched by subscribers of
# several roles and subs (WebSocket and SSE, with and without filters);
# after each phase every subscriber's deliveries are compared with SELECT
# run as its role with its claims: a subscriber never receives a row it
# cannot SELECT, and receives every visible change its filter asks for, in
# commit order.  Visibility is checked once per group (role + claims), not
# per subscriber.  Also: deletes on a table without RLS, the SQL API's
# errors, and hostile subscriptions.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;
use List::Util qw(shuffle min);

my $seed = $ENV{BV_SEED} // time();
srand($seed);
diag("seed $seed (rerun with BV_SEED=$seed)");

my $node = BvTest::new_node('rtrls', extra_conf => "bv_realtime.keepalive = 60\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);

$rt->sql(q{
CREATE ROLE rt_a NOLOGIN; CREATE ROLE rt_b NOLOGIN; CREATE ROLE rt_c NOLOGIN;
GRANT rt_a, rt_b, rt_c TO bv_authenticator;
CREATE TABLE public.docs (id int PRIMARY KEY, owner text NOT NULL, team int NOT NULL,
                          body text, flag boolean DEFAULT true);
ALTER TABLE public.docs ENABLE ROW LEVEL SECURITY;
GRANT USAGE ON SCHEMA public TO rt_a, rt_b, rt_c;
GRANT SELECT ON public.docs TO rt_a, rt_b, rt_c;
CREATE POLICY own ON public.docs FOR SELECT TO rt_a, rt_b, rt_c
  USING (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
CREATE POLICY team_a ON public.docs FOR SELECT TO rt_a USING (team = 1);
CREATE POLICY team_b ON public.docs FOR SELECT TO rt_b USING (team = 2 AND body NOT LIKE 'secret%');
CREATE POLICY markers ON public.docs FOR SELECT USING (id < 0);
CREATE TABLE public.notes (id int PRIMARY KEY, txt text);
GRANT SELECT ON public.notes TO rt_a;
CREATE TABLE public.nokey (x int);
SELECT bv_realtime.enable_table('public.docs');
SELECT bv_realtime.enable_table('public.notes');
});
is($rt->sql('SELECT string_agg(topic, \',\' ORDER BY topic) FROM bv_realtime.tables'),
	'table:public.docs,table:public.notes', 'bv_realtime.tables lists the enabled tables');

# ---- the SQL API's errors ----
sub sql_error
{
	my ($q, $role) = @_;
	my ($ret, $out, $err) = $node->psql('bitvelocity', ($role ? "SET ROLE $role; " : '') . $q,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return $err;
}
like(sql_error(q{SELECT bv_realtime.enable_table('public.nokey')}), qr/55000.*needs a primary key/s,
	'enable_table without a primary key: 55000 with a hint');
like(sql_error(q{SELECT bv_realtime.enable_table(NULL)}), qr/22004/, 'enable_table(NULL): 22004');
like(sql_error(q{SELECT bv_realtime.enable_table('public.docs')}, 'bv_admin'), qr/42501.*only the owner/s,
	'enable_table by a role that does not own the table: 42501');
like(sql_error(q{SELECT bv_realtime.send('table:public.docs', 'x', '{}')}, 'bv_service'), qr/22023.*reserved for table changes/s,
	'send() on a table topic: 22023');

# ---- subscribers ----
my %sub;    # name -> { role, sub, client, filter code }
sub tok { my ($role, $s, $ttl) = @_; return $rt->token(role => $role, sub => $s, ttl => $ttl // 3600); }
sub wsub
{
	my ($name, $role, $s, %o) = @_;
	my $msg = { type => 'subscribe', topic => 'table:public.docs' };
	$msg->{filter} = $o{filter} if $o{filter};
	$msg->{events} = $o{events} if $o{events};
	my $client = $rt->ws(query => 'access_token=' . tok($role, $s, $o{ttl}),
		send => [ JSON::PP->new->canonical->encode($msg) ]);
	$sub{$name} = { role => $role, sub => $s, c => $client, want => $o{want} // sub { 1 }, kind => 'ws' };
}
wsub('a_u1', 'rt_a', 'u1');
wsub('a_u1_again', 'rt_a', 'u1', ttl => 7200);    # same group as a_u1 (exp differs)
wsub('a_u2_team12', 'rt_a', 'u2', filter => 'team=in.(1,2)', want => sub { $_[0]{team} == 1 || $_[0]{team} == 2 });
wsub('b_u1_inserts', 'rt_b', 'u1', events => 'insert', want => sub { $_[1] eq 'I' });
wsub('c_u3_own', 'rt_c', 'u3', filter => 'owner=eq.u3&flag=eq.t', want => sub { $_[0]{owner} eq 'u3' && $_[0]{flag} });
my $sse = $rt->sse('topics=table:public.docs&access_token=' . tok('rt_b', 'u2'));
$sub{b_u2_sse} = { role => 'rt_b', sub => 'u2', c => $sse, want => sub { 1 }, kind => 'sse' };
my $ngroups = 5;    # (rt_a,u1) (rt_a,u2) (rt_b,u1) (rt_c,u3) (rt_b,u2)

sub subscribed
{
	my ($s) = @_;
	return $s->{c}->text =~ /retry/ if $s->{kind} eq 'sse';
	return grep { ($_->{type} // '') eq 'subscribed' } $s->{c}->frames;
}
$rt->wait_for(sub { !grep { !subscribed($_) } values %sub }, 'every subscriber joined');
is($rt->sql('SELECT subscriptions FROM bv_realtime.stats'), scalar(keys %sub), 'six table subscriptions');

# Changes a subscriber received: [op, record] (markers included).
sub changes
{
	my ($s) = @_;
	my @m = $s->{kind} eq 'sse' ? map { $_->{json} } $s->{c}->messages : $s->{c}->messages;
	return map { [ substr($_->{payload}{type}, 0, 1), $_->{payload}{record} // $_->{payload}{old_record} ] }
	  grep { $_->{topic} eq 'table:public.docs' } @m;
}
sub fmt { my ($op, $r) = @_; return join ':', $op, $r->{id}, $r->{owner} // '', $r->{team} // '', $r->{body} // '', ($r->{flag} ? 't' : 'f'); }

# ---- randomized phases ----
my $db = $node->background_psql('bitvelocity', on_error_stop => 1);
my %exists;
my %expected;    # name -> [ formatted changes ]
my ($rls0) = $rt->sql('SELECT rls_queries FROM bv_realtime.stats');
my ($ntx_total, $nchanges_total) = (0, 0);
for my $phase (1 .. 8)
{
	my @ids = (1 .. 30);
	my %pick;
	$pick{ $ids[ int(rand(@ids)) ] } = 1 while keys %pick < 6;
	my @ops;
	for my $id (sort { $a <=> $b } keys %pick)
	{
		my $owner = 'u' . (1 + int(rand(4)));
		my $team = 1 + int(rand(3));
		my $body = rand() < 0.25 ? 'secret ' . int(rand(100)) : "b" . int(rand(1000)) . " \xc3\xa9t\xc3\xa9 'q'";
		my $flag = rand() < 0.8 ? 'true' : 'false';
		(my $b_sql = $body) =~ s/'/''/g;
		if (!$exists{$id})
		{
			push @ops, [ 'I', $id, "INSERT INTO public.docs VALUES ($id, '$owner', $team, '$b_sql', $flag)" ];
			$exists{$id} = 1;
		}
		elsif (rand() < 0.65)
		{
			push @ops, [ 'U', $id, "UPDATE public.docs SET owner = '$owner', team = $team, body = '$b_sql', flag = $flag WHERE id = $id" ];
		}
		else
		{
			push @ops, [ 'D', $id, "DELETE FROM public.docs WHERE id = $id" ];
			delete $exists{$id};
		}
	}
	@ops = shuffle(@ops);    # commit order: random
	my $i = 0;
	while ($i < @ops)
	{
		my $n = 1 + int(rand(3));
		my @tx = @ops[ $i .. min($i + $n, scalar @ops) - 1 ];
		$db->query_safe(join('; ', 'BEGIN', (map { $_->[2] } @tx), 'COMMIT'));
		$ntx_total++;
		$i += @tx;
	}
	$nchanges_total += @ops;
	my $marker = -$phase;
	$db->query_safe("INSERT INTO public.docs VALUES ($marker, 'u3', 1, 'marker', true)");
	$ntx_total++;
	$rt->wait_for(sub { !grep { !grep { $_->[1]{id} == $marker } changes($_) } values %sub }, "phase $phase: every subscriber has the marker")
	  or last;

	# the model: SELECT as each subscriber's role, with its claims
	for my $name (sort keys %sub)
	{
		my $s = $sub{$name};
		my $rows = $rt->sql("BEGIN; SET LOCAL ROLE $s->{role}; "
			  . "SELECT set_config('request.jwt.claims', '{\"sub\":\"$s->{sub}\",\"role\":\"$s->{role}\"}', true); "
			  . "SELECT coalesce(jsonb_agg(to_jsonb(d) ORDER BY id), '[]') FROM public.docs d WHERE id > 0 AND id IN ("
			  . join(',', map { $_->[1] } @ops) . '); COMMIT');
		$rows = (split /\n/, $rows)[-1];
		my %visible = map { $_->{id} => $_ } @{ JSON::PP->new->decode($rows) };
		for my $op (@ops)
		{
			next if $op->[0] eq 'D';    # RLS table: deletes are not delivered
			my $r = $visible{ $op->[1] } or next;
			next unless $s->{want}->($r, $op->[0]);
			push @{ $expected{$name} }, fmt($op->[0], $r);
		}
		push @{ $expected{$name} }, fmt('I', { id => $marker, owner => 'u3', team => 1, body => 'marker', flag => 1 });
	}
}
$db->quit;
diag("$ntx_total transactions, $nchanges_total changes");
for my $name (sort keys %sub)
{
	my @got = map { fmt(@$_) } changes($sub{$name});
	is(join(' | ', @got), join(' | ', @{ $expected{$name} // [] }),
		"$name ($sub{$name}{role}, sub $sub{$name}{sub}): exactly the changes SELECT as its role shows and its filter asks for, in commit order");
	cmp_ok(scalar(grep { !/marker/ } @got), '>', 0, "$name received some rows") if $name ne 'c_u3_own';
}
ok(!grep({ $_->[0] eq 'D' } map { changes($_) } values %sub), 'no delete of an RLS table was delivered');
my ($rls) = $rt->sql('SELECT rls_queries FROM bv_realtime.stats') - $rls0;
cmp_ok($rls, '<=', $ngroups * $ntx_total,
	"visibility queries ($rls) <= groups x transactions ($ngroups x $ntx_total): never per subscriber and change");
cmp_ok($rls, '<', scalar(keys %sub) * $nchanges_total, "... fewer than subscribers x changes");

# ---- payload ----
my ($one) = grep { $_->[1]{id} > 0 } changes($sub{a_u1});
my ($frame) = grep { ($_->{topic} // '') eq 'table:public.docs' } $sub{a_u1}{c}->messages;
ok($frame->{id} =~ m{^[0-9A-F]+/[0-9A-F]+-\d+$} && $frame->{event} =~ /^(insert|update)$/
	  && $frame->{payload}{schema} eq 'public' && $frame->{payload}{table} eq 'docs',
	'a change message: position id, event insert/update, schema and table');
ok(defined $one && $one->[1]{id} =~ /^\d+$/ && !ref($one->[1]{id}) && JSON::PP::is_bool($one->[1]{flag}),
	'record values: integers as numbers, booleans as booleans');

# ---- a table without RLS: deletes are delivered (the key) ----
my $n = $rt->ws(query => 'access_token=' . tok('rt_a', 'u9'),
	send => ['{"type":"subscribe","topic":"table:public.notes"}']);
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'subscribed' } $n->frames }, 'notes subscriber joined');
$rt->sql(q{INSERT INTO public.notes VALUES (1, 'hello'); UPDATE public.notes SET txt = 'bye' WHERE id = 1; DELETE FROM public.notes WHERE id = 1});
$rt->wait_for(sub { $n->messages >= 3 }, 'notes changes arrive');
is(join(' ', map { $_->{event} . ':' . JSON::PP->new->canonical->encode($_->{payload}{record} // $_->{payload}{old_record}) } $n->messages),
	'insert:{"id":1,"txt":"hello"} update:{"id":1,"txt":"bye"} delete:{"id":1}',
	'table without RLS: insert, update and delete (the key only) delivered');

# ---- a group whose filters want none of a batch's changes costs no query ----
$rt->sql(q{CREATE TABLE public.solo (id int PRIMARY KEY); ALTER TABLE public.solo ENABLE ROW LEVEL SECURITY;
  CREATE POLICY all_rows ON public.solo FOR SELECT USING (true); GRANT SELECT ON public.solo TO rt_c;
  SELECT bv_realtime.enable_table('public.solo')});
my $solo = $rt->ws(query => 'access_token=' . tok('rt_c', 'solo'),
	send => ['{"type":"subscribe","topic":"table:public.solo","filter":"id=eq.999"}']);
$rt->wait_for(sub { grep { ($_->{type} // '') eq 'subscribed' } $solo->frames }, 'solo subscriber joined');
my $q0 = $rt->sql('SELECT rls_queries FROM bv_realtime.stats');
$rt->sql('INSERT INTO public.solo SELECT generate_series(1, 5)');
$rt->sql('INSERT INTO public.solo VALUES (999)');
$rt->wait_for(sub { $solo->messages >= 1 }, 'the matching row arrives');
is(join(',', map { $_->{payload}{record}{id} } $solo->messages), '999', 'only the row the filter asks for is delivered');
is($rt->sql('SELECT rls_queries FROM bv_realtime.stats') - $q0, 1,
	'one visibility query: none for the batch whose changes no filter wanted');
$solo->stop;

# ---- hostile subscriptions ----
my $tokb = tok('bv_user', 'u1');
my @bad = (
	[ '{"type":"subscribe","topic":"table:public.docs"}', 'not allowed', 'a role without SELECT on the table' ],
	[ '{"type":"subscribe","topic":"table:public.nokey"}', 'table not enabled for realtime', 'a table not enabled' ],
	[ '{"type":"subscribe","topic":"table:public.docs;drop"}', 'table not enabled for realtime', 'a table name with SQL in it' ],
	[ '{"type":"subscribe","topic":"table:docs"}', 'table topics are table:<schema>.<name>', 'no schema' ],
);
my @bad_a = (
	[ '{"type":"subscribe","topic":"table:public.docs","filter":"nope=eq.1"}', 'filter: unknown column', 'a filter on an unknown column' ],
	[ '{"type":"subscribe","topic":"table:public.docs","filter":"id=like.1"}', 'filter operators: eq, neq, in, is.null, not.null', 'an unknown filter operator' ],
	[ '{"type":"subscribe","topic":"table:public.docs","filter":"id=in.(1,2"}', 'filter: in.(a,b,...)', 'an unterminated in list' ],
	[ '{"type":"subscribe","topic":"table:public.docs","filter":"' . ('x' x 600) . '=eq.1"}', 'filter too long', 'a filter over 512 bytes' ],
	[ '{"type":"subscribe","topic":"table:public.docs","events":"insert,truncate"}', 'events: a list of insert, update, delete', 'an unknown operation' ],
	[ '{"type":"subscribe","topic":"table:public.docs","filter":"id=eq.1&id=eq.2&id=eq.3&id=eq.4&id=eq.5&id=eq.6&id=eq.7&id=eq.8&id=eq.9"}', 'too many filter conditions', 'nine conditions' ],
);
my $h1 = $rt->ws(query => "access_token=$tokb", send => [ map { $_->[0] } @bad ]);
my $h2 = $rt->ws(query => 'access_token=' . tok('rt_a', 'u1'), send => [ map { $_->[0] } @bad_a ]);
$rt->wait_for(sub { (grep { ($_->{type} // '') eq 'error' } $h1->frames) >= @bad && (grep { ($_->{type} // '') eq 'error' } $h2->frames) >= @bad_a },
	'hostile subscriptions answered');
my @e1 = grep { ($_->{type} // '') eq 'error' } $h1->frames;
my @e2 = grep { ($_->{type} // '') eq 'error' } $h2->frames;
for my $i (0 .. $#bad) { is($e1[$i]{reason}, $bad[$i][1], "refused: $bad[$i][2]"); }
for my $i (0 .. $#bad_a) { is($e2[$i]{reason}, $bad_a[$i][1], "refused: $bad_a[$i][2]"); }
ok(!grep({ ($_->{type} // '') eq 'subscribed' } $h1->frames, $h2->frames), 'no hostile subscription was accepted');
my ($st, $body) = $rt->get('/events?topics=table:public.docs&filter=nope=eq.1&access_token=' . tok('rt_a', 'u1'));
is("$st $body", qq(400 {"error":"filter: unknown column"}\n), 'SSE: a bad filter is 400 with the reason');
($st, $body) = $rt->get('/events?topics=table:public.docs&access_token=' . $tokb);
is("$st $body", qq(403 {"error":"not allowed"}\n), 'SSE: a role without SELECT is 403');

my ($cin, $cout) = split /\|/, $rt->sql('SELECT changes_in, changes_out FROM bv_realtime.stats');
cmp_ok($cin, '>=', $nchanges_total, "changes_in counts decoded changes ($cin)");
cmp_ok($cout, '>', 0, "changes_out counts deliveries ($cout)");
$_->{c}->stop for values %sub;
$_->stop for ($n, $h1, $h2);
done_testing();
