"""Entry point: python -m flowmap_jax.main --config configs/itvm_checkerboard.py --workdir DIR.

--mode train (default: train, resuming if DIR holds a run, then evaluate), eval (re-evaluate the
latest checkpoint), sample (write flow-map samples of the latest checkpoint), fid_stats (write the
image data set's Inception reference statistics for FID), prepare_latents (encode a latent config's
images with its VAE into data.path, once; no --workdir needed).
Exit codes: 0 done, 2 config error (message, no traceback), 3 non-finite loss, 143 preempted
(SIGTERM; a checkpoint was written, run the same command again).
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
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'sample', 'fid_stats', 'prepare_latents'],
                  'What to do.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host runs; '
                  'also set by FLOWMAP_DISTRIBUTED=1).')
FLAGS = flags.FLAGS

EXIT_CONFIG, EXIT_NONFINITE, EXIT_PREEMPTED = 2, 3, 143


class _QuietOrbax:
  """Orbax logs every save step at INFO; keep its warnings and errors only."""

  def filter(self, record):
    return record.levelno >= 30 or 'orbax' not in record.pathname


def _config_error(lines):
  print('Invalid config:\n' + '\n'.join(f'  - {l}' for l in lines), file=sys.stderr)
  sys.exit(EXIT_CONFIG)


def parse_flags(argv):
  """absl parsing, with a bad flag or override (wrong type, unknown field, unreadable config file)
  reported as a config error: exit code 2 and the message, no traceback."""
  try:
    rest = FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (flags.Error, config file errors)
    cause = e.__cause__ or e
    text = f'{type(cause).__name__}: {cause}'.strip()
    if 'Traceback (most recent call last)' in text:  # a config file's own error, traceback quoted
      text = f'{text.splitlines()[0].rstrip(": ")}: {_last_line(text)}'
    elif not isinstance(cause, flags.Error):
      # An override of a field the config does not have, or the config file's get_config raising.
      text = _unknown_override(argv) or f'--config {_config_arg(argv)} does not load: {text}'
    _config_error([text])
  # prepare_latents writes data.path, not a workdir.
  needed = ('config',) if FLAGS.mode == 'prepare_latents' else ('config', 'workdir')
  missing = [f'--{n}' for n in needed if FLAGS[n].value is None]
  if missing:
    _config_error([f'{" and ".join(missing)} must be given, e.g. --config '
                   'configs/itvm_checkerboard.py --workdir runs/itvm_checkerboard.'])
  problem = _config_file_problem() or (FLAGS.workdir and _workdir_problem(FLAGS.workdir))
  if problem:
    _config_error([problem])
  return rest


def _config_file_problem():
  """config_flags defers a config file that does not load (missing, or its get_config raising) to
  the first access of the config; this asks now and names the file."""
  spec = FLAGS['config'].config_filename
  try:
    FLAGS.config.keys()
  except OSError as e:
    path = spec.partition(':')[0]
    if not os.path.isfile(path):
      return (f'--config {spec}: there is no config file {os.path.abspath(path)} (a path '
              'relative to the current directory, e.g. configs/itvm_checkerboard.py).')
    cause = e.__cause__ or e
    return f'--config {spec} does not load: {_last_line(str(cause)) or type(cause).__name__}'
  return None


def _config_arg(argv):
  for i, a in enumerate(argv):
    if a.startswith(('--config=', '-config=')):
      return a.split('=', 1)[1]
    if a in ('--config', '-config') and i + 1 < len(argv):
      return argv[i + 1]
  return '?'


def _unknown_override(argv):
  """'--config.a.b=v: <config> has no field a.b' for the first override naming a missing field."""
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  spec = _config_arg(argv)
  try:
    fields = set(config_io.flatten(config_io.to_dict(config_io.load(spec))))
  except Exception:  # pylint: disable=broad-except  (the file itself does not load)
    return None
  for a in argv:
    if a.startswith('--config.'):
      field = a[len('--config.'):].split('=', 1)[0]
      if field not in fields and not any(f.startswith(field + '.') for f in fields):
        return f'{a}: {spec} has no field {field}.'
  return None


def _last_line(text):
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return lines[-1] if lines else ''


def _workdir_problem(workdir):
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(workdir)
  if '://' not in workdir and path.exists() and not path.is_dir():
    return f'--workdir {workdir} is a file; a workdir is a folder (it is created when missing).'
  return None


def initialize_distributed(jax):
  """JAX's multi-controller runtime, only when the launcher asks for it (never at import).

  Cloud TPU and SLURM: jax.distributed.initialize() finds everything itself, from the TPU VM's
  metadata, or from SLURM's variables, where each process gets one GPU (SLURM_LOCALID): hence one
  task per GPU in launch/gpu_slurm.sh. Elsewhere (launch/local.sh) FLOWMAP_COORDINATOR,
  FLOWMAP_NUM_PROCESSES and FLOWMAP_PROCESS_ID name it, and JAX's cluster detection is off (inside
  a SLURM allocation it would still restrict each process to GPU SLURM_LOCALID).
  """
  env = os.environ
  if 'FLOWMAP_COORDINATOR' in env:
    jax.distributed.initialize(coordinator_address=env['FLOWMAP_COORDINATOR'],
                               num_processes=int(env['FLOWMAP_NUM_PROCESSES']),
                               process_id=int(env['FLOWMAP_PROCESS_ID']),
                               cluster_detection_method='deactivate')
  else:
    jax.distributed.initialize()
  logging.info('Process %d of %d; %d local and %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  gpus, tasks = env.get('SLURM_GPUS_ON_NODE'), env.get('SLURM_NTASKS_PER_NODE')
  if (gpus and tasks and gpus.isdigit() and tasks.isdigit()
      and int(gpus) > int(tasks) * jax.local_device_count()):
    logging.warning('SLURM gives this node %s GPUs and %s task(s) of %d GPU(s) each (JAX gives '
                    'each SLURM task one GPU): %d GPUs are idle; use --ntasks-per-node=%s.', gpus,
                    tasks, jax.local_device_count(),
                    int(gpus) - int(tasks) * jax.local_device_count(), gpus)


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietOrbax())
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.distributed or os.environ.get('FLOWMAP_DISTRIBUTED') == '1':
    initialize_distributed(jax)
  from flowmap_jax import validate  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  # Validate before the heavy imports (TensorFlow for the writers) and before anything compiles.
  problems = validate.problems_of(config)
  if problems:
    _config_error(problems)
  # pylint: disable=g-import-not-at-top
  from flowmap_jax import modes
  from flowmap_jax import train
  from flowmap_jax.data import images
  from flowmap_jax.models import vae
  # pylint: enable=g-import-not-at-top
  logging.info('Config:\n%s', config)
  run = {'train': train.train_and_evaluate, 'eval': modes.evaluate_workdir,
         'sample': modes.sample_workdir, 'fid_stats': modes.fid_stats_workdir,
         'prepare_latents': modes.prepare_latents}[FLAGS.mode]
  try:
    result = run(config, FLAGS.workdir)
    if FLAGS.mode in ('fid_stats', 'prepare_latents'):
      print(result)
  except validate.ConfigError as e:
    _config_error(e.problems)
  except (images.DataNotPrepared, vae.VAEWeightsError) as e:
    _config_error([str(e)])
  except train.NonFiniteError as e:
    print(f'Stopped: {e}', file=sys.stderr)
    sys.exit(EXIT_NONFINITE)
  except train.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
