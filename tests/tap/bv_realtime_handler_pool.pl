# bv_realtime 0.5.0: SQL handlers run off the gateway's event loop
# (handler_pool.c), with real WebSocket clients:
#   - a handler that is still running (it waits for a row that the test
#     writes only later) does not hold delivery to another connection, nor
#     to its own: a send() committed meanwhile reaches both before the
#     handler's reply (order of events, no clock);
#   - one client's calls run in the order it sent them (a fast call sent
#     after the slow one is answered after it), while another client's
#     call is answered at once;
#   - the role lock holds in the pool's backends too: a handler that tries
#     RESET ROLE gets 42501 (403) and the superuser is never reached;
#   - handler_call() is for superusers only: a client role calling it
#     directly gets 42501;
#   - a client that closes while its call runs: the others go on, the pool
#     stays usable.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;
use JSON::PP;

my $J = JSON::PP->new->canonical->ascii;
# a long timeout: the slow handler waits for the test, not for a clock
my $node = BvTest::new_node('rtpool', extra_conf => "bv_realtime.keepalive = 60\n"
	  . "bv_realtime.handler_timeout = '60s'\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO bv_user;
CREATE TABLE app.gate (k text PRIMARY KEY);
GRANT SELECT ON app.gate TO bv_user;
CREATE TABLE app.calls (n bigserial PRIMARY KEY, who text NOT NULL, what text NOT NULL);
GRANT INSERT ON app.calls TO bv_user;
GRANT USAGE ON SEQUENCE app.calls_n_seq TO bv_user;
-- waits until the test opens the gate named in the payload (or 50 s)
CREATE FUNCTION app.h_wait(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 5000 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM app.gate WHERE k = payload ->> 'gate');
        PERFORM pg_sleep(0.01);
    END LOOP;
    INSERT INTO app.calls (who, what) VALUES (current_setting('request.jwt.claims')::jsonb ->> 'sub', 'wait');
    RETURN jsonb_build_object('opened', EXISTS (SELECT 1 FROM app.gate WHERE k = payload ->> 'gate'));
END $$;
CREATE FUNCTION app.h_fast(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.calls (who, what) VALUES (current_setting('request.jwt.claims')::jsonb ->> 'sub', 'fast');
    RETURN jsonb_build_object('user', current_user);
END $$;
CREATE FUNCTION app.h_escape(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RESET ROLE; RETURN jsonb_build_object('user', current_user); END $$;
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, handler) VALUES
  ('h:wait', 'publish', 'bv_user', 'app.h_wait(text,text,jsonb)'),
  ('h:fast', 'publish', 'bv_user', 'app.h_fast(text,text,jsonb)'),
  ('h:escape', 'publish', 'bv_user', 'app.h_escape(text,text,jsonb)');
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('news', 'subscribe', 'bv_user');
});

sub tok { return $rt->token(role => 'bv_user', sub => $_[0]); }
sub msg { my (%m) = @_; return $J->encode({ type => 'broadcast', %m }); }
sub st { return $rt->sql("SELECT $_[0] FROM bv_realtime.stats"); }
# index of the first frame matching $pred in $c's frames (-1: none)
sub at
{
	my ($c, $pred) = @_;
	my @f = $c->frames;
	for my $i (0 .. $#f) { return $i if $pred->($f[$i]); }
	return -1;
}
sub is_reply { my ($ref) = @_; return sub { ($_[0]{type} // '') eq 'reply' && ($_[0]{ref} // '') eq $ref }; }
sub is_news { my ($ev) = @_; return sub { ($_[0]{type} // '') eq 'message' && ($_[0]{event} // '') eq $ev }; }
sub running_calls
{
	return $rt->sql("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = 'bv_realtime_handler' "
		  . "AND state = 'active' AND query LIKE '%handler_call%'");
}

# ---- a running handler does not hold delivery ----
my $B = $rt->ws(query => 'access_token=' . tok('bob') . '&topics=news');
my $A = $rt->ws(query => 'access_token=' . tok('alice') . '&topics=news');
$rt->wait_for(sub { grep({ ($_->{type} // '') eq 'subscribed' } $A->frames) && grep({ ($_->{type} // '') eq 'subscribed' } $B->frames) }, 'both subscribed');
# alice's call: blocks until gate g1 opens; sent through a second socket of
# alice's so that her subscriber socket A only reads
my $A2 = $rt->ws(query => 'access_token=' . tok('alice'),
	send => [ msg(topic => 'h:wait', event => 'w', ref => 'slow', payload => { gate => 'g1' }),
		msg(topic => 'h:fast', event => 'f', ref => 'after-slow') ]);
ok($rt->wait_for(sub { running_calls() >= 1 }, 'the slow handler runs in a pool backend'), 'the handler runs in a backend of the pool');
$rt->sql(q{SELECT bv_realtime.send('news', 'during', '{"n": 1}')});
ok($rt->wait_for(sub { at($B, is_news('during')) >= 0 }, 'bob gets the news'), 'another connection gets a message committed while a handler runs');
ok($rt->wait_for(sub { at($A, is_news('during')) >= 0 }, 'alice gets the news'), '... and so does the caller\'s other socket');
is(at($A2, is_reply('slow')), -1, 'the slow handler has not answered yet (it waits for the gate)');
is(running_calls(), 1, '... and is still running');

# another client's call is answered while alice's waits; alice's second
# call waits behind her first
my $C = $rt->ws(query => 'access_token=' . tok('carol'), send => [ msg(topic => 'h:fast', event => 'f', ref => 'carol') ]);
ok($rt->wait_for(sub { at($C, is_reply('carol')) >= 0 }, 'carol\'s reply'), 'another client\'s call is answered while a slow call runs');
is(at($A2, is_reply('after-slow')), -1, 'the same client\'s next call waits for its first (one call per client at a time)');

$rt->sql(q{INSERT INTO app.gate VALUES ('g1')});
ok($rt->wait_for(sub { at($A2, is_reply('after-slow')) >= 0 }, 'alice\'s replies'), 'once the gate opens both of alice\'s calls are answered');
my ($slow) = grep { is_reply('slow')->($_) } $A2->frames;
is($slow->{status}, 200, 'the slow call succeeded');
ok($slow->{result}{opened}, '... after the gate opened');
ok(at($A2, is_reply('slow')) < at($A2, is_reply('after-slow')), 'a client\'s replies come in the order of its calls');
is($rt->sql(q{SELECT string_agg(who || ':' || what, ',' ORDER BY n) FROM app.calls WHERE who = 'alice'}), 'alice:wait,alice:fast',
	'... and its calls ran in that order');

# ---- the role lock in the pool's backends ----
my $E = $rt->ws(query => 'access_token=' . tok('eve'), send => [ msg(topic => 'h:escape', event => 'e', ref => 'esc') ]);
ok($rt->wait_for(sub { at($E, is_reply('esc')) >= 0 }, 'eve\'s reply'), 'the escaping handler is answered');
my ($esc) = grep { is_reply('esc')->($_) } $E->frames;
is($esc->{status}, 403, 'RESET ROLE in a handler run by the pool: 403');
is($esc->{error}{code}, '42501', '... SQLSTATE 42501');

# ---- handler_call() is not for clients ----
my ($rc, $out, $err) = $node->psql('bitvelocity',
	q{SET ROLE bv_user; SELECT * FROM bv_realtime.handler_call('app.h_fast(text,text,jsonb)', 'bv_user', '{}', 't', 'e', NULL, 100)});
like($err, qr/permission denied/, 'a client role cannot call handler_call()');

# ---- a client that leaves while its call runs ----
my $L = $rt->ws(query => 'access_token=' . tok('leaver'), send => [ msg(topic => 'h:wait', event => 'w', ref => 'gone', payload => { gate => 'g2' }) ]);
ok($rt->wait_for(sub { running_calls() >= 1 }, 'the leaver\'s call runs'), 'the leaver\'s call runs');
$L->stop;
$rt->sql(q{INSERT INTO app.gate VALUES ('g2')});
ok($rt->wait_for(sub { running_calls() == 0 }, 'the leaver\'s call ends'), 'the call of a client that left ends');
my $D = $rt->ws(query => 'access_token=' . tok('dave'), send => [ msg(topic => 'h:fast', event => 'f', ref => 'dave') ]);
ok($rt->wait_for(sub { at($D, is_reply('dave')) >= 0 }, 'dave\'s reply'), 'the pool goes on after a client left mid-call');
is($rt->sql("SELECT state FROM bv_realtime.stats"), 'running', 'the gateway is running');
ok(st('handler_calls') >= 6, 'stats.handler_calls counts the pool\'s calls');

$_->stop for ($A, $A2, $B, $C, $E, $D);
done_testing();
