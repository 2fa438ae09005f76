"""Terminal Velocity Matching on MNIST from scratch: configs/lsd_mnist.py (network, optimiser, 3000
steps) with the official loss values (lumalabs/tvm configs/im256_w2.yaml, as
configs/tvm_checkerboard.py): gap t − s ~ sigmoid(N(−0.8, 1)), times sigmoid(N(+0.4, 1)), target EMA
0.99. No guidance (cfg = 1), as for the other self-distillation rows; `--config.loss.tvm.cfg=2` is
their 1-step ImageNet-256 value. TVM draws its own times: diag_fraction is unused."""
from configs import lsd_mnist


def get_config(arg=None):
  c = lsd_mnist.get_config(arg)
  c.loss.name = 'tvm'
  return c
