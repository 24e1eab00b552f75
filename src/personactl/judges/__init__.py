"""Judges score answers 0-100 for a trait or for coherence; see base.TraitJudge."""
