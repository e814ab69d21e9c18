"""Configs: the schema of one run (schema.py), its loading from YAML (loading.py), the field
roles that define run ids and vectorized groups (roles.py), and the sweep grid (grid.py)."""
from lrsweep.config.schema import (  # noqa: F401
    CAFFE_POLICIES, DATASETS, MODELS, OPTIMIZERS, SCHEDULES, SHORT_NAMES,
    DatasetConfig, LRScalingConfig, ModelConfig, OptimizerConfig, RunConfig, ScheduleConfig,
    SyntheticConfig, TrainConfig, lr_scale,
)
from lrsweep.config.loading import (  # noqa: F401
    apply_overrides, check_unknown_keys, expand_short, load_yaml, parse_run_config, set_dotted,
    validation_error,
)
