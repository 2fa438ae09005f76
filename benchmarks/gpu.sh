#!/usr/bin/env bash
# DiT-XL/2's train step on one GPU, offline, in under 8 minutes: the fm, itvm, lsd and meanflow
# steps in bfloat16 at 256 tokens (XL/2 at 256 px) and at 1024 tokens (512 px), each with both
# attentions (model.attention 'xla' and 'blockwise'): step time, model FLOPs utilisation against the
# chip's peak (from XLA's FLOP count) and XLA's peak memory, written into benchmarks/RESULTS.md in
# sections labelled with the GPU (benchmarks/attention_cost.py; docs/attention.md reads them).
#
#   bash benchmarks/gpu.sh [WHEEL_DIR]
#
# Nothing is downloaded. The machine needs Python >= 3.10 with jax built for CUDA, flax, optax,
# orbax-checkpoint, etils, numpy, absl-py, diffrax, pillow and pyyaml (GPU images carry them), and
# four small packages they often lack: ml-collections, grain, array-record and portpicker. Bring
# those as wheels; on a machine with internet, for Python 3.12 on x86-64 Linux:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 -d WHEEL_DIR \
#     ml-collections grain array-record portpicker
# and WHEEL_DIR (or $FLOWMAP_WHEELS) is installed first, with no index. A package still missing
# stops the script at once, by name. The project itself is installed without its dependencies
# (clu, TensorFlow and tfds serve training and evaluation, not these benchmarks).
#
# FLOWMAP_GPU_SMOKE=1 runs the same steps at DiT-T size on any device (a CPU too) and leaves
# RESULTS.md alone: a check of this script, not a measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${1:-${FLOWMAP_WHEELS:-}}
SMOKE=${FLOWMAP_GPU_SMOKE:-0}

if [[ -n $WHEELS ]]; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  if (( ${#wheels[@]} == 0 )); then
    echo "gpu.sh: no wheels in $WHEELS" >&2
    exit 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check "${wheels[@]}"
fi

# Every package the benchmark imports, by the name pip knows it by; then the imports themselves,
# so a package this list does not know of is named too.
"$PY" - <<'EOF'
import importlib
import sys

NEEDED = {'jax': 'jax (built for CUDA)', 'jaxlib': 'jaxlib', 'flax': 'flax', 'optax': 'optax',
          'orbax.checkpoint': 'orbax-checkpoint', 'etils.epath': 'etils', 'numpy': 'numpy',
          'absl': 'absl-py', 'diffrax': 'diffrax', 'PIL': 'pillow', 'yaml': 'pyyaml',
          'ml_collections': 'ml-collections', 'grain': 'grain', 'array_record': 'array-record',
          'portpicker': 'portpicker'}
missing = []
for module, package in NEEDED.items():
  try:
    importlib.import_module(module)
  except ImportError:
    missing.append(package)
if missing:
  sys.exit('gpu.sh: missing Python packages: ' + ', '.join(missing) + '. Bring them as wheels '
           '(see the head of benchmarks/gpu.sh) and run: bash benchmarks/gpu.sh WHEEL_DIR')
sys.path.insert(0, '.')
try:
  import flowmap_jax.state, flowmap_jax.step, flowmap_jax.teacher  # noqa: F401,E401
except ModuleNotFoundError as e:
  sys.exit(f'gpu.sh: missing Python package: {e.name} (imported by flowmap_jax); bring it as a '
           'wheel (see the head of benchmarks/gpu.sh)')
EOF

"$PY" -m pip install -q --no-deps --no-build-isolation --no-index --disable-pip-version-check -e .

# Each run stops compiling and timing at its budget and writes what it has measured after every
# step, so even a run its timeout stops leaves its table.
bench=(timeout 210 "$PY" benchmarks/attention_cost.py --losses 'fm,itvm,lsd,meanflow'
       --attentions 'xla,blockwise' --time --one_loss_at_a_time --warmup 2 --repeats 10
       --compile_threads 6 --budget_s 160)
if [[ $SMOKE == 1 ]]; then
  bench+=(--sizes T --dtype float32 --repeats 2 --compile_threads 2)
  "${bench[@]}" --tokens 16 --batch 2
  "${bench[@]}" --tokens 64 --batch 2
  echo "gpu.sh: smoke run done in ${SECONDS} s (RESULTS.md untouched)"
  exit 0
fi

"$PY" -c '
import jax
d = jax.devices()[0]
assert d.platform == "gpu", f"gpu.sh measures a GPU; jax sees {jax.devices()}"
print(f"{d.device_kind}: jax {jax.__version__}, {jax.device_count()} device(s)")'
# 32 images of 256 tokens, 4 of 1024: with 'xla' attention the jvp losses keep B·H·N² arrays per
# layer, which at batch 8 and 1024 tokens would take most of an 80 GB card.
"${bench[@]}" --sizes XL --dtype bfloat16 --tokens 256 --batch 32 --results
"${bench[@]}" --sizes XL --dtype bfloat16 --tokens 1024 --batch 4 --results
echo "gpu.sh: done in ${SECONDS} s; the tables are in benchmarks/RESULTS.md"
