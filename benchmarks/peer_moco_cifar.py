r"""lightly's MoCo v2 on an image folder (CIFAR-10 as JPEGs), as a reference run for ssl-jax.

It runs only in the peer environment (torch + torchvision + lightly; see
../shared/bench/setup_peer.sh), never in ssl-jax's: the PyTorch side of the MoCo v2 comparison in
docs/results.md, where ssl-jax's curves are set beside a known-good implementation's on the same
data.

What it trains (lightly's pieces, assembled as lightly's MoCo examples do):
- backbone: lightly's ResNetGenerator('resnet-18', width) (3x3 stem, no max-pool) without its
  classifier, then global average pooling: 512 * width features (width 0.25 -> 128, ssl-jax's
  resnet18 at width 16);
- head: MoCoProjectionHead(features, 2048, 128) (Linear -> ReLU -> Linear, no BN);
- key encoder: a deep copy of backbone + head without gradients, updated by
  `update_momentum(online, key, m)` at the start of every step (lightly's examples), in train
  mode (BN on batch statistics: one process, so no shuffle-BN is needed);
- loss: NTXentLoss(temperature, memory_bank_size=(queue, 128)): InfoNCE of each query against
  its key and the queue of earlier keys (randn rows normalised at start; each step's keys are
  enqueued after they are used);
- optimiser: torch SGD (momentum, weight decay on all parameters) with a per-step cosine
  schedule lr_t = 0.5 * lr * (1 + cos(pi * t / T)), t = 0 .. T-1 (ssl-jax's schedule);
- data: torchvision ImageFolder over ROOT/train with lightly's MoCoV2Transform at input_size
  (crop scale 0.2-1, flip, colour jitter 0.4/0.4/0.4/0.1 w.p. 0.8, grayscale 0.2, no blur by
  default) and CIFAR-10 mean/std, shuffled every epoch, incomplete last batch dropped.

Every --log_every steps one JSON line goes to OUT/metrics.jsonl with the means over the steps
since the last line (as ssl-jax's metrics.jsonl): loss, contrastive_acc (top-1 of the positive
among the 1 + queue logits), projection_std (std over the batch of the l2-normalised query
projections, mean over dimensions), rankme (effective rank of the raw query projections),
learning_rate (the rate the step used), and seconds since the start.

At the end (unless --no_eval) the backbone's pooled features (eval mode, BN running statistics)
of ROOT/train and ROOT/test are extracted and scored as ssl-jax's end-of-run evaluation does
(ssl_jax/evaluation/knn.py, linear_probe.py): weighted cosine kNN (votes exp(similarity / 0.07)
from the k nearest l2-normalised training features, k = 20 and 200), and a linear probe
(multinomial logistic regression on standardised features, L2 strength chosen from
logspace(-6, 0, 7) on a stratified 20 % hold-out, refit on all training rows, full-batch
L-BFGS). The same is done for the random-init backbone. Results go to OUT/summary.json; the
features to OUT/features.npz with --save_features.

Run (2 CPU threads, as the ssl-jax runs it is compared with):
  /tmp/ssl-peer-venv/bin/python benchmarks/peer_moco_cifar.py --root=/data/CIFAR-10-images \
      --out=runs/peer_moco_cifar --steps=600 --seed=0
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from lightly.loss import NTXentLoss
from lightly.models import ResNetGenerator
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import MoCoV2Transform

CIFAR10_NORMALIZE = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", required=True, help="folder with train/<class>/*, test/<class>/*")
  parser.add_argument("--out", required=True, help="output directory (metrics.jsonl, summary)")
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--lr", type=float, default=0.03, help="peak learning rate")
  parser.add_argument("--momentum", type=float, default=0.9)
  parser.add_argument("--weight_decay", type=float, default=5e-4)
  parser.add_argument("--temperature", type=float, default=0.1)
  parser.add_argument("--queue", type=int, default=4096)
  parser.add_argument("--ema", type=float, default=0.99, help="key encoder momentum m")
  parser.add_argument("--width", type=float, default=0.25, help="ResNet width multiplier")
  parser.add_argument("--hidden_dim", type=int, default=2048)
  parser.add_argument("--proj_dim", type=int, default=128)
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--blur_prob", type=float, default=0.0)
  parser.add_argument("--stem_relu", action="store_true",
                      help="ReLU after the stem's BN (lightly's examples drop it; ssl-jax has it)")
  parser.add_argument("--conv_init", default="torch", choices=["torch", "kaiming_fan_out"],
                      help="conv initialisation: torch's default or torchvision's/ssl-jax's")
  parser.add_argument("--seed", type=int, default=0, help="model init, data order, augmentation")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--no_eval", action="store_true")
  parser.add_argument("--no_random_init_eval", action="store_true")
  parser.add_argument("--save_features", action="store_true")
  return parser.parse_args()


def build_backbone(width: float, stem_relu: bool = False, conv_init: str = "torch") -> nn.Module:
  """lightly's ResNet-18 without its classifier, then global average pooling.

  As lightly's examples build it (`nn.Sequential(*list(resnet.children())[:-1], ...)`), the stem
  has no ReLU: lightly's ResNet applies it functionally in `forward`, which the Sequential drops.
  `stem_relu` puts it back (ssl-jax's and torchvision's stem: conv -> BN -> ReLU).
  `conv_init`: 'torch' keeps torch's default (kaiming_uniform_(a=sqrt(5)): std 1/sqrt(3 fan_in));
  'kaiming_fan_out' re-draws every conv as torchvision's ResNet and ssl-jax do
  (kaiming_normal_(mode='fan_out', nonlinearity='relu'): std sqrt(2 / fan_out)).
  """
  resnet = ResNetGenerator("resnet-18", width=width)   # 3x3 stem, no max-pool
  children = list(resnet.children())[:-1]   # conv1, bn1, layer1..layer4 (not 'linear')
  if stem_relu:
    children = children[:2] + [nn.ReLU()] + children[2:]
  backbone = nn.Sequential(*children, nn.AdaptiveAvgPool2d(1), nn.Flatten())
  if conv_init == "kaiming_fan_out":
    for module in backbone.modules():
      if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
  elif conv_init != "torch":
    raise SystemExit(f"unknown --conv_init {conv_init!r}: torch or kaiming_fan_out")
  return backbone


def cosine_lr(step: int, total: int, peak: float) -> float:
  return 0.5 * peak * (1.0 + math.cos(math.pi * step / total))


def normalized_std(z: torch.Tensor) -> float:
  z = nn.functional.normalize(z.float(), dim=1)
  return float(z.std(dim=0, unbiased=False).mean())


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
  singular_values = torch.linalg.svdvals(z.float())
  p = singular_values / (singular_values.sum() + eps) + eps
  return float(torch.exp(-(p * p.log()).sum()))


def infinite_batches(loader):
  epoch = 0
  while True:
    for batch in loader:
      yield epoch, batch
    epoch += 1


def train(args, backbone, head, log_path):
  key_backbone, key_head = copy.deepcopy(backbone), copy.deepcopy(head)
  deactivate_requires_grad(key_backbone)
  deactivate_requires_grad(key_head)
  criterion = NTXentLoss(temperature=args.temperature,
                         memory_bank_size=(args.queue, args.proj_dim))
  params = list(backbone.parameters()) + list(head.parameters())
  optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay)

  transform = MoCoV2Transform(input_size=args.image_size, gaussian_blur=args.blur_prob,
                              normalize=CIFAR10_NORMALIZE)
  dataset = torchvision.datasets.ImageFolder(os.path.join(args.root, "train"),
                                             transform=transform)
  generator = torch.Generator().manual_seed(args.seed)
  loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True,
                                       drop_last=True, num_workers=args.workers,
                                       persistent_workers=args.workers > 0,
                                       generator=generator)
  backbone.train(), head.train(), key_backbone.train(), key_head.train()
  window, start = [], time.perf_counter()
  batches = infinite_batches(loader)
  with open(log_path, "w") as log:
    for step in range(args.steps):
      epoch, (views, _) = next(batches)
      view_query, view_key = views
      lr = cosine_lr(step, args.steps, args.lr)
      for group in optimizer.param_groups:
        group["lr"] = lr
      update_momentum(backbone, key_backbone, m=args.ema)
      update_momentum(head, key_head, m=args.ema)
      query = head(backbone(view_query))
      with torch.no_grad():
        key = key_head(key_backbone(view_key))
        # The queue as the loss will see it (the loss enqueues this step's keys after use).
        queue = criterion.memory_bank.bank.clone()
      loss = criterion(query, key)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()

      with torch.no_grad():
        q = nn.functional.normalize(query.detach(), dim=1)
        k = nn.functional.normalize(key, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1)
        accuracy = float((logits.argmax(1) == 0).float().mean())
        window.append(dict(loss=float(loss), contrastive_acc=accuracy,
                           projection_std=normalized_std(query.detach()),
                           rankme=rankme(query.detach()), learning_rate=lr))
      done = step + 1
      if done % args.log_every == 0 or done == args.steps:
        record = {name: float(np.mean([w[name] for w in window])) for name in window[0]}
        record.update(step=done, epoch=epoch, seconds=round(time.perf_counter() - start, 1))
        window = []
        log.write(json.dumps(record) + "\n")
        log.flush()
        print(json.dumps(record), flush=True)
  return time.perf_counter() - start


@torch.no_grad()
def extract(backbone, root, split, batch_size=512, workers=2):
  dataset = torchvision.datasets.ImageFolder(
      os.path.join(root, split),
      transform=T.Compose([T.ToTensor(), T.Normalize(**CIFAR10_NORMALIZE)]))
  loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                       num_workers=workers)
  backbone.eval()
  features, labels = [], []
  for images, targets in loader:
    features.append(backbone(images))
    labels.append(targets)
  return torch.cat(features).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def knn_top1(train_x, train_y, test_x, test_y, k, temperature=0.07, num_classes=10):
  """ssl_jax/evaluation/knn.py: votes exp(cos / T) of the k nearest, argmax of the sums."""
  train_x = nn.functional.normalize(torch.as_tensor(train_x), dim=1)
  test_x = nn.functional.normalize(torch.as_tensor(test_x), dim=1)
  train_y = torch.as_tensor(train_y)
  correct = 0
  for start in range(0, test_x.shape[0], 1024):
    similarity = test_x[start:start + 1024] @ train_x.T
    top_similarity, top_index = similarity.topk(k, dim=1)
    weights = torch.exp(top_similarity / temperature)
    votes = torch.zeros(similarity.shape[0], num_classes, dtype=weights.dtype)
    votes.scatter_add_(1, train_y[top_index], weights)
    correct += int((votes.argmax(1) == torch.as_tensor(test_y[start:start + 1024])).sum())
  return correct / test_x.shape[0]


def fit_logistic(x, y, l2, num_classes, iterations=200, mask=None):
  """argmin mean CE(mask) + l2/2 ||W||^2 by full-batch L-BFGS (ssl-jax's probe objective)."""
  weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
  bias = torch.zeros(num_classes, requires_grad=True)
  mask = torch.ones(x.shape[0]) if mask is None else mask
  optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, tolerance_grad=1e-5,
                                line_search_fn="strong_wolfe")

  def closure():
    optimizer.zero_grad()
    per_example = nn.functional.cross_entropy(x @ weight + bias, y, reduction="none")
    loss = (per_example * mask).sum() / mask.sum() + 0.5 * l2 * (weight ** 2).sum()
    loss.backward()
    return loss

  optimizer.step(closure)
  return weight.detach(), bias.detach()


def linear_probe_top1(train_x, train_y, test_x, test_y, num_classes=10, seed=0):
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train = torch.as_tensor((train_x - mean) / std, dtype=torch.float32)
  test = torch.as_tensor((test_x - mean) / std, dtype=torch.float32)
  train_y_t, test_y_t = torch.as_tensor(train_y), torch.as_tensor(test_y)
  rng = np.random.default_rng(seed)
  holdout = np.zeros(len(train_y), bool)
  for cls in np.unique(train_y):   # stratified 20 % hold-out
    members = rng.permutation(np.flatnonzero(train_y == cls))
    holdout[members[:int(round(0.2 * len(members)))]] = True
  mask = torch.as_tensor(~holdout, dtype=torch.float32)
  best_l2, best_score = None, -1.0
  for l2 in np.logspace(-6, 0, 7):
    weight, bias = fit_logistic(train, train_y_t, float(l2), num_classes, mask=mask)
    score = float(((train[holdout] @ weight + bias).argmax(1) == train_y_t[holdout])
                  .float().mean())
    if score > best_score:
      best_l2, best_score = float(l2), score
  weight, bias = fit_logistic(train, train_y_t, best_l2, num_classes)
  top1 = float(((test @ weight + bias).argmax(1) == test_y_t).float().mean())
  return {"linear_top1": top1, "linear_l2": best_l2, "linear_holdout_top1": best_score}


def evaluate(backbone, args, name):
  train_x, train_y = extract(backbone, args.root, "train", workers=args.workers)
  test_x, test_y = extract(backbone, args.root, "test", workers=args.workers)
  if args.save_features:
    np.savez(os.path.join(args.out, f"features_{name}.npz"), train_x=train_x, train_y=train_y,
             test_x=test_x, test_y=test_y)
  results = {f"knn_top1_k{k}": knn_top1(train_x, train_y, test_x, test_y, k) for k in (20, 200)}
  results.update(linear_probe_top1(train_x, train_y, test_x, test_y))
  print(name, json.dumps(results), flush=True)
  return results


def main():
  args = parse_args()
  os.makedirs(args.out, exist_ok=True)
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  np.random.seed(args.seed)
  backbone = build_backbone(args.width, args.stem_relu, args.conv_init)
  head = MoCoProjectionHead(int(512 * args.width), args.hidden_dim, args.proj_dim)
  random_init_backbone = copy.deepcopy(backbone)
  wall = train(args, backbone, head, os.path.join(args.out, "metrics.jsonl"))
  summary = {"args": vars(args), "torch": torch.__version__, "train_seconds": round(wall, 1)}
  torch.save({"backbone": backbone.state_dict(), "head": head.state_dict()},
             os.path.join(args.out, "model.pt"))
  if not args.no_eval:
    summary["eval"] = {"trained": evaluate(backbone, args, "trained")}
    if not args.no_random_init_eval:
      summary["eval"]["random_init"] = evaluate(random_init_backbone, args, "random_init")
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)


if __name__ == "__main__":
  main()
