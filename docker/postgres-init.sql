-- Second database on the compose Postgres: Prefect uses "prefect", MLflow uses "mlflow".
CREATE DATABASE mlflow OWNER hnsdpo;
