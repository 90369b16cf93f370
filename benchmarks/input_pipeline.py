"""Input pipeline against the train step it feeds (issue 7, item 5; issue
17: your own files).

For the default experiment (CNN on `digits`) at batch 64 and 128, and for
the digits as your own files would hold them (converted once, as the
library reads them): a folder of PNGs with the default CNN (also with
random crops and flips, on the host), and an npz of 64-step sequences with
npz_digits_sequence.py's 1-D CNN:
  pipeline      `train_iterator` alone: batches/s (in memory, its own
                `ArrayBatches`; record by record, grain with 2 read
                threads);
  step          the default config's jitted train step on one fixed device
                batch: steps/s;
  fed step      both together, batch by batch, as the loop runs them
                (next -> jit_batch -> step, dispatched asynchronously):
                steps/s.
The pipeline is not the bottleneck when it is faster than the step and the
fed step keeps the step's rate. Each with the split as the library serves it
(small splits decoded once into an in-memory `ArraySource`) and record by
record as TFDS serves it (each record decoded in Python, and array_record
starting a thread pool per read), and the pipeline alone for
the `synthetic` source at the mlp and cnn workloads' shapes, which the
overhead suite feeds through the loop.
"""

import os
import tempfile

import jax

from bigml_jax.parallel import multihost
from bigml_jax.training import perf

from benchmarks import jax_harness, timing
from benchmarks.workloads import WORKLOADS


def _pipeline(dataset: dict, batch_size: int, records: bool = False):
  """`records`: the train split as TFDS serves it, decoded record by record,
  instead of the in-memory `ArraySource` the library makes of small splits."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(
      {'train_split': 'train', 'eval_split': 'test'}, **dataset))
  sources = pipeline.load_sources(cfg)
  train = (pipeline._tfds_splits(cfg)[0] if records  # pylint: disable=protected-access
           else sources.train)
  preprocess = pipeline.make_preprocess(cfg, sources.train)
  it = pipeline.train_iterator(train, preprocess, seed=0,
                               global_batch_size=batch_size)
  return sources, it


def _step(config, sources, first_batch: dict):
  from bigml_jax.tasks import build_task  # pylint: disable=g-import-not-at-top
  from bigml_jax.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  task = build_task(config, **sources.fields)
  tx, _ = make_optimizer(config.optimizer, config.total_steps)
  return jax_harness.build(task, tx, first_batch)


def measure_default(batch_size: int, *, windows: int, window_s: float,
                    records: bool = False, dataset: dict | None = None,
                    config=None, source: str | None = None) -> dict:
  """The rows above; `dataset` and `config` (whose model is stepped) default
  to the default experiment's, on its data_dir ($TFDS_DATA_DIR or
  ~/tensorflow_datasets)."""
  if config is None:
    from experiments.configs import default  # pylint: disable=g-import-not-at-top
    config = default.get_config()
  config.batch_size = batch_size
  sources, it = _pipeline(dataset or {'name': 'digits'}, batch_size, records)
  pipe = timing.measure(lambda n: [next(it) for _ in range(n)],
                        examples_per_step=1, windows=windows,
                        window_s=window_s)
  bench = _step(config, sources, next(it))
  step = jax_harness.time_bench(bench, examples_per_step=1, windows=windows,
                                  window_s=window_s)
  bench = _step(config, sources, next(it))  # time_bench donated.
  lowered = bench.step.lower(bench.state, bench.batch)
  compiled = lowered.compile(perf.compiler_options(lowered))
  state = bench.state
  sharding = jax.tree.leaves(bench.batch)[0].sharding

  def fed(n):
    nonlocal state
    for _ in range(n):
      state, metrics = compiled(state, multihost.jit_batch(next(it), sharding))
    jax.block_until_ready((state, metrics))

  fed_stats = timing.measure(fed, examples_per_step=1, windows=windows,
                             window_s=window_s)
  return {'source': source or 'digits' + (', record by record' if records
                                          else ' (in memory)'),
          'batch_size': batch_size,
          'pipeline_batches_per_sec': pipe['examples_per_sec'],
          'step_steps_per_sec': step['examples_per_sec'],
          'fed_steps_per_sec': fed_stats['examples_per_sec']}


def measure_synthetic(name: str, *, windows: int, window_s: float) -> dict:
  w = WORKLOADS[name]
  _, it = _pipeline({'name': 'synthetic', 'shape': w.inputs,
                     'num_classes': w.num_classes,
                     'num_train': 64 * w.batch_size, 'num_eval': 1},
                    w.batch_size)
  pipe = timing.measure(lambda n: [next(it) for _ in range(n)],
                        examples_per_step=1, windows=windows,
                        window_s=window_s)
  return {'source': f'synthetic {w.inputs}', 'batch_size': w.batch_size,
          'pipeline_batches_per_sec': pipe['examples_per_sec']}


def table(rows: list[dict]) -> str:
  lines = ['| source | batch | pipeline batches/s | step steps/s | '
           'pipeline-fed step steps/s | pipeline / step |',
           '|---|---:|---:|---:|---:|---:|']
  for r in rows:
    step = r.get('step_steps_per_sec')
    fed = r.get('fed_steps_per_sec')
    lines.append(
        f"| {r['source']} | {r['batch_size']} | "
        f"{r['pipeline_batches_per_sec']:,.0f} | "
        + (f'{step:,.0f} | {fed:,.0f} | '
           f"{r['pipeline_batches_per_sec'] / step:.1f}x |" if step else
           '- | - | - |'))
  return '\n'.join(lines)


def measure_files(directory: str, *, windows: int, window_s: float
                  ) -> list[dict]:
  """The digits as an image folder and an npz, written and converted under
  `directory` (as formats.examples writes them for the example configs)."""
  from bigml_jax.data.formats import examples  # pylint: disable=g-import-not-at-top
  from experiments.configs import image_folder_digits  # pylint: disable=g-import-not-at-top
  from experiments.configs import npz_digits_sequence  # pylint: disable=g-import-not-at-top
  files = examples.write_all(os.path.join(directory, 'files'))
  data_dir = os.path.join(directory, 'data')
  folder = {'name': 'image_folder', 'data_dir': data_dir,
            'train_path': os.path.join(files['digits_png'], 'train')}
  npz = {'name': 'npz', 'data_dir': data_dir, 'input_key': 'pixels',
         'train_path': os.path.join(files['digits_npz'], 'train.npz')}
  rows = []
  for name, dataset, config in [
      ('digits PNG folder (converted, in memory)', folder,
       image_folder_digits.get_config()),
      ('digits PNG folder + random_crop(pad=1), flip_left_right',
       dict(folder, augment='random_crop(pad=1) | flip_left_right'),
       image_folder_digits.get_config()),
      ('digits npz, [64, 1] sequences (converted), 1-D CNN', npz,
       npz_digits_sequence.get_config('cnn'))]:
    for batch_size in (64, 128):
      rows.append(measure_default(batch_size, windows=windows,
                                  window_s=window_s, dataset=dataset,
                                  config=config, source=name))
  return rows


def run(*, windows: int, window_s: float) -> dict:
  rows = [measure_default(b, windows=windows, window_s=window_s, records=r)
          for r in (True, False) for b in (64, 128)]
  with tempfile.TemporaryDirectory() as directory:
    rows += measure_files(directory, windows=windows, window_s=window_s)
  rows += [measure_synthetic(n, windows=windows, window_s=window_s)
           for n in ('mlp', 'cnn')]
  return {'rows': rows, 'table': table(rows)}
