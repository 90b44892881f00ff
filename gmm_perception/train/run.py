"""`gmm-perception train <task> --config <yaml>`: build the task from YAML and train it."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import yaml


def _registration_task(config: dict[str, Any], batch_size: int):
    from gmm_perception.train.registration import RegistrationData, RegistrationTask

    return RegistrationTask(config["model"], RegistrationData(**config["data"]), batch_size)


def _classification_task(config: dict[str, Any], batch_size: int):
    from gmm_perception.train.classification import ClassificationData, ClassificationTask

    if "model_name" not in config:
        raise ValueError("a classification config names its model: model_name: gmcn | pointnet_cls | dgcnn_cls")
    return ClassificationTask(config["model_name"], config["model"],
                              ClassificationData(**config["data"]), batch_size)


def _shape_model_task(config: dict[str, Any], batch_size: int):
    from gmm_perception.models.pointgmm_loss import PointGmmLossWeights
    from gmm_perception.train.shape_model import ShapeModelData, ShapeModelTask

    return ShapeModelTask(config["model"], ShapeModelData(**config["data"]), batch_size,
                          PointGmmLossWeights(**config.get("loss", {})))


def _upsampling_task(config: dict[str, Any], batch_size: int):
    from gmm_perception.train.upsampling import UpsamplingData, UpsamplingTask

    return UpsamplingTask(config["model"], UpsamplingData(**config["data"]), batch_size)


TASKS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "registration": _registration_task,
    "classification": _classification_task,
    "shape_model": _shape_model_task,
    "upsampling": _upsampling_task,
}


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`section.key=value` strings (values parsed as YAML) applied to a nested config."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override '{item}' is not of the form section.key=value")
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    config = yaml.safe_load(Path(path).read_text()) or {}
    for section in ("model", "data", "train"):
        if section not in config:
            raise ValueError(f"training config '{path}' lacks its '{section}' section")
    return apply_overrides(config, list(overrides))


# Tasks with a loop of their own (an autodecoder fits the set it stores: train/compression.py).
OWN_LOOP = ("compression",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=sorted([*TASKS, *OWN_LOOP]))
    parser.add_argument("--config", required=True, help="YAML with model, data, train sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value")
    parser.add_argument("--restart", action="store_true",
                        help="ignore the output folder's last.pt instead of resuming from it")


def main(args: argparse.Namespace) -> int:
    from gmm_perception.train.loop import TrainSettings, train  # torch: only when training

    config = load_config(args.config, args.overrides)
    if args.task == "compression":
        from gmm_perception.train.compression import train_compression

        print(f"best checkpoint: {train_compression(config, resume=not args.restart)}")
        return 0
    settings = TrainSettings(**config["train"])
    task = TASKS[args.task](config, settings.batch_size)
    best = train(task, settings, resume=not args.restart)
    print(f"best checkpoint: {best}")
    return 0
