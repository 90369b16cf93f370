"""Int8 export: the size and the accuracy it costs, on trained runs.

  python -m benchmarks.quantization --workdirs=/tmp/bigml/default,...

Each run is exported twice (`experiments.export`, float32 and
--quantize=int8). Size: params.npz and the whole artifact on disk.
Accuracy: a classifier's test accuracy through each artifact, over the run's
eval split (its token ids as the pipeline made them, for text); a language
model's held-out perplexity per token with the params as each artifact
stores them (int8 dequantized exactly as the exported function does: the
generation artifact has no scoring function), and how many of the tokens
greedy generation draws from 16 prompts agree between the two artifacts.
"""

import argparse
import os
import tempfile

import jax
import numpy as np

from bigml_jax import load_run
from bigml_jax.data import pipeline
from bigml_jax.models import build_model
from bigml_jax.serving import artifact
from bigml_jax.serving import export as export_lib
from bigml_jax.serving import quantize
from bigml_jax.tasks import lm
from experiments.export import export_workdir

_PROMPTS = ['And God said', 'In the beginning', 'And the LORD', 'Then',
            'And it came to pass', 'Blessed', 'And he said unto',
            'The word of', 'And Moses', 'For', 'Behold', 'And Jesus',
            'Thus saith', 'And they', 'Now', 'I am']


def _size(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(directory, f))
             for f in os.listdir(directory))


def _classifier_accuracy(served, sources, preprocess, batch_size=256) -> float:
  correct = 0
  for batch in pipeline.eval_batches(sources.eval, preprocess,
                                     global_batch_size=batch_size):
    inputs = batch.get('image', batch.get(pipeline.TOKENS_KEY))
    logits = served.logits(inputs)['logits']
    correct += ((logits.argmax(-1) == batch['label']) * batch['mask']).sum()
  return float(correct / len(sources.eval))


def _perplexity(config, sources, export_dir: str) -> float:
  served = artifact.load(export_dir)
  params = export_lib.nested_params(quantize.dequantize(
      artifact.read_params(export_dir)))
  model = build_model(config.model, vocab_size=served.tokenizer.vocab_size)
  task = lm.LMTask(model)
  step = jax.jit(lambda p, b: task.loss_and_metrics(
      p, b, jax.random.key(0), False)[1])
  sums = {'loss_sum': 0.0, 'correct': 0.0, 'count': 0.0}
  for batch in pipeline.eval_batches(sources.eval,
                                     pipeline.make_preprocess(config.dataset),
                                     global_batch_size=64):
    for k, v in step(params, batch).items():
      sums[k] += float(v)
  return lm.summarize_tokens(sums)['perplexity']


def _greedy(export_dir: str) -> list[np.ndarray]:
  served = artifact.load(export_dir)
  ids = [served.encode_prompt(p) for p in _PROMPTS]
  return list(served.generate_ids(ids, [served.options(temperature=0.0)] *
                                  len(ids)))


def measure(workdir: str, out_dir: str) -> dict:
  run = load_run(workdir)
  config, sources = run.config, run.sources
  paths = {q: os.path.join(out_dir, q) for q in ('float32', 'int8')}
  for q, path in paths.items():
    export_workdir(workdir, path, quantize=None if q == 'float32' else q)
  sizes = {q: (os.path.getsize(os.path.join(p, artifact.PARAMS)), _size(p))
           for q, p in paths.items()}
  row = {'run': os.path.basename(workdir.rstrip('/')),
         'model': config.model.name, 'sizes': sizes}
  if config.get('task', 'classification') == 'lm':
    row['metric'] = 'perplexity'
    row['values'] = {q: _perplexity(config, sources, p)
                     for q, p in paths.items()}
    a, b = (_greedy(p) for p in paths.values())
    row['greedy_agreement'] = float(np.mean(np.concatenate(
        [x == y for x, y in zip(a, b)])))
  else:
    row['metric'] = 'test accuracy'
    row['values'] = {q: _classifier_accuracy(artifact.load(p), sources,
                                             run.preprocess)
                     for q, p in paths.items()}
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdirs', required=True)
  args = parser.parse_args()
  print('| run | params.npz float32 -> int8 | artifact | metric | float32 | '
        'int8 | greedy tokens equal |')
  print('|---|---:|---:|---|---:|---:|---:|')
  for workdir in args.workdirs.split(','):
    with tempfile.TemporaryDirectory() as out:
      r = measure(workdir, out)
    (pf, af), (pq, aq) = r['sizes']['float32'], r['sizes']['int8']
    agree = (f'{r["greedy_agreement"]:.1%}' if 'greedy_agreement' in r
             else '')
    print(f'| {r["run"]} ({r["model"]}) | {pf / 1e3:,.0f} -> {pq / 1e3:,.0f} '
          f'kB ({pq / pf:.0%}) | {af / 1e3:,.0f} -> {aq / 1e3:,.0f} kB | '
          f'{r["metric"]} | {r["values"]["float32"]:.4f} | '
          f'{r["values"]["int8"]:.4f} | {agree} |', flush=True)


if __name__ == '__main__':
  main()
