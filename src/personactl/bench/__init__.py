"""personactl bench: methods compared on one budget."""
