"""Where the control plane's input comes from (files today; Consul and Kubernetes next)."""
