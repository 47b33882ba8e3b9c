# Red-team round 7 (bv_realtime 0.5.0): bv_realtime.handler_timeout bounds a
# handler call only until the handler catches it.
#
# Finding 4 (low: a pool connection held for ever).  handler_call() arms
# PostgreSQL's statement timeout once (enable_timeout_after).  A handler,
# or any function it reaches (a table owner's RLS policy or trigger), may
# catch the cancel in PL/pgSQL (EXCEPTION WHEN query_canceled) and go on:
# nothing cancels it again, the call returns 200 long after the timeout,
# and meanwhile it holds one of bv_realtime.handler_connections (2)
# backends; two such calls stop every handler of every client (in the
# worker's fallback, the whole gateway).  Here the handler, after catching
# the cancel, runs a second sleep that outlasts the timeout and still
# answers 200.
# Expected: the call ends at the timeout with 504 (e.g. the timeout re-armed
# as a hard limit: cancel again, or end the pool backend's session, when
# the call outlives handler_timeout by a margin).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red7tmo');
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', q{
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO bv_user;
CREATE FUNCTION app.h(topic text, event text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    BEGIN
        PERFORM pg_catalog.pg_sleep(30);
    EXCEPTION WHEN query_canceled THEN
        -- caught: nothing cancels this one
        PERFORM pg_catalog.pg_sleep(0.3);
        RETURN jsonb_build_object('escaped', true, 'ms', (extract(epoch FROM clock_timestamp() - t0) * 1000)::int);
    END;
    RETURN jsonb_build_object('escaped', false);
END $$;
});
my ($rc, $r, $err) = $node->psql('bitvelocity', q{SELECT status || '|' || coalesce(result, message) FROM bv_realtime.handler_call(
  'app.h(pg_catalog.text,pg_catalog.text,pg_catalog.jsonb)', 'bv_user', '{"sub":"u1","role":"bv_user"}', 't', 'e', NULL, 100)});
$r //= '';
like($r, qr/^\d+\|/, 'control: the call returned (a fix that ends the session would answer nothing here)') or diag "$r $err";
{
	local $TODO = 'finding 4: a handler that catches query_canceled outlives handler_timeout';
	like($r, qr/^504\|/, 'a call that outlives its timeout (100 ms) ends with 504');
}
diag "result: $r";
done_testing();
