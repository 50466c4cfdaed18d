"""Reading benchmark files: questions, images, answers."""
