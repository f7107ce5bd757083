"""lucid past one process: N engine replicas as a Ray Serve deployment behind the one OpenAI-compatible front.

Imported only by `lucid serve --replicas N` (and `--ray-address`); nothing else in lucid needs Ray. The pieces:
messages (what crosses the wire), replica (the deployment: one AsyncEngine each), prefix_router (Serve's
RequestRouter API, routing a prompt to the replica that holds its prefix), client (ClusterEngine: the AsyncEngine
interface the server already talks to), launch (Ray and Serve up and down), metrics (per-replica gauges).
"""
