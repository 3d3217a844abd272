"""Colours the pictures and the page share (a caption names a line by its colour)."""

USED_COLOUR = "#d62728"  # the amax a tensor is quantized with
METHOD_COLOURS = {"max": "#1f77b4", "percentile": "#2ca02c", "entropy": "#9467bd", "mse": "#ff7f0e"}
NODE_COLOURS = {  # graph pictures, by GraphNode.kind
    "int8": "#9fd89f",
    "float": "#f4a6a6",
    "q": "#ffe08a",
    "dq": "#ffe08a",
    "op": "#dde6f0",
    "io": "#ffffff",
}
