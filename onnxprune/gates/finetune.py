"""Fine-tune every float32 weight of a pruned ONNX graph in the torch executor, distilled from the
original model, on one process or many (``torchrun``: DDP, gloo on the CPU, NCCL on CUDA).

Loss per batch: ``alpha·T²·KL(softmax(t/T) ‖ softmax(s/T))`` on class logits (MSE for other
outputs) plus ``(1-alpha)·CE`` when labels exist. SGD with momentum or AdamW, weight decay, linear
warm-up then cosine decay, computed per step (so a resumed run follows the same schedule). Data
order comes from a ``DistributedSampler`` seeded per epoch, augmentation from a generator seeded
per step: a run is deterministic on the CPU, resumes to the same result, and N processes with
batch B/N equal one process with batch B. Without a teacher (``teacher=None``) the loss is the
cross-entropy alone: training from scratch, the baseline of the fine-tuning benchmark.

Trained: every float32 initializer with at least one dimension; 0-d ones are constants of the
graph (Clip bounds, scales, epsilons), not weights, and stay fixed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch.utils.data import DistributedSampler

from onnxprune.errors import OnnxPruneError
from onnxprune.gates.config import FinetuneConfig
from onnxprune.gates.executor import TorchGraph


@dataclass
class FinetuneResult:
    model: onnx.ModelProto  # the pruned graph with the trained weights written back
    history: list[dict]  # per epoch: epoch, steps, loss, kd, ce, held-out accuracy
    steps: int
    world_size: int


def distributed_context(device: str) -> tuple[int, int]:
    """(rank, world size); starts the process group when torchrun asked for several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def lr_at(step: int, total: int, config: FinetuneConfig) -> float:
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to zero."""
    warm = max(1, round(config.warmup * total)) if config.warmup > 0 else 0
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment(x: torch.Tensor, step: int, seed: int) -> torch.Tensor:
    """Random horizontal flip and a random crop after reflect-padding by 1/8 of the size
    (NCHW images), drawn from a generator seeded by (seed, step)."""
    if x.ndim != 4:
        return x
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None].to(x.device), x.flip(3), x)
    pad = max(1, x.shape[-1] // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def distill_loss(student, teacher, labels, config: FinetuneConfig) -> tuple[torch.Tensor, dict]:
    """The loss of one batch and its terms (floats) for the progress line; ``teacher`` None:
    the cross-entropy alone."""
    s_outs = student if isinstance(student, tuple) else (student,)
    if teacher is None:
        ce = F.cross_entropy(s_outs[0], labels)
        return ce, {"ce": float(ce.detach())}
    t_outs = teacher if isinstance(teacher, tuple) else (teacher,)
    kd = torch.zeros((), device=s_outs[0].device)
    for s, t in zip(s_outs, t_outs):
        if s.ndim == 2 and s.shape[1] > 1:
            temp = config.temperature
            kd = kd + F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1),
                               reduction="batchmean") * temp * temp
        else:
            kd = kd + F.mse_loss(s, t)
    terms = {"kd": float(kd.detach())}
    if labels is None or not (s_outs[0].ndim == 2 and s_outs[0].shape[1] > 1):
        return kd, terms
    ce = F.cross_entropy(s_outs[0], labels)
    terms["ce"] = float(ce.detach())
    return config.alpha * kd + (1.0 - config.alpha) * ce, terms


def _optimizer(params, config: FinetuneConfig):
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    raise OnnxPruneError(f"--optimizer must be sgd or adamw, got '{config.optimizer}'")


def _loader(x, y, config: FinetuneConfig, rank: int, world: int, per_rank: int,
            workers: int = 0):
    """Samples decoded on access (in ``workers`` processes), in the DistributedSampler's order:
    the same batches as a TensorDataset of the decoded array, for any number of workers."""
    from onnxprune.gates.loader import SampleSet, sample_loader

    sampler = DistributedSampler(SampleSet(x, y), num_replicas=world, rank=rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    return sample_loader(x, y, per_rank, sampler, workers=workers, seed=config.seed), sampler


def _plan(n: int, config: FinetuneConfig, world: int) -> tuple[int, int, int]:
    """(per-rank batch, steps per epoch, total steps)."""
    if config.batch_size % world:
        raise OnnxPruneError(f"--batch-size {config.batch_size} is not divisible by the "
                             f"{world} processes")
    per_rank = config.batch_size // world
    per_epoch = (n // world) // per_rank
    if per_epoch < 1:
        raise OnnxPruneError(f"{n} training samples are fewer than one batch of "
                             f"{config.batch_size}; lower --batch-size")
    total = config.iterations or per_epoch * config.epochs
    return per_rank, per_epoch, total


def write_back(model: onnx.ModelProto, weights: dict[str, torch.Tensor]) -> onnx.ModelProto:
    """A copy of ``model`` whose named initializers hold ``weights`` (same names and dtypes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in weights:
            array = weights[init.name].detach().cpu().numpy().astype(
                numpy_helper.to_array(init).dtype, copy=False)
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    return out


def accuracy(graph, x: np.ndarray, y: np.ndarray, device: str, batch: int = 256) -> float:
    """Top-1 accuracy in percent of the executor's first output on (x, y)."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = graph(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(device))
            out = out[0] if isinstance(out, tuple) else out
            correct += int((out.argmax(1).cpu().numpy() == y[i:i + batch]).sum())
    return 100.0 * correct / max(len(x), 1)


def _state(weights: dict, optimizer, step: int) -> dict:
    """Weights, optimizer buffers and the step, as plain arrays (a numpy-only checkpoint)."""
    state = {"step": np.array(step)}
    for name, param in weights.items():
        state[f"w/{name}"] = param.detach().cpu().numpy()
    for index, entries in optimizer.state_dict()["state"].items():
        for key, value in entries.items():
            state[f"o/{index}/{key}"] = (value.detach().cpu().numpy()
                                         if torch.is_tensor(value) else np.array(value))
    return state


def _restore(weights: dict, optimizer, state: dict) -> int:
    with torch.no_grad():
        for name, param in weights.items():
            param.copy_(torch.from_numpy(np.asarray(state[f"w/{name}"])))
    saved = optimizer.state_dict()
    entries: dict[int, dict] = {}
    for key, value in state.items():
        if key.startswith("o/"):
            _, index, field = key.split("/", 2)
            entries.setdefault(int(index), {})[field] = torch.from_numpy(np.array(value))
    saved["state"] = entries
    optimizer.load_state_dict(saved)
    return int(state["step"])


def trained_weights(student: TorchGraph) -> dict[str, torch.nn.Parameter]:
    """The parameters to train: every float32 initializer but 0-d constants (frozen here)."""
    weights = {}
    for name, param in student.trainable_weights().items():
        if param.ndim == 0:
            param.requires_grad_(False)
        else:
            weights[name] = param
    return weights


def finetune(pruned: onnx.ModelProto, teacher: onnx.ModelProto | None, x: np.ndarray,
             y: np.ndarray | None, config: FinetuneConfig, device: str = "cpu",
             eval_set: tuple[np.ndarray, np.ndarray] | None = None, progress=None,
             checkpointer=None, resume: bool = False, workers: int = 0) -> FinetuneResult:
    """Train every float32 weight of ``pruned``; ``progress(step, total, terms)`` per step."""
    torch.manual_seed(config.seed)
    rank, world = distributed_context(device)
    student = TorchGraph(pruned, trainable=True).to(device)
    weights = trained_weights(student)
    if not weights:
        raise OnnxPruneError("the pruned model has no float32 weights to fine-tune")
    if teacher is None and y is None:
        raise OnnxPruneError("training without a teacher needs labels in the data")
    frozen = TorchGraph(teacher).to(device).eval() if teacher is not None else None
    model = student
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(student)
    optimizer = _optimizer(list(weights.values()), config)
    per_rank, per_epoch, total = _plan(len(x), config, world)
    loader, sampler = _loader(x, y, config, rank, world, per_rank, workers)
    state = checkpointer.load() if (resume and checkpointer is not None) else None
    step = _restore(weights, optimizer, state) if state else 0
    history, sums = [], {"loss": 0.0, "kd": 0.0, "ce": 0.0, "n": 0}
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        for index, batch in enumerate(loader):
            if index < skip:
                continue
            if step >= total or index >= per_epoch:
                break
            loss, terms = _train_step(model, frozen, batch, optimizer, step, total, config,
                                      device)
            step += 1
            sums["loss"] += float(loss)
            sums["kd"] += terms.get("kd", 0.0)
            sums["ce"] += terms.get("ce", 0.0)
            sums["n"] += 1
            if progress is not None:
                progress(step, total, {"loss": float(loss), **terms})
            if checkpointer is not None and rank == 0 and (
                    step % config.checkpoint_every == 0 or step == total):
                checkpointer.save(_state(weights, optimizer, step))
        history.append(_epoch_record(epoch, step, sums, student, eval_set, device, rank))
        sums = {"loss": 0.0, "kd": 0.0, "ce": 0.0, "n": 0}
    return FinetuneResult(write_back(pruned, weights), history, step, world)


def _train_step(model, teacher, batch, optimizer, step, total, config, device):
    inputs = batch[0].to(device)
    labels = batch[1].to(device) if len(batch) > 1 else None
    if config.augment:
        inputs = augment(inputs, step, config.seed)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, total, config)
    with torch.no_grad():
        target = teacher(inputs) if teacher is not None else None
    loss, terms = distill_loss(model(inputs), target, labels, config)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), terms


def _epoch_record(epoch, step, sums, student, eval_set, device, rank) -> dict:
    n = max(sums["n"], 1)
    record = {"epoch": epoch + 1, "steps": step, "loss": sums["loss"] / n, "kd": sums["kd"] / n,
              "ce": sums["ce"] / n}
    if eval_set is not None and rank == 0 and eval_set[1] is not None:
        record["accuracy"] = accuracy(student, eval_set[0], eval_set[1], device)
    return record
