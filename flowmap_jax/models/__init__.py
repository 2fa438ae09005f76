"""Networks v_θ(s, t, x) by name (`config.model.name`)."""
from flowmap_jax.models.mlp import MLP

MODELS = ('mlp',)


def get(config_model, sigma):
  """The flax Module named by `config_model.name`, built from the config's fields."""
  name = config_model.name
  if name == 'mlp':
    return MLP(width=config_model.width, depth=config_model.depth,
               activation=config_model.activation, num_fourier=config_model.num_fourier,
               max_freq=config_model.max_freq, sigma=sigma)
  raise ValueError(f'Unknown model.name {name!r}; known: {MODELS}.')
