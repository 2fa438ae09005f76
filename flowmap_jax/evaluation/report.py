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


def image_markdown(results):
  steps = results['estimator']['steps']
  metric = results['metric']
  lines = [f'# Evaluation at step {results["step"]} ({results["loss"]})', '']
  if results.get('fid_off'):
    lines += [results['fid_off'], '']
  else:
    lines += [f'{metric} on {results["estimator"]["fid_samples"]:,} samples against '
              f'{results["estimator"]["fid_stats"]}; lower is better.', '',
              '| sampler | ' + ' | '.join(f'{k} NFE' for k in steps) + ' |',
              '|---' * (len(steps) + 1) + '|']
    for name, label in (('flow_map', 'flow map'), ('teacher_euler', 'teacher Euler')):
      if name in results:
        lines.append(f'| {label} | ' + ' | '.join(f'{results[name][str(k)]["fid"]:.2f}'
                                                  for k in steps) + ' |')
    if 'teacher_ode' in results:
      o = results['teacher_ode']
      lines.append(f'\nTeacher adaptive ODE ({results["estimator"]["ode"]}, {o["nfe"]:.0f} NFE): '
                   f'{o["fid"]:.2f}.')
  lines.append('\nSample grid: plots/samples.png, rows 1, 2, 4, 8 steps (same noise and labels).')
  return '\n'.join(lines) + '\n'
