"""Training and evaluation: plain SGD with momentum as in the paper (Caffe's LeNet solver), optional L1/L2
regularization, cosine learning-rate decay, deterministic given the seed. Pruned weights stay pruned because
torch's pruning re-parametrization multiplies their gradients by the mask."""

import contextlib
import sys

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from eie.errors import EieError

__all__ = ["seed_everything", "torch_threads", "fit", "evaluate", "r2_percent", "predict"]


def seed_everything(seed):
    """Seed torch's global generator (initialization, dropout); shuffling gets its own generator in `fit`."""
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_threads(threads):
    """Run with `threads` torch threads, then restore the count: networks this small gain little from more, a
    busy machine loses a lot (19 s against 1.4 s to train on digits on two shared cores), and a fixed count
    gives the same numbers on every machine."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EieError(f"threads must be an integer of at least 1, not {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _weights(model):
    """Weight tensors of the Linear/Conv2d layers (the ones regularized); their trainable originals when pruned."""
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            for name in ("weight_orig", "weight"):
                param = getattr(layer, name, None)
                if isinstance(param, nn.Parameter):
                    yield param
                    break


def progress(total, desc, unit="batch"):
    """A progress bar on stderr when it is a terminal, a widget in a notebook (tqdm.auto); off otherwise, so
    that logs hold no redraws (they get one line per epoch instead)."""
    shown = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shown, leave=False)


def fit(model, x, y, *, epochs, lr, momentum=0.9, l2=0.0, l1=0.0, batch_size=128, seed=0,
        parameters=None, desc="train", show=True, log=None):
    """Train `model` on (x, y) with SGD; returns the mean training loss of each epoch.

    `l2` is SGD weight decay on every parameter; `l1` adds l1 * sign(w) to the gradients of the layer weights
    (Han et al. compare both). `parameters` restricts training (weight-sharing fine-tuning trains centroids).
    Progress is a bar on a terminal, else one line per epoch to `log` (default: stderr). Integer `y` are classes
    (cross-entropy); float `y` are a regressor's targets (mean squared error).
    The learning rate decays to zero on a cosine over the whole run, so short runs still settle.
    """
    params = [p for p in (model.parameters() if parameters is None else parameters) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=l2)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    shuffle = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    l1_targets = list(_weights(model)) if l1 else []
    regression = y.is_floating_point()       # a regressor's targets: squared error on every output
    loss_fn = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    y = y.reshape(len(y), -1) if regression else y
    history = []
    model.train()
    bar = progress(steps, desc) if show else None
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=shuffle)
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for w in l1_targets:
                if w.grad is not None:
                    w.grad.add_(torch.sign(w.detach()), alpha=l1)
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            if bar is not None:
                bar.update()
        history.append(total / len(x))
        if bar is not None and not bar.disable:
            bar.set_postfix(loss=f"{history[-1]:.4f}")
        elif show:   # not a terminal: one line per epoch
            line = f"{desc}: epoch {epoch + 1}/{epochs}, loss {history[-1]:.4f}"
            if log:
                log(line)
            else:
                print(line, file=sys.stderr, flush=True)
    if bar is not None:
        bar.close()
    model.eval()
    return history


@torch.no_grad()
def predict(model, x, batch_size=2000):
    """Logits for `x`, in evaluation mode (dropout off)."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model, x, y):
    """Top-1 accuracy in percent; for float targets (a regressor's), R² in percent (`r2_percent`)."""
    if y.is_floating_point():
        return r2_percent(predict(model, x).numpy(), y.numpy())
    return 100.0 * (predict(model, x).argmax(1) == y).float().mean().item()


def r2_percent(outputs, targets) -> float:
    """A regressor's score: R² (1 - squared error / the targets' variance) in percent; 100 is exact."""
    outputs = np.asarray(outputs, np.float64)
    targets = np.asarray(targets, np.float64)
    if targets.size != outputs.size:
        raise EieError(f"float targets are a regressor's, {outputs.shape[1]} per image for this model's outputs, "
                       f"not shape {targets.shape}: class labels are integers")
    targets = targets.reshape(outputs.shape)
    spread = float(((targets - targets.mean(axis=0)) ** 2).sum())
    return 100.0 * (1.0 - float(((outputs - targets) ** 2).sum()) / spread) if spread else 0.0
