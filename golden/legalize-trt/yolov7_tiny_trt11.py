# RUN: legalize-trt{target=trt11}
"""YOLOv7-tiny structure for TensorRT 11 (strongly typed): every float constant (weights, biases, Q/DQ scales,
decode constants) and every value inside the graph becomes FP16, INT8 weights stay INT8, Casts keep the
model input and output float32, and the Resize scales stay float32 (ONNX requires it)."""

from _placed import placed

from qdq_compiler.models import build_yolov7_tiny


def build():
    return placed(
        build_yolov7_tiny(width=0.25, resolution=64),
        "upgrade-opset{min=19},prepare,place-qdq,fold-scales",
    )


# CHECK: model ir_version=8 opsets=[ai.onnx:19]
# CHECK-NEXT: meta qdq_compiler.io_fp16 = 'false'
# CHECK: meta qdq_compiler.target = 'trt11'
# CHECK-NEXT: input %images: float[1,3,64,64]
# CHECK-NEXT: const %backbone.0.act_scale = float16<scalar> {{\S+}}
# CHECK-NEXT: const %backbone.0.act_zero_point = int8<scalar> 0
# CHECK-NEXT: const %backbone.0.conv.bias_folded = float16<8> [{{.*}}]
# CHECK-NEXT: const %backbone.0.conv.weight_folded_int8 = int8<8x3x3x3> sha256:{{\w+}} min=-127 max=127
# CHECK-NEXT: const %backbone.0.conv.weight_folded_scale = float16<8> [{{.*}}]
# The only float32 constant is the Resize scales; the float head's weights are FP16 too.
# CHECK-NOT: = float<
# CHECK: const %detect.0.conv.weight = float16<24x32x1x1>
# CHECK-NOT: = float<
# CHECK: const %head.39.resize.scales = float<4> [1, 1, 2, 2]
# CHECK-NOT: = float<
# The input is cast to FP16 before its Q; no value inside the graph is float32 or untyped.
# CHECK: %images_fp16: float16[1,3,64,64] = Cast(%images) {to=10}
# CHECK-NOT: : {{(float\[|\? )}}
# CHECK: %images_quantized: int8[1,3,64,64] = QuantizeLinear(%images_fp16,
# CHECK-NEXT: %images_dequantized: float16[1,3,64,64] = DequantizeLinear(%images_quantized,
# CHECK-NOT: : {{(float\[|\? )}}
# CHECK: %head.39.resize: float16[1,32,4,4] = Resize(%head.38.act, None, %head.39.resize.scales)
# CHECK-NOT: : {{(float\[|\? )}}
# CHECK: %detect.0.conv: float16[1,24,8,8] = Conv(%head.74.act, %detect.0.conv.weight, %detect.0.conv.bias)
# CHECK-NOT: : {{(float\[|\? )}}
# CHECK: %output_fp16: float16[1,252,8] = Concat(%detect.0.flatten, %detect.1.flatten, %detect.2.flatten)
# CHECK-NEXT: %output: float[1,252,8] = Cast(%output_fp16) {to=1}
# CHECK-NEXT: output %output: float[1,252,8]
