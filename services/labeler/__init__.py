"""The labeler: ExecutionClustered -> ClustersLabeled, for every run.

Modules, in the order a run goes through them:
  handler          the consumer's handler (`Labeler.handle`): reads, labels, publishes
  sources          ports and adapters: members/vectors from S3, payloads from Postgres
  texts            a payload's text, title and media (input mappings or prose fields)
  representatives  members near the centroid and spread across it; how many
  ctfidf           class-based TF-IDF keywords and labels (no LLM needed)
  prompts          the labeling prompt and reading the reply
  providers        OpenAI / Gemini / Anthropic over HTTP (httpx), with retries
  labeling         one run's conversation: batches, validation, one corrective retry
  shape            response_shape: schemas, descriptions -> schemas, validation
  dedup            near-duplicate labels (all-MiniLM-L6-v2 when installed, else lexical)
  cache            the label cache in Postgres (`label_cache`)
  settings         LabelerSettings: provider keys, base URLs, limits
  app              the composition root (`bootstrap()`); run `python -m services.labeler`
"""
