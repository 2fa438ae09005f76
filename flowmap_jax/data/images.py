"""Image data sets through `tfds.data_source` (ArrayRecord files in `data_dir`) and grain.

Nothing downloads here: a data set must be prepared first with
`tfds build <name> --file_format=array_record --data_dir <data_dir>` (ImageNet from the manually
downloaded ILSVRC2012 tars, see README). Each JAX process reads its own shard of the (globally
shuffled) records, reshuffled every epoch; the grain iterator's state is checkpointed with the run,
so a resumed run continues with the same data order.

Batches are host numpy: {'image': uint8 (b, H, W, 3), 'label': int32 (b,)}. The conversion to
[-1, 1] happens on device (`to_unit_range`), which sends a quarter of the bytes from host to device.
The same uint8 images are the reference images of FID, so model samples are quantised to them.
"""
import dataclasses
from typing import Optional

import grain
import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Spec:
  tfds_name: str
  num_classes: int              # 0: no labels in the data set
  crop: Optional[int] = None    # center crop side before resizing (CelebA: 140)
  native_size: Optional[int] = None  # stored resolution when fixed
  eval_split: str = 'train'     # FID reference statistics are over the training set


DATASETS = {
    'cifar10': Spec('cifar10', 10, native_size=32),
    'celeb_a': Spec('celeb_a', 0, crop=140),
    'imagenet2012': Spec('imagenet2012', 1000),
    'imagenet_resized/32x32': Spec('imagenet_resized/32x32', 1000, native_size=32),
    'imagenet_resized/64x64': Spec('imagenet_resized/64x64', 1000, native_size=64),
}


class DataNotPrepared(RuntimeError):
  pass


def is_image(data_config):
  return data_config.name in DATASETS


def image_shape(data_config):
  return (data_config.image_size, data_config.image_size, 3)


def num_classes(data_config):
  """The label count a class-conditional model embeds (0 when data.class_conditional is off)."""
  return DATASETS[data_config.name].num_classes if data_config.class_conditional else 0


def prepare_command(data_config):
  name = DATASETS[data_config.name].tfds_name
  d = f' --data_dir {data_config.data_dir}' if data_config.data_dir else ''
  manual = (' --manual_dir <folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar>'
            if name == 'imagenet2012' else '')
  return f'tfds build {name} --file_format=array_record{d}{manual}'


def source(data_config, split='train'):
  """The random-access tfds source of the data set; DataNotPrepared says how to build it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = DATASETS[data_config.name].tfds_name
  try:
    return tfds.data_source(name, split=split, data_dir=data_config.data_dir or None,
                            download=False)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises several kinds here)
    where = data_config.data_dir or '~/tensorflow_datasets (the tfds default)'
    # tfds says NotImplementedError both when nothing is there and when only TFRecords are.
    why = ('no ArrayRecord files (a copy built as TFRecord must be built again)'
           if isinstance(e, NotImplementedError) else
           f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
    raise DataNotPrepared(
        f'The data set {name!r} (split {split!r}) is not prepared in {where}: {why}. Nothing is '
        f'downloaded at run time; prepare it once with `{prepare_command(data_config)}` and set '
        'data.data_dir to that folder.') from None


def center_crop_resize(image, size, crop=None):
  """uint8 HWC -> size × size uint8. With `crop`, a centred crop × crop window first (CelebA);
  otherwise ADM's preprocessing: box-halve while the short side is ≥ 2·size, bicubic to a short side
  of `size`, centre crop."""
  if image.shape[0] == size and image.shape[1] == size and crop is None:
    return image
  pil = Image.fromarray(image)
  if crop is not None:
    w, h = pil.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return np.asarray(pil.crop((left, top, left + crop, top + crop)).resize(
        (size, size), Image.BICUBIC))
  while min(pil.size) >= 2 * size:
    pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
  scale = size / min(pil.size)
  pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
  arr = np.asarray(pil)
  top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
  return arr[top:top + size, left:left + size]


class Preprocess(grain.transforms.Map):
  """A tfds record -> {'image': uint8 (H, W, 3), 'label': int32}."""

  def __init__(self, data_config):
    self.spec = DATASETS[data_config.name]
    self.size = data_config.image_size

  def map(self, record):
    image = center_crop_resize(np.asarray(record['image']), self.size, self.spec.crop)
    label = np.int32(record['label']) if self.spec.num_classes else np.int32(0)
    return {'image': image, 'label': label}


class RandomFlip(grain.transforms.RandomMap):
  def random_map(self, element, rng):
    if rng.random() < 0.5:
      element = dict(element, image=element['image'][:, ::-1])
    return element


def dataset(data_config, *, seed, batch_size, process_index, process_count, split='train',
            shuffle=True, repeat=True, random_flip=None):
  """The grain pipeline of one process: its shard, (shuffled per epoch,) preprocessed, batched.

  `batch_size` is this process's part of the global batch. Without `repeat` the last partial batch
  is kept (evaluation passes over the data once).
  """
  ds = grain.MapDataset.source(source(data_config, split))
  ds = ds[process_index::process_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if repeat:
    ds = ds.repeat(None)
  ds = ds.map(Preprocess(data_config))
  if data_config.random_flip if random_flip is None else random_flip:
    ds = ds.random_map(RandomFlip(), seed=seed + 1)
  ds = ds.batch(batch_size, drop_remainder=repeat)
  threads = max(1, int(data_config.num_workers))
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))


def train_iterator(config, process_index, process_count):
  """The training iterator of this process (its state goes into every checkpoint)."""
  d = config.data
  return iter(dataset(d, seed=config.seed, batch_size=d.batch_size // process_count,
                      process_index=process_index, process_count=process_count))


def to_unit_range(image):
  """uint8 [0, 255] -> float32 [-1, 1] (on device)."""
  return image.astype(np.float32) / 127.5 - 1.0


def quantize(x):
  """[-1, 1] samples -> uint8 exactly as the data's images are stored (inverse of to_unit_range,
  rounded and clipped): FID compares like with like."""
  return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
