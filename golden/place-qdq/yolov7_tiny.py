# RUN: prepare,place-qdq
"""Placement on the YOLOv7-tiny-structured model: every backbone and neck Conv gets Q/DQ on its input and a
per-channel Q/DQ on its weight; the three detection-head output convs and the box decode after them stay
float; MaxPool inputs (downsampling and SPP) and Concat outputs are quantized."""

from qdq_compiler.models import build_yolov7_tiny


def build():
    return build_yolov7_tiny(width=0.25, resolution=64)


# The recorded decisions: all INT8 up to the last neck Conv, then the three head output convs stay float,
# each with its reason.
# CHECK-LABEL: meta qdq_compiler.layer_decisions = [
# CHECK-NEXT: {"int8": true, "node": "backbone.0.conv", "op": "Conv"}
# CHECK-NOT: "int8": false
# CHECK: {"int8": true, "node": "head.76.conv", "op": "Conv"}
# CHECK-NEXT: {"int8": false, "node": "detect.0.conv", "op": "Conv", "reason": "detection-head output{{.*}}
# CHECK-NEXT: {"int8": false, "node": "detect.1.conv", "op": "Conv", "reason": "detection-head output{{.*}}
# CHECK-NEXT: {"int8": false, "node": "detect.2.conv", "op": "Conv", "reason": "detection-head output{{.*}}
# CHECK-NEXT: ]

# -----
# RUN: prepare,place-qdq
# The graph: the network input is quantized, then each of the 55 INT8 Convs (in dump order) reads a
# dequantized activation and its own dequantized weight. Weight Q/DQ are per output channel (axis 0).
# CHECK-LABEL: input %images: float[1,3,64,64]
# CHECK-NOT: weight_folded, {{[^)]*}})  # {{\S+}}weight_folded_Q
# CHECK: %images_quantized: int8[1,3,64,64] = QuantizeLinear(%images, %images_scale, %images_zero_point)
# CHECK-NEXT: %images_dequantized: float[1,3,64,64] = DequantizeLinear(%images_quantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.0.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.1.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.2.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.3.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.4.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.5.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.7.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.9.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.10.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.11.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.12.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.14.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.16.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.17.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.18.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.19.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.21.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.23.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.24.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.25.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.26.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.28.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.29.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.30.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.35.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.37.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.38.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.40.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.42.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.43.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.44.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.45.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.47.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.48.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.50.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.52.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.53.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.54.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.55.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.57.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.58.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.60.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.61.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.62.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.63.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.65.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.66.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.68.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.69.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.70.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.71.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.73.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.74.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.75.conv.weight_folded_dequantized,
# CHECK: = Conv(%{{[^,]+}}_dequantized, %head.76.conv.weight_folded_dequantized,
# CHECK-LABEL: %detect.0.conv:

# -----
# RUN: prepare,place-qdq
# The detection head: its output convs read the float activations and float weights, and nothing from the
# first head conv to the model output is quantized.
# CHECK-LABEL: %detect.0.conv: float[1,24,8,8] = Conv(%head.74.act, %detect.0.conv.weight,
# CHECK-NOT: QuantizeLinear
# CHECK: %detect.1.conv: float[1,24,4,4] = Conv(%head.75.act, %detect.1.conv.weight, %detect.1.conv.bias)
# CHECK-NOT: QuantizeLinear
# CHECK: %detect.2.conv: float[1,24,2,2] = Conv(%head.76.act, %detect.2.conv.weight, %detect.2.conv.bias)
# CHECK-NOT: {{Q|DQ}}uantizeLinear
# CHECK: output %output: float[1,252,8]

# -----
# RUN: prepare,place-qdq
# MaxPools read dequantized values; the downsampling ones (stride 2) are re-quantized after, the SPP ones
# (stride 1) feed a Concat whose output is quantized.
# CHECK: %backbone.8.maxpool: {{.*}} = MaxPool(%backbone.7.act_dequantized)
# CHECK-NEXT: %backbone.8.maxpool_quantized: int8[1,16,8,8] = QuantizeLinear(%backbone.8.maxpool,
# CHECK: %backbone.15.maxpool: {{.*}} = MaxPool(%backbone.14.act_dequantized)
# CHECK-NEXT: %backbone.15.maxpool_quantized: int8[1,32,4,4] = QuantizeLinear(%backbone.15.maxpool,
# CHECK: %backbone.22.maxpool: {{.*}} = MaxPool(%backbone.21.act_dequantized)
# CHECK-NEXT: %backbone.22.maxpool_quantized: int8[1,64,2,2] = QuantizeLinear(%backbone.22.maxpool,
# CHECK: %head.31.maxpool: {{.*}} = MaxPool(%head.30.act_dequantized) {kernel_shape=[5, 5],
# CHECK-NEXT: %head.32.maxpool: {{.*}} = MaxPool(%head.30.act_dequantized) {kernel_shape=[9, 9],
# CHECK-NEXT: %head.33.maxpool: {{.*}} = MaxPool(%head.30.act_dequantized) {kernel_shape=[13, 13],
# CHECK-NEXT: %head.34.concat: {{.*}} = Concat(%head.33.maxpool, %head.32.maxpool, %head.31.maxpool,
# CHECK-NEXT: %head.34.concat_quantized: int8[1,256,2,2] = QuantizeLinear(%head.34.concat,
