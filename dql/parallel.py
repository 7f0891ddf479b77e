"""How one training program spreads over seeds and devices, and the compiled multi-step dispatch that runs it.

Every run is a program of S >= 1 seeds: the agent pytree and the minibatch PRNG key carry a leading seed axis, and
one `vmap` over it runs the S updates of a step together. Over devices the program is laid out in one of two ways:

- `parallel="data"` (the default): every device holds all S seeds and a slice of each seed's minibatch; the agents
  average their gradients over the "data" mesh axis. One device is the special case of a one-device mesh.
- `parallel="seeds"`: the seeds are split over the devices (S divisible by their number); each device trains its
  seeds on their whole minibatches, so no gradient crosses devices.

Either way a seed's result depends only on its seed and on the number of devices sharing its batch (1 when split by
seeds): the data stream of seed s is drawn from its own key, per device folded with the device's index in the batch.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dql.data import sample_batch

DATA_AXIS = "data"
SEEDS_AXIS = "seeds"
PARALLEL_MODES = ("data", "seeds")


@dataclasses.dataclass(frozen=True)
class Layout:
    mesh: Mesh
    parallel: str
    num_seeds: int
    batch_size: int

    @property
    def data_width(self) -> int:
        """Devices that share one seed's minibatch (part of a run's identity: each draws its own slice)."""
        return self.mesh.size if self.parallel == "data" else 1

    @property
    def local_batch(self) -> int:
        return self.batch_size // self.data_width

    @property
    def agent_axis(self) -> str | None:
        """The axis agents average gradients over, or None when nothing is averaged."""
        return DATA_AXIS if self.parallel == "data" else None

    @property
    def seed_spec(self) -> PartitionSpec:
        """Partition of arrays whose leading axis is the seed axis."""
        return PartitionSpec(SEEDS_AXIS) if self.parallel == "seeds" else PartitionSpec()

    @property
    def seed_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, self.seed_spec)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


def make_layout(num_devices: int = 0, num_seeds: int = 1, parallel: str = "data", batch_size: int = 256) -> Layout:
    """The mesh over the first `num_devices` devices (0: all, over every process in a multi-host run)."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ValueError(f"--config.num_devices={num_devices}, but {len(devices)} device(s) are available")
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"--config.parallel={parallel!r}; expected one of {', '.join(PARALLEL_MODES)}")
    if num_seeds < 1:
        raise ValueError(f"--num_seeds must be >= 1, got {num_seeds}")
    devices = devices[: num_devices or len(devices)]
    if parallel == "seeds" and num_seeds % len(devices):
        raise ValueError(f"--config.parallel=seeds splits --num_seeds={num_seeds} over {len(devices)} device(s): "
                         "make it a multiple, or pass --config.num_devices")
    if parallel == "data" and batch_size % len(devices):
        raise ValueError(f"--batch_size={batch_size} must be divisible by the {len(devices)} device(s)")
    axis = DATA_AXIS if parallel == "data" else SEEDS_AXIS
    return Layout(Mesh(np.array(devices), (axis,)), parallel, num_seeds, batch_size)


def build_train_chunk(layout: Layout, length: int):
    """jit(shard_map(scan of `length` steps of vmap over seeds)).

    (agents [S, ...], data, rngs [S, 2]) -> (agents, rngs, metrics of shape [length, S]); the agents are donated.
    """

    def one_seed(agent, rng, data):
        rng, key = jax.random.split(rng)
        device = jax.lax.axis_index(DATA_AXIS) if layout.parallel == "data" else 0
        batch = sample_batch(data, jax.random.fold_in(key, device), layout.local_batch)
        agent, metrics = agent.update(batch)
        return agent, rng, metrics

    def chunk(agents, data, rngs):
        def body(carry, _):
            agents, rngs = carry
            agents, rngs, metrics = jax.vmap(one_seed, in_axes=(0, 0, None))(agents, rngs, data)
            return (agents, rngs), metrics

        (agents, rngs), metrics = jax.lax.scan(body, (agents, rngs), None, length=length)
        return agents, rngs, metrics

    seeds, replicated = layout.seed_spec, PartitionSpec()
    metrics_spec = PartitionSpec(None, SEEDS_AXIS) if layout.parallel == "seeds" else replicated
    sharded = jax.shard_map(chunk, mesh=layout.mesh, in_specs=(seeds, replicated, seeds),
                            out_specs=(seeds, seeds, metrics_spec), check_vma=False)
    return jax.jit(sharded, donate_argnums=(0,))


def stack_seeds(trees: list):
    """Per-seed pytrees -> one pytree with a leading seed axis."""
    return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def seed_slice(tree, index: int):
    """Seed `index` of a pytree with a leading seed axis, as host arrays."""
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf[index]), tree)


def to_host(tree):
    """Host copies of (possibly multi-process, replicated or seed-sharded) arrays.

    In a multi-host run some shards live on other processes; each process gathers what it needs to log and save.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def put(tree, sharding: NamedSharding):
    """Place host arrays (the same on every process) onto `sharding`, which may span several processes."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(leaf):
        leaf = np.asarray(leaf)
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree_util.tree_map(place, tree)
