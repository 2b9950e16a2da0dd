"""The xDS protocol servers (ADS SotW and delta), their planner and the status registry."""
