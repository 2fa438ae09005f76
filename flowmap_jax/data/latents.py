"""Latent data sets: an image set encoded once by a VAE (Stable Diffusion's AutoencoderKL), stored as
ArrayRecord shards, and read through the same grain pipeline as images (docs/latents.md).

Preparation (`prepare`, `--mode prepare_latents`) encodes every image of `data.images` at
`data.image_size` (ADM's centre crop for ImageNet) and its horizontal flip, and stores per image the
posterior mean and standard deviation of both, in float16, and the label. Each JAX process encodes
its own shards (shard k goes to process k mod P), batches split over the process's local devices; a
shard is written under a temporary name and renamed when finished, so a killed preparation run again
skips the finished shards and redoes the half-written one. `manifest.json` holds the VAE file's
SHA-256, the resolution, the crop and the shards; a run whose VAE file does not match it stops.

Training (`dataset`, `train_iterator`) draws for each example one of the two flips at random
(data.random_flip) and z = mean + std·ε from its stored posterior (data.posterior='sample'; 'mean'
takes the mean), normalised by data.latent_scale (SD's 0.18215) or, when data.latent_mean and
data.latent_std are given, per channel: x = (z − mean_c) / std_c. Batches are host numpy
{'latent': float32 (b, h, w, c), 'label': int32 (b,)}. `to_latent` and `decoder` invert this.
"""
import dataclasses
import json
import os
import time

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from flowmap_jax.data import images

MANIFEST = 'manifest.json'
FORMAT = 'flowmap_jax latents v1'
STORE_DTYPES = ('float16', 'bfloat16')
POSTERIORS = ('sample', 'mean')
VAE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}   # the VAE's activations when it encodes


def is_latent(data_config):
  return data_config.name == 'latents'


def image_config(data_config):
  """The image data set the latents are made of, as an image data config (data/images.py):
  data.images' source at data.image_size, RGB, no flip (both flips are stored)."""
  d, i = data_config, data_config.images
  return ml_collections.ConfigDict(dict(
      name=i.name, data_dir=i.get('data_dir', ''), path=i.get('path', ''),
      num_classes=int(i.get('num_classes', 0)), channels=3, image_size=int(d.image_size),
      class_conditional=bool(d.class_conditional), random_flip=False,
      batch_size=int(i.batch_size), num_workers=int(d.num_workers), sigma0=0.5))


def num_classes(data_config):
  """The label count a class-conditional latent model embeds (the image set's)."""
  return images.num_classes(image_config(data_config))


def shape(data_config):
  return tuple(int(n) for n in data_config.latent_shape)


# --------------------------------------------------------------------------- normalisation


def _channel_stats(data_config):
  mean, std = tuple(data_config.get('latent_mean', ())), tuple(data_config.get('latent_std', ()))
  return (np.asarray(mean, np.float32), np.asarray(std, np.float32)) if mean else None


def from_latent(z, data_config):
  """A VAE latent z -> the model's data x: z·latent_scale, or (z − mean_c) / std_c per channel."""
  stats = _channel_stats(data_config)
  if stats is None:
    return z * np.float32(data_config.latent_scale)
  return (z - stats[0]) / stats[1]


def to_latent(x, data_config):
  """The model's data x -> the VAE latent z (the inverse of from_latent); numpy or jax arrays."""
  stats = _channel_stats(data_config)
  if stats is None:
    return x / np.float32(data_config.latent_scale)
  return x * stats[1] + stats[0]


# --------------------------------------------------------------------------- the stored records


@dataclasses.dataclass(frozen=True)
class Layout:
  """One image's record: mean, std, flipped mean, flipped std (each h × w × c in `dtype`), then the
  int32 label, as raw little-endian bytes (the manifest holds the shape and dtype)."""
  shape: tuple
  dtype: str = 'float16'

  @property
  def np_dtype(self):
    if self.dtype == 'bfloat16':
      import ml_dtypes  # pylint: disable=g-import-not-at-top
      return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(self.dtype)

  @property
  def size(self):
    return int(np.prod(self.shape))

  def pack(self, mean, std, mean_flip, std_flip, label):
    parts = [np.asarray(a, np.float32).astype(self.np_dtype).reshape(-1)
             for a in (mean, std, mean_flip, std_flip)]
    return b''.join(p.tobytes() for p in parts) + np.int32(label).tobytes()

  def unpack(self, record):
    n = self.size
    values = np.frombuffer(record, self.np_dtype, count=4 * n).astype(np.float32)
    label = np.frombuffer(record, np.int32, count=1, offset=4 * n * self.np_dtype.itemsize)[0]
    mean, std, mean_flip, std_flip = (values[i * n:(i + 1) * n].reshape(self.shape)
                                      for i in range(4))
    return dict(mean=mean, std=std, mean_flip=mean_flip, std_flip=std_flip, label=label)


def shard_name(k, num_shards):
  return f'latents-{k:05d}-of-{num_shards:05d}.array_record'


def read_manifest(path):
  f = epath.Path(path) / MANIFEST
  if not f.exists():
    return None
  return json.loads(f.read_text())


def check_manifest(data_config, vae_hash=None):
  """The manifest of data.path when it matches the run (complete, data.latent_shape,
  data.image_size and the VAE file's hash); DataError saying what differs and how to prepare."""
  d = data_config
  how = ('prepare them with `python -m flowmap_jax.main --config <this config> --mode '
         'prepare_latents`')
  if not d.path:
    raise images.DataError(f"data.path is not set: data.name='latents' reads prepared latents; "
                           f'{how} after setting it.')
  m = read_manifest(d.path)
  if m is None:
    raise images.DataError(f'data.path={d.path!r} holds no prepared latents ({MANIFEST} missing); '
                           f'{how}.')
  if m.get('format') != FORMAT:
    raise images.DataError(f'{d.path}/{MANIFEST}: format {m.get("format")!r}, expected {FORMAT!r}.')
  if not m.get('complete'):
    raise images.DataError(f'{d.path}: the latent preparation has not finished '
                           f'({m.get("shards_done", 0)} of {m["num_shards"]} shards); run it again '
                           'to finish (finished shards are kept).')
  problems = []
  if tuple(m['latent_shape']) != shape(d):
    problems.append(f'latent shape {tuple(m["latent_shape"])} (data.latent_shape={shape(d)})')
  if int(m['image_size']) != int(d.image_size):
    problems.append(f'image size {m["image_size"]} (data.image_size={d.image_size})')
  if vae_hash is not None and m['vae_sha256'] != vae_hash:
    problems.append(f'VAE file SHA-256 {m["vae_sha256"][:12]}… ({d.vae} has {vae_hash[:12]}…)')
  if problems:
    raise images.DataError(f'data.path={d.path!r} holds latents of another setting: '
                           + '; '.join(problems) + f'. Point data.path elsewhere and {how}.')
  return m


def vae_hash(data_config):
  from flowmap_jax.models import vae  # pylint: disable=g-import-not-at-top
  return vae.file_hash(data_config.vae)


# --------------------------------------------------------------------------- reading


class LatentSource:
  """Random access to the prepared records of data.path, in shard order (checked on opening)."""

  def __init__(self, data_config, check_vae=True):
    self.manifest = check_manifest(data_config, vae_hash(data_config) if check_vae else None)
    root = epath.Path(data_config.path)
    self.layout = Layout(tuple(self.manifest['latent_shape']), self.manifest['dtype'])
    files = [str(root / s['file']) for s in self.manifest['shards'] if s['count']]
    self._source = grain.sources.ArrayRecordDataSource(files)
    if len(self._source) != self.manifest['num_images']:
      raise images.DataError(f'{data_config.path}: the shards hold {len(self._source)} records, '
                             f'the manifest says {self.manifest["num_images"]}.')

  def __len__(self):
    return len(self._source)

  def __getitem__(self, i):
    return self._source[i]


class Draw(grain.transforms.RandomMap):
  """A record -> {'latent': float32 (h, w, c), 'label': int32}: one flip at random, z from the
  posterior (or its mean), normalised (module docstring)."""

  def __init__(self, data_config, layout):
    self.data_config = data_config
    self.layout = layout
    self.flip = bool(data_config.random_flip)
    self.sample = data_config.posterior == 'sample'
    self.labelled = bool(data_config.class_conditional)

  def random_map(self, element, rng):
    r = self.layout.unpack(element)
    flipped = self.flip and rng.random() < 0.5
    mean, std = (r['mean_flip'], r['std_flip']) if flipped else (r['mean'], r['std'])
    z = mean + std * rng.standard_normal(mean.shape, dtype=np.float32) if self.sample else mean
    return {'latent': from_latent(z, self.data_config).astype(np.float32),
            'label': np.int32(r['label'] if self.labelled else 0)}


def dataset(data_config, *, seed, batch_size, process_index, process_count, shuffle=True,
            repeat=True):
  """The grain pipeline of one process: its shard of the records, (shuffled per epoch,) drawn,
  batched; as images.dataset."""
  src = LatentSource(data_config)
  ds = images.records(src, seed=seed, process_index=process_index, process_count=process_count,
                      shuffle=shuffle, repeat=repeat)
  ds = ds.random_map(Draw(data_config, src.layout), seed=seed + 1)
  return images.batched(ds, batch_size, repeat, data_config.num_workers)


def train_iterator(config, process_index, process_count):
  d = config.data
  return iter(dataset(d, seed=config.seed, batch_size=d.batch_size // process_count,
                      process_index=process_index, process_count=process_count))


# --------------------------------------------------------------------------- the VAE on devices


def _local_mesh():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.sharding.Mesh(np.array(jax.local_devices()), ('data',))


def _batched(fn, mesh):
  """fn over a host batch, split over the mesh's devices (padded to a multiple of them)."""
  import jax  # pylint: disable=g-import-not-at-top
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  jitted = jax.jit(fn, in_shardings=sharding, out_shardings=sharding)
  k = mesh.devices.size

  def run(x):
    n = len(x)
    pad = -n % k
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    out = jax.device_get(jitted(x))
    return jax.tree.map(lambda a: a[:n], out)
  return run


def encoder(vae_path, dtype=None):
  """uint8 images (b, H, W, 3) -> float32 (mean, std, mean of the flip, std of the flip), each
  (b, h, w, c), on this process's local devices."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models import vae  # pylint: disable=g-import-not-at-top
  module, params = vae.load(vae_path, dtype=dtype)

  def moments(x):
    mean, logvar = module.apply({'params': params}, x, method=module.encode)
    return mean.astype(jnp.float32), jnp.exp(0.5 * logvar.astype(jnp.float32))

  def encode(image):
    x = images.to_unit_range(image)
    (m, s), (mf, sf) = moments(x), moments(x[:, :, ::-1])
    return m, s, mf, sf
  return _batched(encode, _local_mesh())


def decoder(data_config, dtype=None):
  """The model's data x (b, h, w, c) -> images in [-1, 1] (b, H, W, 3): to_latent, then the VAE's
  decoder, data.images.batch_size images at a time (its full-resolution activations are large),
  split over this process's local devices."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models import vae  # pylint: disable=g-import-not-at-top
  module, params = vae.load(data_config.vae, dtype=dtype)

  def decode(x):
    z = to_latent(x.astype(jnp.float32), data_config)
    return module.apply({'params': params}, z, method=module.decode).astype(jnp.float32)
  run, chunk = _batched(decode, _local_mesh()), int(data_config.images.batch_size)
  return lambda x: np.concatenate([run(np.asarray(x[i:i + chunk], np.float32))
                                   for i in range(0, len(x), chunk)])


# --------------------------------------------------------------------------- preparation


def plan(data_config, vae_sha256, split='train'):
  """What preparation will write: the manifest less the shard counts (identical on every process)."""
  d = data_config
  icfg = image_config(d)
  n = len(images.source(icfg, split))
  per = int(d.images.shard_size)
  num_shards = max(1, -(-n // per))
  spec = images.DATASETS[icfg.name]
  crop = (f'centre {spec.crop} px, bicubic to {d.image_size}' if spec.crop else
          f"ADM's: box-halve, bicubic to short side {d.image_size}, centre crop")
  return dict(format=FORMAT, complete=False, vae_file=os.path.basename(str(d.vae)),
              vae_sha256=vae_sha256, image_size=int(d.image_size), crop=crop,
              source=dict(name=icfg.name, split=split, data_dir=icfg.data_dir, path=icfg.path),
              num_images=n, shard_size=per, num_shards=num_shards,
              latent_shape=list(shape(d)), dtype=str(d.images.store_dtype),
              num_classes=images.labels_of(icfg),
              record='mean, std, flipped mean, flipped std (h·w·c each), int32 label')


def _same_plan(a, b):
  keys = ('format', 'vae_sha256', 'image_size', 'crop', 'source', 'num_images', 'shard_size',
          'num_shards', 'latent_shape', 'dtype')
  return [k for k in keys if a.get(k) != b.get(k)]


def prepare(config, split='train'):
  """--mode prepare_latents: encodes data.images into data.path (module docstring). Returns the
  manifest. Resumable: finished shards are skipped, a half-written one is redone."""
  import jax  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from flowmap_jax import progress  # pylint: disable=g-import-not-at-top
  d = config.data
  root = epath.Path(d.path)
  root.mkdir(parents=True, exist_ok=True)
  sha = vae_hash(d)
  want = plan(d, sha, split)
  have = read_manifest(root)
  if have is not None:
    differs = _same_plan(have, want)
    if differs:
      raise images.DataError(
          f'data.path={d.path!r} holds latents prepared with another setting ({", ".join(differs)} '
          'differ); use an empty folder, or remove the old one.')
  if jax.process_index() == 0 and have is None:
    (root / MANIFEST).write_text(json.dumps(want, indent=2))
  encode = encoder(d.vae, dtype=VAE_DTYPES[d.images.vae_dtype])
  layout = Layout(shape(d), str(d.images.store_dtype))
  icfg = image_config(d)
  src = images.source(icfg, split)
  n, per, num_shards = want['num_images'], want['shard_size'], want['num_shards']
  mine = range(jax.process_index(), num_shards, jax.process_count())
  todo = [k for k in mine if not (root / shard_name(k, num_shards)).exists()]
  if len(todo) < len(mine):
    logging.info('Latents: %d of this process\'s %d shards are finished; encoding the other %d.',
                 len(mine) - len(todo), len(mine), len(todo))
  bs = int(d.images.batch_size)
  threads = max(1, int(d.num_workers))

  def shard_batches():
    # One grain pipeline per shard: its records in order, decoded and cropped by worker threads.
    for k in todo:
      ds = grain.MapDataset.source(src)[k * per:min(n, (k + 1) * per)]
      ds = ds.map(images.Preprocess(icfg)).batch(bs, drop_remainder=False)
      for batch in ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                        prefetch_buffer_size=2 * threads)):
        yield k, batch

  total = sum(-(-(min(n, (k + 1) * per) - k * per) // bs) for k in todo)
  writer, current, count, start = None, None, 0, time.monotonic()
  for k, batch in progress.track(shard_batches(), total=total, unit='batch',
                                 desc=f'Encoding {len(todo)} shards of {per} images',
                                 size=lambda item: len(item[1]['image']), size_unit='image'):
    if k != current:
      if writer is not None:
        _finish(writer, root, current, num_shards)
      current = k
      tmp = root / (shard_name(k, num_shards) + '.tmp')
      if tmp.exists():  # half-written by a run that was stopped: redone from its start
        tmp.unlink()
      writer = array_record_module.ArrayRecordWriter(str(tmp), 'group_size:1')
    image = batch['image']
    if image.shape[-1] != 3:
      raise images.DataError(f'{icfg.name}: images have {image.shape[-1]} channel(s); the VAE '
                             'encodes RGB images.')
    moments = encode(image)
    if moments[0].shape[1:] != shape(d):
      raise images.DataError(f'the VAE {d.vae} encodes {d.image_size} px images to latents of '
                             f'shape {moments[0].shape[1:]}, but data.latent_shape={shape(d)}.')
    for i, label in enumerate(batch['label']):
      writer.write(layout.pack(*(m[i] for m in moments), label))
    count += len(image)
  if writer is not None:
    _finish(writer, root, current, num_shards)
  if count:
    seconds = time.monotonic() - start
    logging.info('Latents: %d images in %.1f s (%.3g images/s) on %d local device(s).', count,
                 seconds, count / max(seconds, 1e-9), jax.local_device_count())
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('flowmap_jax latents written')
  done = [k for k in range(num_shards) if (root / shard_name(k, num_shards)).exists()]
  manifest = dict(want, complete=len(done) == num_shards, shards_done=len(done),
                  shards=[dict(file=shard_name(k, num_shards),
                               count=max(0, min(n, (k + 1) * per) - k * per))
                          for k in range(num_shards)])
  if jax.process_index() == 0:
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
  logging.info('Latents of %d images in %s (%d shards, %.1f MB).', n, root, num_shards,
               sum((root / s['file']).stat().length for s in manifest['shards']) / 1e6)
  return manifest



def _finish(writer, root, k, num_shards):
  writer.close()
  final = root / shard_name(k, num_shards)
  (root / (shard_name(k, num_shards) + '.tmp')).rename(final)


def disk_bytes_per_image(latent_shape, dtype='float16'):
  """The bytes one image's record takes (the shards add a few bytes of framing per record)."""
  return 4 * int(np.prod(latent_shape)) * np.dtype(Layout(tuple(latent_shape), dtype).np_dtype).itemsize + 4


def round_trip_error(z, dtype):
  """max |z − stored(z)| and the same relative to max |z|, for float32 latents z."""
  layout = Layout(z.shape, dtype)
  back = np.asarray(z, np.float32).astype(layout.np_dtype).astype(np.float32)
  err = float(np.max(np.abs(back - z)))
  return err, err / max(float(np.max(np.abs(z))), 1e-30)

