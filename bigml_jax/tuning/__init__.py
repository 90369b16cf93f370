"""Hyper-parameter sweeps on Optuna; `experiments/sweep.py` is the CLI.

From a notebook, the same sweep:

  from bigml_jax import tuning
  sweep = tuning.make_sweep(FILE, config, overrides, SWEEP_DIR,
                            sweep_spec=module.get_sweep())
  result = tuning.run_sweep(sweep, trials=20)
  print(tuning.format_table(result.rows, result.columns))
  tuning.load_study(SWEEP_DIR).trials_dataframe()

`space` parses and checks search spaces, `driver` runs the study (each
trial an `experiments.run` process), `report` writes the table, the best
trial's flagfile, the plots and TensorBoard hparams.
"""

from bigml_jax.tuning.driver import load_study
from bigml_jax.tuning.driver import make_sweep
from bigml_jax.tuning.driver import Result
from bigml_jax.tuning.driver import run_sweep
from bigml_jax.tuning.driver import SetupError
from bigml_jax.tuning.driver import Sweep
from bigml_jax.tuning.report import format_table
from bigml_jax.tuning.space import check_space
from bigml_jax.tuning.space import Param
from bigml_jax.tuning.space import parse_param
from bigml_jax.tuning.space import parse_space
