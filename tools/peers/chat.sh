#!/usr/bin/env bash
# tools/peers/chat.sh start|stop|status: bv_chat's demo for `make run`.
#
# No process of its own: at start it loads sql/bv_chat/demo-data.sql once
# (rooms "team", "general" and a direct room of the demo users alice, bob
# and carol; idempotent) and, when bv_cdc's demo peers are there, routes
# the live events to the demo MQTT broker (sink demo_mqtt: topics
# chat/rooms/<room>/<event id>) and the notifications to the demo webhook
# receiver (sink demo_webhook: the push service).  status prints how to
# chat from two terminals and a browser, with tokens signed by the
# PostgREST key (so one token serves REST and the WebSocket gateway).
# Called by tools/cluster.sh after the database started (env: BV_HOME,
# SOCK, BV_DB, BV_PORT, PGBIN).
set -euo pipefail

BV_TOP=$(cd "$(dirname "$0")/../.." && pwd)
BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:?SOCK (the socket directory) is not set}
BV_HOME=${BV_HOME:?BV_HOME is not set}
DIR=$BV_HOME/chat
PIDFILE=$DIR/none.pid
REST=http://127.0.0.1:${BV_REST_PORT:-3000}

PEER=chat
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

installed() { [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_chat'")" = 1 ]; }
has_sink() { [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_cdc'")" = 1 ] &&
    [ "$(psql_bv -c "SELECT count(*) FROM bv_cdc.sinks WHERE name = '$1'")" = 1 ]; }
routed() { [ "$(psql_bv -c "SELECT count(*) FROM bv_cdc.routes WHERE table_pattern = '$1'")" != 0 ]; }

cmd_start() {
    mkdir -p "$DIR"
    if ! installed; then
        say "bv_chat is not installed: no demo"
        return 0
    fi
    psql_bv -f "$BV_TOP/sql/bv_chat/demo-data.sql" >/dev/null
    if has_sink demo_mqtt && ! routed chat.events; then
        psql_bv -c "SELECT chat.route_mqtt('demo_mqtt')" >/dev/null && say "live events routed to MQTT (sink demo_mqtt)"
    fi
    if has_sink demo_webhook && ! routed chat.notifications; then
        psql_bv -c "SELECT chat.route_push('demo_webhook')" >/dev/null && say "notifications routed to the push webhook (sink demo_webhook)"
    fi
    say "demo rooms ready (alice, bob, carol); 'make status' shows how to chat"
}

token() {
    psql_bv -c "SELECT bv.jwt_sign(jsonb_build_object('role', 'bv_user', 'sub', '$1', 'exp', extract(epoch FROM now())::bigint + 86400), 'postgrest')" 2>/dev/null  || true
}

show() { :; }
cmd_stop() { :; }

cmd_status() {
    installed || { say "bv_chat is not installed"; return 0; }
    local team ws alice bob
    team=$(psql_bv -c "SELECT id FROM chat.rooms WHERE name = 'team' AND created_by = 'alice' ORDER BY id LIMIT 1")
    ws=$(psql_bv -c "SHOW bv_realtime.port")
    alice=$(token alice)
    bob=$(token bob)
    if [ -z "$team" ] || [ -z "$alice" ]; then
        say "demo not loaded yet (or no PostgREST key): run 'make run' again"
        return 0
    fi
    say "chat (docs/bv_chat.md): room $team 'team' of alice, bob and carol"
    say "  terminal 1, bob listens live:"
    say "    /usr/bin/python3 -m websockets 'ws://127.0.0.1:$ws/socket?access_token=$bob&topics=chat:room:$team'"
    say "  terminal 2, alice writes (REST), bob sees message.created at once:"
    say "    ALICE=$alice"
    say "    curl -s -X POST $REST/rpc/chat_send -H \"Authorization: Bearer \$ALICE\" -H 'Content-Type: application/json' \\"
    say "         -d '{\"room_id\": $team, \"body\": \"hello @bob\"}'"
    say "    curl -s \"$REST/rpc/chat_rooms\" -H \"Authorization: Bearer \$ALICE\"      # unread and mention counts"
    say "    curl -s \"$REST/rpc/chat_history?room_id=$team&page_size=20\" -H \"Authorization: Bearer \$ALICE\""
    say "    curl -s -G $REST/rpc/chat_search --data-urlencode 'q=東京' -H \"Authorization: Bearer \$ALICE\""
    say "  browser (the gateway's demo page, bob's view of the room):"
    say "    http://127.0.0.1:$ws/?token=$bob&topic=chat:room:$team&events=message.created,message.edited,message.deleted,reaction.added,typing"
    say "  MQTT (when routed): mosquitto_sub -p 18830 -t 'chat/rooms/$team/#' -v"
}

peer_main "$@"
