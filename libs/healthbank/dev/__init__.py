"""Development-only tools: local stack, demo, synthetic data. Production never imports them."""
