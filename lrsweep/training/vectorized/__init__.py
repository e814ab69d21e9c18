"""The vectorized engine: a group of runs trained as one stacked model.

Runs that share dataset, model, batch size, budget and optimizer/schedule type but differ in
scalar hyperparameters (LR, momentum, weight decay, betas, eps, schedule parameters, seed) are
trained together (training/units.py forms the groups):

- optim.py: parameters (and BatchNorm buffers) are stacked along a new leading "member"
  dimension and updated by StackedOptimizer, which follows torch.optim's math for each member
  with its own hyperparameters. Adafactor is not vectorized: it trains sequentially.
- stacks.py: the forward/backward, two formulations with the same numbers: `vmap` (default on
  CUDA) and `threads` (default on CPU, where vmap measured 2-4x slower per member-step).
- loop.py: the training loop, with the sequential engine's per-run pieces (sampler, schedule,
  tracker) per member. BatchNorm running statistics are per member; evaluation uses each
  member's own. A group larger than `max_members` is trained in chunks; on CUDA an
  out-of-memory error halves the chunk and trains it again from the start.
- train.precision = bf16 runs forward passes under torch.autocast(bfloat16); train.compile
  compiles the vmap formulation's stacked forward/backward with torch.compile (the update
  stays eager). Both are meant for CUDA and are unmeasured so far (no GPU was available).

Results are TrainedRuns with the same metrics/evals/summary as the sequential engine;
data_time, compute_time and time_s are the group's (every member lived through the whole
group step).
"""
from lrsweep.config import RunConfig
from lrsweep.training.vectorized.loop import train_group  # noqa: F401
from lrsweep.training.vectorized.optim import VECTORIZED_OPTIMIZERS, StackedOptimizer  # noqa: F401
from lrsweep.training.vectorized.stacks import default_formulation  # noqa: F401


def vectorizable(cfg: RunConfig) -> bool:
    return cfg.optimizer.name in VECTORIZED_OPTIMIZERS
