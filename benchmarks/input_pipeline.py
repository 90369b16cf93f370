"""Input pipeline against the train step it feeds (issue 7, item 5).

For the default experiment (CNN on `digits`) at batch 64 and 128:
  pipeline      `train_iterator` alone (grain, 2 read threads): batches/s;
  step          the default config's jitted train step on one fixed device
                batch: steps/s;
  fed step      both together, batch by batch, as the loop runs them
                (next -> device_put -> step, dispatched asynchronously):
                steps/s.
The pipeline is not the bottleneck when it is faster than the step and the
fed step keeps the step's rate. The same again with the split decoded once
into memory (`InMemorySource`, a proposed library change: TFDS decodes each
record in Python, and array_record starts a thread pool per read), and for
the `synthetic` source at the mlp and cnn workloads' shapes, which the
overhead suite feeds through the loop.
"""

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from benchmarks import jax_harness, timing
from benchmarks.workloads import WORKLOADS


@dataclasses.dataclass(frozen=True)
class InMemorySource(Sequence):
  """A source's records decoded once into arrays; reads are indexing."""
  arrays: dict

  @classmethod
  def of(cls, source) -> 'InMemorySource':
    from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    records = pipeline._read_records(source, range(len(source)))  # pylint: disable=protected-access
    return cls({k: np.stack([np.asarray(r[k]) for r in records])
                for k in records[0]})

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, index: int) -> dict:
    return {k: v[index] for k, v in self.arrays.items()}

  def __getitems__(self, indices) -> list[dict]:
    batch = {k: v[np.asarray(indices)] for k, v in self.arrays.items()}
    return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]


def _pipeline(dataset: dict, batch_size: int, in_memory: bool = False):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(
      {'train_split': 'train', 'eval_split': 'test'}, **dataset))
  sources = pipeline.load_sources(cfg)
  train = InMemorySource.of(sources.train) if in_memory else sources.train
  preprocess = pipeline.make_preprocess(cfg)
  it = pipeline.train_iterator(train, preprocess, seed=0,
                               global_batch_size=batch_size)
  return sources, it


def _default_cnn(sources, batch_size: int, first_batch: dict):
  from bigml_jax.tasks import build_task  # pylint: disable=g-import-not-at-top
  from bigml_jax.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  from experiments.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.batch_size = batch_size
  task = build_task(config, **sources.fields)
  tx, _ = make_optimizer(config.optimizer, config.total_steps)
  return jax_harness.build(task, tx, first_batch)


def measure_default(batch_size: int, *, windows: int, window_s: float,
                    in_memory: bool = False) -> dict:
  # The default experiment's data_dir: $TFDS_DATA_DIR or ~/tensorflow_datasets.
  sources, it = _pipeline({'name': 'digits'}, batch_size, in_memory)
  pipe = timing.measure(lambda n: [next(it) for _ in range(n)],
                        examples_per_step=1, windows=windows,
                        window_s=window_s)
  bench = _default_cnn(sources, batch_size, next(it))
  step = jax_harness.time_bench(bench, examples_per_step=1, windows=windows,
                                  window_s=window_s)
  bench = _default_cnn(sources, batch_size, next(it))  # time_bench donated.
  compiled = bench.step.lower(bench.state, bench.batch).compile()
  state, sharding = bench.state, bench.batch['image'].sharding

  def fed(n):
    nonlocal state
    for _ in range(n):
      state, metrics = compiled(state, jax.device_put(next(it), sharding))
    jax.block_until_ready((state, metrics))

  fed_stats = timing.measure(fed, examples_per_step=1, windows=windows,
                             window_s=window_s)
  return {'source': 'digits' + (', in memory' if in_memory else ''),
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


def run(*, windows: int, window_s: float) -> dict:
  rows = [measure_default(b, windows=windows, window_s=window_s, in_memory=m)
          for m in (False, True) for b in (64, 128)]
  rows += [measure_synthetic(n, windows=windows, window_s=window_s)
           for n in ('mlp', 'cnn')]
  return {'rows': rows, 'table': table(rows)}
