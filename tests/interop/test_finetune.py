"""bert_finetune_hf.py end to end on a tiny random Hugging Face BERT:
`--config.init_from=hf:DIR` loads it into a fine-tuning run, and
`experiments.export_hf` gives transformers the fine-tuned classifier."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file

from bigml_jax import ConfigError, build_model, train_and_evaluate
from bigml_jax.data import text as text_lib
from bigml_jax.interop import hf
from experiments import export_hf
from experiments.configs import bert_finetune_hf
from tests.interop import tiny_hf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STEPS = 6


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A random BertForPreTraining with its WordPiece: the tensors
  bert-base-uncased's file has (pooler, MLM and next-sentence heads)."""
  return tiny_hf.save_bert(str(tmp_path_factory.mktemp('bert')),
                           'BertForPreTraining')


@pytest.fixture(scope='module')
def run(pretrained, data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('finetune'))
  config = bert_finetune_hf.get_config()
  config.init_from = 'hf:' + pretrained
  config.dataset.data_dir = data_dir
  config.dataset.max_length = 32
  config.total_steps = config.eval_every = config.checkpoint_every = STEPS
  config.log_every = 3
  config.optimizer.warmup_steps = 2
  # One device: the 2x2x2 mesh tests load and run these models sharded.
  return workdir, train_and_evaluate(config, workdir,
                                     devices=jax.devices()[:1])


def _trained_params(workdir):
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(STEPS), 'state'))['params']


def test_the_recipe_is_the_classic_one():
  config = bert_finetune_hf.get_config()
  assert (config.batch_size, config.eval_batch_size) == (16, 64)
  assert config.total_steps == 3 * 77  # ceil(1,219 / 16) steps an epoch.
  assert dict(config.optimizer) == {
      'name': 'adamw', 'learning_rate': 2e-5, 'schedule': 'linear',
      'warmup_steps': 23, 'weight_decay': 0.01, 'grad_clip_norm': 1.0}
  big = bert_finetune_hf.get_config('392702')  # MNLI's train split.
  assert (big.total_steps, big.optimizer.warmup_steps) == (3 * 24544, 500)


def test_fine_tunes_from_the_hf_weights_with_its_tokenizer(run, pretrained):
  workdir, result = run
  assert result['step'] == STEPS and 0 <= result['eval_accuracy'] <= 1
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['model']['d_model'] == 32 and saved['model']['norm'] == 'post'
  tok = text_lib.load_tokenizer(os.path.join(workdir, 'tokenizer.json'))
  assert tok.kind == 'hf' and tok.cls_id == hf.load_tokenizer(
      pretrained).cls_id
  params = _trained_params(workdir)
  stored = load_file(os.path.join(pretrained, 'model.safetensors'))
  # Loaded, then moved by a few AdamW steps of at most ~2e-5 each.
  for ours, theirs in (
      (params['embed']['embedding'],
       stored['bert.embeddings.word_embeddings.weight']),
      (params['pooler']['kernel'], stored['bert.pooler.dense.weight'].T),
      (params['encoder']['block_1']['mlp']['out']['kernel'],
       stored['bert.encoder.layer.1.output.dense.weight'].T)):
    change = np.abs(np.asarray(ours) - theirs).max()
    assert 0 < change < STEPS * 2e-5, change
  assert params['head']['kernel'].shape == (32, 3)  # New: fortunes' classes.


def test_export_hf_gives_transformers_the_fine_tuned_classifier(run,
                                                                tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  workdir, _ = run
  out = tmp_path / 'export'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.export_hf', f'--workdir={workdir}',
       f'--out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout == f'wrote {out}\n'
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors',
                                     'tokenizer.json', 'tokenizer_config.json']
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      out).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  texts = list(tiny_hf.fortune_texts()[::300])
  batch = tokenizer(texts, truncation=True, max_length=32,
                    padding='max_length', return_tensors='pt')
  with torch.no_grad():
    theirs = model(**batch).logits.numpy()
  with open(os.path.join(workdir, 'config.json')) as f:
    module = build_model(json.load(f)['model'], num_classes=3)
  ours = jax.jit(module.apply)({'params': _trained_params(workdir)},
                               batch['input_ids'].numpy())
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  # A second export never writes over the first.
  with pytest.raises(ConfigError, match='exists and is not empty; pass a '
                     r'new directory \(nothing was written\)'):
    export_hf.export(workdir, str(out))
  with pytest.raises(ConfigError, match='holds no config.json'):
    export_hf.export(str(tmp_path), str(tmp_path / 'other'))
