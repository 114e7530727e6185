"""Train the built-in example model: ResNet-20 on the synthetic set, saved as a state_dict.

    python scripts/make_example.py            # writes locp_trt/examples/resnet20_synthetic.pt

The example exists so `python -m locp_trt optimize example` runs on a fresh machine with no
dataset; its accuracy is on synthetic data and means nothing beyond "fine-tuning works".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from locp_trt.models import get_model
from locp_trt.prune.loading import EXAMPLE, example_model_path
from locp_trt.train.data import make_loaders
from locp_trt.train.finetune import TrainConfig, evaluate, fine_tune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=example_model_path())
    args = ap.parse_args()
    torch.manual_seed(0)
    model = get_model(EXAMPLE["arch"])
    train, test = make_loaders(EXAMPLE["data"], (3, 32, 32), 128, seed=0)
    fine_tune(model, train, TrainConfig(epochs=args.epochs, lr=0.05, seed=0), "cpu", desc="train example")
    acc = evaluate(model, test, "cpu")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)
    meta = {"arch": EXAMPLE["arch"], "data": EXAMPLE["data"], "epochs": args.epochs, "test_accuracy": acc}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
