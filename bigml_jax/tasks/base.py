"""What every train step reports, whether the default one (training.step) or
a task's own (e.g. tasks.gan): besides the task's metric sums, 'steps',
'grad_norm_sum', 'nonfinite' and 'min_nonfinite_step', the first step (1-based)
whose update was skipped as non-finite, or NO_STEP when none was.
"""

import numpy as np

# 'min_nonfinite_step' of a step whose update was finite: the identity of min.
NO_STEP = int(np.iinfo(np.int32).max)
