"""Terminal Velocity Matching on the 2-D checkerboard: configs/lsd_checkerboard.py with
loss.name='tvm' and the official loss values (lumalabs/tvm configs/im256_w2.yaml), everything else
equal, so the self-distillation losses compare at one budget.

From the official configs: gap t − s ~ sigmoid(N(−0.8, 1)), times sigmoid(N(+0.4, 1)) in our
convention (their s_P_mean = −0.4 with noise at 1), the target EMA at 0.99 (ema_target_beta). No
guidance (cfg = 1: unconditional data; theirs is 1.75-2.5 on ImageNet). TVM draws its own times: the
common time fields and diag_fraction are unused (every example has a terminal and a flow term)."""
from configs import lsd_checkerboard


def get_config(arg=None):
  c = lsd_checkerboard.get_config(arg)
  c.loss.name = 'tvm'
  return c
