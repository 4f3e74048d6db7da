"""Trains boosters on the `moderation` scenario with lossc's exported objective.

Run by tests/export.rs:
    python boost_moderation.py LIGHTGBM_OBJ.py XGBOOST_OBJ.py TRAIN.csv TEST.csv...

Trains LightGBM and XGBoost with their defaults (100 rounds, one thread,
deterministic) twice each: with the plain binary log-loss and with the
exported objective (boosting from its best constant score). The test rows
are fresh draws of the scenario (other seeds), so the 0.5% positives number
in the hundreds. Prints one `NAME VALUE` line per figure: for each library,
the plain model's precision and recall at probability 0.5, each model's best
recall at a precision at least that high, and the exported metric on the
training rows after the first and the last round.
"""

import importlib.util
import sys

import lightgbm
import numpy as np
import xgboost


def load(path):
    spec = importlib.util.spec_from_file_location(path, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path):
    table = np.genfromtxt(path, delimiter=",", names=True)
    features = sorted((n for n in table.dtype.names if n.startswith("x")), key=lambda n: int(n[1:]))
    return np.column_stack([table[n] for n in features]), table["y"]


def recall_at_precision(score, label, precision):
    """The best recall over thresholds whose precision is at least `precision`."""
    ranked = label[np.argsort(-score, kind="stable")]
    hits = np.cumsum(ranked)
    prec = hits / np.arange(1, len(ranked) + 1)
    ok = prec >= precision
    return float((hits[ok] / ranked.sum()).max()) if ok.any() else 0.0


def compare(plain, custom, label):
    flagged = plain > 0.0
    precision = float((flagged & (label == 1)).sum() / max(flagged.sum(), 1))
    return {
        "plain_precision": precision,
        "plain_recall": float((flagged & (label == 1)).sum() / label.sum()),
        "plain_recall_at_precision": recall_at_precision(plain, label, precision),
        "custom_recall_at_precision": recall_at_precision(custom, label, precision),
    }


def main():
    lgb_obj, xgb_obj = load(sys.argv[1]), load(sys.argv[2])
    x, y = read(sys.argv[3])
    tests = [read(p) for p in sys.argv[4:]]
    xt = np.vstack([t[0] for t in tests])
    yt = np.concatenate([t[1] for t in tests])
    out = {"test_rows": len(yt), "test_positives": int(yt.sum())}

    common = {"verbose": -1, "seed": 0, "deterministic": True, "num_threads": 1}
    plain = lightgbm.train(dict(common, objective="binary"), lightgbm.Dataset(x, y), 100)
    init = lgb_obj.init_score(y)
    train = lightgbm.Dataset(x, y, init_score=np.full(len(y), init))
    history = {}
    custom = lightgbm.train(
        dict(common, objective=lgb_obj.objective()),
        train,
        100,
        valid_sets=[train],
        valid_names=["train"],
        feval=lgb_obj.metric(),
        callbacks=[lightgbm.record_evaluation(history)],
    )
    out["lightgbm"] = compare(plain.predict(xt, raw_score=True), init + custom.predict(xt), yt)
    curve = history["train"]["moderation"]
    out["lightgbm"]["metric_first"] = curve[0]
    out["lightgbm"]["metric_last"] = curve[-1]

    common = {"seed": 0, "nthread": 1, "disable_default_eval_metric": 1}
    plain = xgboost.train(dict(common, objective="binary:logistic"), xgboost.DMatrix(x, y), 100)
    init = xgb_obj.init_score(y)
    train = xgboost.DMatrix(x, y, base_margin=np.full(len(y), init))
    history = {}
    custom = xgboost.train(
        common,
        train,
        100,
        obj=xgb_obj.objective(),
        custom_metric=xgb_obj.metric(),
        evals=[(train, "train")],
        evals_result=history,
        verbose_eval=False,
    )
    test = xgboost.DMatrix(xt, base_margin=np.full(len(yt), init))
    out["xgboost"] = compare(
        plain.predict(xgboost.DMatrix(xt), output_margin=True),
        custom.predict(test, output_margin=True),
        yt,
    )
    curve = history["train"]["moderation"]
    out["xgboost"]["metric_first"] = curve[0]
    out["xgboost"]["metric_last"] = curve[-1]
    for key, value in out.items():
        if isinstance(value, dict):
            for name, figure in value.items():
                print(f"{key}.{name} {figure:.6g}")
        else:
            print(f"{key} {value}")


main()
