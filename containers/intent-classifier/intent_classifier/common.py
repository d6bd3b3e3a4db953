"""The intent classifier's code that does not depend on the distributed framework: configuration from the
environment, the data, the model, checkpoints, metrics, progress reports, and the training loop itself.

`train.py` runs it with Horovod and `train_ddp.py` with torch.distributed; each supplies a :class:`Collective`
(init, a summing allreduce, wrapping the model and optimizer, a barrier), so both forms train the same model on the
same data in the same order. For a fixed SEED and world size a run is deterministic: one thread per rank, a seeded
distributed sampler, Horovod's tensor fusion off (it groups tensors by timing, which changes the order of
floating-point sums between runs), and on GPUs PyTorch's deterministic algorithms only (docs/reproducibility.md).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspaces, before CUDA starts

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from intent_classifier import dataset


class Collective(Protocol):
    """What the loop needs of Horovod or torch.distributed."""

    def init(self) -> tuple[int, int, int]:
        """Join the job; returns (rank, size, local rank)."""

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """The tensor summed over every rank."""

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Rank 0's state everywhere, and gradients averaged over the ranks at each step."""

    def barrier(self, name: str) -> None: ...

    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class Config:
    data: Path
    output: Path
    metrics: Path
    seed: int
    epochs: int
    lr: float
    batch_size: int
    fc_size: int
    # A hold at a known point: after this epoch's checkpoint, rank 0 waits ``pause_s`` before going on (0: never).
    # A run resumed from that checkpoint starts past it, so only the first run holds. Tests and demos of
    # preemption signal the job while it holds, instead of racing a trainer that may finish first.
    pause_after_epoch: int = 0
    pause_s: float = 300.0

    @classmethod
    def from_env(cls) -> Config:
        def need(name: str) -> str:
            value = os.environ.get(name)
            if not value:
                raise SystemExit(f"intent-classifier: {name} is not set")
            return value

        try:
            cfg = cls(
                data=Path(need("TRAINING_DATA_PATH")),
                output=Path(need("MODEL_OUTPUT_DIR")),
                metrics=Path(need("METRICS_FILE")),
                seed=int(os.environ.get("SEED", "0")),
                epochs=int(os.environ.get("EPOCHS", "5")),
                lr=float(os.environ.get("LR", "0.5")),
                batch_size=int(os.environ.get("BATCH_SIZE", "32")),
                fc_size=int(os.environ.get("FC_SIZE", "64")),
                pause_after_epoch=int(os.environ.get("PAUSE_AFTER_EPOCH", "0")),
                pause_s=float(os.environ.get("PAUSE_S", "300")),
            )
        except ValueError as exc:
            raise SystemExit(f"intent-classifier: bad hyper-parameter: {exc}") from None
        if cfg.pause_after_epoch < 0 or not 0 <= cfg.pause_s <= 86_400:
            raise SystemExit("intent-classifier: bad hyper-parameter: PAUSE_AFTER_EPOCH >= 0, 0 <= PAUSE_S <= 86400")
        return cfg


class IntentClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, fc_size: int, embed_dim: int = 32) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean")
        self.fc = nn.Sequential(nn.Linear(embed_dim, fc_size), nn.ReLU(), nn.Linear(fc_size, num_classes))

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(tokens, offsets))


class Encoded(Dataset[tuple[list[int], int]]):
    def __init__(self, items: list[tuple[list[int], int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.items[index]


def collate(batch: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = [len(tokens) for tokens, _ in batch]
    offsets = torch.tensor([0, *lengths[:-1]]).cumsum(0)
    tokens = torch.tensor([t for tokens, _ in batch for t in tokens], dtype=torch.long)
    return tokens, offsets, torch.tensor([label for _, label in batch], dtype=torch.long)


def build_vocab(texts: list[str]) -> dict[str, int]:
    words = sorted({w for text in texts for w in text.split()})
    return {"<unk>": 0, **{w: i + 1 for i, w in enumerate(words)}}


def encode(text: str, vocab: dict[str, int]) -> list[int]:
    return [vocab.get(w, 0) for w in text.split()] or [0]


def save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def trim_metrics(path: Path, last_epoch: int) -> None:
    """Keep one line per epoch across a requeue: drop lines past the checkpoint's epoch."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] <= last_epoch:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short when the run stopped
    path.write_text("".join(f"{line}\n" for line in kept))


class Progress:
    """Per-step progress for the gateway's hang and divergence checks (the trainer protocol's
    HPCGW_PROGRESS_FILE), rewritten at most once a second: a report per batch would cost more than the batch."""

    def __init__(self, path: str | None, every_s: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self.every_s = every_s
        self.last = 0.0

    def report(self, epoch: int, step: int, loss: float) -> None:
        now = time.monotonic()
        if self.path is None or now - self.last < self.every_s:
            return
        self.last = now
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"epoch": epoch, "step": step, "loss": loss}) + "\n")
        tmp.replace(self.path)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, ops: Collective) -> float:
    """Held-out accuracy over all ranks' shards."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for tokens, offsets, labels in loader:
            predicted = model(tokens.to(device), offsets.to(device)).argmax(1).cpu()
            correct += int((predicted == labels).sum())
            total += len(labels)
    counts = ops.sum(torch.tensor([correct, total], dtype=torch.float64), "eval_counts")
    model.train()
    return float(counts[0] / counts[1])


def train(ops: Collective) -> int:
    cfg = Config.from_env()
    torch.set_num_threads(1)
    rank, size, local_rank = ops.init()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # each rank on the GPU of its local rank
        device = torch.device("cuda", local_rank)
        torch.use_deterministic_algorithms(True)  # an op without a deterministic CUDA kernel fails, loudly
        torch.backends.cudnn.benchmark = False
    else:
        device = torch.device("cpu")
    print(f"HPCGW_RANK_REPORT {json.dumps({'rank': rank, 'size': size, 'device': str(device)})}", flush=True)

    torch.manual_seed(cfg.seed)
    data = dataset.load(cfg.data)
    train_idx, held_out_idx = dataset.split(data)
    vocab = build_vocab([data.texts[i] for i in train_idx])
    train_set = Encoded([(encode(data.texts[i], vocab), data.label_ids[i]) for i in train_idx])
    held_out = Encoded([(encode(data.texts[i], vocab), data.label_ids[i]) for i in held_out_idx])
    sampler = DistributedSampler(train_set, num_replicas=size, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate)
    eval_loader = DataLoader(
        held_out, batch_size=256, sampler=DistributedSampler(held_out, size, rank, shuffle=False), collate_fn=collate
    )

    model = IntentClassifier(len(vocab), len(data.labels), cfg.fc_size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    checkpoint_path = cfg.output / "checkpoint.pt"
    start_epoch = 0
    if checkpoint_path.exists():  # a requeued run: resume where the last one checkpointed
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        if rank == 0:
            trim_metrics(cfg.metrics, start_epoch)
            print(f"resuming after epoch {start_epoch} from {checkpoint_path}", flush=True)
    net = model  # the model itself, for evaluation and saving; `model` may be a framework's wrapper around it
    model, optimizer = ops.wrap(model, optimizer)
    loss_fn = nn.CrossEntropyLoss()
    progress = Progress(os.environ.get("HPCGW_PROGRESS_FILE"))

    step = 0
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        started, loss_sum, seen = time.perf_counter(), 0.0, 0
        for tokens, offsets, labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(tokens.to(device), offsets.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(labels)
            seen += len(labels)
            step += 1
            progress.report(epoch + 1, step, float(loss.detach()))
        elapsed = time.perf_counter() - started
        totals = ops.sum(torch.tensor([loss_sum, seen], dtype=torch.float64), "loss_sum")
        accuracy = evaluate(net, eval_loader, device, ops)
        if rank == 0:
            line = {
                "epoch": epoch + 1,
                "loss": round(float(totals[0] / totals[1]), 6),
                "accuracy": round(accuracy, 6),
                "samples_per_s": round(float(totals[1]) / elapsed, 1),
                "restart": int(os.environ.get("HPCGW_RESTART_COUNT", "0")),
            }
            cfg.metrics.parent.mkdir(parents=True, exist_ok=True)
            with open(cfg.metrics, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            # The metrics line first, then the checkpoint: a run stopped between the two resumes from the epoch
            # before and trims the line it is about to write again (the other order loses the epoch's line).
            cfg.output.mkdir(parents=True, exist_ok=True)
            save_atomic(
                {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1}, checkpoint_path
            )
            print(f"epoch {epoch + 1}/{cfg.epochs}: {json.dumps(line)}", flush=True)
            if epoch + 1 == cfg.pause_after_epoch:
                print(f"holding {cfg.pause_s:g} s after epoch {epoch + 1} (PAUSE_AFTER_EPOCH)", flush=True)
                time.sleep(cfg.pause_s)
        ops.barrier(f"epoch_barrier_{epoch}")  # nobody races ahead of the checkpoint

    if rank == 0:
        save_atomic(net.state_dict(), cfg.output / "model.pt")
        (cfg.output / "vocab.json").write_text(json.dumps(vocab))
        (cfg.output / "labels.json").write_text(json.dumps(data.labels))
    ops.shutdown()
    return 0
