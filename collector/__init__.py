"""The collector: a small, fast HTTP service turning beacons into events on Kafka."""
