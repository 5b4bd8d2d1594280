"""Dataset operations as pure functions over texts and row dicts: no Django, no storage, no
database. The job code (datasets/jobs.py) reads shards, calls these and writes the results.

- normalise: Unicode NFKC, whitespace, control characters, Simplified/Traditional Chinese.
- filters: length, language (langid.py) and regular-expression tests.
- dedup: content hashes for exact duplicates; MinHash LSH clusters for near-duplicates.
- pii: finding and masking e-mails, phones, cards, IBANs, IPs and Chinese resident IDs.
- split: reproducible, optionally stratified train/validation/test assignment.
- augment: perturbed copies of texts and images.
- stats: a summary of a dataset's rows, accumulated shard by shard.
"""
