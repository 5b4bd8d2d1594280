"""Fine-tuning inside GPU workers: the shared training loop, the task runners and the job handler."""
