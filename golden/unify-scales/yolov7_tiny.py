# RUN: unify-scales
"""Scale tying on the placed YOLOv7-tiny-structured model. Scales are set deterministically (the i-th Q
gets (i + 1) / 64) instead of calibrated, so the dump shows only what unify-scales does: every Concat's
inputs/output and every MaxPool's input/output end with one scale, the largest in their group.

The checks name each group by the Concat or MaxPool that ties it (`[[backbone_6:...]]` is the scale of
Concat backbone.6, `_pool` a MaxPool's, `head_34_spp` the SPP block: head.30's output, its three MaxPools and
Concat head.34). Scale constants print sorted by name, so the checks follow that order; a group's first
member captures its scale and the others must print the same text."""

import numpy as np

from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.ir.qdq import set_scale
from qdq_compiler.models import build_yolov7_tiny
from qdq_compiler.passes.calibrate import activation_quantizers
from qdq_compiler.pm import PassContext, PassManager


def build():
    model = load_model(build_yolov7_tiny(width=0.25, resolution=64))
    PassManager("prepare,place-qdq").run(model, PassContext(), stamp=False)
    for index, quantize in enumerate(activation_quantizers(model.graph)):
        set_scale(quantize, np.float32((index + 1) / 64))
    return to_proto(model)


# CHECK: const %backbone.10.act_scale = float<scalar> [[backbone_13:\S+]]
# CHECK: const %backbone.11.act_scale = float<scalar> [[backbone_13]]
# CHECK: const %backbone.13.concat_scale = float<scalar> [[backbone_13]]
# CHECK: const %backbone.14.act_scale = float<scalar> [[backbone_15_pool:\S+]]
# CHECK: const %backbone.15.maxpool_scale = float<scalar> [[backbone_15_pool]]
# CHECK: const %backbone.17.act_scale = float<scalar> [[backbone_20:\S+]]
# CHECK: const %backbone.18.act_scale = float<scalar> [[backbone_20]]
# CHECK: const %backbone.20.concat_scale = float<scalar> [[backbone_20]]
# CHECK: const %backbone.21.act_scale = float<scalar> [[backbone_22_pool:\S+]]
# CHECK: const %backbone.22.maxpool_scale = float<scalar> [[backbone_22_pool]]
# CHECK: const %backbone.24.act_scale = float<scalar> [[backbone_27:\S+]]
# CHECK: const %backbone.25.act_scale = float<scalar> [[backbone_27]]
# CHECK: const %backbone.27.concat_scale = float<scalar> [[backbone_27]]
# CHECK: const %backbone.3.act_scale = float<scalar> [[backbone_6:\S+]]
# CHECK: const %backbone.4.act_scale = float<scalar> [[backbone_6]]
# CHECK: const %backbone.6.concat_scale = float<scalar> [[backbone_6]]
# CHECK: const %backbone.7.act_scale = float<scalar> [[backbone_8_pool:\S+]]
# CHECK: const %backbone.8.maxpool_scale = float<scalar> [[backbone_8_pool]]
# CHECK: const %head.30.act_scale = float<scalar> [[head_34_spp:\S+]]
# CHECK: const %head.34.concat_scale = float<scalar> [[head_34_spp]]
# CHECK: const %head.37.act_scale = float<scalar> [[head_67:\S+]]
# CHECK: const %head.43.act_scale = float<scalar> [[head_46:\S+]]
# CHECK: const %head.44.act_scale = float<scalar> [[head_46]]
# CHECK: const %head.46.concat_scale = float<scalar> [[head_46]]
# CHECK: const %head.47.act_scale = float<scalar> [[head_59:\S+]]
# CHECK: const %head.53.act_scale = float<scalar> [[head_56:\S+]]
# CHECK: const %head.54.act_scale = float<scalar> [[head_56]]
# CHECK: const %head.56.concat_scale = float<scalar> [[head_56]]
# CHECK: const %head.59.concat_scale = float<scalar> [[head_59]]
# CHECK: const %head.61.act_scale = float<scalar> [[head_64:\S+]]
# CHECK: const %head.62.act_scale = float<scalar> [[head_64]]
# CHECK: const %head.64.concat_scale = float<scalar> [[head_64]]
# CHECK: const %head.67.concat_scale = float<scalar> [[head_67]]
# CHECK: const %head.69.act_scale = float<scalar> [[head_72:\S+]]
# CHECK: const %head.70.act_scale = float<scalar> [[head_72]]
# CHECK: const %head.72.concat_scale = float<scalar> [[head_72]]

# -----
# RUN: unify-scales
# The shared scale is the group's largest. Before this pass the i-th activation Q has scale (i + 1) / 64, so
# Concat backbone.6's group held backbone.3.act at 4/64, backbone.4.act at 5/64 and the Concat's own Q at
# 6/64; all three end at 6/64 = 0.09375 (a smallest-scale rule would give 0.0625 and clip).
# CHECK: const %backbone.3.act_scale = float<scalar> 0.09375
# CHECK: const %backbone.4.act_scale = float<scalar> 0.09375
# CHECK: const %backbone.6.concat_scale = float<scalar> 0.09375
