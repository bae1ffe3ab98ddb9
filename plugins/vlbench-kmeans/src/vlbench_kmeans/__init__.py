"""vlbench-kmeans: k-means prototypes of the joint embeddings, as a vlbench condenser plugin.

This module is the entry point: it names the condenser by import path, so that vlbench imports
`vlbench_kmeans.condenser` (and torch with it) only when `kmeans` is used, and `vlbench list`
stays fast with the plugin installed.
"""
from vlbench import hookimpl


@hookimpl
def register_condensers(register):
    register("vlbench_kmeans.condenser:KMeansPrototypes", name="kmeans")
