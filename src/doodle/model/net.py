"""The classifier networks for 1x28x28 doodles, defined here (no torchvision).

Every network is a `backbone` that maps (N, 1, 28, 28) to (N, feature_dim) and a
linear `head` from features to class logits. Retraining replaces only the head.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from doodle.model.train_config import ARCHITECTURES, NetConfig


def _conv_bn(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


# The CNN's layers: a 3x3 conv with that multiple of `width` channels, or "pool" (2x2 max-pool).
# One conv at full size, then pairs at 14x14 and 7x7: most of the work happens at low resolution,
# which keeps batch-1 inference well under a millisecond on a small CPU.
CNN_LAYOUT = (1, "pool", 2, 2, "pool", 4, 4, "pool")


def _cnn_backbone(width: int, feature_dim: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 1
    for step in CNN_LAYOUT:
        if isinstance(step, str):  # "pool"
            layers.append(nn.MaxPool2d(2))  # 28 -> 14 -> 7 -> 3
        else:
            layers += _conv_bn(c_in, width * step)
            c_in = width * step
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(c_in * 9, feature_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(c_in, planes, stride),
            nn.Conv2d(planes, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(c_in, planes, kernel=1),
            *_conv_bn(planes, planes, stride),
            nn.Conv2d(planes, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


def _resnet_backbone(block: type[BasicBlock | Bottleneck], depths: list[int], width: int) -> tuple[nn.Sequential, int]:
    """ResNet for 28x28: a 3x3 stem without max-pool, then four stages (28, 14, 7, 4)."""
    layers: list[nn.Module] = _conv_bn(1, width)
    c_in = width
    for stage, depth in enumerate(depths):
        planes = width * 2**stage
        for i in range(depth):
            layers.append(block(c_in, planes, stride=2 if stage > 0 and i == 0 else 1))
            c_in = planes * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), c_in


class DoodleNet(nn.Module):
    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        if config.arch == "cnn":
            self.backbone = _cnn_backbone(config.width, config.feature_dim, config.dropout)
            feature_dim = config.feature_dim
        elif config.arch == "resnet18":
            self.backbone, feature_dim = _resnet_backbone(BasicBlock, [2, 2, 2, 2], config.width)
        elif config.arch == "resnet50":
            self.backbone, feature_dim = _resnet_backbone(Bottleneck, [3, 4, 6, 3], config.width)
        else:
            raise ValueError(f"unknown arch {config.arch!r}: choose one of {ARCHITECTURES}")
        self.config = config
        self.head = nn.Linear(feature_dim, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) float in [0, 1] -> (N, num_classes) logits."""
        return self.head(self.backbone(x))

    def grow_head(self, num_classes: int) -> None:
        """Widen the head to `num_classes`, keeping the existing rows."""
        old = self.head
        if num_classes < old.out_features:
            raise ValueError("a head can grow but not shrink")
        self.head = nn.Linear(old.in_features, num_classes)
        with torch.no_grad():
            self.head.weight[: old.out_features] = old.weight
            self.head.bias[: old.out_features] = old.bias
        self.config.num_classes = num_classes


def _serving_layers(layers: nn.Sequential) -> list[nn.Module]:
    """The layers with each BatchNorm folded into the convolution before it and no Dropout."""
    kept: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, nn.BatchNorm2d) and kept and isinstance(kept[-1], nn.Conv2d):
            kept[-1] = fuse_conv_bn_eval(kept[-1], layer)
        elif not isinstance(layer, nn.Dropout):
            kept.append(layer)
    return kept


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[None]:
    """Eval mode inside (no Dropout, BatchNorm uses its running statistics); `net`'s own mode again after."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def fuse_for_inference(net: DoodleNet) -> DoodleNet:
    """An eval-mode copy for serving: same outputs, less work.

    BatchNorms are folded into convolutions, Dropouts (no-ops in eval mode) are
    dropped, and the weights are stored channels-last, which picks faster
    convolution kernels on CPU.
    """
    fused = copy.deepcopy(net).eval()
    sequences = [name for name, module in fused.named_modules() if isinstance(module, nn.Sequential)]
    for name in sorted(sequences, key=lambda name: name.count("."), reverse=True):  # innermost first
        fused.set_submodule(name, nn.Sequential(*_serving_layers(cast(nn.Sequential, fused.get_submodule(name)))))
    # Module.to() accepts memory_format at run time; torch's type hints leave it out.
    return fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def save_checkpoint(
    path: str | Path,
    net: DoodleNet,
    categories: list[str],
    replay: dict[str, torch.Tensor] | None = None,
    **meta: Any,
) -> None:
    """Save weights with the config that rebuilds the network, its label list and replay drawings."""
    saved = {
        "net_config": net.config.to_dict(),
        "state_dict": net.state_dict(),
        "categories": list(categories),
        "meta": meta,
    }
    if replay is not None:
        saved["replay"] = replay
    torch.save(saved, path)


def load_checkpoint(path: str | Path) -> tuple[DoodleNet, list[str], dict[str, Any]]:
    """Rebuild the network in eval mode; returns (net, categories, meta).

    Memory-mapped: the replay drawings the file also holds are not read (see load_replay).
    """
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    net = DoodleNet(NetConfig(**saved["net_config"]))
    net.load_state_dict(saved["state_dict"])
    net.eval()
    return net, saved["categories"], saved.get("meta", {})


def checkpoint_categories(path: str | Path) -> list[str]:
    """The checkpoint's category list, without building the network: its tensors stay memory-mapped, unread."""
    categories: list[str] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["categories"]
    return categories


def load_replay(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The checkpoint's replay drawings (see doodle.model.train.replay_set), if it has them.

    Memory-mapped: the weights are not read again, and the drawings only as they are used.
    """
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("replay")
