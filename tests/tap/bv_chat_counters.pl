# Unread and mention counters are never wrong: a seeded randomized workload
# of 6 pgbench clients (sending with random mentions, replying in threads,
# reading up to random messages or threads, editing mentions in and out,
# deleting, joining and leaving a channel, being kicked and added back) in
# three rooms of 10 users.  No client may fail (no deadlock, no raw
# constraint error).  Afterwards every counter equals its recount from the
# messages and receipts (the model: unread = messages of the room/thread
# after the receipt, not deleted, not one's own; mentions = those mentioning
# the user), and the structural invariants hold (one main-timeline row per
# joined member and none for others, member and reply counts, gap-free
# per-room numbering).  Reproduce a run with BV_SEED=<seed>.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_SEED} // int(rand(1_000_000_000));
note("seed $seed (rerun with BV_SEED=$seed)");

my $node = BvTest::new_node('chat_counters');
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

$node->safe_psql($db, q{
UPDATE chat.settings SET value = 0 WHERE name = 'send_rate';
CREATE TABLE public.outcomes (op int, code text);
CREATE FUNCTION public.hammer(p_user int, p_room int, p_kind int, p_pick int, p_other int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    me text := 'u' || p_user;
    other text := 'u' || p_other;
    rid bigint;
    target bigint;
    own bigint;
    body text;
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('role', 'bv_user', 'sub', me)::text, true);
    -- (as the user: row-level security shows the rooms the user is in and channels)
    SELECT id, 1 + p_pick % greatest(last_seq, 1) INTO rid, target FROM chat.rooms WHERE name = 'r' || p_room;
    IF rid IS NULL THEN
        -- not a member of this group any more: the admin adds the user back
        PERFORM set_config('request.jwt.claims', '{"role": "bv_user", "sub": "u1"}', true);
        PERFORM chat.add_member((SELECT id FROM chat.rooms WHERE name = 'r' || p_room), me);
        INSERT INTO public.outcomes VALUES (-1, 'ok');
        RETURN;
    END IF;
    body := 'm' || p_pick || CASE WHEN p_pick % 3 = 0 THEN ' @' || other ELSE '' END
                          || CASE WHEN p_pick % 7 = 0 THEN ' @u' || (p_other % 10 + 1) ELSE '' END;
    SELECT m.seq INTO own FROM chat.messages m
     WHERE m.room_id = rid AND m.sender = me AND m.deleted_at IS NULL
     ORDER BY m.seq DESC OFFSET p_pick % 5 LIMIT 1;
    CASE p_kind % 20
    WHEN 0, 1, 2, 3, 4, 5 THEN PERFORM chat.send(rid, body);
    WHEN 6, 7, 8 THEN PERFORM chat.send(rid, body, target);
    WHEN 9, 10, 11 THEN PERFORM chat.mark_read(rid, CASE WHEN p_pick % 4 = 0 THEN NULL ELSE target END);
    WHEN 12 THEN PERFORM chat.mark_read(rid, NULL,
                     (SELECT coalesce(max(m.thread_root), 0) FROM chat.messages m WHERE m.room_id = rid AND m.thread_root <= target));
    WHEN 13, 14 THEN PERFORM chat.edit(rid, coalesce(own, target), body);
    WHEN 15 THEN PERFORM chat.delete_message(rid, coalesce(own, target));
    WHEN 16 THEN
        IF p_room = 1 THEN PERFORM chat.join_room(rid); ELSE PERFORM chat.mark_read(rid); END IF;
    WHEN 19 THEN PERFORM chat.react(rid, target, 'e' || p_pick % 3);
    WHEN 17 THEN
        IF p_room = 1 THEN PERFORM chat.leave_room(rid); ELSE PERFORM chat.send(rid, body); END IF;
    ELSE
        IF p_pick % 3 = 0 THEN
            -- the admin (u1) kicks someone (added back at their next operation)
            PERFORM set_config('request.jwt.claims', '{"role": "bv_user", "sub": "u1"}', true);
            PERFORM chat.kick(rid, other);
        ELSE
            PERFORM chat.send(rid, body, target);
        END IF;
    END CASE;
    INSERT INTO public.outcomes VALUES (p_kind % 20, 'ok');
EXCEPTION WHEN SQLSTATE 'PT403' OR SQLSTATE 'PT404' OR SQLSTATE '22023' OR SQLSTATE 'PT409' THEN
    INSERT INTO public.outcomes VALUES (p_kind % 20, SQLSTATE);
END $$;
GRANT INSERT ON public.outcomes TO bv_user;
GRANT USAGE ON SCHEMA public TO bv_user;
GRANT EXECUTE ON FUNCTION public.hammer(int, int, int, int, int) TO bv_user;
});
# Room r1 is a channel, r2 and r3 groups; u1 owns them all; every user is in.
$node->safe_psql($db, q{
SELECT set_config('request.jwt.claims', '{"role": "bv_user", "sub": "u1"}', false);
SELECT chat.create_room('channel', 'r1', '', ARRAY['u2','u3','u4','u5','u6','u7','u8','u9','u10']);
SELECT chat.create_room('group', 'r2', '', ARRAY['u2','u3','u4','u5','u6','u7','u8','u9','u10']);
SELECT chat.create_room('group', 'r3', '', ARRAY['u2','u3','u4','u5','u6','u7','u8','u9','u10']);
});

my $script = "$PostgreSQL::Test::Utils::tmp_check/chat_hammer.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{
\set u random(2, 10)
\set r random(1, 3)
\set kind random(0, 100000)
\set pick random(0, 100000)
\set other random(2, 10)
SET ROLE bv_user;
SELECT public.hammer(:u, :r, :kind, :pick, :other);
RESET ROLE;
});
$node->command_ok(
	[ 'pgbench', '-n', '-c', '6', '-j', '6', '-t', '400', "--random-seed=$seed", '-f', $script,
	  '-h', $node->host, '-p', $node->port, $db ],
	"6 clients x 400 random chat operations (seed $seed): no deadlock, no error");
is($node->safe_psql($db, 'SELECT count(*) FROM public.outcomes'), '2400', 'every operation answered');
note($node->safe_psql($db, q{SELECT string_agg(format('op %s %s: %s', op, code, n), ', ' ORDER BY op, code)
                              FROM (SELECT op, code, count(*) n FROM public.outcomes GROUP BY 1, 2) x}));
cmp_ok($node->safe_psql($db, "SELECT count(*) FROM public.outcomes WHERE code = 'ok' AND op < 6"), '>', 300,
	'hundreds of messages sent');
cmp_ok($node->safe_psql($db, "SELECT count(*) FROM chat.read_state WHERE thread > 0"), '>', 5, 'threads were followed');
cmp_ok($node->safe_psql($db, "SELECT count(*) FROM chat.messages WHERE deleted_at IS NOT NULL"), '>', 10, 'messages were deleted');
cmp_ok($node->safe_psql($db, "SELECT sum(unread) FROM chat.counters"), '>', 0, 'some messages are unread');
cmp_ok($node->safe_psql($db, "SELECT sum(mentions) FROM chat.counters"), '>', 0, 'some mentions are unread');

# The model: recount every counter from messages and receipts.
my $wrong = $node->safe_psql($db, q{
SELECT string_agg(format('%s/%s/%s: stored %s/%s, recount %s/%s', rs.user_id, rs.room_id, rs.thread,
                         rs.unread, rs.mentions, x.u, x.n), E'\n')
  FROM chat.counters rs
  CROSS JOIN LATERAL (SELECT count(*)::int AS u, (count(*) FILTER (WHERE rs.user_id = ANY (m.mentions)))::int AS n
                        FROM chat.messages m
                       WHERE m.room_id = rs.room_id AND coalesce(m.thread_root, 0) = rs.thread
                         AND m.seq > rs.read_seq AND m.deleted_at IS NULL AND m.sender <> rs.user_id) x
 WHERE (rs.unread, rs.mentions) <> (x.u, x.n)});
is($wrong, '', "every unread and mention counter equals its recount (seed $seed)");

is($node->safe_psql($db, q{
SELECT count(*) FROM chat.members m
 WHERE (m.state = 'joined') <> EXISTS (SELECT 1 FROM chat.read_state rs
                                        WHERE rs.room_id = m.room_id AND rs.user_id = m.user_id AND rs.thread = 0)}),
	'0', 'one main-timeline receipt per joined member, none for others');
is($node->safe_psql($db, q{
SELECT count(*) FROM chat.read_state rs
 WHERE NOT EXISTS (SELECT 1 FROM chat.members m WHERE m.room_id = rs.room_id AND m.user_id = rs.user_id AND m.state = 'joined')}),
	'0', 'no counters of users who left or were kicked');
is($node->safe_psql($db, q{
SELECT count(*) FROM chat.rooms r
 WHERE member_count <> (SELECT count(*) FROM chat.members m WHERE m.room_id = r.id AND m.state = 'joined')
    OR last_seq <> (SELECT count(*) FROM chat.messages m WHERE m.room_id = r.id)
    OR last_seq <> coalesce((SELECT max(seq) FROM chat.messages m WHERE m.room_id = r.id), 0)}),
	'0', 'member counts exact; messages numbered 1..last_seq without gaps');
is($node->safe_psql($db, q{
SELECT count(*) FROM chat.messages r
 WHERE reply_count <> (SELECT count(*) FROM chat.messages m
                        WHERE m.room_id = r.room_id AND m.thread_root = r.seq AND m.deleted_at IS NULL)}),
	'0', 'reply counts exact (the threads\' totals)');
is($node->safe_psql($db, q{
SELECT count(*) FROM chat.rooms r
 WHERE main_count <> (SELECT count(*) FROM chat.messages m
                       WHERE m.room_id = r.id AND m.thread_root IS NULL AND m.deleted_at IS NULL)}),
	'0', 'main-timeline totals exact');
is($node->safe_psql($db, q{
SELECT count(*) FROM chat.read_state rs JOIN chat.rooms r ON r.id = rs.room_id WHERE rs.read_seq > r.last_seq}),
	'0', 'no receipt beyond the last message');
# What a user is shown (the room list, with its thread sums) is the recount.
for my $u (qw(u1 u3 u5))
{
	is($node->safe_psql($db, qq{
SELECT set_config('request.jwt.claims', '{"role": "bv_user", "sub": "$u"}', false);
SELECT count(*) FROM chat.room_list() l
  CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE m.thread_root IS NULL) AS u,
                             count(*) FILTER (WHERE m.thread_root IS NULL AND '$u' = ANY (m.mentions)) AS n,
                             count(*) FILTER (WHERE m.thread_root IS NOT NULL) AS tu,
                             count(*) FILTER (WHERE m.thread_root IS NOT NULL AND '$u' = ANY (m.mentions)) AS tn
                        FROM chat.read_state rs
                        JOIN chat.messages m ON m.room_id = rs.room_id AND coalesce(m.thread_root, 0) = rs.thread
                                            AND m.seq > rs.read_seq AND m.deleted_at IS NULL AND m.sender <> rs.user_id
                       WHERE rs.room_id = l.room_id AND rs.user_id = '$u') x
 WHERE (l.unread, l.mentions, l.thread_unread, l.thread_mentions) <> (x.u, x.n, x.tu, x.tn)}) =~ s/.*\n//sr,
		'0', "the room list of $u shows the recounted counters");
}

# A receipt that starts following a thread while an admin kicks the reader:
# the receipt waits for the kick and is refused; no counter row is left
# for a user who is not a member (0.1.0 inserted one).
$node->safe_psql($db, q{
SELECT set_config('request.jwt.claims', '{"role": "bv_user", "sub": "u1"}', false);
SELECT chat.create_room('group', 'race', '', ARRAY['u2']);
SELECT chat.send((SELECT id FROM chat.rooms WHERE name = 'race'), 'the root of a thread');
});
my $race = $node->safe_psql($db, "SELECT id FROM chat.rooms WHERE name = 'race'");
my $admin = $node->background_psql($db);
$admin->query_safe(q{BEGIN; SELECT set_config('request.jwt.claims', '{"role": "bv_user", "sub": "u1"}', true);});
$admin->query_safe("SELECT chat.kick($race, 'u2')");
my $reader = $node->background_psql($db, on_error_stop => 0);
$reader->query_until(qr/started/, qq{SET application_name = 'race_reader';
SELECT set_config('request.jwt.claims', '{"role": "bv_user", "sub": "u2"}', false);
\\echo started
SELECT chat.mark_read($race, NULL, 1);
});
ok($node->poll_query_until($db, qq{
SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'race_reader' AND wait_event_type = 'Lock')
    OR EXISTS (SELECT 1 FROM chat.read_state WHERE room_id = $race AND user_id = 'u2' AND thread = 1)}),
	'the receipt waits for the kick (or has written its row)');
$admin->query_safe('COMMIT');
$admin->quit;
$reader->query_until(qr/finished/, "\\echo finished\n");
like($reader->{stderr}, qr/not a member of room/, 'the receipt of the kicked member is refused');
$reader->quit;
is($node->safe_psql($db, "SELECT count(*) FROM chat.read_state WHERE room_id = $race AND user_id = 'u2'"), '0',
	'no counter row is left for the kicked member');

done_testing();
