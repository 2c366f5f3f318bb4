"""Accuracy reports: top-1/top-3 overall and per class, and a confusion matrix."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from doodle.model.data import Dataset, to_tensor
from doodle.model.net import DoodleNet, eval_mode

if TYPE_CHECKING:  # matplotlib loads only when a figure is drawn
    from matplotlib.figure import Figure


@dataclass
class EvalReport:
    top1: float
    top3: float
    per_class_top1: dict[str, float]
    confusion: np.ndarray  # int (classes, classes): rows true, columns predicted

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}top1": self.top1, f"{prefix}top3": self.top3}


@torch.no_grad()
def predict_proba(net: DoodleNet, images: np.ndarray, batch_size: int = 1024, mirror: bool = True) -> np.ndarray:
    """uint8 (n, 784) -> float32 (n, classes) probabilities, computed in eval mode.

    With `mirror`, each drawing's answer is averaged with its left-right mirror image's, which
    keeps its label (training mirrors half the drawings). Both go through the network in one
    batch; the average is right more often, most of all on newly learned categories.
    """
    with eval_mode(net):
        chunks = [
            _proba(net, to_tensor(images[start : start + batch_size]), mirror)
            for start in range(0, len(images), batch_size)
        ]
    return np.concatenate(chunks) if chunks else np.zeros((0, net.config.num_classes), np.float32)


def _proba(net: DoodleNet, batch: torch.Tensor, mirror: bool) -> np.ndarray:
    if not mirror:
        return torch.softmax(net(batch), dim=1).numpy()
    proba = torch.softmax(net(torch.cat([batch, batch.flip(dims=[3])])), dim=1)
    return ((proba[: len(batch)] + proba[len(batch) :]) / 2).numpy()


def top1_among(predicted: np.ndarray, labels: np.ndarray, classes: list[int]) -> float | None:
    """Top-1 of predicted labels over the rows whose true label is in `classes`; None when there are none."""
    keep = np.isin(labels, classes)
    return float((predicted[keep] == labels[keep]).mean()) if keep.any() else None


def report_from_proba(proba: np.ndarray, labels: np.ndarray, categories: list[str]) -> EvalReport:
    top3 = np.argsort(-proba, axis=1)[:, :3]
    hit1 = top3[:, 0] == labels
    hit3 = (top3 == labels[:, None]).any(axis=1)
    confusion = np.zeros((len(categories), len(categories)), dtype=np.int64)
    np.add.at(confusion, (labels, top3[:, 0]), 1)
    per_class = {name: float(hit1[labels == i].mean()) for i, name in enumerate(categories) if (labels == i).any()}
    return EvalReport(float(hit1.mean()), float(hit3.mean()), per_class, confusion)


def evaluate(net: DoodleNet, dataset: Dataset) -> EvalReport:
    return report_from_proba(predict_proba(net, dataset.images), dataset.labels, dataset.categories)


def plot_confusion(report: EvalReport, categories: list[str]) -> "Figure":
    """A matplotlib figure of the row-normalised confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = report.confusion / np.maximum(report.confusion.sum(axis=1, keepdims=True), 1)
    size = max(6, len(categories) * 0.45)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(categories)), categories, rotation=90)
    axes.set_yticks(range(len(categories)), categories)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"top-1 {report.top1:.3f}  top-3 {report.top3:.3f}")
    figure.tight_layout()
    return figure
