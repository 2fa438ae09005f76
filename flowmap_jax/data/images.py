"""Image data sets through grain: tfds sets (`tfds.data_source`, ArrayRecord files in `data_dir`) and
two local sources, `data.name='npz'` and `data.name='folder'` with `data.path`.

Nothing downloads here: a tfds set must be prepared first with
`tfds build <name> --file_format=array_record --data_dir <data_dir>` (ImageNet from the manually
downloaded ILSVRC2012 tars, see README). A local source is
- `npz`: an `.npz` holding `images`, uint8 (N, H, W) or (N, H, W, C), and optionally `labels`
  (integers, (N,));
- `folder`: PNG/JPEG files, either one subfolder per class (torchvision's ImageFolder: classes are the
  sorted subfolder names) or a flat folder without labels.
Each JAX process reads its own shard of the (globally shuffled) records, reshuffled every epoch; the
grain iterator's state is checkpointed with the run, so a resumed run continues with the same data
order. Problems with a file (a missing key, a wrong dtype or rank, an unreadable image, an empty
folder) raise DataError naming the file, which the entry point reports with exit code 2.

Batches are host numpy: {'image': uint8 (b, H, W, C), 'label': int32 (b,)}, C = 3, or 1 for a
grayscale set (MNIST, a grayscale npz or `data.channels=1`), which stays one channel through the
networks. The conversion to
[-1, 1] happens on device (`to_unit_range`), which sends a quarter of the bytes from host to device.
The same uint8 images are the reference images of FID, so model samples are quantised to them.
"""
import dataclasses
import os
from typing import Optional

import grain
import numpy as np
from etils import epath
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Spec:
  tfds_name: Optional[str]      # None: a local source (data.path)
  num_classes: int              # 0: no labels in the data set; local sources: data.num_classes
  crop: Optional[int] = None    # center crop side before resizing (CelebA: 140)
  native_size: Optional[int] = None  # stored resolution when fixed
  eval_split: str = 'train'     # FID reference statistics are over the training set
  channels: Optional[int] = 3   # None: data.channels (local sources)


LOCAL = ('npz', 'folder')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')

DATASETS = {
    'npz': Spec(None, 0, channels=None),
    'folder': Spec(None, 0, channels=None),
    'mnist': Spec('mnist', 10, native_size=28, channels=1),
    'cifar10': Spec('cifar10', 10, native_size=32),
    'celeb_a': Spec('celeb_a', 0, crop=140),
    'imagenet2012': Spec('imagenet2012', 1000),
    'imagenet_resized/32x32': Spec('imagenet_resized/32x32', 1000, native_size=32),
    'imagenet_resized/64x64': Spec('imagenet_resized/64x64', 1000, native_size=64),
}


class DataNotPrepared(RuntimeError):
  pass


class DataError(DataNotPrepared):
  """A local data file that cannot be used as it is (the message names the file and the problem)."""


def is_image(data_config):
  return data_config.name in DATASETS


def channels(data_config):
  """3, or 1 for a grayscale set: the set's own for tfds sets, data.channels for local ones."""
  spec = DATASETS[data_config.name]
  return spec.channels if spec.channels else int(data_config.get('channels', 3))


def image_shape(data_config):
  return (data_config.image_size, data_config.image_size, channels(data_config))


def labels_of(data_config):
  """How many classes the data have: the set's own, or data.num_classes for a local source."""
  spec = DATASETS[data_config.name]
  return int(data_config.get('num_classes', 0)) if spec.tfds_name is None else spec.num_classes


def num_classes(data_config):
  """The label count a class-conditional model embeds (0 when data.class_conditional is off)."""
  return labels_of(data_config) if data_config.class_conditional else 0


def prepare_command(data_config):
  name = DATASETS[data_config.name].tfds_name
  d = f' --data_dir {data_config.data_dir}' if data_config.data_dir else ''
  manual = (' --manual_dir <folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar>'
            if name == 'imagenet2012' else '')
  return f'tfds build {name} --file_format=array_record{d}{manual}'


class NpzSource:
  """Random access to the `images` (and `labels`) of an `.npz` file, checked when opened."""

  def __init__(self, path, data_config):
    self.path = path
    try:  # through etils.epath: a local file or one on a bucket (gs://...)
      with epath.Path(path).open('rb') as fh, np.load(fh) as f:
        arrays = {k: f[k] for k in f.files}
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'{path}: not a readable .npz file ({type(e).__name__}: {e}).') from None
    if 'images' not in arrays:
      raise DataError(f'{path}: no array named "images" (it has {sorted(arrays)}); an image .npz '
                      'holds images, uint8 (N, H, W) or (N, H, W, C), and optionally labels (N,).')
    images = arrays['images']
    if images.dtype != np.uint8:
      raise DataError(f'{path}: images have dtype {images.dtype}; they must be uint8 in [0, 255].')
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
      raise DataError(f'{path}: images have shape {arrays["images"].shape}; expected (N, H, W) or '
                      '(N, H, W, C) with C 1 or 3 and N > 0.')
    self.images = images
    self.labels = arrays.get('labels')
    if self.labels is not None:
      if (self.labels.shape != (len(images),) or not np.issubdtype(self.labels.dtype, np.integer)):
        raise DataError(f'{path}: labels have shape {self.labels.shape} and dtype '
                        f'{self.labels.dtype}; expected integers of shape ({len(images)},).')
    _check_labels(path, self.labels, data_config)
    _check_channels(path, images.shape[-1], data_config)

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {'image': self.images[i], 'label': 0 if self.labels is None else int(self.labels[i])}


class FolderSource:
  """Random access to the PNG/JPEG files of a folder: one subfolder per class, or flat (no labels)."""

  def __init__(self, path, data_config):
    # Through etils.epath: a local folder or one on a bucket (gs://...).
    root = epath.Path(path if '://' in str(path) else os.path.abspath(path))
    if not root.is_dir():
      raise DataError(f'{path}: not a folder (data.name=folder reads a folder of images).')
    is_image_file = lambda f: f.lower().endswith(IMAGE_SUFFIXES)
    _, subfolders, top_files = next(_walk(root))
    classes = sorted(subfolders)
    files, labels = [], []
    for k, c in enumerate(classes):
      for dirpath, _, names in sorted(_walk(root / c), key=lambda w: str(w[0])):
        for name in sorted(filter(is_image_file, names)):
          files.append(str(dirpath / name))
          labels.append(k)
    if not files:   # no class subfolders with images: a flat folder without labels
      classes = []
      files = [str(root / f) for f in sorted(top_files) if is_image_file(f)]
      labels = [0] * len(files)
    if not files:
      raise DataError(f'{path}: no images (.png, .jpg, .jpeg) in the folder or its subfolders.')
    self.files, self.labels, self.classes = files, np.asarray(labels), classes
    self.channels = channels(data_config)
    _check_labels(path, self.labels if classes else None, data_config,
                  what=f'{len(classes)} class subfolders')

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    try:
      with epath.Path(self.files[i]).open('rb') as f, Image.open(f) as im:
        image = np.asarray(im.convert('L' if self.channels == 1 else 'RGB'))
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'{self.files[i]}: not a readable image ({type(e).__name__}: {e}).') from None
    if image.ndim == 2:
      image = image[..., None]
    return {'image': image, 'label': int(self.labels[i])}


def _walk(folder):
  """(folder, subfolder names, file names) of `folder` (an epath.Path) and of every folder below it,
  as os.walk gives them; each path is built from `folder`, so a gs:// path stays one (the paths
  that epath's walk() yields through fsspec lose their scheme)."""
  subfolders, files = [], []
  for p in folder.iterdir():
    (subfolders if p.is_dir() else files).append(p.name)
  yield folder, subfolders, files
  for name in subfolders:
    yield from _walk(folder / name)


def _check_labels(path, labels, data_config, what='labels'):
  if not data_config.class_conditional:
    return
  n = labels_of(data_config)
  if labels is None:
    raise DataError(f'{path}: has no labels, but data.class_conditional=True; turn it off or give '
                    'labels (an npz array "labels", or one subfolder per class).')
  if labels.min() < 0:
    raise DataError(f'{path}: {what} give labels {int(labels.min())}..{int(labels.max())}; labels '
                    'must be the class indices 0, 1, ..., K - 1 (no negative ones).')
  if labels.max() >= n:
    raise DataError(f'{path}: {what} give labels {int(labels.min())}..{int(labels.max())}, but '
                    f'data.num_classes={n}; set it to {int(labels.max()) + 1}.')


def _check_channels(path, c, data_config):
  if c != channels(data_config):
    raise DataError(f'{path}: images have {c} channel(s), but data.channels={channels(data_config)}.')


def source(data_config, split='train'):
  """The random-access source of the data set: a local file or folder (data.path), or tfds (its
  split); DataNotPrepared says how to build a missing tfds set, DataError what is wrong with a file."""
  spec = DATASETS[data_config.name]
  if spec.tfds_name is None:
    path = data_config.get('path', '')
    if not path or not epath.Path(path).exists():
      raise DataError(f'data.path={path!r} does not exist: data.name={data_config.name!r} reads '
                      f'{"an .npz file" if data_config.name == "npz" else "a folder of images"}.')
    return (NpzSource if data_config.name == 'npz' else FolderSource)(path, data_config)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = spec.tfds_name
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
  """uint8 HWC -> size × size uint8 (C kept). With `crop`, a centred crop × crop window first
  (CelebA); otherwise ADM's preprocessing: box-halve while the short side is ≥ 2·size, bicubic to a
  short side of `size`, centre crop."""
  if image.shape[0] == size and image.shape[1] == size and crop is None:
    return image
  if image.ndim == 3 and image.shape[-1] == 1:   # PIL's grayscale images have no channel axis
    return center_crop_resize(image[..., 0], size, crop)[..., None]
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
  """A record -> {'image': uint8 (H, W, C), 'label': int32}."""

  def __init__(self, data_config):
    self.spec = DATASETS[data_config.name]
    self.size = data_config.image_size
    self.labelled = labels_of(data_config) > 0

  def map(self, record):
    image = np.asarray(record['image'])
    image = center_crop_resize(image if image.ndim == 3 else image[..., None], self.size,
                               self.spec.crop)
    label = np.int32(record['label']) if self.labelled else np.int32(0)
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
  ds = records(source(data_config, split), seed=seed, process_index=process_index,
               process_count=process_count, shuffle=shuffle, repeat=repeat)
  ds = ds.map(Preprocess(data_config))
  if data_config.random_flip if random_flip is None else random_flip:
    ds = ds.random_map(RandomFlip(), seed=seed + 1)
  return batched(ds, batch_size, repeat, data_config.num_workers)


def records(src, *, seed, process_index, process_count, shuffle, repeat):
  """A random-access source as this process's shard of it, shuffled (per epoch) and repeated."""
  ds = grain.MapDataset.source(src)[process_index::process_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  return ds.repeat(None) if repeat else ds


def batched(ds, batch_size, repeat, num_workers):
  """Batches read by `num_workers` threads; a repeating pipeline drops no data, so it drops the
  remainder, a single pass keeps its last partial batch."""
  ds = ds.batch(batch_size, drop_remainder=repeat)
  threads = max(1, int(num_workers))
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
