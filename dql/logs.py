"""What a run leaves behind and shows: metrics.csv, progress lines, the learning-curve plot."""

from __future__ import annotations

import csv
import math
import os
import re
import sys
import time
import uuid
from pathlib import Path

import numpy as np

EVAL_COLUMNS = ("eval_return_mean", "eval_return_std", "eval_score_mean", "eval_score_std")


def file_safe(name: str) -> str:
    """A dataset name as a file-name part: gym:Hopper-v5/medium -> gym_Hopper-v5_medium."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class MetricsCSV:
    """One row per compiled dispatch: step, timing, mean training metrics, evaluation results where one ran.

    On resume the file is cut back to the restored step, so rows never repeat; apart from the timing columns a
    resumed run's file matches an uninterrupted one's.
    """

    def __init__(self, path: str | Path, train_keys: list[str], resume_step: int | None):
        self.path = Path(path)
        self.columns = ["step", "wall_time_s", "steps_per_s", *sorted(train_keys), *EVAL_COLUMNS]
        rows = read_csv(self.path) if (resume_step is not None and self.path.exists()) else []
        kept = [row for row in rows if int(row["step"]) <= (resume_step or 0)]
        self._write_rows(kept)

    def _write_rows(self, rows: list[dict]) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, self.path)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(
                {key: _format(value) for key, value in row.items()}
            )


class TensorBoard:
    """Scalars as TensorBoard event files under `<workdir>/tensorboard` (optional: needs the tensorboard package)."""

    def __init__(self, logdir: str | Path):
        Event, Summary, EventFileWriter = self.require()
        self._event, self._summary = Event, Summary
        self._writer = EventFileWriter(str(logdir))

    @staticmethod
    def require():
        """The tensorboard classes we write with, or an ImportError with the install hint."""
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise ImportError(
                "--config.tensorboard=True needs the tensorboard package: pip install 'dql[tensorboard]'"
            ) from None
        return Event, Summary, EventFileWriter

    def scalars(self, step: int, values: dict[str, float]) -> None:
        summary = self._summary(
            value=[self._summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items() if v is not None]
        )
        self._writer.add_event(self._event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandB:
    """Scalars to Weights & Biases (optional: pip install 'dql[wandb]'). `--config.wandb_mode=offline` writes the
    run under `<workdir>/wandb` without an account, for `wandb sync` later. A resumed run continues the same W&B
    run: its id is kept in `<workdir>/wandb_id.txt`."""

    def __init__(self, directory: str | Path, config):
        wandb = self.require()
        directory = Path(directory)
        id_file = directory / "wandb_id.txt"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12] + "\n")
        self._run = wandb.init(
            project=config.wandb_project, dir=str(directory), name=file_safe(str(directory)),
            config=config.to_dict(), mode=config.wandb_mode, id=id_file.read_text().strip(), resume="allow",
            reinit="create_new",  # one W&B run per seed of a multi-seed program, all in this process
        )

    @staticmethod
    def require():
        try:
            import wandb
        except ImportError:
            raise ImportError("--config.wandb=True needs the wandb package: pip install 'dql[wandb]'") from None
        return wandb

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._run.log({tag: float(v) for tag, v in values.items() if v is not None}, step=step)

    def close(self) -> None:
        self._run.finish()


def _format(value):
    if isinstance(value, float):
        return repr(value)
    return value


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """Periodic progress lines: step, steps/s (compile excluded), ETA, a few losses and the last evaluation."""

    def __init__(self, total_steps: int, label: str, stream=sys.stdout, seeds: int = 1):
        self.total_steps, self.seeds = total_steps, seeds
        self.label = label
        self.stream = stream
        self.rate = None
        self.last_eval = ""

    def update(self, step: int, steps_done: int, seconds: float, metrics: dict) -> float:
        # The ETA uses the latest window only: a smoothed rate would carry SAC's fast random-action start (no
        # updates) for many windows and promise minutes for a run of a quarter hour.
        rate = self.rate = steps_done / max(seconds, 1e-9)
        eta = (self.total_steps - step) / max(rate, 1e-9)
        shown = " ".join(f"{key} {metrics[key]:.4g}" for key in ("critic_loss", "actor_loss", "bc_loss")
                         if key in metrics)
        percent = 100.0 * step / self.total_steps
        # A program of several seeds also shows seed-steps/s, the throughput that compares with other layouts.
        seed_rate = f" ({self.seeds * rate:.1f} seed-steps/s)" if self.seeds > 1 else ""
        print(
            f"[{self.label}] step {step}/{self.total_steps} ({percent:.0f}%) | {rate:.1f} steps/s{seed_rate} | "
            f"ETA {format_duration(eta)} | {shown}{self.last_eval}",
            file=self.stream,
            flush=True,
        )
        return rate

    def evaluated(self, step: int, text: str) -> None:
        self.last_eval = f" | eval@{step}: {text}"
        print(f"[{self.label}] eval at step {step}: {text}", file=self.stream, flush=True)


def plot_learning_curve(csv_path: str | Path, png_path: str | Path, title: str, reference: float | None,
                        reference_label: str = "behaviour data average", x_label: str = "gradient steps") -> Path:
    """Evaluation score (or return) and training losses against steps, written to png_path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(csv_path)
    steps = np.array([int(r["step"]) for r in rows])
    evaluated = [r for r in rows if r.get("eval_return_mean")]
    use_score = bool(evaluated) and bool(evaluated[0].get("eval_score_mean"))
    key = "eval_score" if use_score else "eval_return"

    fig, (ax_eval, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    if evaluated:
        eval_steps = np.array([int(r["step"]) for r in evaluated])
        mean = np.array([float(r[f"{key}_mean"]) for r in evaluated])
        std = np.array([float(r[f"{key}_std"]) for r in evaluated])
        ax_eval.plot(eval_steps, mean, marker="o", label="policy")
        ax_eval.fill_between(eval_steps, mean - std, mean + std, alpha=0.2)
    if reference is not None:
        ax_eval.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax_eval.set_xlabel(x_label)
    ax_eval.set_ylabel("normalized score" if use_score else "return")
    ax_eval.set_title(title)
    ax_eval.legend(loc="lower right")
    for loss_key in ("critic_loss", "bc_loss", "actor_loss"):
        if rows and loss_key in rows[0] and rows[0][loss_key] != "":
            ax_loss.plot(steps, [float(r[loss_key]) for r in rows], label=loss_key)
    ax_loss.set_xlabel(x_label)
    ax_loss.set_yscale("symlog")
    ax_loss.set_title("training losses")
    ax_loss.legend(loc="upper right")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path

