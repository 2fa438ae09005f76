"""Writes tests/fixtures/dit_parity.npz: our DiT against facebookresearch/DiT's own `models.py`.

  python tools/parity/dit.py --models PATH/TO/DiT/models.py     (a venv with torch, timm, jax, flax)

A tiny DiT (width 64, depth 2, 2 heads, patch 2, 8×8×3 inputs, 3 classes and the null class) with
random weights, every bias and zero-initialised layer made non-zero, is converted to the reference's
state dict. The reference gets our (s, t − s) embedding in place of its TimestepEmbedder, x / σ0 as
input (our DiT divides by σ0 and multiplies its output by it) and learn_sigma=False.
"""
import argparse
import importlib.util
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

SIGMA, SIZE, PATCH, CLASSES = 0.5, 8, 2, 3


def ours_and_inputs():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models.dit import DiT  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models.embeddings import TwoTimeEmbedding  # pylint: disable=g-import-not-at-top
  net = DiT(size='T', patch_size=PATCH, num_classes=CLASSES, num_fourier=4, max_freq=8.0,
            sigma=SIGMA)
  rng = np.random.RandomState(0)
  x = rng.randn(4, SIZE, SIZE, 3).astype(np.float32)
  s = np.array([0.0, 0.1, 0.4, 0.7], np.float32)
  t = np.array([0.0, 0.6, 0.9, 1.0], np.float32)
  y = np.array([0, 1, 2, CLASSES], np.int32)  # the last: the null label of guidance
  params = net.init(jax.random.key(0), s, t, x, y)['params']
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  flat = {k: (np.asarray(v) + 0.05 * rng.randn(*v.shape)).astype(np.float32)
          for k, v in flat.items()}
  params = traverse_util.unflatten_dict(flat, sep='/')
  out = np.asarray(net.apply({'params': params}, s, t, x, y))
  emb = np.asarray(TwoTimeEmbedding(64, num=4, max_freq=8.0).apply(
      {'params': params['time_embedding']}, jnp.asarray(s), jnp.asarray(t)))
  return flat, dict(x=x, s=s, t=t, y=y), emb, out


def reference_output(models_path, flat, inputs, emb):
  import torch  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('dit_reference', models_path)
  ref_lib = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref_lib)
  ref = ref_lib.DiT(input_size=SIZE, patch_size=PATCH, in_channels=3, hidden_size=64, depth=2,
                    num_heads=2, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=CLASSES,
                    learn_sigma=False).eval()
  T = lambda a: torch.from_numpy(np.ascontiguousarray(a))
  linear = lambda name: {'weight': T(flat[f'{name}/kernel'].T), 'bias': T(flat[f'{name}/bias'])}
  state = {'x_embedder.proj.weight': T(flat['Conv_0/kernel'].transpose(3, 2, 0, 1)),
           'x_embedder.proj.bias': T(flat['Conv_0/bias']),
           'y_embedder.embedding_table.weight': T(flat['label_embedding/embedding'])}
  for i in range(2):
    for theirs, ours in (('adaLN_modulation.1', 'Dense_0'), ('attn.qkv', 'Dense_1'),
                         ('attn.proj', 'Dense_2'), ('mlp.fc1', 'Dense_3'), ('mlp.fc2', 'Dense_4')):
      for k, v in linear(f'DiTBlock_{i}/{ours}').items():
        state[f'blocks.{i}.{theirs}.{k}'] = v
  for theirs, ours in (('final_layer.adaLN_modulation.1', 'Dense_0'),
                       ('final_layer.linear', 'Dense_1')):
    for k, v in linear(ours).items():
      state[f'{theirs}.{k}'] = v
  missing, unexpected = ref.load_state_dict(state, strict=False)
  # Only the fixed position embedding (a buffer-like parameter) and the replaced timestep MLP stay
  # the reference's own.
  assert set(missing) == {'pos_embed', 't_embedder.mlp.0.weight', 't_embedder.mlp.0.bias',
                          't_embedder.mlp.2.weight', 't_embedder.mlp.2.bias'}, missing
  assert not unexpected, unexpected

  class OurTimeEmbedding(torch.nn.Module):
    def forward(self, t):
      del t
      return T(emb)

  ref.t_embedder = OurTimeEmbedding()
  x = T(inputs['x'] / SIGMA).permute(0, 3, 1, 2)
  with torch.no_grad():
    out = ref(x, T(inputs['t']), torch.from_numpy(inputs['y'].astype(np.int64)))
  return SIGMA * out.permute(0, 2, 3, 1).numpy()


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--models', required=True, help="facebookresearch/DiT's models.py")
  ap.add_argument('--out', default=os.path.join(REPO, 'tests', 'fixtures', 'dit_parity.npz'))
  args = ap.parse_args()
  flat, inputs, emb, ours = ours_and_inputs()
  expected = reference_output(args.models, flat, inputs, emb)
  print(f'max |ours - reference| at fixture time: {np.max(np.abs(ours - expected)):.3g}')
  np.savez_compressed(args.out, expected=expected, embedding=emb, **inputs,
                      **{f'params/{k}': v for k, v in flat.items()})
  print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB)')


if __name__ == '__main__':
  main()
