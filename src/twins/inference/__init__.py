"""Prediction at scale, task-blind: rows of any task's predictor streamed into a JSONL, CSV or
Parquet file (`rows`), resumed where a run stopped, shared among torchrun's processes and
merged at the end (`stream`)."""
