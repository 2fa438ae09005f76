"""Every loss at the exact Gaussian-to-Gaussian flow map (docs/oracle.md)."""
import jax
import jax.numpy as jnp
import pytest

import gaussian_oracle as go
from flowmap_jax import losses

CASES = [  # (mu, sigma0, sigma1)
    ([1.5], 1.0, 0.5),
    ([-0.7], 0.5, 2.0),
    ([0.3, -1.0, 2.0], 1.0, 0.3),
    ([2.0, 0.5, -0.5], 0.5, 1.0),
]
# (loss, aux keys that are deterministic residuals, extra config)
DETERMINISTIC = [
    ('lmd', ('loss/offdiag', 'loss/diag'), {}),
    ('emd', ('loss/offdiag', 'loss/diag'), {}),
    # ITVM's exact residuals: its default Heun target for t − s ≤ τ is exact only to O((t − s)²),
    # tested by its order below, so these use the terminal target that the exact map satisfies.
    ('itvm', ('loss/offdiag', 'loss/diag', 'loss/init', 'loss/term'),
     {'itvm.short_target': 'terminal'}),
    ('itvm', ('loss/offdiag', 'loss/diag', 'loss/term'),
     {'itvm.y_source': 'online', 'itvm.short_target': 'terminal'}),
    ('itvm', ('loss/offdiag', 'loss/term'), {'itvm.u': 'uniform', 'itvm.short_target': 'terminal'}),
    ('itvm', ('loss/offdiag', 'loss/term'),
     {'itvm.u': 's_plus_tau', 'itvm.short_target': 'terminal'}),
    ('lsd', ('loss/offdiag',), {}),
    ('lsd', ('loss/offdiag',), {'lsd.teacher': 'ema'}),
    ('esd', ('loss/offdiag',), {}),
    ('psd', ('loss/offdiag',), {}),
    ('psd', ('loss/offdiag',), {'psd.gamma': 'uniform'}),
]


def _config(loss_config, overrides):
  c = loss_config
  c.diag_fraction = 0.25
  for k, v in overrides.items():
    sect, key = k.split('.')
    c[sect][key] = v
  return c


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('name,keys,overrides', DETERMINISTIC)
def test_deterministic_terms_vanish_at_exact_map(loss_config, case, name, keys, overrides):
  config = _config(loss_config, overrides)
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 512)
    loss_fn = losses.get(name)
    rng = jax.random.key(1)
    run = lambda p: loss_fn(go.average_velocity, p, x0, x1, rng, config=config,
                            teacher=go.teacher(truth))[1]
    at_truth, perturbed = run(truth), run(go.perturb(truth))
    for k in keys:
      assert float(perturbed[k]) > 1e-4, (k, perturbed[k])
      assert float(at_truth[k]) < 1e-6 * float(perturbed[k]), (name, k, at_truth[k], perturbed[k])


@pytest.mark.parametrize('case', CASES[:2])
def test_itvm_teacher_target_is_order_tau(loss_config, case):
  """With terminal_target=teacher the terminal term compares an average velocity with an
  instantaneous one: O(τ) at the exact map, and shrinking with τ."""
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 512)
    terms = []
    for tau in (0.1, 0.01):
      config = _config(loss_config, {'itvm.terminal_target': 'teacher', 'itvm.tau': tau})
      _, aux = losses.get('itvm')(go.average_velocity, truth, x0, x1, jax.random.key(1),
                                  config=config, teacher=go.teacher(truth))
      terms.append(float(aux['loss/term']))
    assert terms[1] < 0.05 * terms[0], terms


@pytest.mark.parametrize('case', CASES[:2])
def test_itvm_heun_short_target_is_second_order(loss_config, case):
  """With short_target=heun the pairs with t − s ≤ τ regress on the teacher's Heun step, which
  misses the exact average velocity by O((t − s)²): at the exact map their share of the terminal term
  falls like τ⁵ (τ⁴ per pair, a fraction τ of the pairs), far below the teacher target's O(τ)."""
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 512)
    run = lambda over: float(losses.get('itvm')(
        go.average_velocity, truth, x0, x1, jax.random.key(1), config=_config(loss_config, over),
        teacher=go.teacher(truth))[1]['loss/term'])
    heun = [run({'itvm.short_target': 'heun', 'itvm.tau': tau}) for tau in (0.2, 0.05)]
    assert 0 < heun[1] < 4 ** -4 * heun[0], heun
    assert heun[1] < 1e-3 * run({'itvm.terminal_target': 'teacher', 'itvm.tau': 0.05})


@pytest.mark.parametrize('name', ['fm', 'meanflow'])
@pytest.mark.parametrize('case', [CASES[0], CASES[2]])
def test_noisy_losses_have_zero_expected_gradient_at_truth(loss_config, name, case):
  """FM and MeanFlow regress on a noisy target (İ): their gradient vanishes only in expectation."""
  config = loss_config
  config.diag_fraction = 0.25
  g_truth, g_off = go.expected_gradient_norms(losses.get(name), case, 400_000, config)
  assert g_off > 0.05, g_off
  assert g_truth < 0.1 * g_off, (g_truth, g_off)
