"""Scoring answers: the VQA accuracy, EvalAI answer processing, option letters."""
