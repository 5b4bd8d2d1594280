"""Fine-tuning (web side): the base-model catalog now; jobs, model registry and events later."""
