"""Running the stages: the plan and its keys, the stage map, the Prefect task, tracking (MLflow), gc, the ablation plan."""
