"""Running the product: embedded PostgreSQL and Kafka-protocol broker, the service processes, the demo."""
