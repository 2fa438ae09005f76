"""eval.json as Markdown (eval.md): one table per run, 2-D (KL and energy distance) or images (FID)."""


def markdown(results):
  """eval.json as a Markdown table: KL (energy distance) per sampler and step count."""
  steps = results['estimator']['steps']
  fmt = lambda r: f'{r["kl"]:.4f} ({r["energy"]:.4f})'
  lines = [f'# Evaluation at step {results["step"]} ({results["loss"]})', '',
           f'KL(data ‖ model) on {results["estimator"]["num_samples"]:,} samples, energy distance on '
           f'{results["estimator"]["energy_samples"]:,} in parentheses; lower is better.', '',
           '| sampler | ' + ' | '.join(f'{n} NFE' for n in steps) + ' |',
           '|---' * (len(steps) + 1) + '|']
  for key, label in (('flow_map', 'flow map'), ('teacher_euler', 'teacher Euler')):
    if key in results:
      lines.append(f'| {label} | ' + ' | '.join(fmt(results[key][str(n)]) for n in steps) + ' |')
  if 'teacher_ode' in results:
    o = results['teacher_ode']
    lines.append(f'\nTeacher adaptive ODE ({results["estimator"]["ode"]}, {o["nfe"]:.0f} NFE): '
                 f'{fmt(o)}.')
  lines.append(f'\nEstimator floor (two independent data sets): {fmt(results["floor"])}.')
  return '\n'.join(lines) + '\n'


# The image metrics a results dict may hold: (key, heading, format, which direction is better).
IMAGE_METRICS = (
    ('fid', None, '{:.2f}', 'lower is better'),
    ('accuracy', 'Digit accuracy (samples classified as the digit they were asked for)',
     '{:.1%}', 'higher is better'),
    ('feature_distance', "Fréchet distance in the digit classifier's penultimate features "
     '(not FID) against the test set', '{:.2f}', 'lower is better'),
    ('energy', 'Energy distance in pixel space against test images', '{:.3f}', 'lower is better'),
)


def image_markdown(results):
  steps = results['estimator']['steps']
  est = results['estimator']
  lines = [f'# Evaluation at step {results["step"]} ({results["loss"]})', '']
  if results.get('fid_off'):
    lines += [results['fid_off'], '']
  rows = [(name, label) for name, label in (('flow_map', 'flow map'),
                                            ('teacher_euler', 'teacher Euler')) if name in results]
  ode = results.get('teacher_ode')
  for key, heading, form, better in IMAGE_METRICS:
    have = [(name, label) for name, label in rows if key in results[name][str(steps[0])]]
    if not have and not (ode and key in ode):
      continue
    if key == 'fid':
      heading = f'{results["metric"]} against {est["fid_stats"]}'
    lines += [f'{heading}, {est["fid_samples"]:,} samples; {better}.', '',
              '| sampler | ' + ' | '.join(f'{k} NFE' for k in steps) + ' |',
              '|---' * (len(steps) + 1) + '|']
    for name, label in have:
      lines.append(f'| {label} | ' + ' | '.join(form.format(results[name][str(k)][key])
                                                for k in steps) + ' |')
    if ode and key in ode:
      lines.append(f'| teacher adaptive ODE ({est["ode"]}, {ode["nfe"]:.0f} NFE) | '
                   + form.format(ode[key]) + ' |' + ' |' * (len(steps) - 1))
    lines.append('')
  if 'classifier' in results:
    c = results['classifier']
    lines.append(f'Digit classifier: {c["path"]} (test accuracy {c["test_accuracy"]:.2%}; '
                 f'{c["source"]}).')
  lines.append('\nSample grid: plots/samples.png, rows 1, 2, 4, 8 steps (same noise and labels).')
  return '\n'.join(lines) + '\n'
