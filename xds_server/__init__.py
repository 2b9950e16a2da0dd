"""meshgate control plane: discovery sources -> pure compiler -> snapshot cache -> ADS."""
