"""Developer tools: the dependency locks (`make lock`)."""
