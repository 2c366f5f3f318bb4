import pytest
import torch

from doodle.model.net import DoodleNet, NetConfig, fuse_for_inference, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "resnet50"])
def test_doodle_net_maps_images_to_logits(arch):
    net = DoodleNet(NetConfig(arch=arch, num_classes=7, width=8))
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 7)


def test_doodle_net_rejects_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        DoodleNet(NetConfig(arch="vgg"))


def test_grow_head_keeps_old_rows():
    net = DoodleNet(NetConfig(num_classes=3, width=8)).eval()
    x = torch.rand(2, 1, 28, 28)
    before = net(x)
    net.grow_head(5)
    after = net(x)
    assert after.shape == (2, 5)
    assert torch.allclose(after[:, :3], before)


def test_checkpoint_round_trip_rebuilds_same_network(tmp_path):
    net = DoodleNet(NetConfig(arch="resnet18", num_classes=4, width=8)).eval()
    save_checkpoint(tmp_path / "net.pt", net, ["a", "b", "c", "d"], note="x")
    loaded, categories, meta = load_checkpoint(tmp_path / "net.pt")
    x = torch.rand(2, 1, 28, 28)
    assert categories == ["a", "b", "c", "d"] and meta == {"note": "x"}
    assert torch.allclose(loaded(x), net(x))


@pytest.mark.parametrize("arch", ["cnn", "resnet18"])
def test_fused_network_gives_the_same_answers_without_batchnorm_or_dropout(arch):
    net = DoodleNet(NetConfig(arch=arch, num_classes=5, width=8))
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    net.eval()
    fused = fuse_for_inference(net)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(fused(x), net(x), atol=1e-4)
    assert fused(x[:1]).shape == (1, 5)
    assert not any(isinstance(module, (torch.nn.BatchNorm2d, torch.nn.Dropout)) for module in fused.modules())
    assert not net.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
