"""Stage evaluate: score the kept checkpoint (the best on val, or the last epoch's: `checkpoint`) on
the test split.

    python -m pipeline.evaluate --model results/experiments/digits_mlp/model.pt --prepared data/prepared/digits \
        --metrics results/experiments/digits_mlp/test.json --predictions results/experiments/digits_mlp/predictions.csv \
        --per_class results/experiments/digits_mlp/per_class.csv --confusion results/experiments/digits_mlp/confusion.csv

test.json: test top-1 and top-5 accuracy and loss, with the model
in the mode `test_mode` says (and, for train mode, the eval-mode figures too: `*_eval_mode`), and
the digest of the model's config (params.config_hash); per_class.csv: accuracy and image count per class; predictions.csv: one
row per test image (index, true and predicted label); confusion.csv: counts, rows true, columns
predicted.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline import stage


def scores(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Metrics from test logits (N, K) and true labels (N,), with scikit-learn where it has them."""
    from scipy.special import log_softmax
    from sklearn.metrics import accuracy_score, confusion_matrix, top_k_accuracy_score
    k = len(classes)
    pred = logits.argmax(1)
    cm = confusion_matrix(labels, pred, labels=np.arange(k))
    # a class with no test images has no accuracy (NaN: an empty field in per_class.csv), not 0
    per_class = np.divide(cm.diagonal(), cm.sum(1), out=np.full(k, np.nan), where=cm.sum(1) > 0)
    # top-5 of 5 classes or fewer is every class (and scikit-learn reads 2 score columns as binary)
    top5 = 1.0 if k <= 5 else top_k_accuracy_score(labels, logits, k=5, labels=np.arange(k))
    return {
        "test_loss": float(-log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels].mean()),
        "test_acc": float(accuracy_score(labels, pred)),
        "test_top5": float(top5),
        "per_class_acc": {c: float(a) for c, a in zip(classes, per_class)},
        "confusion": cm,
        "pred": pred,
    }


def evaluate(checkpoint: Path, prepared: Path, metrics: Path, per_class: Path, predictions: Path,
             confusion: Path) -> dict:
    import pandas as pd
    from pipeline import data, inference  # torch is imported only once there is work to do
    import torch
    model, config, device = inference.load_model(checkpoint)
    test = data.load_split(prepared, "test", device, channels_last=inference.channels_last(model, device))
    labels = test.labels.cpu().numpy()
    classes = data.load_meta(prepared)["classes"]

    def test_scores(train_mode: bool) -> dict:
        torch.manual_seed(config.seed)      # dropout, where train mode turns it on
        logits = inference.predict(model, test, config.eval_batch_size, inference.autocast(config, device),
                                   inference.channels_last(model, device), train_mode)
        return scores(logits.numpy(), labels, classes)
    # eval mode first: a train-mode pass moves BatchNorm's running statistics
    in_eval = test_scores(train_mode=False)
    result = in_eval if config.test_mode == "eval" else test_scores(train_mode=True)
    cm, pred, acc = result.pop("confusion"), result.pop("pred"), result.pop("per_class_acc")
    if result is not in_eval:     # scored in train mode: the eval-mode figures beside them
        result.update({f"{k}_eval_mode": in_eval[k] for k in ("test_loss", "test_acc", "test_top5")})
    result["config_sha256"] = config.sha256   # the config of the model scored here
    with stage.atomic_path(per_class) as tmp:
        pd.DataFrame({"class": classes, "accuracy": list(acc.values()), "images": cm.sum(1)}).to_csv(tmp, index=False)
    with stage.atomic_path(predictions) as tmp:
        pd.DataFrame({"index": np.arange(len(labels)), "true": labels, "pred": pred,
                      "true_name": np.asarray(classes)[labels], "pred_name": np.asarray(classes)[pred]}
                     ).to_csv(tmp, index=False)
    with stage.atomic_path(confusion) as tmp:
        pd.DataFrame(cm, index=classes, columns=classes).to_csv(tmp)
    with stage.atomic_path(metrics) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


EXP = stage.EXP
ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "evaluate", "experiments", gpus=1, deps={"model": f"{EXP}/model.pt", "prepared": stage.DS},
    outs={"metrics": stage.Out(f"{EXP}/test.json", report="experiments"),
          "per_class": stage.Out(f"{EXP}/per_class.csv", report="experiments"),
          "predictions": stage.Out(f"{EXP}/predictions.csv"),
          "confusion": stage.Out(f"{EXP}/confusion.csv", report="experiments")})

def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    return ROW.parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    evaluate(args.model, args.prepared, args.metrics, args.per_class, args.predictions, args.confusion)


if __name__ == "__main__":
    stage.cli(main, on_failure=stage.failure_report)
