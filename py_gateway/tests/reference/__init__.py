"""A plain reading of docs/compute-spec.md, and the generator of the shared vectors."""
