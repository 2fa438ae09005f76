#!/usr/bin/env bash
# The benchmarks on a GPU machine, in one go (about 8 minutes on one H100/H200): installs this
# checkout with the CUDA build of jax, then measures step cost (MLP, CIFAR-10 U-Net, DiT-S/2, the
# U-Net with model.remat=full) and sampling throughput, and writes the tables, labelled with the
# GPU, into benchmarks/RESULTS.md.
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e . 'jax[cuda12]'
python -c 'import jax; assert jax.devices()[0].platform == "gpu", jax.devices(); print(jax.devices())'
cd benchmarks
timeout 120 python step_cost.py --network mlp --batch 4096 --repeats 50 --results
timeout 150 python step_cost.py --network unet --batch 128 --repeats 10 --results
timeout 120 python step_cost.py --network dit --batch 128 --repeats 10 --results
# What model.remat=full buys where the scheduler recomputes late (on the CPU it does not: RESULTS.md).
timeout 90 python step_cost.py --network unet --batch 128 --remat full --losses fm,itvm --repeats 10 --results
timeout 40 python sample_cost.py --network mlp --batch 100000 --results
timeout 60 python sample_cost.py --network unet --batch 256 --results
