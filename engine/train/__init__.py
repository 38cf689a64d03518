"""Training: recipes, losses and schedules."""
