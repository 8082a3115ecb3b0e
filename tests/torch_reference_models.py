"""torchvision-layout ResNet and DenseNet written in plain torch, for the checkpoint-import tests.

torchvision itself is not installed on the test machines, so the tests build models with the same
module structure and parameter names here (written from torchvision's documented architecture;
the parameter counts are checked against torchvision's published numbers). Each model returns its
stage outputs as well as the pooled features, the torch side of the Flax comparison.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_channels: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.downsample = None
    if stride != 1 or in_channels != width:
      self.downsample = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride, bias=False),
                                      nn.BatchNorm2d(width))

  def forward(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(y)) + shortcut)


class Bottleneck(nn.Module):
  """ResNet v1.5: the stride sits on the 3x3 conv (conv2)."""
  expansion = 4

  def __init__(self, in_channels: int, width: int, stride: int):
    super().__init__()
    out_channels = width * self.expansion
    self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out_channels)
    self.relu = nn.ReLU()
    self.downsample = None
    if stride != 1 or in_channels != out_channels:
      self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                      nn.BatchNorm2d(out_channels))

  def forward(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    return self.relu(self.bn3(self.conv3(y)) + shortcut)


class TorchResNet(nn.Module):
  def __init__(self, block, layers, num_classes: int = 1000):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    in_channels = 64
    for stage_index, num_blocks in enumerate(layers):
      width = 64 * 2**stage_index
      blocks = []
      for block_index in range(num_blocks):
        stride = 2 if stage_index > 0 and block_index == 0 else 1
        blocks.append(block(in_channels, width, stride))
        in_channels = width * block.expansion
      setattr(self, f"layer{stage_index + 1}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(in_channels, num_classes)

  def features(self, x):
    """{'pooled': (N, C), 'stages': four NCHW maps}."""
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    stages = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
      x = getattr(self, name)(x)
      stages.append(x)
    return {"pooled": torch.flatten(self.avgpool(x), 1), "stages": stages}

  def forward(self, x):
    return self.fc(self.features(x)["pooled"])


def resnet18() -> TorchResNet:
  return TorchResNet(BasicBlock, (2, 2, 2, 2))


def resnet50() -> TorchResNet:
  return TorchResNet(Bottleneck, (3, 4, 6, 3))


class DenseLayer(nn.Module):
  def __init__(self, in_channels: int, growth_rate: int, bn_size: int):
    super().__init__()
    self.norm1 = nn.BatchNorm2d(in_channels)
    self.relu1 = nn.ReLU()
    self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
    self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
    self.relu2 = nn.ReLU()
    self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)

  def forward(self, features):
    x = torch.cat(features, 1)
    x = self.conv1(self.relu1(self.norm1(x)))
    return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
  def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int):
    super().__init__()
    for index in range(num_layers):
      self.add_module(f"denselayer{index + 1}",
                      DenseLayer(in_channels + index * growth_rate, growth_rate, bn_size))

  def forward(self, x):
    features = [x]
    for layer in self.values():
      features.append(layer(features))
    return torch.cat(features, 1)


class Transition(nn.Sequential):
  def __init__(self, in_channels: int, out_channels: int):
    super().__init__()
    self.add_module("norm", nn.BatchNorm2d(in_channels))
    self.add_module("relu", nn.ReLU())
    self.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False))
    self.add_module("pool", nn.AvgPool2d(2, 2))


class TorchDenseNet(nn.Module):
  def __init__(self, block_config=(6, 12, 24, 16), growth_rate: int = 32, bn_size: int = 4,
               num_init_features: int = 64, num_classes: int = 1000):
    super().__init__()
    self.features = nn.Sequential(OrderedDict([
        ("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False)),
        ("norm0", nn.BatchNorm2d(num_init_features)),
        ("relu0", nn.ReLU()),
        ("pool0", nn.MaxPool2d(3, 2, 1)),
    ]))
    channels = num_init_features
    for index, num_layers in enumerate(block_config):
      self.features.add_module(f"denseblock{index + 1}",
                               DenseBlock(num_layers, channels, growth_rate, bn_size))
      channels += num_layers * growth_rate
      if index != len(block_config) - 1:
        self.features.add_module(f"transition{index + 1}", Transition(channels, channels // 2))
        channels //= 2
    self.features.add_module("norm5", nn.BatchNorm2d(channels))
    self.classifier = nn.Linear(channels, num_classes)

  def stage_features(self, x):
    """{'pooled', 'stages'}: the outputs of dense blocks 1-3 and relu(norm5(block 4))."""
    stages = []
    for name, module in self.features.named_children():
      x = module(x)
      if name.startswith("denseblock") and name != "denseblock4":
        stages.append(x)
    x = torch.relu(x)
    stages.append(x)
    return {"pooled": torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1),
            "stages": stages}

  def forward(self, x):
    return self.classifier(self.stage_features(x)["pooled"])


def densenet121() -> TorchDenseNet:
  return TorchDenseNet()


def randomise(model: nn.Module, seed: int, calibration_images: torch.Tensor) -> nn.Module:
  """Random weights everywhere, and BatchNorm running statistics far from the defaults (0, 1) and
  different per channel, so the mean/var mapping is really exercised, yet realistic enough to
  keep activations O(1) in eval mode: they are the statistics of `calibration_images` (every BN
  measured on its own input), then perturbed by a few percent per channel. Returns the model in
  eval mode."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                            * (2.0 / fan_in)**0.5)
      elif isinstance(module, nn.BatchNorm2d):
        module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
        module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        module.momentum = 1.0   # the next train-mode pass sets running stats = batch stats
    for module in model.modules():
      # Trained ResNets end their residual branches with small BN scales; with scales ~1 a
      # random ResNet-50 amplifies float32 rounding until torch itself is 1e-4 off its float64
      # result, which would leave no margin for the comparison with Flax.
      if isinstance(module, BasicBlock):
        module.bn2.weight.mul_(0.3)
      elif isinstance(module, Bottleneck):
        module.bn3.weight.mul_(0.3)
    model.train()
    model(calibration_images)
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        channels = module.running_mean.shape
        module.running_mean.add_(0.05 * torch.randn(channels, generator=generator)
                                 * module.running_var.sqrt())
        module.running_var.mul_(0.9 + 0.2 * torch.rand(channels, generator=generator))
  return model.eval()
