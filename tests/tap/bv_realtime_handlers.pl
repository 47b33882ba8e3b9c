# bv_realtime 0.4.0: client messages answered by SQL handlers
# (topic_grants.handler), with real WebSocket clients (python3-websockets):
#   - a message on a topic whose publish grant names a handler is not
#     broadcast: the handler runs as the client (role, request.jwt.claims,
#     request.realtime.event) in its own transaction and the client gets
#     {"type":"reply","ref":..,"status":200,"result":..}; what the handler
#     sends reaches subscribers through the WAL;
#   - hostile cases: a handler that raises (PTxyz -> xyz, P0001/22xxx ->
#     400, a unique violation -> 400 without the constraint's words, an
#     internal error -> 500 with a fixed message), a slow handler (504 at
#     bv_realtime.handler_timeout, the gateway keeps delivering), a handler
#     the role may not EXECUTE (403), a topic the client may not publish on
#     (403), malformed payloads and refs, a flood (the rate limit applies
#     before any handler runs), grants with a wrong handler (42P13, 22023).
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
my $node = BvTest::new_node('rthandlers', extra_conf => "bv_realtime.keepalive = 60\n"
	  . "bv_realtime.handler_timeout = '300ms'\n"
	  . "bv_realtime.client_messages_per_second = 2\n"
	  . "bv_realtime.client_messages_burst = 12\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO bv_user;
CREATE TABLE app.notes (id bigserial PRIMARY KEY, author text NOT NULL, body text NOT NULL UNIQUE);
-- the normal case: writes a row and announces it (SECURITY DEFINER: send() is bv_service's)
CREATE FUNCTION app.h_note(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n app.notes;
BEGIN
    IF jsonb_typeof(payload) IS DISTINCT FROM 'object' OR jsonb_typeof(payload -> 'body') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'body is required' USING ERRCODE = '22023', HINT = 'Send {"body": "..."}.';
    END IF;
    INSERT INTO app.notes (author, body)
    VALUES (current_setting('request.jwt.claims')::jsonb ->> 'sub', payload ->> 'body') RETURNING * INTO n;
    PERFORM bv_realtime.send(topic, 'note.created', to_jsonb(n));
    RETURN jsonb_build_object('id', n.id, 'event', event, 'seen_event', current_setting('request.realtime.event'));
END $$;
-- who runs it (SECURITY INVOKER)
CREATE FUNCTION app.h_whoami(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('user', current_user, 'sub', current_setting('request.jwt.claims')::jsonb ->> 'sub', 'payload', payload) $$;
CREATE FUNCTION app.h_conflict(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the room is closed' USING ERRCODE = 'PT409', HINT = 'Ask an admin to reopen it.', DETAIL = 'secret internal detail'; END $$;
CREATE FUNCTION app.h_raise(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'plain refusal'; END $$;
CREATE FUNCTION app.h_internal(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'SELECT * FROM app.secret_missing_table'; RETURN NULL; END $$;
CREATE FUNCTION app.h_slow(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN INSERT INTO app.notes (author, body) VALUES ('slow', 'written by the slow handler'); PERFORM pg_sleep(5); RETURN '{}'; END $$;
CREATE FUNCTION app.h_noexec(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT '{"never": true}'::jsonb $$;
CREATE FUNCTION app.h_null(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
REVOKE ALL ON FUNCTION app.h_noexec(text, text, jsonb) FROM PUBLIC;
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, handler) VALUES
  ('h:note', 'publish', 'bv_user', 'app.h_note(text,text,jsonb)'),
  ('h:whoami', 'publish', 'bv_user', 'app.h_whoami(text,text,jsonb)'),
  ('h:conflict', 'publish', 'bv_user', 'app.h_conflict(text,text,jsonb)'),
  ('h:raise', 'publish', 'bv_user', 'app.h_raise(text,text,jsonb)'),
  ('h:internal', 'publish', 'bv_user', 'app.h_internal(text,text,jsonb)'),
  ('h:slow', 'publish', 'bv_user', 'app.h_slow(text,text,jsonb)'),
  ('h:noexec', 'publish', 'bv_user', 'app.h_noexec(text,text,jsonb)'),
  ('h:null', 'publish', 'bv_user', 'app.h_null(text,text,jsonb)');
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES
  ('h:*', 'subscribe', 'bv_user'), ('plain:*', 'subscribe', 'bv_user'), ('plain:*', 'publish', 'bv_user'),
  -- a broadcast grant on a handler topic does not bypass the handler
  ('h:note', 'publish', 'bv_user');
});
sub tok { return $rt->token(role => 'bv_user', sub => $_[0]); }
sub of_type { my ($type, @f) = @_; return grep { ($_->{type} // '') eq $type } @f; }
sub st { return $rt->sql("SELECT $_[0] FROM bv_realtime.stats"); }
sub msg { my (%m) = @_; return $J->encode({ type => 'broadcast', %m }); }
sub replies { my ($c) = @_; return of_type('reply', $c->frames); }
sub reply_to
{
	my ($c, $ref) = @_;
	$rt->wait_for(sub { grep { defined $_->{ref} && $_->{ref} eq $ref } replies($c) }, "reply $ref");
	my ($r) = grep { defined $_->{ref} && $_->{ref} eq $ref } replies($c);
	return $r // {};
}

# ---- the normal case ----
my $sub = $rt->ws(query => 'access_token=' . tok('watcher') . '&topics=h:note,plain:1');
$rt->wait_for(sub { of_type('subscribed', $sub->frames) == 2 }, 'the watcher subscribed');
my $A = $rt->ws(query => 'access_token=' . tok('alice'),
	send => [ msg(topic => 'h:note', event => 'note.add', ref => 'r1', payload => { body => 'hello' }),
		msg(topic => 'h:whoami', event => 'who', ref => 7, payload => { x => [ 1, "\x{e9}" ] }),
		msg(topic => 'h:null', event => 'n', ref => 'rn') ]);
my $r = reply_to($A, 'r1');
is($r->{status}, 200, 'a handler topic answers with status 200');
is($r->{topic} . ' ' . $r->{event}, 'h:note note.add', '... naming the topic and event');
is($r->{result}{event}, 'note.add', '... with the handler\'s result');
is($r->{result}{seen_event}, 'note.add', '... which saw request.realtime.event');
is($rt->sql("SELECT author || ':' || body FROM app.notes"), 'alice:hello', 'the handler\'s transaction committed, with the client\'s claims');
$rt->wait_for(sub { grep { $_->{event} eq 'note.created' } $sub->messages }, 'the watcher gets note.created');
my ($created) = grep { $_->{event} eq 'note.created' } $sub->messages;
ok($created && $created->{id} && $created->{payload}{body} eq 'hello', 'what the handler sent reached the subscriber through the WAL, with a position');
ok(!grep({ ($_->{event} // '') eq 'note.add' } $sub->frames), 'the client message itself is not broadcast');
$r = reply_to($A, 7);
# (sent as \u00e9; BvRealtime decodes frames as bytes, so it reads back as UTF-8 bytes)
is_deeply($r->{result}, { user => 'bv_user', sub => 'alice', payload => { x => [ 1, "\xc3\xa9" ] } },
	'the handler runs as the client\'s role with its claims, and gets the payload (numeric ref echoed)');
$r = reply_to($A, 'rn');
ok($r->{status} == 200 && exists $r->{result} && !defined $r->{result}, 'a NULL result is null');
is(st('handler_calls'), 3, 'stats.handler_calls');

# ---- errors ----
my $E = $rt->ws(query => 'access_token=' . tok('eve'),
	send => [ msg(topic => 'h:conflict', event => 'x', ref => 'c'),
		msg(topic => 'h:raise', event => 'x', ref => 'p'),
		msg(topic => 'h:internal', event => 'x', ref => 'i'),
		msg(topic => 'h:noexec', event => 'x', ref => 'e'),
		msg(topic => 'h:note', event => 'x', ref => 'm1', payload => 'not an object'),
		msg(topic => 'h:note', event => 'x', ref => 'm2'),
		msg(topic => 'h:note', event => 'x', ref => 'u', payload => { body => 'hello' }),
		msg(topic => 'nogrant:1', event => 'x', ref => 'ng'),
		msg(topic => 'h:note', event => 'x', ref => { evil => 1 }, payload => { body => 'obj ref' }),
		msg(topic => 'h:note', event => 'x', ref => ('z' x 500), payload => { body => 'long ref' }) ]);
$r = reply_to($E, 'c');
is_deeply($r->{error}, { code => 'PT409', message => 'the room is closed', hint => 'Ask an admin to reopen it.' },
	'PTxyz: status xyz with the message and hint, not the detail');
is($r->{status}, 409, '... status 409');
$r = reply_to($E, 'p');
ok($r->{status} == 400 && $r->{error}{message} eq 'plain refusal', 'RAISE (P0001): 400 with the message');
$r = reply_to($E, 'i');
is($r->{status}, 500, 'an internal error: 500');
is($r->{error}{message}, 'the handler failed', '... with a fixed message');
unlike($J->encode($r), qr/secret_missing_table|app\./, '... that names nothing of the schema');
$r = reply_to($E, 'e');
is($r->{status}, 403, 'a handler the role may not EXECUTE: 403');
is($r->{error}{code}, '42501', '... SQLSTATE 42501');
$r = reply_to($E, 'm1');
ok($r->{status} == 400 && $r->{error}{hint} eq 'Send {"body": "..."}.', 'a malformed payload: the handler\'s 400 with its hint');
$r = reply_to($E, 'm2');
is($r->{status}, 400, 'no payload: the handler gets NULL and refuses');
$r = reply_to($E, 'u');
is($r->{status}, 400, 'a unique violation: 400');
unlike($J->encode($r), qr/notes|body_key|duplicate|Key/, '... without the constraint\'s words');
is($r->{error}{code}, '23505', '... SQLSTATE 23505');
$r = reply_to($E, 'ng');
ok($r->{status} == 403 && $r->{error}{message} eq 'not allowed', 'a topic without a publish grant: 403 not allowed');
$rt->wait_for(sub { replies($E) >= 10 }, 'all ten replies');
my @odd = grep { !defined $_->{ref} } replies($E);
is(scalar(@odd), 2, 'an object ref and a 500-byte ref are not echoed (null)');
is($rt->sql("SELECT count(*) FROM app.notes WHERE body IN ('obj ref', 'long ref')"), 2, '... the messages themselves were handled');
is($rt->sql("SELECT count(*) FROM app.notes WHERE author = 'eve' AND body = 'hello'"), 0, 'a failed handler wrote nothing');
ok(!$E->closed, 'errors leave the connection open');
is(st('handler_errors'), 7, 'stats.handler_errors counts the error replies (the refused topic is no call)');

# ---- a slow handler ----
my $S = $rt->ws(query => 'access_token=' . tok('slowpoke'),
	send => [ msg(topic => 'h:slow', event => 'x', ref => 's') ]);
$r = reply_to($S, 's');
is($r->{status}, 504, 'a handler over bv_realtime.handler_timeout: 504');
is($r->{error}{code}, '57014', '... SQLSTATE 57014');
is(st('handler_timeouts'), 1, 'stats.handler_timeouts');
is($rt->sql("SELECT count(*) FROM app.notes WHERE author = 'slow'"), 0, 'the timed-out handler\'s writes rolled back');
# the gateway goes on: a broadcast and a handler call after it
my $B = $rt->ws(query => 'access_token=' . tok('bob'),
	send => [ msg(topic => 'plain:1', event => 'typing', payload => { on => 1 }),
		msg(topic => 'h:note', event => 'x', ref => 'after', payload => { body => 'after the slow one' }) ]);
is(reply_to($B, 'after')->{status}, 200, 'after a timeout the next handler call works');
$rt->wait_for(sub { grep { $_->{event} eq 'typing' } $sub->messages }, 'plain broadcast');
ok((grep { $_->{event} eq 'typing' && $_->{from} eq 'bob' } $sub->messages), 'a topic without a handler still broadcasts');
$rt->sql("SELECT bv_realtime.send('plain:1', 'late', '{}')");
$rt->wait_for(sub { grep { $_->{event} eq 'late' } $sub->messages }, 'a send() after the timeout');
ok((grep { $_->{event} eq 'late' } $sub->messages), 'WAL delivery goes on after a timeout');

# ---- a flood: the rate limit applies before any handler runs ----
my $calls0 = st('handler_calls');
my $F = $rt->ws(query => 'access_token=' . tok('flood'),
	send => [ map { msg(topic => 'h:whoami', event => 'x', ref => "f$_") } 1 .. 60 ]);
$rt->wait_for(sub { $F->closed }, 'the flooding client is closed');
my $calls = st('handler_calls') - $calls0;
ok($calls >= 12 && $calls < 20, "a flood runs at most the burst and what the rate refills ($calls handler calls of 60)");
ok($F->closed->{closed} == 1008 || $F->closed->{closed} == 1006, 'the flood is closed (' . $J->encode($F->closed) . ')');

# ---- grants with a wrong handler ----
my ($rc, $out, $err) = $node->psql('bitvelocity',
	q{INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, handler) VALUES ('x', 'publish', 'bv_user', 'pg_catalog.lower(text)')});
like($err, qr/must be a function \(topic text, event text, payload jsonb\) returning jsonb/, 'a handler of another signature is refused');
($rc, $out, $err) = $node->psql('bitvelocity',
	q{\set VERBOSITY verbose
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, handler) VALUES ('x', 'subscribe', 'bv_user', 'app.h_note(text,text,jsonb)')});
like($err, qr/22023: a handler needs action 'publish'/, 'a handler on a subscribe grant is refused with 22023');

$_->stop for ($sub, $A, $E, $S, $B, $F);
done_testing();
