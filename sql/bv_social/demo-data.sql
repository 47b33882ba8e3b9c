-- bv_social demo graph for `make run` (idempotent: loaded once).
-- 40 users (demo-user-1 .. 40, handles user1 .. user40, plus alice, bob and
-- carol), a power-law follow graph (user1 is followed by almost everybody),
-- posts with hashtags, a reply thread, a locked account with a pending
-- request, and a block.  Acts through the domain functions, as users would.
DO $$
DECLARE
    u int;
    k int;
BEGIN
    IF EXISTS (SELECT 1 FROM social.profiles WHERE handle = 'alice') THEN
        RETURN;
    END IF;
    FOR u IN 1..43 LOOP
        PERFORM set_config('request.jwt.claims', json_build_object('sub', 'demo-user-' || u)::text, true);
        PERFORM social.create_profile(CASE u WHEN 41 THEN 'alice' WHEN 42 THEN 'bob' WHEN 43 THEN 'carol' ELSE 'user' || u END,
                                      CASE u WHEN 41 THEN 'Alice' WHEN 42 THEN 'Bob' WHEN 43 THEN 'Carol' ELSE 'Demo user ' || u END,
                                      u = 43);
    END LOOP;
    PERFORM setseed(0.5);
    FOR u IN 1..43 LOOP
        PERFORM set_config('request.jwt.claims', json_build_object('sub', 'demo-user-' || u)::text, true);
        FOR k IN 1..8 LOOP
            BEGIN
                PERFORM social.follow('user' || (1 + floor(40 * random() ^ 3))::int);
            EXCEPTION WHEN SQLSTATE '22023' THEN NULL;   -- drew themselves
            END;
        END LOOP;
        PERFORM social.create_post(format('Hello from user %s #demo #%s', u, (ARRAY['postgres', 'feeds', 'kafka'])[1 + u % 3]));
    END LOOP;
    PERFORM set_config('request.jwt.claims', '{"sub": "demo-user-42"}', true);
    PERFORM social.follow('alice');
    PERFORM social.follow('carol');                       -- carol is locked: pending
    PERFORM set_config('request.jwt.claims', '{"sub": "demo-user-41"}', true);
    PERFORM social.follow('bob');
    PERFORM social.create_post('What should we build next? #postgres', 'public');
    PERFORM social.create_post('Only my followers read this', 'followers');
    PERFORM social.block('user2');
    SELECT max(p.id) INTO k FROM social.posts p JOIN social.profiles a ON a.id = p.author_id
     WHERE a.handle = 'alice' AND p.visibility = 'public';
    PERFORM set_config('request.jwt.claims', '{"sub": "demo-user-42"}', true);
    PERFORM social.create_post('A home timeline that never lies @alice', p_reply_to => k);
END
$$;
SELECT social.fanout_run(10);
SELECT social.refresh_trending();
