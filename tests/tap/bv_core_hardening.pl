# bv_core hardening against an attacker (issue #17):
#
#  item 6: with bv.jwt_replay_check on, a flood of tokens with fresh jtis
#    must not evict the jti of a token already used: when the shared table
#    has no room, new jtis are refused (53400, fail closed) and the first
#    token stays refused as a replay; bv.jwt_replay_stats() shows it.  The
#    table is made as small as bv.rate_limit_buckets allows (512 slots, one
#    probe window per partition), so that it fills deterministically.
#  item 4: no secret of bv.jwt_keys in the server log when a row is
#    refused (the statement is not logged, no COPY context quotes the row),
#    nor in what the client sees.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

# As in production: no statement logging (PostgreSQL::Test::Cluster turns
# it on), errors logged with their statement (log_min_error_statement).
my $node = BvTest::new_node('hardening',
	extra_conf => "log_statement = none\nbv.rate_limit_buckets = 512\n");
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

# ---- item 6: replay table eviction ----
$node->safe_psql($db,
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('replay', 'HS256', encode(sha256('replay test key'::bytea), 'hex'))");

# Against a model: a random mix of fresh and reused jtis (seeded); a jti
# once accepted is refused ever after (28000), a new one is accepted or, if
# its slots are full, refused with 53400 and not recorded; the table then
# holds exactly the accepted jtis.
my $seed = int(rand(1_000_000));
my $model = $node->safe_psql($db, qq{
SET bv.jwt_replay_check = on;
CREATE TEMP TABLE accepted (jti text PRIMARY KEY);
CREATE TEMP TABLE mismatch (op integer, jti text, got text);
DO \$m\$
DECLARE
    op integer;
    j text;
    got text;
    was boolean;
BEGIN
    PERFORM setseed($seed / 1000000.0);
    FOR op IN 1 .. 400 LOOP
        j := 'model-' || floor(random() * 150)::integer;
        BEGIN
            PERFORM bv.jwt_verify(bv.jwt_sign(jsonb_build_object('sub', 'm', 'jti', j,
                'exp', extract(epoch FROM clock_timestamp())::bigint + 3600), 'replay'));
            got := 'ok';
        EXCEPTION WHEN OTHERS THEN
            got := SQLSTATE;
        END;
        was := EXISTS (SELECT 1 FROM accepted a WHERE a.jti = j);
        IF (was AND got <> '28000') OR (NOT was AND got NOT IN ('ok', '53400')) THEN
            INSERT INTO mismatch VALUES (op, j, got);
        END IF;
        IF got = 'ok' THEN
            INSERT INTO accepted VALUES (j);
        END IF;
    END LOOP;
END
\$m\$;
SELECT (SELECT count(*) FROM mismatch) || ' ' || (SELECT count(*) FROM accepted) || ' ' ||
       (SELECT replay_entries FROM bv.jwt_replay_stats());
});
my ($mismatches, $accepted, $entries) = split / /, $model;
is($mismatches, 0, "random fresh and reused jtis agree with the model (seed $seed)");
is($entries, $accepted, "the table holds exactly the accepted jtis (seed $seed)");
cmp_ok($accepted, '>', 100, 'most of the 150 jtis were accepted');

my $flood = $node->safe_psql($db, q{
SET bv.jwt_replay_check = on;
CREATE TEMP TABLE flood (n integer, state text);
CREATE FUNCTION pg_temp.token(jti text) RETURNS text LANGUAGE sql AS $$
    SELECT bv.jwt_sign(jsonb_build_object('sub', 'user-1', 'jti', jti,
        'exp', extract(epoch FROM clock_timestamp())::bigint + 3600), 'replay') $$;
CREATE FUNCTION pg_temp.verdict(token text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bv.jwt_verify(token);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE TEMP TABLE first AS SELECT pg_temp.token('first-token') AS t;
INSERT INTO flood SELECT 0, pg_temp.verdict(t) FROM first;
-- rate-limit buckets named like a jti (or like the old replay keys) do not
-- touch its replay entry
CREATE TEMP TABLE rl AS SELECT bv.rate_limit(k, 1e9, 1e9) FROM unnest(ARRAY['first-token', 'jti:first-token']) k;
INSERT INTO rl SELECT bv.rate_limit(k, 1e9, 1e9) FROM unnest(ARRAY['first-token', 'jti:first-token']) k;
INSERT INTO flood SELECT -1, pg_temp.verdict(t) FROM first;
INSERT INTO flood SELECT n, pg_temp.verdict(pg_temp.token('fresh-' || n)) FROM generate_series(1, 2000) n;
INSERT INTO flood SELECT 2001, pg_temp.verdict(t) FROM first;
SELECT (SELECT state FROM flood WHERE n = 0) || ' ' ||
       (SELECT state FROM flood WHERE n = -1) || ' ' ||
       (SELECT count(*) FROM flood WHERE n BETWEEN 1 AND 2000 AND state = 'ok') || ' ' ||
       (SELECT count(*) FROM flood WHERE n BETWEEN 1 AND 2000 AND state = '53400') || ' ' ||
       (SELECT count(*) FROM flood WHERE n BETWEEN 1 AND 2000 AND state NOT IN ('ok', '53400')) || ' ' ||
       (SELECT state FROM flood WHERE n = 2001);
});
my ($first, $second, $ok, $full, $other, $again) = split / /, $flood;
is($first, 'ok', 'replay check: the first token is accepted once');
is($second, '28000', 'and refused again, also after rate-limit calls on keys named like its jti');
cmp_ok($full, '>', 0, 'a flood of fresh jtis fills the table: new jtis are refused with 53400');
is($ok + 1 + $accepted, 512, 'every slot of the table holds a jti (none was evicted)');
is($other, 0, 'no other error during the flood');
is($again, '28000', 'the first token is still refused as a replay after the flood');

is($node->safe_psql($db, 'SELECT slots, replay_entries, replay_refused FROM bv.jwt_replay_stats()'),
	"512|512|$full", 'bv.jwt_replay_stats() shows the table full and the refusals');
is($node->safe_psql($db, q{SELECT bv.rate_limit('not-a-jti', 1, 1)}), 't',
	'a rate-limit key finds no slot and is allowed, untracked');
cmp_ok($node->safe_psql($db, 'SELECT rate_limit_untracked FROM bv.jwt_replay_stats()'), '>=', 1,
	'and counted as untracked');
my ($ret, $out, $err) = $node->psql($db, q{SET bv.jwt_replay_check = on;
	SELECT bv.jwt_verify(bv.jwt_sign(jsonb_build_object('sub', 'u', 'jti', 'one-more',
	    'exp', extract(epoch FROM now())::bigint + 60), 'replay'))},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  53400: the jti replay table is full/, 'the refusal: 53400 and a clear message');
like($err, qr/HINT:  Raise bv.rate_limit_buckets/, 'with a hint');
is($node->safe_psql($db, q{SELECT has_function_privilege('bv_service', 'bv.jwt_replay_stats()', 'EXECUTE')}), 'f',
	'bv.jwt_replay_stats() is for bv_admin');

# ---- item 4: no secret in the log or the client's error ----
my $canary = 'LeakCanary' . int(rand(1e9)) . '-0123456789abcdef0123456789abcdef';
$node->safe_psql($db, "INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('stored', 'HS256', '$canary-stored')");
my $log_start = -s $node->logfile;
my @bad = (
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES (repeat('k', 300), 'HS256', '$canary')",
	"INSERT INTO bv.jwt_keys (kid, alg, key, not_before, expires_at) VALUES ('w', 'HS256', '$canary', now(), now() - interval '1 day')",
	"INSERT INTO bv.jwt_keys (kid, alg, key, source) VALUES ('w', 'HS256', '$canary', 'elsewhere')",
	"INSERT INTO bv.jwt_keys (kid, alg, key, active) VALUES ('w', 'HS256', '$canary', NULL)",
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('w', 'RS256', '$canary')",
	"UPDATE bv.jwt_keys SET not_before = now(), expires_at = now() - interval '1 hour' WHERE kid = 'stored'",
	"UPDATE bv.jwt_keys SET source = 'x' WHERE kid = 'stored'",
	"COPY bv.jwt_keys (kid, alg, key, source) FROM STDIN;\nw\tHS256\t$canary\telsewhere\n\\.",
	"COPY bv.jwt_keys (kid, alg, key) FROM STDIN;\nw\tHS256\t-----BEGIN PUBLIC KEY----- $canary\n\\.");
my $client = '';
for my $sql (@bad)
{
	my ($r, $o, $e) = $node->psql($db, $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	isnt($r, 0, 'refused: ' . substr($sql, 0, 60));
	$client .= $e;
}
# Each refusal is logged (an ERROR line); none of them with the secret.
my $log = substr(slurp_file($node->logfile), $log_start);
my $errors = () = $log =~ /ERROR:  invalid key "[^"]*" in bv\.jwt_keys/g;
is($errors, scalar @bad, 'each refusal is in the server log');
unlike($log, qr/\Q$canary\E/, 'no secret in the server log');
unlike($log, qr/STATEMENT:.*jwt_keys|CONTEXT:.*jwt_keys/, 'the statements holding the secret are not logged');
unlike($client, qr/\Q$canary\E/, 'no secret in the errors the client sees');
like($client, qr/22023: invalid key "w" in bv.jwt_keys/, 'the client gets a specific error');
is($node->safe_psql($db, q{SELECT count(*) FROM bv.jwt_keys WHERE kid = 'w'}), '0', 'nothing was written');

$node->stop;
done_testing();
