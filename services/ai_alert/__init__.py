"""The ai-alert service: city ILI forecast ("health weather") and personal lab trends."""
