"""The core every layer may use: registries, errors, configs, data, provenance and its comparability rule, the
store, safe paths and files, checkpoints, run leases. It imports nothing of methods/, metrics/, reports/ or the
runner and commands above it."""
