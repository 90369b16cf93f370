"""Settings of the host process that must be in place when it starts.

XLA:CPU allocates a step's temporaries afresh on every execution. glibc's
malloc maps blocks over 32 MB straight from the OS and unmaps them on free,
so each CPU step faulted its temporaries back in, 4 KB at a time: ~20,000
faults (80 MB) per step of the CNN benchmark and ~155,000 (620 MB) of the
transformer's, a quarter to a third of their step time on a 2-core CPU
(benchmarks/NOTES.md). With the glibc tunable `glibc.malloc.hugetlb=1`
(glibc 2.35 and later) malloc asks for transparent huge pages, so most of
that memory arrives in 2 MB faults (~500 and ~1,800 a step), and memory
still goes back to the OS on free. glibc reads tunables only at start-up,
hence `environ_for_run` and a re-exec in the CLI.

Imports neither jax nor anything heavy: the CLI calls this before it loads
them.
"""

from collections.abc import Mapping
import importlib.metadata
import importlib.util
import platform

HUGE_PAGES = 'glibc.malloc.hugetlb=1'


def cpu_backend_expected(environ: Mapping[str, str]) -> bool:
  """Whether jax will run on the CPU, judged before it is imported: the
  first of JAX_PLATFORMS when set, else whether no accelerator plugin is
  installed."""
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  # jax loads PJRT plugins (CUDA, ROCm, ...) from this entry-point group and
  # namespace package, and TPUs through libtpu.
  return not (importlib.metadata.entry_points(group='jax_plugins') or
              importlib.util.find_spec('jax_plugins') or
              importlib.util.find_spec('libtpu'))


def huge_page_environ(environ: Mapping[str, str]) -> dict[str, str] | None:
  """`environ` with `HUGE_PAGES` added to GLIBC_TUNABLES, or None when
  there is nothing to change: the C library is not glibc 2.35+, or
  GLIBC_TUNABLES already sets `glibc.malloc.hugetlb` (the user's choice
  stands)."""
  if platform.system() != 'Linux':
    return None
  libc, version = platform.libc_ver()
  try:
    major_minor = tuple(int(p) for p in version.split('.')[:2])
  except ValueError:
    return None
  if libc != 'glibc' or major_minor < (2, 35):
    return None
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb=' in tunables:
    return None
  tunables = f'{tunables}:{HUGE_PAGES}' if tunables else HUGE_PAGES
  return dict(environ, GLIBC_TUNABLES=tunables)


def environ_for_run(environ: Mapping[str, str]) -> dict[str, str] | None:
  """The environment a run should start in, or None to keep `environ`: the
  huge-page one when jax will run on the CPU and it changes something."""
  return huge_page_environ(environ) if cpu_backend_expected(environ) else None
