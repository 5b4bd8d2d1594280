"""Generation requests and batch jobs will live here (with the generation engine). The
OpenAI-compatible API built so far maps onto datasets and training and keeps no rows of its own."""
