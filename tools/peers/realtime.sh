#!/usr/bin/env bash
# tools/peers/realtime.sh start|stop|status: bv_realtime in `make run`.
#
# The gateway is a background worker of the cluster (no process of its own
# to start or stop): this peer prepares the demo and prints how to watch
# it.  Idempotent: a signing key "realtime-demo" in bv.jwt_keys (random,
# generated once), a grant of topics "demo*" to bv_user, the demo table
# public.realtime_demo (RLS: each user sees own rows and public ones)
# enabled for table changes; then the URL of the demo page the gateway
# serves (the browser's own WebSocket and EventSource), and curl -N /
# WebSocket commands.  Called by tools/cluster.sh after the database
# started (env: BV_HOME, SOCK, BV_DB, BV_PORT, PGBIN).
set -euo pipefail

BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
PGBIN=${PGBIN:?PGBIN is not set}

psql_bv() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$BV_PORT" -U postgres -d "$BV_DB" "$@"; }

installed() { [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_realtime'")" = 1 ]; }

cmd_start() {
    installed || { echo "bv_realtime: not installed in $BV_DB"; return 0; }
    # a failed demo set-up must not stop `make run`
    psql_bv >/dev/null <<'SQL' || echo "bv_realtime: the demo set-up failed (see the error above)"
SET client_min_messages = warning;
INSERT INTO bv.jwt_keys (kid, alg, key)
SELECT 'realtime-demo', 'HS256', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
WHERE NOT EXISTS (SELECT 1 FROM bv.jwt_keys WHERE kid = 'realtime-demo');
INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee, comment)
SELECT p, a, 'bv_user', 'make run demo'
FROM (VALUES ('demo*', 'subscribe'), ('demo*', 'publish'), ('demo*', 'presence')) v(p, a)
WHERE NOT EXISTS (SELECT 1 FROM bv_realtime.topic_grants g
                  WHERE g.topic_pattern = v.p AND g.action = v.a AND g.grantee = 'bv_user');
CREATE TABLE IF NOT EXISTS public.realtime_demo (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner text NOT NULL,
    public boolean NOT NULL DEFAULT false,
    body text);
ALTER TABLE public.realtime_demo ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'realtime_demo' AND policyname = 'own_or_public') THEN
        CREATE POLICY own_or_public ON public.realtime_demo FOR SELECT TO bv_user
            USING (public OR owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
    END IF;
END
$$;
GRANT SELECT ON public.realtime_demo TO bv_user;
SELECT bv_realtime.enable_table('public.realtime_demo');
SQL
    echo "bv_realtime: demo ready ('make status' shows the demo page and the commands)"
}

cmd_status() {
    installed || { echo "bv_realtime: not installed in $BV_DB"; return 0; }
    local state listen token
    IFS='|' read -r state listen <<<"$(psql_bv -c "SELECT state, coalesce(listen, '') FROM bv_realtime.stats")"
    if [ "$state" != running ] || [ -z "$listen" ]; then
        echo "bv_realtime: gateway $state (see bv_realtime.stats.last_error)"
        return 0
    fi
    if [ "$(psql_bv -c "SELECT count(*) FROM bv.jwt_keys WHERE kid = 'realtime-demo'")" != 1 ]; then
        echo "bv_realtime: gateway running on $listen (run 'make run' to set up the demo)"
        return 0
    fi
    token=$(psql_bv -c "SELECT bv.jwt_sign(jsonb_build_object('role', 'bv_user', 'sub', 'demo-user',
                         'exp', extract(epoch FROM now())::int + 86400), 'realtime-demo')")
    echo "bv_realtime: gateway running on $listen (WebSocket /socket, SSE /events; docs/bv_realtime.md)"
    echo "  demo page (the browser's own WebSocket and EventSource):"
    echo "    http://$listen/?token=$token&topic=demo&events=chat"
    echo "  TOKEN=$token"
    echo "  watch with SSE:        curl -N \"http://$listen/events?topics=demo&access_token=\$TOKEN\""
    echo "  watch with WebSocket:  /usr/bin/python3 -m websockets \"ws://$listen/socket?access_token=\$TOKEN&topics=demo\""
    echo "  table changes (RLS):   curl -N \"http://$listen/events?topics=table:public.realtime_demo&access_token=\$TOKEN\""
    echo "  send:  psql -h $SOCK -p $BV_PORT -U postgres -d $BV_DB -c \"SELECT bv_realtime.send('demo', 'chat', '{\\\"text\\\": \\\"hi\\\"}')\""
    echo "         psql -h $SOCK -p $BV_PORT -U postgres -d $BV_DB -c \"INSERT INTO public.realtime_demo (owner, body) VALUES ('demo-user', 'mine')\""
}

case "${1:-}" in
    start) cmd_start ;;
    stop) : ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
