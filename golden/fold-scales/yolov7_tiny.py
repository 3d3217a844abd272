# RUN: fold-scales
"""YOLOv7-tiny structure: every quantized Conv weight becomes an INT8 constant behind a DQ (no weight Q is
left); the three detection-head convs keep their float weights."""

from _placed import placed

from qdq_compiler.models import build_yolov7_tiny


def build():
    return placed(build_yolov7_tiny(width=0.25, resolution=64), "prepare,place-qdq")


# No float weight is left behind a Q, no Q reads a weight, and every weight DQ reads an int8 constant per
# output channel (axis 0).
# CHECK-NOT: weight_folded = float<
# CHECK-NOT: QuantizeLinear(%{{[^,]*}}weight
# CHECK-NOT: DequantizeLinear(%{{[^,]*}}weight_folded_quantized
# CHECK-NOT: _zero_point)  # {{\S+}}.weight_folded_DQ
# CHECK: = DequantizeLinear(%backbone.0.conv.weight_folded_int8,
# CHECK: output %output

# -----
# RUN: fold-scales
# Each of the 55 INT8 Conv weights is an int8 constant on the full symmetric grid (per-channel scales, so
# the extreme weights land on -127 and 127); the head convs' weights stay float. Constants print sorted
# by name.
# CHECK: const %backbone.0.conv.weight_folded_int8 = int8<8x3x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.1.conv.weight_folded_int8 = int8<16x8x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.10.conv.weight_folded_int8 = int8<16x16x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.11.conv.weight_folded_int8 = int8<16x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.12.conv.weight_folded_int8 = int8<16x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.14.conv.weight_folded_int8 = int8<32x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.16.conv.weight_folded_int8 = int8<32x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.17.conv.weight_folded_int8 = int8<32x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.18.conv.weight_folded_int8 = int8<32x32x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.19.conv.weight_folded_int8 = int8<32x32x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.2.conv.weight_folded_int8 = int8<8x16x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.21.conv.weight_folded_int8 = int8<64x128x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.23.conv.weight_folded_int8 = int8<64x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.24.conv.weight_folded_int8 = int8<64x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.25.conv.weight_folded_int8 = int8<64x64x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.26.conv.weight_folded_int8 = int8<64x64x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.28.conv.weight_folded_int8 = int8<128x256x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.3.conv.weight_folded_int8 = int8<8x16x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.4.conv.weight_folded_int8 = int8<8x8x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.5.conv.weight_folded_int8 = int8<8x8x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.7.conv.weight_folded_int8 = int8<16x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %backbone.9.conv.weight_folded_int8 = int8<16x16x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %detect.0.conv.weight = float<24x32x1x1>
# CHECK: const %detect.1.conv.weight = float<24x64x1x1>
# CHECK: const %detect.2.conv.weight = float<24x128x1x1>
# CHECK: const %head.29.conv.weight_folded_int8 = int8<64x128x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.30.conv.weight_folded_int8 = int8<64x128x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.35.conv.weight_folded_int8 = int8<64x256x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.37.conv.weight_folded_int8 = int8<64x128x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.38.conv.weight_folded_int8 = int8<32x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.40.conv.weight_folded_int8 = int8<32x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.42.conv.weight_folded_int8 = int8<16x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.43.conv.weight_folded_int8 = int8<16x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.44.conv.weight_folded_int8 = int8<16x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.45.conv.weight_folded_int8 = int8<16x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.47.conv.weight_folded_int8 = int8<32x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.48.conv.weight_folded_int8 = int8<16x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.50.conv.weight_folded_int8 = int8<16x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.52.conv.weight_folded_int8 = int8<8x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.53.conv.weight_folded_int8 = int8<8x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.54.conv.weight_folded_int8 = int8<8x8x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.55.conv.weight_folded_int8 = int8<8x8x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.57.conv.weight_folded_int8 = int8<16x32x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.58.conv.weight_folded_int8 = int8<32x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.60.conv.weight_folded_int8 = int8<16x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.61.conv.weight_folded_int8 = int8<16x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.62.conv.weight_folded_int8 = int8<16x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.63.conv.weight_folded_int8 = int8<16x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.65.conv.weight_folded_int8 = int8<32x64x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.66.conv.weight_folded_int8 = int8<64x32x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.68.conv.weight_folded_int8 = int8<32x128x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.69.conv.weight_folded_int8 = int8<32x128x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.70.conv.weight_folded_int8 = int8<32x32x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.71.conv.weight_folded_int8 = int8<32x32x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.73.conv.weight_folded_int8 = int8<64x128x1x1> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.74.conv.weight_folded_int8 = int8<32x16x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.75.conv.weight_folded_int8 = int8<64x32x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK: const %head.76.conv.weight_folded_int8 = int8<128x64x3x3> sha256:{{\w+}} min=-127 max=127
