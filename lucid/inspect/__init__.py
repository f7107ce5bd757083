"""Seeing inside a model: its module tree, exact tie-aware parameter counts, bytes, tensors, and a step-by-step
trace of decoding.

Import from the modules (nothing heavy is imported here, so `lucid --help` stays fast):
`params.count_parameters`, `sizes.kv_bytes_per_token`, `report.inspect_model`, `tensors.summarize_tensor`,
`trace.run_trace_loop`; `render.py` and `trace_render.py` draw them with rich, `cli.py` wires the commands.
"""
