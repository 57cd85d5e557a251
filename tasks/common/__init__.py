"""What every library, stage and the orchestration share: record schemas and the JSONL reader/writer, stage artifacts (keys, manifests, build_stage), progress and run logging, the git commit."""
