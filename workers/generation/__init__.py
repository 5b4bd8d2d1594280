"""Generation inside GPU workers: the batching text engine (more to come: images, the serving loop)."""
