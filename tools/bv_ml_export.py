#!/usr/bin/python3
"""tools/bv_ml_export.py: train, export and score models for bv_ml.

Run with Debian's interpreter (/usr/bin/python3), which has python3-sklearn
and python3-xgboost.  Three uses:

  export_sklearn(estimator, feature_names)  the JSON document bv_ml reads for
      scikit-learn LinearRegression/Ridge/Lasso/ElasticNet (kind
      sklearn_linear) and LogisticRegression (kind sklearn_logistic).
      XGBoost models need no exporter: Booster.save_model("m.json").

  train KIND OUTDIR [--rows N --features F --seed S --nan-rate R
                     --trees T --depth D]
      generates data (seeded), trains KIND (xgb_reg, xgb_binary, xgb_multi,
      sk_linear, sk_logistic, sk_multinomial), writes OUTDIR/model.json, and
      OUTDIR/rows.csv: id, the features as a PostgreSQL float8[] literal
      (NULL and NaN for missing values), the library's own predict()
      output as a float8[] literal.  Tests and benchmarks compare bv_ml with
      that column.

  time-predict OUTDIR [--rows N --features F]
      times XGBoost's own predict with one thread on N random rows already
      in memory (a float32 matrix); prints rows per second.
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np


def export_sklearn(est, feature_names=None):
    """The bv_ml.sklearn document of a fitted scikit-learn linear model."""
    import sklearn
    name = type(est).__name__
    doc = {
        "format": "bv_ml.sklearn",
        "estimator": name,
        "library_version": sklearn.__version__,
        "coef": np.asarray(est.coef_, dtype=np.float64).tolist(),
        "intercept": np.asarray(est.intercept_, dtype=np.float64).tolist(),
        "n_features_in": int(est.n_features_in_),
    }
    if name == "LogisticRegression":
        doc["classes"] = np.asarray(est.classes_).tolist()
        k = len(est.classes_)
        mc = est.multi_class
        if mc == "auto":
            mc = "ovr" if (k == 2 or est.solver == "liblinear") else "multinomial"
        doc["multi_class"] = mc
    if feature_names is None and hasattr(est, "feature_names_in_"):
        feature_names = list(est.feature_names_in_)
    if feature_names is not None:
        doc["feature_names"] = list(feature_names)
    return doc


def _data(kind, rows, features, seed, nan_rate):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    w = rng.normal(size=features)
    z = X @ w + np.sin(X[:, 0] * 2) + 0.5 * (X[:, 1 % features] > 0.3)
    if kind.endswith("reg") or kind == "sk_linear":
        y = z * 10 + rng.normal(scale=0.5, size=rows)
    elif kind.endswith("multi") or kind == "sk_multinomial":
        y = np.digitize(z + rng.normal(scale=0.3, size=rows), np.quantile(z, [0.33, 0.66]))
    else:
        y = (z + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    if nan_rate > 0 and kind.startswith("xgb"):
        mask = rng.random(size=X.shape) < nan_rate
        X = X.copy()
        X[mask] = np.nan
    return X, y, rng


def _lit(v):
    out = []
    for x in v:
        if np.isnan(x):
            out.append("NaN")
        else:
            out.append(repr(float(x)))
    return "{" + ",".join(out) + "}"


def train(a):
    import sklearn.linear_model as lm
    import xgboost as xgb
    X, y, rng = _data(a.kind, a.rows, a.features, a.seed, a.nan_rate)
    names = ["x%d" % i for i in range(a.features)]
    os.makedirs(a.outdir, exist_ok=True)
    path = os.path.join(a.outdir, "model.json")
    if a.kind.startswith("xgb"):
        params = {"max_depth": a.depth, "eta": 0.3, "nthread": 1, "seed": a.seed}
        if a.kind == "xgb_reg":
            params["objective"] = "reg:squarederror"
        elif a.kind == "xgb_binary":
            params["objective"] = "binary:logistic"
        else:
            params["objective"] = "multi:softprob"
            params["num_class"] = 3
        d = xgb.DMatrix(X, label=y, feature_names=names)
        booster = xgb.train(params, d, a.trees)
        booster.save_model(path)
        # score the scoring rows from a fresh load of the file, as bv_ml does
        b2 = xgb.Booster(model_file=path)
        b2.set_param({"nthread": 1})
        pred = b2.predict(xgb.DMatrix(X, feature_names=names))
        if pred.ndim == 1:
            pred = pred.reshape(-1, 1)
    else:
        if a.kind == "sk_linear":
            est = lm.LinearRegression().fit(X, y)
            pred = est.predict(X).reshape(-1, 1)
        elif a.kind == "sk_logistic":
            est = lm.LogisticRegression(max_iter=1000).fit(X, y)
            pred = est.predict_proba(X)[:, 1].reshape(-1, 1)
        else:
            est = lm.LogisticRegression(max_iter=1000).fit(X, y)
            pred = est.predict_proba(X)
        with open(path, "w") as f:
            json.dump(export_sklearn(est, names), f)
    # Some rows get NULLs instead of NaN (both are missing values to bv_ml).
    with open(os.path.join(a.outdir, "rows.csv"), "w", newline="") as f:
        w = csv.writer(f)
        for i in range(X.shape[0]):
            feats = _lit(X[i])
            if a.kind.startswith("xgb") and i % 2 == 1:
                feats = feats.replace("NaN", "NULL")
            w.writerow([i + 1, feats, _lit(pred[i])])
    os.chmod(a.outdir, 0o755)


def time_predict(a):
    """Rows per second of XGBoost's own predict, one thread, on --rows rows of
    --features uniform(-1, 1) values already in memory (as bench/ml.sh
    scores in SQL); the best of three runs."""
    import xgboost as xgb
    rng = np.random.default_rng(a.seed)
    X = rng.uniform(-1, 1, size=(a.rows, a.features)).astype(np.float32)
    b = xgb.Booster(model_file=os.path.join(a.outdir, "model.json"))
    b.set_param({"nthread": 1})
    # XGBoost caches the predictions of a DMatrix it has seen: every timed
    # call gets a fresh one (building it is not timed).
    b.predict(xgb.DMatrix(X[:1000], nthread=1, feature_names=b.feature_names))  # warm up
    best = None
    for _ in range(3):
        d = xgb.DMatrix(X, nthread=1, feature_names=b.feature_names)
        t0 = time.perf_counter()
        b.predict(d)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print("%.1f" % (X.shape[0] / best))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("kind", choices=["xgb_reg", "xgb_binary", "xgb_multi",
                                    "sk_linear", "sk_logistic", "sk_multinomial"])
    t.add_argument("outdir")
    t.add_argument("--rows", type=int, default=2000)
    t.add_argument("--features", type=int, default=8)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--nan-rate", type=float, default=0.1)
    t.add_argument("--trees", type=int, default=30)
    t.add_argument("--depth", type=int, default=4)
    tp = sub.add_parser("time-predict")
    tp.add_argument("outdir")
    tp.add_argument("--rows", type=int, default=1000000)
    tp.add_argument("--features", type=int, default=20)
    tp.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.cmd == "train":
        train(a)
    else:
        time_predict(a)


if __name__ == "__main__":
    sys.exit(main())
