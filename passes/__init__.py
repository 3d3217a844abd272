"""Built-in passes, one per module; installed as qdq_compiler.passes."""
