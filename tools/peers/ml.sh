#!/usr/bin/env bash
# tools/peers/ml.sh start|stop|status: bv_ml's demo model for `make run`.
#
# No process of its own: at start it trains a small scikit-learn logistic
# regression, "churn_demo", on generated commerce data (seeded, so every
# start trains the same model) with Debian's /usr/bin/python3
# (python3-sklearn), exports it with tools/bv_ml_export.py, and registers it
# in production with ml.register_model(), enabled for /rpc/predict (1 call
# in 10 logged to ml.prediction_log).  Without scikit-learn it registers
# the same model from sql/bv_ml/demo-model.json (written by this script;
# regenerate it with `tools/peers/ml.sh train FILE`).  An existing
# churn_demo is left alone.  status prints a curl that scores one customer.
# Called by tools/cluster.sh with BV_HOME, BV_PORT, SOCK, BV_DB, PGBIN set.
set -euo pipefail

BV_DB=${BV_DB:-bitvelocity}
SOCK=${SOCK:-}
DIR=${BV_HOME:-.}/ml
BV_REST_PORT=${BV_REST_PORT:-3000}
TOP=$(cd "$(dirname "$0")/../.." && pwd)
MODEL=churn_demo
FALLBACK=$TOP/sql/bv_ml/demo-model.json

PEER=ml
# shellcheck source=lib/peer.sh
source "$(dirname "$0")/lib/peer.sh"

installed() { [ "$(psql_bv -c "SELECT count(*) FROM pg_extension WHERE extname = 'bv_ml'")" = 1 ]; }

# Train the demo model and write its bv_ml document to $1.  Features of a
# customer over the last 90 days; the label is whether they churned.
train() {
    local out=$1
    /usr/bin/python3 - "$out" "$TOP/tools" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from sklearn.linear_model import LogisticRegression
from bv_ml_export import export_sklearn

names = ["orders_90d", "spend_90d", "days_since_last_order", "support_tickets", "is_subscriber"]
rng = np.random.default_rng(2026)
n = 5000
orders = rng.poisson(3, n).astype(float)
spend = np.round(orders * rng.gamma(2.0, 25.0, n), 2)
recency = rng.integers(0, 120, n).astype(float)
tickets = rng.poisson(0.5, n).astype(float)
subscriber = (rng.random(n) < 0.3).astype(float)
X = np.column_stack([orders, spend, recency, tickets, subscriber])
z = -1.0 - 0.45 * orders - 0.004 * spend + 0.035 * recency + 0.6 * tickets - 1.2 * subscriber
y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
est = LogisticRegression(max_iter=2000).fit(X, y)
doc = export_sklearn(est, names)
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
PY
}

cmd_start() {
    installed || { say "bv_ml is not installed in $BV_DB; no demo model"; return 0; }
    if [ "$(psql_bv -c "SELECT count(*) FROM ml.models WHERE name = '$MODEL'")" != 0 ]; then
        say "demo model $MODEL already registered"
        return 0
    fi
    mkdir -p "$DIR"
    local doc=$DIR/$MODEL.json how="trained with scikit-learn"
    if ! train "$doc" 2>"$DIR/train.err"; then
        warn "cannot train with /usr/bin/python3 and scikit-learn (see $DIR/train.err); using $FALLBACK"
        doc=$FALLBACK
        how="from $FALLBACK"
    fi
    psql_bv -v doc="$(cat "$doc")" -v name="$MODEL" >/dev/null <<'SQL'
SELECT ml.expose_api() WHERE pg_catalog.to_regprocedure('api.predict(text, jsonb)') IS NULL;
SELECT version FROM ml.register_model(:'name', 'sklearn_logistic', :'doc'::jsonb,
                                      metrics => '{"demo": true, "trained_on": "5000 generated customers"}',
                                      stage => 'production');
UPDATE ml.models SET api_enabled = true, log_sample_rate = 0.1 WHERE name = :'name';
SQL
    say "registered demo model $MODEL ($how)"
}

cmd_status() {
    installed || return 0
    [ "$(psql_bv -c "SELECT count(*) FROM ml.models WHERE name = '$MODEL' AND api_enabled")" != 0 ] || return 0
    say "demo model $MODEL (docs/bv_ml.md): churn probability from $(psql_bv -c "SELECT array_to_string(feature_names, ', ') FROM ml.models WHERE name = '$MODEL' ORDER BY version DESC LIMIT 1")"
    say "  score one customer (TOKEN as printed by PostgREST):"
    say "    curl -s -X POST http://127.0.0.1:$BV_REST_PORT/rpc/predict -H \"Authorization: Bearer \$TOKEN\" -H 'Content-Type: application/json' \\"
    say "         -d '{\"model\":\"$MODEL\",\"features\":{\"orders_90d\":1,\"spend_90d\":40,\"days_since_last_order\":75,\"support_tickets\":2,\"is_subscriber\":0}}'"
    say "  in SQL: SELECT ml.predict('$MODEL', ARRAY[1, 40, 75, 2, 0]);"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) ;;
    status) cmd_status ;;
    train) train "${2:?usage: $0 train FILE}" ;;
    *) die "usage: $0 start|stop|status|train FILE" ;;
esac
