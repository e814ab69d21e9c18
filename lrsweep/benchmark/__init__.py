"""`lrsweep bench` (`make bench`): one grid trained several ways, timed in one process.

The grid (issue 5, grid.py): MNIST (see grid.find_mnist for where it is looked for; else
generated IDX files of the same shape), cnn5, SGD momentum 0.9, batch sizes {32, 128, 512} x 8
LRs logspace 1e-3..1, one epoch over a fixed 8192-example subset, test accuracy on the 10k test
set after each run. QUICK: {32, 128} x 4 LRs, 2048 examples, 2000 test examples.

Variants:
  plain       a PyTorch loop as users write it (plain.py), one run after another, in this process
  sequential  lrsweep's sequential engine, in this process (variants.py)
  vectorized  lrsweep's vectorized engine, in this process (one stacked model per batch size)
  auto        `lrsweep run` end to end in a subprocess with every default (engine: auto and the
              default executor), including start-up and writing the run folders
  options     not a grid run: per member-step times of each engine option (options.py)

Reported per variant (report.py): wall time, runs/hour, the speed-up of each over `plain`,
FLOP/s (the FLOPs actually trained and evaluated, from models.count_flops: 3x forward per
training example) against an fp32 matmul peak measured in this process (measure.py), and
accuracy agreement per cell. Same seeds everywhere: lrsweep's engines share init and data order
(they should agree closely); the plain loop shares the init but not the data order
(DataLoader's shuffling) nor the normalization constants, so it agrees within run-to-run noise.
"""
from lrsweep.benchmark.grid import (  # noqa: F401
    DATA_ENV, DEFAULT_FULL, DEFAULT_QUICK, EXTRA_VARIANTS, FULL, QUICK, VARIANTS, BenchGrid, choose_variants,
    find_mnist, write_fake_mnist,
)
from lrsweep.benchmark.report import (  # noqa: F401
    Table, eval_line, options_rows, peak_line, ratios_line, run_bench, summary, table_rows,
)
