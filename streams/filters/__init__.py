"""Pure filter dialects: no Kafka, no Faust. Values are parsed JSON with exact numbers."""
