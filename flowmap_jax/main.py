"""Entry point: python -m flowmap_jax.main --config configs/itvm_checkerboard.py --workdir DIR.

--mode train (default: train, resuming if DIR holds a run, then evaluate), eval (re-evaluate the
latest checkpoint), sample (write sample plots of the latest checkpoint).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Experiment config file (path[:arg]).',
                                 lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and evaluation.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'sample'], 'What to do.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host runs; '
                  'also set by FLOWMAP_DISTRIBUTED=1).')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


class _QuietOrbax:
  """Orbax logs every save step at INFO; keep its warnings and errors only."""

  def filter(self, record):
    return record.levelno >= 30 or 'orbax' not in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietOrbax())
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.distributed or os.environ.get('FLOWMAP_DISTRIBUTED') == '1':
    jax.distributed.initialize()
  from flowmap_jax import train  # pylint: disable=g-import-not-at-top
  from flowmap_jax import validate  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  logging.info('Config:\n%s', config)
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == 'eval':
      train.evaluate_workdir(config, FLAGS.workdir)
    else:
      train.sample_workdir(config, FLAGS.workdir)
  except validate.ConfigError as e:
    print(str(e), file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteError as e:
    print(f'Stopped: {e}', file=sys.stderr)
    sys.exit(3)
  except train.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(143)


if __name__ == '__main__':
  app.run(main)
