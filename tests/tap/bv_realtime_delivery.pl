# bv_realtime delivery, with real clients (python3-websockets, curl -N):
# a seeded randomized workload over three sessions (sends, commits,
# rollbacks, rolled-back savepoints, interleaved commits) checked against a
# journal of what committed, in commit order, per subscriber and topic; resume
# after disconnect from the history (WebSocket last_id, SSE Last-Event-ID)
# without gaps or duplicates; a slow client dropped while the others keep
# receiving; the worker terminated and restarted with nothing lost; stats.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

my $seed = $ENV{BV_SEED} // time();
srand($seed);
diag("seed $seed (rerun with BV_SEED=$seed)");

my $node = BvTest::new_node('rtdeliv',
	extra_conf => "bv_realtime.client_queue_bytes = 262144\nbv_realtime.keepalive = 60\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('t:*', 'subscribe', 'bv_user')});
my $tok = $rt->token(role => 'bv_user', sub => 'u1');

sub subscribed_count { return scalar grep { ($_->{type} // '') eq 'subscribed' } $_[0]->frames; }
sub summary { return join ' ', map { "$_->{topic}/$_->{payload}{k}" } @_; }
sub sse_summary { return join ' ', map { "$_->{json}{topic}/$_->{json}{payload}{k}" } @_; }
sub for_topics { my ($topics, @j) = @_; my %t = map { $_ => 1 } @$topics; return grep { $t{ $_->{topic} } } @j; }
sub pos_key
{
	my ($id) = @_;
	my ($hi, $lo, $n) = $id =~ m{^([0-9A-F]+)/([0-9A-F]+)-(\d+)$} or return undef;
	return sprintf('%08X%08X%010d', hex $hi, hex $lo, $n);
}
sub increasing
{
	my @k = map { pos_key($_) } @_;
	for my $i (1 .. $#k) { return 0 unless defined $k[$i] && $k[$i] gt $k[ $i - 1 ]; }
	return 1;
}

# ---- 1. randomized workload against a journal of commits ----
my $A = $rt->ws(query => "access_token=$tok&topics=t:0,t:1,t:2");
my $B = $rt->ws(header => ["Authorization: Bearer $tok"], send => ['{"type":"subscribe","topic":"t:1"}']);
my $C = $rt->sse("topics=t:0,t:2&access_token=$tok");
$rt->wait_for(sub { subscribed_count($A) == 3 && subscribed_count($B) == 1 && $C->text =~ /retry/ },
	'clients subscribed');

my @sessions = map { $node->background_psql('bitvelocity', on_error_stop => 1) } 1 .. 3;
my @open = (0, 0, 0);
my @pending = ([], [], []);
my @journal;
my $k = 0;
my %rolled_back;
my $send = sub {
	my ($s, $topic) = @_;
	my $m = { topic => $topic, k => ++$k };
	$sessions[$s]->query_safe("SELECT bv_realtime.send('$topic', 'e', '{\"k\": $m->{k}}')");
	return $m;
};
for my $step (1 .. 120)
{
	my $s = int(rand(3));
	if (!$open[$s])
	{
		$sessions[$s]->query_safe('BEGIN');
		($open[$s], $pending[$s]) = (1, []);
		next;
	}
	my $r = rand();
	if ($r < 0.5)
	{
		push @{ $pending[$s] }, $send->($s, 't:' . int(rand(3)));
	}
	elsif ($r < 0.6)
	{
		$sessions[$s]->query_safe('SAVEPOINT sp');
		my $m = $send->($s, 't:' . int(rand(3)));
		$rolled_back{ $m->{k} } = 1;
		$sessions[$s]->query_safe('ROLLBACK TO SAVEPOINT sp');
	}
	elsif ($r < 0.85)
	{
		$sessions[$s]->query_safe('COMMIT');
		push @journal, @{ $pending[$s] };
		$open[$s] = 0;
	}
	else
	{
		$sessions[$s]->query_safe('ROLLBACK');
		$rolled_back{ $_->{k} } = 1 for @{ $pending[$s] };
		$open[$s] = 0;
	}
}
for my $s (0 .. 2)
{
	next unless $open[$s];
	$sessions[$s]->query_safe('COMMIT');
	push @journal, @{ $pending[$s] };
}
# a last message on every topic marks the end
for my $t (0 .. 2)
{
	push @journal, $send->(0, "t:$t");
}
$_->quit for @sessions;
diag(scalar(@journal) . ' messages committed, ' . scalar(keys %rolled_back) . ' rolled back');

my @want_a = for_topics([qw(t:0 t:1 t:2)], @journal);
my @want_b = for_topics(['t:1'], @journal);
my @want_c = for_topics([qw(t:0 t:2)], @journal);
$rt->wait_for(sub { $A->messages >= @want_a && $B->messages >= @want_b && $C->messages >= @want_c },
	'every subscriber has its messages');
my $expect = sub { summary(map { { topic => $_->{topic}, payload => { k => $_->{k} } } } @_) };
is(summary($A->messages), $expect->(@want_a), 'WS subscriber of 3 topics: exactly the committed messages, in commit order');
is(summary($B->messages), $expect->(@want_b), 'WS subscriber of 1 topic: exactly its committed messages, in commit order');
is(sse_summary($C->messages), $expect->(@want_c), 'SSE subscriber: exactly its committed messages, in commit order');
ok(!grep({ $rolled_back{ $_->{payload}{k} } } $A->messages, $B->messages), 'no rolled-back message was delivered');
ok(increasing(map { $_->{id} } $A->messages), 'positions (ids) increase in delivery order');
is_deeply([ map { $_->{id} } $C->messages ], [ map { $_->{json}{id} } $C->messages ], 'SSE id: lines carry the same positions');
is($rt->sql('SELECT count(*) FROM bv_realtime.messages'), scalar(@journal), 'the history holds every committed message');

# ---- 2. resume after disconnect, from the history ----
my @a = $A->messages;
my $mid = $a[ int(@a / 2) ]{id};
my @tail_a = @a[ int(@a / 2) + 1 .. $#a ];
my $D = $rt->ws(query => "access_token=$tok&topics=t:0,t:1,t:2&last_id=$mid");
$rt->wait_for(sub { $D->messages >= @tail_a }, 'resumed WS client catches up');
is(summary($D->messages), summary(@tail_a), 'WS resume with last_id: every later message, once, in order');
ok((grep { ($_->{type} // '') eq 'subscribed' && $_->{resumed} } $D->frames) == 3, 'each subscription says resumed');
my @c = $C->messages;
my $cmid = $c[1]{id};
my $E = $rt->sse("topics=t:0,t:2&access_token=$tok", "Last-Event-ID: $cmid");
$rt->wait_for(sub { $E->messages >= @c - 2 }, 'resumed SSE client catches up');
is(sse_summary($E->messages), sse_summary(@c[ 2 .. $#c ]), 'SSE resume with Last-Event-ID: every later message, once, in order');

# a client that stops mid-stream and reconnects with its last position
my $F = $rt->ws(query => "access_token=$tok&topics=t:5", max_messages => 3);
$rt->wait_for(sub { subscribed_count($F) == 1 }, 'F subscribed');
$rt->sql("SELECT bv_realtime.send('t:5', 'e', jsonb_build_object('k', i)) FROM generate_series(1, 3) i");
$rt->wait_for(sub { !$F->running || $F->messages >= 3 }, 'F got 3 and left');
my $last = ($F->messages)[-1]{id};
$rt->sql("SELECT bv_realtime.send('t:5', 'e', jsonb_build_object('k', i)) FROM generate_series(4, 10) i");
my $F2 = $rt->ws(query => "access_token=$tok&topics=t:5&last_id=$last");
$rt->sql("SELECT bv_realtime.send('t:5', 'e', jsonb_build_object('k', i)) FROM generate_series(11, 12) i");
$rt->wait_for(sub { $F2->messages >= 9 }, 'F2 got the rest');
is(join(',', map { $_->{payload}{k} } $F->messages, $F2->messages), join(',', 1 .. 12),
	'disconnect, messages sent meanwhile, reconnect with last_id: no gap, no duplicate, then live');
$F2->stop;

# resume from before the history's low mark, or a bogus position: re-sync
$rt->sql('ALTER SYSTEM SET bv_realtime.history_max_rows = 5');
$node->reload;
$rt->wait_for(sub { $rt->sql('SELECT count(*) <= 5 FROM bv_realtime.messages') eq 't' }, 'history pruned');
my $G = $rt->ws(query => "access_token=$tok&topics=t:0&last_id=$a[0]{id}");
my $H = $rt->ws(query => "access_token=$tok&topics=t:0&last_id=FFFFFFFF/0-0");
$rt->wait_for(sub { grep({ ($_->{type} // '') eq 'resync' } $G->frames) && grep({ ($_->{type} // '') eq 'resync' } $H->frames) },
	'resync replies');
my ($g) = grep { ($_->{type} // '') eq 'resync' } $G->frames;
is($g->{reason}, 'position not in the history', 'resume from a pruned position: told to re-sync');
ok(!$G->messages, '... and given no partial replay');
my ($hits, $misses, $pruned) = split /\|/, $rt->sql('SELECT resume_hits, resume_misses, history_pruned FROM bv_realtime.stats');
cmp_ok($hits, '>=', 3, "resume hits counted ($hits)");
cmp_ok($misses, '>=', 2, "resume misses counted ($misses)");
cmp_ok($pruned, '>', 0, "pruned rows counted ($pruned)");
$rt->sql('ALTER SYSTEM RESET bv_realtime.history_max_rows');
$node->reload;
$_->stop for ($D, $G, $H);
$E->stop;

# ---- 3. a slow client is dropped; the others keep receiving ----
my $slow = $rt->ws(query => "access_token=$tok&topics=t:9", slow => 1);
my $fast = $rt->ws(query => "access_token=$tok&topics=t:9");
$rt->wait_for(sub { subscribed_count($fast) == 1 && $rt->sql('SELECT subscriptions FROM bv_realtime.stats') >= 5 },
	'slow and fast subscribed');
my $drops0 = $rt->sql('SELECT drops FROM bv_realtime.stats');
my $n = 0;
for my $batch (1 .. 200)
{
	$rt->sql("SELECT bv_realtime.send('t:9', 'big', jsonb_build_object('k', i, 'pad', repeat('x', 30000))) "
		  . 'FROM generate_series(' . ($n + 1) . ', ' . ($n + 4) . ') i');
	$n += 4;
	$rt->wait_for(sub { $fast->messages >= $n }, "fast client has $n");
	last if $rt->sql('SELECT drops FROM bv_realtime.stats') > $drops0;
}
is($rt->sql('SELECT drops FROM bv_realtime.stats') - $drops0, 1, "the slow client was dropped (after $n messages of 30 kB)");
$rt->sql("SELECT bv_realtime.send('t:9', 'big', jsonb_build_object('k', " . ($n + 1) . "))");
$rt->wait_for(sub { $fast->messages >= $n + 1 }, 'fast client gets the next one');
is(join(',', map { $_->{payload}{k} } $fast->messages), join(',', 1 .. $n + 1),
	'the fast client received every message, in order, before and after the drop');
$rt->wait_for(sub { $slow->closed }, 'slow client sees its end');
ok($slow->closed->{closed} == 4008 || $slow->closed->{closed} == 1006,
	"the slow client's connection was closed (code " . $slow->closed->{closed} . ")");

# ---- 4. the worker is terminated; it comes back and loses nothing ----
my $pid = $rt->sql('SELECT worker_pid FROM bv_realtime.stats');
# A's last message must still be in the history (the pruning test above cut it).
$rt->sql("SELECT bv_realtime.send('t:1', 'e', '{\"k\": 999}')");
$rt->wait_for(sub { ($A->messages)[-1]{payload}{k} == 999 }, 'A got k=999');
my @before = $A->messages;
$rt->sql("SELECT pg_terminate_backend($pid)");
$rt->wait_for(sub { $A->closed }, 'clients see the gateway go');
$rt->sql("SELECT bv_realtime.send('t:1', 'e', jsonb_build_object('k', 1000 + i)) FROM generate_series(1, 3) i");
$node->poll_query_until('bitvelocity',
	"SELECT state = 'running' AND worker_pid <> $pid FROM bv_realtime.stats")
  or die 'the worker did not come back';
pass('the worker came back after being terminated');
my $A2 = $rt->ws(query => "access_token=$tok&topics=t:0,t:1,t:2&last_id=$before[-1]{id}");
$rt->wait_for(sub { subscribed_count($A2) == 3 }, 'A2 subscribed');
$rt->sql("SELECT bv_realtime.send('t:2', 'e', '{\"k\": 2000}')");
$rt->wait_for(sub { $A2->messages >= 4 }, 'A2 caught up');
is(summary($A2->messages), 't:1/1001 t:1/1002 t:1/1003 t:2/2000',
	'after the restart: messages sent while it was down are replayed to the resuming client, then live ones');

# ---- 5. stats ----
my ($in, $out, $p50, $p99, $conns) = split /\|/,
  $rt->sql('SELECT messages_in, messages_out, latency_p50_ms, latency_p99_ms, connections FROM bv_realtime.stats');
cmp_ok($in, '>=', 4, "messages_in counts decoded messages since the restart ($in)");
cmp_ok($out, '>=', 4, "messages_out counts deliveries ($out)");
ok(length($p50) && length($p99) && $p50 <= $p99, "latency p50 $p50 ms <= p99 $p99 ms");
is($conns, '1', 'one connection open');
$A2->stop;
done_testing();
