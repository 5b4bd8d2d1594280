"""What runs inside Lode's workers: model loading, trainers, generation engines. Code here takes
plain arguments (paths, configs, callbacks) and knows nothing of HTTP; Django is touched only by
the thin modules that sit at the edge (`model_store`, Celery task entry points)."""
